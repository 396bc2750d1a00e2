/* natscluster: see natscluster.h. */
#define _GNU_SOURCE
#include "natscluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *
nc_server_bin(void)
{
	const char *b = getenv("NATS_SERVER");

	return b != NULL && *b ? b : "nats-server";
}

/*
 * n free ports at once (all bound before any is released, so they are
 * distinct); a server may still lose one to another process before it
 * binds it, which nc_start() sees as a server that does not come up.
 */
static void
free_ports(int *out, int n)
{
	int fds[3 * NC_MAX];

	for (int i = 0; i < n; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		socklen_t len = sizeof(sa);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		cr_assert_geq(fds[i], 0);
		cr_assert_eq(bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)),
		    0);
		cr_assert_eq(getsockname(fds[i], (struct sockaddr *)&sa, &len),
		    0);
		out[i] = ntohs(sa.sin_port);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

static void
spawn(struct nats_cluster *nc, int i)
{
	char port[16], mon[16], name[16], cl[64], routes[NC_MAX * 40] = "",
	    store[192], log[192];
	const char *args[32];
	pid_t parent = getpid();
	int na = 0;

	snprintf(port, sizeof(port), "%d", nc->port[i]);
	snprintf(mon, sizeof(mon), "%d", nc->mon[i]);
	snprintf(name, sizeof(name), "s%d", i);
	snprintf(cl, sizeof(cl), "nats://127.0.0.1:%d", nc->route[i]);
	for (int j = 0; j < nc->n; j++)
		snprintf(routes + strlen(routes), sizeof(routes) -
		    strlen(routes), "%snats://127.0.0.1:%d", j ? "," : "",
		    nc->route[j]);
	snprintf(store, sizeof(store), "%s/store.%d", nc->dir, i);
	snprintf(log, sizeof(log), "%s/log.%d", nc->dir, i);
	args[na++] = nc_server_bin();
	args[na++] = "-a";
	args[na++] = "127.0.0.1";
	args[na++] = "-p";
	args[na++] = port;
	args[na++] = "-m";
	args[na++] = mon;
	args[na++] = "-n";
	args[na++] = name;
	if (nc->n > 1) {
		args[na++] = "--cluster_name";
		args[na++] = "ferry-test";
		args[na++] = "--cluster";
		args[na++] = cl;
		args[na++] = "--routes";
		args[na++] = routes;
	}
	if (nc->js) {
		args[na++] = "-js";
		args[na++] = "-sd";
		args[na++] = store;
	}
	args[na] = NULL;
	fflush(NULL);
	nc->pid[i] = fork();
	cr_assert_geq(nc->pid[i], 0, "fork: %s", strerror(errno));
	if (nc->pid[i] == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 ||
		    getppid() != parent)
			_exit(127);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
		execvp(args[0], (char *const *)args);
		dprintf(STDERR_FILENO, "exec %s: %s\n", args[0],
		    strerror(errno));
		_exit(127);
	}
}

/* Whether a monitoring page of server i holds `needle`. */
static bool
page_has(const struct nats_cluster *nc, int i, const char *path,
    const char *needle)
{
	int status;
	char *body = http_get(nc->mon[i], path, &status);
	bool ok = body != NULL && status == 200 && strstr(body, needle);

	free(body);
	return ok;
}

static bool
server_ready(const struct nats_cluster *nc, int i)
{
	char routes[64];

	if (nc->pid[i] <= 0)
		return true;	/* killed on purpose: not waited for */
	snprintf(routes, sizeof(routes), "\"num_routes\": %d,", nc->n - 1);
	if (nc->n > 1 && !page_has(nc, i, "/routez", routes))
		return false;
	if (nc->n == 1 && !page_has(nc, i, "/routez", "\"num_routes\""))
		return false;
	return !nc->js || page_has(nc, i, "/jsz", "\"leader\": \"");
}

bool
nc_ready(const struct nats_cluster *nc, double timeout)
{
	double end = mono() + timeout;

	for (;;) {
		int ok = 0;
		for (int i = 0; i < nc->n; i++)
			ok += server_ready(nc, i);
		if (ok == nc->n)
			return true;
		if (mono() >= end)
			return false;
		usleep(50 * 1000);
	}
}

void
nc_dump(const struct nats_cluster *nc)
{
	for (int i = 0; i < nc->n; i++) {
		char path[192], buf[4096];
		FILE *f;
		size_t n;
		snprintf(path, sizeof(path), "%s/log.%d", nc->dir, i);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		fseek(f, -(long)sizeof(buf) + 1, SEEK_END);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fclose(f);
		fprintf(stderr, "---- %s (tail) ----\n%s---- end ----\n", path,
		    buf);
	}
}

