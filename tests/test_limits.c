/*
 * Connection limits in tcpserver, in process over real loopback sockets:
 * over-limit connections are closed at once and counted, the others are
 * served, service resumes as connections close (however they close), the
 * per-source limit is independent of the global one, and IPv4-mapped IPv6
 * counts as the IPv4 address.  127.0.0.0/8 gives as many IPv4 sources as
 * a test needs.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"
#include "metrics.h"
#include "netutil.h"
#include "tcpserver.h"

struct lim {
	struct tloop t;
	struct tcpserver *srv;
	struct metrics_conn stats;
	int port;
	size_t echoed;			/* bytes the server echoed */
	int closes;			/* close callbacks run */
};

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct lim *l = arg;

	(void)s;
	(void)why;
	l->closes++;
}

/* Echoes; "q" makes the server close the connection itself. */
static void
echo_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct lim *l = arg;

	if (d[0] == 'q') {
		stream_close(s, STREAM_CLOSE_LOCAL);
		return;
	}
	stream_write(s, d, n, NULL);
	l->echoed += n;
	stream_read_bytes(s, 4096, true, echo_read);
}

static void
echo_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	(void)sa;
	(void)len;
	stream_set_callbacks(s, on_close, arg);
	stream_read_bytes(s, 4096, true, echo_read);
}

static void
lim_start(struct lim *l, struct tls_ctx *tls, size_t max, size_t per_source)
{
	char err[256];

	memset(l, 0, sizeof(*l));
	tloop_init(&l->t);
	l->srv = tcpserver_new(&l->t.sl, "limited", NULL, tls, echo_handle,
	    l);
	cr_assert_not_null(l->srv);
	tcpserver_set_stats(l->srv, &l->stats);
	cr_assert_eq(tcpserver_set_limits(l->srv, max, per_source), 0);
	cr_assert_eq(tcpserver_bind(l->srv, "127.0.0.1", 0, AF_UNSPEC,
	    NETUTIL_DEFAULT_BACKLOG, false, err, sizeof(err)), 0, "%s", err);
	tcpserver_start(l->srv);
	l->port = tcpserver_port(l->srv);
}

static void
lim_stop(struct lim *l)
{
	tcpserver_free(l->srv);
	tloop_run_for(&l->t, 0.05);
	cr_assert_eq(l->t.sl.live, 0);
	tloop_destroy(&l->t);
}

/* A blocking client from source address `src` (127.x.y.z) to `port`. */
static int
connect_from(const char *src, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct timeval tv = { 10, 0 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	cr_assert_eq(inet_pton(AF_INET, src, &a.sin_addr), 1);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0,
	    "bind %s: %s", src, strerror(errno));
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0,
	    "connect: %s", strerror(errno));
	return fd;
}

struct decided {
	struct lim *l;
	uint64_t before;
};

static bool
decided_pred(void *arg)
{
	struct decided *d = arg;

	return d->l->stats.accepted + d->l->stats.refused > d->before;
}

/* Waits until the server has taken (or refused) the connection just made. */
static void
wait_decided(struct lim *l, uint64_t before)
{
	struct decided d = { l, before };

	cr_assert(tloop_run_pred(&l->t, decided_pred, &d, 10),
	    "the server never accepted the connection");
}

struct echo_wait {
	struct lim *l;
	size_t want;
};

static bool
echo_pred(void *arg)
{
	struct echo_wait *e = arg;

	return e->l->echoed >= e->want;
}

/* Opens a client and asserts it is served (a round trip). */
static int
served(struct lim *l, const char *src)
{
	uint64_t before = l->stats.accepted + l->stats.refused;
	uint64_t acc = l->stats.accepted;
	int fd = src ? connect_from(src, l->port) :
	    connect_loopback(false, l->port);
	struct echo_wait e = { l, l->echoed + 4 };
	char buf[4];

	cr_assert_geq(fd, 0);
	wait_decided(l, before);
	cr_assert_eq(l->stats.accepted, acc + 1, "refused, expected served");
	cr_assert_eq(send(fd, "ping", 4, MSG_NOSIGNAL), 4);
	cr_assert(tloop_run_pred(&l->t, echo_pred, &e, 10));
	cr_assert_eq(recv(fd, buf, 4, MSG_WAITALL), 4);
	cr_assert_eq(memcmp(buf, "ping", 4), 0);
	return fd;
}

