/*
 * netutil: bind_sockets (families, shared port, socket options, failures
 * without leaks, host names), host:port parsing, address formatting, and
 * the accept handler (batching with re-arming, fd exhaustion without a
 * busy loop).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"
#include "log.h"
#include "netutil.h"

/* ---- small helpers ---- */

/* Open descriptors of this process (the directory's own fd excluded). */
static int
count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	cr_assert_not_null(d, "/proc/self/fd: %s", strerror(errno));
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

static int
sock_family(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	return ss.ss_family;
}

static int
int_opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	cr_assert_eq(getsockopt(fd, level, name, &v, &len), 0,
	    "getsockopt(%d, %d): %s", level, name, strerror(errno));
	return v;
}

static bool
is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 =
		    (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

/* ---- bind_sockets ---- */

Test(netutil, unspec_port0_binds_v4_and_v6_on_one_port, .timeout = 15)
{
	int fds[NETUTIL_MAX_SOCKETS];
	char err[256] = "";
	int n = netutil_bind_sockets(NULL, 0, AF_UNSPEC, 16, false, fds,
	    NETUTIL_MAX_SOCKETS, err, sizeof(err));

	cr_assert_eq(n, 2, "got %d sockets: %s", n, err);
	int f0 = sock_family(fds[0]), f1 = sock_family(fds[1]);
	cr_assert((f0 == AF_INET && f1 == AF_INET6) ||
	    (f0 == AF_INET6 && f1 == AF_INET), "families %d and %d", f0, f1);
	int port = netutil_local_port(fds[0]);
	cr_assert_gt(port, 0);
	cr_assert_eq(netutil_local_port(fds[1]), port,
	    "v4/v6 ports differ: %d vs %d", netutil_local_port(fds[0]),
	    netutil_local_port(fds[1]));
	int v4 = f0 == AF_INET ? fds[0] : fds[1];
	int v6 = f0 == AF_INET6 ? fds[0] : fds[1];

	/* Each family's loopback lands on that family's socket. */
	int c4 = connect_loopback(false, port);
	cr_assert_geq(c4, 0, "connect 127.0.0.1:%d: %s", port,
	    strerror(errno));
	int c6 = connect_loopback(true, port);
	cr_assert_geq(c6, 0, "connect [::1]:%d: %s", port, strerror(errno));
	int a4 = accept_timeout(v4, 5), a6 = accept_timeout(v6, 5);
	cr_assert_geq(a4, 0, "nothing accepted on the IPv4 socket");
	cr_assert_geq(a6, 0, "nothing accepted on the IPv6 socket");
	cr_assert_eq(sock_family(a4), AF_INET);
	cr_assert_eq(sock_family(a6), AF_INET6);
	/* The handshake is real: bytes get through. */
	char c = 0;
	cr_assert_eq(send(c4, "4", 1, 0), 1);
	cr_assert_eq(send(c6, "6", 1, 0), 1);
	struct pollfd p = { .fd = a4, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 5000), 1);
	cr_assert_eq(recv(a4, &c, 1, 0), 1);
	cr_assert_eq(c, '4');
	p.fd = a6;
	cr_assert_eq(poll(&p, 1, 5000), 1);
	cr_assert_eq(recv(a6, &c, 1, 0), 1);
	cr_assert_eq(c, '6');
	close(a4);
	close(a6);
	close(c4);
	close(c6);
	close(fds[0]);
	close(fds[1]);
}

