/* config_check: see config_impl.h (validation after the file is read). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config_impl.h"
#include "log.h"
#include "netutil.h"

void
config_error(const struct config *c, const struct config_listener *l,
    const char *key, size_t index, const char *why, char *err,
    size_t errlen)
{
	int line = l != NULL ? config_find_line(l->lines, l->nlines, key,
	    index) :
	    config_find_line(c->lines, c->nlines, key, index);

	if (line < 0)
		line = l != NULL ? l->line : 1;
	snprintf(err, errlen, "%s:%d: [%s] %s: %s", c->label, line,
	    l != NULL ? l->name : "ferry", key, why);
}

void
config_cluster_error(const struct config *c, const char *key,
    const char *why, char *err, size_t errlen)
{
	int line = config_find_line(c->cluster.lines, c->cluster.nlines, key,
	    0);

	if (line < 0)
		line = c->cluster.line > 0 ? c->cluster.line : 1;
	snprintf(err, errlen, "%s:%d: [cluster] %s: %s", c->label, line, key,
	    why);
}


/* ---- validation ---- */

/* Errors about a key point at its line, if it was given. */
static void
key_line(struct parse *p, const struct config_listener *l, const char *key)
{
	int line = config_find_line(l->lines, l->nlines, key, 0);

	if (line > 0)
		p->line = line;
}

static const char *const tls_keys[] = { "client_ca", "tls_min_version",
    "ciphers", "ciphersuites", "alpn", "alpn_fallback", "client_crl",
    "ticket_keys", "ticket_rotate", "ocsp", NULL };

static bool
binds_unix(const struct config_listener *l)
{
	for (size_t i = 0; i < l->nbind; i++)
		if (config_addr_is_unix(&l->bind[i]))
			return true;
	return false;
}

/*
 * Every route names a set that exists; clients no route takes go to the
 * set "default", which then needs backends (unless they are refused).
 */
static int
check_routes(struct parse *p, struct config_listener *l)
{
	bool has_default = false;

	for (size_t i = 0; i < l->nroutes; i++) {
		struct config_route *r = &l->route[i];
		r->set = -1;
		for (size_t j = 0; j < l->nsets; j++)
			if (!strcmp(l->set_name[j], r->set_name))
				r->set = (int)j;
		if (r->set < 0) {
			p->line = r->line;
			return config_fail(p, "route",
			    "no backend set '%s' (give "
			    "backend_set = %s: ADDRESS...)", r->set_name,
			    r->set_name);
		}
	}
	for (size_t i = 0; i < l->nbackend; i++)
		has_default = has_default || l->backend[i].set == 0;
	if (l->mode == CONFIG_FORWARD && !has_default && !l->route_refuse) {
		key_line(p, l, "backend_set");
		return config_fail(p, "backend",
		    "missing: clients that no route "
		    "takes go to the backends of `backend`; give it, or "
		    "route_nomatch = refuse");
	}
	return 1;
}

/* ocsp: once for every certificate, or once per certificate. */
static int
check_ocsp(struct parse *p, struct config_listener *l)
{
	if (l->nocsp == 0)
		return 1;
	key_line(p, l, "ocsp");
	if (l->nocsp != 1 && l->nocsp != l->ncert)
		return config_fail(p, "ocsp",
		    "%zu values for %zu certificates: give "
		    "one for all, or one per cert, in order", l->nocsp,
		    l->ncert);
	if (l->nocsp == 1 && l->ncert > 1 && strcmp(l->ocsp[0], "auto") &&
	    strcmp(l->ocsp[0], "off"))
		return config_fail(p, "ocsp",
		    "one file for %zu certificates: give "
		    "one ocsp line per cert, in order", l->ncert);
	for (size_t i = 0; i < l->nocsp; i++)
		if (!strcmp(l->ocsp[i], "auto") && p->c->ocsp_dir[0] == '\0')
			return config_fail(p, "ocsp",
			    "auto needs ocsp_dir in [ferry] "
			    "(where the responses are kept, and shared by the "
			    "workers)");
	return 1;
}

