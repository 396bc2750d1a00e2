/*
 * The device relay end to end: the real ferry binary on 127.0.0.1 port 0,
 * clients from relayclient.h, every test over plain TCP and over TLS (the
 * client verifies the server against certs/ca.pem).  Outcomes are checked
 * in bytes, frame sequence numbers, the admin page's counters and the log;
 * never in elapsed time.
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
#include "relayclient.h"

static struct ferry_proc fp;
static int transport;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

#define BOTH(name)							\
	ParameterizedTestParameters(relay, name)			\
	{								\
		static int t[] = { T_PLAIN, T_TLS };			\
		return cr_make_param_array(int, t, 2);			\
	}

static const char *
lname(void)
{
	return transport == T_TLS ? "relay-tls" : "relay";
}

static bool
tls(void)
{
	return transport == T_TLS;
}

/*
 * Runs ferry with a plain and a TLS relay listener, both with the options
 * in `extra`, and an admin listener; returns the port for the transport.
 */
static int
start_relay(int t, const char *extra)
{
	char conf[4096];

	transport = t;
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n%s"
	    "[relay-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\n%s", extra, CERT("server.pem"),
	    CERT("server.key"), extra);
	ferry_start(&fp, conf);
	return ferry_port(&fp, lname());
}

/* Whether listener `l` of the running ferry speaks TLS. */
static bool
tls_at(const char *l)
{
	for (size_t i = 0; i < fp.nports; i++)
		if (strcmp(fp.ports[i].name, l) == 0)
			return strcmp(fp.ports[i].transport, "tls") == 0;
	cr_assert_fail("no listener %s", l);
	return false;
}

static long long
metric_at(const char *family, const char *l)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\"}", family, l);
	return rc_metric(ferry_port(&fp, "admin"), series);
}

static long long
metric(const char *family)
{
	return metric_at(family, lname());
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits (10 s at most) for a counter of listener l to read `want`. */
static void
expect_metric_at(const char *family, const char *l, long long want)
{
	double end = now_s() + 10;
	long long v;

	while ((v = metric_at(family, l)) != want && now_s() < end)
		usleep(10 * 1000);
	if (v != want)
		ferry_log_dump(&fp);
	cr_assert_eq(v, want, "%s{listener=\"%s\"} is %lld, expected %lld",
	    family, l, v, want);
}

static void
expect_metric(const char *family, long long want)
{
	expect_metric_at(family, lname(), want);
}

static void
expect_log(const char *needle, int n)
{
	if (!ferry_log_wait(&fp, needle, n, 10)) {
		ferry_log_dump(&fp);
		cr_assert_fail("log: fewer than %d \"%s\"", n, needle);
	}
}

/* "k0,k1,...": n key names. */
static char *
keys_n(size_t n)
{
	char *k = malloc(n * 8 + 1);
	size_t o = 0;

	cr_assert_not_null(k);
	for (size_t i = 0; i < n; i++)
		o += (size_t)sprintf(k + o, "%sk%zu", i ? "," : "", i);
	return k;
}

static void
producer_at(struct rclient *p, const char *l, const char *uuid,
    const char *keys)
{
	int r = rc_producer(p, tls_at(l), ferry_port(&fp, l), uuid, keys);

	cr_assert_eq(r, RC_OK, "producer '%s' on %s: %d (refused at %d)", uuid,
	    l, r, p->refused_at);
}

static void
producer(struct rclient *p, const char *uuid, const char *keys)
{
	producer_at(p, lname(), uuid, keys);
}

/*
 * A consumer, once the server has read its accept byte: frames published
 * before that are not its frames (the protocol does not acknowledge the
 * accept byte, so the log says when).
 */
static void
consumer_at(struct rclient *c, const char *l, const char *uuid, int rcvbuf)
{
	char needle[320];
	int before, r;

	size_t o = (size_t)snprintf(needle, sizeof(needle), " joined uuid '");
	/* As the log writes a uuid: printable ASCII, the rest as \xNN. */
	for (const unsigned char *u = (const unsigned char *)uuid; *u; u++)
		o += (size_t)snprintf(needle + o, sizeof(needle) - o,
		    *u >= 0x20 && *u < 0x7f && *u != '\\' && *u != '\'' ?
		    "%c" : "\\x%02x", *u);
	snprintf(needle + o, sizeof(needle) - o, "'");
	before = ferry_log_count(&fp, needle);
	r = rc_consumer(c, tls_at(l), ferry_port(&fp, l), uuid, rcvbuf);
	cr_assert_eq(r, RC_OK, "consumer '%s' on %s: %d (refused at %d)", uuid,
	    l, r, c->refused_at);
	expect_log(needle, before + 1);
}

static void
consumer(struct rclient *c, const char *uuid, int rcvbuf)
{
	consumer_at(c, lname(), uuid, rcvbuf);
}

/* Reads n frames and checks they are first, first + 1, ... */
static void
expect_frames(struct rclient *c, uint32_t first, size_t n)
{
	uint32_t *seqs = calloc(n, sizeof(*seqs));
	bool torn;
	size_t got;

	cr_assert_not_null(seqs);
	got = rc_read_frames(c, n, seqs, &torn);
	cr_assert_not(torn, "a torn frame after %zu", got);
	cr_assert_eq(got, n, "%zu of %zu frames", got, n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(seqs[i], first + i, "frame %zu is %u, not %zu",
		    i, seqs[i], first + i);
	free(seqs);
}

/* A BE32 length and the bytes, into out; returns the size. */
static size_t
field(uint8_t *out, const void *p, size_t len)
{
	out[0] = (uint8_t)(len >> 24);
	out[1] = (uint8_t)(len >> 16);
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
	memcpy(out + 4, p, len);
	return len + 4;
}

static void
send_bytewise(struct rclient *c, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_assert(rc_send(c, p + i, 1), "send byte %zu", i);
}

/* Consumers reading in threads (relayclient.h), checked here. */
static void
reader_start(struct rc_reader *r, struct rclient *c, size_t want)
{
	cr_assert_eq(rc_reader_start(r, c, want), 0);
}

static size_t
reader_got(struct rc_reader *r)
{
	return rc_reader_got(r);
}

static void
reader_join(struct rc_reader *r)
{
	rc_reader_join(r);
	cr_assert_not(r->torn, "a torn frame after %zu", r->got);
}

/* Waits until every reader has `n` frames (their queues stay short). */
static void
readers_reach(struct rc_reader *rs, size_t nr, size_t n)
{
	double end = now_s() + 20;

	for (size_t i = 0; i < nr; i++)
		while (reader_got(&rs[i]) < n) {
			cr_assert_lt(now_s(), end, "reader %zu stuck at %zu of "
			    "%zu", i, reader_got(&rs[i]), n);
			usleep(200);
		}
}

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
	cr_assert(rc_send_byte(&p, 0x0a));
	cr_assert_eq(rc_byte(&p, RC_TIMEOUT), 0x00);
	/* Step 2: the uuid byte by byte, answered after its last byte. */
	n = field(msg, uuid, strlen(uuid));
	send_bytewise(&p, msg, n - 1);
	cr_assert(rc_quiet(&p, 0.05), "answered an incomplete uuid");
	send_bytewise(&p, msg + n - 1, 1);
	cr_assert_eq(rc_byte(&p, RC_TIMEOUT), 0x00);
	/* Step 3: the keys. */
	n = field(msg, keys, strlen(keys));
	send_bytewise(&p, msg, n - 1);
	cr_assert(rc_quiet(&p, 0.05), "answered incomplete keys");
	send_bytewise(&p, msg + n - 1, 1);
	cr_assert_eq(rc_byte(&p, RC_TIMEOUT), 0x00);
	p.nkeys = 3;
	expect_log("registered uuid 'phone-\\xc3\\xa9-1' with 3 keys", 1);

	/* Consumer, steps 1 and 2. */
	cr_assert_eq(rc_connect(&c, tls(), port, 0), 0);
	cr_assert(rc_send_byte(&c, 0x0b));
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), 0x00);
	n = field(msg, uuid, strlen(uuid));
	send_bytewise(&c, msg, n);
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), 0x00);
	/* Step 3: the keys, with their length. */
	cr_assert(rc_read_exact(&c, got, 4 + strlen(keys)));
	n = field(msg, keys, strlen(keys));
	cr_assert_eq(memcmp(got, msg, n), 0, "keys as sent, with length");
	/* Nothing flows before the accept byte. */
	cr_assert(rc_send_frames(&p, 0, 1));
	cr_assert(rc_quiet(&c, 0.1), "a frame before the accept byte");
	/* Step 4: accept; frames sent byte by byte arrive whole, exact. */
	cr_assert(rc_send_byte(&c, 0x00));
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
	msg[0] = 0x0b;
	n = 1 + field(msg + 1, "nobody", 6);
	msg[n++] = 0x00;
	cr_assert(rc_send(&c, msg, n));
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), 0x00);
	cr_assert_eq(rc_byte(&c, RC_TIMEOUT), 0x01);
	cr_assert_eq(rc_read(&c, msg, 1, RC_TIMEOUT), 0, "no clean EOF");
	rc_close(&c);
	expect_metric("ferry_relay_refused_total", 2);
	expect_log("(uuid 'nobody') closed after", 2);
	expect_log("refused: no producer holds this uuid", 2);

	/* Neither 0x0a nor 0x0b (nor a letter, HTTP): no answer, closed,
	 * logged with the peer. */
	cr_assert_eq(rc_connect(&c, tls(), port, 0), 0);
	cr_assert(rc_send(&c, "\x01 / HTTP/1.0\r\n\r\n", 18));
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

