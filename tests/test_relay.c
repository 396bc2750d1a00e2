/*
 * The device relay end to end: the real ferry binary on 127.0.0.1 port 0,
 * clients from relayclient.h, every test over plain TCP and over TLS (the
 * client verifies the server against certs/ca.pem).  Outcomes are checked
 * in bytes, frame sequence numbers, the admin page's counters and the log;
 * never in elapsed time.  The shared setup is relaycheck.h; this file has
 * the two tables step by step, fan-out, clients that vanish and one
 * uuid namespace across listeners; the other
 * relay suites are test_relay_*.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relaycheck.h"
#include "relayclient.h"

/* ---- the two tables, step by step ---- */

BOTH(every_step_byte_by_byte)
ParameterizedTest(int *t, relay, every_step_byte_by_byte, .timeout = 60,
    .fini = cleanup)
{
	int port = start_relay(*t, "");
	const char *uuid = "phone-\xc3\xa9-1";
	const char *keys = "eyeBlinkLeft,jawOpen,mouthSmileLeft";
	struct rclient p, c;
	uint8_t msg[256], got[256], fr[4 * 12];
	size_t n;

	/* Producer, step 1. */
	cr_assert_eq(rc_connect(&p, tls(), port, 0), 0);
	cr_assert(rc_send_byte(&p, RELAY_PRODUCER));
	cr_assert_eq(rc_byte(&p, RC_TIMEOUT), RELAY_OK);
	/* Step 2: the uuid byte by byte, answered after its last byte. */
	n = field(msg, uuid, strlen(uuid));
	send_bytewise(&p, msg, n - 1);
	cr_assert(rc_quiet(&p, 0.05), "answered an incomplete uuid");
	send_bytewise(&p, msg + n - 1, 1);
	cr_assert_eq(rc_byte(&p, RC_TIMEOUT), RELAY_OK);
	/* Step 3: the keys. */
	n = field(msg, keys, strlen(keys));
	send_bytewise(&p, msg, n - 1);
	cr_assert(rc_quiet(&p, 0.05), "answered incomplete keys");
	send_bytewise(&p, msg + n - 1, 1);
	cr_assert_eq(rc_byte(&p, RC_TIMEOUT), RELAY_OK);
	p.nkeys = 3;
	expect_log("registered uuid 'phone-\\xc3\\xa9-1' with 3 keys", 1);

	/* Consumer, steps 1 and 2. */
	cr_assert_eq(rc_connect(&c, tls(), port, 0), 0);
	cr_assert(rc_send_byte(&c, RELAY_CONSUMER));
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), RELAY_OK);
	n = field(msg, uuid, strlen(uuid));
	send_bytewise(&c, msg, n);
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), RELAY_OK);
	/* Step 3: the keys, with their length. */
	cr_assert(rc_read_exact(&c, got, 4 + strlen(keys)));
	n = field(msg, keys, strlen(keys));
	cr_assert_eq(memcmp(got, msg, n), 0, "keys as sent, with length");
	/* Nothing flows before the accept byte. */
	cr_assert(rc_send_frames(&p, 0, 1));
	cr_assert(rc_quiet(&c, 0.1), "a frame before the accept byte");
	/* Step 4: accept; frames sent byte by byte arrive whole, exact. */
	cr_assert(rc_send_byte(&c, RELAY_ACCEPT));
	c.nkeys = 3;
	expect_log("consumer ", 1);
	expect_log(" joined uuid 'phone-\\xc3\\xa9-1'", 1);
	for (uint32_t k = 0; k < 4; k++)
		rc_frame(fr + 12 * k, 3, 1 + k);
	send_bytewise(&p, fr, sizeof(fr));
	cr_assert(rc_read_exact(&c, got, sizeof(fr)));
	cr_assert_eq(memcmp(got, fr, sizeof(fr)), 0, "frames not byte-exact");
	/* What a consumer says after accepting is ignored. */
	cr_assert(rc_send(&c, "chatter", 7));
	cr_assert(rc_send_frames(&p, 5, 3));
	expect_frames(&c, 5, 3);
	rc_close(&c);
	rc_close(&p);
	expect_log("left uuid 'phone-\\xc3\\xa9-1' (3 keys)", 2);
	expect_metric("ferry_relay_producers", 0);
	expect_metric("ferry_relay_consumers", 0);
}

