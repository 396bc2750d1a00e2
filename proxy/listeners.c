/* listeners: see listeners.h. */
#define _GNU_SOURCE
#include "listeners.h"

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

/*
 * One configured listener and what serves it.  Its own copy of its
 * section: a reload replaces the configuration, and a listener it removes
 * or changes lives on (retired) while its connections drain.
 */
struct listener {
	struct config_listener cfg;
	struct tcpserver *srv;
	int metrics_id;
	struct relay_listener *relay;	/* mode = relay */
	struct forward_listener *fwd;	/* mode = forward */
	struct accesslog *access;	/* access_log, or NULL */
	/*
	 * What its TLS contexts use and outlive: its ticket keys (made
	 * before the fork; a reload keeps them while ticket_keys and
	 * ticket_rotate stay) and a staple source per certificate with ocsp.
	 */
	struct tls_tickets *tickets;
	struct tls_ocsp *ocsp[CONFIG_MAX_CERTS];
};

struct listeners {
	const struct config *cfg;
	struct stream_loop *sl;
	struct listener *l[CONFIG_MAX_LISTENERS];
	size_t n;
	/* Removed or replaced by reloads: their connections drain. */
	struct listener **retired;
	size_t nretired;
	int worker;			/* listeners_start's, or -1 before */
	struct registry *reg;		/* every relay listener's uuids */
	struct cluster *cluster;	/* this worker as a node, or NULL */
	struct tcpserver *admin;	/* NULL: no admin page here */
	struct admin *admin_conns;	/* its connections */
	struct relay_listener *admin_relay;	/* the device page's consumers */
};

/*
 * What the TLS contexts of a configuration are built with and that lives
 * as long as its listeners, one slot per listener of the configuration:
 * a listener's own (one that stays), or made for it (`made`: freed if
 * the build fails, else handed to the new listener).
 */
struct tls_keep {
	struct tls_tickets *tickets[CONFIG_MAX_LISTENERS];
	struct tls_ocsp *ocsp[CONFIG_MAX_LISTENERS][CONFIG_MAX_CERTS];
	bool made[CONFIG_MAX_LISTENERS];
};

/*
 * What SIGHUP reloads: every listener's TLS contexts and access lists,
 * built together so that a reload is all or nothing.  The servers and
 * listeners they go to take their own references (an access list is
 * taken over: its slot is then NULL).
 */
struct tls_set {
	struct tls_ctx *server[CONFIG_MAX_LISTENERS];
	struct tls_ctx *backend[CONFIG_MAX_LISTENERS];
	struct acl *acl[CONFIG_MAX_LISTENERS];
};

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
static struct tls_ctx *
backend_tls(const struct config *cfg, const struct config_listener *l,
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

static void
tls_set_free(struct tls_set *t, size_t n)
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
static int
tls_set_build(const struct config *cfg, struct tls_set *t,
    const struct tls_keep *keep, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->ncert > 0 && (t->server[i] = server_tls(cfg, l,
		    keep->tickets[i], keep->ocsp[i], err, errlen)) == NULL)
			goto fail;
		if (l->mode == CONFIG_FORWARD && l->backend_tls &&
		    (t->backend[i] = backend_tls(cfg, l, err, errlen)) == NULL)
			goto fail;
		if (l->mode == CONFIG_RELAY && l->acl[0] != '\0' &&
		    (t->acl[i] = access_list(cfg, l, err, errlen)) == NULL)
			goto fail;
	}
	return 0;
fail:
	tls_set_free(t, cfg->nlisteners);
	return -1;
}

static bool same_listener(const struct config_listener *a,
    const struct config_listener *b);
static struct listener *find_listener(const struct listeners *ls,
    const char *name);

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

static void
ocsp_free(struct tls_ocsp **ocsp)
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
			ocsp_free(out);
			return -1;
		}
	}
	return 0;
}