/* ---- slow consumers ---- */

#define SLOW_KEYS 64			/* 256-byte frames */
#define SLOW_FRAMES 16384		/* 4 MB: far beyond any buffer */
#define SLOW_BATCH 64			/* 16 KB: far below queue_bytes */

/*
 * One consumer that stops reading (small receive window) and two that
 * read in threads.  The producer sends in batches and waits for the
 * readers after each, so their queues never fill: whatever the machine's
 * load, only the stalled one can be slow.  Returns the stalled consumer.
 */
static void
slow_setup(struct rclient *p, struct rclient *fast, struct rc_reader *rd,
    struct rclient *slow, const char *uuid, size_t want)
{
	char *keys = keys_n(SLOW_KEYS);

	producer(p, uuid, keys);
	consumer(slow, uuid, 4096);
	for (int i = 0; i < 2; i++) {
		consumer(&fast[i], uuid, 0);
		reader_start(&rd[i], &fast[i], want);
	}
	free(keys);
}

static void
send_in_batches(struct rclient *p, struct rc_reader *rd, size_t n)
{
	for (size_t i = 0; i < n; i += SLOW_BATCH) {
		cr_assert(rc_send_frames(p, (uint32_t)i, SLOW_BATCH),
		    "the producer was blocked at frame %zu", i);
		readers_reach(rd, 2, i + SLOW_BATCH);
	}
}

BOTH(slow_consumer_drop)
ParameterizedTest(int *t, relay, slow_consumer_drop, .timeout = 120,
    .fini = cleanup)
{
	struct rclient p, fast[2], slow;
	struct rc_reader rd[2];
	uint32_t *seqs = calloc(SLOW_FRAMES, sizeof(*seqs));
	size_t got, gaps = 0;
	bool torn;

	cr_assert_not_null(seqs);
	start_relay(*t, "queue_bytes = 65536\ngrace = 0\n");
	slow_setup(&p, fast, rd, &slow, "slow-drop", SLOW_FRAMES);
	/* The producer is never held: all of it goes, at the readers' pace. */
	send_in_batches(&p, rd, SLOW_FRAMES);
	for (int i = 0; i < 2; i++) {
		reader_join(&rd[i]);
		cr_assert_eq(rd[i].got, SLOW_FRAMES);
		for (size_t k = 0; k < SLOW_FRAMES; k++)
			cr_assert_eq(rd[i].seqs[k], k, "reader %d: frame %zu "
			    "is %u", i, k, rd[i].seqs[k]);
	}
	/* The producer leaves (grace 0): the stalled consumer's queue is
	 * flushed, then it is closed.  It saw whole frames, in order, with
	 * gaps. */
	rc_close(&p);
	got = rc_read_frames(&slow, SLOW_FRAMES, seqs, &torn);
	cr_assert_not(torn, "a torn frame after %zu", got);
	cr_assert(rc_closed(&slow, RC_TIMEOUT));
	cr_assert_gt(got, 0);
	cr_assert_lt(got, SLOW_FRAMES, "nothing was dropped");
	for (size_t k = 1; k < got; k++) {
		cr_assert_gt(seqs[k], seqs[k - 1], "out of order at %zu", k);
		gaps += seqs[k] != seqs[k - 1] + 1;
	}
	gaps += seqs[0] != 0 || seqs[got - 1] != SLOW_FRAMES - 1;
	cr_assert_gt(gaps, 0);
	/* Every frame is accounted for: queued or dropped, never both. */
	expect_metric("ferry_relay_frames_in_total", SLOW_FRAMES);
	expect_metric("ferry_relay_frames_dropped_total",
	    (long long)(SLOW_FRAMES - got));
	expect_metric("ferry_relay_frames_out_total",
	    (long long)(2 * SLOW_FRAMES + got));
	expect_log(" dropped, ", 3);
	rc_close(&slow);
	for (int i = 0; i < 2; i++) {
		rc_close(&fast[i]);
		free(rd[i].seqs);
	}
	free(seqs);
}

/* ---- bursts ---- */

#define BURST_KEYS 52			/* 208-byte frames */
#define BURST_FRAMES 5000		/* 1.04 MB in one write */
#define BURSTS 8			/* 8.3 MB: past the kernel's 4 MB
					   send buffer for the stalled one */

/*
 * A producer writes 5,000 frames in one write (1 MB, four times the
 * default queue_bytes), eight times, each once the readers have the one
 * before.  Consumers that keep reading get every frame of every burst, in
 * order, under the default drop policy; the one that never reads (a 4 KB
 * receive window) is the only one to lose frames, and they are counted.
 * Before, each read's frames were queued to every consumer and written
 * once per loop iteration, so a consumer reading as fast as the kernel
 * delivered was judged slow and got about 2,000 of a burst's 5,000.
 */
