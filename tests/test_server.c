/*
 * bind_sockets, the accept handler (batching, fd exhaustion) and the TCP
 * server (stop, supervised worker processes).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"
#include "log.h"
#include "process.h"
#include "netutil.h"
#include "tcpserver.h"

Test(netutil, port_zero_shared_by_v4_and_v6, .timeout = 10)
{
	int fds[4];
	char err[256];
	int n = netutil_bind_sockets(NULL, 0, AF_UNSPEC, 16, false, fds, 4,
	    err, sizeof(err));

	cr_assert_eq(n, 2, "%s", n < 0 ? err : "one family missing");
	int p0 = netutil_local_port(fds[0]), p1 = netutil_local_port(fds[1]);
	cr_assert_gt(p0, 0);
	cr_assert_eq(p0, p1, "v4 port %d, v6 port %d", p0, p1);
	/* Both answer on loopback. */
	int c4 = connect_loopback(false, p0), c6 = connect_loopback(true, p0);
	cr_assert_geq(c4, 0);
	cr_assert_geq(c6, 0);
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int one = 0;
		socklen_t ol = sizeof(one);
		getsockname(fds[i], (struct sockaddr *)&ss, &len);
		if (ss.ss_family == AF_INET6) {
			getsockopt(fds[i], IPPROTO_IPV6, IPV6_V6ONLY, &one, &ol);
			cr_assert_eq(one, 1, "IPv6 socket without V6ONLY");
		}
		getsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, &ol);
		cr_assert_eq(one, 1);
		cr_assert(fcntl(fds[i], F_GETFL) & O_NONBLOCK);
		cr_assert(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
		close(fds[i]);
	}
	close(c4);
	close(c6);
}

Test(netutil, reuse_port_and_busy_port, .timeout = 10)
{
	int a, b, c;
	char err[256];
	int port;
	int first = listen_loopback(false, &port);

	/* Without SO_REUSEPORT the port is taken: a clear error. */
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", port, AF_INET, 16,
	    false, &a, 1, err, sizeof(err)), -1);
	cr_assert(strstr(err, "bind") && strstr(err, "127.0.0.1"), "%s", err);
	close(first);
	/* With it, two sockets share one port. */
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", port, AF_INET, 16,
	    true, &b, 1, err, sizeof(err)), 1, "%s", err);
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", port, AF_INET, 16,
	    true, &c, 1, err, sizeof(err)), 1, "%s", err);
	close(b);
	close(c);
}

Test(netutil, hostport_parsing, .timeout = 10)
{
	char host[64], err[128];
	int port;

	cr_assert_eq(netutil_parse_hostport(":8888", host, sizeof(host), &port,
	    err, sizeof(err)), 0);
	cr_assert_str_eq(host, "");
	cr_assert_eq(port, 8888);
	cr_assert_eq(netutil_parse_hostport("[::1]:8443", host, sizeof(host),
	    &port, err, sizeof(err)), 0);
	cr_assert_str_eq(host, "::1");
	cr_assert_eq(netutil_parse_hostport("localhost:1", host, sizeof(host),
	    &port, err, sizeof(err)), 0);
	cr_assert_str_eq(host, "localhost");
	const char *bad[] = { "", "x:", "1.2.3.4:99999", "::1:80", "[::1]80",
	    "host:-1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(netutil_parse_hostport(bad[i], host, sizeof(host),
		    &port, err, sizeof(err)), -1, "accepted '%s'", bad[i]);
}

/* ---- the accept handler ---- */

struct acc {
	int accepted;
	int fds[512];
};

static void
keep_fd(int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
	struct acc *a = arg;

	(void)sa;
	(void)len;
	if (a->accepted < 512)
		a->fds[a->accepted] = fd;
	else
		close(fd);
	a->accepted++;
}

static bool
got_all(void *arg)
{
	return ((struct acc *)arg)->accepted >= 300;
}

Test(netutil, accepts_in_batches, .timeout = 30)
{
	struct tloop t;
	struct accept_handler ah;
	struct acc a = { 0 };
	int port, lfd, clients[300];

	tloop_init(&t);
	lfd = listen_loopback(false, &port);
	netutil_accept_init(&ah, t.loop, lfd, 8, keep_fd, &a);
	netutil_accept_start(&ah);
	/* In waves of 100, below the listen backlog of 128. */
	for (int i = 0; i < 300; i++) {
		clients[i] = connect_loopback(false, port);
		cr_assert_geq(clients[i], 0, "connect %d: %s", i,
		    strerror(errno));
		if (i % 100 == 99)
			tloop_run_for(&t, 0.2);
	}
	cr_assert(tloop_run_pred(&t, got_all, &a, 20), "accepted %d of 300",
	    a.accepted);
	cr_assert_eq(a.accepted, 300);
	for (int i = 0; i < 300; i++) {
		close(clients[i]);
		close(a.fds[i]);
	}
	netutil_accept_stop(&ah);
	close(lfd);
	tloop_destroy(&t);
}