static int
check_listener(struct parse *p, struct config_listener *l)
{
	p->line = l->line;
	snprintf(p->section, sizeof(p->section), "%s", l->name);
	if (!l->mode_set)
		return config_fail(p, "mode", "missing (relay or forward)");
	for (size_t i = 0; i < l->nlines; i++) {
		const struct config_key *k = config_find_key(l->lines[i].key);
		if ((k->scope == CONFIG_SCOPE_RELAY && l->mode != CONFIG_RELAY) ||
		    (k->scope == CONFIG_SCOPE_FORWARD &&
		    l->mode != CONFIG_FORWARD)) {
			p->line = l->lines[i].line;
			return config_fail(p, k->name, "only for %s listeners",
			    k->scope == CONFIG_SCOPE_RELAY ? "relay" :
			    "forward");
		}
	}
	if (l->nbind == 0)
		return config_fail(p, "bind", "missing");
	if (l->ncert != l->nkey)
		return config_fail(p, "key",
		    "%zu certificates but %zu keys: give "
		    "one key per cert, in order", l->ncert, l->nkey);
	if (l->verify != CONFIG_VERIFY_NONE && l->ncert == 0)
		return config_fail(p, "verify_client", "needs TLS (cert/key)");
	if (l->verify != CONFIG_VERIFY_NONE && l->client_ca[0] == '\0')
		return config_fail(p, "client_ca",
		    "missing: verify_client needs "
		    "the CA file");
	/* A plain listener would ignore these without a word. */
	for (size_t i = 0; l->ncert == 0 && tls_keys[i] != NULL; i++) {
		if (config_find_line(l->lines, l->nlines, tls_keys[i], 0) < 0)
			continue;
		key_line(p, l, tls_keys[i]);
		return config_fail(p, tls_keys[i],
		    "needs TLS (cert and key): this "
		    "listener is plain");
	}
	if (l->acl[0] != '\0' && l->verify == CONFIG_VERIFY_NONE) {
		key_line(p, l, "acl");
		return config_fail(p, "acl",
		    "needs verify_client = required (or "
		    "optional) and client_ca: the access list matches client "
		    "certificates");
	}
	if (l->mode == CONFIG_FORWARD && l->nbackend == 0)
		return config_fail(p, "backend",
		    "missing for a forward listener");
	for (size_t i = 0; i < l->nbackend; i++)
		if (l->backend[i].addr.host[0] == '\0') {
			int line = config_find_line(l->lines, l->nlines,
			    "backend", 0);
			if (line > 0)
				p->line = line;
			return config_fail(p, "backend",
			    "':%d' needs a host to "
			    "connect to", l->backend[i].addr.port);
		}
	if (!check_routes(p, l))
		return 0;
	if (l->check == CONFIG_CHECK_TLS && !l->backend_tls &&
	    l->check_interval > 0) {
		key_line(p, l, "check");
		return config_fail(p, "check", "tls needs backend_tls = on");
	}
	if ((l->unix_mode != 0 || l->unix_owner[0]) && !binds_unix(l)) {
		key_line(p, l, l->unix_mode != 0 ? "unix_mode" : "unix_owner");
		return config_fail(p,
		    l->unix_mode != 0 ? "unix_mode" : "unix_owner",
		    "no unix: address in bind");
	}
	if (l->mode == CONFIG_RELAY && l->nbackend > 0)
		return config_fail(p, "backend", "only forward listeners have "
		    "backends");
	if (l->backend_tls == false && (l->backend_ca[0] ||
	    l->backend_sni[0] || l->backend_cert[0]))
		return config_fail(p, "backend_tls", "backend_ca/backend_sni/"
		    "backend_cert given but backend_tls is off");
	if (l->backend_key[0] && !l->backend_cert[0]) {
		key_line(p, l, "backend_key");
		return config_fail(p, "backend_key", "needs backend_cert");
	}
	if (l->client_crl[0] && l->verify == CONFIG_VERIFY_NONE) {
		key_line(p, l, "client_crl");
		return config_fail(p, "client_crl", "needs verify_client (and "
		    "client_ca): the CRL is checked against client "
		    "certificates");
	}
	return check_ocsp(p, l);
}

/*
 * Relay listeners share one uuid namespace: one without an access list
 * would let its clients produce and consume the uuids another's list
 * guards.  So it is all of them or none.
 */