/* Waits until every reader has frames 0 .. n - 1, none lost. */
static void
readers_take(struct rc_reader *rs, size_t nr, size_t n)
{
	size_t i;
	int r = rc_readers_take(rs, nr, n, 20, &i);
	size_t g = rc_reader_got(&rs[i]);

	cr_assert_neq(r, RC_ERROR, "reader %zu lost frames: it has %zu, the "
	    "last numbered %u", i, g, g > 0 ? rs[i].seqs[g - 1] : 0);
	cr_assert_eq(r, RC_OK, "reader %zu stuck at %zu of %zu", i, g, n);
}

BOTH(burst_reaches_consumers_that_read)
ParameterizedTest(int *t, relay, burst_reaches_consumers_that_read,
    .timeout = 120, .fini = cleanup)
{
	const size_t total = (size_t)BURSTS * BURST_FRAMES;
	struct rclient p, fast[2], slow;
	struct rc_reader rd[2];
	size_t fs = BURST_KEYS * 4, got;
	uint8_t *burst = malloc(BURST_FRAMES * fs);
	uint32_t *seqs = calloc(total, sizeof(*seqs));
	char *keys = keys_n(BURST_KEYS);
	bool torn;

	cr_assert(burst != NULL && seqs != NULL);
	start_relay(*t, "grace = 0\n");
	producer(&p, "burst", keys);
	consumer(&slow, "burst", 4096);
	for (int i = 0; i < 2; i++) {
		consumer(&fast[i], "burst", 0);
		reader_start(&rd[i], &fast[i], total);
	}
	for (uint32_t b = 0; b < BURSTS; b++) {
		for (uint32_t k = 0; k < BURST_FRAMES; k++)
			rc_frame(burst + k * fs, BURST_KEYS,
			    b * BURST_FRAMES + k);
		cr_assert(rc_send(&p, burst, BURST_FRAMES * fs),
		    "burst %u did not go", b);
		readers_take(rd, 2, (size_t)(b + 1) * BURST_FRAMES);
	}
	for (int i = 0; i < 2; i++) {
		reader_join(&rd[i]);
		for (size_t k = 0; k < total; k++)
			cr_assert_eq(rd[i].seqs[k], k, "reader %d: frame %zu "
			    "is %u", i, k, rd[i].seqs[k]);
		rc_reader_free(&rd[i]);
	}
	expect_metric("ferry_relay_frames_in_total", (long long)total);
	/* The producer leaves: the stalled consumer gets its queue, then EOF. */
	rc_close(&p);
	got = rc_read_frames(&slow, total, seqs, &torn);
	cr_assert_not(torn, "a torn frame after %zu", got);
	cr_assert(rc_closed(&slow, RC_TIMEOUT));
	cr_assert_lt(got, total, "the stalled consumer lost nothing");
	for (size_t k = 1; k < got; k++)
		cr_assert_gt(seqs[k], seqs[k - 1], "out of order at %zu", k);
	/* Its losses, and only its, are counted. */
	expect_metric("ferry_relay_frames_dropped_total",
	    (long long)(total - got));
	expect_metric("ferry_relay_frames_out_total",
	    (long long)(2 * total + got));
	rc_close(&slow);
	for (int i = 0; i < 2; i++)
		rc_close(&fast[i]);
	free(burst);
	free(seqs);
	free(keys);
}

BOTH(slow_consumer_disconnect)
ParameterizedTest(int *t, relay, slow_consumer_disconnect, .timeout = 120,
    .fini = cleanup)
{
	struct rclient p, fast[2], slow;
	struct rc_reader rd[2];
	uint32_t *seqs = calloc(SLOW_FRAMES, sizeof(*seqs));
	size_t got;
	bool torn;

	cr_assert_not_null(seqs);
	start_relay(*t, "slow_consumer = disconnect\nqueue_bytes = 65536\n"
	    "grace = 0\n");
	slow_setup(&p, fast, rd, &slow, "slow-disconnect", SLOW_FRAMES);
	send_in_batches(&p, rd, SLOW_FRAMES);
	/* Closed by the server while the others carried on. */
	expect_metric("ferry_relay_consumers", 2);
	expect_log("limit: slow consumer: ", 1);
	/* What it had been sent is the start of the stream, gapless; the
	 * stream ends there (the last frame may be cut by the close). */
	got = rc_read_frames(&slow, SLOW_FRAMES, seqs, &torn);
	cr_assert_not(torn);
	cr_assert_lt(got, SLOW_FRAMES);
	for (size_t k = 0; k < got; k++)
		cr_assert_eq(seqs[k], k);
	cr_assert(rc_closed(&slow, RC_TIMEOUT));
	rc_close(&p);
	for (int i = 0; i < 2; i++) {
		reader_join(&rd[i]);
		cr_assert_eq(rd[i].got, SLOW_FRAMES);
		cr_assert_eq(rd[i].seqs[SLOW_FRAMES - 1], SLOW_FRAMES - 1);
		rc_close(&fast[i]);
		free(rd[i].seqs);
	}
	cr_assert_gt(metric("ferry_relay_frames_dropped_total"), 0);
	rc_close(&slow);
	free(seqs);
}

#define BLOCK_FRAMES (4 * SLOW_FRAMES)	/* 16 MB */

BOTH(slow_consumer_block)
ParameterizedTest(int *t, relay, slow_consumer_block, .timeout = 120,
    .fini = cleanup)
{
	struct rclient p, fast[2], slow;
	struct rc_reader rd[3];
	size_t fs = SLOW_KEYS * 4, total = (size_t)BLOCK_FRAMES * fs, off = 0;
	uint8_t *stream = malloc(total);
	int small = 65536;

	cr_assert_not_null(stream);
	for (size_t k = 0; k < BLOCK_FRAMES; k++)
		rc_frame(stream + k * fs, SLOW_KEYS, (uint32_t)k);
	start_relay(*t, "slow_consumer = block\nqueue_bytes = 65536\n"
	    "grace = 0\n");
	slow_setup(&p, fast, rd, &slow, "slow-block", BLOCK_FRAMES);
	/* Our own send buffer stays small, so a block shows soon. */
	setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	/* The stalled consumer holds the producer: a write stops. */
	while (off < total) {
		size_t w = rc_write(&p, stream + off, total - off > 65536 ?
		    65536 : total - off, 1.0);
		off += w;
		if (w < 65536)
			break;
	}
	cr_assert_lt(off, total, "the producer was never held");
	cr_log_info("%s: held after %zu of %zu bytes", lname(), off, total);
	/* It reads: everything flows again, nothing is lost. */
	reader_start(&rd[2], &slow, BLOCK_FRAMES);
	while (off < total) {
		size_t w = rc_write(&p, stream + off, total - off, RC_TIMEOUT);
		cr_assert_gt(w, 0, "still held at %zu", off);
		off += w;
	}
	for (int i = 0; i < 3; i++) {
		reader_join(&rd[i]);
		cr_assert_eq(rd[i].got, BLOCK_FRAMES, "reader %d: %zu", i,
		    rd[i].got);
		for (size_t k = 0; k < BLOCK_FRAMES; k += 997)
			cr_assert_eq(rd[i].seqs[k], k);
		free(rd[i].seqs);
	}
	expect_metric("ferry_relay_frames_dropped_total", 0);
	rc_close(&p);
	rc_close(&slow);
	for (int i = 0; i < 2; i++)
		rc_close(&fast[i]);
	free(stream);
}

