/* listeners: see listeners.h (shared by its files: listeners_impl.h). */
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
int
listeners_resolve_backends(const struct config *cfg,
    const struct config_listener *l,
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

	if (listeners_resolve_backends(ls->cfg, l, backends, err, errlen) < 0)
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
int
listeners_unix_owner(const struct config_listener *l, uid_t *uid, gid_t *gid,
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

	if (listeners_unix_owner(l, &uid, &gid, why, whylen) < 0)
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
int
listeners_listener_build(struct listeners *ls, struct listener *ln,
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

void
listeners_listener_free(struct listener *ln)
{
	if (ln == NULL)
		return;
	tcpserver_free(ln->srv);
	relay_listener_free(ln->relay);
	forward_listener_free(ln->fwd);
	accesslog_unref(ln->access);
	/* After the server: its TLS contexts use these. */
	tls_tickets_free(ln->tickets);
	listeners_ocsp_free(ln->ocsp);
	free(ln);
}

struct listener *
listeners_listener_new(const struct config_listener *l)
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
	if ((keep = listeners_tls_keep_build(cfg, NULL, err, errlen)) == NULL) {
		free(ls);
		return NULL;
	}
	if (listeners_tls_set_build(cfg, &t, keep, err, errlen) < 0) {
		listeners_tls_keep_free(keep);
		free(ls);
		return NULL;
	}
	for (size_t i = 0; i < cfg->nlisteners && rc == 0; i++) {
		if (t.acl[i] != NULL)
			LOGI("[%s] access list %s: %zu rules",
			    cfg->listeners[i].name, acl_path(t.acl[i]),
			    acl_rules(t.acl[i]));
		ls->l[ls->n] = listeners_listener_new(&cfg->listeners[i]);
		if (ls->l[ls->n] == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		listeners_tls_keep_give(keep, i, ls->l[ls->n]);
		rc = listeners_listener_build(ls, ls->l[ls->n++], &t, i, pool, err,
		    errlen);
	}
	/* The servers and listeners hold what they use. */
	listeners_tls_set_free(&t, cfg->nlisteners);
	listeners_tls_keep_free(keep);
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

int
listeners_listener_start(struct listeners *ls, struct listener *ln, int worker,
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
		if (listeners_listener_start(ls, ls->l[i], worker,
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

/* Its clients' connections: a forwarded one is one, its backend aside. */
uint64_t
listeners_listener_conns(const struct listener *ln)
{
	const struct metrics_conn *m = metrics_conn(ln->metrics_id);

	return m->accepted - m->closed;
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
		n += listeners_listener_conns(ln);
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
		listeners_listener_free(ls->l[i]);
	for (size_t i = 0; i < ls->nretired; i++)
		listeners_listener_free(ls->retired[i]);
	free(ls->retired);
	tcpserver_free(ls->admin);
	free(ls);
}
