/*
 * ferry: entry point.  config -> SSL contexts -> bind -> drop privileges ->
 * fork workers -> loop -> signals.
 *
 * The only global state is here: the running app, reached from signal
 * watchers (and the supervisor's hook) through their data pointers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "admin.h"
#include "config.h"
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "netutil.h"
#include "process.h"
#include "registry.h"
#include "relay.h"
#include "relay_metrics.h"
#include "stream.h"
#include "tcpserver.h"
#include "tls.h"

struct listener {
	const struct config_listener *cfg;
	struct tcpserver srv;
	struct tls_ctx *tls;		/* towards clients, or NULL */
	struct tls_ctx *backend_tls;	/* forward: towards backends, or NULL */
	int metrics_id;
	struct relay_listener *relay;	/* mode = relay */
	struct acl *acl;		/* until the relay listener takes it */
	struct forward_listener *fwd;	/* mode = forward */
};

struct app {
	struct config cfg;
	struct ev_loop *loop;
	struct stream_loop sl;
	struct listener ls[CONFIG_MAX_LISTENERS];
	size_t nls;
	struct registry *reg;		/* every relay listener's uuids */
	struct tcpserver admin;
	struct admin *admin_srv;	/* its connections */
	bool admin_on;
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer drain;
	ev_tstamp drain_deadline;
	bool draining;
	int worker;
};

/*
 * What SIGHUP reloads: every listener's TLS contexts and access lists,
 * built together so that a reload is all or nothing.
 */
struct tls_set {
	struct tls_ctx *server[CONFIG_MAX_LISTENERS];
	struct tls_ctx *backend[CONFIG_MAX_LISTENERS];
	struct acl *acl[CONFIG_MAX_LISTENERS];
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: ferry [-c FILE] [--check] [options]\n"
	    "\n"
	    "  -c, --config FILE   run the listeners of FILE (INI; see\n"
	    "                      ferry.conf.example); without it, the embedded\n"
	    "                      default: relay on :8888 and TLS relay on :8443\n"
	    "      --check         validate the configuration (certificates,\n"
	    "                      backends, addresses, user included) and exit:\n"
	    "                      0 if good, else 2\n"
	    "                      with FILE:LINE: [section] key: reason\n"
	    "      --certs DIR     certificates of the embedded default (certs)\n"
	    "      --log-level L   error, warn, info, debug (overrides the file)\n"
	    "  -h, --help          this text\n"
	    "  -V, --version       the version\n"
	    "\n"
	    "Development shortcuts, instead of a file (port 0 picks a free port):\n"
	    "      --relay ADDR      a relay listener on ADDR (e.g. :8888)\n"
	    "      --relay-tls ADDR  a TLS relay listener on ADDR (e.g. :8443)\n"
	    "      --cert FILE       its certificate (certs/server.pem)\n"
	    "      --key FILE        its private key (certs/server.key)\n"
	    "\n"
	    "Signals: TERM/INT stop accepting, let live connections finish (up\n"
	    "to drain_timeout) and exit; HUP reloads certificates, keys and\n"
	    "access lists for new connections (the old ones stay if a new file\n"
	    "is bad).\n");
}

/* ---- TLS contexts ---- */

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
	case TLS_OPT_OTHER: break;
	}
	return "cert";
}

static struct tls_ctx *
listener_tls(const struct config *cfg, const struct config_listener *l,
    char *err, size_t errlen)
{
	struct tls_cert_pair pairs[CONFIG_MAX_CERTS];
	struct tls_server_opts o = { 0 };
	struct tls_fault fault = { TLS_OPT_OTHER, 0 };
	struct tls_ctx *c;
	char why[384];

	for (size_t i = 0; i < l->ncert; i++) {
		pairs[i].cert = l->cert[i];
		pairs[i].key = l->key[i];
	}
	o.certs = pairs;
	o.ncerts = l->ncert;
	o.client_ca = l->client_ca[0] ? l->client_ca : NULL;
	o.verify = (enum tls_verify)l->verify;
	o.min_version = l->tls_min_version;
	o.ciphers = l->ciphers[0] ? l->ciphers : NULL;
	o.ciphersuites = l->ciphersuites[0] ? l->ciphersuites : NULL;
	o.alpn = l->alpn[0] ? l->alpn : NULL;
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
	o.fault = &fault;
	c = tls_ctx_new_client(&o, why, sizeof(why));
	if (c == NULL)
		config_error(cfg, l, fault.opt == TLS_OPT_CA_FILE ?
		    "backend_ca" : "backend_tls", 0, why, err, errlen);
	return c;
}