static int
open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static bool
has_accepted(void *arg)
{
	return ((struct acc *)arg)->accepted > 0;
}

/*
 * Out of descriptors: the handler must neither crash nor spin, and must
 * accept again once descriptors are free.
 */
Test(netutil, fd_exhaustion_pauses_then_resumes, .timeout = 30)
{
	struct tloop t;
	struct accept_handler ah;
	struct acc a = { 0 };
	struct rlimit rl;
	int port, lfd, clients[40];

	log_set_level(LOG_ERROR);
	tloop_init(&t);
	lfd = listen_loopback(false, &port);
	/* The clients' own sockets first, then the limit: the server side
	 * runs out while the kernel still queues connections. */
	for (int i = 0; i < 40; i++) {
		clients[i] = connect_loopback(false, port);
		cr_assert_geq(clients[i], 0);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	struct rlimit low = rl;
	low.rlim_cur = (rlim_t)open_fds() + 10;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	netutil_accept_init(&ah, t.loop, lfd, 128, keep_fd, &a);
	netutil_accept_start(&ah);
	unsigned before = ev_iteration(t.loop);
	tloop_run_for(&t, 1.5);
	unsigned iterations = ev_iteration(t.loop) - before;
	cr_assert_gt(a.accepted, 0);
	cr_assert_lt(a.accepted, 40, "the limit did not bite");
	cr_assert(ah.starved, "EMFILE not noticed");
	/* A spinning accept loop would run hundreds of thousands of times;
	 * pausing 100 ms between tries (plus the 10 ms test tick) is ~200. */
	cr_assert_lt(iterations, 1000, "%u loop iterations in 1.5 s",
	    iterations);
	/* Free the descriptors: service resumes for the waiting clients. */
	int had = a.accepted;
	for (int i = 0; i < had; i++)
		close(a.fds[i]);
	a.accepted = 0;
	cr_assert(tloop_run_pred(&t, has_accepted, &a, 10),
	    "never accepted again");
	cr_assert_not(ah.starved && a.accepted == 0);
	setrlimit(RLIMIT_NOFILE, &rl);
	for (int i = 0; i < a.accepted && i < 512; i++)
		close(a.fds[i]);
	for (int i = 0; i < 40; i++)
		close(clients[i]);
	netutil_accept_stop(&ah);
	close(lfd);
	tloop_destroy(&t);
}

/* ---- tcpserver ---- */

struct echo {
	int handled;
	bool done_before_handshake;
};

static void
echo_read(struct stream *s, const char *d, size_t n, void *arg)
{
	(void)arg;
	stream_write(s, d, n, NULL);
	stream_read_bytes(s, 4096, true, echo_read);
}

static void
echo_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	struct echo *e = arg;

	(void)len;
	cr_assert_eq(sa->sa_family, AF_INET);
	e->handled++;
	stream_read_bytes(s, 4096, true, echo_read);
}

struct roundtrip {
	int port;
	volatile bool done;
	bool ok;
};

static void *
roundtrip_main(void *arg)
{
	struct roundtrip *r = arg;
	char buf[6] = { 0 };
	int fd = connect_loopback(false, r->port);

	if (fd >= 0) {
		send(fd, "hello", 5, 0);
		r->ok = recv(fd, buf, 5, MSG_WAITALL) == 5 &&
		    strcmp(buf, "hello") == 0;
		close(fd);
	}
	r->done = true;
	return NULL;
}

static bool
rt_done(void *arg)
{
	return ((struct roundtrip *)arg)->done;
}

static bool
roundtrip(struct tloop *t, int port)
{
	struct roundtrip r = { .port = port };
	pthread_t th;

	pthread_create(&th, NULL, roundtrip_main, &r);
	cr_assert(tloop_run_pred(t, rt_done, &r, 10));
	pthread_join(th, NULL);
	return r.ok;
}

Test(tcpserver, stop_keeps_live_connections, .timeout = 30)
{
	struct tloop t;
	struct tcpserver srv;
	struct echo e = { 0 };
	char err[256], buf[8];

	tloop_init(&t);
	tcpserver_init(&srv, &t.sl, "echo", NULL, NULL, echo_handle, &e);
	cr_assert_eq(tcpserver_listen(&srv, "127.0.0.1", 0, err, sizeof(err)),
	    0, "%s", err);
	int port = tcpserver_port(&srv);
	cr_assert(roundtrip(&t, port));
	int live = connect_loopback(false, port);
	cr_assert_geq(live, 0);
	tloop_run_for(&t, 0.1);
	cr_assert_eq(e.handled, 2);
	tcpserver_stop(&srv);
	/* New connections are refused... */
	cr_assert_eq(connect_loopback(false, port), -1);
	cr_assert_eq(errno, ECONNREFUSED);
	/* ...the live one carries on. */
	send(live, "abc", 3, 0);
	tloop_run_for(&t, 0.1);
	cr_assert_eq(recv(live, buf, 3, MSG_WAITALL), 3);
	cr_assert_eq(memcmp(buf, "abc", 3), 0);
	close(live);
	tloop_run_for(&t, 0.1);
	tcpserver_destroy(&srv);
	cr_assert_eq(t.sl.live, 0);
	tloop_destroy(&t);
}

