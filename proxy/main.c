/*
 * ferry: entry point.  The command line -> the configuration -> its
 * listeners, bound -> privileges dropped -> workers forked -> the loop,
 * until a signal: SIGHUP reloads certificates and access lists, SIGTERM
 * and SIGINT drain, with a deadline.  What the listeners are is
 * listeners.c's; this is the process's life.
 *
 * The only global state is here: the running app, reached from signal
 * watchers (and the supervisor's hook) through their data pointers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "listeners.h"
#include "log.h"
#include "metrics.h"
#include "process.h"
#include "stream.h"

struct app {
	struct config cfg;
	struct ev_loop *loop;
	struct stream_loop sl;
	struct listeners *ls;
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

/* ---- signals ---- */

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
		listeners_reload(app->ls, "supervisor: ");
	else if (sig == SIGTERM || sig == SIGINT)
		listeners_stop(app->ls);
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
		listeners_reload(app->ls, "");
		return;
	}
	if (app->draining) {
		LOGW("second signal: exiting now");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	app->draining = true;
	listeners_stop(app->ls);
	LOGI("signal %d: no new connections; draining %zu for up to %g s",
	    w->signum, listeners_streams(app->ls), app->cfg.drain_timeout);
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

/*
 * Frees everything the loop ran, connections left open by a drain that ran
 * out of time included, so that an exit leaves nothing allocated (a leak
 * checker then sees a lost connection as lost, not as still reachable
 * through the loop).
 */
static void
teardown(struct app *app)
{
	listeners_close_all(app->ls);
	/*
	 * Connections closed above finish here (their close callbacks), before
	 * what they use goes; then no stream work is left to run.
	 */
	stream_loop_destroy(&app->sl);
	if (app->sl.live > 0)
		LOGW("exit: %zu streams still open", app->sl.live);
	/* The producers closed above are released in the cluster here. */
	listeners_leave(app->ls);
	listeners_free(app->ls);
	app->ls = NULL;
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

/* --check: everything but binding, so a bad file never reaches a reload. */
static int
check(const struct config *cfg)
{
	char err[1024];
	uid_t uid;
	gid_t gid;

	if (listeners_check(cfg, err, sizeof(err)) < 0 ||
	    (cfg->user[0] != '\0' &&
	    lookup_user(cfg, &uid, &gid, err, sizeof(err)) < 0)) {
		fprintf(stderr, "ferry: %s\n", err);
		return 2;
	}
	printf("%s: OK (%zu listeners)\n", cfg->label, cfg->nlisteners);
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
		return check(&app.cfg);
	/* Before anything is logged, and before the workers share it. */
	if (log_open((enum log_dest)app.cfg.log_dest,
	    (enum log_format)app.cfg.log_format, NULL) < 0) {
		char why[256];

		snprintf(why, sizeof(why), "cannot reach syslog at /dev/log: "
		    "%s", strerror(errno));
		config_error(&app.cfg, NULL, "log", 0, why, err, sizeof(err));
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}

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
	app.ls = listeners_new(&app.cfg, &app.sl, err, sizeof(err));
	if (app.ls == NULL) {
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
	if (listeners_start(app.ls, app.worker) < 0)
		return 1;
	/*
	 * The watchers before the "ready" line: whoever waits for it may
	 * signal at once, and a SIGTERM before them killed the process
	 * (status -15, no drain; test_logs.py SyslogLog, 2 runs in 8).
	 */
	ev_signal_init(&app.sig_term, on_signal, SIGTERM);
	ev_signal_init(&app.sig_int, on_signal, SIGINT);
	ev_signal_init(&app.sig_hup, on_signal, SIGHUP);
	app.sig_term.data = app.sig_int.data = app.sig_hup.data = &app;
	ev_signal_start(app.loop, &app.sig_term);
	ev_signal_start(app.loop, &app.sig_int);
	ev_signal_start(app.loop, &app.sig_hup);
	LOGN("ready: worker %d (pid %ld)", app.worker, (long)getpid());

	ev_run(app.loop, 0);

	teardown(&app);
	LOGN("stopped");
	log_close();
	return 0;
}