static int
check_acls(struct parse *p)
{
	const struct config_listener *guarded = NULL;

	for (size_t i = 0; i < p->c->nlisteners; i++) {
		const struct config_listener *l = &p->c->listeners[i];
		if (l->mode == CONFIG_RELAY && l->acl[0] != '\0') {
			guarded = l;
			break;
		}
	}
	if (guarded == NULL)
		return 1;
	for (size_t i = 0; i < p->c->nlisteners; i++) {
		struct config_listener *l = &p->c->listeners[i];
		if (l->mode != CONFIG_RELAY || l->acl[0] != '\0')
			continue;
		p->line = l->line;
		snprintf(p->section, sizeof(p->section), "%s", l->name);
		return config_fail(p, "acl",
		    "missing: relay listeners share their "
		    "uuids, and [%s] has an access list; give every relay "
		    "listener one (with verify_client), or serve this one "
		    "from another ferry", guarded->name);
	}
	return 1;
}

/* Points p at the line of [cluster]'s `key`, or at the section. */
static void
cluster_line(struct parse *p, const char *key)
{
	const struct config_cluster *cl = &p->c->cluster;
	int line = config_find_line(cl->lines, cl->nlines, key, 0);

	p->line = line > 0 ? line : cl->line;
	snprintf(p->section, sizeof(p->section), "cluster");
}

/* The keys of [cluster] that only make sense together, or alone. */
static int
check_cluster(struct parse *p)
{
	const struct config_cluster *cl = &p->c->cluster;
	int auths = (cl->nats_user[0] || cl->nats_password[0]) +
	    (cl->nats_token[0] != '\0') + (cl->nats_creds[0] != '\0');

	if (!cl->set)
		return 1;
	if (cl->nnats == 0) {
		cluster_line(p, "nats");
		return config_fail(p, "nats",
		    "missing: the NATS servers to join "
		    "(nats://host:port, ...)");
	}
	if ((cl->nats_cert[0] != '\0') != (cl->nats_key[0] != '\0')) {
		const char *k = cl->nats_cert[0] ? "nats_key" : "nats_cert";
		cluster_line(p, cl->nats_cert[0] ? "nats_cert" : "nats_key");
		return config_fail(p, k,
		    "missing: a client certificate needs its "
		    "key, and the key its certificate");
	}
	if ((cl->nats_user[0] != '\0') != (cl->nats_password[0] != '\0')) {
		const char *k = cl->nats_user[0] ? "nats_password" :
		    "nats_user";
		cluster_line(p, cl->nats_user[0] ? "nats_user" :
		    "nats_password");
		return config_fail(p, k,
		    "missing: nats_user and nats_password go "
		    "together");
	}
	if (auths > 1) {
		const char *k = cl->nats_creds[0] ? "nats_creds" :
		    "nats_token";
		cluster_line(p, k);
		return config_fail(p, k,
		    "give one way to authenticate to NATS: "
		    "nats_user/nats_password, nats_token or nats_creds");
	}
	return 1;
}

int
config_finish(struct parse *p, int rc)
{
	if (rc == -1 && !p->failed) {
		snprintf(p->err, p->errlen, "%s: %s", p->label,
		    strerror(errno));
		return -1;
	}
	if (rc > 0 && !p->failed) {
		/* inih: a line that is not key = value nor [section] */
		snprintf(p->err, p->errlen, "%s:%d: syntax error (expected "
		    "[section] or key = value)", p->label, rc);
		return -1;
	}
	if (rc < -1 && !p->failed) {
		snprintf(p->err, p->errlen, "%s: out of memory", p->label);
		return -1;
	}
	if (p->failed)
		return -1;
	if (p->c->nlisteners == 0) {
		snprintf(p->err, p->errlen, "%s: no listener section",
		    p->label);
		return -1;
	}
	if (p->c->group[0] != '\0' && p->c->user[0] == '\0') {
		p->line = config_find_line(p->c->lines, p->c->nlines, "group",
		    0);
		snprintf(p->section, sizeof(p->section), "ferry");
		config_fail(p, "group",
		    "needs user (group is the group to drop to "
		    "with it)");
		return -1;
	}
	for (size_t i = 0; i < p->c->nlisteners; i++)
		if (!check_listener(p, &p->c->listeners[i]))
			return -1;
	if (!check_acls(p) || !check_cluster(p))
		return -1;
	return 0;
}