Test(netutil, socket_options, .timeout = 15)
{
	int fds[NETUTIL_MAX_SOCKETS];
	char err[256] = "";
	int n = netutil_bind_sockets(NULL, 0, AF_UNSPEC, 16, false, fds,
	    NETUTIL_MAX_SOCKETS, err, sizeof(err));

	cr_assert_eq(n, 2, "%s", err);
	for (int i = 0; i < n; i++) {
		int fam = sock_family(fds[i]);
		if (fam == AF_INET6)
			cr_assert_eq(int_opt(fds[i], IPPROTO_IPV6,
			    IPV6_V6ONLY), 1, "IPv6 socket without V6ONLY");
		cr_assert_neq(fcntl(fds[i], F_GETFL) & O_NONBLOCK, 0,
		    "socket %d (family %d) is blocking", i, fam);
		cr_assert_neq(fcntl(fds[i], F_GETFD) & FD_CLOEXEC, 0,
		    "socket %d (family %d) lacks FD_CLOEXEC", i, fam);
		cr_assert_neq(int_opt(fds[i], SOL_SOCKET, SO_REUSEADDR), 0);
		cr_assert_eq(int_opt(fds[i], SOL_SOCKET, SO_REUSEPORT), 0,
		    "SO_REUSEPORT set without reuse_port");
		cr_assert_eq(int_opt(fds[i], SOL_SOCKET, SO_ACCEPTCONN), 1,
		    "not listening");
		close(fds[i]);
	}

	/* reuse_port: the option is on, and a second bind of the same
	 * explicit port succeeds. */
	int a, b;
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", 0, AF_INET, 16, true,
	    &a, 1, err, sizeof(err)), 1, "%s", err);
	int port = netutil_local_port(a);
	cr_assert_gt(port, 0);
	cr_assert_neq(int_opt(a, SOL_SOCKET, SO_REUSEPORT), 0);
	cr_assert_neq(int_opt(a, SOL_SOCKET, SO_REUSEADDR), 0);
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", port, AF_INET, 16,
	    true, &b, 1, err, sizeof(err)), 1, "second bind of %d: %s", port,
	    err);
	cr_assert_eq(netutil_local_port(b), port);
	cr_assert_neq(int_opt(b, SOL_SOCKET, SO_REUSEPORT), 0);
	cr_assert_neq(fcntl(b, F_GETFL) & O_NONBLOCK, 0);
	cr_assert_neq(fcntl(b, F_GETFD) & FD_CLOEXEC, 0);
	/* A connection lands on one of the two. */
	int c = connect_loopback(false, port);
	cr_assert_geq(c, 0, "%s", strerror(errno));
	struct pollfd p[2] = { { .fd = a, .events = POLLIN },
	    { .fd = b, .events = POLLIN } };
	cr_assert_eq(poll(p, 2, 5000), 1);
	int got = accept(p[0].revents ? a : b, NULL, NULL);
	cr_assert_geq(got, 0);
	close(got);
	close(c);
	close(a);
	close(b);
}

Test(netutil, busy_port_fails_with_message_and_no_leak, .timeout = 15)
{
	int first, fds[NETUTIL_MAX_SOCKETS];
	char err[256], want[64];
	int n;

	cr_assert_eq(netutil_bind_sockets("127.0.0.1", 0, AF_INET, 16, false,
	    &first, 1, err, sizeof(err)), 1, "%s", err);
	int port = netutil_local_port(first);

	int before = count_open_fds();
	err[0] = '\0';
	n = netutil_bind_sockets("127.0.0.1", port, AF_INET, 16, false, fds,
	    NETUTIL_MAX_SOCKETS, err, sizeof(err));
	cr_assert_eq(n, -1);
	snprintf(want, sizeof(want), "127.0.0.1:%d", port);
	cr_assert_not_null(strstr(err, "bind"), "err: '%s'", err);
	cr_assert_not_null(strstr(err, want), "err: '%s'", err);
	cr_assert_eq(count_open_fds(), before, "descriptors leaked");
	/* With reuse_port on one side only it is still refused. */
	n = netutil_bind_sockets("127.0.0.1", port, AF_INET, 16, true, fds,
	    NETUTIL_MAX_SOCKETS, err, sizeof(err));
	cr_assert_eq(n, -1);
	cr_assert_eq(count_open_fds(), before, "descriptors leaked");
	close(first);

	/*
	 * Every interface, one family's port busy: whichever order
	 * getaddrinfo lists the families in, one of the two rounds opens a
	 * socket before the other fails, and that socket must be closed.
	 */
	for (int busy_family = 0; busy_family < 2; busy_family++) {
		int both[2];
		int fam = busy_family ? AF_INET6 : AF_INET;
		cr_assert_eq(netutil_bind_sockets(NULL, 0, AF_UNSPEC, 16,
		    false, both, 2, err, sizeof(err)), 2, "%s", err);
		int p = netutil_local_port(both[0]);
		int keep = sock_family(both[0]) == fam ? both[0] : both[1];
		close(keep == both[0] ? both[1] : both[0]);
		before = count_open_fds();
		err[0] = '\0';
		n = netutil_bind_sockets(NULL, p, AF_UNSPEC, 16, false, fds,
		    NETUTIL_MAX_SOCKETS, err, sizeof(err));
		cr_assert_eq(n, -1, "bound %d sockets over a busy %s port",
		    n, busy_family ? "IPv6" : "IPv4");
		snprintf(want, sizeof(want), busy_family ? "[::]:%d" :
		    "0.0.0.0:%d", p);
		cr_assert_not_null(strstr(err, "bind"), "err: '%s'", err);
		cr_assert_not_null(strstr(err, want), "err: '%s' (want %s)",
		    err, want);
		cr_assert_eq(count_open_fds(), before,
		    "descriptors leaked (busy %s)",
		    busy_family ? "IPv6" : "IPv4");
		close(keep);
	}
}

