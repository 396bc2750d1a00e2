/*
 * Hostile peers against the relay's queues and slots: consumers that ask
 * for a uuid and never accept its keys, resets at every stage, bursts
 * against thirty small queues (see test_hostile.c).
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
#include "hostilecheck.h"
#include "netutil.h"
#include "relayclient.h"

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
    .fini = hostile_cleanup)
{
	static struct rclient real[SQUAT_REAL];
	static bool closed[SQUAT_N];
	static const uint8_t ask[] = { RELAY_CONSUMER, 0, 0, 0, 5, 'p', 'r',
	    'i', 'z', 'e' };
	static const uint8_t keys[] = { RELAY_OK, 0, 0, 0, 3, 'x', ',', 'y' };
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
		keyed += n == 1 + sizeof(keys) && buf[0] == RELAY_OK &&
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
	expect_mode_metric("ferry_connections_active", "relay", "relay", 0);
	expect_mode_metric("ferry_connections_active", "relay-tls", "relay", 0);
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
		RELAY_PRODUCER, 0, 0, 0, 6, 'g', 'o', 'n', 'e', '-', 'p',
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

Test(hostile, resets_at_every_stage, .timeout = 180, .fini = hostile_cleanup)
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
		expect_mode_metric("ferry_connections_active", names[t],
		    "relay", 0);
		expect_relay("ferry_relay_producers", names[t], 0);
		expect_relay("ferry_relay_consumers", names[t], 0);
		expect_relay("ferry_relay_devices", names[t], 0);
	}
	expect_mode_metric("ferry_connections_active", "web", "forward", 0);
	/* And the backend side of every forward connection is closed. */
	double end = now_s() + 15;
	while (be.active > 0 && now_s() < end)
		usleep(20 * 1000);
	cr_assert_eq(be.active, 0, "%d backend connections left open",
	    be.active);
	cr_assert_eq(mode_metric("ferry_tls_handshake_failures_total", "web",
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
    .fini = hostile_cleanup)
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
