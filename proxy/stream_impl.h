/*
 * stream_impl: the stream module's own header, shared by its files and
 * included by no other module (the public contract is stream.h, the
 * transports' stream_transport.h).
 *
 *   stream.c            the states (their table of transitions), making,
 *                       closing and freeing a stream, its timers
 *   stream_transport.c  the plain transport, installing another, the
 *                       connect and handshake steps
 *   stream_read.c       the read loop and the pending read
 *   stream_write.c      the write path and the queue
 *   stream_loop.c       the loop's side: deferred work, readiness events,
 *                       the watcher's interest, the hup set, memory trim
 *
 * st_* functions are shared between these files and nothing else.
 */
#ifndef FERRY_STREAM_IMPL_H
#define FERRY_STREAM_IMPL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "metrics.h"
#include "stream.h"
#include "stream_transport.h"

/*
 * The states and their transitions: see stream.c.  OPEN and IDLE come
 * first, so that established() is one comparison on the hot path.
 */
enum stream_state {
	ST_OPEN = 0,
	ST_IDLE,
	ST_IDLE_HS,
	ST_CONNECTING,
	ST_HANDSHAKING,
	ST_CLOSED,
};

enum stream_out {
	OUT_OPEN = 0,
	OUT_SHUTTING,		/* shut the sending side once flushed */
	OUT_SHUT,		/* our sending side is closed */
	OUT_ENDING,		/* close once flushed (stream_end) */
};

enum stream_in {
	IN_OPEN = 0,
	IN_FIN,			/* the FIN came while held back (fin_cb) */
	IN_EOF,			/* the peer will send no more: read */
	IN_EOF_TOLD,		/* ... and the eof callback has run */
};

/* Directions, for the byte counts. */
enum { DIR_IN = 0, DIR_OUT };
struct stream {
	struct stream_loop *sl;
	const struct stream_transport *tp;
	void *tp_data;			/* transport state (SSL *) */
	int fd;
	int interest;			/* EV_READ|EV_WRITE currently armed */
	ev_io io;
	ev_timer timer;

	struct buffer rbuf;
	struct buffer wbuf;
	struct stream_opts opts;

	/* the one pending read */
	enum { READ_NONE, READ_BYTES, READ_UNTIL } read_kind;
	size_t read_n;			/* bytes wanted / max_bytes */
	bool read_partial;
	char read_delim[16];
	size_t read_delim_len;
	size_t read_scan_from;		/* where the delimiter search resumes */
	stream_read_cb read_cb;

	stream_cb write_cb;		/* when the write buffer drains */
	stream_cb handshake_cb;		/* when the transport is ready */
	stream_close_cb close_cb;
	stream_cb eof_cb;
	stream_cb fin_cb;		/* the peer's FIN, seen while held back */
	void *arg;
	stream_cb free_cb;		/* the server's hook (stream_set_free_hook) */
	void *free_arg;

	int read_wants;			/* EV_READ, or EV_WRITE for TLS */
	int write_wants;		/* EV_WRITE, or EV_READ for TLS */
	int hs_wants;

	/* Whole bytes: a test of one is a compare, not a bit extraction. */
	enum stream_state state:8;
	enum stream_out out:8;
	enum stream_in in:8;
	unsigned paused:1;		/* owner paused reading */
	unsigned in_dispatch:1;		/* inside the read loop */
	unsigned work_queued:1;		/* on the loop's work list */
	unsigned tp_blocked:1;		/* the last transport read would block */
	unsigned tp_held:1;		/* the transport may hold buffers */
	unsigned tp_more:1;		/* stream_transport_more() */
	unsigned hup:2;			/* in the loop's hup set (HUP_ON) */
	unsigned peer_fin:1;		/* the kernel has the peer's FIN */
	unsigned peer_err:1;		/* the socket reported an error or
					   hang-up, not yet looked at */
	unsigned capped_iter;		/* iteration whose read burst hit
					   READS_PER_EVENT (0: none) */
	unsigned work;			/* deferred work bits (W_*) */

	enum stream_close_reason close_reason;
	enum stream_close_reason tp_fail;	/* set by stream_fail() */
	int ready_events;		/* readiness not yet served; 0: none */
	/*
	 * Detail for ERROR/TLS/CONNECT, STREAM_ERROR_MAX bytes allocated by
	 * the first error: most streams never have one, and 128 bytes in
	 * every idle connection's struct were a fifth of it.
	 */
	char *error;
	char peer[64];			/* "1.2.3.4:5678" / "[::1]:5678" */

	ev_tstamp last_io;
	ev_tstamp deadline;		/* connect/handshake/linger deadline */

	uint64_t bytes[2];		/* moved through the transport (DIR_*) */
	struct metrics_conn *stats;	/* listener counters, or NULL */
	struct stream *work_next;
	struct stream *ready_next;	/* on the loop's ready list */
};