Test(netutil, host_name_binds_each_address, .timeout = 15)
{
	int fds[NETUTIL_MAX_SOCKETS];
	char err[256] = "";
	int n = netutil_bind_sockets("localhost", 0, AF_UNSPEC, 16, false,
	    fds, NETUTIL_MAX_SOCKETS, err, sizeof(err));

	cr_assert_geq(n, 1, "%s", err);
	int port = netutil_local_port(fds[0]);
	int v4 = -1;
	cr_assert_gt(port, 0);
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char label[80];
		cr_assert_eq(getsockname(fds[i], (struct sockaddr *)&ss, &len),
		    0);
		netutil_format_addr((struct sockaddr *)&ss, label,
		    sizeof(label));
		cr_assert(is_loopback(&ss), "localhost bound %s", label);
		cr_assert_eq(netutil_local_port(fds[i]), port, "%s", label);
		/* No duplicates: each address once. */
		for (int j = 0; j < i; j++) {
			struct sockaddr_storage o;
			socklen_t ol = sizeof(o);
			getsockname(fds[j], (struct sockaddr *)&o, &ol);
			cr_assert(ol != len || memcmp(&o, &ss, len) != 0,
			    "%s bound twice", label);
		}
		if (ss.ss_family == AF_INET)
			v4 = fds[i];
	}
	/* Where localhost has an IPv4 address, it serves. */
	if (v4 >= 0) {
		int c = connect_loopback(false, port);
		cr_assert_geq(c, 0, "%s", strerror(errno));
		int a = accept_timeout(v4, 5);
		cr_assert_geq(a, 0);
		close(a);
		close(c);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

Test(netutil, bad_bind_arguments, .timeout = 15)
{
	int fds[2];
	char err[256];
	int before = count_open_fds();

	err[0] = '\0';
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", 65536, AF_INET, 16,
	    false, fds, 2, err, sizeof(err)), -1);
	cr_assert_neq(err[0], '\0');
	err[0] = '\0';
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", -1, AF_INET, 16,
	    false, fds, 2, err, sizeof(err)), -1);
	cr_assert_neq(err[0], '\0');
	/* An IPv4 literal asked for as IPv6 cannot resolve. */
	err[0] = '\0';
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", 0, AF_INET6, 16,
	    false, fds, 2, err, sizeof(err)), -1);
	cr_assert_neq(err[0], '\0');
	/* More addresses than room: refused, nothing left open. */
	err[0] = '\0';
	cr_assert_eq(netutil_bind_sockets(NULL, 0, AF_UNSPEC, 16, false, fds,
	    1, err, sizeof(err)), -1);
	cr_assert_neq(err[0], '\0');
	cr_assert_eq(count_open_fds(), before, "descriptors leaked");
}

/* ---- parsing and formatting ---- */

