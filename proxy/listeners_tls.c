/*
 * listeners: TLS contexts, access lists, ticket keys and OCSP sources
 * (see listeners.h, listeners_impl.h).
 */
#define _GNU_SOURCE
#include "listeners.h"
#include "listeners_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "accesslog.h"
#include "acl.h"
#include "admin.h"
#include "cluster.h"
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "netutil.h"
#include "registry.h"
#include "sockpool.h"
#include "relay.h"
#include "relay_metrics.h"
#include "tcpserver.h"
#include "tls.h"
#include "tls_ocsp.h"
#include "tls_tickets.h"

/* ---- TLS contexts and access lists ---- */

static const char *
tls_opt_key(enum tls_opt opt)
{
	switch (opt) {
	case TLS_OPT_CERT: return "cert";
	case TLS_OPT_KEY: return "key";
	case TLS_OPT_CLIENT_CA: return "client_ca";
	case TLS_OPT_VERSION: return "tls_min_version";
	case TLS_OPT_CIPHERS: return "ciphers";
	case TLS_OPT_CIPHERSUITES: return "ciphersuites";
	case TLS_OPT_ALPN: return "alpn";
	case TLS_OPT_CA_FILE: return "backend_ca";
	case TLS_OPT_CLIENT_CRL: return "client_crl";
	case TLS_OPT_OTHER: break;
	}
	return "cert";
}

static struct tls_ctx *
server_tls(const struct config *cfg, const struct config_listener *l,
    struct tls_tickets *tickets, struct tls_ocsp *const *ocsp, char *err,
    size_t errlen)
{
	struct tls_cert_pair pairs[CONFIG_MAX_CERTS];
	struct tls_server_opts o = { 0 };
	struct tls_fault fault = { TLS_OPT_OTHER, 0 };
	struct tls_ctx *c;
	char why[384];

	for (size_t i = 0; i < l->ncert; i++) {
		pairs[i].cert = l->cert[i];
		pairs[i].key = l->key[i];
		pairs[i].ocsp = ocsp[i];
	}
	o.certs = pairs;
	o.ncerts = l->ncert;
	o.client_ca = l->client_ca[0] ? l->client_ca : NULL;
	o.client_crl = l->client_crl[0] ? l->client_crl : NULL;
	o.tickets = tickets;
	o.verify = (enum tls_verify)l->verify;
	o.min_version = l->tls_min_version;
	o.ciphers = l->ciphers[0] ? l->ciphers : NULL;
	o.ciphersuites = l->ciphersuites[0] ? l->ciphersuites : NULL;
	o.alpn = l->alpn[0] ? l->alpn : NULL;
	o.alpn_fallback = l->alpn_fallback;
	o.name = l->name;
	o.fault = &fault;
	c = tls_ctx_new_server(&o, why, sizeof(why));
	if (c == NULL)
		config_error(cfg, l, tls_opt_key(fault.opt), fault.index, why,
		    err, errlen);
	return c;
}

/* TLS towards a forward listener's backends: verified, always. */
struct tls_ctx *
listeners_backend_tls(const struct config *cfg, const struct config_listener *l,
    char *err, size_t errlen)
{
	struct tls_client_opts o = { 0 };
	struct tls_fault fault = { TLS_OPT_OTHER, 0 };
	struct tls_ctx *c;
	char why[384];

	o.ca_file = l->backend_ca[0] ? l->backend_ca : NULL;
	o.verify = true;
	o.cert = l->backend_cert[0] ? l->backend_cert : NULL;
	o.key = l->backend_key[0] ? l->backend_key : NULL;
	o.fault = &fault;
	c = tls_ctx_new_client(&o, why, sizeof(why));
	if (c == NULL)
		config_error(cfg, l, fault.opt == TLS_OPT_CA_FILE ?
		    "backend_ca" : fault.opt == TLS_OPT_CERT ? "backend_cert" :
		    fault.opt == TLS_OPT_KEY ? (l->backend_key[0] ?
		    "backend_key" : "backend_cert") : "backend_tls", 0, why,
		    err, errlen);
	return c;
}