static struct acl *
listener_acl(const struct config *cfg, const struct config_listener *l,
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

/* Builds every TLS context and access list; on failure nothing is kept. */
static int
build_tls(const struct config *cfg, struct tls_set *t, char *err,
    size_t errlen)
{
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		if (l->ncert > 0 &&
		    (t->server[i] = listener_tls(cfg, l, err, errlen)) == NULL)
			goto fail;
		if (l->mode == CONFIG_FORWARD && l->backend_tls &&
		    (t->backend[i] = backend_tls(cfg, l, err, errlen)) == NULL)
			goto fail;
		if (l->mode == CONFIG_RELAY && l->acl[0] != '\0' &&
		    (t->acl[i] = listener_acl(cfg, l, err, errlen)) == NULL)
			goto fail;
	}
	return 0;
fail:
	tls_set_free(t, cfg->nlisteners);
	return -1;
}

/* Resolves a forward listener's backends (once, at start-up). */
static int
resolve_backends(const struct config *cfg, const struct config_listener *l,
    struct forward_backend *out, char *err, size_t errlen)
{
	for (size_t i = 0; i < l->nbackend; i++) {
		const struct config_addr *a = &l->backend[i];
		struct forward_backend *b = &out[i];
		char why[256];

		memset(b, 0, sizeof(*b));
		snprintf(b->host, sizeof(b->host), "%s", a->host);
		snprintf(b->label, sizeof(b->label), strchr(a->host, ':') ?
		    "[%s]:%d" : "%s:%d", a->host, a->port);
		if (netutil_resolve(a->host, a->port, &b->addr, &b->addrlen,
		    why, sizeof(why)) < 0) {
			/* One `backend` line holds the whole list. */
			config_error(cfg, l, "backend", 0, why, err, errlen);
			return -1;
		}
	}
	return 0;
}

/* ---- signals ---- */

/*
 * SIGHUP: new certificates (and backend CAs) for new connections; live
 * connections keep the contexts they hold.  New access lists for the next
 * uuid steps.  All or nothing.
 */
static void
reload(struct app *app, const char *who)
{
	struct tls_set fresh;
	char err[1024];

	if (build_tls(&app->cfg, &fresh, err, sizeof(err)) < 0) {
		LOGE("%sreload: %s; keeping the current certificates and "
		    "access lists", who, err);
		return;
	}
	for (size_t i = 0; i < app->nls; i++) {
		struct listener *ls = &app->ls[i];
		if (fresh.server[i] != NULL) {
			tcpserver_set_tls(&ls->srv, fresh.server[i]);
			tls_ctx_unref(ls->tls);
			ls->tls = fresh.server[i];
		}
		if (fresh.backend[i] != NULL) {
			forward_listener_set_backend_tls(ls->fwd,
			    fresh.backend[i]);
			tls_ctx_unref(ls->backend_tls);
			ls->backend_tls = fresh.backend[i];
		}
		if (fresh.acl[i] != NULL) {
			LOGI("%sreload: [%s] access list %s: %zu rules", who,
			    ls->cfg->name, acl_path(fresh.acl[i]),
			    acl_rules(fresh.acl[i]));
			relay_listener_set_acl(ls->relay, fresh.acl[i]);
		}
	}
	LOGI("%sreload: certificates reloaded for new connections", who);
}

static void
stop_listening(struct app *app)
{
	for (size_t i = 0; i < app->nls; i++)
		tcpserver_stop(&app->ls[i].srv);
	if (app->admin_on)
		tcpserver_stop(&app->admin);
}