/* The stalled consumer goes away: the producer is released at once. */
BOTH(slow_consumer_block_then_leaves)
ParameterizedTest(int *t, relay, slow_consumer_block_then_leaves,
    .timeout = 120, .fini = cleanup)
{
	struct rclient p, fast[2], slow;
	struct rc_reader rd[2];
	size_t fs = SLOW_KEYS * 4, total = (size_t)BLOCK_FRAMES * fs, off = 0;
	uint8_t *stream = malloc(total);
	int small = 65536;

	cr_assert_not_null(stream);
	for (size_t k = 0; k < BLOCK_FRAMES; k++)
		rc_frame(stream + k * fs, SLOW_KEYS, (uint32_t)k);
	start_relay(*t, "slow_consumer = block\nqueue_bytes = 65536\n");
	slow_setup(&p, fast, rd, &slow, "block-leave", BLOCK_FRAMES);
	setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	while (off < total) {
		size_t w = rc_write(&p, stream + off, total - off > 65536 ?
		    65536 : total - off, 1.0);
		off += w;
		if (w < 65536)
			break;
	}
	cr_assert_lt(off, total, "the producer was never held");
	rc_reset(&slow);
	while (off < total) {
		size_t w = rc_write(&p, stream + off, total - off, RC_TIMEOUT);
		cr_assert_gt(w, 0, "still held at %zu after the consumer left",
		    off);
		off += w;
	}
	for (int i = 0; i < 2; i++) {
		reader_join(&rd[i]);
		cr_assert_eq(rd[i].got, BLOCK_FRAMES, "reader %d: %zu", i,
		    rd[i].got);
		for (size_t k = 0; k < BLOCK_FRAMES; k += 997)
			cr_assert_eq(rd[i].seqs[k], k);
		free(rd[i].seqs);
		rc_close(&fast[i]);
	}
	expect_metric("ferry_relay_frames_dropped_total", 0);
	expect_metric("ferry_relay_consumers", 0);
	rc_close(&p);
	free(stream);
}

/* ---- grace period, takeover ---- */

BOTH(grace_resume)
ParameterizedTest(int *t, relay, grace_resume, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p1, p2, c;

	start_relay(*t, "");			/* grace 10 s */
	producer(&p1, "g-resume", "a,b");
	consumer(&c, "g-resume", 0);
	cr_assert(rc_send_frames(&p1, 0, 10));
	expect_frames(&c, 0, 10);
	rc_reset(&p1);
	expect_log("uuid 'g-resume': producer gone, consumers wait", 1);
	expect_metric("ferry_relay_producers", 0);
	expect_metric("ferry_relay_consumers", 1);
	/* The same uuid and keys: the stream resumes to the same consumer. */
	producer(&p2, "g-resume", "a,b");
	expect_log("registered uuid 'g-resume' with 2 keys (consumers: 1)", 1);
	cr_assert(rc_send_frames(&p2, 100, 10));
	expect_frames(&c, 100, 10);
	rc_close(&p2);
	rc_close(&c);
}

BOTH(grace_expiry_and_other_keys)
ParameterizedTest(int *t, relay, grace_expiry_and_other_keys, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p, c, c2;

	start_relay(*t, "grace = 0.5\n");
	producer(&p, "g-expire", "a,b");
	consumer(&c, "g-expire", 0);
	cr_assert(rc_send_frames(&p, 0, 5));
	expect_frames(&c, 0, 5);
	rc_close(&p);
	/* No producer holds the uuid: a new consumer is refused, as in the
	 * table; the waiting one gets the end of its stream. */
	cr_assert_eq(rc_consumer(&c2, tls(), ferry_port(&fp, lname()),
	    "g-expire", 0), RC_REFUSED);
	rc_close(&c2);
	cr_assert(rc_closed(&c, RC_TIMEOUT), "not closed after the grace");
	rc_close(&c);
	expect_log("uuid 'g-expire': no producer within the grace period", 1);
	expect_log("producer gone, grace period over", 1);
	expect_metric("ferry_relay_devices", 0);

	/* Back within the grace period but with other keys: the waiting
	 * consumers cannot use its frames and are closed at once. */
	producer(&p, "g-keys", "a,b");
	consumer(&c, "g-keys", 0);
	rc_close(&p);
	expect_log("uuid 'g-keys': producer gone, consumers wait", 1);
	producer(&p, "g-keys", "a,b,c");
	cr_assert(rc_closed(&c, RC_TIMEOUT));
	rc_close(&c);
	expect_log("producer came back with other keys", 1);
	consumer(&c, "g-keys", 0);
	cr_assert_str_eq(c.keys, "a,b,c");
	cr_assert(rc_send_frames(&p, 7, 2));
	expect_frames(&c, 7, 2);
	rc_close(&c);
	rc_close(&p);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_producers", 0);
}

BOTH(takeover_replace)
ParameterizedTest(int *t, relay, takeover_replace, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p1, p2, c;
	uint8_t msg[256];
	size_t n = 0;

	start_relay(*t, "");
	producer(&p1, "phone", "x,y");
	consumer(&c, "phone", 0);
	cr_assert(rc_send_frames(&p1, 0, 5));
	expect_frames(&c, 0, 5);
	/* The phone comes back on a new connection and says it all at
	 * once, frames included, before reading any answer. */
	cr_assert_eq(rc_connect(&p2, tls(), ferry_port(&fp, lname()), 0), 0);
	msg[n++] = 0x0a;
	n += field(msg + n, "phone", 5);
	n += field(msg + n, "x,y", 3);
	for (uint32_t k = 0; k < 5; k++, n += 8)
		rc_frame(msg + n, 2, 100 + k);
	cr_assert(rc_send(&p2, msg, n));
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rc_byte(&p2, RC_TIMEOUT), 0x00, "ack %d", i);
	expect_frames(&c, 100, 5);
	cr_assert(rc_closed(&p1, RC_TIMEOUT), "the old producer stays");
	expect_log("replaced by a new producer from 127.0.0.1:", 1);
	expect_metric("ferry_relay_producers", 1);
	rc_close(&p1);
	rc_close(&p2);
	rc_close(&c);
}

BOTH(takeover_refused)
ParameterizedTest(int *t, relay, takeover_refused, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p1, p2, c;

	start_relay(*t, "takeover = refuse\n");
	producer(&p1, "phone", "x,y");
	consumer(&c, "phone", 0);
	cr_assert_eq(rc_producer(&p2, tls(), ferry_port(&fp, lname()),
	    "phone", "x,y"), RC_REFUSED);
	cr_assert_eq(p2.refused_at, 2, "refused at the uuid");
	cr_assert(rc_closed(&p2, RC_TIMEOUT));
	rc_close(&p2);
	expect_log("refused: uuid held by a live producer", 1);
	/* The first one never noticed. */
	cr_assert(rc_send_frames(&p1, 0, 5));
	expect_frames(&c, 0, 5);
	rc_close(&p1);
	rc_close(&c);
}

