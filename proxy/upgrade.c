/* upgrade: see upgrade.h. */
#define _GNU_SOURCE
#include "upgrade.h"

#include "sockpool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_FDS_START 3
#define UPGRADE_ENV "FERRY_UPGRADE_FD"

/*
 * In the forked child: the sockets to fds 3.., the pipe after them,
 * everything else closed, the environment of the protocol, then exec.
 * Only async-signal-safe work but for setenv (the process is single
 * threaded).
 */
static void
child_exec(const char *exe, char *const argv[], const int *fds,
    char (*names)[CONFIG_NAME_LEN], size_t n, int wfd)
{
	int high[SOCKPOOL_MAX + 1];
	char buf[SOCKPOOL_MAX * (CONFIG_NAME_LEN + 1) + 1] = "";
	sigset_t all;

	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	/* Out of the way first: a target fd may hold another socket. */
	for (size_t i = 0; i <= n; i++) {
		high[i] = fcntl(i < n ? fds[i] : wfd, F_DUPFD_CLOEXEC,
		    (int)(LISTEN_FDS_START + n + 1));
		if (high[i] < 0)
			_exit(127);
	}
	for (size_t i = 0; i <= n; i++)
		if (dup2(high[i], LISTEN_FDS_START + (int)i) < 0)
			_exit(127);
	closefrom(LISTEN_FDS_START + (int)n + 1);
	for (size_t i = 0; i < n; i++)
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
		    i ? ":" : "", names[i]);
	char num[32];
	snprintf(num, sizeof(num), "%ld", (long)getpid());
	setenv("LISTEN_PID", num, 1);
	if (getenv("WATCHDOG_USEC") != NULL)
		setenv("WATCHDOG_PID", num, 1);
	snprintf(num, sizeof(num), "%zu", n);
	setenv("LISTEN_FDS", num, 1);
	setenv("LISTEN_FDNAMES", buf, 1);
	snprintf(num, sizeof(num), "%d", LISTEN_FDS_START + (int)n);
	setenv(UPGRADE_ENV, num, 1);
	execv(exe, argv);
	_exit(127);
}

int
upgrade_spawn(const char *exe, char *const argv[], const int *fds,
    char (*names)[CONFIG_NAME_LEN], size_t n, pid_t *pid, int *ready_fd,
    char *err, size_t errlen)
{
	int p[2];

	if (n > SOCKPOOL_MAX) {
		snprintf(err, errlen, "%zu sockets: at most %d", n,
		    SOCKPOOL_MAX);
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	*pid = fork();
	if (*pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (*pid == 0)
		child_exec(exe, argv, fds, names, n, p[1]);
	close(p[1]);
	*ready_fd = p[0];
	return 0;
}

static void
describe(int status, char *why, size_t whylen)
{
	if (WIFSIGNALED(status))
		snprintf(why, whylen, "killed by signal %d",
		    WTERMSIG(status));
	else if (WEXITSTATUS(status) == 127)
		snprintf(why, whylen, "could not be started (exit 127)");
	else
		snprintf(why, whylen, "exited with status %d (see its log)",
		    WEXITSTATUS(status));
}

int
upgrade_result(int ready_fd, pid_t pid, char *why, size_t whylen)
{
	char c;
	ssize_t r = read(ready_fd, &c, 1);
	int status;

	if (r == 1)
		return 1;
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return -1;
	/* Closed without a word: it is gone, or about to be. */
	if (waitpid(pid, &status, 0) == pid)
		describe(status, why, whylen);
	else
		snprintf(why, whylen, "closed its pipe");
	return 0;
}

int
upgrade_wait(int ready_fd, pid_t pid, char *why, size_t whylen)
{
	struct pollfd pfd = { .fd = ready_fd, .events = POLLIN };
	int rc;

	for (;;) {
		rc = poll(&pfd, 1, (int)(UPGRADE_TIMEOUT * 1000));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0) {
			snprintf(why, whylen, "not ready within %g s: stopped",
			    UPGRADE_TIMEOUT);
			kill(pid, SIGTERM);
			return 0;
		}
		rc = upgrade_result(ready_fd, pid, why, whylen);
		if (rc >= 0)
			return rc;
	}
}

int
upgrade_inherited_fd(void)
{
	const char *v = getenv(UPGRADE_ENV);
	int fd = v ? atoi(v) : -1;

	unsetenv(UPGRADE_ENV);
	if (fd < LISTEN_FDS_START || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -1;
	return fd;
}

void
upgrade_ready(int fd)
{
	if (fd < 0)
		return;
	(void)!write(fd, "R", 1);
	close(fd);
}

int
upgrade_write_pidfile(const char *path, char *err, size_t errlen)
{
	char tmp[CONFIG_PATH_LEN + 16];
	FILE *f;

	/* Whole or not at all: --upgrade reads it while it changes. */
	snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 ||
	    fclose(f) != 0 || rename(tmp, path) < 0) {
		snprintf(err, errlen, "pid_file %s: %s", path,
		    strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static pid_t
read_pid(const char *path)
{
	FILE *f = fopen(path, "r");
	long pid = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t)pid;
}

void
upgrade_remove_pidfile(const char *path)
{
	if (path[0] != '\0' && read_pid(path) == getpid())
		unlink(path);
}

int
upgrade_signal(const char *path, pid_t *opid, pid_t *npid, char *err,
    size_t errlen)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	pid_t pid = read_pid(path);

	*opid = pid;
	if (pid <= 0) {
		snprintf(err, errlen, "pid_file %s: %s", path,
		    errno ? strerror(errno) : "no pid in it");
		return -1;
	}
	if (kill(pid, SIGUSR2) < 0) {
		snprintf(err, errlen, "pid %ld (from %s): %s", (long)pid,
		    path, strerror(errno));
		return -1;
	}
	for (int i = 0; i < (int)(UPGRADE_TIMEOUT * 20) + 20; i++) {
		nanosleep(&ts, NULL);
		*npid = read_pid(path);
		if (*npid > 0 && *npid != pid)
			return 0;
		if (kill(pid, 0) < 0 && errno == ESRCH)
			break;
	}
	snprintf(err, errlen, "pid %ld did not hand over (its log says why)",
	    (long)pid);
	return -1;
}
