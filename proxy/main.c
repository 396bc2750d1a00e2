/*
 * ferry: entry point.  config -> SSL contexts -> bind -> drop privileges ->
 * fork workers -> loop -> signals.
 *
 * The only global state is here: the running app, reached from signal
 * watchers through their data pointers.
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

#include "admin.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "process.h"
#include "stream.h"
#include "tcpserver.h"
#include "tls.h"
#include "device.h"
#include "netutil.h"
#include "registry.h"

struct listener {
	const struct config_listener *cfg;
	struct tcpserver srv;
	struct tls_ctx *tls;
	int metrics_id;
	bool serving;		/* this process accepts on it */
	void *proto;		/* relay or forward state */
};

struct app {
	struct config cfg;
	struct ev_loop *loop;
	struct stream_loop sl;
	struct listener ls[CONFIG_MAX_LISTENERS];
	size_t nls;
	struct tcpserver admin;
	bool admin_on;
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer drain;
	ev_tstamp drain_deadline;
	bool draining;
	int worker;
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
	    "      --check         validate the configuration and exit\n"
	    "      --certs DIR     certificates of the embedded default (certs)\n"
	    "      --log-level L   error, warn, info, debug (overrides the file)\n"
	    "  -h, --help          this text\n"
	    "  -V, --version       the version\n"
	    "\n"
	    "Signals: TERM/INT drain and exit, HUP reloads certificates.\n");
}

/* ---- TLS contexts ---- */

static struct tls_ctx *
listener_tls(const struct config_listener *l, char *err, size_t errlen)
{
	struct tls_cert_pair pairs[CONFIG_MAX_CERTS];
	struct tls_server_opts o = { 0 };

	if (l->ncert == 0)
		return NULL;
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
	return tls_ctx_new_server(&o, err, errlen);
}

/* Builds every TLS context; on failure nothing is kept. */
static int
build_tls(struct app *app, struct tls_ctx **out, char *err, size_t errlen)
{
	for (size_t i = 0; i < app->cfg.nlisteners; i++) {
		const struct config_listener *l = &app->cfg.listeners[i];
		char why[384];
		out[i] = NULL;
		if (l->ncert == 0)
			continue;
		out[i] = listener_tls(l, why, sizeof(why));
		if (out[i] == NULL) {
			snprintf(err, errlen, "[%s] %s", l->name, why);
			while (i-- > 0)
				tls_ctx_unref(out[i]);
			return -1;
		}
	}
	return 0;
}

/* ---- signals ---- */

static void
reload(struct app *app)
{
	struct tls_ctx *fresh[CONFIG_MAX_LISTENERS];
	char err[512];

	if (build_tls(app, fresh, err, sizeof(err)) < 0) {
		LOGE("reload: %s; keeping the current certificates", err);
		return;
	}
	for (size_t i = 0; i < app->nls; i++) {
		if (fresh[i] == NULL)
			continue;
		tcpserver_set_tls(&app->ls[i].srv, fresh[i]);
		tls_ctx_unref(app->ls[i].tls);
		app->ls[i].tls = fresh[i];
	}
	LOGI("reload: certificates reloaded for new connections");
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
		reload(app);
		return;
	}
	if (app->draining) {
		LOGW("second signal: exiting now");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	app->draining = true;
	LOGI("signal %d: no new connections; draining %zu for up to %.0f s",
	    w->signum, app->sl.live, app->cfg.drain_timeout);
	for (size_t i = 0; i < app->nls; i++)
		tcpserver_stop(&app->ls[i].srv);
	if (app->admin_on)
		tcpserver_stop(&app->admin);
	app->drain_deadline = ev_now(loop) + app->cfg.drain_timeout;
	ev_timer_init(&app->drain, drain_check, 0., 0.1);
	app->drain.data = app;
	ev_timer_again(loop, &app->drain);
}

/* ---- privileges ---- */