/* ---- consumer slots ---- */

/*
 * A consumer that asks for the keys and never accepts them: it holds
 * the connection and nothing else.  Answered 0x00 and the keys.
 */
static void
squatter(struct rclient *x, const char *uuid)
{
	cr_assert_eq(rc_connect(x, tls(), ferry_port(&fp, lname()), 0), 0);
	int r = rc_ask_keys(x, uuid);
	cr_assert_eq(r, RC_OK, "squatter of '%s': %d (refused at %d)", uuid, r,
	    x->refused_at);
}

#define SQUATTERS 64			/* max_consumers by default */

/*
 * max_consumers consumers that send their uuid and never accept: a real
 * consumer still gets the keys and the frames.  Slots are held by
 * accepted consumers only; the squatters stay connected (within their
 * registration deadline, 60 s here) and are sent nothing past the keys.
 */
BOTH(squatters_hold_no_slot)
ParameterizedTest(int *t, relay, squatters_hold_no_slot, .timeout = 120,
    .fini = cleanup)
{
	static struct rclient sq[SQUATTERS];
	struct rclient p, c, c2;

	start_relay(*t, "handshake_timeout = 60\n");
	producer(&p, "crowded", "a,b");
	for (int i = 0; i < SQUATTERS; i++)
		squatter(&sq[i], "crowded");
	consumer(&c, "crowded", 0);
	cr_assert_str_eq(c.keys, "a,b");
	cr_assert(rc_send_frames(&p, 0, 10));
	expect_frames(&c, 0, 10);
	expect_metric("ferry_relay_consumers", 1);
	expect_metric("ferry_relay_consumers_pending", SQUATTERS);
	/* Room for max_consumers accepted ones, whatever waits. */
	for (int i = 1; i < SQUATTERS; i++) {
		consumer(&c2, "crowded", 0);
		rc_close(&c2);
	}
	for (int i = 0; i < SQUATTERS; i++)
		cr_assert(rc_quiet(&sq[i], 0), "squatter %d was sent a frame "
		    "or closed", i);
	for (int i = 0; i < SQUATTERS; i++)
		rc_close(&sq[i]);
	cr_assert(rc_send_frames(&p, 10, 5));
	expect_frames(&c, 10, 5);
	expect_metric("ferry_relay_consumers_pending", 0);
	expect_metric("ferry_relay_refused_total", 0);
	rc_close(&c);
	rc_close(&p);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_devices", 0);
}

/*
 * A consumer given the keys while there was room, that accepts once
 * max_consumers others have: it is refused at its accept byte.  The
 * protocol has no answer after the keys, so it is closed without one,
 * before any frame (the last value included), logged and counted.
 */
BOTH(squatter_accepting_over_the_limit)
ParameterizedTest(int *t, relay, squatter_accepting_over_the_limit,
    .timeout = 60, .fini = cleanup)
{
	struct rclient p, s, c1, c2, x;
	uint8_t b;

	start_relay(*t, "max_consumers = 2\nlast_value = on\n"
	    "handshake_timeout = 60\n");
	producer(&p, "full", "a,b");
	cr_assert(rc_send_frames(&p, 0, 5));
	expect_metric("ferry_relay_frames_in_total", 5);
	squatter(&s, "full");
	consumer(&c1, "full", 0);
	consumer(&c2, "full", 0);
	expect_frames(&c1, 4, 1);		/* the last value */
	expect_frames(&c2, 4, 1);
	/* Full: a newcomer is answered 0x01 at its uuid, as before. */
	cr_assert_eq(rc_consumer(&x, tls(), ferry_port(&fp, lname()), "full",
	    0), RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	cr_assert(rc_closed(&x, RC_TIMEOUT));
	rc_close(&x);
	/* The squatter accepts now: closed, with nothing after the keys. */
	cr_assert(rc_send_byte(&s, 0x00));
	expect_log("refused at its accept byte: too many consumers for this "
	    "uuid", 1);
	cr_assert(rc_send_frames(&p, 5, 5));
	expect_frames(&c1, 5, 5);
	expect_frames(&c2, 5, 5);
	cr_assert_eq(rc_read(&s, &b, 1, RC_TIMEOUT), 0, "the refused "
	    "squatter got a byte or no clean close");
	rc_close(&s);
	expect_metric("ferry_relay_refused_total", 2);
	expect_metric("ferry_relay_consumers", 2);
	expect_metric("ferry_relay_consumers_pending", 0);
	/* A slot freed is a slot again. */
	rc_close(&c1);
	expect_metric("ferry_relay_consumers", 1);
	consumer(&c1, "full", 0);
	expect_frames(&c1, 9, 1);
	cr_assert(rc_send_frames(&p, 10, 2));
	expect_frames(&c1, 10, 2);
	expect_frames(&c2, 10, 2);
	rc_close(&c1);
	rc_close(&c2);
	rc_close(&p);
}

/*
 * Consumers given the keys but not yet accepted follow the device as the
 * accepted ones do: one accepts within the grace period and gets the
 * resumed stream; when the producer comes back with other keys, those
 * given the old keys are closed, accepted or not.
 */
BOTH(pending_consumers_follow_the_device)
ParameterizedTest(int *t, relay, pending_consumers_follow_the_device,
    .timeout = 60, .fini = cleanup)
{
	struct rclient p, c, s1, s2;

	start_relay(*t, "grace = 30\nhandshake_timeout = 60\n");
	producer(&p, "follow", "a,b");
	consumer(&c, "follow", 0);
	squatter(&s1, "follow");
	rc_close(&p);
	expect_log("uuid 'follow': producer gone, consumers wait "
	    "(consumers: 1, 1 pending)", 1);
	/* s1 accepts in the grace period: it is in. */
	cr_assert(rc_send_byte(&s1, 0x00));
	expect_metric("ferry_relay_consumers", 2);
	expect_metric("ferry_relay_consumers_pending", 0);
	producer(&p, "follow", "a,b");
	expect_log("registered uuid 'follow' with 2 keys (consumers: 2)", 1);
	cr_assert(rc_send_frames(&p, 0, 3));
	expect_frames(&c, 0, 3);
	expect_frames(&s1, 0, 3);
	/* s2 gets these keys, then the producer comes back with others. */
	squatter(&s2, "follow");
	expect_metric("ferry_relay_consumers_pending", 1);
	rc_close(&p);
	producer(&p, "follow", "a,b,c");
	cr_assert(rc_closed(&c, RC_TIMEOUT), "an accepted consumer stayed");
	cr_assert(rc_closed(&s1, RC_TIMEOUT), "an accepted consumer stayed");
	cr_assert(rc_closed(&s2, RC_TIMEOUT), "a pending consumer stayed");
	rc_close(&c);
	rc_close(&s1);
	rc_close(&s2);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_consumers_pending", 0);
	consumer(&c, "follow", 0);
	cr_assert_str_eq(c.keys, "a,b,c");
	rc_close(&c);
	rc_close(&p);
	expect_metric("ferry_relay_devices", 0);
}

/* ---- limits ---- */

struct bad_client {
	const char *name;
	uint8_t msg[80];
	size_t len;
	const char *answer;		/* bytes expected before the close */
	size_t alen;
};

/* A witness pair must keep working while bad clients come and go. */
static void
witness_ok(struct rclient *p, struct rclient *c, uint32_t *seq)
{
	cr_assert(rc_send_frames(p, *seq, 1));
	expect_frames(c, *seq, 1);
	(*seq)++;
}

static void
try_bad(const struct bad_client *b, const uint8_t *tail, size_t tlen)
{
	struct rclient x;
	uint8_t got[8];

	cr_assert_eq(rc_connect(&x, tls(), ferry_port(&fp, lname()), 0), 0);
	cr_assert(rc_send(&x, b->msg, b->len), "%s", b->name);
	if (tail != NULL)
		(void)rc_write(&x, tail, tlen, RC_TIMEOUT);
	cr_assert(rc_read_exact(&x, got, b->alen), "%s: no answer", b->name);
	cr_assert_eq(memcmp(got, b->answer, b->alen), 0, "%s: answer",
	    b->name);
	cr_assert_eq(rc_read(&x, got, 1, RC_TIMEOUT), 0,
	    "%s: no clean close after the answer", b->name);
	rc_close(&x);
}

static size_t
put_u32(uint8_t *m, uint32_t v)
{
	m[0] = (uint8_t)(v >> 24);
	m[1] = (uint8_t)(v >> 16);
	m[2] = (uint8_t)(v >> 8);
	m[3] = (uint8_t)v;
	return 4;
}

/* role 0x0a, uuid "u", then a keys length of klen (the keys follow). */
static void
keys_claim(struct bad_client *b, const char *name, uint32_t klen)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
	b->msg[0] = 0x0a;
	b->len = 1 + field(b->msg + 1, "u", 1);
	b->len += put_u32(b->msg + b->len, klen);
	b->answer = "\x00\x00\x01";
	b->alen = 3;
}

