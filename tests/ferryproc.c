/* ferryproc: see ferryproc.h. */
#define _GNU_SOURCE
#include "ferryproc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

const char *
ferry_bin(void)
{
	const char *b = getenv("FERRY_BIN");

	return b != NULL && *b ? b : FERRY_SRCDIR "/build/ferry";
}

void
ferry_path(const struct ferry_proc *fp, const char *file, char *out,
    size_t outlen)
{
	snprintf(out, outlen, "%s/%s", fp->dir, file);
}

char *
ferry_log_read(const struct ferry_proc *fp)
{
	FILE *f = fopen(fp->log, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f != NULL) {
		do {
			if (cap - len < 4096) {
				cap = cap ? cap * 2 : 65536;
				buf = realloc(buf, cap);
				cr_assert_not_null(buf);
			}
			n = fread(buf + len, 1, cap - len - 1, f);
			len += n;
		} while (n > 0);
		fclose(f);
	}
	if (buf == NULL)
		buf = malloc(1);
	cr_assert_not_null(buf);
	buf[len] = '\0';
	return buf;
}

int
ferry_log_count(const struct ferry_proc *fp, const char *needle)
{
	char *log = ferry_log_read(fp);
	int n = 0;

	for (const char *p = log; (p = strstr(p, needle)) != NULL;
	    p += strlen(needle))
		n++;
	free(log);
	return n;
}

bool
ferry_log_wait(const struct ferry_proc *fp, const char *needle, int n,
    double timeout)
{
	double end = now_s() + timeout;

	for (;;) {
		if (ferry_log_count(fp, needle) >= n)
			return true;
		if (now_s() >= end)
			return false;
		usleep(10 * 1000);
	}
}

void
ferry_log_dump(const struct ferry_proc *fp)
{
	char *log = ferry_log_read(fp);
	size_t len = strlen(log);
	const char *from = len > 6000 ? log + len - 6000 : log;

	fprintf(stderr, "---- %s (tail) ----\n%s---- end ----\n", fp->log,
	    from);
	free(log);
}

void
ferry_log_expect(const struct ferry_proc *fp, const char *needle, int n)
{
	if (!ferry_log_wait(fp, needle, n, 10)) {
		ferry_log_dump(fp);
		cr_assert_fail("log: fewer than %d \"%s\"", n, needle);
	}
}

/* "... listening on 127.0.0.1:4242 (tcp) [name]" -> ports[] */
static void
parse_ports(struct ferry_proc *fp)
{
	char *log = ferry_log_read(fp);
	const char *p = log;

	fp->nports = 0;
	while ((p = strstr(p, " listening on ")) != NULL &&
	    fp->nports < FERRYPROC_MAX_PORTS) {
		const char *eol = strchr(p, '\n');
		const char *sp, *colon, *br;
		char line[512];
		size_t n = eol ? (size_t)(eol - p) : strlen(p);

		if (n >= sizeof(line))
			n = sizeof(line) - 1;
		memcpy(line, p, n);
		line[n] = '\0';
		p += n;
		sp = strstr(line, " (");
		/* The name follows the transport: "[::1]:80" has a " [" too. */
		br = sp != NULL ? strstr(sp, " [") : NULL;
		if (sp == NULL || br == NULL)
			continue;
		colon = sp;
		while (colon > line && *colon != ':')
			colon--;
		int port = atoi(colon + 1);
		const char *tp = sp + 2, *tpe = strchr(tp, ')');
		const char *nm = br + 2, *nme = strchr(nm, ']');
		if (tpe == NULL || nme == NULL || port <= 0)
			continue;
		bool dup = false;
		for (size_t i = 0; i < fp->nports; i++)
			if (fp->ports[i].port == port)
				dup = true;
		if (dup)
			continue;
		snprintf(fp->ports[fp->nports].name,
		    sizeof(fp->ports[0].name), "%.*s", (int)(nme - nm), nm);
		snprintf(fp->ports[fp->nports].transport,
		    sizeof(fp->ports[0].transport), "%.*s", (int)(tpe - tp),
		    tp);
		fp->ports[fp->nports].port = port;
		fp->nports++;
	}
	free(log);
}

static void
reap(struct ferry_proc *fp, bool block)
{
	int status;
	pid_t r;

	if (fp->exited || fp->pid <= 0)
		return;
	do
		r = waitpid(fp->pid, &status, block ? 0 : WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == fp->pid) {
		fp->exited = true;
		fp->status = status;
	}
}

void
ferry_start_args(struct ferry_proc *fp, const char *conf, int ready,
    const char *const *argv)
{
	struct ferry_opts o = { .ready = ready, .argv = argv };

	ferry_start_opts(fp, conf, &o);
}