static int
drop_privileges(const struct config *c, char *err, size_t errlen)
{
	struct passwd *pw;
	gid_t gid;

	if (c->user[0] == '\0')
		return 0;
	pw = getpwnam(c->user);
	if (pw == NULL) {
		snprintf(err, errlen, "user '%s' not found", c->user);
		return -1;
	}
	gid = pw->pw_gid;
	if (c->group[0]) {
		struct group *gr = getgrnam(c->group);
		if (gr == NULL) {
			snprintf(err, errlen, "group '%s' not found", c->group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (setgroups(0, NULL) < 0 || setgid(gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", c->user,
		    strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(err, errlen, "privileges could be regained");
		return -1;
	}
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
	o->max_uuid = l->max_uuid;
	o->max_keys_bytes = l->max_keys_bytes;
	o->max_keys = l->max_keys;
	o->header_timeout = l->handshake_timeout;
	o->idle_timeout = l->idle_timeout;
}

static int
bind_listener(struct app *app, struct listener *ls, struct tls_ctx *tls,
    char *err, size_t errlen)
{
	const struct config_listener *l = ls->cfg;
	struct stream_opts so;

	stream_opts_default(&so);
	so.handshake_timeout = l->handshake_timeout;
	ls->tls = tls;
	ls->metrics_id = metrics_listener(l->name,
	    l->mode == CONFIG_RELAY ? "relay" : "forward");
	if (l->mode == CONFIG_RELAY) {
		struct relay_opts ro;
		struct relay_listener *rl;
		relay_opts_from(l, &ro);
		rl = relay_listener_new(l->name, app->loop, &ro);
		if (rl == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		ls->proto = rl;
		tcpserver_init(&ls->srv, &app->sl, l->name, &so, tls,
		    device_handle_stream, rl);
	} else {
		/* FORWARD_SETUP */
		snprintf(err, errlen, "[%s] forward listeners are not "
		    "available in this build yet", l->name);
		return -1;
	}
	for (size_t i = 0; i < l->nbind; i++) {
		char why[256];
		if (tcpserver_bind(&ls->srv, l->bind[i].host[0] ?
		    l->bind[i].host : NULL, l->bind[i].port, AF_UNSPEC,
		    NETUTIL_DEFAULT_BACKLOG, false, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "[%s] bind %s:%d: %s", l->name,
			    l->bind[i].host, l->bind[i].port, why);
			return -1;
		}
	}
	return 0;
}

/* The bound addresses (port 0 resolved): operators and tests read these. */
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
		LOGI("%s listening on %s (%s) [%s]", mode, addr, transport,
		    srv->name);
	}
}

/* Relay listeners need one registry: only worker 0 serves them. */
static bool
serves(const struct app *app, const struct listener *ls)
{
	return ls->cfg->mode != CONFIG_RELAY || app->worker == 0;
}

static int
setup(struct app *app, char *err, size_t errlen)
{
	struct tls_ctx *tls[CONFIG_MAX_LISTENERS];

	if (build_tls(app, tls, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < app->cfg.nlisteners; i++) {
		struct listener *ls = &app->ls[app->nls++];
		ls->cfg = &app->cfg.listeners[i];
		if (bind_listener(app, ls, tls[i], err, errlen) < 0)
			return -1;
		tcpserver_set_stats(&ls->srv, NULL);
	}
	if (app->cfg.admin_set) {
		char why[256];
		tcpserver_init(&app->admin, &app->sl, "admin", NULL, NULL,
		    admin_handle_stream, NULL);
		if (tcpserver_bind(&app->admin, app->cfg.admin.host[0] ?
		    app->cfg.admin.host : NULL, app->cfg.admin.port, AF_UNSPEC,
		    NETUTIL_DEFAULT_BACKLOG, false, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "admin %s:%d: %s",
			    app->cfg.admin.host, app->cfg.admin.port, why);
			return -1;
		}
		app->admin_on = true;
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
		if (app->ls[i].cfg->mode == CONFIG_RELAY &&
		    app->ls[i].proto != NULL)
			rls[n++] = app->ls[i].proto;
	relay_render_metrics(rls, n, out);
}

static void
start(struct app *app)
{
	for (size_t i = 0; i < app->nls; i++) {
		struct listener *ls = &app->ls[i];
		if (!serves(app, ls)) {
			tcpserver_stop(&ls->srv);
			continue;
		}
		tcpserver_set_stats(&ls->srv, metrics_conn(ls->metrics_id));
		tcpserver_add_sockets(&ls->srv, ls->srv.pending,
		    ls->srv.npending);
		ls->srv.npending = 0;
		log_listening(ls->cfg->mode == CONFIG_RELAY ? "relay" :
		    "forward", ls->tls ? "tls" : "tcp", &ls->srv);
	}
	if (app->admin_on) {
		if (app->worker == 0) {
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
	LOGI("ready: worker %d (pid %ld)", app->worker, (long)getpid());
}

static void
teardown(struct app *app)
{
	for (size_t i = 0; i < app->nls; i++) {
		struct listener *ls = &app->ls[i];
		tcpserver_destroy(&ls->srv);
		tls_ctx_unref(ls->tls);
		if (ls->cfg->mode == CONFIG_RELAY)
			relay_listener_free(ls->proto);
	}
	if (app->admin_on)
		tcpserver_destroy(&app->admin);
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
	config_init(c);
	return config_load_string(c, text, "(command line)", err, errlen);
}

int
main(int argc, char **argv)
{
	static struct app app;
	struct cli cli;
	char err[1024];

	if (parse_cli(argc, argv, &cli) < 0)
		return 2;
	if (cli.relay || cli.relay_tls) {
		if (cli_listeners(&app.cfg, &cli, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry: %s\n", err);
			return 2;
		}
	} else if (cli.config != NULL) {
		config_init(&app.cfg);
		if (config_load(&app.cfg, cli.config, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry: %s\n", err);
			return 2;
		}
	} else {
		config_init(&app.cfg);
		if (config_default(&app.cfg, cli.certs, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry: %s\n", err);
			return 2;
		}
	}
	if (cli.log_level != NULL) {
		int l = log_level_parse(cli.log_level);
		if (l < 0) {
			fprintf(stderr, "ferry: bad --log-level '%s'\n",
			    cli.log_level);
			return 2;
		}
		app.cfg.log_level = l;
	}
	log_set_level((enum log_level)app.cfg.log_level);
	if (cli.check) {
		struct tls_ctx *tls[CONFIG_MAX_LISTENERS];
		if (build_tls(&app, tls, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry: %s: %s\n", cli.config ?
			    cli.config : "(default)", err);
			return 2;
		}
		for (size_t i = 0; i < app.cfg.nlisteners; i++)
			tls_ctx_unref(tls[i]);
		printf("%s: OK (%zu listeners)\n", cli.config ? cli.config :
		    "(embedded default)", app.cfg.nlisteners);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	app.loop = ev_default_loop(EVFLAG_AUTO);
	stream_loop_init(&app.sl, app.loop);
	int workers = app.cfg.workers <= 0 ? process_cpu_count() :
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
		app.worker = process_fork(workers, app.cfg.max_restarts);
		ev_loop_fork(app.loop);
		metrics_set_worker(app.worker);
	}
	start(&app);

	ev_signal_init(&app.sig_term, on_signal, SIGTERM);
	ev_signal_init(&app.sig_int, on_signal, SIGINT);
	ev_signal_init(&app.sig_hup, on_signal, SIGHUP);
	app.sig_term.data = app.sig_int.data = app.sig_hup.data = &app;
	ev_signal_start(app.loop, &app.sig_term);
	ev_signal_start(app.loop, &app.sig_int);
	ev_signal_start(app.loop, &app.sig_hup);

	ev_run(app.loop, 0);

	teardown(&app);
	LOGI("stopped");
	return 0;
}
