/*
 * The device relay's slow consumers (drop, disconnect, block), bursts
 * past the kernel's buffers, and each consumer's policy and settings from
 * its listener, over plain TCP and TLS (see test_relay.c).
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
	size_t total, off;
	uint8_t *stream = frames_make(SLOW_KEYS, BLOCK_FRAMES, &total);
	int small = 65536;

	start_relay(*t, "slow_consumer = block\nqueue_bytes = 65536\n"
	    "grace = 0\n");
	slow_setup(&p, fast, rd, &slow, "slow-block", BLOCK_FRAMES);
	/* Our own send buffer stays small, so a block shows soon. */
	setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	/* The stalled consumer holds the producer: a write stops. */
	off = write_until_held(&p, stream, total);
	cr_assert_lt(off, total, "the producer was never held");
	cr_log_info("%s: held after %zu of %zu bytes", lname(), off, total);
	/* It reads: everything flows again, nothing is lost. */
	reader_start(&rd[2], &slow, BLOCK_FRAMES);
	write_rest(&p, stream, off, total, "");
	readers_check(rd, 3, BLOCK_FRAMES);
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
	size_t total, off;
	uint8_t *stream = frames_make(SLOW_KEYS, BLOCK_FRAMES, &total);
	int small = 65536;

	start_relay(*t, "slow_consumer = block\nqueue_bytes = 65536\n");
	slow_setup(&p, fast, rd, &slow, "block-leave", BLOCK_FRAMES);
	setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	off = write_until_held(&p, stream, total);
	cr_assert_lt(off, total, "the producer was never held");
	rc_reset(&slow);
	write_rest(&p, stream, off, total, " after the consumer left");
	readers_check(rd, 2, BLOCK_FRAMES);
	for (int i = 0; i < 2; i++)
		rc_close(&fast[i]);
	expect_metric("ferry_relay_frames_dropped_total", 0);
	expect_metric("ferry_relay_consumers", 0);
	rc_close(&p);
	free(stream);
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
	size_t total, off;
	uint8_t *stream = frames_make(SLOW_KEYS, BLOCK_FRAMES, &total);
	char *keys = keys_n(SLOW_KEYS);
	int small = 65536;

	start_two("slow_consumer = drop\nqueue_bytes = 32m\n",
	    "slow_consumer = block\nqueue_bytes = 65536\n");
	producer_at(&p, "a", "mixed", keys);
	consumer_at(&slow, "b", "mixed", 4096);
	consumer_at(&fast, "a", "mixed", 0);
	reader_start(&rd[0], &fast, BLOCK_FRAMES);
	setsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	off = write_until_held(&p, stream, total);
	cr_assert_lt(off, total, "the block consumer never held the producer");
	reader_start(&rd[1], &slow, BLOCK_FRAMES);
	write_rest(&p, stream, off, total, "");
	readers_check(rd, 2, BLOCK_FRAMES);
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
