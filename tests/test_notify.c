/*
 * systemd: the notification protocol (a datagram socket made by the test
 * stands for systemd's NOTIFY_SOCKET) and socket activation (LISTEN_FDS:
 * a listening socket made by the test is ferry's listener).  Real binary,
 * loopback, port 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static char sockpath[108];
static int nfd = -1;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	if (nfd >= 0)
		close(nfd);
	nfd = -1;
	if (sockpath[0] != '\0')
		unlink(sockpath);
	sockpath[0] = '\0';
}

/* The socket systemd would listen on; NOTIFY_SOCKET names it. */
static void
notify_socket(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	snprintf(sockpath, sizeof(sockpath), "/tmp/ferry-notify-%ld",
	    (long)getpid());
	unlink(sockpath);
	nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(nfd, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sockpath);
	cr_assert_eq(bind(nfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	cr_assert_eq(setenv("NOTIFY_SOCKET", sockpath, 1), 0);
}

/* Datagrams until one contains `want` (up to 15 s); all of them in log. */
static bool
expect(const char *want, char *log, size_t loglen)
{
	for (int i = 0; i < 150; i++) {
		struct pollfd p = { .fd = nfd, .events = POLLIN };
		char buf[1024];
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(nfd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		if (strlen(log) + (size_t)n + 2 < loglen) {
			strcat(log, buf);
			strcat(log, "|");
		}
		if (strstr(buf, want) != NULL)
			return true;
	}
	return false;
}

static const char conf[] =
    "[web]\nmode = relay\nbind = 127.0.0.1:0\n";

Test(notify, ready_reloading_stopping_status, .timeout = 60,
    .fini = cleanup)
{
	char log[8192] = "", want[64];

	notify_socket();
	ferry_start(&fp, conf);
	snprintf(want, sizeof(want), "MAINPID=%ld\nREADY=1", (long)fp.pid);
	cr_assert(expect(want, log, sizeof(log)), "got: %s", log);
	cr_assert(expect("STATUS=serving: 0 connections, 0 devices", log,
	    sizeof(log)), "got: %s", log);
	ferry_signal(&fp, SIGHUP);
	cr_assert(expect("RELOADING=1", log, sizeof(log)), "got: %s", log);
	cr_assert(expect("READY=1", log, sizeof(log)), "got: %s", log);
	ferry_signal(&fp, SIGTERM);
	cr_assert(expect("STOPPING=1", log, sizeof(log)), "got: %s", log);
	cr_assert(ferry_wait_exit(&fp, 15));
}

/* Every worker ready before READY=1: the supervisor counts them. */
Test(notify, ready_after_every_worker, .timeout = 60, .fini = cleanup)
{
	char log[8192] = "";

	notify_socket();
	ferry_start_args(&fp, "[ferry]\nworkers = 3\n[web]\nmode = forward\n"
	    "bind = 127.0.0.1:0\nbackend = 127.0.0.1:9\n", 3, NULL);
	cr_assert(expect("READY=1", log, sizeof(log)), "got: %s", log);
	/* By then, every worker had logged its "ready:". */
	cr_assert_eq(ferry_log_count(&fp, "ready: worker"), 3);
	cr_assert(expect("STATUS=serving: 0 connections (every worker)", log,
	    sizeof(log)), "got: %s", log);
}

Test(notify, watchdog, .timeout = 60, .fini = cleanup)
{
	char log[8192] = "";

	notify_socket();
	cr_assert_eq(setenv("WATCHDOG_USEC", "200000", 1), 0);
	ferry_start(&fp, conf);
	cr_assert(expect("WATCHDOG=1", log, sizeof(log)), "got: %s", log);
	cr_assert(expect("WATCHDOG=1", log, sizeof(log)), "got: %s", log);
	/* Another process's watchdog: none of ours. */
	cleanup();
	char log2[8192] = "";
	notify_socket();
	cr_assert_eq(setenv("WATCHDOG_PID", "1", 1), 0);
	ferry_start(&fp, conf);
	cr_assert(expect("READY=1", log2, sizeof(log2)));
	/* Five of its intervals, then everything it sent so far. */
	usleep(500 * 1000);
	ferry_signal(&fp, SIGHUP);
	cr_assert(expect("RELOADING=1", log2, sizeof(log2)));
	cr_assert_null(strstr(log2, "WATCHDOG=1"), "got: %s", log2);
}

/* ---- socket activation ---- */

static int
listening_socket(int *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(fd, 16), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static pid_t activated;
static char actdir[64];

static void
stop_activated(void)
{
	char cmd[128];

	if (activated > 0) {
		kill(activated, SIGTERM);
		waitpid(activated, NULL, 0);
	}
	activated = 0;
	if (actdir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", actdir);
		(void)!system(cmd);
	}
	actdir[0] = '\0';
}

/*
 * As systemd starts a service with sockets: the socket at fd 3, LISTEN_PID
 * its pid.  Binding the same address anew would fail (EADDRINUSE): serving
 * it proves the socket was taken.
 */
Test(notify, socket_activation, .timeout = 60, .fini = stop_activated)
{
	char *dir = actdir, path[128], text[512];
	int port, lfd = listening_socket(&port);

	snprintf(actdir, sizeof(actdir), "/tmp/ferry-activation-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ferry.conf", dir);
	snprintf(text, sizeof(text), "[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:%d\n", port);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	char logpath[160];
	snprintf(logpath, sizeof(logpath), "%s/ferry.log", dir);
	activated = fork();
	cr_assert_geq(activated, 0);
	if (activated == 0) {
		char pid[32];
		int lf = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(lf, 2);
		dup2(lfd, 3);
		snprintf(pid, sizeof(pid), "%ld", (long)getpid());
		setenv("LISTEN_PID", pid, 1);
		setenv("LISTEN_FDS", "1", 1);
		setenv("LISTEN_FDNAMES", "ferry.socket", 1);
		execl(ferry_bin(), "ferry", "-c", path, (char *)NULL);
		_exit(127);
	}
	close(lfd);
	/* A relay serves its protocol: a bad header gets the link closed. */
	bool up = false;
	for (int i = 0; i < 1500 && !up; i++) {
		FILE *l = fopen(logpath, "r");
		char line[512];
		while (l != NULL && fgets(line, sizeof(line), l) != NULL)
			up = up || strstr(line, "ready:") != NULL;
		if (l != NULL)
			fclose(l);
		if (!up)
			usleep(10 * 1000);
	}
	cr_assert(up, "not ready");
	int fd = connect_loopback(false, port);
	cr_assert_geq(fd, 0, "nothing on the inherited socket");
	close(fd);
	FILE *l = fopen(logpath, "r");
	char line[512];
	bool listening = false;
	snprintf(text, sizeof(text), "listening on 127.0.0.1:%d", port);
	while (l != NULL && fgets(line, sizeof(line), l) != NULL)
		listening = listening || strstr(line, text) != NULL;
	if (l != NULL)
		fclose(l);
	cr_assert(listening);
}

/* With workers, the supervisor keeps the watchdog fed (sigtimedwait). */
Test(notify, watchdog_with_workers, .timeout = 60, .fini = cleanup)
{
	char log[8192] = "";

	notify_socket();
	cr_assert_eq(setenv("WATCHDOG_USEC", "200000", 1), 0);
	ferry_start_args(&fp, "[ferry]\nworkers = 2\n[web]\nmode = forward\n"
	    "bind = 127.0.0.1:0\nbackend = 127.0.0.1:9\n", 2, NULL);
	cr_assert(expect("READY=1", log, sizeof(log)), "got: %s", log);
	cr_assert(expect("WATCHDOG=1", log, sizeof(log)), "got: %s", log);
	cr_assert(expect("WATCHDOG=1", log, sizeof(log)), "got: %s", log);
	ferry_signal(&fp, SIGTERM);
	cr_assert(expect("STOPPING=1", log, sizeof(log)), "got: %s", log);
	cr_assert(ferry_wait_exit(&fp, 15));
	cr_assert(WIFEXITED(fp.status) && WEXITSTATUS(fp.status) == 0);
}
