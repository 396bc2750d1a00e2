/*
 * Hostile peers end to end, the real binary on loopback: slowloris
 * crowds, garbage and lying length fields, consumers that ask for a uuid
 * and never accept its keys, resets at every stage, a flood against a low
 * open-files limit, and a flood of TLS key updates.  Each test keeps a
 * good client going (a relay pair, a forward echo) and checks outcomes:
 * it is served,
 * the bad connections are closed by the server and counted, the counters
 * of open connections, producers and consumers come back to zero, and
 * the server's memory does not follow what the attackers claim.
 *
 * Bounded everywhere: counts are fixed, every wait has a deadline, every
 * connection is the test's own and closed by it.  Time is never asserted,
 * except where elapsed time decides what to expect (slowloris: were the
 * crowd's connections still held when the good client was served?) and a
 * CPU tick count that tells a paused accept loop from a spinning one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"
#include "netutil.h"
#include "relayclient.h"

static struct ferry_proc fp;
static struct backend be;
struct flooder;
static struct flooder *flooding;	/* freed by the fixture */
static void flooder_free(struct flooder *f);

/* The crowd of bad connections a test holds (closed by the fixture). */
static int *crowd;
static size_t ncrowd;

static void
crowd_close(void)
{
	for (size_t i = 0; i < ncrowd; i++)
		if (crowd[i] >= 0)
			close(crowd[i]);
	free(crowd);
	crowd = NULL;
	ncrowd = 0;
}

static void
cleanup(void)
{
	crowd_close();
	if (flooding != NULL)
		flooder_free(flooding);
	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
}

/* "name{listener="L",mode="M"}" */
static double
metric(const char *name, const char *listener, const char *mode)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\",mode=\"%s\"}",
	    name, listener, mode);
	return ferry_metric(&fp, series);
}

/* Waits (15 s at most) for a series to read `want`. */
static void
expect_metric(const char *name, const char *listener, const char *mode,
    double want)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\",mode=\"%s\"}",
	    name, listener, mode);
	metric_expect(&fp, series, want, 15, 20);
}

/* A relay gauge or counter ("ferry_relay_*{listener="L"}"). */
static void
expect_relay(const char *name, const char *listener, long long want)
{
	char series[256];
	double end = now_s() + 15;
	long long v;

	snprintf(series, sizeof(series), "%s{listener=\"%s\"}", name,
	    listener);
	while ((v = rc_metric(ferry_port(&fp, "admin"), series)) != want &&
	    now_s() < end)
		usleep(20 * 1000);
	if (v != want)
		ferry_log_dump(&fp);
	cr_assert_eq(v, want, "%s is %lld, expected %lld", series, v, want);
}

/* ---- clients ---- */

/* Deterministic noise (xorshift32): the same garbage on every run. */
static uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * Connections waiting in the accept queue of the listener on `port`
 * (/proc/net/tcp: the rx_queue of a LISTEN socket), or -1.
 */
static long
accept_queue(int port)
{
	char line[512];
	long queued = -1;
	FILE *f = fopen("/proc/net/tcp", "r");

	if (f == NULL)
		return -1;
	while (queued < 0 && fgets(line, sizeof(line), f) != NULL) {
		unsigned lport, state;
		unsigned long rx;
		if (sscanf(line, " %*d: %*8x:%x %*8x:%*x %x %*x:%lx", &lport,
		    &state, &rx) == 3 && state == 0x0a && (int)lport == port)
			queued = (long)rx;
	}
	fclose(f);
	return queued;
}

/*
 * n non-blocking connections to 127.0.0.1:port, made BATCH at a time,
 * each batch once the server's accept queue has room for it: a full
 * queue drops SYNs, and a dropped SYN costs a second.
 * fds[i] is -1 where a connect failed; returns how many connected.
 */
static size_t
open_many(int port, int *fds, size_t n)
{
	enum { BATCH = 64 };
	struct sockaddr_in in;
	size_t ok = 0;

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons((uint16_t)port);
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (size_t base = 0; base < n; base += BATCH) {
		size_t k = n - base < BATCH ? n - base : BATCH;
		struct pollfd pf[BATCH];
		/* Room for a batch even in a queue of 128. */
		double wait_end = now_s() + 10;
		while (accept_queue(port) > 128 - BATCH && now_s() < wait_end)
			usleep(1000);
		for (size_t i = 0; i < k; i++) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
			    SOCK_CLOEXEC, 0);
			cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
			if (connect(fd, (struct sockaddr *)&in, sizeof(in)) < 0
			    && errno != EINPROGRESS) {
				close(fd);
				fd = -1;
			}
			fds[base + i] = fd;
			pf[i].fd = fd;
			pf[i].events = POLLOUT;
		}
		double end = now_s() + 15;
		size_t pending = k;
		while (pending > 0 && now_s() < end) {
			if (poll(pf, k, 100) <= 0)
				continue;
			for (size_t i = 0; i < k; i++) {
				if (pf[i].fd < 0 || pf[i].revents == 0)
					continue;
				int err = 0;
				socklen_t len = sizeof(err);
				getsockopt(pf[i].fd, SOL_SOCKET, SO_ERROR, &err,
				    &len);
				if (err != 0) {
					close(pf[i].fd);
					fds[base + i] = -1;
				} else {
					ok++;
				}
				pf[i].fd = -1;
				pending--;
			}
		}
	}
	return ok;
}