Test(netutil, parse_hostport, .timeout = 10)
{
	static const struct {
		const char *spec, *host;
		int port;
	} good[] = {
		{ ":8888", "", 8888 },
		{ "127.0.0.1:80", "127.0.0.1", 80 },
		{ "[::1]:8443", "::1", 8443 },
		{ "localhost:1", "localhost", 1 },
		{ "8080", "", 8080 },
		{ "0.0.0.0:65535", "0.0.0.0", 65535 },
		{ "[::]:0", "::", 0 },
	};
	static const char *const bad[] = {
		"", "x:", "1.2.3.4:99999", "::1:80", "[::1]80", "[::1]:",
		"host:-1", "host:80x", "[::1", "65536", "a:b:c",
	};
	char host[64], err[128];
	int port;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		strcpy(host, "junk");
		port = -7;
		err[0] = '\0';
		cr_assert_eq(netutil_parse_hostport(good[i].spec, host,
		    sizeof(host), &port, err, sizeof(err)), 0,
		    "'%s' refused: %s", good[i].spec, err);
		cr_assert_str_eq(host, good[i].host, "'%s'", good[i].spec);
		cr_assert_eq(port, good[i].port, "'%s'", good[i].spec);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_assert_eq(netutil_parse_hostport(bad[i], host, sizeof(host),
		    &port, err, sizeof(err)), -1, "accepted '%s'", bad[i]);
		cr_assert_neq(err[0], '\0', "no message for '%s'", bad[i]);
	}
	/* A host longer than the buffer is an error, not a truncation. */
	char small[4];
	err[0] = '\0';
	cr_assert_eq(netutil_parse_hostport("example.com:80", small,
	    sizeof(small), &port, err, sizeof(err)), -1);
	cr_assert_neq(err[0], '\0');
}

Test(netutil, format_addr, .timeout = 10)
{
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_un un;
	char out[64];

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(80);
	cr_assert_eq(inet_pton(AF_INET, "1.2.3.4", &in.sin_addr), 1);
	netutil_format_addr((struct sockaddr *)&in, out, sizeof(out));
	cr_assert_str_eq(out, "1.2.3.4:80");

	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(8443);
	in6.sin6_addr = in6addr_loopback;
	netutil_format_addr((struct sockaddr *)&in6, out, sizeof(out));
	cr_assert_str_eq(out, "[::1]:8443");
	cr_assert_eq(inet_pton(AF_INET6, "2001:db8::42", &in6.sin6_addr), 1);
	in6.sin6_port = htons(65535);
	netutil_format_addr((struct sockaddr *)&in6, out, sizeof(out));
	cr_assert_str_eq(out, "[2001:db8::42]:65535");

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	netutil_format_addr((struct sockaddr *)&un, out, sizeof(out));
	cr_assert_str_eq(out, "unix");
	netutil_format_addr(NULL, out, sizeof(out));
	cr_assert_str_eq(out, "?");

	/* Short buffers are truncated and still terminated. */
	char tiny[6];
	memset(tiny, 'x', sizeof(tiny));
	netutil_format_addr((struct sockaddr *)&in, tiny, sizeof(tiny));
	cr_assert_eq(tiny[sizeof(tiny) - 1], '\0');
	cr_assert_str_eq(tiny, "1.2.3");
}

/* ---- the accept handler: batching and re-arming ---- */

#define NCLIENTS 300
#define BATCH 8

struct batch {
	struct ev_loop *loop;
	int accepted;
	int fds[NCLIENTS];
	unsigned cur_iter;	/* ev_iteration of the current batch */
	int in_iter;		/* accepts in that iteration */
	int max_in_iter;
	int batches;		/* iterations that accepted something */
	bool bad_fd;
};

static void
batch_cb(int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
	struct batch *b = arg;
	unsigned it = ev_iteration(b->loop);

	(void)len;
	if (b->batches == 0 || it != b->cur_iter) {
		b->cur_iter = it;
		b->in_iter = 0;
		b->batches++;
	}
	b->in_iter++;
	if (b->in_iter > b->max_in_iter)
		b->max_in_iter = b->in_iter;
	/* accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC, loopback peers. */
	if (!(fcntl(fd, F_GETFL) & O_NONBLOCK) ||
	    !(fcntl(fd, F_GETFD) & FD_CLOEXEC) || sa->sa_family != AF_INET)
		b->bad_fd = true;
	if (b->accepted < NCLIENTS)
		b->fds[b->accepted] = fd;
	else
		close(fd);
	b->accepted++;
}