/* Opens a client and asserts it is closed at once without a byte. */
static void
refused(struct lim *l, const char *src)
{
	uint64_t before = l->stats.accepted + l->stats.refused;
	uint64_t ref = l->stats.refused;
	int fd = src ? connect_from(src, l->port) :
	    connect_loopback(false, l->port);
	char c;

	cr_assert_geq(fd, 0);
	wait_decided(l, before);
	cr_assert_eq(l->stats.refused, ref + 1, "served, expected refused");
	/* EOF, or a reset: either way, nothing. */
	cr_assert_leq(recv(fd, &c, 1, 0), 0);
	close(fd);
}

struct live_wait {
	struct lim *l;
	size_t live;
};

static bool
live_pred(void *arg)
{
	struct live_wait *w = arg;

	return tcpserver_live(w->l->srv) == w->live;
}

static void
wait_live(struct lim *l, size_t live)
{
	struct live_wait w = { l, live };

	cr_assert(tloop_run_pred(&l->t, live_pred, &w, 10),
	    "live %zu, expected %zu", tcpserver_live(l->srv), live);
}

Test(limits, global_limit_refuses_counts_and_resumes, .timeout = 30)
{
	struct lim l;
	int fd[3];

	lim_start(&l, NULL, 3, 0);
	for (int i = 0; i < 3; i++)
		fd[i] = served(&l, NULL);
	cr_assert_eq(tcpserver_live(l.srv), 3);
	refused(&l, NULL);
	refused(&l, NULL);
	cr_assert_eq(l.stats.refused, 2);
	/* Refused connections never became streams. */
	cr_assert_eq(l.stats.accepted, 3);
	cr_assert_eq(l.t.sl.live, 3);
	/* The live ones still flow. */
	cr_assert_eq(send(fd[0], "more", 4, MSG_NOSIGNAL), 4);
	struct echo_wait e = { &l, l.echoed + 4 };
	cr_assert(tloop_run_pred(&l.t, echo_pred, &e, 10));
	char buf[4];
	cr_assert_eq(recv(fd[0], buf, 4, MSG_WAITALL), 4);
	/* One closes: one more is served, then the limit holds again. */
	close(fd[1]);
	wait_live(&l, 2);
	fd[1] = served(&l, NULL);
	refused(&l, NULL);
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	wait_live(&l, 0);
	for (int i = 0; i < 3; i++)
		fd[i] = served(&l, NULL);
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	wait_live(&l, 0);
	cr_assert_eq(l.stats.accepted, 7);
	cr_assert_eq(l.stats.refused, 3);
	lim_stop(&l);
}

Test(limits, per_source_independent_of_global, .timeout = 30)
{
	struct lim l;
	int a[2], b[2], c;

	lim_start(&l, NULL, 5, 2);
	a[0] = served(&l, "127.0.0.1");
	a[1] = served(&l, "127.0.0.1");
	refused(&l, "127.0.0.1");
	/* Another source is not held back by the first one's limit. */
	b[0] = served(&l, "127.0.0.2");
	b[1] = served(&l, "127.0.0.2");
	refused(&l, "127.0.0.2");
	cr_assert_eq(tcpserver_sources(l.srv), 2);
	c = served(&l, "127.0.0.3");
	/* Five live: the global limit now refuses a fresh source. */
	refused(&l, "127.0.0.4");
	cr_assert_eq(tcpserver_sources(l.srv), 3);
	/* A source's entry goes with its last connection. */
	close(c);
	wait_live(&l, 4);
	cr_assert_eq(tcpserver_sources(l.srv), 2);
	c = served(&l, "127.0.0.4");
	close(a[0]);
	wait_live(&l, 4);
	close(c);
	a[0] = served(&l, "127.0.0.1");
	refused(&l, "127.0.0.1");
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	wait_live(&l, 0);
	cr_assert_eq(tcpserver_sources(l.srv), 0);
	cr_assert_eq(l.stats.refused, 4);
	lim_stop(&l);
}