/* Sends all of a small message on a non-blocking socket. */
static void
send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			cr_assert_gt(poll(&pf, 1, 10000), 0, "send stalled");
			continue;
		}
		cr_assert_gt(n, 0, "send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/*
 * Whether the server has closed each connection (EOF or reset; whatever
 * it sent before is read and dropped).  Polls until all of them are
 * closed or `timeout` passes; closed[i] says which; returns how many.
 */
static size_t
wait_closed(const int *fds, bool *closed, size_t n, double timeout)
{
	struct pollfd *pf = calloc(n, sizeof(*pf));
	double end = now_s() + timeout;
	size_t done = 0;
	char buf[4096];

	cr_assert_not_null(pf);
	for (size_t i = 0; i < n; i++) {
		if (closed[i] || fds[i] < 0) {
			if (!closed[i])
				closed[i] = true;
			done++;
		}
	}
	for (;;) {
		for (size_t i = 0; i < n; i++) {
			pf[i].fd = closed[i] ? -1 : fds[i];
			pf[i].events = POLLIN | POLLRDHUP;
			pf[i].revents = 0;
		}
		if (done == n)
			break;
		double left = end - now_s();
		if (left <= 0)
			break;
		if (poll(pf, n, (int)(left * 1000) + 1) <= 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (pf[i].fd < 0 || pf[i].revents == 0)
				continue;
			ssize_t r;
			while ((r = recv(fds[i], buf, sizeof(buf),
			    MSG_DONTWAIT)) > 0)
				;
			if (r == 0 || (r < 0 && errno != EAGAIN &&
			    errno != EINTR)) {
				closed[i] = true;
				done++;
			}
		}
	}
	free(pf);
	return done;
}

/* How many are already closed, without waiting. */
static size_t
count_closed_now(const int *fds, size_t n)
{
	bool *closed = calloc(n, sizeof(*closed));
	size_t c;

	cr_assert_not_null(closed);
	c = wait_closed(fds, closed, n, 0);
	free(closed);
	return c;
}

/*
 * A real ClientHello (what OpenSSL would send to "localhost"), made
 * without a socket: the bytes a stalled TLS client sends half of.
 */
static size_t
client_hello(uint8_t *out, size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	SSL *ssl;
	int n;

	cr_assert(ctx != NULL && rb != NULL && wb != NULL);
	ssl = SSL_new(ctx);
	cr_assert_not_null(ssl);
	SSL_set_bio(ssl, rb, wb);
	SSL_set_tlsext_host_name(ssl, "localhost");
	cr_assert_neq(SSL_connect(ssl), 1);
	n = BIO_read(wb, out, (int)cap);
	cr_assert_gt(n, 100, "no ClientHello");
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return (size_t)n;
}

/* The good clients: a relay pair and a forward echo. */
struct witness {
	bool tls;
	int port;
	struct rclient p, c;
	char uuid[64];
	uint32_t seq;			/* next frame to send */
	uint32_t next;			/* next frame the consumer expects */
};

static void
witness_start(struct witness *w, bool tls, int port, const char *uuid)
{
	char needle[128];

	memset(w, 0, sizeof(*w));
	w->tls = tls;
	w->port = port;
	snprintf(w->uuid, sizeof(w->uuid), "%s", uuid);
	snprintf(needle, sizeof(needle), " joined uuid '%s'", uuid);
	int before = ferry_log_count(&fp, needle);
	cr_assert_eq(rc_producer(&w->p, tls, port, uuid, "a,b,c"), RC_OK,
	    "witness producer %s refused", uuid);
	cr_assert_eq(rc_consumer(&w->c, tls, port, uuid, 0), RC_OK,
	    "witness consumer %s refused", uuid);
	/* Its accept byte is not acknowledged: the log says when it is in,
	 * and the frames sent from then on are its own. */
	cr_assert(ferry_log_wait(&fp, needle, before + 1, 15), "the good "
	    "consumer of %s never joined", uuid);
}

/*
 * n more frames through the pair; the consumer reads everything sent so
 * far, every frame, in order.
 */
static void
witness_ok(struct witness *w, size_t n)
{
	uint32_t seqs[64];
	bool torn = false;

	cr_assert(rc_send_frames(&w->p, w->seq, n));
	w->seq += (uint32_t)n;
	while (w->next != w->seq) {
		size_t k = w->seq - w->next < 64 ? w->seq - w->next : 64;
		size_t got = rc_read_frames(&w->c, k, seqs, &torn);
		cr_assert_not(torn, "a torn frame");
		cr_assert_eq(got, k, "the good consumer got %zu of %zu frames",
		    got, k);
		for (size_t i = 0; i < k; i++)
			cr_assert_eq(seqs[i], w->next + i, "frame %u, not %u",
			    seqs[i], w->next + (uint32_t)i);
		w->next += (uint32_t)k;
	}
}

static void
witness_close(struct witness *w)
{
	rc_close(&w->p);
	rc_close(&w->c);
}

/* A forward client through [web]: TLS, one message echoed. */
static void
echo_ok(int port, const char *msg)
{
	struct peer p;
	char buf[256];
	size_t n = strlen(msg);
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_tls(&p, fd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&p), "the good client's handshake "
	    "failed");
	cr_assert_eq(peer_write(&p, msg, n), n);
	cr_assert_eq(peer_read_exact(&p, buf, n), n, "no echo for the good "
	    "client");
	cr_assert_eq(memcmp(buf, msg, n), 0);
	peer_close(&p);
}

/*
 * [relay] plain, [relay-tls] and [web] (forward, TLS, to an echo
 * backend), all with `timeout` seconds to register or shake hands.
 */
static void
start_three(double timeout, long nofile)
{
	char conf[2048];
	struct ferry_opts o = { .nofile = nofile };

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "handshake_timeout = %g\n"
	    "[relay-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nhandshake_timeout = %g\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n"
	    "handshake_timeout = %g\n",
	    timeout, CERT("server.pem"), CERT("server.key"), timeout,
	    CERT("server.pem"), CERT("server.key"), be.port, timeout);
	ferry_start_opts(&fp, conf, &o);
}

/* The test process needs room for its crowd too. */
static void
need_fds(size_t n)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < n + 256) {
		if (rl.rlim_max < n + 256)
			cr_skip_test("RLIMIT_NOFILE %lu is too low for %zu "
			    "connections", (unsigned long)rl.rlim_max, n);
		rl.rlim_cur = n + 256;
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
}

/* ---- slowloris ---- */

#define SLOW_N 2000
#define SLOW_TIMEOUT 8.0

/*
 * 2,000 clients that connect and stall: silent, or stopped after the
 * relay's first byte and half a length, or half way through a TLS
 * ClientHello.  While they are held a good relay pair (plain and TLS)
 * and a forward client are served; then the server closes every one of
 * them at its timeout, and counts them.
 */