BOTH(each_limit)
ParameterizedTest(int *t, relay, each_limit, .timeout = 120,
    .fini = cleanup)
{
	struct rclient wp, wc, x;
	struct bad_client b;
	uint32_t seq = 0;
	uint8_t *big = calloc(1, 70000);
	char *k16385 = rc_key_names(16385), *k16384 = rc_key_names(16384);
	int refused = 0;

	cr_assert_not_null(big);
	cr_assert(k16385 != NULL && k16384 != NULL);
	start_relay(*t, "");
	producer(&wp, "witness", "a,b");
	consumer(&wc, "witness", 0);
	witness_ok(&wp, &wc, &seq);

	/* The uuid, producer and consumer: empty, 256 bytes, 4 GB. */
	const uint32_t ulens[] = { 0, 256, 0xffffffffu };
	for (int role = 0x0a; role <= 0x0b; role++)
		for (size_t i = 0; i < 3; i++) {
			memset(&b, 0, sizeof(b));
			b.name = "uuid length";
			b.msg[0] = (uint8_t)role;
			b.len = 1 + put_u32(b.msg + 1, ulens[i]);
			b.answer = "\x00\x01";
			b.alen = 2;
			try_bad(&b, big, ulens[i] == 256 ? 256 : 100);
			witness_ok(&wp, &wc, &seq);
			refused++;
		}
	memset(&b, 0, sizeof(b));
	b.name = "uuid not UTF-8";
	b.msg[0] = 0x0a;
	b.len = 1 + field(b.msg + 1, "\xc0\xaf", 2);
	b.answer = "\x00\x01";
	b.alen = 2;
	try_bad(&b, NULL, 0);
	refused++;
	/* The keys: empty, 65537 bytes, a 4 GB claim. */
	keys_claim(&b, "keys length 0", 0);
	try_bad(&b, big, 100);
	keys_claim(&b, "keys of 65537 bytes", 65537);
	try_bad(&b, big, 65537);
	keys_claim(&b, "keys claiming 4 GB", 0xffffffffu);
	try_bad(&b, big, 100);
	refused += 3;
	witness_ok(&wp, &wc, &seq);
	/* Empty names. */
	const char *names[] = { ",a", "a,,b", "a," };
	for (size_t i = 0; i < 3; i++) {
		memset(&b, 0, sizeof(b));
		b.name = names[i];
		b.msg[0] = 0x0a;
		b.len = 1 + field(b.msg + 1, "u", 1);
		b.len += field(b.msg + b.len, names[i], strlen(names[i]));
		b.answer = "\x00\x00\x01";
		b.alen = 3;
		try_bad(&b, NULL, 0);
		refused++;
	}
	/* 16385 keys (61,571 bytes): one too many. */
	keys_claim(&b, "16385 keys", (uint32_t)strlen(k16385));
	try_bad(&b, (const uint8_t *)k16385, strlen(k16385));
	refused++;
	witness_ok(&wp, &wc, &seq);
	expect_metric("ferry_relay_refused_total", refused);

	/* Right at the limits: accepted. */
	char u255[256];
	memset(u255, 'u', 255);
	u255[255] = '\0';
	producer(&x, u255, "a");
	rc_close(&x);
	producer(&x, "many", k16384);
	struct rclient xc;
	consumer(&xc, "many", 0);
	cr_assert_eq(xc.nkeys, 16384);
	cr_assert_str_eq(xc.keys, k16384);
	cr_assert(rc_send_frames(&x, 3, 2));
	expect_frames(&xc, 3, 2);
	rc_close(&xc);
	rc_close(&x);
	/* A consumer that declines the keys is closed. */
	cr_assert_eq(rc_connect(&x, tls(), ferry_port(&fp, lname()), 0), 0);
	uint8_t m[32], got[16];
	m[0] = 0x0b;
	size_t n = 1 + field(m + 1, "witness", 7);
	m[n++] = 0x02;
	cr_assert(rc_send(&x, m, n));
	cr_assert(rc_read_exact(&x, got, 2 + 4 + 3));
	cr_assert_eq(memcmp(got, "\x00\x00\x00\x00\x00\x03" "a,b", 9), 0);
	cr_assert(rc_closed(&x, RC_TIMEOUT));
	rc_close(&x);
	expect_log("declined the keys (0x02)", 1);
	witness_ok(&wp, &wc, &seq);
	rc_close(&wp);
	rc_close(&wc);
	free(big);
	free(k16385);
	free(k16384);
}

/*
 * Key names a consumer could not tell apart or show: with a NUL or
 * another control character, or the same name twice (next to each other
 * or 16,383 names apart).  Each producer is answered 0x01 at its keys and
 * closed; the witness pair never notices.
 */
