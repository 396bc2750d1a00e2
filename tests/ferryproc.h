/*
 * ferryproc: the real `ferry` binary under test.
 *
 * ferry_start() writes a configuration into a fresh temporary directory,
 * runs `$FERRY_BIN -c DIR/ferry.conf` with stderr going to DIR/ferry.log,
 * and waits until every serving process has logged "ready".  Listeners
 * should bind port 0: the ports the kernel chose are read back from the
 * "listening on ADDR:PORT (tcp|tls|http) [NAME]" lines, so tests never
 * collide on a port.
 *
 * The child gets PR_SET_PDEATHSIG, so a test that dies takes its server
 * with it; ferry_stop()/ferry_cleanup() signal only the PID started here.
 * Every wait is bounded; a failure prints the tail of the server's log.
 */
#ifndef FERRY_TEST_FERRYPROC_H
#define FERRY_TEST_FERRYPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "metrics_read.h"

#define FERRYPROC_MAX_PORTS 32

struct ferry_proc {
	pid_t pid;			/* the process started (supervisor) */
	char dir[128];			/* temporary directory */
	char conf[192];			/* DIR/ferry.conf */
	char log[192];			/* DIR/ferry.log (stderr) */
	struct {
		char name[64];		/* listener section, or "admin" */
		char transport[8];	/* tcp, tls, http */
		int port;
	} ports[FERRYPROC_MAX_PORTS];
	size_t nports;
	bool exited;
	int status;			/* wait status once exited */
};

/* Path of the binary: $FERRY_BIN, else build/ferry in the source tree. */
const char *ferry_bin(void);

/*
 * Starts ferry on `conf` (the text of an INI file) and waits up to 15 s for
 * `ready` "ready:" lines (one per process that serves: 1 without workers).
 * Extra command line arguments may follow in `argv` (NULL-terminated, or
 * NULL).  Fails the test if the server does not come up.
 */
void ferry_start_args(struct ferry_proc *fp, const char *conf, int ready,
    const char *const *argv);

/* How to start it, for ferry_start_opts(); zero fields are the defaults. */
struct ferry_opts {
	int ready;			/* "ready:" lines to wait for (1) */
	const char *const *argv;	/* extra arguments, NULL-terminated */
	/*
	 * The server's soft RLIMIT_NOFILE, set in the child before exec (the
	 * hard limit is kept, as `ulimit -Sn` does); 0 = inherit the test's.
	 */
	long nofile;
};
void ferry_start_opts(struct ferry_proc *fp, const char *conf,
    const struct ferry_opts *o);
static inline void
ferry_start(struct ferry_proc *fp, const char *conf)
{
	ferry_start_args(fp, conf, 1, NULL);
}

/* The port of listener `name` ("admin" for the admin listener); fails if
 * it was not logged. */
int ferry_port(const struct ferry_proc *fp, const char *name);

/* A file in the server's temporary directory (for certificates, etc.). */
void ferry_path(const struct ferry_proc *fp, const char *file, char *out,
    size_t outlen);

/* The whole log so far (malloc'd, NUL-terminated; free it). */
char *ferry_log_read(const struct ferry_proc *fp);
/* Occurrences of `needle` in the log. */
int ferry_log_count(const struct ferry_proc *fp, const char *needle);
/* Waits up to `timeout` s until `needle` occurs at least `n` times. */
bool ferry_log_wait(const struct ferry_proc *fp, const char *needle, int n,
    double timeout);
/* Prints the last lines of the log to stderr (on failures). */
void ferry_log_dump(const struct ferry_proc *fp);
/* ferry_log_wait() for 10 s, else the log dumped and the test failed. */
void ferry_log_expect(const struct ferry_proc *fp, const char *needle,
    int n);

void ferry_signal(struct ferry_proc *fp, int sig);
/* Waits up to `timeout` s for the process to exit; true if it did. */
bool ferry_wait_exit(struct ferry_proc *fp, double timeout);
/*
 * SIGTERM, then waits (10 s) for the exit, then SIGKILL if need be.
 * Returns the wait status.  Fails the test if the log holds a sanitizer
 * report (ASan, LeakSanitizer at exit, UBSan): under SANITIZE=1 every
 * end-to-end test is also a memory check of the server.
 */
int ferry_stop(struct ferry_proc *fp);
/*
 * Kills the process if it still runs and removes the directory.  A
 * sanitizer report in the log aborts the test process (Criterion does not
 * count an assertion made in .fini as a failure, but it does a crash).
 */
void ferry_cleanup(struct ferry_proc *fp);
/* Whether the log holds a sanitizer report. */
bool ferry_sanitizer_report(const struct ferry_proc *fp);

/* PIDs of the supervisor's children (workers); returns how many. */
int ferry_children(const struct ferry_proc *fp, pid_t *out, int max);

/*
 * From /proc: a process's resident memory in KiB, and the CPU time it has
 * used (user + system) in clock ticks (sysconf(_SC_CLK_TCK) a second);
 * -1 when it is gone.  proc_alive() is false for a zombie too.
 */
long proc_rss_kb(pid_t pid);
long proc_cpu_ticks(pid_t pid);
bool proc_alive(pid_t pid);

/*
 * Runs the binary with `argv` (after argv[0]) to completion (15 s at most),
 * collecting stdout and stderr into `out`.  Returns the exit status, or -1
 * if it was killed.  A sanitizer report in `out` fails the test.
 */
int ferry_run(const char *const *argv, char *out, size_t outlen);

/* Fetches http://127.0.0.1:port/path; returns the body (malloc'd) or NULL. */
char *http_get(int port, const char *path, int *status);

/* ferry_metric() and the waits on a series: metrics_read.h. */

#endif