static struct acl *
access_list(const struct config *cfg, const struct config_listener *l,
    char *err, size_t errlen)
{
	char why[512];
	struct acl *a = acl_load(l->acl, why, sizeof(why));

	if (a == NULL)
		config_error(cfg, l, "acl", 0, why, err, errlen);
	return a;
}

void
listeners_tls_set_free(struct tls_set *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		tls_ctx_unref(t->server[i]);
		tls_ctx_unref(t->backend[i]);
		acl_free(t->acl[i]);
	}
}

/*
 * A file a TLS context needs must be there and readable: OpenSSL would
 * say "system lib" and nothing of the path.  For the embedded default,
 * where the certificates are looked for.
 */
static int
readable(const struct config *cfg, const struct config_listener *l,
    const char *key, size_t index, const char *what, const char *path,
    char *err, size_t errlen)
{
	char why[CONFIG_PATH_LEN + 256];
	FILE *f;

	if (path[0] == '\0')
		return 0;
	if ((f = fopen(path, "r")) != NULL) {
		fclose(f);
		return 0;
	}
	snprintf(why, sizeof(why), "%s %s: %s%s", what, path,
	    strerror(errno), cfg->path[0] == '\0' && !strcmp(cfg->label,
	    "(embedded default)") ? " (the embedded default reads the "
	    "development certificates from --certs DIR, ./certs by default: "
	    "run ferry from the checkout after `make`, or `make run`)" : "");
	config_error(cfg, l, key, index, why, err, errlen);
	return -1;
}

static int
tls_files(const struct config *cfg, const struct config_listener *l,
    char *err, size_t errlen)
{
	for (size_t i = 0; i < l->ncert; i++)
		if (readable(cfg, l, "cert", i, "certificate", l->cert[i], err,
		    errlen) < 0 || readable(cfg, l, "key", i, "private key",
		    l->key[i], err, errlen) < 0)
			return -1;
	if (l->ncert > 0 && (readable(cfg, l, "client_ca", 0, "CA file",
	    l->client_ca, err, errlen) < 0 || readable(cfg, l, "client_crl",
	    0, "CRL file", l->client_crl, err, errlen) < 0))
		return -1;
	if (l->backend_tls && (readable(cfg, l, "backend_ca", 0, "CA file",
	    l->backend_ca, err, errlen) < 0 || readable(cfg, l,
	    "backend_cert", 0, "certificate", l->backend_cert, err,
	    errlen) < 0 || readable(cfg, l, "backend_key", 0, "private key",
	    l->backend_key, err, errlen) < 0))
		return -1;
	return 0;
}

/* Builds every TLS context and access list; on failure nothing is kept. */
int
listeners_tls_set_build(const struct config *cfg, struct tls_set *t,
    const struct tls_keep *keep, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->ncert > 0 && (t->server[i] = server_tls(cfg, l,
		    keep->tickets[i], keep->ocsp[i], err, errlen)) == NULL)
			goto fail;
		if (l->mode == CONFIG_FORWARD && l->backend_tls &&
		    (t->backend[i] = listeners_backend_tls(cfg, l, err, errlen)) == NULL)
			goto fail;
		if (l->mode == CONFIG_RELAY && l->acl[0] != '\0' &&
		    (t->acl[i] = access_list(cfg, l, err, errlen)) == NULL)
			goto fail;
	}
	return 0;
fail:
	listeners_tls_set_free(t, cfg->nlisteners);
	return -1;
}

/* A TLS listener's ticket keys (before the fork); -1 with err. */
static int
tickets_make(const struct config *cfg, const struct config_listener *l,
    struct tls_tickets **out, char *err, size_t errlen)
{
	char why[384];

	*out = NULL;
	if (l->ncert == 0)
		return 0;
	*out = tls_tickets_new(l->ticket_keys[0] ? l->ticket_keys : NULL,
	    l->ticket_rotate, why, sizeof(why));
	if (*out == NULL) {
		config_error(cfg, l, "ticket_keys", 0, why, err, errlen);
		return -1;
	}
	return 0;
}

