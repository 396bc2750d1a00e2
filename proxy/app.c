/* app: see app.h. */
#define _GNU_SOURCE
#include "app.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "certwatch.h"
#include "cli.h"
#include "listeners.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "sockpool.h"
#include "upgrade.h"

/* What a failed reload leaves as it was. */
#define KEEPING "keeping the current certificates and access lists, and " \
	"the listeners"

/* STATUS= for systemd, when nothing else sets the pace. */
#define STATUS_INTERVAL 10.0

/* ---- systemd, and whoever started us ---- */

static void
status(struct app *app)
{
	if (app->supervised)
		notify_send("STATUS=%s: %llu connections (every worker)",
		    app->draining ? "draining" : "serving",
		    (unsigned long long)metrics_open_connections());
	else
		notify_send("STATUS=%s: %zu connections, %zu devices",
		    app->draining ? "draining" : "serving",
		    listeners_connections(app->ls), listeners_devices(app->ls));
}

/* Every listener bound and every worker ready (main process only). */
void
app_ready(struct app *app)
{
	char err[1024];

	notify_send("MAINPID=%ld\nREADY=1", (long)getpid());
	status(app);
	upgrade_ready(app->report_fd);
	app->report_fd = -1;
	if (app->cfg->pid_file[0] != '\0' &&
	    upgrade_write_pidfile(app->cfg->pid_file, err, sizeof(err)) < 0)
		LOGW("%s", err);
}

void
app_tick(struct app *app)
{
	if (app->ls != NULL && !(app->supervised && app->worker < 0))
		listeners_tidy(app->ls);
	if (notify_watchdog_interval() > 0)
		notify_send("WATCHDOG=1");
	status(app);
}

double
app_tick_interval(void)
{
	double w = notify_watchdog_interval();

	return w > 0 && w < STATUS_INTERVAL ? w : STATUS_INTERVAL;
}

/* ---- reload and upgrade ---- */

/* The file anew; NULL (logged) when it is bad. */
static struct config *
reread(struct app *app, const char *who)
{
	struct config *next = malloc(sizeof(*next));
	char err[1024];

	if (next == NULL) {
		LOGE("%sreload: out of memory; nothing changed", who);
		return NULL;
	}
	if (cli_load_config(next, &app->cli, err, sizeof(err)) < 0) {
		LOGE("%sreload: %s; " KEEPING, who, err);
		free(next);
		return NULL;
	}
	return next;
}

static void certs_changed(void *arg);

/* cert_watch: where the certificates of the configuration are. */
void
app_watch_certs(struct app *app)
{
	certwatch_free(app->watch);
	app->watch = NULL;
	if (app->cfg->cert_watch && (app->watch = certwatch_new(app->loop,
	    app->cfg, &app->loaded, certs_changed, app)) == NULL)
		LOGW("cert_watch: out of memory: not watching");
}

/*
 * In this process: the listeners of `next` (the file as it is now, or
 * the configuration as it was, for its certificates).
 */
static void
reload(struct app *app, struct config *next, const char *who)
{
	char err[1024];
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	if (listeners_reload(app->ls, next, who, err, sizeof(err)) < 0) {
		LOGE("%sreload: %s; " KEEPING, who, err);
		if (next != app->cfg)
			free(next);
		return;
	}
	app->loaded = now;
	if (next == app->cfg)
		return;
	log_set_level((enum log_level)next->log_level);
	certwatch_free(app->watch);	/* it watches the old paths */
	app->watch = NULL;
	free(app->cfg);
	app->cfg = next;
	if (!app->supervised || app->worker >= 0)
		app_watch_certs(app);
}

static void
certs_changed(void *arg)
{
	struct app *app = arg;

	LOGI("cert_watch: a certificate, key or access list changed");
	reload(app, app->cfg, "cert_watch: ");
}

/* A new ferry on our sockets: `exe` (ours, or the file at our path). */
int
app_upgrade_start(struct app *app, const char *exe, int *ready_fd)
{
	int fds[SOCKPOOL_MAX];
	char names[SOCKPOOL_MAX][CONFIG_NAME_LEN];
	size_t n = listeners_fds(app->ls, fds, names, SOCKPOOL_MAX);
	char err[256];

	if (upgrade_spawn(exe, app->argv, fds, names, n, &app->upgrade_pid,
	    ready_fd, err, sizeof(err)) < 0) {
		LOGE("upgrade: %s", err);
		app->upgrade_pid = 0;
		return -1;
	}
	LOGN("upgrade: started %s (pid %ld) on %zu sockets", exe,
	    (long)app->upgrade_pid, n);
	return 0;
}