/* Deferred work, run from the loop's prepare watcher. */
enum {
	W_HANDSHAKE = 1 << 0,	/* advance the transport handshake */
	W_READ = 1 << 1,	/* pull from the transport (TLS pending) */
	W_DISPATCH = 1 << 2,	/* serve the pending read from the buffer */
	W_FLUSH = 1 << 3,	/* write the buffer out */
	W_HS_CB = 1 << 4,	/* report a finished handshake */
	W_HUP = 1 << 5,		/* look at what the hup set reported */
};

/* A stream's place in its loop's hup set (see stream_loop.c). */
enum {
	HUP_OFF = 0,	/* not in the set */
	HUP_ON,		/* in the set */
	HUP_FAILED,	/* could not be added (no memory, no descriptor) */
};

/* Reads per readiness event before other connections get a turn. */
#define READS_PER_EVENT 16

/* stream.c: the one timer (deadline, idle, memory) and the end. */
void st_timer_arm(struct stream *s);
void st_start_deadline(struct stream *s, double seconds);
void st_reclaim_later(struct stream *s);	/* a buffer was allocated */
void st_finalize(struct stream *s);		/* close callback, free */
/* stream_transport.c: the steps before OPEN. */
extern const struct stream_transport st_plain_transport;
void st_advance_handshake(struct stream *s);
void st_finish_connect(struct stream *s);
/* stream_read.c: transport -> read buffer -> the owner's pending read. */
void st_read_from_transport(struct stream *s);
void st_run_reads(struct stream *s);
/* stream_write.c: the queue -> transport, then what follows a drain. */
void st_handle_write(struct stream *s);
/* stream_loop.c: after every change of state, and the loop's hooks. */
void st_update_interest(struct stream *s);
void st_trim_later(struct stream_loop *sl);
void st_hup_leave(struct stream *s);
void st_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static inline bool
is_closed(const struct stream *s)
{
	return s->state == ST_CLOSED;
}

/* No connect or handshake stands between the owner and the bytes. */
static inline bool
established(const struct stream *s)
{
	return s->state <= ST_IDLE;
}

/* A transport handshake is still to come (after a connect) or under way. */
static inline bool
handshake_owed(const struct stream *s)
{
	return s->state == ST_IDLE_HS || s->state == ST_HANDSHAKING ||
	    (s->state == ST_CONNECTING && s->tp->handshake != NULL);
}

/* Counts bytes the transport moved (dir: DIR_IN, DIR_OUT). */
static inline void
moved(struct stream *s, int dir, size_t n)
{
	s->bytes[dir] += n;
	if (s->stats != NULL) {
		if (dir == DIR_IN)
			s->stats->bytes_in += n;
		else
			s->stats->bytes_out += n;
	}
	s->last_io = ev_now(s->sl->loop);
}

/*
 * The one reading of a transport call that moved nothing (not IO_DONE):
 * it would block, and *wants gets the readiness it waits for; the peer
 * ended (IO_EOF: the caller's to judge); or it failed, and the stream is
 * closed with the reason the transport gave (stream_fail).  Returns r.
 */
static inline enum io_result
io_stalled(struct stream *s, enum io_result r, int *wants)
{
	switch (r) {
	case IO_WANT_READ:
		*wants = EV_READ;
		break;
	case IO_WANT_WRITE:
		*wants = EV_WRITE;
		break;
	case IO_FAIL:
		stream_close(s, s->tp_fail);
		break;
	case IO_DONE:
	case IO_EOF:
		break;
	}
	return r;
}

static inline bool
can_read(const struct stream *s)
{
	return s->state == ST_OPEN && !s->paused && s->in < IN_EOF &&
	    s->out != OUT_ENDING &&
	    buffer_len(&s->rbuf) < s->opts.max_buffer_size;
}

/* Puts the stream on its loop's work list (once) with more work to do. */
static inline void
queue_work(struct stream *s, unsigned bits)
{
	struct stream_loop *sl = s->sl;

	s->work |= bits;
	if (s->work_queued)
		return;
	s->work_queued = 1;
	s->work_next = NULL;
	if (sl->work_tail != NULL)
		sl->work_tail->work_next = s;
	else
		sl->work_head = s;
	sl->work_tail = s;
}

/* The transport is about to move bytes: it may allocate buffers. */
static inline void
tp_use(struct stream *s)
{
	if (s->tp->release != NULL && !s->tp_held) {
		s->tp_held = 1;
		st_reclaim_later(s);
	}
}

/* The owner asked for I/O: a deferred handshake starts now. */
static inline void
activate(struct stream *s)
{
	if (s->state == ST_OPEN)
		return;			/* the hot path: one test */
	if (s->state == ST_IDLE) {
		s->state = ST_OPEN;
	} else if (s->state == ST_IDLE_HS) {
		s->state = ST_HANDSHAKING;
		queue_work(s, W_HANDSHAKE);
	}
}

static inline enum stream_close_reason
errno_reason(int e)
{
	return (e == ECONNRESET || e == EPIPE || e == ETIMEDOUT) ?
	    STREAM_CLOSE_RESET : STREAM_CLOSE_ERROR;
}

#endif