static bool
batch_all(void *arg)
{
	return ((struct batch *)arg)->accepted >= NCLIENTS;
}

/* Connections completed and waiting in the listen queue. */
static int
accept_queue_len(int lfd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -1;
	return (int)ti.tcpi_unacked;
}

Test(netutil, accept_batches_and_rearms, .timeout = 30)
{
	static struct batch b;
	static int clients[NCLIENTS];
	struct tloop t;
	struct accept_handler ah;
	struct sockaddr_in sin;
	char err[256];
	int lfd;

	memset(&b, 0, sizeof(b));
	tloop_init(&t);
	b.loop = t.loop;
	/* A listen queue with room for all of them: no SYN is dropped. */
	cr_assert_eq(netutil_bind_sockets("127.0.0.1", 0, AF_INET, 1024,
	    false, &lfd, 1, err, sizeof(err)), 1, "%s", err);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)netutil_local_port(lfd));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	netutil_accept_init(&ah, t.loop, lfd, BATCH, batch_cb, &b);
	netutil_accept_start(&ah);

	/* 300 non-blocking connects at once, before the loop runs. */
	for (int i = 0; i < NCLIENTS; i++) {
		clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		cr_assert_geq(clients[i], 0, "socket %d: %s", i,
		    strerror(errno));
		int rc = connect(clients[i], (struct sockaddr *)&sin,
		    sizeof(sin));
		cr_assert(rc == 0 || errno == EINPROGRESS, "connect %d: %s",
		    i, strerror(errno));
	}
	/* Wait (bounded) until the kernel has queued all of them, so every
	 * readiness event finds more than a batch waiting. */
	int queued = 0;
	for (int i = 0; i < 500; i++) {
		queued = accept_queue_len(lfd);
		if (queued >= NCLIENTS)
			break;
		usleep(10 * 1000);
	}
	cr_assert_eq(queued, NCLIENTS, "only %d connections queued", queued);

	cr_assert(tloop_run_pred(&t, batch_all, &b, 20), "accepted %d of %d",
	    b.accepted, NCLIENTS);
	tloop_run_for(&t, 0.05);
	cr_assert_eq(b.accepted, NCLIENTS);
	cr_assert_not(b.bad_fd, "accepted fd without O_NONBLOCK/FD_CLOEXEC");
	/* Never more than `backlog` per readiness event, and full batches
	 * while the queue was long: 300 take at least 38 events. */
	cr_assert_eq(b.max_in_iter, BATCH, "largest batch %d", b.max_in_iter);
	cr_assert_geq(b.batches, (NCLIENTS + BATCH - 1) / BATCH,
	    "%d batches", b.batches);
	/* Every client is really connected to an accepted socket. */
	for (int i = 0; i < NCLIENTS; i++) {
		struct pollfd p = { .fd = clients[i], .events = POLLOUT };
		cr_assert_eq(poll(&p, 1, 5000), 1);
		cr_assert_eq(p.revents & (POLLERR | POLLHUP), 0,
		    "client %d failed", i);
	}
	for (int i = 0; i < NCLIENTS; i++) {
		close(clients[i]);
		close(b.fds[i]);
	}
	netutil_accept_stop(&ah);
	close(lfd);
	tloop_destroy(&t);
}

/* ---- the accept handler: out of descriptors ---- */

#define EM_CLIENTS 60

struct starve {
	int accepted;
	int kept;
	int fds[EM_CLIENTS];
	bool close_now;
};

static void
starve_cb(int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
	struct starve *st = arg;

	(void)sa;
	(void)len;
	st->accepted++;
	if (st->close_now || st->kept >= EM_CLIENTS) {
		close(fd);
		return;
	}
	st->fds[st->kept++] = fd;
}

static bool
starve_all(void *arg)
{
	return ((struct starve *)arg)->accepted >= EM_CLIENTS;
}

static void
stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	*(bool *)w->data = true;
}

static pid_t em_child = -1;

static void
em_cleanup(void)
{
	if (em_child > 0) {
		kill(em_child, SIGKILL);
		waitpid(em_child, NULL, 0);
		em_child = -1;
	}
}

