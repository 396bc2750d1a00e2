/*
 * ferry: entry point.  The command line -> the configuration -> its
 * listeners, bound (or inherited: systemd's socket activation, an upgrade)
 * -> privileges dropped -> workers forked -> the loop, until a signal:
 * SIGHUP reloads the file, SIGUSR2 upgrades (a new ferry on the same
 * sockets), SIGTERM and SIGINT drain, with a deadline.  systemd hears of
 * each step (notify.h).  What the listeners are is listeners.c's; this is
 * the process's life.
 *
 * The only global state is here: the running app, reached from signal
 * watchers (and the supervisor's hooks) through their data pointers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "certwatch.h"
#include "cli.h"
#include "config.h"
#include "listeners.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "privs.h"
#include "process.h"
#include "sockpool.h"
#include "stream.h"
#include "upgrade.h"

/* ---- signals ---- */

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
drain(struct app *app, const char *why)
{
	app->draining = true;
	if (!app->supervised)
		notify_send("STOPPING=1");
	listeners_stop(app->ls);
	LOGI("%s: no new connections; draining %zu for up to %g s", why,
	    listeners_connections(app->ls), app->cfg->drain_timeout);
	app->drain_deadline = ev_now(app->loop) + app->cfg->drain_timeout;
	ev_timer_init(&app->drain, drain_check, 0., 0.1);
	app->drain.data = app;
	ev_timer_again(app->loop, &app->drain);
}

static void
on_upgrade_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct app *app = w->data;
	char why[256];
	int rc = upgrade_result(w->fd, app->upgrade_pid, why, sizeof(why));

	(void)revents;
	if (rc < 0)
		return;
	ev_io_stop(loop, w);
	close(w->fd);
	app->upgrade_pid = 0;
	if (rc == 0) {
		LOGE("upgrade: the new ferry %s; carrying on", why);
		return;
	}
	drain(app, "upgrade: the new ferry is ready");
}

/* A new ferry on our sockets; we drain once it is ready (on_upgrade_io). */
static void
upgrade(struct app *app, const char *exe)
{
	int fd;

	if (app->upgrade_pid != 0) {
		LOGW("upgrade: one is under way (pid %ld)",
		    (long)app->upgrade_pid);
		return;
	}
	if (app_upgrade_start(app, exe, &fd) < 0)
		return;
	ev_io_init(&app->upgrade_io, on_upgrade_io, fd, EV_READ);
	app->upgrade_io.data = app;
	ev_io_start(app->loop, &app->upgrade_io);
}

static void
on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	app_tick(w->data);
}

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct app *app = w->data;
	char why[32];

	(void)revents;
	if (w->signum == SIGHUP && !app->draining) {
		if (app_reload(app))
			upgrade(app, "/proc/self/exe");
		return;
	}
	if (w->signum == SIGUSR2 && !app->draining && !app->supervised) {
		upgrade(app, app->exe);
		return;
	}
	if (w->signum == SIGUSR1) {
		listeners_reopen_logs(app->ls);
		return;
	}
	if (w->signum == SIGHUP || w->signum == SIGUSR2)
		return;
	if (app->draining) {
		LOGW("second signal: exiting now");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	snprintf(why, sizeof(why), "signal %d", w->signum);
	drain(app, why);
}

static void
watch(struct app *app, ev_signal *w, int sig)
{
	ev_signal_init(w, on_signal, sig);
	w->data = app;
	ev_signal_start(app->loop, w);
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
	ev_signal_stop(app->loop, &app->sig_usr1);
	ev_signal_stop(app->loop, &app->sig_usr2);
	ev_timer_stop(app->loop, &app->drain);
	ev_timer_stop(app->loop, &app->tick);
	certwatch_free(app->watch);
	if (app->upgrade_pid != 0) {
		ev_io_stop(app->loop, &app->upgrade_io);
		close(app->upgrade_io.fd);
	}
	ev_loop_destroy(app->loop);
	app->loop = NULL;
	if (!app->supervised)
		upgrade_remove_pidfile(app->cfg->pid_file);
	free(app->cfg);
}

/* ---- start ---- */

