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
 * This file has the slowloris crowd and the garbage; the shared setup is
 * hostilecheck.h, the other hostile suites are test_hostile_*.c.
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
#include "hostilecheck.h"
#include "netutil.h"
#include "relayclient.h"

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
    .fini = hostile_cleanup)
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
	expect_mode_metric("ferry_connections_active", "relay", "relay", 1000);
	expect_mode_metric("ferry_connections_active", "relay-tls", "relay",
	    500);
	expect_mode_metric("ferry_connections_active", "web", "forward", 500);
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
	expect_mode_metric("ferry_connections_active", "relay", "relay", 0);
	expect_mode_metric("ferry_connections_active", "relay-tls", "relay", 0);
	expect_mode_metric("ferry_connections_active", "web", "forward", 0);
	cr_assert_eq(mode_metric("ferry_connections_accepted_total", "relay",
	    "relay"), 1000 + 2);
	cr_assert_eq(mode_metric("ferry_connections_accepted_total",
	    "relay-tls", "relay"), 500 + 2);
	cr_assert_eq(mode_metric("ferry_connections_accepted_total", "web",
	    "forward"), 500 + 2);
	cr_assert_eq(mode_metric("ferry_tls_handshake_failures_total",
	    "relay-tls", "relay"), 500);
	cr_assert_eq(mode_metric("ferry_tls_handshake_failures_total", "web",
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
			while (buf[0] == RELAY_PRODUCER ||
			    buf[0] == RELAY_CONSUMER)
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
		cr_assert_eq(peer_write(&p, (char[]){ RELAY_PRODUCER }, 1), 1);
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
	cr_assert_eq(ans[want - 1], RELAY_REFUSED,
	    "a 4 GB claim was not refused");
	cr_assert(rc_closed(&x, RC_TIMEOUT), "not closed after the refusal");
	rc_close(&x);
}

Test(hostile, garbage_and_lying_lengths, .timeout = 180,
    .fini = hostile_cleanup)
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
	expect_mode_metric("ferry_tls_handshake_failures_total", "relay-tls",
	    "relay", GARBAGE_N);
	expect_mode_metric("ferry_tls_handshake_failures_total", "web",
	    "forward", GARBAGE_N);

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
		claim_4gb(relay, false, i % 2 ? RELAY_PRODUCER :
		    RELAY_CONSUMER, false);
		claim_4gb(relay, false, RELAY_PRODUCER, true);
		claim_4gb(relay_tls, true, i % 2 ? RELAY_PRODUCER :
		    RELAY_CONSUMER, false);
		claim_4gb(relay_tls, true, RELAY_PRODUCER, true);
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
	expect_mode_metric("ferry_connections_active", "relay", "relay", 0);
	expect_mode_metric("ferry_connections_active", "relay-tls", "relay", 0);
	expect_mode_metric("ferry_connections_active", "web", "forward", 0);
	expect_relay("ferry_relay_producers", "relay", 0);
	expect_relay("ferry_relay_consumers", "relay-tls", 0);
	fprintf(stderr, "hostile: garbage: RSS %ld kB before, %ld kB after "
	    "200 claims of 4 GB\n", rss0, rss1);
}