/*
 * The supervisor's part of a signal, before the workers get it: a worker
 * it restarts is a copy of it, so it reloads too; and once stopping, its
 * copies of the listening sockets must not keep accepting into a queue
 * nobody serves.
 */
static void
supervisor_signal(int sig, void *arg)
{
	struct app *app = arg;

	if (sig == SIGHUP)
		reload(app, "supervisor: ");
	else if (sig == SIGTERM || sig == SIGINT)
		stop_listening(app);
}

/*
 * Until the loop's watchers take over, SIGHUP's default action would kill
 * a process that is starting (a reload racing a start, or a worker being
 * restarted).  A handler, not SIG_IGN: the supervisor still receives it
 * with sigwaitinfo, which an ignored signal never reaches.
 */
static void
early_hup(int sig)
{
	(void)sig;
}

static void
drain_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct app *app = w->data;

	(void)revents;
	if (app->sl.live == 0 || ev_now(loop) >= app->drain_deadline) {
		if (app->sl.live > 0)
			LOGW("drain deadline: closing %zu connections",
			    app->sl.live);
		ev_break(loop, EVBREAK_ALL);
	}
}

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct app *app = w->data;

	(void)revents;
	if (w->signum == SIGHUP) {
		reload(app, "");
		return;
	}
	if (app->draining) {
		LOGW("second signal: exiting now");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	app->draining = true;
	stop_listening(app);
	/*
	 * The admin page answers no one while draining, and its clients
	 * must not hold the drain: a half-sent request would until the
	 * deadline.
	 */
	admin_close_all(app->admin_srv);
	LOGI("signal %d: no new connections; draining %zu for up to %g s",
	    w->signum, app->sl.live - admin_live(app->admin_srv),
	    app->cfg.drain_timeout);
	app->drain_deadline = ev_now(loop) + app->cfg.drain_timeout;
	ev_timer_init(&app->drain, drain_check, 0., 0.1);
	app->drain.data = app;
	ev_timer_again(loop, &app->drain);
}

/* ---- privileges ---- */