Test(hostile, slowloris_two_thousand_held_then_closed, .timeout = 120,
    .fini = cleanup)
{
	static bool closed[SLOW_N];
	uint8_t hello[2048];
	size_t hlen = client_hello(hello, sizeof(hello));
	struct witness plain, tls;
	long rss_idle, rss_held;

	need_fds(SLOW_N);
	start_three(SLOW_TIMEOUT, SLOW_N + 1000);
	int relay = ferry_port(&fp, "relay");
	int relay_tls = ferry_port(&fp, "relay-tls");
	int web = ferry_port(&fp, "web");
	rss_idle = proc_rss_kb(fp.pid);

	crowd = malloc(SLOW_N * sizeof(*crowd));
	cr_assert_not_null(crowd);
	ncrowd = SLOW_N;
	/* 1000 on the relay, 500 on the TLS relay, 500 on [web]. */
	double t0 = now_s();
	cr_assert_eq(open_many(relay, crowd, 1000), 1000);
	cr_assert_eq(open_many(relay_tls, crowd + 1000, 500), 500);
	cr_assert_eq(open_many(web, crowd + 1500, 500), 500);
	for (size_t i = 0; i < SLOW_N; i++) {
		if (i < 1000) {
			/* Relay: half silent, half the role and 2 of 4
			 * length bytes (producers and consumers). */
			if (i % 2)
				send_all(crowd[i], i % 4 == 1 ? "\x0a\x00\x00" :
				    "\x0b\x00\x00", 3);
		} else if (i % 2) {
			send_all(crowd[i], hello, hlen / 2);
		}
	}
	double t_held = now_s();

	/* All held at once. */
	expect_metric("ferry_connections_active", "relay", "relay", 1000);
	expect_metric("ferry_connections_active", "relay-tls", "relay", 500);
	expect_metric("ferry_connections_active", "web", "forward", 500);
	rss_held = proc_rss_kb(fp.pid);

	/* Good clients are served meanwhile. */
	witness_start(&plain, false, relay, "good-plain");
	witness_start(&tls, true, relay_tls, "good-tls");
	witness_ok(&plain, 50);
	witness_ok(&tls, 50);
	echo_ok(web, "served while 2000 stall");
	double t_served = now_s();
	size_t early = count_closed_now(crowd, SLOW_N);
	if (t_served - t0 < SLOW_TIMEOUT)
		cr_assert_eq(early, 0, "%zu stalled clients closed before "
		    "their timeout", early);
	else
		cr_log_warn("the machine is slow: %zu of the crowd timed out "
		    "before the good clients were through", early);

	/* Then the server closes every one of them. */
	size_t n = wait_closed(crowd, closed, SLOW_N, 60);
	cr_assert_eq(n, SLOW_N, "%zu of %d stalled clients still open", n,
	    SLOW_N);
	witness_ok(&plain, 10);
	witness_ok(&tls, 10);
	echo_ok(web, "and after");
	witness_close(&plain);
	witness_close(&tls);

	/* Counted: every one accepted and closed; TLS ones as failed
	 * handshakes. */
	expect_metric("ferry_connections_active", "relay", "relay", 0);
	expect_metric("ferry_connections_active", "relay-tls", "relay", 0);
	expect_metric("ferry_connections_active", "web", "forward", 0);
	cr_assert_eq(metric("ferry_connections_accepted_total", "relay",
	    "relay"), 1000 + 2);
	cr_assert_eq(metric("ferry_connections_accepted_total", "relay-tls",
	    "relay"), 500 + 2);
	cr_assert_eq(metric("ferry_connections_accepted_total", "web",
	    "forward"), 500 + 2);
	cr_assert_eq(metric("ferry_tls_handshake_failures_total", "relay-tls",
	    "relay"), 500);
	cr_assert_eq(metric("ferry_tls_handshake_failures_total", "web",
	    "forward"), 500);
	expect_relay("ferry_relay_producers", "relay", 0);
	expect_relay("ferry_relay_consumers", "relay", 0);
	cr_assert(proc_alive(fp.pid));
	cr_log_info("slowloris: %d held for %.1f s; RSS %ld kB idle, %ld kB "
	    "holding them", SLOW_N, t_served - t_held, rss_idle, rss_held);
	fprintf(stderr, "hostile: slowloris %d held, RSS %ld kB idle, %ld kB "
	    "with them held\n", SLOW_N, rss_idle, rss_held);
	crowd_close();
}

/* ---- garbage ---- */

#define GARBAGE_N 150

/* Opens n connections, sends each its garbage, waits for every close. */
static void
garbage_round(int port, size_t n, uint32_t *seed, size_t *protocol_errors)
{
	static uint8_t buf[4096];
	bool *closed = calloc(n, sizeof(*closed));

	crowd = malloc(n * sizeof(*crowd));
	cr_assert(crowd != NULL && closed != NULL);
	ncrowd = n;
	cr_assert_eq(open_many(port, crowd, n), n);
	for (size_t i = 0; i < n; i++) {
		size_t len = 1 + rnd(seed) % sizeof(buf);
		for (size_t k = 0; k < len; k++)
			buf[k] = (uint8_t)rnd(seed);
		if (protocol_errors != NULL) {
			/* The relay: any first byte but a role is a protocol
			 * error, and counted as one. */
			while (buf[0] == 0x0a || buf[0] == 0x0b)
				buf[0] = (uint8_t)rnd(seed);
			(*protocol_errors)++;
		}
		send_all(crowd[i], buf, len);
	}
	size_t c = wait_closed(crowd, closed, n, 30);
	cr_assert_eq(c, n, "%zu of %zu garbage clients left open", n - c, n);
	free(closed);
	crowd_close();
}

#define ALERT_RECORD_OVERFLOW 22

/*
 * A TLS record header claiming `len` bytes; the answer must be an alert.
 * Returns its description.
 */
static int
bad_record_before_handshake(int port, uint8_t type, unsigned len)
{
	uint8_t hdr[5] = { type, 0x03, 0x01, (uint8_t)(len >> 8),
	    (uint8_t)len }, ans[7];
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0);
	cr_assert_eq(send(fd, hdr, 5, MSG_NOSIGNAL), 5);
	/* Only the header: a server waiting for the body would close at
	 * its handshake timeout, without an alert. */
	ssize_t n = recv(fd, ans, sizeof(ans), MSG_WAITALL);
	close(fd);
	cr_assert_eq(n, 7, "no alert for a record of %u bytes", len);
	cr_assert_eq(ans[0], 0x15, "answered %u with record type %d", len,
	    ans[0]);
	return ans[6];
}

/*
 * After a real handshake, an application data record header claiming
 * `len` bytes, written under OpenSSL's feet: the server must fail the
 * connection with an alert at once.
 */
