/*
 * app: the running process, and what changes it while it runs: reloads
 * (SIGHUP, cert_watch), upgrades (a new ferry on the same sockets,
 * upgrade.h), and what systemd and the process that started us are told
 * (notify.h: READY, RELOADING, STATUS, WATCHDOG).  main.c owns the one
 * struct app (its only global state) and its loop; the supervisor of
 * workers reaches it through process.h's hooks.
 */
#ifndef FERRY_APP_H
#define FERRY_APP_H

#include <stdbool.h>
#include <limits.h>
#include <sys/types.h>
#include <time.h>

#include "cli.h"
#include "config.h"
#include "process.h"
#include "stream.h"

struct app {
	struct cli cli;
	char **argv;
	char exe[PATH_MAX];		/* this binary's path at start */
	struct config *cfg;
	struct ev_loop *loop;
	struct stream_loop sl;
	struct listeners *ls;
	struct certwatch *watch;	/* cert_watch = on, serving processes */
	struct timespec loaded;		/* when the certificates were read */
	ev_signal sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
	ev_timer drain, tick;
	ev_io upgrade_io;		/* a new ferry's word (upgrade.h) */
	pid_t upgrade_pid;		/* 0: no upgrade under way */
	int report_fd;			/* to the ferry that started us, or -1 */
	ev_tstamp drain_deadline;
	bool draining;
	bool supervised;		/* workers: the supervisor is the main
					 * process, this one is worker `worker` */
	int worker;			/* -1 in the supervisor */
};

/*
 * Every listener bound and every worker ready (main process only): READY=1
 * to systemd, the word to the ferry that started us, the pid file.
 */
void app_ready(struct app *app);

/* STATUS= (and WATCHDOG=1 when systemd watches us), every interval. */
void app_tick(struct app *app);
double app_tick_interval(void);

/*
 * SIGHUP in a serving process: the file anew, all or nothing.  True when
 * a [ferry] key changed that only a new process can take (workers,
 * admin, user, log...): the caller then starts one on the same sockets,
 * as an upgrade of the same binary.
 */
bool app_reload(struct app *app);

/* cert_watch = on: (re)starts watching the configuration's files. */
void app_watch_certs(struct app *app);

/*
 * Starts `exe` on our listening sockets (upgrade.h): 0 with the pipe its
 * readiness comes on, or -1 (logged).
 */
int app_upgrade_start(struct app *app, const char *exe, int *ready_fd);

/* The supervisor's hooks: reload, upgrade, readiness, ticks. */
void app_supervisor_hooks(struct app *app, struct process_hooks *h);

#endif