/*
 * The first [ferry] key of `next` a running process cannot take in place
 * (its workers, its admin page, its user, where it logs, its [cluster],
 * where its OCSP responses are kept), or NULL.
 * log_level, drain_timeout and cert_watch are taken in place.
 */
static const char *
process_key(const struct config *now, const struct config *next)
{
	if (now->workers != next->workers)
		return "workers";
	if (now->max_restarts != next->max_restarts)
		return "max_restarts";
	if (now->admin_set != next->admin_set ||
	    strcmp(now->admin.host, next->admin.host) != 0 ||
	    now->admin.port != next->admin.port)
		return "admin";
	if (now->admin_timeout != next->admin_timeout)
		return "admin_timeout";
	if (now->admin_max_connections != next->admin_max_connections)
		return "admin_max_connections";
	if (strcmp(now->admin_token, next->admin_token) != 0)
		return "admin_token";
	if (strcmp(now->user, next->user) != 0)
		return "user";
	if (strcmp(now->group, next->group) != 0)
		return "group";
	if (now->log_dest != next->log_dest)
		return "log";
	if (now->log_format != next->log_format)
		return "log_format";
	if (strcmp(now->pid_file, next->pid_file) != 0)
		return "pid_file";
	/* The OCSP sources of the listeners that stay keep theirs. */
	if (strcmp(now->ocsp_dir, next->ocsp_dir) != 0)
		return "ocsp_dir";
	if (now->ocsp_timeout != next->ocsp_timeout)
		return "ocsp_timeout";
	/* Where its lines are aside: a node joins as it starts. */
	if (now->cluster.set != next->cluster.set ||
	    memcmp(now->cluster.nats, next->cluster.nats,
	    sizeof(now->cluster) - offsetof(struct config_cluster, nats)) != 0)
		return "cluster";
	return NULL;
}

/* ---- the supervisor (workers > 1) ---- */

static int
supervisor_signal(int sig, void *arg)
{
	struct app *app = arg;
	struct config *next;
	const char *key;
	char why[256];
	int fd, ok;

	if (sig == SIGTERM || sig == SIGINT) {
		notify_send("STOPPING=1");
		listeners_stop(app->ls);
		/* The supervisor exits from process.c, without a teardown. */
		upgrade_remove_pidfile(app->cfg->pid_file);
		return sig;
	}
	if (sig == SIGUSR1)
		listeners_reopen_logs(app->ls);	/* for the workers to come */
	if (sig != SIGHUP && sig != SIGUSR2)
		return sig;
	if (sig == SIGHUP) {
		notify_send("RELOADING=1");
		if ((next = reread(app, "supervisor: ")) == NULL) {
			notify_send("READY=1");
			return 0;
		}
		/*
		 * Listeners the workers do not have: a new generation of
		 * workers, from a new process on the same sockets.
		 */
		key = process_key(app->cfg, next);
		if (key == NULL && listeners_same_set(app->ls, next)) {
			reload(app, next, "supervisor: ");
			notify_send("READY=1");
			return SIGHUP;
		}
		free(next);
		LOGN("supervisor: reload: %s%s changed: starting new workers "
		    "on the same sockets", key ? "[ferry] " : "the listeners",
		    key ? key : "");
	}
	if (app_upgrade_start(app, sig == SIGHUP ? "/proc/self/exe" : app->exe,
	    &fd) < 0)
		return 0;
	ok = upgrade_wait(fd, app->upgrade_pid, why, sizeof(why));
	close(fd);
	app->upgrade_pid = 0;
	if (!ok) {
		LOGE("upgrade: the new ferry %s; carrying on", why);
		notify_send("READY=1\nMAINPID=%ld", (long)getpid());
		return 0;
	}
	LOGN("upgrade: the new ferry is ready; draining");
	listeners_stop(app->ls);
	return SIGTERM;
}

static void
supervisor_ready(void *arg)
{
	app_ready(arg);
}

static void
supervisor_tick(void *arg)
{
	app_tick(arg);
}


bool
app_reload(struct app *app)
{
	struct config *next;
	const char *key;

	if (!app->supervised)
		notify_send("RELOADING=1");
	if ((next = reread(app, "")) == NULL) {
		if (!app->supervised)
			notify_send("READY=1");
		return false;
	}
	if (!app->supervised && (key = process_key(app->cfg, next)) != NULL) {
		LOGN("reload: [ferry] %s changed: starting a new ferry on "
		    "the same sockets", key);
		free(next);
		return true;
	}
	reload(app, next, "");
	if (!app->supervised)
		notify_send("READY=1");
	return false;
}

void
app_supervisor_hooks(struct app *app, struct process_hooks *h)
{
	h->on_signal = supervisor_signal;
	h->on_ready = supervisor_ready;
	h->on_tick = supervisor_tick;
	h->tick = app_tick_interval();
	h->arg = app;
}