static void
bad_record_after_handshake(int port, unsigned len, bool relay)
{
	struct peer p;
	uint8_t hdr[5] = { 0x17, 0x03, 0x03, (uint8_t)(len >> 8),
	    (uint8_t)len };
	char c;

	peer_tls(&p, connect_loopback(false, port), "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&p));
	if (relay) {
		/* Registration under way: the server reads on. */
		cr_assert_eq(peer_write(&p, "\x0a", 1), 1);
		cr_assert_eq(peer_read_exact(&p, &c, 1), 1);
	}
	cr_assert_eq(send(p.fd, hdr, 5, MSG_NOSIGNAL), 5);
	ERR_clear_error();
	size_t got;
	int r = SSL_read_ex(p.ssl, &c, 1, &got);
	int e = SSL_get_error(p.ssl, r);
	unsigned long err = ERR_peek_last_error();
	cr_assert_eq(r, 0, "the server took a record of %u bytes", len);
	/* Nothing of ours is left unread on its side, so its alert is not
	 * overtaken by a reset. */
	cr_assert_eq(e, SSL_ERROR_SSL, "SSL error %d, not an alert", e);
	cr_assert_eq(ERR_GET_REASON(err), SSL_R_TLSV1_ALERT_RECORD_OVERFLOW,
	    "a record of %u bytes: %s", len, ERR_reason_error_string(err));
	ERR_clear_error();
	peer_close(&p);
}

/* role, then a length of 4 GB for the uuid (or the keys). */
static void
claim_4gb(int port, bool tls, int role, bool keys)
{
	struct rclient x;
	static uint8_t junk[65536];
	uint8_t ans[3];
	size_t want;

	cr_assert_eq(rc_connect(&x, tls, port, 0), 0);
	cr_assert(rc_send_byte(&x, role));
	if (keys) {
		cr_assert(rc_send_field(&x, "u-4gb", 5));
		want = 3;
	} else {
		want = 2;
	}
	cr_assert(rc_send_u32(&x, 0xffffffffu));
	/* A start on the 4 GB: refused before any of it is kept. */
	(void)rc_write(&x, junk, sizeof(junk), 1);
	cr_assert(rc_read_exact(&x, ans, want), "no answer to a 4 GB claim");
	cr_assert_eq(ans[want - 1], 0x01, "a 4 GB claim was not refused");
	cr_assert(rc_closed(&x, RC_TIMEOUT), "not closed after the refusal");
	rc_close(&x);
}

Test(hostile, garbage_and_lying_lengths, .timeout = 180, .fini = cleanup)
{
	struct witness plain, tls;
	uint32_t seed = 0x5eed1234;
	size_t perr = 0;
	long rss0, rss1;
	int alert;

	need_fds(GARBAGE_N);
	start_three(3, 0);
	int relay = ferry_port(&fp, "relay");
	int relay_tls = ferry_port(&fp, "relay-tls");
	int web = ferry_port(&fp, "web");
	witness_start(&plain, false, relay, "good-plain");
	witness_start(&tls, true, relay_tls, "good-tls");
	rss0 = proc_rss_kb(fp.pid);

	/* Random bytes: 150 connections to each port. */
	garbage_round(relay, GARBAGE_N, &seed, &perr);
	witness_ok(&plain, 10);
	garbage_round(relay_tls, GARBAGE_N, &seed, NULL);
	witness_ok(&tls, 10);
	garbage_round(web, GARBAGE_N, &seed, NULL);
	echo_ok(web, "after the garbage");
	expect_relay("ferry_relay_protocol_errors_total", "relay",
	    (long long)perr);
	expect_metric("ferry_tls_handshake_failures_total", "relay-tls",
	    "relay", GARBAGE_N);
	expect_metric("ferry_tls_handshake_failures_total", "web", "forward",
	    GARBAGE_N);

	/* TLS records longer than any record may be (2^14 + 2048 is the
	 * TLS 1.2 ciphertext limit), before and after the handshake. */
	int ports[2] = { web, relay_tls };
	for (int i = 0; i < 2; i++) {
		alert = bad_record_before_handshake(ports[i], 0x16, 18433);
		cr_assert_eq(alert, ALERT_RECORD_OVERFLOW, "alert %d", alert);
		alert = bad_record_before_handshake(ports[i], 0x16, 0xffff);
		cr_assert_eq(alert, ALERT_RECORD_OVERFLOW, "alert %d", alert);
		(void)bad_record_before_handshake(ports[i], 0x17, 0xffff);
		bad_record_after_handshake(ports[i], 18433, i == 1);
		bad_record_after_handshake(ports[i], 0xffff, i == 1);
	}
	witness_ok(&tls, 10);
	echo_ok(web, "after the long records");

	/* Lengths of 4 GB, 50 times each for uuid and keys, plain and TLS. */
	for (int i = 0; i < 50; i++) {
		claim_4gb(relay, false, i % 2 ? 0x0a : 0x0b, false);
		claim_4gb(relay, false, 0x0a, true);
		claim_4gb(relay_tls, true, i % 2 ? 0x0a : 0x0b, false);
		claim_4gb(relay_tls, true, 0x0a, true);
		if (i % 10 == 9) {
			witness_ok(&plain, 5);
			witness_ok(&tls, 5);
		}
	}
	expect_relay("ferry_relay_refused_total", "relay", 100);
	expect_relay("ferry_relay_refused_total", "relay-tls", 100);
	rss1 = proc_rss_kb(fp.pid);
	/*
	 * 200 claims of 4 GB, each followed by 64 KB it could have kept:
	 * memory does not follow them.  (Not under AddressSanitizer, whose
	 * quarantine keeps freed memory resident on purpose.)
	 */
#ifndef __SANITIZE_ADDRESS__
	cr_assert_lt(rss1 - rss0, 32 * 1024, "RSS grew from %ld to %ld kB",
	    rss0, rss1);
#endif

	witness_ok(&plain, 10);
	witness_ok(&tls, 10);
	echo_ok(web, "at the end");
	witness_close(&plain);
	witness_close(&tls);
	expect_metric("ferry_connections_active", "relay", "relay", 0);
	expect_metric("ferry_connections_active", "relay-tls", "relay", 0);
	expect_metric("ferry_connections_active", "web", "forward", 0);
	expect_relay("ferry_relay_producers", "relay", 0);
	expect_relay("ferry_relay_consumers", "relay-tls", 0);
	fprintf(stderr, "hostile: garbage: RSS %ld kB before, %ld kB after "
	    "200 claims of 4 GB\n", rss0, rss1);
}

/* ---- consumer squatters ---- */

#define SQUAT_N 400
#define SQUAT_REAL 64			/* max_consumers by default */
#define SQUAT_TIMEOUT 8.0

/*
 * Reads up to n bytes from a non-blocking socket within `timeout`;
 * returns how many, with *eof set if the server closed (EOF or reset).
 */
static size_t
recv_upto(int fd, uint8_t *buf, size_t n, double timeout, bool *eof)
{
	double end = now_s() + timeout;
	size_t got = 0;

	*eof = false;
	while (got < n) {
		ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
			*eof = true;
			break;
		}
		double left = end - now_s();
		if (left <= 0)
			break;
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		(void)poll(&pf, 1, (int)(left * 1000) + 1);
	}
	return got;
}

/* Every real consumer reads frames first .. first + n - 1, in order. */
static void
real_consumers_read(struct rclient *cs, size_t nc, uint32_t first, size_t n)
{
	uint32_t seqs[64];
	bool torn = false;

	cr_assert_leq(n, 64);
	for (size_t i = 0; i < nc; i++) {
		size_t got = rc_read_frames(&cs[i], n, seqs, &torn);
		cr_assert_not(torn, "consumer %zu: a torn frame", i);
		cr_assert_eq(got, n, "consumer %zu got %zu of %zu frames", i,
		    got, n);
		for (size_t k = 0; k < n; k++)
			cr_assert_eq(seqs[k], first + k, "consumer %zu: frame "
			    "%u, not %zu", i, seqs[k], first + k);
	}
}

/*
 * 400 consumers of one uuid that send their uuid, read the keys and
 * never accept them: they hold no slot.  While they wait, max_consumers
 * (64) real consumers, plain and TLS, get the keys and every frame, and
 * the 65th is refused at its uuid.  Then half the crowd accepts while the
 * slots are full: each is closed without a byte past its keys (counted as
 * refused); the other half is closed at the registration deadline.
 */