BOTH(unknown_uuid_and_bad_first_byte)
ParameterizedTest(int *t, relay, unknown_uuid_and_bad_first_byte,
    .timeout = 60, .fini = cleanup)
{
	int port = start_relay(*t, "");
	struct rclient c;
	uint8_t msg[64];
	size_t n;

	/* Step by step. */
	cr_assert_eq(rc_consumer(&c, tls(), port, "nobody", 0), RC_REFUSED);
	cr_assert_eq(c.refused_at, 2);
	cr_assert(rc_closed(&c, RC_TIMEOUT));
	rc_close(&c);
	/* All at once (accept byte included): 0x00, 0x01, then a clean EOF,
	 * not a reset that could have eaten the 0x01. */
	cr_assert_eq(rc_connect(&c, tls(), port, 0), 0);
	msg[0] = RELAY_CONSUMER;
	n = 1 + field(msg + 1, "nobody", 6);
	msg[n++] = RELAY_ACCEPT;
	cr_assert(rc_send(&c, msg, n));
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), RELAY_OK);
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), RELAY_REFUSED);
	cr_assert_eq(rc_read(&c, msg, 1, RC_TIMEOUT), 0, "no clean EOF");
	rc_close(&c);
	expect_metric("ferry_relay_refused_total", 2);
	expect_log("(uuid 'nobody') closed after", 2);
	expect_log("refused: no producer holds this uuid", 2);

	/* Neither 0x0a nor 0x0b (nor a letter, HTTP): no answer, closed,
	 * logged with the peer. */
	cr_assert_eq(rc_connect(&c, tls(), port, 0), 0);
	cr_assert(rc_send(&c, "\x01 / HTTP/1.0\r\n\r\n", 16));
	cr_assert(rc_closed(&c, RC_TIMEOUT), "answered or kept open");
	rc_close(&c);
	expect_log("client 127.0.0.1:", 1);
	expect_log("protocol error: unknown first byte 0x01", 1);
	expect_metric("ferry_relay_protocol_errors_total", 1);
}

/* ---- fan-out ---- */

BOTH(three_consumers_byte_exact_in_order)
ParameterizedTest(int *t, relay, three_consumers_byte_exact_in_order,
    .timeout = 60, .fini = cleanup)
{
	const size_t n = 3000;
	const char *uuid = "fan\"out\\1";
	struct rclient p, c[3];
	char series[256];

	start_relay(*t, "");
	producer(&p, uuid, "a,b,c,d,e,f,g,h");
	for (int i = 0; i < 3; i++)
		consumer(&c[i], uuid, 0);
	cr_assert_str_eq(c[0].keys, "a,b,c,d,e,f,g,h");
	/* 96 KB: within every queue, so reading afterwards loses nothing. */
	cr_assert(rc_send_frames(&p, 0, n));
	for (int i = 0; i < 3; i++)
		expect_frames(&c[i], 0, n);
	expect_metric("ferry_relay_frames_in_total", (long long)n);
	expect_metric("ferry_relay_frames_out_total", 3 * (long long)n);
	expect_metric("ferry_relay_bytes_out_total", 3 * (long long)n * 32);
	expect_metric("ferry_relay_frames_dropped_total", 0);
	expect_metric("ferry_relay_consumers", 3);
	/* Per uuid (once, whatever the listeners), the label escaped as
	 * the text format wants. */
	snprintf(series, sizeof(series), "ferry_relay_device_frames_out_total"
	    "{uuid=\"fan\\\"out\\\\1\"}");
	cr_assert_eq(rc_metric(ferry_port(&fp, "admin"), series),
	    3 * (long long)n, "%s", series);
	for (int i = 0; i < 3; i++)
		rc_close(&c[i]);
	rc_close(&p);
	expect_metric("ferry_relay_devices", 0);
}


/* ---- clients that vanish ---- */