/* Every listener bound, or taken from the sockets we were handed. */
static int
bind_listeners(struct app *app)
{
	struct sockpool pool;
	char err[1024];

	sockpool_init(&pool);
	if (sockpool_from_env(&pool, err, sizeof(err)) < 0) {
		LOGE("%s", err);
		return -1;
	}
	app->ls = listeners_new(app->cfg, &app->sl, &pool, err, sizeof(err));
	sockpool_close(&pool, false);
	if (app->ls == NULL) {
		LOGE("%s", err);
		return -1;
	}
	return 0;
}

static int
start(struct app *app)
{
	struct sigaction sa = { .sa_handler = early_hup };
	char err[1024];
	int workers;

	sigemptyset(&sa.sa_mask);
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR ||
	    sigaction(SIGHUP, &sa, NULL) < 0 ||
	    sigaction(SIGUSR1, &sa, NULL) < 0 ||
	    sigaction(SIGUSR2, &sa, NULL) < 0) {
		LOGE("signals: %s", strerror(errno));
		return -1;
	}
	if (readlink("/proc/self/exe", app->exe, sizeof(app->exe) - 1) < 0)
		snprintf(app->exe, sizeof(app->exe), "%s", app->argv[0]);
	app->report_fd = upgrade_inherited_fd();
	app->loop = ev_default_loop(EVFLAG_AUTO);
	stream_loop_init(&app->sl, app->loop);
	workers = app->cfg->workers <= 0 ? process_cpu_count() :
	    app->cfg->workers;
	if (metrics_init(workers) < 0)
		LOGW("shared metrics unavailable: counting per process");
	if (listeners_idle_workers(app->cfg, workers) > 0)
		LOGW("workers = %d: every listener is a relay listener, which "
		    "worker 0 alone serves (one registry): %zu workers idle; "
		    "set workers = 1", workers,
		    listeners_idle_workers(app->cfg, workers));
	clock_gettime(CLOCK_REALTIME, &app->loaded);
	if (bind_listeners(app) < 0)
		return -1;
	if (privs_drop(app->cfg, err, sizeof(err)) < 0) {
		LOGE("privileges: %s", err);
		return -1;
	}
	if (workers > 1) {
		struct process_hooks hooks;
		app_supervisor_hooks(app, &hooks);
		app->supervised = true;
		app->worker = -1;	/* in the supervisor, which stays inside */
		app->worker = process_fork_hooks(workers,
		    app->cfg->max_restarts, &hooks);
		ev_loop_fork(app->loop);
		if (app->report_fd >= 0)
			close(app->report_fd);	/* the supervisor's to use */
		app->report_fd = -1;
	}
	metrics_set_worker(app->worker);
	app_watch_certs(app);
	return listeners_start(app->ls, app->worker);
}

int
main(int argc, char **argv)
{
	static struct app app;
	char err[1024];

	app.argv = argv;
	app.cfg = malloc(sizeof(*app.cfg));
	if (app.cfg == NULL || cli_parse(argc, argv, &app.cli) < 0 ||
	    cli_load_config(app.cfg, &app.cli, NULL, 0) < 0)
		return 2;
	log_set_level((enum log_level)app.cfg->log_level);
	if (app.cli.check)
		return cli_check(app.cfg);
	if (app.cli.upgrade)
		return cli_upgrade(app.cfg);
	/* Before anything is logged, and before the workers share it. */
	if (log_open((enum log_dest)app.cfg->log_dest,
	    (enum log_format)app.cfg->log_format, NULL) < 0) {
		char why[256];

		snprintf(why, sizeof(why), "cannot reach syslog at /dev/log: "
		    "%s", strerror(errno));
		config_error(app.cfg, NULL, "log", 0, why, err, sizeof(err));
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	if (start(&app) < 0)
		return 1;
	/* Before saying ready: a signal sent on that word is handled. */
	watch(&app, &app.sig_term, SIGTERM);
	watch(&app, &app.sig_int, SIGINT);
	watch(&app, &app.sig_hup, SIGHUP);
	watch(&app, &app.sig_usr1, SIGUSR1);
	watch(&app, &app.sig_usr2, SIGUSR2);
	if (!app.supervised) {
		ev_timer_init(&app.tick, on_tick, app_tick_interval(),
		    app_tick_interval());
		app.tick.data = &app;
		ev_timer_start(app.loop, &app.tick);
	}
	LOGN("ready: worker %d (pid %ld)", app.worker, (long)getpid());
	if (app.supervised)
		process_ready();
	else
		app_ready(&app);

	ev_run(app.loop, 0);

	teardown(&app);
	LOGN("stopped");
	log_close();
	return 0;
}