Test(hostile, consumer_squatters_hold_no_slot, .timeout = 180,
    .fini = cleanup)
{
	static struct rclient real[SQUAT_REAL];
	static bool closed[SQUAT_N];
	static const uint8_t ask[] = { 0x0b, 0, 0, 0, 5, 'p', 'r', 'i', 'z',
	    'e' };
	static const uint8_t keys[] = { 0x00, 0, 0, 0, 3, 'x', ',', 'y' };
	struct witness plain, tls;
	struct rclient p, x;
	uint8_t buf[16];
	size_t keyed = 0;
	bool eof;

	need_fds(SQUAT_N + SQUAT_REAL);
	start_three(SQUAT_TIMEOUT, 0);
	int relay = ferry_port(&fp, "relay");
	int relay_tls = ferry_port(&fp, "relay-tls");
	witness_start(&plain, false, relay, "good-plain");
	witness_start(&tls, true, relay_tls, "good-tls");
	cr_assert_eq(rc_producer(&p, false, relay, "prize", "x,y"), RC_OK);

	crowd = malloc(SQUAT_N * sizeof(*crowd));
	cr_assert_not_null(crowd);
	ncrowd = SQUAT_N;
	double t0 = now_s();
	cr_assert_eq(open_many(relay, crowd, SQUAT_N), SQUAT_N);
	for (size_t i = 0; i < SQUAT_N; i++)
		send_all(crowd[i], ask, sizeof(ask));
	for (size_t i = 0; i < SQUAT_N; i++) {
		/* The role's 0x00, then the uuid's 0x00 and the keys. */
		size_t n = recv_upto(crowd[i], buf, 1 + sizeof(keys), 10, &eof);
		keyed += n == 1 + sizeof(keys) && buf[0] == 0x00 &&
		    memcmp(buf + 1, keys, sizeof(keys)) == 0;
	}

	/* The real consumers, half plain, half TLS, are served. */
	for (int i = 0; i < SQUAT_REAL; i++) {
		int r = rc_consumer(&real[i], i % 2, i % 2 ? relay_tls : relay,
		    "prize", 0);
		cr_assert_eq(r, RC_OK, "real consumer %d: %d (refused at step "
		    "%d) while %zu squatters wait", i, r, real[i].refused_at,
		    keyed);
	}
	cr_assert_eq(keyed, SQUAT_N, "%zu of %d squatters got the keys",
	    keyed, SQUAT_N);
	expect_relay("ferry_relay_consumers", "relay", 1 + SQUAT_REAL / 2);
	expect_relay("ferry_relay_consumers", "relay-tls", 1 + SQUAT_REAL / 2);
	cr_assert_eq(rc_consumer(&x, false, relay, "prize", 0), RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	rc_close(&x);
	double t_accept = now_s();
	bool in_time = t_accept - t0 < SQUAT_TIMEOUT;
	if (in_time)
		cr_assert_eq(rc_metric(ferry_port(&fp, "admin"),
		    "ferry_relay_consumers_pending{listener=\"relay\"}"),
		    SQUAT_N, "the squatters are not all pending");
	cr_assert(rc_send_frames(&p, 0, 20));
	real_consumers_read(real, SQUAT_REAL, 0, 20);
	witness_ok(&plain, 10);
	witness_ok(&tls, 10);

	/* Half the crowd accepts now: closed with nothing past the keys. */
	for (size_t i = 0; i < SQUAT_N; i += 2)
		send_all(crowd[i], "\x00", 1);
	for (size_t i = 0; i < SQUAT_N; i += 2) {
		size_t n = recv_upto(crowd[i], buf, sizeof(buf), 30, &eof);
		cr_assert(eof && n == 0, "squatter %zu, accepting over the "
		    "limit, got %zu bytes%s", i, n, eof ? "" : " and no close");
		closed[i] = true;
	}
	cr_assert(rc_send_frames(&p, 20, 20));
	real_consumers_read(real, SQUAT_REAL, 20, 20);
	if (in_time)
		expect_relay("ferry_relay_refused_total", "relay",
		    SQUAT_N / 2 + 1);
	else
		cr_log_warn("the machine is slow: the squatters reached their "
		    "deadline before they accepted");

	/* The rest never accepts: closed at the registration deadline. */
	size_t n = wait_closed(crowd, closed, SQUAT_N, 60);
	cr_assert_eq(n, SQUAT_N, "%zu of %d squatters still open", SQUAT_N - n,
	    SQUAT_N);
	expect_relay("ferry_relay_consumers_pending", "relay", 0);
	expect_relay("ferry_relay_consumers", "relay", 1 + SQUAT_REAL / 2);
	cr_assert(rc_send_frames(&p, 40, 5));
	real_consumers_read(real, SQUAT_REAL, 40, 5);
	witness_ok(&plain, 10);
	witness_ok(&tls, 10);

	for (int i = 0; i < SQUAT_REAL; i++)
		rc_close(&real[i]);
	rc_close(&p);
	witness_close(&plain);
	witness_close(&tls);
	crowd_close();
	expect_metric("ferry_connections_active", "relay", "relay", 0);
	expect_metric("ferry_connections_active", "relay-tls", "relay", 0);
	expect_relay("ferry_relay_consumers", "relay", 0);
	expect_relay("ferry_relay_consumers", "relay-tls", 0);
	expect_relay("ferry_relay_devices", "relay", 0);
	cr_assert(proc_alive(fp.pid));
	fprintf(stderr, "hostile: %d consumer squatters, %d real consumers "
	    "served; accepts sent %.1f s after the crowd connected\n",
	    SQUAT_N, SQUAT_REAL, t_accept - t0);
}

/* ---- resets ---- */

/* SO_LINGER 0, then close: an RST, not a FIN. */
static void
reset_fd(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/*
 * A TLS client reset in its handshake: after half a ClientHello, or
 * after the whole of it once the server has answered (it then waits for
 * the client's Finished).
 */
static void
reset_mid_handshake(int port, bool answered, const uint8_t *hello,
    size_t hlen)
{
	int fd = connect_loopback(false, port);
	size_t n = answered ? hlen : hlen / 2;

	cr_assert_geq(fd, 0);
	cr_assert_eq(send(fd, hello, n, MSG_NOSIGNAL), (ssize_t)n);
	if (answered) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		cr_assert_eq(poll(&pf, 1, 10000), 1, "the server did not "
		    "answer the ClientHello");
	}
	reset_fd(fd);
}

/* A relay producer reset after `cut` bytes of its registration. */
static void
producer_reset_at(int port, bool tls, size_t cut)
{
	static const uint8_t reg[] = {
		0x0a, 0, 0, 0, 6, 'g', 'o', 'n', 'e', '-', 'p',
		0, 0, 0, 5, 'x', ',', 'y', ',', 'z',
	};
	struct rclient x;

	cr_assert_eq(rc_connect(&x, tls, port, 0), 0);
	cr_assert_lt(cut, sizeof(reg));
	cr_assert(rc_send(&x, reg, cut));
	rc_reset(&x);
}

/* A registered producer reset half way through a frame. */
static void
producer_reset_mid_frame(int port, bool tls, int k)
{
	struct rclient x;
	uint8_t fr[12 * 2];
	char uuid[32];

	snprintf(uuid, sizeof(uuid), "mid-frame-%d", k);
	cr_assert_eq(rc_producer(&x, tls, port, uuid, "x,y,z"), RC_OK);
	rc_frame(fr, 3, 0);
	rc_frame(fr + 12, 3, 1);
	cr_assert(rc_send(&x, fr, 12 + 7));
	rc_reset(&x);
}

/*
 * A consumer of the witness's uuid reset while frames are queued for it
 * (its receive window kept small so they pile up in the server).
 */
static void
consumer_reset_mid_stream(struct witness *w)
{
	struct rclient x;

	cr_assert_eq(rc_consumer(&x, w->tls, w->port, w->uuid, 4096), RC_OK);
	cr_assert(rc_send_frames(&w->p, w->seq, 40));
	w->seq += 40;
	rc_reset(&x);
}

/* A forward client reset with 256 KB of echo coming back unread. */
static void
forward_reset_mid_stream(int port)
{
	static uint8_t buf[256 * 1024];
	struct peer p;
	int small = 4096;
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	peer_tls(&p, fd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&p));
	fill_pattern(buf, sizeof(buf), 0, 3);
	/* As much as goes without reading: the rest is the backend's. */
	cr_assert_eq(netutil_set_nonblock(fd), 0);
	size_t put = 0;
	ERR_clear_error();
	while (put < sizeof(buf) && SSL_write_ex(p.ssl, buf, 16384, &put) == 1)
		;
	ERR_clear_error();
	SSL_free(p.ssl);
	SSL_CTX_free(p.ctx);
	reset_fd(fd);
}