/* Many sources: the table grows, and empties again. */
Test(limits, many_sources_table_grows_and_empties, .timeout = 60)
{
	enum { N = 100 };
	struct lim l;
	int fd[N];
	char src[32];

	lim_start(&l, NULL, 0, 1);
	for (int i = 0; i < N; i++) {
		snprintf(src, sizeof(src), "127.0.%d.%d", 1 + i / 50,
		    1 + i % 50);
		fd[i] = served(&l, src);
	}
	cr_assert_eq(tcpserver_sources(l.srv), N);
	for (int i = 0; i < N; i += 10) {
		snprintf(src, sizeof(src), "127.0.%d.%d", 1 + i / 50,
		    1 + i % 50);
		refused(&l, src);
	}
	for (int i = 0; i < N; i++)
		close(fd[i]);
	wait_live(&l, 0);
	cr_assert_eq(tcpserver_sources(l.srv), 0);
	cr_assert_eq(l.stats.refused, N / 10);
	lim_stop(&l);
}

/* The count goes down whatever closed the stream. */
Test(limits, count_follows_every_kind_of_close, .timeout = 30)
{
	struct lim l;
	struct linger lg = { 1, 0 };
	int fd;

	lim_start(&l, NULL, 1, 1);
	/* The server closes it. */
	fd = served(&l, NULL);
	cr_assert_eq(send(fd, "q", 1, MSG_NOSIGNAL), 1);
	wait_live(&l, 0);
	close(fd);
	/* The client resets it. */
	fd = served(&l, NULL);
	refused(&l, NULL);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	wait_live(&l, 0);
	/* The client closes it cleanly. */
	fd = served(&l, NULL);
	close(fd);
	wait_live(&l, 0);
	/* An idle timeout closes it (streams from now on get one). */
	struct stream_opts idle;
	stream_opts_default(&idle);
	idle.idle_timeout = 0.2;
	tcpserver_set_opts(l.srv, &idle);
	fd = served(&l, NULL);
	wait_live(&l, 0);
	close(fd);
	cr_assert_eq(tcpserver_sources(l.srv), 0);
	cr_assert_eq(l.closes, 4);
	lim_stop(&l);
}

/* Streams may outlive their server: the count goes with the last one. */
Test(limits, server_destroyed_before_its_streams, .timeout = 30)
{
	struct lim l;
	int fd[2];

	lim_start(&l, NULL, 4, 2);
	fd[0] = served(&l, "127.0.0.1");
	fd[1] = served(&l, "127.0.0.2");
	tcpserver_free(l.srv);
	/* Still served after the server is gone. */
	cr_assert_eq(send(fd[0], "late", 4, MSG_NOSIGNAL), 4);
	struct echo_wait e = { &l, l.echoed + 4 };
	cr_assert(tloop_run_pred(&l.t, echo_pred, &e, 10));
	close(fd[0]);
	close(fd[1]);
	tloop_run_for(&l.t, 0.1);
	cr_assert_eq(l.t.sl.live, 0);
	cr_assert_eq(l.closes, 2);
	tloop_destroy(&l.t);
}