void
nc_start(struct nats_cluster *nc, int n, bool jetstream)
{
	int ports[3 * NC_MAX];

	cr_assert(n >= 1 && n <= NC_MAX);
	memset(nc, 0, sizeof(*nc));
	nc->n = n;
	nc->js = jetstream;
	snprintf(nc->dir, sizeof(nc->dir), "/tmp/ferry-nats-XXXXXX");
	cr_assert_not_null(mkdtemp(nc->dir), "mkdtemp: %s", strerror(errno));
	free_ports(ports, 3 * n);
	for (int i = 0; i < n; i++) {
		nc->port[i] = ports[3 * i];
		nc->mon[i] = ports[3 * i + 1];
		nc->route[i] = ports[3 * i + 2];
		snprintf(nc->urls + strlen(nc->urls), sizeof(nc->urls) -
		    strlen(nc->urls), "%snats://127.0.0.1:%d", i ? "," : "",
		    nc->port[i]);
	}
	for (int i = 0; i < n; i++)
		spawn(nc, i);
	if (!nc_ready(nc, 30)) {
		nc_dump(nc);
		nc_stop(nc);
		cr_assert_fail("the NATS cluster did not become ready");
	}
}

static void
reap(pid_t pid, double timeout)
{
	double end = mono() + timeout;
	int status;

	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (mono() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return;
		}
		usleep(10 * 1000);
	}
}

void
nc_kill(struct nats_cluster *nc, int i)
{
	if (nc->pid[i] <= 0)
		return;
	kill(nc->pid[i], SIGKILL);
	reap(nc->pid[i], 5);
	nc->pid[i] = 0;
}

void
nc_restart(struct nats_cluster *nc, int i)
{
	cr_assert_eq(nc->pid[i], 0, "server %d still runs", i);
	spawn(nc, i);
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
nc_stop(struct nats_cluster *nc)
{
	for (int i = 0; i < nc->n; i++)
		if (nc->pid[i] > 0)
			kill(nc->pid[i], SIGTERM);
	for (int i = 0; i < nc->n; i++)
		if (nc->pid[i] > 0) {
			reap(nc->pid[i], 5);
			nc->pid[i] = 0;
		}
	if (nc->dir[0] != '\0' && getenv("FERRY_KEEP_LOGS") == NULL)
		nftw(nc->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	nc->dir[0] = '\0';
}

void
nc_url(const struct nats_cluster *nc, int i, char *out, size_t len)
{
	snprintf(out, len, "nats://127.0.0.1:%d", nc->port[i]);
}

long long
nc_stat(const struct nats_cluster *nc, int i, const char *path,
    const char *field)
{
	int status;
	char *body = http_get(nc->mon[i], path, &status);
	const char *p;
	long long v = -1;

	if (body != NULL && status == 200 && (p = strstr(body, field)) != NULL) {
		p += strlen(field);
		while (*p == ' ' || *p == ':' || *p == '"')
			p++;
		v = strtoll(p, NULL, 10);
	}
	free(body);
	return v;
}

/*
 * The shared cluster: one per test run, kept by a process of its own (the
 * keeper) that outlives the test which started it and stops the servers
 * once the Criterion runner (every test's parent) is gone.
 */
static void
shared_path(pid_t runner, const char *what, char *out, size_t len)
{
	snprintf(out, len, "/tmp/ferry-nats-shared-%ld.%s", (long)runner,
	    what);
}

static bool
shared_read(pid_t runner, struct nats_cluster *nc)
{
	char path[128];
	ssize_t n;
	int fd;

	shared_path(runner, "state", path, sizeof(path));
	if ((fd = open(path, O_RDONLY)) < 0)
		return false;
	n = read(fd, nc, sizeof(*nc));
	close(fd);
	if (n != (ssize_t)sizeof(*nc))
		return false;
	for (int i = 0; i < nc->n; i++)
		if (nc->pid[i] <= 0 || kill(nc->pid[i], 0) < 0)
			return false;
	return true;
}

static void
keeper(pid_t runner, int ready, int n)
{
	struct nats_cluster nc;
	char path[128], tmp[140];
	int fd;

	if (setsid() < 0)
		_exit(1);
	for (int i = 3; i < 1024; i++)
		if (i != ready)
			close(i);
	nc_start(&nc, n, true);
	shared_path(runner, "state", path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0 ||
	    write(fd, &nc, sizeof(nc)) != (ssize_t)sizeof(nc) ||
	    close(fd) < 0 || rename(tmp, path) < 0) {
		nc_stop(&nc);
		_exit(1);
	}
	(void)!write(ready, "!", 1);
	close(ready);
	while (kill(runner, 0) == 0 || errno == EPERM)
		usleep(200 * 1000);
	nc_stop(&nc);
	unlink(path);
	shared_path(runner, "lock", path, sizeof(path));
	unlink(path);
	_exit(0);
}

void
nc_shared(struct nats_cluster *nc)
{
	pid_t runner = getppid(), pid;
	char path[128], c;
	int lock, p[2];
	ssize_t r;

	shared_path(runner, "lock", path, sizeof(path));
	lock = open(path, O_RDWR | O_CREAT, 0600);
	cr_assert_geq(lock, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(flock(lock, LOCK_EX), 0);
	if (shared_read(runner, nc)) {
		close(lock);
		return;
	}
	cr_assert_eq(pipe(p), 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		keeper(runner, p[1], NC_MAX);
	}
	close(p[1]);
	do
		r = read(p[0], &c, 1);
	while (r < 0 && errno == EINTR);
	close(p[0]);
	waitpid(pid, NULL, WNOHANG);
	cr_assert_eq(r, 1, "the shared NATS cluster did not start");
	cr_assert(shared_read(runner, nc), "the shared NATS cluster's state");
	close(lock);
}