/* The user and group of [ferry] user/group; errors name their line. */
static int
lookup_user(const struct config *c, uid_t *uid, gid_t *gid, char *err,
    size_t errlen)
{
	struct passwd *pw;
	char why[256];

	errno = 0;
	pw = getpwnam(c->user);
	if (pw == NULL) {
		snprintf(why, sizeof(why), "no user '%s'%s%s", c->user,
		    errno ? ": " : "", errno ? strerror(errno) : "");
		config_error(c, NULL, "user", 0, why, err, errlen);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	if (c->group[0]) {
		struct group *gr;
		errno = 0;
		gr = getgrnam(c->group);
		if (gr == NULL) {
			snprintf(why, sizeof(why), "no group '%s'%s%s",
			    c->group, errno ? ": " : "",
			    errno ? strerror(errno) : "");
			config_error(c, NULL, "group", 0, why, err, errlen);
			return -1;
		}
		*gid = gr->gr_gid;
	}
	return 0;
}

static int
drop_privileges(const struct config *c, char *err, size_t errlen)
{
	uid_t uid;
	gid_t gid;

	if (c->user[0] == '\0')
		return 0;
	if (lookup_user(c, &uid, &gid, err, errlen) < 0)
		return -1;
	/* Started as that user already (systemd User=): nothing to drop. */
	if (geteuid() != 0) {
		if (geteuid() == uid && getegid() == gid)
			return 0;
		snprintf(err, errlen, "not started as root: cannot become %s",
		    c->user);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", c->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(err, errlen, "privileges could be regained");
		return -1;
	}
	LOGI("running as user %s (uid %ld, gid %ld)", c->user, (long)uid,
	    (long)gid);
	return 0;
}

/* ---- listeners ---- */

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

static struct forward_listener *
forward_from(struct app *app, struct listener *ls, char *err, size_t errlen)
{
	const struct config_listener *l = ls->cfg;
	struct forward_backend backends[CONFIG_MAX_BACKENDS];
	struct forward_opts fo = { 0 };
	struct forward_listener *fl;
	char why[256];

	if (resolve_backends(&app->cfg, l, backends, err, errlen) < 0)
		return NULL;
	fo.backends = backends;
	fo.nbackends = l->nbackend;
	fo.connect_timeout = l->connect_timeout;
	fo.idle_timeout = l->idle_timeout;
	fo.fin_timeout = l->fin_timeout;
	fo.high_water = l->high_water;
	fo.proxy = l->proxy_protocol == CONFIG_PROXY_V1 ? FORWARD_PROXY_V1 :
	    l->proxy_protocol == CONFIG_PROXY_V2 ? FORWARD_PROXY_V2 :
	    FORWARD_PROXY_OFF;
	fo.backend_tls = ls->backend_tls;
	fo.backend_sni = l->backend_sni;
	fl = forward_listener_new(l->name, &app->sl, &fo, why, sizeof(why));
	if (fl == NULL)
		config_error(&app->cfg, l, "backend", 0, why, err, errlen);
	return fl;
}

static int
bind_listener(struct app *app, struct listener *ls, char *err, size_t errlen)
{
	const struct config_listener *l = ls->cfg;
	struct stream_opts so;

	stream_opts_default(&so);
	so.handshake_timeout = l->handshake_timeout;
	ls->metrics_id = metrics_listener(l->name,
	    l->mode == CONFIG_RELAY ? "relay" : "forward");
	if (l->mode == CONFIG_RELAY) {
		struct relay_opts ro;
		relay_opts_from(l, &ro);
		if (app->reg == NULL && (app->reg = registry_new(app->loop)) ==
		    NULL) {
			snprintf(err, errlen, "[%s] out of memory", l->name);
			return -1;
		}
		ls->relay = relay_listener_new(l->name, app->reg, &ro);
		if (ls->relay == NULL) {
			snprintf(err, errlen, "[%s] out of memory", l->name);
			return -1;
		}
		relay_listener_set_acl(ls->relay, ls->acl);
		ls->acl = NULL;
		tcpserver_init(&ls->srv, &app->sl, l->name, &so, ls->tls,
		    relay_handle_stream, ls->relay);
	} else {
		ls->fwd = forward_from(app, ls, err, errlen);
		if (ls->fwd == NULL)
			return -1;
		/* A client's side reads at most high_water ahead. */
		so.max_buffer_size = l->high_water;
		tcpserver_init(&ls->srv, &app->sl, l->name, &so, ls->tls,
		    forward_handle_stream, ls->fwd);
	}
	for (size_t i = 0; i < l->nbind; i++) {
		char why[256];
		if (tcpserver_bind(&ls->srv, l->bind[i].host[0] ?
		    l->bind[i].host : NULL, l->bind[i].port, AF_UNSPEC,
		    NETUTIL_DEFAULT_BACKLOG, false, why, sizeof(why)) < 0) {
			/* One `bind` line holds the whole list. */
			config_error(&app->cfg, l, "bind", 0, why, err, errlen);
			return -1;
		}
	}
	return 0;
}

/*
 * The bound addresses (port 0 resolved): operators and tests read these,
 * so they show at log_level = warn too.
 */
static void
log_listening(const char *mode, const char *transport,
    const struct tcpserver *srv)
{
	for (size_t i = 0; i < srv->nacc; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char addr[80];
		if (getsockname(srv->acc[i].fd, (struct sockaddr *)&ss,
		    &len) < 0)
			continue;
		netutil_format_addr((struct sockaddr *)&ss, addr, sizeof(addr));
		LOGN("%s listening on %s (%s) [%s]", mode, addr, transport,
		    srv->name);
	}
}

/*
 * Relay listeners share one registry (one uuid namespace): only worker 0
 * serves them.  Forward listeners are served by every worker (the kernel
 * spreads the accepts).
 */
static bool
serves(const struct app *app, const struct listener *ls)
{
	return ls->cfg->mode != CONFIG_RELAY || app->worker == 0;
}

static int
setup(struct app *app, char *err, size_t errlen)
{
	struct tls_set tls;

	if (build_tls(&app->cfg, &tls, err, errlen) < 0)
		return -1;
	/* From here on each listener owns its contexts (teardown frees). */
	for (size_t i = 0; i < app->cfg.nlisteners; i++) {
		struct listener *ls = &app->ls[app->nls++];
		ls->cfg = &app->cfg.listeners[i];
		ls->tls = tls.server[i];
		ls->backend_tls = tls.backend[i];
		ls->acl = tls.acl[i];
		if (ls->acl != NULL)
			LOGI("[%s] access list %s: %zu rules", ls->cfg->name,
			    acl_path(ls->acl), acl_rules(ls->acl));
	}
	for (size_t i = 0; i < app->nls; i++)
		if (bind_listener(app, &app->ls[i], err, errlen) < 0)
			return -1;
	if (app->cfg.admin_set) {
		char why[256];
		app->admin_srv = admin_new(app->loop, app->cfg.admin_timeout);
		if (app->admin_srv == NULL) {
			snprintf(err, errlen, "admin: out of memory");
			return -1;
		}
		tcpserver_init(&app->admin, &app->sl, "admin", NULL, NULL,
		    admin_handle_stream, app->admin_srv);
		app->admin_on = true;
		if (tcpserver_bind(&app->admin, app->cfg.admin.host[0] ?
		    app->cfg.admin.host : NULL, app->cfg.admin.port, AF_UNSPEC,
		    NETUTIL_DEFAULT_BACKLOG, false, why, sizeof(why)) < 0) {
			config_error(&app->cfg, NULL, "admin", 0, why, err,
			    errlen);
			return -1;
		}
	}
	return 0;
}

/* The relay listeners' families, rendered together (one header each). */
static void
relay_metrics(struct buffer *out, void *arg)
{
	struct app *app = arg;
	struct relay_listener *rls[CONFIG_MAX_LISTENERS];
	size_t n = 0;

	for (size_t i = 0; i < app->nls; i++)
		if (app->ls[i].relay != NULL)
			rls[n++] = app->ls[i].relay;
	relay_render_metrics(app->reg, rls, n, out);
}

static int
start(struct app *app)
{
	for (size_t i = 0; i < app->nls; i++) {
		struct listener *ls = &app->ls[i];
		if (!serves(app, ls)) {
			tcpserver_stop(&ls->srv);
			continue;
		}
		tcpserver_set_stats(&ls->srv, metrics_conn(ls->metrics_id));
		if (tcpserver_set_limits(&ls->srv, ls->cfg->max_connections,
		    ls->cfg->max_per_source) < 0) {
			LOGE("[%s] no memory for its connection limits",
			    ls->cfg->name);
			return -1;
		}
		tcpserver_add_sockets(&ls->srv, ls->srv.pending,
		    ls->srv.npending);
		ls->srv.npending = 0;
		log_listening(ls->cfg->mode == CONFIG_RELAY ? "relay" :
		    "forward", ls->tls ? "tls" : "tcp", &ls->srv);
	}
	if (app->admin_on) {
		if (app->worker == 0) {
			if (tcpserver_set_limits(&app->admin,
			    app->cfg.admin_max_connections, 0) < 0) {
				LOGE("admin: no memory for its connection "
				    "limit");
				return -1;
			}
			tcpserver_add_sockets(&app->admin, app->admin.pending,
			    app->admin.npending);
			app->admin.npending = 0;
			log_listening("admin", "http", &app->admin);
		} else {
			tcpserver_stop(&app->admin);
			app->admin_on = false;
		}
	}
	metrics_add_source(relay_metrics, app);
	LOGN("ready: worker %d (pid %ld)", app->worker, (long)getpid());
	return 0;
}

/*
 * Frees everything the loop ran, connections left open by a drain that ran
 * out of time included, so that an exit leaves nothing allocated (a leak
 * checker then sees a lost connection as lost, not as still reachable
 * through the loop).
 */
static void
teardown(struct app *app)
{
	for (size_t i = 0; i < app->nls; i++) {
		struct listener *ls = &app->ls[i];
		tcpserver_destroy(&ls->srv);
		if (ls->fwd != NULL)
			forward_listener_close_all(ls->fwd);
		relay_listener_close_all(ls->relay);
	}
	if (app->admin_on)
		tcpserver_destroy(&app->admin);
	admin_close_all(app->admin_srv);
	/*
	 * Connections closed above finish here (their close callbacks), before
	 * what they use goes; then no stream work is left to run.
	 */
	stream_loop_destroy(&app->sl);
	if (app->sl.live > 0)
		LOGW("exit: %zu streams still open", app->sl.live);
	admin_free(app->admin_srv);
	app->admin_srv = NULL;
	/* Its entries point to the relay listeners: it goes first. */
	registry_free(app->reg);
	for (size_t i = 0; i < app->nls; i++) {
		struct listener *ls = &app->ls[i];
		relay_listener_free(ls->relay);
		acl_free(ls->acl);
		forward_listener_free(ls->fwd);
		tls_ctx_unref(ls->tls);
		tls_ctx_unref(ls->backend_tls);
	}
	ev_signal_stop(app->loop, &app->sig_term);
	ev_signal_stop(app->loop, &app->sig_int);
	ev_signal_stop(app->loop, &app->sig_hup);
	ev_timer_stop(app->loop, &app->drain);
	ev_loop_destroy(app->loop);
	app->loop = NULL;
}

/* ---- command line ---- */

enum { OPT_CHECK = 256, OPT_CERTS, OPT_LOG, OPT_RELAY, OPT_RELAY_TLS,
    OPT_CERT, OPT_KEY };

struct cli {
	const char *config;
	const char *certs;
	const char *log_level;
	bool check;
	/* development shortcuts: one relay listener each (port 0 allowed) */
	const char *relay, *relay_tls, *cert, *key;
};

static int
parse_cli(int argc, char **argv, struct cli *cli)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, OPT_CHECK },
		{ "certs", required_argument, NULL, OPT_CERTS },
		{ "log-level", required_argument, NULL, OPT_LOG },
		{ "relay", required_argument, NULL, OPT_RELAY },
		{ "relay-tls", required_argument, NULL, OPT_RELAY_TLS },
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(cli, 0, sizeof(*cli));
	cli->certs = "certs";
	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cli->config = optarg; break;
		case OPT_CHECK: cli->check = true; break;
		case OPT_CERTS: cli->certs = optarg; break;
		case OPT_LOG: cli->log_level = optarg; break;
		case OPT_RELAY: cli->relay = optarg; break;
		case OPT_RELAY_TLS: cli->relay_tls = optarg; break;
		case OPT_CERT: cli->cert = optarg; break;
		case OPT_KEY: cli->key = optarg; break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("ferry %s\n", FERRY_VERSION); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ferry: unexpected argument '%s'\n",
		    argv[optind]);
		return -1;
	}
	if (cli->config != NULL && (cli->relay || cli->relay_tls)) {
		fprintf(stderr, "ferry: -c and --relay/--relay-tls do not "
		    "mix\n");
		return -1;
	}
	return 0;
}