/* IPv4-mapped IPv6 is the same source as IPv4; ::1 is another. */
Test(limits, mapped_ipv6_counts_as_ipv4, .timeout = 30)
{
	struct lim l;
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
	int off = 0, one = 1, lfd, mport, v6port, fd[2], v6;
	char err[256];
	int fds[2];

	lim_start(&l, NULL, 0, 1);
	/* A dual-stack socket on ::ffff:127.0.0.1 sees IPv4 clients mapped. */
	lfd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	cr_assert_geq(lfd, 0);
	setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr),
	    1);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0, "%s",
	    strerror(errno));
	cr_assert_eq(listen(lfd, 16), 0);
	mport = netutil_local_port(lfd);
	cr_assert_eq(netutil_bind_sockets("::1", 0, AF_INET6, 16, false, fds,
	    2, err, sizeof(err)), 1, "%s", err);
	v6port = netutil_local_port(fds[0]);
	fds[1] = lfd;
	cr_assert_eq(tcpserver_add_sockets(l.srv, fds, 2), 0);

	fd[0] = served(&l, "127.0.0.1");
	/* The same host through the mapped socket: over its limit. */
	l.port = mport;
	refused(&l, "127.0.0.1");
	/* Another IPv4 host through the mapped socket is fine. */
	fd[1] = served(&l, "127.0.0.9");
	cr_assert_eq(tcpserver_sources(l.srv), 2);
	/* ::1 is a source of its own. */
	uint64_t before = l.stats.accepted;
	v6 = connect_loopback(true, v6port);
	cr_assert_geq(v6, 0);
	wait_decided(&l, before + l.stats.refused);
	cr_assert_eq(l.stats.accepted, before + 1);
	cr_assert_eq(tcpserver_sources(l.srv), 3);
	close(v6);
	close(fd[0]);
	close(fd[1]);
	wait_live(&l, 0);
	cr_assert_eq(tcpserver_sources(l.srv), 0);
	lim_stop(&l);
}

/* ---- TLS: a refused connection costs no handshake ---- */

struct tls_client {
	int port;
	volatile bool done;
	bool ok;
	int fd;
	struct peer p;
};

static void *
tls_client_main(void *arg)
{
	struct tls_client *c = arg;
	char buf[4];

	c->fd = connect_loopback(false, c->port);
	if (c->fd >= 0) {
		peer_tls(&c->p, c->fd, "localhost", NULL, NULL);
		c->ok = peer_tls_handshake(&c->p) &&
		    peer_write(&c->p, "ping", 4) == 4 &&
		    peer_read_exact(&c->p, buf, 4) == 4 &&
		    memcmp(buf, "ping", 4) == 0;
	}
	c->done = true;
	return NULL;
}

static bool
tls_done(void *arg)
{
	return ((struct tls_client *)arg)->done;
}

Test(limits, tls_refused_before_handshake, .timeout = 30)
{
	struct tls_ctx *ctx = test_server_ctx(TLS_VERIFY_NONE);
	struct tls_client c = { 0 };
	struct peer p;
	pthread_t th;
	struct lim l;
	int fd;

	lim_start(&l, ctx, 1, 0);
	c.port = l.port;
	pthread_create(&th, NULL, tls_client_main, &c);
	cr_assert(tloop_run_pred(&l.t, tls_done, &c, 15));
	pthread_join(th, NULL);
	cr_assert(c.ok, "the first TLS client was not served");
	cr_assert_eq(l.stats.handshakes_ok, 1);
	/* The second is closed before the server reads its ClientHello. */
	fd = connect_loopback(false, l.port);
	cr_assert_geq(fd, 0);
	wait_decided(&l, l.stats.accepted + l.stats.refused);
	cr_assert_eq(l.stats.refused, 1);
	peer_tls(&p, fd, "localhost", NULL, NULL);
	cr_assert_not(peer_tls_handshake(&p));
	peer_close(&p);
	tloop_run_for(&l.t, 0.05);
	cr_assert_eq(l.stats.handshakes_failed, 0);
	cr_assert_eq(l.stats.handshakes_ok, 1);
	cr_assert_eq(l.stats.accepted, 1);
	cr_assert_eq(l.stats.refused, 1);
	peer_close(&c.p);
	wait_live(&l, 0);
	lim_stop(&l);
	tls_ctx_unref(ctx);
}

/* No limits set: nothing is counted or refused (and nothing allocated). */
Test(limits, unlimited_by_default, .timeout = 30)
{
	struct lim l;
	int fd[20];

	lim_start(&l, NULL, 0, 0);
	for (int i = 0; i < 20; i++)
		fd[i] = served(&l, "127.0.0.1");
	cr_assert_eq(l.stats.refused, 0);
	cr_assert_eq(tcpserver_live(l.srv), 0);
	for (int i = 0; i < 20; i++)
		close(fd[i]);
	tloop_run_for(&l.t, 0.1);
	lim_stop(&l);
}