BOTH(bad_key_names)
ParameterizedTest(int *t, relay, bad_key_names, .timeout = 120,
    .fini = cleanup)
{
	struct rclient wp, wc, x;
	struct bad_client b;
	uint32_t seq = 0;
	char *far = rc_key_names(16384);
	int refused = 0;

	cr_assert_not_null(far);
	/* The last of 16,384 names is the first's: a duplicate far apart. */
	strcpy(strrchr(far, ',') + 1, "0");
	start_relay(*t, "");
	producer(&wp, "witness", "a,b");
	consumer(&wc, "witness", 0);
	witness_ok(&wp, &wc, &seq);
	/* Names with a NUL or a control character, or twice the same. */
	static const struct { const char *k; size_t len; } bad_names[] = {
		{ "a\0b", 3 }, { "x,\0", 3 }, { "x,y\tz", 5 }, { "x\x7f", 2 },
		{ "a,a", 3 }, { "jawOpen,eyeBlink,jawOpen", 24 },
	};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]);
	    i++) {
		keys_claim(&b, "bad key names", (uint32_t)bad_names[i].len);
		try_bad(&b, (const uint8_t *)bad_names[i].k, bad_names[i].len);
		refused++;
		witness_ok(&wp, &wc, &seq);
	}
	keys_claim(&b, "16384 names, the first again last",
	    (uint32_t)strlen(far));
	try_bad(&b, (const uint8_t *)far, strlen(far));
	refused++;
	witness_ok(&wp, &wc, &seq);
	expect_metric("ferry_relay_refused_total", refused);
	/* Seven close lines: within the log's 20 a second. */
	expect_log("refused: key 1 has a control character (0x00)", 1);
	expect_log("refused: key 2 has a control character (0x00)", 1);
	expect_log("refused: key 2 has a control character (0x09)", 1);
	expect_log("refused: key 1 has a control character (0x7f)", 1);
	expect_log("refused: keys 1 and 2 have the same name", 1);
	expect_log("refused: keys 1 and 3 have the same name", 1);
	expect_log("refused: keys 1 and 16384 have the same name", 1);
	expect_metric("ferry_relay_producers", 1);
	/* Alike is not the same: prefixes, case and blanks make names. */
	producer(&x, "alike", "a,ab,A, a");
	struct rclient xc;
	consumer(&xc, "alike", 0);
	cr_assert_str_eq(xc.keys, "a,ab,A, a");
	cr_assert(rc_send_frames(&x, 0, 2));
	expect_frames(&xc, 0, 2);
	witness_ok(&wp, &wc, &seq);
	rc_close(&xc);
	rc_close(&x);
	rc_close(&wc);
	rc_close(&wp);
	free(far);
}