Test(hostile, resets_at_every_stage, .timeout = 180, .fini = cleanup)
{
	enum { ROUNDS = 40 };
	struct witness w[2];
	uint8_t hello[2048];
	size_t hlen = client_hello(hello, sizeof(hello));

	start_three(10, 0);
	int ports[2] = { ferry_port(&fp, "relay"),
	    ferry_port(&fp, "relay-tls") };
	const char *names[2] = { "relay", "relay-tls" };
	int web = ferry_port(&fp, "web");
	witness_start(&w[0], false, ports[0], "good-plain");
	witness_start(&w[1], true, ports[1], "good-tls");

	for (int r = 0; r < ROUNDS; r++) {
		for (int t = 0; t < 2; t++) {
			producer_reset_at(ports[t], t == 1,
			    1 + (size_t)r % 19);
			producer_reset_mid_frame(ports[t], t == 1, r);
			consumer_reset_mid_stream(&w[t]);
		}
		reset_mid_handshake(ports[1], r % 2, hello, hlen);
		reset_mid_handshake(web, r % 2, hello, hlen);
		forward_reset_mid_stream(web);
		if (r % 10 == 9) {
			/* Every frame since, the ones the reset consumers
			 * left behind included. */
			witness_ok(&w[0], 10);
			witness_ok(&w[1], 10);
			echo_ok(web, "between the resets");
		}
	}
	witness_close(&w[0]);
	witness_close(&w[1]);

	/* Nothing leaked: no connection, producer, consumer or uuid. */
	for (int t = 0; t < 2; t++) {
		expect_metric("ferry_connections_active", names[t], "relay", 0);
		expect_relay("ferry_relay_producers", names[t], 0);
		expect_relay("ferry_relay_consumers", names[t], 0);
		expect_relay("ferry_relay_devices", names[t], 0);
	}
	expect_metric("ferry_connections_active", "web", "forward", 0);
	/* And the backend side of every forward connection is closed. */
	double end = now_s() + 15;
	while (be.active > 0 && now_s() < end)
		usleep(20 * 1000);
	cr_assert_eq(be.active, 0, "%d backend connections left open",
	    be.active);
	cr_assert_eq(metric("ferry_tls_handshake_failures_total", "web",
	    "forward"), ROUNDS);
	cr_assert(proc_alive(fp.pid));
}

/* ---- bursts against small queues ---- */

#define FAN_READERS 15			/* per listener: 30 in all */
#define FAN_KEYS 52			/* 208-byte frames */
#define FAN_FRAMES 200			/* 41,600 bytes in one write */
#define FAN_BURSTS 128			/* 5.3 MB: past the kernel's 4 MB
					   send buffer for the stalled ones */

/*
 * A producer's bursts of 200 frames (41.6 KB, one write each) to 30
 * consumers that keep reading, half over plain TCP and half over TLS, on
 * listeners with queue_bytes = 8k: five times the queue, but the kernel
 * takes it.  Every consumer that reads gets every frame of every burst;
 * a consumer that never reads, one on each listener, loses frames, and
 * its listener counts them.  Before, a burst was queued to each consumer
 * before any of it was written, and each of the 30 was judged slow: they
 * lost 121 to 161 frames of every 200.
 */
