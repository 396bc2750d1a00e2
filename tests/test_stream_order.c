/*
 * The stream suite on plain socketpairs: when reads are served and writes
 * leave (see test_stream.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "helpers.h"
#include "streamcheck.h"

/* ---- latency: when reads are served and writes leave ---- */

#define ORDER_N 8

/* Plain streams on socketpairs, their peers held by the test. */
struct many {
	struct tloop t;
	struct stream *s[ORDER_N];
	int peer[ORDER_N];
	int order[ORDER_N];		/* stream indexes, as served */
	int served;
	size_t pending_other;		/* the other stream's queue, seen by a callback */
	size_t pending_own;		/* its own, after writing to itself */
};

static int
stream_index(struct many *m, struct stream *s)
{
	for (int i = 0; i < ORDER_N; i++)
		if (m->s[i] == s)
			return i;
	return -1;
}

static void
many_close_cb(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct many *m = arg;
	int i = stream_index(m, s);

	(void)why;
	if (i >= 0)
		m->s[i] = NULL;
}

static void
many_open(struct many *m, stream_read_cb cb)
{
	memset(m, 0, sizeof(*m));
	tloop_init(&m->t);
	for (int i = 0; i < ORDER_N; i++) {
		int sv[2];

		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK,
		    0, sv), 0);
		m->s[i] = stream_new(&m->t.sl, sv[0], NULL);
		cr_assert_not_null(m->s[i]);
		m->peer[i] = sv[1];
		stream_set_callbacks(m->s[i], many_close_cb, m);
		cr_assert_eq(stream_read_bytes(m->s[i], 1, true, cb), 0);
	}
	/* Every watcher registered while nothing is readable. */
	tloop_run_for(&m->t, 0.05);
}

static void
many_close(struct many *m)
{
	for (int i = 0; i < ORDER_N; i++) {
		if (m->s[i] != NULL)
			stream_close(m->s[i], STREAM_CLOSE_LOCAL);
		close(m->peer[i]);
	}
	stream_loop_run_pending(&m->t.sl);
	cr_assert_eq(m->t.sl.live, 0, "a stream was not freed");
	tloop_destroy(&m->t);
}

static void
record_order(struct stream *s, const char *data, size_t len, void *arg)
{
	struct many *m = stream_arg(s);

	(void)data;
	(void)len;
	(void)arg;
	if (m->served < ORDER_N)
		m->order[m->served++] = stream_index(m, s);
}

static bool
all_served(void *arg)
{
	return ((struct many *)arg)->served == ORDER_N;
}

/*
 * Streams that became readable together are served in the order the
 * kernel reported them (the order their bytes arrived), oldest first.
 * libev calls the watchers of one poll in the reverse order: served
 * as it called them, the frame that had waited longest went out last
 * (at 1000 producers x 60 Hz, two frames of three behind a younger one).
 */
Test(stream, ready_streams_served_oldest_first, .timeout = 30)
{
	static const int arrival[ORDER_N] = { 5, 2, 7, 0, 3, 6, 1, 4 };
	struct many m;

	many_open(&m, record_order);
	for (int k = 0; k < ORDER_N; k++)
		cr_assert_eq(write(m.peer[arrival[k]], "x", 1), 1);
	cr_assert(tloop_run_pred(&m.t, all_served, &m, 10));
	for (int k = 0; k < ORDER_N; k++)
		cr_assert_eq(m.order[k], arrival[k], "served number %d: "
		    "stream %d, where stream %d was readable number %d", k,
		    m.order[k], arrival[k], k);
	many_close(&m);
}

static void
write_both(struct stream *s, const char *data, size_t len, void *arg)
{
	struct many *m = stream_arg(s);

	(void)data;
	(void)len;
	(void)arg;
	/* Another stream: to the kernel now; its own: batched. */
	cr_assert_eq(stream_write(m->s[1], "to-1", 4, NULL), 0);
	m->pending_other = stream_write_pending(m->s[1]);
	cr_assert_eq(stream_write(s, "to-0", 4, NULL), 0);
	m->pending_own = stream_write_pending(s);
	m->served++;
}

static bool
one_served(void *arg)
{
	return ((struct many *)arg)->served > 0;
}

/*
 * A write to a stream with nothing queued goes to the kernel from the
 * callback that makes it, not at the end of the loop iteration: a relayed
 * frame does not wait for the other connections' events.  What a stream's
 * own read callback writes to it (a reply) is still queued, and flushed
 * with the other replies to that read before the loop sleeps.
 */
Test(stream, write_leaves_at_once_but_replies_batch, .timeout = 30)
{
	struct many m;
	char buf[8];

	many_open(&m, write_both);
	cr_assert_eq(write(m.peer[0], "x", 1), 1);
	cr_assert(tloop_run_pred(&m.t, one_served, &m, 10));
	cr_assert_eq(m.pending_other, 0, "%zu bytes waited for the flush",
	    m.pending_other);
	cr_assert_eq(m.pending_own, 4, "the reply was not queued");
	cr_assert_eq(read(m.peer[1], buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "to-1", 4), 0);
	/* The reply leaves with the loop's flush. */
	tloop_run_for(&m.t, 0.05);
	cr_assert_eq(read(m.peer[0], buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "to-0", 4), 0);
	many_close(&m);
}

static void
count_one(struct stream *s, const char *data, size_t len, void *arg)
{
	struct many *m = stream_arg(s);

	(void)data;
	(void)arg;
	cr_assert_eq(len, 1);
	m->served++;
}

/*
 * stream_loop_pending() says whether the loop's next pass has work: the
 * readiness a poll reported, until it is served; a read armed from
 * outside a callback with bytes already buffered, until it is served.
 * A driver of the loop (the fuzz target) stops by it, not by counting
 * quiet passes.
 */
Test(stream, loop_pending_until_served, .timeout = 30)
{
	struct many m;

	many_open(&m, count_one);
	cr_assert_not(stream_loop_pending(&m.t.sl), "idle loop has work");
	cr_assert_eq(write(m.peer[0], "ab", 2), 2);
	/* The poll notes the readiness; the next pass serves it. */
	ev_run(m.t.loop, EVRUN_NOWAIT);
	cr_assert(stream_loop_pending(&m.t.sl), "readiness not counted");
	stream_loop_run_pending(&m.t.sl);
	cr_assert_eq(m.served, 1);
	cr_assert_eq(stream_read_pending(m.s[0]), 1);
	cr_assert_not(stream_loop_pending(&m.t.sl), "served, still pending");
	/* Armed from outside, the buffered byte is served by the loop. */
	cr_assert_eq(stream_read_bytes(m.s[0], 1, true, count_one), 0);
	cr_assert(stream_loop_pending(&m.t.sl), "deferred read not counted");
	stream_loop_run_pending(&m.t.sl);
	cr_assert_eq(m.served, 2);
	cr_assert_not(stream_loop_pending(&m.t.sl), "served, still pending");
	many_close(&m);
}