/*
 * The client side, in another process so that only the server's
 * descriptor table runs out: connects EM_CLIENTS times (the kernel
 * completes the handshakes without accept), reports, then holds the
 * connections until the test closes the control pipe.
 */
static void
em_clients(int port, int ready_fd, int hold_fd)
{
	static int fds[EM_CLIENTS];
	char c = 'k';

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(30);
	for (int i = 0; i < EM_CLIENTS; i++) {
		struct sockaddr_in sin;
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sin,
		    sizeof(sin)) < 0) {
			c = 'e';
			break;
		}
	}
	if (write(ready_fd, &c, 1) != 1)
		_exit(2);
	/* Until EOF: the test is done. */
	while (read(hold_fd, &c, 1) > 0)
		;
	_exit(0);
}

Test(netutil, fd_exhaustion_no_spin_then_resume, .timeout = 30,
    .fini = em_cleanup)
{
	static struct starve st;
	struct tloop t;
	struct accept_handler ah;
	struct rlimit orig, low;
	int ready[2], hold[2];
	int port, lfd;
	char c;

	memset(&st, 0, sizeof(st));
	log_set_level(LOG_ERROR);
	tloop_init(&t);
	lfd = listen_loopback(false, &port);
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
	fflush(NULL);
	em_child = fork();
	cr_assert_geq(em_child, 0, "fork: %s", strerror(errno));
	if (em_child == 0) {
		close(ready[0]);
		close(hold[1]);
		close(lfd);
		em_clients(port, ready[1], hold[0]);
	}
	close(ready[1]);
	close(hold[0]);
	struct pollfd p = { .fd = ready[0], .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 15000), 1, "clients never connected");
	cr_assert_eq(read(ready[0], &c, 1), 1);
	cr_assert_eq(c, 'k', "a client could not connect");
	close(ready[0]);

	/* Room for a few more descriptors only. */
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &orig), 0);
	low = orig;
	low.rlim_cur = (rlim_t)count_open_fds() + 10;
	cr_assert_lt(low.rlim_cur, orig.rlim_cur);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0, "%s",
	    strerror(errno));

	netutil_accept_init(&ah, t.loop, lfd, 128, starve_cb, &st);
	netutil_accept_start(&ah);

	/* 1.5 s of the bare loop (no helper tick): count its iterations. */
	bool done = false;
	ev_timer stop;
	ev_timer_init(&stop, stop_timer_cb, 1.5, 0.);
	stop.data = &done;
	ev_timer_start(t.loop, &stop);
	unsigned before = ev_iteration(t.loop);
	unsigned spins = 0;
	while (!done && spins < 1000000) {
		ev_run(t.loop, EVRUN_ONCE);
		spins++;
	}
	unsigned iterations = ev_iteration(t.loop) - before;
	ev_timer_stop(t.loop, &stop);

	int first = st.accepted;
	cr_assert_gt(first, 0, "nothing accepted before the limit");
	cr_assert_lt(first, EM_CLIENTS, "the limit never bit (%d accepted)",
	    first);
	cr_assert(ah.starved, "EMFILE not noticed");
	cr_assert_geq(ah.starved_count, 1);
	/* A busy accept loop does hundreds of thousands of iterations in
	 * 1.5 s; pausing between tries, a few dozen. */
	cr_assert_lt(iterations, 200, "%u loop iterations in 1.5 s",
	    iterations);

	/* Descriptors come back: the waiting clients are all served. */
	for (int i = 0; i < st.kept; i++)
		close(st.fds[i]);
	st.kept = 0;
	st.close_now = true;
	cr_assert(tloop_run_pred(&t, starve_all, &st, 15),
	    "service did not resume: %d of %d accepted", st.accepted,
	    EM_CLIENTS);
	cr_assert_eq(st.accepted, EM_CLIENTS);
	cr_assert_not(ah.starved, "still starved after accepting again");
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &orig), 0);

	netutil_accept_stop(&ah);
	close(lfd);
	close(hold[1]);
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = waitpid(em_child, &status, WNOHANG);
		if (r == 0)
			usleep(50 * 1000);
	}
	cr_assert_eq(r, em_child, "client process did not finish");
	em_child = -1;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "client process status %d", status);
	tloop_destroy(&t);
}