Test(hostile, bursts_to_thirty_small_queues, .timeout = 180,
    .fini = cleanup)
{
	const size_t total = (size_t)FAN_BURSTS * FAN_FRAMES;
	const char *names[2] = { "relay", "relay-tls" };
	struct rclient p, c[2 * FAN_READERS], stalled[2];
	struct rc_reader rd[2 * FAN_READERS];
	size_t fs = FAN_KEYS * 4, keys_len = 0, which;
	uint8_t *burst = malloc(FAN_FRAMES * fs);
	uint32_t *seqs = calloc(total, sizeof(*seqs));
	char keys[FAN_KEYS * 4], conf[2048];
	long long got[2];
	bool torn;

	cr_assert(burst != NULL && seqs != NULL);
	need_fds(256);
	for (int k = 0; k < FAN_KEYS; k++)
		keys_len += (size_t)sprintf(keys + keys_len, "%sk%d",
		    k ? "," : "", k);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "queue_bytes = 8k\ngrace = 0\n"
	    "[relay-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nqueue_bytes = 8k\ngrace = 0\n",
	    CERT("server.pem"), CERT("server.key"));
	ferry_start(&fp, conf);
	cr_assert_eq(rc_producer(&p, false, ferry_port(&fp, "relay"),
	    "fan-30", keys), RC_OK);
	for (int t = 0; t < 2; t++) {
		int port = ferry_port(&fp, names[t]);
		cr_assert_eq(rc_consumer(&stalled[t], t == 1, port, "fan-30",
		    4096), RC_OK);
		for (int i = t * FAN_READERS; i < (t + 1) * FAN_READERS; i++)
			cr_assert_eq(rc_consumer(&c[i], t == 1, port, "fan-30",
			    0), RC_OK);
	}
	/* Every consumer is in once the server has read its accept byte. */
	cr_assert(ferry_log_wait(&fp, " joined uuid 'fan-30'",
	    2 * FAN_READERS + 2, 10));
	for (int i = 0; i < 2 * FAN_READERS; i++)
		cr_assert_eq(rc_reader_start(&rd[i], &c[i], total), 0);
	for (uint32_t b = 0; b < FAN_BURSTS; b++) {
		for (uint32_t k = 0; k < FAN_FRAMES; k++)
			rc_frame(burst + k * fs, FAN_KEYS, b * FAN_FRAMES + k);
		cr_assert(rc_send(&p, burst, FAN_FRAMES * fs),
		    "burst %u did not go", b);
		int r = rc_readers_take(rd, 2 * FAN_READERS,
		    (size_t)(b + 1) * FAN_FRAMES, 20, &which);
		size_t g = rc_reader_got(&rd[which]);
		cr_assert_neq(r, RC_ERROR, "burst %u: reader %zu lost frames "
		    "(it has %zu, the last numbered %u)", b, which, g,
		    g > 0 ? rd[which].seqs[g - 1] : 0);
		cr_assert_eq(r, RC_OK, "burst %u: reader %zu stuck at %zu", b,
		    which, g);
	}
	for (int i = 0; i < 2 * FAN_READERS; i++) {
		rc_reader_join(&rd[i]);
		cr_assert_not(rd[i].torn, "reader %d: a torn frame", i);
		rc_reader_free(&rd[i]);
	}
	/* The producer leaves: each stalled one gets its queue, then EOF. */
	rc_close(&p);
	for (int t = 0; t < 2; t++) {
		got[t] = (long long)rc_read_frames(&stalled[t], total, seqs,
		    &torn);
		cr_assert_not(torn, "%s: a torn frame", names[t]);
		cr_assert(rc_closed(&stalled[t], 10));
		cr_assert_lt(got[t], (long long)total, "%s: the stalled "
		    "consumer lost nothing", names[t]);
	}
	/* Its frames lost are the only ones, and counted where it is. */
	for (int t = 0; t < 2; t++) {
		expect_relay("ferry_relay_frames_dropped_total", names[t],
		    (long long)total - got[t]);
		expect_relay("ferry_relay_frames_out_total", names[t],
		    FAN_READERS * (long long)total + got[t]);
	}
	expect_relay("ferry_relay_frames_in_total", "relay", (long long)total);
	for (int i = 0; i < 2 * FAN_READERS; i++)
		rc_close(&c[i]);
	rc_close(&stalled[0]);
	rc_close(&stalled[1]);
	free(burst);
	free(seqs);
}

/* ---- out of file descriptors ---- */

#define FLOOD_N 200
#define FLOOD_NOFILE 64

/* Fires n non-blocking connects without waiting for them. */
static void
fire_connects(int port, int *fds, size_t n)
{
	struct sockaddr_in in;

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons((uint16_t)port);
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (size_t i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		cr_assert_geq(fds[i], 0);
		if (connect(fds[i], (struct sockaddr *)&in, sizeof(in)) < 0)
			cr_assert_eq(errno, EINPROGRESS, "connect: %s",
			    strerror(errno));
	}
}

/*
 * ferry with 64 descriptors against 200 relay connections that hold on
 * (silent, within their registration time): it accepts what it can,
 * then pauses accepting, leaving the rest waiting in the listen queue;
 * it neither crashes nor spins (its CPU time over a second stays a small
 * fraction of a core, where a busy accept loop would take all of it),
 * and serves again, on both listeners, once the crowd goes.
 */
Test(hostile, fd_limit_flood_paused_not_spinning, .timeout = 120,
    .fini = cleanup)
{
	struct ferry_opts o = { .nofile = FLOOD_NOFILE };
	char conf[1024];
	long hz = sysconf(_SC_CLK_TCK);

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "handshake_timeout = 60\n", be.port);
	ferry_start_opts(&fp, conf, &o);
	int web = ferry_port(&fp, "web");
	int relay = ferry_port(&fp, "relay");

	crowd = malloc(FLOOD_N * sizeof(*crowd));
	cr_assert_not_null(crowd);
	ncrowd = FLOOD_N;
	fire_connects(relay, crowd, FLOOD_N);
	if (!ferry_log_wait(&fp, "pausing accepts", 1, 15)) {
		ferry_log_dump(&fp);
		cr_assert_fail("the descriptors never ran out");
	}

	/* A second of the server's CPU time while it is starved... */
	long t0 = proc_cpu_ticks(fp.pid);
	usleep(1000 * 1000);
	long t1 = proc_cpu_ticks(fp.pid);
	cr_assert(t0 >= 0 && t1 >= 0, "ferry is gone");
	/* ...and still starved at the end of it: the rest are waiting. */
	long waiting = accept_queue(relay);
	cr_assert_gt(waiting, 0, "nothing left waiting: the window measured "
	    "no starvation");
	cr_assert_lt(t1 - t0, hz / 2, "%ld ticks of CPU in 1 s (of %ld): a "
	    "spinning accept loop", t1 - t0, hz);
	cr_assert(proc_alive(fp.pid));
	size_t closed = count_closed_now(crowd, FLOOD_N);
	cr_assert_eq(closed, 0, "%zu of the crowd closed: they should wait",
	    closed);

	/* A forward client now waits in its listener's queue too. */
	struct peer early, p;
	char buf[8];
	peer_plain(&early, connect_loopback(false, web));
	cr_assert_geq(early.fd, 0);
	cr_assert_eq(peer_write(&early, "early", 5), 5);

	/*
	 * The crowd leaves.  Once ferry has taken the last of it off its
	 * accept queue and closed its side, service resumes on both
	 * listeners.
	 */
	crowd_close();
	double end = now_s() + 15;
	while ((accept_queue(relay) != 0 || metric("ferry_connections_active",
	    "relay", "relay") != 0) && now_s() < end)
		usleep(20 * 1000);
	cr_assert_eq(accept_queue(relay), 0, "the flood is still queued");
	expect_metric("ferry_connections_active", "relay", "relay", 0);
	/* The early client is served late, or refused (accepted in a moment
	 * with no descriptor left for its backend, and closed): never left
	 * hanging. */
	long got = peer_read(&early, buf, 5);
	cr_assert(got == 5 || got == 0 || (got < 0 && errno != EAGAIN),
	    "the early client is still waiting");
	bool early_served = got == 5;
	peer_close(&early);
	expect_metric("ferry_connections_active", "web", "forward", 0);
	peer_plain(&p, connect_loopback(false, web));
	cr_assert_geq(p.fd, 0, "connect after the flood: %s",
	    strerror(errno));
	cr_assert_eq(peer_write(&p, "again", 5), 5);
	cr_assert_eq(peer_read_exact(&p, buf, 5), 5, "not served after the "
	    "flood");
	peer_close(&p);
	struct witness w;
	witness_start(&w, false, relay, "after-flood");
	witness_ok(&w, 10);
	witness_close(&w);
	cr_assert_geq(ferry_log_count(&fp, "accepting again"), 1);
	expect_metric("ferry_connections_active", "web", "forward", 0);
	expect_metric("ferry_connections_active", "relay", "relay", 0);
	cr_log_info("flood: %ld CPU ticks in 1 s starved, %ld waiting; the "
	    "early forward client %s", t1 - t0, waiting, early_served ?
	    "served late" : "refused");
	fprintf(stderr, "hostile: fd flood: %ld of %ld CPU ticks in 1 s "
	    "starved, %ld connections waiting in the queue; the early forward "
	    "client %s\n", t1 - t0, hz, waiting, early_served ?
	    "served late" : "refused");
}