static void
tls_keep_free(struct tls_keep *k)
{
	for (size_t i = 0; i < CONFIG_MAX_LISTENERS; i++)
		if (k->made[i]) {
			tls_tickets_free(k->tickets[i]);
			ocsp_free(k->ocsp[i]);
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
static struct tls_keep *
tls_keep_build(const struct config *cfg, const struct listeners *cur,
    char *err, size_t errlen)
{
	struct tls_keep *k = calloc(1, sizeof(*k));

	if (k == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		struct listener *old = cur != NULL ? find_listener(cur,
		    l->name) : NULL;
		bool same = old != NULL && old->cfg.ncert > 0 &&
		    !strcmp(old->cfg.ticket_keys, l->ticket_keys) &&
		    old->cfg.ticket_rotate == l->ticket_rotate;

		if (tls_files(cfg, l, err, errlen) < 0)
			goto fail;
		if (old != NULL && same_listener(&old->cfg, l)) {
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
	tls_keep_free(k);
	return NULL;
}

/* A new listener takes what was made for it (slot i). */
static void
tls_keep_give(struct tls_keep *k, size_t i, struct listener *ln)
{
	ln->tickets = k->tickets[i];
	memcpy(ln->ocsp, k->ocsp[i], sizeof(ln->ocsp));
	k->made[i] = false;
}

/* ---- the status page ---- */

/* /api/status's listeners, workers and connections (admin.h). */
static void
admin_status(struct buffer *b, void *arg)
{
	struct listeners *ls = arg;
	int rc = http_printf(b, "\"workers\": %d, \"connections\": %zu, "
	    "\"listeners\": [", ls->cfg->workers, ls->sl->live);

	for (size_t i = 0; i < ls->n && rc == 0; i++) {
		const struct listener *ln = ls->l[i];
		const struct config_listener *l = &ln->cfg;
		struct sockaddr_storage ss[TCPSERVER_MAX_SOCKETS];
		size_t na = ln->srv != NULL ? tcpserver_addresses(ln->srv, ss,
		    TCPSERVER_MAX_SOCKETS) : 0;
		const struct metrics_conn *mc = ln->metrics_id >= 0 ?
		    metrics_conn(ln->metrics_id) : NULL;

		rc |= http_printf(b, "%s{\"name\": ", i ? ", " : "");
		rc |= http_json_str(b, l->name, strlen(l->name));
		rc |= http_printf(b, ", \"mode\": \"%s\", \"tls\": %s, "
		    "\"connections\": %llu, \"addresses\": [",
		    l->mode == CONFIG_RELAY ? "relay" : "forward",
		    l->ncert > 0 ? "true" : "false", mc != NULL ?
		    (unsigned long long)(mc->accepted - mc->closed) : 0ULL);
		for (size_t j = 0; j < na; j++) {
			char addr[80];
			netutil_format_addr((struct sockaddr *)&ss[j], addr,
			    sizeof(addr));
			rc |= http_printf(b, "%s", j ? ", " : "");
			rc |= http_json_str(b, addr, strlen(addr));
		}
		rc |= http_printf(b, "]}");
	}
	(void)http_printf(b, "], ");
}

/* ---- building ---- */

/* Resolves a forward listener's backends (once, at start-up). */
static int
resolve_backends(const struct config *cfg, const struct config_listener *l,
    struct backend_def *out, char *err, size_t errlen)
{
	for (size_t i = 0; i < l->nbackend; i++) {
		const struct config_addr *a = &l->backend[i].addr;
		struct backend_def *b = &out[i];
		char why[256];
		int rc;

		memset(b, 0, sizeof(*b));
		b->set = l->backend[i].set;
		b->weight = l->backend[i].weight;
		b->backup = l->backend[i].backup;
		if (config_addr_is_unix(a)) {
			/* No name to send or check: TLS goes without SNI. */
			snprintf(b->label, sizeof(b->label), "%s", a->host);
			rc = netutil_unix_addr(a->host + 5, &b->addr,
			    &b->addrlen, why, sizeof(why));
		} else {
			snprintf(b->host, sizeof(b->host), "%s", a->host);
			snprintf(b->label, sizeof(b->label),
			    strchr(a->host, ':') ? "[%s]:%d" : "%s:%d",
			    a->host, a->port);
			rc = netutil_resolve(a->host, a->port, &b->addr,
			    &b->addrlen, why, sizeof(why));
		}
		if (rc < 0) {
			/* One `backend` line holds the whole list. */
			config_error(cfg, l, "backend", 0, why, err, errlen);
			return -1;
		}
	}
	return 0;
}

static void
relay_opts_from(const struct config_listener *l, struct relay_opts *o)
{
	relay_opts_default(o);
	o->max_consumers = l->max_consumers;
	o->queue_bytes = l->queue_bytes;
	o->slow = (enum relay_slow)l->slow_consumer;
	o->grace = l->grace;
	o->takeover = (enum relay_takeover)l->takeover;
	o->last_value = l->last_value;
	o->limits.max_uuid = l->max_uuid;
	o->limits.max_keys_bytes = l->max_keys_bytes;
	o->limits.max_keys = l->max_keys;
	o->header_timeout = l->handshake_timeout;
	o->idle_timeout = l->idle_timeout;
}

/* A relay listener on the shared registry; takes its access list. */
static int
relay_from(struct listeners *ls, struct listener *ln, struct acl **acl,
    char *err, size_t errlen)
{
	const struct config_listener *l = &ln->cfg;
	struct relay_opts ro;
	struct relay_web web;

	relay_opts_from(l, &ro);
	if (ls->reg == NULL && (ls->reg = registry_new(ls->sl->loop)) == NULL) {
		snprintf(err, errlen, "[%s] out of memory", l->name);
		return -1;
	}
	ln->relay = relay_listener_new(l->name, ls->reg, &ro);
	if (ln->relay == NULL) {
		snprintf(err, errlen, "[%s] out of memory", l->name);
		return -1;
	}
	relay_listener_set_acl(ln->relay, *acl);
	*acl = NULL;
	relay_web_default(&web);
	web.ws.max_message_bytes = l->max_message_bytes;
	snprintf(web.origins, sizeof(web.origins), "%s", l->origins);
	relay_listener_set_web(ln->relay, &web);
	return 0;
}

static int
forward_from(struct listeners *ls, struct listener *ln,
    struct tls_ctx *btls, char *err, size_t errlen)
{
	const struct config_listener *l = &ln->cfg;
	struct backend_def backends[CONFIG_MAX_BACKENDS];
	struct forward_route routes[CONFIG_MAX_ROUTES];
	struct forward_opts fo = { 0 };
	char why[256];

	if (resolve_backends(ls->cfg, l, backends, err, errlen) < 0)
		return -1;
	fo.backends.defs = backends;
	fo.backends.n = l->nbackend;
	fo.backends.set_names = l->set_name;
	fo.backends.nsets = l->nsets;
	fo.backends.balance = l->balance == CONFIG_BALANCE_LEASTCONN ?
	    BACKEND_LEASTCONN : BACKEND_ROUNDROBIN;
	fo.backends.max_fails = (unsigned)l->max_fails;
	fo.backends.fail_timeout = l->fail_timeout;
	fo.backends.check_interval = l->check_interval;
	fo.backends.check = l->check == CONFIG_CHECK_TLS ? BACKEND_CHECK_TLS :
	    BACKEND_CHECK_TCP;
	fo.backends.connect_timeout = l->connect_timeout;
	fo.backends.metrics_id = ln->metrics_id;
	for (size_t i = 0; i < l->nroutes; i++) {
		routes[i].kind = l->route[i].kind == CONFIG_ROUTE_ALPN ?
		    FORWARD_ROUTE_ALPN : FORWARD_ROUTE_SNI;
		snprintf(routes[i].match, sizeof(routes[i].match), "%s",
		    l->route[i].match);
		routes[i].set = l->route[i].set;
	}
	fo.routes = routes;
	fo.nroutes = l->nroutes;
	fo.nomatch_refuse = l->route_refuse;
	fo.proxy_tlvs = l->proxy_tlvs;
	fo.connect_timeout = l->connect_timeout;
	fo.idle_timeout = l->idle_timeout;
	fo.fin_timeout = l->fin_timeout;
	fo.high_water = l->high_water;
	fo.proxy = l->proxy_protocol == CONFIG_PROXY_V1 ? FORWARD_PROXY_V1 :
	    l->proxy_protocol == CONFIG_PROXY_V2 ? FORWARD_PROXY_V2 :
	    FORWARD_PROXY_OFF;
	fo.backend_tls = btls;
	fo.backend_sni = l->backend_sni;
	ln->fwd = forward_listener_new(l->name, ls->sl, &fo, why, sizeof(why));
	if (ln->fwd == NULL) {
		config_error(ls->cfg, l, "backend", 0, why, err, errlen);
		return -1;
	}
	return 0;
}

/* unix_owner "user[:group]" -> ids (-1: unchanged); 0 or -1 with why. */
static int
unix_owner(const struct config_listener *l, uid_t *uid, gid_t *gid,
    char *why, size_t whylen)
{
	char user[64], *group;
	struct passwd *pw;
	struct group *gr;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (l == NULL || l->unix_owner[0] == '\0')
		return 0;
	snprintf(user, sizeof(user), "%s", l->unix_owner);
	if ((group = strchr(user, ':')) != NULL)
		*group++ = '\0';
	if (user[0] != '\0') {
		if ((pw = getpwnam(user)) == NULL) {
			snprintf(why, whylen, "no user '%s'", user);
			return -1;
		}
		*uid = pw->pw_uid;
	}
	if (group != NULL && group[0] != '\0') {
		if ((gr = getgrnam(group)) == NULL) {
			snprintf(why, whylen, "no group '%s'", group);
			return -1;
		}
		*gid = gr->gr_gid;
	}
	return 0;
}

/* A unix: address of a bind line. */
static int
bind_unix(const struct config_listener *l, struct tcpserver *srv,
    const struct config_addr *a, char *why, size_t whylen)
{
	uid_t uid;
	gid_t gid;

	if (unix_owner(l, &uid, &gid, why, whylen) < 0)
		return -1;
	return tcpserver_bind_unix(srv, a->host + 5, l ? l->unix_mode : 0,
	    uid, gid, why, whylen);
}

/*
 * The addresses of one `bind` (or `admin`) line, bound, not accepting:
 * the sockets of the pool that match an address (inherited, or the
 * previous configuration's; a unix: one by its path) rather than new ones.
 */
static int
bind_addrs(const struct config *cfg, const struct config_listener *l,
    struct tcpserver *srv, const struct config_addr *addrs, size_t n,
    const char *key, struct sockpool *pool, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		int fds[TCPSERVER_MAX_SOCKETS];
		size_t got = pool == NULL ? 0 : sockpool_take(pool,
		    l != NULL ? l->name : "admin", addrs[i].host,
		    addrs[i].port, fds, TCPSERVER_MAX_SOCKETS);
		char why[256];

		if (got > 0) {
			if (tcpserver_adopt(srv, fds, got) == 0)
				continue;
			for (size_t j = 0; j < got; j++)
				close(fds[j]);
			config_error(cfg, l, key, 0, "too many sockets", err,
			    errlen);
			return -1;
		}
		if (config_addr_is_unix(&addrs[i])) {
			if (bind_unix(l, srv, &addrs[i], why,
			    sizeof(why)) < 0) {
				config_error(cfg, l, key, 0, why, err, errlen);
				return -1;
			}
			continue;
		}
		if (tcpserver_bind(srv, addrs[i].host[0] ? addrs[i].host :
		    NULL, addrs[i].port, AF_UNSPEC, NETUTIL_DEFAULT_BACKLOG,
		    false, why, sizeof(why)) < 0) {
			/* One line holds the whole list. */
			config_error(cfg, l, key, 0, why, err, errlen);
			return -1;
		}
	}
	return 0;
}

/* A listener of either mode, with its server bound; slot i of t. */
static int
listener_build(struct listeners *ls, struct listener *ln,
    struct tls_set *t, size_t i, struct sockpool *pool, char *err,
    size_t errlen)
{
	const struct config_listener *l = &ln->cfg;
	struct stream_opts so;

	stream_opts_default(&so);
	so.handshake_timeout = l->handshake_timeout;
	ln->metrics_id = metrics_listener(l->name,
	    l->mode == CONFIG_RELAY ? "relay" : "forward");
	if (l->mode == CONFIG_RELAY) {
		if (relay_from(ls, ln, &t->acl[i], err, errlen) < 0)
			return -1;
		ln->srv = tcpserver_new(ls->sl, l->name, &so, t->server[i],
		    relay_handle_stream, ln->relay);
	} else {
		if (forward_from(ls, ln, t->backend[i], err, errlen) < 0)
			return -1;
		/* A client's side reads at most high_water ahead. */
		so.max_buffer_size = l->high_water;
		ln->srv = tcpserver_new(ls->sl, l->name, &so, t->server[i],
		    forward_handle_stream, ln->fwd);
	}
	if (ln->srv == NULL ||
	    tcpserver_set_accept_proxy(ln->srv, l->accept_proxy) < 0) {
		snprintf(err, errlen, "[%s] out of memory", l->name);
		return -1;
	}
	if (l->access_log[0] != '\0') {
		char why[CONFIG_PATH_LEN + 64];
		ln->access = accesslog_open(l->access_log, l->name,
		    (enum log_format)ls->cfg->log_format, why, sizeof(why));
		if (ln->access == NULL) {
			config_error(ls->cfg, l, "access_log", 0, why, err,
			    errlen);
			return -1;
		}
		tcpserver_set_access_log(ln->srv, ln->access);
	}
	return bind_addrs(ls->cfg, l, ln->srv, l->bind, l->nbind, "bind",
	    pool, err, errlen);
}

static void
listener_free(struct listener *ln)
{
	if (ln == NULL)
		return;
	tcpserver_free(ln->srv);
	relay_listener_free(ln->relay);
	forward_listener_free(ln->fwd);
	accesslog_unref(ln->access);
	/* After the server: its TLS contexts use these. */
	tls_tickets_free(ln->tickets);
	ocsp_free(ln->ocsp);
	free(ln);
}

static struct listener *
listener_new(const struct config_listener *l)
{
	struct listener *ln = malloc(sizeof(*ln));

	if (ln != NULL) {
		memset(ln, 0, sizeof(*ln));
		ln->cfg = *l;
	}
	return ln;
}

static int
admin_build(struct listeners *ls, struct sockpool *pool, char *err,
    size_t errlen)
{
	const struct config *cfg = ls->cfg;

	ls->admin_conns = admin_new(ls->sl->loop, cfg->admin_timeout);
	if (ls->admin_conns != NULL)
		ls->admin = tcpserver_new(ls->sl, "admin", NULL, NULL,
		    admin_handle_stream, ls->admin_conns);
	if (ls->admin != NULL && ls->reg != NULL) {
		/* The device page consumes as any client does (drop). */
		struct relay_opts ro;
		relay_opts_default(&ro);
		ro.header_timeout = cfg->admin_timeout;
		ls->admin_relay = relay_listener_new("admin", ls->reg, &ro);
		if (ls->admin_relay == NULL) {
			snprintf(err, errlen, "admin: out of memory");
			return -1;
		}
	}
	if (ls->admin != NULL) {
		admin_set_relay(ls->admin_conns, ls->reg, ls->admin_relay);
		admin_set_status(ls->admin_conns, admin_status, ls);
		admin_set_token(ls->admin_conns, cfg->admin_token);
	}
	if (ls->admin == NULL) {
		snprintf(err, errlen, "admin: out of memory");
		return -1;
	}
	return bind_addrs(cfg, NULL, ls->admin, &cfg->admin, 1, "admin",
	    pool, err, errlen);
}

struct listeners *
listeners_new(const struct config *cfg, struct stream_loop *sl,
    struct sockpool *pool, char *err, size_t errlen)
{
	struct listeners *ls = calloc(1, sizeof(*ls));
	struct tls_keep *keep;
	struct tls_set t;
	int rc = 0;

	if (ls == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ls->cfg = cfg;
	ls->sl = sl;
	ls->worker = -1;
	/* Ticket keys and OCSP sources before the fork: workers share them. */
	if ((keep = tls_keep_build(cfg, NULL, err, errlen)) == NULL) {
		free(ls);
		return NULL;
	}
	if (tls_set_build(cfg, &t, keep, err, errlen) < 0) {
		tls_keep_free(keep);
		free(ls);
		return NULL;
	}
	for (size_t i = 0; i < cfg->nlisteners && rc == 0; i++) {
		if (t.acl[i] != NULL)
			LOGI("[%s] access list %s: %zu rules",
			    cfg->listeners[i].name, acl_path(t.acl[i]),
			    acl_rules(t.acl[i]));
		ls->l[ls->n] = listener_new(&cfg->listeners[i]);
		if (ls->l[ls->n] == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		tls_keep_give(keep, i, ls->l[ls->n]);
		rc = listener_build(ls, ls->l[ls->n++], &t, i, pool, err,
		    errlen);
	}
	/* The servers and listeners hold what they use. */
	tls_set_free(&t, cfg->nlisteners);
	tls_keep_free(keep);
	if (rc == 0 && cfg->admin_set)
		rc = admin_build(ls, pool, err, errlen);
	if (rc < 0) {
		listeners_free(ls);
		return NULL;
	}
	return ls;
}

/* ---- running ---- */

/*
 * The bound addresses (port 0 resolved): operators and tests read these,
 * so they show at log_level = warn too.
 */
static void
log_listening(const char *mode, const char *transport, const char *name,
    const struct tcpserver *srv)
{
	struct sockaddr_storage ss[TCPSERVER_MAX_SOCKETS];
	size_t n = tcpserver_addresses(srv, ss, TCPSERVER_MAX_SOCKETS);

	for (size_t i = 0; i < n; i++) {
		char addr[160];
		if (ss[i].ss_family == AF_UNIX)
			snprintf(addr, sizeof(addr), "unix:%s",
			    ((struct sockaddr_un *)&ss[i])->sun_path);
		else
			netutil_format_addr((struct sockaddr *)&ss[i], addr,
			    sizeof(addr));
		LOGN("%s listening on %s (%s) [%s]", mode, addr, transport,
		    name);
	}
}

/* The relay listeners' families, rendered together (one header each). */
static void
relay_metrics(struct buffer *out, void *arg)
{
	struct listeners *ls = arg;
	struct relay_listener *rls[CONFIG_MAX_LISTENERS];
	size_t n = 0;

	for (size_t i = 0; i < ls->n; i++)
		if (ls->l[i]->relay != NULL)
			rls[n++] = ls->l[i]->relay;
	relay_render_metrics(ls->reg, rls, n, out);
}

/* The OCSP staples of the listeners serving now (not the retired ones). */
static void
ocsp_metrics(struct buffer *out, void *arg)
{
	struct listeners *ls = arg;
	struct tls_ocsp *all[CONFIG_MAX_LISTENERS * CONFIG_MAX_CERTS];
	size_t n = 0;

	for (size_t i = 0; i < ls->n; i++)
		for (size_t j = 0; j < CONFIG_MAX_CERTS; j++)
			if (ls->l[i]->ocsp[j] != NULL)
				all[n++] = ls->l[i]->ocsp[j];
	if (n > 0)
		tls_ocsp_render_metrics(all, n, out);
}

static int
listener_start(struct listeners *ls, struct listener *ln, int worker,
    bool cluster_set)
{
	const struct config_listener *l = &ln->cfg;

	/*
	 * One registry per process: only worker 0 serves the relay listeners,
	 * unless every worker is a node of a cluster.
	 */
	if (l->mode == CONFIG_RELAY && worker != 0 && !cluster_set) {
		tcpserver_stop(ln->srv);
		return 0;
	}
	/* Worker 0 fetches OCSP responses; the others follow ocsp_dir. */
	for (size_t j = 0; j < CONFIG_MAX_CERTS; j++)
		if (ln->ocsp[j] != NULL)
			tls_ocsp_start(ln->ocsp[j], ls->sl->loop, worker == 0);
	tcpserver_set_stats(ln->srv, metrics_conn(ln->metrics_id));
	if (tcpserver_set_limits(ln->srv, l->max_connections,
	    l->max_per_source) < 0) {
		LOGE("[%s] no memory for its connection limits", l->name);
		return -1;
	}
	tcpserver_start(ln->srv);
	/* One process checks the backends; the workers share what it finds. */
	if (ln->fwd != NULL && worker == 0)
		forward_listener_start_checks(ln->fwd);
	log_listening(l->mode == CONFIG_RELAY ? "relay" : "forward",
	    l->ncert > 0 ? "tls" : "tcp", l->name, ln->srv);
	return 0;
}

/* This worker as a node of the cluster, its relay listeners with it. */
static int
cluster_start(struct listeners *ls, int worker)
{
	char err[1024];

	if (!ls->cfg->cluster.set || ls->reg == NULL)
		return 0;
	ls->cluster = cluster_new(ls->sl->loop, ls->reg, &ls->cfg->cluster,
	    worker, metrics_workers(), err, sizeof(err));
	if (ls->cluster == NULL) {
		LOGE("%s", err);
		return -1;
	}
	for (size_t i = 0; i < ls->n; i++)
		if (ls->l[i]->relay != NULL)
			relay_listener_set_cluster(ls->l[i]->relay,
			    ls->cluster);
	/* The device page follows a uuid on another node too. */
	if (ls->admin_relay != NULL)
		relay_listener_set_cluster(ls->admin_relay, ls->cluster);
	return 0;
}

int
listeners_start(struct listeners *ls, int worker)
{
	ls->worker = worker;
	if (cluster_start(ls, worker) < 0)
		return -1;
	for (size_t i = 0; i < ls->n; i++)
		if (listener_start(ls, ls->l[i], worker,
		    ls->cfg->cluster.set) < 0)
			return -1;
	if (ls->admin != NULL && worker != 0) {
		tcpserver_free(ls->admin);
		ls->admin = NULL;
	} else if (ls->admin != NULL) {
		tcpserver_set_limit_key(ls->admin, "admin_max_connections");
		if (tcpserver_set_limits(ls->admin,
		    ls->cfg->admin_max_connections, 0) < 0) {
			LOGE("admin: no memory for its connection limit");
			return -1;
		}
		tcpserver_start(ls->admin);
		log_listening("admin", "http", "admin", ls->admin);
	}
	metrics_add_source(relay_metrics, ls);
	/* Always: a reload may add certificates with ocsp. */
	metrics_add_source(ocsp_metrics, ls);
	return 0;
}

static int check_clashes(const struct config *cfg, char *err, size_t errlen);

/* Its clients' connections: a forwarded one is one, its backend aside. */
static uint64_t
listener_conns(const struct listener *ln)
{
	const struct metrics_conn *m = metrics_conn(ln->metrics_id);

	return m->accepted - m->closed;
}

/* ---- reloading ---- */

/* Generated keys stay as they are; a file is read again. */
static void
listener_reload_tickets(struct listener *ln, const char *who)
{
	char why[512];

	if (ln->tickets != NULL && tls_tickets_reload(ln->tickets, why,
	    sizeof(why)) < 0)
		LOGE("%sreload: [%s] %s; keeping the current ticket keys", who,
		    ln->cfg.name, why);
}

/*
 * New TLS contexts and access list for a listener that stays; its ticket
 * keys and OCSP staples read again, once the new contexts are built (a
 * bad certificate keeps the old staple).
 */
static void
listener_refresh(struct listener *ln, struct tls_set *t, size_t i,
    const char *who)
{
	/*
	 * The new contexts staple through the same objects: each follows its
	 * certificate file (a handshake on an older context gets no staple
	 * for a certificate that changed).
	 */
	for (size_t j = 0; j < CONFIG_MAX_CERTS; j++) {
		char why[768];
		if (ln->ocsp[j] != NULL && tls_ocsp_reload(ln->ocsp[j], why,
		    sizeof(why)) < 0)
			LOGE("%sreload: [%s] ocsp: %s; keeping the current "
			    "response", who, ln->cfg.name, why);
	}
	listener_reload_tickets(ln, who);
	if (t->server[i] != NULL)
		tcpserver_set_tls(ln->srv, t->server[i]);
	if (t->backend[i] != NULL)
		forward_listener_set_backend_tls(ln->fwd, t->backend[i]);
	if (t->acl[i] != NULL) {
		LOGI("%sreload: [%s] access list %s: %zu rules", who,
		    ln->cfg.name, acl_path(t->acl[i]), acl_rules(t->acl[i]));
		relay_listener_set_acl(ln->relay, t->acl[i]);
		t->acl[i] = NULL;
	}
}

/* The same section, but for where its lines are. */
static bool
same_listener(const struct config_listener *a,
    const struct config_listener *b)
{
	return memcmp(a->name, b->name, sizeof(a->name)) == 0 &&
	    memcmp(&a->mode, &b->mode, sizeof(*a) -
	    offsetof(struct config_listener, mode)) == 0;
}

static const struct config_listener *
find_listener_in(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		if (!strcmp(c->listeners[i].name, name))
			return &c->listeners[i];
	return NULL;
}

static struct listener *
find_listener(const struct listeners *ls, const char *name)
{
	for (size_t i = 0; i < ls->n; i++)
		if (!strcmp(ls->l[i]->cfg.name, name))
			return ls->l[i];
	return NULL;
}

bool
listeners_same_set(const struct listeners *ls, const struct config *next)
{
	if (next->nlisteners != ls->n)
		return false;
	for (size_t i = 0; i < next->nlisteners; i++) {
		const struct listener *ln = find_listener(ls,
		    next->listeners[i].name);
		if (ln == NULL || !same_listener(&ln->cfg, &next->listeners[i]))
			return false;
	}
	return true;
}

/*
 * Retired listeners whose connections are all gone (and, for a relay
 * one, whose registry entries are) are freed: reloads do not pile them
 * up.
 */
void
listeners_tidy(struct listeners *ls)
{
	size_t kept = 0;

	for (size_t i = 0; i < ls->nretired; i++) {
		struct listener *ln = ls->retired[i];
		if ((ln->fwd == NULL || forward_listener_conns(ln->fwd) == 0) &&
		    (ln->relay == NULL || relay_listener_idle(ln->relay))) {
			LOGI("[%s] (retired by a reload) drained: freed",
			    ln->cfg.name);
			listener_free(ln);
		} else {
			ls->retired[kept++] = ln;
		}
	}
	ls->nretired = kept;
}

static int
retire(struct listeners *ls, struct listener *ln)
{
	struct listener **r = realloc(ls->retired, (ls->nretired + 1) *
	    sizeof(*r));

	if (r == NULL)
		return -1;
	ls->retired = r;
	/* Stops accepting: a new listener holds its sockets if it took them. */
	tcpserver_stop(ln->srv);
	r[ls->nretired++] = ln;
	return 0;
}

/*
 * The listeners of `next` that are not the current ones, built and bound:
 * the sockets of the listeners that go are pooled (copies: until the
 * commit they still accept), so an address that stays keeps its socket.
 */
static int
build_changed(struct listeners *ls, const struct config *next,
    struct tls_set *t, struct listener **out, char *err, size_t errlen)
{
	struct sockpool pool;
	int rc = 0;

	sockpool_init(&pool);
	for (size_t i = 0; i < ls->n; i++) {
		struct listener *ln = ls->l[i];
		int fds[TCPSERVER_MAX_SOCKETS];
		size_t n = tcpserver_fds(ln->srv, fds, TCPSERVER_MAX_SOCKETS);
		const struct config_listener *nl = NULL;

		for (size_t j = 0; j < next->nlisteners; j++)
			if (!strcmp(next->listeners[j].name, ln->cfg.name))
				nl = &next->listeners[j];
		if (nl != NULL && same_listener(&ln->cfg, nl))
			continue;
		for (size_t k = 0; k < n; k++) {
			int fd = fcntl(fds[k], F_DUPFD_CLOEXEC, 3);
			if (fd >= 0 && sockpool_add(&pool, fd,
			    ln->cfg.name) < 0)
				close(fd);
		}
	}
	for (size_t i = 0; i < next->nlisteners && rc == 0; i++) {
		const struct config_listener *nl = &next->listeners[i];
		struct listener *old = find_listener(ls, nl->name);

		out[i] = NULL;
		if (old != NULL && same_listener(&old->cfg, nl))
			continue;
		if ((out[i] = listener_new(nl)) == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		rc = listener_build(ls, out[i], t, i, &pool, err, errlen);
	}
	/* Sockets nobody took close with the listeners they came from. */
	sockpool_close(&pool, true);
	return rc;
}

int
listeners_reload(struct listeners *ls, const struct config *next,
    const char *who, char *err, size_t errlen)
{
	struct listener *built[CONFIG_MAX_LISTENERS] = { NULL };
	struct listener *now[CONFIG_MAX_LISTENERS];
	const struct config *prev = ls->cfg;
	size_t added = 0, changed = 0, removed = 0;
	struct tls_keep *keep;
	struct tls_set t;

	listeners_tidy(ls);
	if (check_clashes(next, err, errlen) < 0 ||
	    (keep = tls_keep_build(next, ls, err, errlen)) == NULL)
		return -1;
	if (tls_set_build(next, &t, keep, err, errlen) < 0) {
		tls_keep_free(keep);
		return -1;
	}
	ls->cfg = next;		/* errors name the new file's lines */
	if (build_changed(ls, next, &t, built, err, errlen) < 0) {
		for (size_t i = 0; i < next->nlisteners; i++)
			listener_free(built[i]);
		tls_set_free(&t, next->nlisteners);
		tls_keep_free(keep);
		ls->cfg = prev;
		return -1;
	}
	for (size_t i = 0; i < next->nlisteners; i++)
		if (built[i] != NULL)
			tls_keep_give(keep, i, built[i]);
	tls_keep_free(keep);
	for (size_t i = 0; i < next->nlisteners; i++) {
		struct listener *old = find_listener(ls,
		    next->listeners[i].name);
		if (built[i] == NULL) {
			listener_refresh(old, &t, i, who);
			now[i] = old;
			continue;
		}
		/* Keys it shares with the one it replaces: the file anew. */
		listener_reload_tickets(built[i], who);
		now[i] = built[i];
		if (old != NULL)
			changed++;
		else
			added++;
	}
	for (size_t i = 0; i < ls->n; i++) {
		bool kept = false;
		for (size_t j = 0; j < next->nlisteners; j++)
			kept = kept || now[j] == ls->l[i];
		if (kept)
			continue;
		if (find_listener_in(next, ls->l[i]->cfg.name) == NULL) {
			LOGN("%sreload: [%s] removed: draining %llu "
			    "connections", who, ls->l[i]->cfg.name,
			    (unsigned long long)listener_conns(ls->l[i]));
			removed++;
		}
		if (retire(ls, ls->l[i]) < 0)
			listener_free(ls->l[i]);	/* no memory: closes */
	}
	memcpy(ls->l, now, next->nlisteners * sizeof(now[0]));
	ls->n = next->nlisteners;
	tls_set_free(&t, next->nlisteners);
	for (size_t i = 0; i < next->nlisteners; i++) {
		if (built[i] == NULL || ls->worker < 0)
			continue;
		/* A node of the cluster serves its new relay listeners too. */
		if (built[i]->relay != NULL && ls->cluster != NULL)
			relay_listener_set_cluster(built[i]->relay,
			    ls->cluster);
		(void)listener_start(ls, built[i], ls->worker,
		    ls->cfg->cluster.set);
	}
	LOGI("%sreload: %zu listeners (%zu added, %zu changed, %zu removed); "
	    "certificates reloaded for new connections", who, ls->n, added,
	    changed, removed);
	return 0;
}

void
listeners_stop(struct listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		tcpserver_stop(ls->l[i]->srv);
	if (ls->admin != NULL)
		tcpserver_stop(ls->admin);
	admin_close_all(ls->admin_conns);
	/* Device pages would hold a drain for as long as they are open. */
	relay_listener_close_all(ls->admin_relay);
}

void
listeners_reopen_logs(struct listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		if (ls->l[i]->access != NULL)
			accesslog_reopen(ls->l[i]->access);
	for (size_t i = 0; i < ls->nretired; i++)
		if (ls->retired[i]->access != NULL)
			accesslog_reopen(ls->retired[i]->access);
}

size_t
listeners_connections(const struct listeners *ls)
{
	int seen[CONFIG_MAX_LISTENERS * 2];
	size_t nseen = 0;
	uint64_t n = 0;

	/* A listener and the one it replaced count in one metrics slot. */
	for (size_t i = 0; i < ls->n + ls->nretired; i++) {
		const struct listener *ln = i < ls->n ? ls->l[i] :
		    ls->retired[i - ls->n];
		bool dup = false;
		for (size_t k = 0; k < nseen; k++)
			dup = dup || seen[k] == ln->metrics_id;
		if (dup)
			continue;
		if (nseen < sizeof(seen) / sizeof(seen[0]))
			seen[nseen++] = ln->metrics_id;
		n += listener_conns(ln);
	}
	return (size_t)n;
}

size_t
listeners_devices(const struct listeners *ls)
{
	return ls->reg != NULL ? ls->reg->entries : 0;
}

size_t
listeners_fds(const struct listeners *ls, int *fds,
    char (*names)[CONFIG_NAME_LEN], size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i <= ls->n && n < max; i++) {
		const struct tcpserver *srv = i < ls->n ? ls->l[i]->srv :
		    ls->admin;
		const char *name = i < ls->n ? ls->l[i]->cfg.name : "admin";
		size_t got;

		if (srv == NULL)
			continue;
		got = tcpserver_fds(srv, fds + n, max - n);
		for (size_t k = 0; k < got; k++)
			snprintf(names[n + k], CONFIG_NAME_LEN, "%s", name);
		n += got;
	}
	return n;
}

static void
listener_close_all(struct listener *ln)
{
	tcpserver_free(ln->srv);
	ln->srv = NULL;
	if (ln->fwd != NULL)
		forward_listener_close_all(ln->fwd);
	relay_listener_close_all(ln->relay);
}

void
listeners_close_all(struct listeners *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		listener_close_all(ls->l[i]);
	for (size_t i = 0; i < ls->nretired; i++)
		listener_close_all(ls->retired[i]);
	tcpserver_free(ls->admin);
	ls->admin = NULL;
	admin_close_all(ls->admin_conns);
	relay_listener_close_all(ls->admin_relay);
}

/* Runs the loop until the node has left, or its deadline passed. */
static void
leave_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listeners *ls = w->data;

	(void)revents;
	if (cluster_left(ls->cluster))
		ev_break(loop, EVBREAK_ONE);
}

void
listeners_leave(struct listeners *ls)
{
	ev_timer check;

	if (ls->cluster == NULL)
		return;
	cluster_leave(ls->cluster);
	ev_timer_init(&check, leave_check, 0.01, 0.01);
	check.data = ls;
	ev_timer_start(ls->sl->loop, &check);
	ev_run(ls->sl->loop, 0);
	ev_timer_stop(ls->sl->loop, &check);
}

void
listeners_free(struct listeners *ls)
{
	if (ls == NULL)
		return;
	/* The node goes before the registry it observes. */
	cluster_free(ls->cluster);
	ls->cluster = NULL;
	admin_free(ls->admin_conns);
	/* Its entries point to the relay listeners: it goes first. */
	registry_free(ls->reg);
	relay_listener_free(ls->admin_relay);
	for (size_t i = 0; i < ls->n; i++)
		listener_free(ls->l[i]);
	for (size_t i = 0; i < ls->nretired; i++)
		listener_free(ls->retired[i]);
	free(ls->retired);
	tcpserver_free(ls->admin);
	free(ls);
}

/* ---- --check ---- */

/*
 * The addresses to bind (and the admin page's) must resolve.  Resolving,
 * not binding: a check must not take the ports of a running ferry, nor
 * need its privileges.
 */
static int
check_addresses(const struct config *cfg, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char why[256];

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		for (size_t j = 0; j < l->nbind; j++) {
			const struct config_addr *a = &l->bind[j];
			uid_t uid;
			gid_t gid;
			if (config_addr_is_unix(a)) {
				if (unix_owner(l, &uid, &gid, why,
				    sizeof(why)) < 0) {
					config_error(cfg, l, "unix_owner", 0,
					    why, err, errlen);
					return -1;
				}
				continue;
			}
			if (a->host[0] != '\0' && netutil_resolve(a->host,
			    a->port, &ss, &len, why, sizeof(why)) < 0) {
				config_error(cfg, l, "bind", 0, why, err,
				    errlen);
				return -1;
			}
		}
	}
	if (cfg->admin_set && cfg->admin.host[0] != '\0' &&
	    netutil_resolve(cfg->admin.host, cfg->admin.port, &ss, &len, why,
	    sizeof(why)) < 0) {
		config_error(cfg, NULL, "admin", 0, why, err, errlen);
		return -1;
	}
	return 0;
}

/*
 * An access log's directory must be there (opening the file would create
 * it: a check creates nothing).
 */
static int
check_access_logs(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		char dir[CONFIG_PATH_LEN], why[CONFIG_PATH_LEN + 64];
		const char *slash = strrchr(l->access_log, '/');
		struct stat sb;

		if (l->access_log[0] == '\0')
			continue;
		if (slash == NULL)
			snprintf(dir, sizeof(dir), ".");
		else
			snprintf(dir, sizeof(dir), "%.*s",
			    slash == l->access_log ? 1 :
			    (int)(slash - l->access_log), l->access_log);
		errno = 0;
		if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
			snprintf(why, sizeof(why), "directory %s: %s", dir,
			    errno ? strerror(errno) : "not a directory");
			config_error(cfg, l, "access_log", 0, why, err, errlen);
			return -1;
		}
	}
	return 0;
}

/* Whether a and b (resolved) would take the same port. */
static bool
clash(const struct config_addr *a, const struct config_addr *b)
{
	struct sockaddr_storage sa, sb;
	socklen_t la, lb;
	char why[256];

	if (a->port == 0 || a->port != b->port)
		return false;
	/* ":port" is every address of both families. */
	if (a->host[0] == '\0' || b->host[0] == '\0')
		return true;
	if (netutil_resolve(a->host, a->port, &sa, &la, why, sizeof(why)) < 0 ||
	    netutil_resolve(b->host, b->port, &sb, &lb, why, sizeof(why)) < 0 ||
	    sa.ss_family != sb.ss_family)
		return false;
	if (sa.ss_family == AF_INET) {
		in_addr_t x = ((struct sockaddr_in *)&sa)->sin_addr.s_addr;
		in_addr_t y = ((struct sockaddr_in *)&sb)->sin_addr.s_addr;
		return x == y || x == htonl(INADDR_ANY) ||
		    y == htonl(INADDR_ANY);
	}
	if (sa.ss_family == AF_INET6) {
		const struct in6_addr *x = &((struct sockaddr_in6 *)&sa)->sin6_addr;
		const struct in6_addr *y = &((struct sockaddr_in6 *)&sb)->sin6_addr;
		return !memcmp(x, y, sizeof(*x)) || IN6_IS_ADDR_UNSPECIFIED(x) ||
		    IN6_IS_ADDR_UNSPECIFIED(y);
	}
	return false;
}

/* Two listeners (or the admin page) on one address fail at start. */
static int
check_clashes(const struct config *cfg, char *err, size_t errlen)
{
	const struct config_listener *owner[CONFIG_MAX_LISTENERS *
	    CONFIG_MAX_BINDS + 1];
	const struct config_addr *addr[CONFIG_MAX_LISTENERS *
	    CONFIG_MAX_BINDS + 1];
	size_t n = 0;
	char why[512], where[128];

	if (cfg->admin_set) {
		owner[n] = NULL;
		addr[n++] = &cfg->admin;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nbind; j++) {
			owner[n] = &cfg->listeners[i];
			addr[n++] = &cfg->listeners[i].bind[j];
		}
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < i; k++) {
			if (!clash(addr[k], addr[i]))
				continue;
			if (owner[k] != NULL)
				snprintf(where, sizeof(where), "[%s] (line %d)",
				    owner[k]->name, owner[k]->line);
			else
				snprintf(where, sizeof(where), "admin");
			snprintf(why, sizeof(why), "%s%s%s:%d is also bound by "
			    "%s: one address, one listener", strchr(addr[i]->host,
			    ':') ? "[" : "", addr[i]->host, strchr(addr[i]->host,
			    ':') ? "]" : "", addr[i]->port, where);
			config_error(cfg, owner[i], owner[i] ? "bind" : "admin",
			    0, why, err, errlen);
			return -1;
		}
	return 0;
}

size_t
listeners_idle_workers(const struct config *cfg, int workers)
{
	/*
	 * Relay listeners and the admin page are worker 0's alone, unless
	 * every worker is a node of a cluster.
	 */
	if (cfg->cluster.set)
		return 0;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].mode == CONFIG_FORWARD)
			return 0;
	return workers > 1 ? (size_t)workers - 1 : 0;
}

int
listeners_check(const struct config *cfg, char *err, size_t errlen)
{
	struct backend_def backends[CONFIG_MAX_BACKENDS];
	struct tls_keep *keep = tls_keep_build(cfg, NULL, err, errlen);
	struct tls_set t;
	int rc;

	if (keep == NULL)
		return -1;
	rc = tls_set_build(cfg, &t, keep, err, errlen);
	if (rc == 0)
		tls_set_free(&t, cfg->nlisteners);
	tls_keep_free(keep);
	if (rc < 0 || cluster_check(cfg, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->mode == CONFIG_FORWARD && resolve_backends(cfg, l,
		    backends, err, errlen) < 0)
			return -1;
	}
	if (check_addresses(cfg, err, errlen) < 0 ||
	    check_access_logs(cfg, err, errlen) < 0)
		return -1;
	return check_clashes(cfg, err, errlen);
}