/* A certificate's `ocsp` value: "off" (or none), "auto", or a file. */
static const char *
ocsp_value(const struct config_listener *l, size_t i)
{
	if (l->nocsp == 0)
		return "off";
	return l->nocsp == 1 ? l->ocsp[0] : l->ocsp[i];
}

void
listeners_ocsp_free(struct tls_ocsp **ocsp)
{
	for (size_t j = 0; j < CONFIG_MAX_CERTS; j++) {
		tls_ocsp_free(ocsp[j]);
		ocsp[j] = NULL;
	}
}

/* A listener's OCSP source per certificate (before the fork); -1 with err. */
static int
ocsp_make(const struct config *cfg, const struct config_listener *l,
    struct tls_ocsp **out, char *err, size_t errlen)
{
	for (size_t j = 0; j < CONFIG_MAX_CERTS; j++)
		out[j] = NULL;
	for (size_t j = 0; j < l->ncert; j++) {
		const char *v = ocsp_value(l, j);
		struct tls_ocsp_opts o = { 0 };
		char why[768];

		if (!strcmp(v, "off"))
			continue;
		o.cert = l->cert[j];
		o.file = strcmp(v, "auto") ? v : NULL;
		o.dir = cfg->ocsp_dir;
		o.timeout = cfg->ocsp_timeout;
		o.name = l->name;
		out[j] = tls_ocsp_new(&o, why, sizeof(why));
		if (out[j] == NULL) {
			config_error(cfg, l, "ocsp", l->nocsp == 1 ? 0 : j, why,
			    err, errlen);
			listeners_ocsp_free(out);
			return -1;
		}
	}
	return 0;
}

void
listeners_tls_keep_free(struct tls_keep *k)
{
	for (size_t i = 0; i < CONFIG_MAX_LISTENERS; i++)
		if (k->made[i]) {
			tls_tickets_free(k->tickets[i]);
			listeners_ocsp_free(k->ocsp[i]);
		}
	free(k);
}

/*
 * The ticket keys and OCSP sources of `cfg`'s listeners: a listener of
 * `cur` (the running ones, or NULL) that stays as it is are
 * its own; a listener added or changed gets new ones, but a changed one
 * whose ticket_keys and ticket_rotate stay shares the keys of the one it
 * replaces (sessions resume across the reload).  Every file is checked
 * readable first, for a clear error.  NULL with err.
 */
struct tls_keep *
listeners_tls_keep_build(const struct config *cfg, const struct listeners *cur,
    char *err, size_t errlen)
{
	struct tls_keep *k = calloc(1, sizeof(*k));

	if (k == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		struct listener *old = cur != NULL ? listeners_find_listener(cur,
		    l->name) : NULL;
		bool same = old != NULL && old->cfg.ncert > 0 &&
		    !strcmp(old->cfg.ticket_keys, l->ticket_keys) &&
		    old->cfg.ticket_rotate == l->ticket_rotate;

		if (tls_files(cfg, l, err, errlen) < 0)
			goto fail;
		if (old != NULL && listeners_same_listener(&old->cfg, l)) {
			k->tickets[i] = old->tickets;
			memcpy(k->ocsp[i], old->ocsp, sizeof(k->ocsp[i]));
			continue;
		}
		k->made[i] = true;
		if (same && l->ncert > 0)
			k->tickets[i] = tls_tickets_ref(old->tickets);
		else if (tickets_make(cfg, l, &k->tickets[i], err, errlen) < 0)
			goto fail;
		if (ocsp_make(cfg, l, k->ocsp[i], err, errlen) < 0)
			goto fail;
	}
	return k;
fail:
	listeners_tls_keep_free(k);
	return NULL;
}

/* A new listener takes what was made for it (slot i). */
void
listeners_tls_keep_give(struct tls_keep *k, size_t i, struct listener *ln)
{
	ln->tickets = k->tickets[i];
	memcpy(ln->ocsp, k->ocsp[i], sizeof(ln->ocsp));
	k->made[i] = false;
}