/* ---- TLS records that carry no data ---- */

#define KU_FLOOD 100000

/*
 * A TLS 1.3 client that floods KeyUpdate(update_requested) records: the
 * records are all made first (OpenSSL writes them into a memory BIO), then
 * sent back to back from a thread, and their answers never read.
 */
struct flooder {
	struct peer p;
	char *recs;
	size_t len;
	size_t sent;			/* before the server closed */
	pthread_t thread;
	bool sending;			/* the thread runs, not yet joined */
	volatile bool done;
};

static void
flooder_make(struct flooder *f, int port, size_t n)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *data;

	memset(f, 0, sizeof(*f));
	flooding = f;
	peer_tls(&f->p, connect_loopback(false, port), "localhost", NULL,
	    NULL);
	cr_assert_geq(f->p.fd, 0);
	SSL_set_min_proto_version(f->p.ssl, TLS1_3_VERSION);
	cr_assert(peer_tls_handshake(&f->p));
	cr_assert_not_null(mem);
	SSL_set0_wbio(f->p.ssl, mem);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(SSL_key_update(f->p.ssl, SSL_KEY_UPDATE_REQUESTED),
		    1);
		cr_assert_eq(SSL_do_handshake(f->p.ssl), 1);
	}
	long len = BIO_get_mem_data(mem, &data);
	cr_assert_gt(len, 0);
	f->recs = malloc((size_t)len);
	cr_assert_not_null(f->recs);
	memcpy(f->recs, data, (size_t)len);
	f->len = (size_t)len;
}

/* Sends until everything is out or the server closes the connection. */
static void *
flooder_send(void *arg)
{
	struct flooder *f = arg;

	while (f->sent < f->len) {
		ssize_t n = send(f->p.fd, f->recs + f->sent, f->len - f->sent,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		f->sent += (size_t)n;
	}
	f->done = true;
	return NULL;
}

static void
flooder_free(struct flooder *f)
{
	/* A failed test leaves the thread sending: stop it first. */
	if (f->sending) {
		shutdown(f->p.fd, SHUT_RDWR);
		pthread_join(f->thread, NULL);
	}
	free(f->recs);
	SSL_free(f->p.ssl);
	SSL_CTX_free(f->p.ctx);
	if (f->p.fd >= 0)
		close(f->p.fd);
	flooding = NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One frame through the witness pair; returns how long it took (ms). */
static double
round_trip(struct witness *w)
{
	double t0 = now_s();

	witness_ok(w, 1);
	return (now_s() - t0) * 1000;
}

/*
 * Floods [port] with KU_FLOOD key updates while the witness does round
 * trips on another listener, at least `min` of them and on until the
 * flood has been sent or cut off.  Returns the round trips' median and
 * max (ms) in `med`, `max`; the flooder is left for the caller.
 */
static size_t
flood_while_witnessing(struct flooder *f, int port, struct witness *w,
    size_t min, double *med, double *max)
{
	enum { MAX_RT = 100000 };
	static double rt[MAX_RT];
	size_t n = 0;

	flooder_make(f, port, KU_FLOOD);
	cr_assert_eq(pthread_create(&f->thread, NULL, flooder_send, f), 0);
	f->sending = true;
	while ((n < min || !f->done) && n < MAX_RT)
		rt[n++] = round_trip(w);
	cr_assert_eq(pthread_join(f->thread, NULL), 0);
	f->sending = false;
	qsort(rt, n, sizeof(rt[0]), cmp_double);
	*med = rt[n / 2];
	*max = rt[n - 1];
	return n;
}

/*
 * One client floods a TLS forward listener, then a TLS relay listener,
 * with 100,000 KeyUpdate(update_requested) records (2.7 MB) sent back to
 * back, never reading.  OpenSSL handles every queued record inside one
 * SSL_read, so unchecked the flood held the event loop for seconds.  The
 * server must close each flooder, count it, and keep serving the relay
 * pair on a third listener all along.
 */
Test(hostile, tls_key_update_flood_closed_others_served, .timeout = 180,
    .fini = cleanup)
{
	struct witness plain;
	static struct flooder f;
	double base_med, base_max, med[2], max[2];
	size_t n[2];
	bool closed;
	const char *names[2] = { "web", "relay-tls" };
	const char *modes[2] = { "forward", "relay" };

	start_three(10, 0);
	int relay = ferry_port(&fp, "relay");
	witness_start(&plain, false, relay, "good-plain");
	/* Unchecked, a flood held the loop for over 10 s sanitized: a round
	 * trip that long is reported (as a failure), not timed out. */
	plain.c.timeout = 60;
	/* The round trips without an attack, for the report. */
	{
		double rt[50];
		for (size_t i = 0; i < 50; i++)
			rt[i] = round_trip(&plain);
		qsort(rt, 50, sizeof(rt[0]), cmp_double);
		base_med = rt[25];
		base_max = rt[49];
	}
	for (int i = 0; i < 2; i++) {
		n[i] = flood_while_witnessing(&f, ferry_port(&fp, names[i]),
		    &plain, 20, &med[i], &max[i]);
		closed = false;
		wait_closed(&f.p.fd, &closed, 1, 30);
		fprintf(stderr, "hostile: key update flood on [%s]: %zu of %zu "
		    "bytes sent before the close; %zu round trips on [relay] "
		    "meanwhile, median %.2f ms, max %.2f ms (%.2f / %.2f ms "
		    "without the flood)\n", names[i], f.sent, f.len, n[i],
		    med[i], max[i], base_med, base_max);
		flooder_free(&f);
		cr_assert(closed, "the flooder of [%s] is still open",
		    names[i]);
		expect_metric("ferry_tls_flood_closed_total", names[i],
		    modes[i], 1);
		/* The witness stays connected and served. */
		witness_ok(&plain, 10);
		expect_metric("ferry_connections_active", "relay", "relay", 2);
	}
	echo_ok(ferry_port(&fp, "web"), "after the floods");
	cr_assert_eq(ferry_log_count(&fp, "tls flood"), 2);
	witness_close(&plain);
	expect_metric("ferry_connections_active", "relay", "relay", 0);
	expect_metric("ferry_connections_active", "relay-tls", "relay", 0);
	expect_metric("ferry_connections_active", "web", "forward", 0);
	expect_metric("ferry_tls_flood_closed_total", "relay", "relay", 0);
	cr_assert(proc_alive(fp.pid));
}