/* ---- start(2, max_restarts): supervised workers ---- */

static void
pid_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	(void)sa;
	(void)len;
	(void)arg;
	stream_write(s, buf, (size_t)n, NULL);
	stream_end(s);
}

/* The supervisor process: bind, report the port, fork 2 workers. */
static void
supervisor(int portpipe, int max_restarts)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct stream_loop sl;
	struct tcpserver srv;
	char err[256];

	log_set_level(LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	stream_loop_init(&sl, loop);
	tcpserver_init(&srv, &sl, "pids", NULL, NULL, pid_handle, NULL);
	if (tcpserver_bind(&srv, "127.0.0.1", 0, AF_INET, 128, false, err,
	    sizeof(err)) < 0)
		_exit(3);
	int port = tcpserver_port(&srv);
	if (write(portpipe, &port, sizeof(port)) != sizeof(port))
		_exit(3);
	close(portpipe);
	tcpserver_start(&srv, 2, max_restarts);
	ev_run(loop, 0);
	_exit(0);
}

/* The supervisor's children, from /proc. */
static int
children_of(pid_t parent, pid_t *out, int max)
{
	char path[64], buf[256];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", parent,
	    parent);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	if (fgets(buf, sizeof(buf), f) != NULL) {
		char *save = NULL;
		for (char *t = strtok_r(buf, " \n", &save); t && n < max;
		    t = strtok_r(NULL, " \n", &save))
			out[n++] = (pid_t)atol(t);
	}
	fclose(f);
	return n;
}

static long
ask_pid(int port)
{
	char buf[32] = { 0 };
	int fd = connect_loopback(false, port);

	if (fd < 0)
		return -1;
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_WAITALL);
	close(fd);
	return n > 0 ? atol(buf) : -1;
}

static bool
wait_children(pid_t sup, int want, pid_t *kids, const pid_t *not_this)
{
	for (int i = 0; i < 200; i++) {
		int n = children_of(sup, kids, 4);
		bool fresh = n == want;
		for (int k = 0; k < n && not_this; k++)
			if (kids[k] == *not_this)
				fresh = false;
		if (fresh)
			return true;
		usleep(50 * 1000);
	}
	return false;
}

Test(tcpserver, workers_restarted_until_limit, .timeout = 60)
{
	int pp[2];
	int port;
	pid_t kids[4];

	cr_assert_eq(pipe(pp), 0);
	pid_t sup = fork();
	cr_assert_geq(sup, 0);
	if (sup == 0) {
		close(pp[0]);
		supervisor(pp[1], 2);
	}
	close(pp[1]);
	cr_assert_eq(read(pp[0], &port, sizeof(port)), (ssize_t)sizeof(port));
	close(pp[0]);
	cr_assert(wait_children(sup, 2, kids, NULL), "2 workers not seen");
	/* Both workers serve. */
	long pid = ask_pid(port);
	cr_assert(pid == kids[0] || pid == kids[1], "answer from %ld", pid);

	/* Two kills are restarted (max_restarts = 2)... */
	for (int round = 0; round < 2; round++) {
		pid_t victim = kids[0];
		cr_assert_eq(kill(victim, SIGKILL), 0);
		cr_assert(wait_children(sup, 2, kids, &victim),
		    "worker %d not replaced (round %d)", victim, round);
		cr_assert_gt(ask_pid(port), 0, "no service after restart");
	}
	/* ...the third exceeds the limit: the supervisor gives up. */
	pid_t left[4];
	int nleft = children_of(sup, left, 4);
	cr_assert_eq(kill(kids[0], SIGKILL), 0);
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = waitpid(sup, &status, WNOHANG);
		if (r == 0)
			usleep(50 * 1000);
	}
	cr_assert_eq(r, sup, "supervisor still running");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0,
	    "supervisor exit status %d", status);
	/* It took the remaining worker down with it. */
	for (int k = 0; k < nleft; k++) {
		if (left[k] == kids[0])
			continue;
		bool gone = false;
		for (int i = 0; i < 100 && !gone; i++) {
			gone = kill(left[k], 0) < 0 && errno == ESRCH;
			if (!gone)
				usleep(50 * 1000);
		}
		cr_assert(gone, "worker %d survived the supervisor", left[k]);
	}
}

/* Workers that exit 0 are not restarted; the supervisor then exits 0. */
Test(tcpserver, clean_worker_exit_not_restarted, .timeout = 30)
{
	pid_t sup = fork();

	cr_assert_geq(sup, 0);
	if (sup == 0) {
		log_set_level(LOG_ERROR);
		int id = process_fork(2, 5);
		(void)id;
		_exit(0);
	}
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = waitpid(sup, &status, WNOHANG);
		if (r == 0)
			usleep(50 * 1000);
	}
	cr_assert_eq(r, sup);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "status %d", status);
}