BOTH(drops_mid_header_and_mid_frame)
ParameterizedTest(int *t, relay, drops_mid_header_and_mid_frame,
    .timeout = 120, .fini = cleanup)
{
	struct rclient wp, wc, x, y;
	uint32_t seq = 0;
	uint8_t m[64];
	size_t n;
	int port = start_relay(*t, "grace = 0.3\n");

	producer(&wp, "witness", "a,b");
	consumer(&wc, "witness", 0);
	/* Producers that stop at every point of their header. */
	m[0] = RELAY_PRODUCER;
	n = 1 + field(m + 1, "gone", 4);
	n += field(m + n, "p,q,r", 5);
	for (size_t cut = 1; cut < n; cut += 2) {
		cr_assert_eq(rc_connect(&x, tls(), port, 0), 0);
		cr_assert(rc_send(&x, m, cut));
		if (cut % 4 == 1)
			rc_reset(&x);
		else
			rc_close(&x);
		pair_ok(&wp, &wc, &seq);
	}
	/* Consumers likewise. */
	m[0] = RELAY_CONSUMER;
	n = 1 + field(m + 1, "witness", 7);
	m[n++] = RELAY_ACCEPT;
	for (size_t cut = 1; cut <= n; cut += 2) {
		cr_assert_eq(rc_connect(&x, tls(), port, 0), 0);
		cr_assert(rc_send(&x, m, cut));
		if (cut % 4 == 1)
			rc_reset(&x);
		else
			rc_close(&x);
		pair_ok(&wp, &wc, &seq);
	}
	/* A producer gone in the middle of a frame: its consumer gets the
	 * whole frames, never the half one, then the end of the stream. */
	producer(&x, "half", "p,q,r");
	consumer(&y, "half", 0);
	uint8_t fr[12 * 4];
	for (uint32_t k = 0; k < 4; k++)
		rc_frame(fr + 12 * k, 3, k);
	cr_assert(rc_send(&x, fr, 3 * 12 + 6));
	expect_frames(&y, 0, 3);
	rc_reset(&x);
	cr_assert(rc_closed(&y, RC_TIMEOUT), "half a frame, or no close");
	rc_close(&y);
	/* A consumer gone while frames flow to it. */
	consumer(&y, "witness", 0);
	cr_assert(rc_send_frames(&wp, seq, 100));
	rc_reset(&y);
	expect_frames(&wc, seq, 100);
	seq += 100;
	pair_ok(&wp, &wc, &seq);
	expect_metric("ferry_relay_producers", 1);
	expect_metric("ferry_relay_consumers", 1);
	expect_metric("ferry_relay_devices", 1);
	rc_close(&wp);
	rc_close(&wc);
}

BOTH(two_hundred_abrupt_connections)
ParameterizedTest(int *t, relay, two_hundred_abrupt_connections,
    .timeout = 120, .fini = cleanup)
{
	enum { N = 200, BATCH = 50 };
	struct rclient live, xs[BATCH], p, c;
	char uuid[32];
	int port = start_relay(*t, "grace = 0.2\n");
	int status;

	producer(&live, "live", "a,b,c");
	for (int base = 0; base < N; base += BATCH) {
		for (int i = 0; i < BATCH; i++) {
			struct rclient *x = &xs[i];
			int k = base + i;
			snprintf(uuid, sizeof(uuid), "abrupt-%d", k);
			switch (k % 5) {
			case 0:		/* connected, silent */
				cr_assert_eq(rc_connect(x, tls(), port, 0), 0);
				break;
			case 1:		/* half a uuid */
				cr_assert_eq(rc_connect(x, tls(), port, 0), 0);
				cr_assert(rc_send(x, "\x0a\x00\x00\x00\x09" "ab",
				    7));
				break;
			case 2:		/* a producer, half a frame sent */
				producer(x, uuid, "a,b");
				cr_assert(rc_send(x, "\x01\x02\x03", 3));
				break;
			case 3:		/* a consumer of the live one */
				consumer(x, "live", 0);
				break;
			case 4:		/* a consumer with unread keys */
				cr_assert_eq(rc_connect(x, tls(), port, 0), 0);
				cr_assert(rc_send(x, "\x0b\x00\x00\x00\x04live",
				    9));
				break;
			}
		}
		cr_assert(rc_send_frames(&live, (uint32_t)base, 10));
		for (int i = 0; i < BATCH; i++) {
			if ((base + i) % 2)
				rc_reset(&xs[i]);
			else
				rc_free(&xs[i]);	/* FIN, no goodbye */
		}
	}
	/* A fresh pair works. */
	producer(&p, "fresh", "x,y");
	consumer(&c, "fresh", 0);
	cr_assert(rc_send_frames(&p, 0, 50));
	expect_frames(&c, 0, 50);
	rc_close(&c);
	rc_close(&p);
	rc_close(&live);
	/* Nothing leaked: no producers, consumers, uuids or connections. */
	expect_metric("ferry_relay_producers", 0);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_devices", 0);
	char series[128];
	snprintf(series, sizeof(series), "ferry_connections_active{listener="
	    "\"%s\",mode=\"relay\"}", lname());
	double end = now_s() + 10;
	while (rc_metric(ferry_port(&fp, "admin"), series) != 0 &&
	    now_s() < end)
		usleep(10 * 1000);
	cr_assert_eq(rc_metric(ferry_port(&fp, "admin"), series), 0);
	/* And it stops cleanly (under the sanitizers: without leaks). */
	status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "exit status %d", status);
}