BOTH(configured_limits)
ParameterizedTest(int *t, relay, configured_limits, .timeout = 60,
    .fini = cleanup)
{
	struct rclient x;
	int port = start_relay(*t, "max_uuid_bytes = 8\nmax_keys = 2\n"
	    "max_keys_bytes = 8\n");

	cr_assert_eq(rc_producer(&x, tls(), port, "123456789", "a"),
	    RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	rc_close(&x);
	cr_assert_eq(rc_producer(&x, tls(), port, "u", "a,b,c"), RC_REFUSED);
	cr_assert_eq(x.refused_at, 3);
	rc_close(&x);
	cr_assert_eq(rc_producer(&x, tls(), port, "u", "abcd,efgh"),
	    RC_REFUSED);
	cr_assert_eq(x.refused_at, 3);
	rc_close(&x);
	cr_assert_eq(rc_producer(&x, tls(), port, "12345678", "abc,efgh"),
	    RC_OK);
	rc_close(&x);
	expect_log("refused: 3 keys, more than 2", 1);
	expect_log("refused: keys length 9 out of range 1..8", 1);
}

/* ---- last_value ---- */

BOTH(last_value)
ParameterizedTest(int *t, relay, last_value, .timeout = 60, .fini = cleanup)
{
	struct rclient p, c;

	start_relay(*t, "last_value = on\n");
	producer(&p, "slow-sensor", "temp,pressure");
	cr_assert(rc_send_frames(&p, 0, 10));
	expect_metric("ferry_relay_frames_in_total", 10);
	/* A late consumer gets the latest frame at once ... */
	consumer(&c, "slow-sensor", 0);
	expect_frames(&c, 9, 1);
	/* ... then the stream as it goes on. */
	cr_assert(rc_send_frames(&p, 10, 2));
	expect_frames(&c, 10, 2);
	rc_close(&p);
	rc_close(&c);
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
	m[0] = 0x0a;
	n = 1 + field(m + 1, "gone", 4);
	n += field(m + n, "p,q,r", 5);
	for (size_t cut = 1; cut < n; cut += 2) {
		cr_assert_eq(rc_connect(&x, tls(), port, 0), 0);
		cr_assert(rc_send(&x, m, cut));
		if (cut % 4 == 1)
			rc_reset(&x);
		else
			rc_close(&x);
		witness_ok(&wp, &wc, &seq);
	}
	/* Consumers likewise. */
	m[0] = 0x0b;
	n = 1 + field(m + 1, "witness", 7);
	m[n++] = 0x00;
	for (size_t cut = 1; cut <= n; cut += 2) {
		cr_assert_eq(rc_connect(&x, tls(), port, 0), 0);
		cr_assert(rc_send(&x, m, cut));
		if (cut % 4 == 1)
			rc_reset(&x);
		else
			rc_close(&x);
		witness_ok(&wp, &wc, &seq);
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
	witness_ok(&wp, &wc, &seq);
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

/* Two plain listeners with different options, and an admin page. */
static void
start_two(const char *a, const char *b)
{
	char conf[2048];

	transport = T_PLAIN;
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[a]\nmode = relay\nbind = 127.0.0.1:0\n%s"
	    "[b]\nmode = relay\nbind = 127.0.0.1:0\n%s", a, b);
	ferry_start(&fp, conf);
}

/*
 * One uuid, a consumer on a drop listener that stops reading and one on a
 * block listener that reads: each gets its own listener's policy.  The
 * reading one holds nobody and loses nothing; the stalled one loses
 * frames, counted on its listener alone.
 */
Test(relay, consumer_policy_is_its_listeners_drop, .timeout = 120,
    .fini = cleanup)
{
	struct rclient p, slow, fast;
	struct rc_reader rd;
	uint32_t *seqs = calloc(SLOW_FRAMES, sizeof(*seqs));
	char *keys = keys_n(SLOW_KEYS);
	size_t got, gaps = 0;
	bool torn;

	cr_assert_not_null(seqs);
	start_two("slow_consumer = drop\nqueue_bytes = 65536\ngrace = 0\n",
	    "slow_consumer = block\nqueue_bytes = 65536\ngrace = 0\n");
	producer_at(&p, "b", "mixed", keys);
	consumer_at(&slow, "a", "mixed", 4096);
	consumer_at(&fast, "b", "mixed", 0);
	reader_start(&rd, &fast, SLOW_FRAMES);
	for (size_t i = 0; i < SLOW_FRAMES; i += SLOW_BATCH) {
		cr_assert(rc_send_frames(&p, (uint32_t)i, SLOW_BATCH),
		    "the producer was held at frame %zu", i);
		readers_reach(&rd, 1, i + SLOW_BATCH);
	}
	reader_join(&rd);
	for (size_t k = 0; k < SLOW_FRAMES; k++)
		cr_assert_eq(rd.seqs[k], k, "frame %zu is %u", k, rd.seqs[k]);
	rc_close(&p);
	got = rc_read_frames(&slow, SLOW_FRAMES, seqs, &torn);
	cr_assert_not(torn);
	cr_assert(rc_closed(&slow, RC_TIMEOUT));
	cr_assert_gt(got, 0);
	cr_assert_lt(got, SLOW_FRAMES, "nothing was dropped");
	for (size_t k = 1; k < got; k++) {
		cr_assert_gt(seqs[k], seqs[k - 1]);
		gaps += seqs[k] != seqs[k - 1] + 1;
	}
	cr_assert_gt(gaps + (seqs[got - 1] != SLOW_FRAMES - 1), 0);
	expect_metric_at("ferry_relay_frames_dropped_total", "a",
	    (long long)(SLOW_FRAMES - got));
	expect_metric_at("ferry_relay_frames_out_total", "a", (long long)got);
	expect_metric_at("ferry_relay_frames_dropped_total", "b", 0);
	expect_metric_at("ferry_relay_frames_out_total", "b", SLOW_FRAMES);
	expect_metric_at("ferry_relay_frames_in_total", "b", SLOW_FRAMES);
	rc_close(&slow);
	rc_close(&fast);
	free(rd.seqs);
	free(seqs);
	free(keys);
}

/*
 * The same pair the other way round: the consumer on the block listener
 * stops reading and holds the producer (so the drop consumer waits too);
 * once it reads, all of it reaches both.  The drop listener's queue holds
 * the whole stream, so the burst after the hold cannot overflow it.
 */
Test(relay, consumer_policy_is_its_listeners_block, .timeout = 120,
    .fini = cleanup)
{
	struct rclient p, slow, fast;
	struct rc_reader rd[2];
	size_t fs = SLOW_KEYS * 4, total = (size_t)BLOCK_FRAMES * fs, off = 0;
	uint8_t *stream = malloc(total);
	char *keys = keys_n(SLOW_KEYS);
	int small = 65536;

	cr_assert_not_null(stream);
	for (size_t k = 0; k < BLOCK_FRAMES; k++)
		rc_frame(stream + k * fs, SLOW_KEYS, (uint32_t)k);
	start_two("slow_consumer = drop\nqueue_bytes = 32m\n",
	    "slow_consumer = block\nqueue_bytes = 65536\n");
	producer_at(&p, "a", "mixed", keys);
	consumer_at(&slow, "b", "mixed", 4096);
	consumer_at(&fast, "a", "mixed", 0);
	reader_start(&rd[0], &fast, BLOCK_FRAMES);
	setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	while (off < total) {
		size_t w = rc_write(&p, stream + off, total - off > 65536 ?
		    65536 : total - off, 1.0);
		off += w;
		if (w < 65536)
			break;
	}
	cr_assert_lt(off, total, "the block consumer never held the producer");
	reader_start(&rd[1], &slow, BLOCK_FRAMES);
	while (off < total) {
		size_t w = rc_write(&p, stream + off, total - off, RC_TIMEOUT);
		cr_assert_gt(w, 0, "still held at %zu", off);
		off += w;
	}
	for (int i = 0; i < 2; i++) {
		reader_join(&rd[i]);
		cr_assert_eq(rd[i].got, BLOCK_FRAMES, "reader %d: %zu", i,
		    rd[i].got);
		for (size_t k = 0; k < BLOCK_FRAMES; k += 997)
			cr_assert_eq(rd[i].seqs[k], k);
		free(rd[i].seqs);
	}
	expect_metric_at("ferry_relay_frames_dropped_total", "a", 0);
	expect_metric_at("ferry_relay_frames_dropped_total", "b", 0);
	rc_close(&p);
	rc_close(&slow);
	rc_close(&fast);
	free(stream);
	free(keys);
}

/*
 * A device's settings (max_consumers, takeover, grace) come from its
 * producer's listener, whoever consumes it and from where; a connection's
 * limits from its own.  A takeover moves the device to the new
 * producer's listener.
 */
Test(relay, device_settings_follow_the_producer, .timeout = 60,
    .fini = cleanup)
{
	struct rclient pa, pb, c1, c2, x, long_p;

	start_two("max_consumers = 1\ntakeover = refuse\ngrace = 0\n"
	    "max_uuid_bytes = 8\n", "grace = 30\n");
	/* Owned by a: one consumer, wherever it comes from; no takeover. */
	producer_at(&pa, "a", "dev-a", "x,y");
	consumer_at(&c1, "b", "dev-a", 0);
	cr_assert_eq(rc_consumer(&x, false, ferry_port(&fp, "b"), "dev-a", 0),
	    RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	rc_close(&x);
	expect_log("refused: too many consumers for this uuid", 1);
	cr_assert_eq(rc_producer(&x, false, ferry_port(&fp, "b"), "dev-a",
	    "x,y"), RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	rc_close(&x);
	expect_log("refused: uuid held by a live producer", 1);
	/* Its producer leaves: a's grace (0), not b's (30), for c1. */
	rc_close(&pa);
	cr_assert(rc_closed(&c1, RC_TIMEOUT), "c1 waited b's grace");
	rc_close(&c1);
	expect_log("uuid 'dev-a': no producer within the grace period", 1);

	/* The uuid limit is the connection's: 12 bytes pass b, not a. */
	producer_at(&long_p, "b", "long-uuid-12", "x");
	cr_assert_eq(rc_consumer(&x, false, ferry_port(&fp, "a"),
	    "long-uuid-12", 0), RC_REFUSED);
	rc_close(&x);
	expect_log("refused: uuid length 12 out of range 1..8", 1);
	consumer_at(&x, "b", "long-uuid-12", 0);
	rc_close(&x);

	/* Owned by b: two consumers on a, though a allows one per uuid. */
	producer_at(&pb, "b", "dev-b", "x,y");
	consumer_at(&c1, "a", "dev-b", 0);
	consumer_at(&c2, "a", "dev-b", 0);
	expect_metric_at("ferry_relay_devices", "b", 2);
	expect_metric_at("ferry_relay_devices", "a", 0);
	/* b replaces: a producer on a takes it over, and a owns it now. */
	producer_at(&pa, "a", "dev-b", "x,y");
	cr_assert(rc_closed(&pb, RC_TIMEOUT), "the old producer stays");
	rc_close(&pb);
	expect_log("replaced by a new producer from 127.0.0.1:", 1);
	expect_metric_at("ferry_relay_devices", "a", 1);
	expect_metric_at("ferry_relay_devices", "b", 1);
	expect_metric_at("ferry_relay_producers", "a", 1);
	expect_metric_at("ferry_relay_producers", "b", 1);
	cr_assert(rc_send_frames(&pa, 0, 20));
	expect_frames(&c1, 0, 20);
	expect_frames(&c2, 0, 20);
	/* a's max_consumers = 1 now applies: no third one, from anywhere. */
	cr_assert_eq(rc_consumer(&x, false, ferry_port(&fp, "b"), "dev-b", 0),
	    RC_REFUSED);
	rc_close(&x);
	expect_log("refused: too many consumers for this uuid", 2);
	rc_close(&c1);
	rc_close(&c2);
	rc_close(&pa);
	rc_close(&long_p);
	expect_metric_at("ferry_relay_devices", "a", 0);
	expect_metric_at("ferry_relay_devices", "b", 0);
}