/* --relay / --relay-tls: listeners given on the command line. */
static int
cli_listeners(struct config *c, const struct cli *cli, char *err,
    size_t errlen)
{
	char text[4096];
	int n = 0;

	if (cli->relay != NULL)
		n += snprintf(text + n, sizeof(text) - (size_t)n,
		    "[relay]\nmode = relay\nbind = %s\n", cli->relay);
	if (cli->relay_tls != NULL)
		n += snprintf(text + n, sizeof(text) - (size_t)n,
		    "[relay-tls]\nmode = relay\nbind = %s\ncert = %s\n"
		    "key = %s\n", cli->relay_tls,
		    cli->cert ? cli->cert : "certs/server.pem",
		    cli->key ? cli->key : "certs/server.key");
	if (n < 0 || (size_t)n >= sizeof(text)) {
		snprintf(err, errlen, "command line listeners too long");
		return -1;
	}
	config_init(c);
	return config_load_string(c, text, "(command line)", err, errlen);
}

/*
 * --check: the addresses to bind (and the admin page's) must resolve.
 * Resolving, not binding: a check must not take the ports of a running
 * ferry, nor need its privileges.
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

/* --check: everything but binding, so a bad file never reaches a reload. */
static int
check(struct app *app)
{
	struct tls_set tls;
	struct forward_backend backends[CONFIG_MAX_BACKENDS];
	char err[1024];

	if (build_tls(&app->cfg, &tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry: %s\n", err);
		return 2;
	}
	tls_set_free(&tls, app->cfg.nlisteners);
	for (size_t i = 0; i < app->cfg.nlisteners; i++) {
		const struct config_listener *l = &app->cfg.listeners[i];
		if (l->mode == CONFIG_FORWARD && resolve_backends(&app->cfg, l,
		    backends, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry: %s\n", err);
			return 2;
		}
	}
	if (check_addresses(&app->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry: %s\n", err);
		return 2;
	}
	if (app->cfg.user[0] != '\0') {
		uid_t uid;
		gid_t gid;
		if (lookup_user(&app->cfg, &uid, &gid, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry: %s\n", err);
			return 2;
		}
	}
	printf("%s: OK (%zu listeners)\n", app->cfg.label,
	    app->cfg.nlisteners);
	return 0;
}

static int
load_config(struct config *c, const struct cli *cli)
{
	char err[1024];
	int rc;

	config_init(c);
	if (cli->relay || cli->relay_tls)
		rc = cli_listeners(c, cli, err, sizeof(err));
	else if (cli->config != NULL)
		rc = config_load(c, cli->config, err, sizeof(err));
	else
		rc = config_default(c, cli->certs, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "ferry: %s\n", err);
		return -1;
	}
	if (cli->log_level != NULL) {
		int l = log_level_parse(cli->log_level);
		if (l < 0) {
			fprintf(stderr, "ferry: bad --log-level '%s'\n",
			    cli->log_level);
			return -1;
		}
		c->log_level = l;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static struct app app;
	struct cli cli;
	char err[1024];
	int workers;

	if (parse_cli(argc, argv, &cli) < 0 || load_config(&app.cfg, &cli) < 0)
		return 2;
	log_set_level((enum log_level)app.cfg.log_level);
	if (cli.check)
		return check(&app);

	struct sigaction sa = { .sa_handler = early_hup };
	sigemptyset(&sa.sa_mask);
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR ||
	    sigaction(SIGHUP, &sa, NULL) < 0) {
		LOGE("signals: %s", strerror(errno));
		return 1;
	}
	app.loop = ev_default_loop(EVFLAG_AUTO);
	stream_loop_init(&app.sl, app.loop);
	workers = app.cfg.workers <= 0 ? process_cpu_count() :
	    app.cfg.workers;
	if (metrics_init(workers) < 0)
		LOGW("shared metrics unavailable: counting per process");
	if (setup(&app, err, sizeof(err)) < 0) {
		LOGE("%s", err);
		return 1;
	}
	if (drop_privileges(&app.cfg, err, sizeof(err)) < 0) {
		LOGE("privileges: %s", err);
		return 1;
	}
	if (workers > 1) {
		struct process_hooks hooks = { supervisor_signal, &app };
		app.worker = process_fork_hooks(workers, app.cfg.max_restarts,
		    &hooks);
		ev_loop_fork(app.loop);
	}
	metrics_set_worker(app.worker);
	if (start(&app) < 0)
		return 1;

	ev_signal_init(&app.sig_term, on_signal, SIGTERM);
	ev_signal_init(&app.sig_int, on_signal, SIGINT);
	ev_signal_init(&app.sig_hup, on_signal, SIGHUP);
	app.sig_term.data = app.sig_int.data = app.sig_hup.data = &app;
	ev_signal_start(app.loop, &app.sig_term);
	ev_signal_start(app.loop, &app.sig_int);
	ev_signal_start(app.loop, &app.sig_hup);

	ev_run(app.loop, 0);

	teardown(&app);
	LOGN("stopped");
	return 0;
}