/* ---- one uuid namespace for every relay listener ---- */

/* The other listener of start_relay(). */
static const char *
other(void)
{
	return tls() ? "relay" : "relay-tls";
}

/* Occurrences of `needle` on the admin page. */
static int
page_count(const char *needle)
{
	int status, n = 0;
	char *page = http_get(ferry_port(&fp, "admin"), "/metrics", &status);

	cr_assert_not_null(page);
	for (const char *p = page; (p = strstr(p, needle)) != NULL; p++)
		n++;
	free(page);
	return n;
}

/*
 * A producer on one listener, consumers on the other (and one beside it):
 * they meet.  The totals count where each connection is; the uuid's own
 * series appear once.
 */
BOTH(one_namespace_across_listeners)
ParameterizedTest(int *t, relay, one_namespace_across_listeners,
    .timeout = 60, .fini = cleanup)
{
	const size_t n = 2000;
	struct rclient p, c[3];
	uint8_t fr[4 * 8], got[sizeof(fr)];

	start_relay(*t, "");
	producer(&p, "phone-1", "a,b,c,d,e,f,g,h");
	expect_log("relay ", 1);
	cr_assert_eq(ferry_log_count(&fp, tls() ? "relay relay-tls: producer" :
	    "relay relay: producer"), 1);
	consumer_at(&c[0], other(), "phone-1", 0);
	consumer_at(&c[1], other(), "phone-1", 0);
	consumer_at(&c[2], lname(), "phone-1", 0);
	cr_assert_str_eq(c[0].keys, "a,b,c,d,e,f,g,h");
	/* Byte for byte across the transports. */
	rc_frame(fr, 8, 77);
	cr_assert(rc_send(&p, fr, sizeof(fr)));
	for (int i = 0; i < 3; i++) {
		cr_assert(rc_read_exact(&c[i], got, sizeof(got)));
		cr_assert_eq(memcmp(got, fr, sizeof(fr)), 0, "consumer %d", i);
	}
	cr_assert(rc_send_frames(&p, 0, n));
	for (int i = 0; i < 3; i++)
		expect_frames(&c[i], 0, n);
	/* In on the producer's listener, out where each consumer is. */
	expect_metric_at("ferry_relay_frames_in_total", lname(),
	    (long long)n + 1);
	expect_metric_at("ferry_relay_frames_in_total", other(), 0);
	expect_metric_at("ferry_relay_frames_out_total", lname(),
	    (long long)n + 1);
	expect_metric_at("ferry_relay_frames_out_total", other(),
	    2 * ((long long)n + 1));
	expect_metric_at("ferry_relay_producers", lname(), 1);
	expect_metric_at("ferry_relay_producers", other(), 0);
	expect_metric_at("ferry_relay_consumers", lname(), 1);
	expect_metric_at("ferry_relay_consumers", other(), 2);
	/* The device belongs to its producer's listener, once. */
	expect_metric_at("ferry_relay_devices", lname(), 1);
	expect_metric_at("ferry_relay_devices", other(), 0);
	cr_assert_eq(page_count("ferry_relay_device_frames_out_total{"), 1);
	cr_assert_eq(rc_metric(ferry_port(&fp, "admin"),
	    "ferry_relay_device_frames_out_total{uuid=\"phone-1\"}"),
	    3 * ((long long)n + 1));
	/* Each connection's lines name its own listener. */
	cr_assert_eq(ferry_log_count(&fp, tls() ? "relay relay: consumer" :
	    "relay relay-tls: consumer"), 2);
	for (int i = 0; i < 3; i++)
		rc_close(&c[i]);
	rc_close(&p);
	expect_metric_at("ferry_relay_devices", lname(), 0);
	expect_metric_at("ferry_relay_consumers", other(), 0);
}