/* In the child, before exec: only async-signal-safe calls. */
static bool
child_limits(const struct ferry_opts *o)
{
	struct rlimit rl;

	if (o->nofile <= 0)
		return true;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return false;
	rl.rlim_cur = (rlim_t)o->nofile;
	if (rl.rlim_cur > rl.rlim_max)
		rl.rlim_cur = rl.rlim_max;
	return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

void
ferry_start_opts(struct ferry_proc *fp, const char *conf,
    const struct ferry_opts *o)
{
	const char *const *argv = o->argv;
	int ready = o->ready > 0 ? o->ready : 1;
	const char *args[32];
	int na = 0;
	FILE *f;

	memset(fp, 0, sizeof(*fp));
	snprintf(fp->dir, sizeof(fp->dir), "/tmp/ferry-test-XXXXXX");
	cr_assert_not_null(mkdtemp(fp->dir), "mkdtemp: %s", strerror(errno));
	ferry_path(fp, "ferry.conf", fp->conf, sizeof(fp->conf));
	ferry_path(fp, "ferry.log", fp->log, sizeof(fp->log));
	f = fopen(fp->conf, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	fclose(f);

	args[na++] = ferry_bin();
	args[na++] = "-c";
	args[na++] = fp->conf;
	for (int i = 0; argv != NULL && argv[i] != NULL && na < 30; i++)
		args[na++] = argv[i];
	args[na] = NULL;

	signal(SIGPIPE, SIG_IGN);
	fflush(NULL);
	pid_t parent = getpid();
	fp->pid = fork();
	cr_assert_geq(fp->pid, 0, "fork: %s", strerror(errno));
	if (fp->pid == 0) {
		int fd = open(fp->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
		    0644);
		if (fd < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 ||
		    getppid() != parent)
			_exit(127);
		dup2(fd, STDERR_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
		/* The server starts with the default signal dispositions. */
		signal(SIGPIPE, SIG_DFL);
		if (!child_limits(o)) {
			dprintf(STDERR_FILENO, "setrlimit: %s\n",
			    strerror(errno));
			_exit(127);
		}
		execv(args[0], (char *const *)args);
		dprintf(STDERR_FILENO, "exec %s: %s\n", args[0],
		    strerror(errno));
		_exit(127);
	}
	double end = now_s() + 15;
	while (now_s() < end) {
		if (ferry_log_count(fp, "ready: worker") >= ready)
			break;
		reap(fp, false);
		if (fp->exited)
			break;
		usleep(10 * 1000);
	}
	if (ferry_log_count(fp, "ready: worker") < ready) {
		ferry_log_dump(fp);
		cr_assert_fail("ferry did not become ready (%s)",
		    fp->exited ? "it exited" : "timeout");
	}
	parse_ports(fp);
}

int
ferry_port(const struct ferry_proc *fp, const char *name)
{
	for (size_t i = 0; i < fp->nports; i++)
		if (strcmp(fp->ports[i].name, name) == 0)
			return fp->ports[i].port;
	ferry_log_dump(fp);
	cr_assert_fail("no port logged for listener '%s'", name);
	return -1;
}

void
ferry_signal(struct ferry_proc *fp, int sig)
{
	reap(fp, false);
	if (!fp->exited && fp->pid > 0)
		kill(fp->pid, sig);
}

bool
ferry_wait_exit(struct ferry_proc *fp, double timeout)
{
	double end = now_s() + timeout;

	for (;;) {
		reap(fp, false);
		if (fp->exited || fp->pid <= 0)
			return true;
		if (now_s() >= end)
			return false;
		usleep(10 * 1000);
	}
}

/* Where a sanitizer report starts in `text`, or NULL. */
static const char *
sanitizer_report(const char *text)
{
	static const char *const marks[] = { "ERROR: AddressSanitizer",
	    "ERROR: LeakSanitizer", "runtime error:",
	    "SUMMARY: UndefinedBehaviorSanitizer" };
	const char *first = NULL;

	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		const char *p = strstr(text, marks[i]);
		if (p != NULL && (first == NULL || p < first))
			first = p;
	}
	return first;
}

/* Whether the log holds a report; prints it when `show`. */
static bool
log_report(const struct ferry_proc *fp, bool show)
{
	char *log;
	const char *at;

	if (fp->log[0] == '\0' || fp->dir[0] == '\0')
		return false;
	log = ferry_log_read(fp);
	at = sanitizer_report(log);
	if (at != NULL && show)
		fprintf(stderr, "---- sanitizer report in %s ----\n%.20000s"
		    "---- end ----\n", fp->log, at);
	free(log);
	return at != NULL;
}

bool
ferry_sanitizer_report(const struct ferry_proc *fp)
{
	return log_report(fp, false);
}

int
ferry_stop(struct ferry_proc *fp)
{
	ferry_signal(fp, SIGTERM);
	if (!ferry_wait_exit(fp, 10)) {
		ferry_signal(fp, SIGKILL);
		reap(fp, true);
	}
	cr_assert_not(log_report(fp, true), "ferry (pid %ld) logged a "
	    "sanitizer report", (long)fp->pid);
	return fp->status;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void
ferry_cleanup(struct ferry_proc *fp)
{
	bool report;

	if (fp->pid > 0 && !fp->exited) {
		ferry_signal(fp, SIGKILL);
		reap(fp, true);
	}
	report = log_report(fp, true);
	if (fp->dir[0] != '\0' && getenv("FERRY_KEEP_LOGS") == NULL)
		nftw(fp->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	fp->dir[0] = '\0';
	if (report) {
		fprintf(stderr, "ferryproc: ferry (pid %ld) logged a sanitizer "
		    "report; failing the test\n", (long)fp->pid);
		abort();
	}
}

int
ferry_children(const struct ferry_proc *fp, pid_t *out, int max)
{
	char path[64];
	FILE *f;
	int n = 0;
	long pid;

	snprintf(path, sizeof(path), "/proc/%ld/task/%ld/children",
	    (long)fp->pid, (long)fp->pid);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (n < max && fscanf(f, "%ld", &pid) == 1)
		out[n++] = (pid_t)pid;
	fclose(f);
	return n;
}

long
proc_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* /proc/PID/stat: fields after the command, which may hold spaces. */
static bool
proc_stat(pid_t pid, char *state, long *ticks)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL)
		return false;
	/* state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt utime(14) stime(15) */
	if (sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	    state, &ut, &st) != 3)
		return false;
	*ticks = (long)(ut + st);
	return true;
}

long
proc_cpu_ticks(pid_t pid)
{
	char state;
	long ticks;

	return proc_stat(pid, &state, &ticks) ? ticks : -1;
}

bool
proc_alive(pid_t pid)
{
	char state;
	long ticks;

	return proc_stat(pid, &state, &ticks) && state != 'Z' && state != 'X';
}

int
ferry_run(const char *const *argv, char *out, size_t outlen)
{
	const char *args[32];
	int pipefd[2], na = 0, status = 0;
	size_t len = 0;
	pid_t pid;

	args[na++] = ferry_bin();
	for (int i = 0; argv[i] != NULL && na < 31; i++)
		args[na++] = argv[i];
	args[na] = NULL;
	cr_assert_eq(pipe2(pipefd, O_CLOEXEC), 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pipefd[1], STDOUT_FILENO);
		dup2(pipefd[1], STDERR_FILENO);
		execv(args[0], (char *const *)args);
		_exit(127);
	}
	close(pipefd[1]);
	double end = now_s() + 15;
	for (;;) {
		struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
		int left = (int)((end - now_s()) * 1000);
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		char tmp[4096];
		ssize_t n = read(pipefd[0], tmp, sizeof(tmp));
		if (n <= 0)
			break;
		if (out != NULL && len + 1 < outlen) {
			size_t c = (size_t)n < outlen - len - 1 ? (size_t)n :
			    outlen - len - 1;
			memcpy(out + len, tmp, c);
			len += c;
		}
	}
	if (out != NULL && outlen > 0)
		out[len] = '\0';
	close(pipefd[0]);
	/* EOF comes as the child exits, a moment before it can be reaped. */
	pid_t r;
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < end)
		usleep(5 * 1000);
	if (r != pid) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		status = -1;
	}
	if (out != NULL && outlen > 0)
		cr_assert_null(sanitizer_report(out), "ferry %s logged a "
		    "sanitizer report:\n%s", argv[0] ? argv[0] : "", out);
	return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

char *
http_get(int port, const char *path, int *status)
{
	int fd = connect_loopback(false, port);
	char req[512], *buf;
	size_t len = 0, cap = 1 << 20;
	ssize_t n;

	*status = 0;
	if (fd < 0)
		return NULL;
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n",
	    path);
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
		close(fd);
		return NULL;
	}
	buf = malloc(cap);
	cr_assert_not_null(buf);
	while (len + 1 < cap && (n = recv(fd, buf + len, cap - len - 1, 0)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
		free(buf);
		return NULL;
	}
	char *body = strstr(buf, "\r\n\r\n");
	if (body == NULL) {
		free(buf);
		return NULL;
	}
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
}
