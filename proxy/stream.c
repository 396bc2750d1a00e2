/* stream: see stream.h and stream_transport.h. */
#define _GNU_SOURCE
#include "stream.h"
#include "stream_transport.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "metrics.h"
#include "netutil.h"

/*
 * The states of a stream.  Its life (state):
 *
 *   state        what it means                     leaves for
 *   IDLE         accepted; the owner has asked     OPEN at the owner's first I/O;
 *                for nothing: the socket is        IDLE_HS when a transport with
 *                left alone                        a handshake is installed
 *   IDLE_HS      the same, a transport             HANDSHAKING at the first I/O
 *                handshake to run first            or stream_wait_for_handshake
 *   CONNECTING   stream_connect's connect()        HANDSHAKING once connected, if
 *                in progress                       a transport was installed
 *                                                  meanwhile; else OPEN
 *   HANDSHAKING  the transport's handshake runs    OPEN when it is done
 *   OPEN         bytes move                        HANDSHAKING when a transport is
 *                                                  installed (TLS to a backend
 *                                                  after a PROXY header)
 *   CLOSED       stream_close(): fd closed,        freed by the loop after the
 *                no more callbacks but the close   close callback
 *
 * Every state but CLOSED goes to CLOSED on stream_close() (the owner, an
 * error, a timeout, the peer's EOF).  IDLE and OPEN are "established": no
 * connect or handshake stands between the owner and the bytes.
 *
 * Each direction ends on its own, while the stream is established:
 *
 *   sending (out):    OPEN --stream_shutdown_write--> SHUTTING
 *                     SHUTTING --queue drained: FIN / close_notify--> SHUT
 *                     OPEN, SHUTTING --stream_end--> ENDING
 *                     ENDING --queue drained--> (stream CLOSED)
 *   receiving (in):   OPEN --the peer's FIN seen while held back--> FIN
 *                     OPEN, FIN --the transport reads the EOF--> EOF
 *                     EOF --the owner's eof callback has run--> EOF_TOLD
 *
 * (stream_end with nothing queued, or after SHUT, closes at once.)  The
 * remaining flags are independent of these: the owner's pause, the
 * transport's hints, the hup set's notes, and the loop's bookkeeping.
 */
enum stream_state {
	ST_IDLE = 0,
	ST_IDLE_HS,
	ST_CONNECTING,
	ST_HANDSHAKING,
	ST_OPEN,
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
	ev_io io;
	ev_timer timer;
	int interest;			/* EV_READ|EV_WRITE currently armed */

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

	enum stream_state state:4;
	enum stream_out out:4;
	enum stream_in in:4;
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
	int ready_events;		/* readiness not yet served; 0: none */
};

static inline bool
is_closed(const struct stream *s)
{
	return s->state == ST_CLOSED;
}

/* No connect or handshake stands between the owner and the bytes. */
static inline bool
established(const struct stream *s)
{
	return s->state == ST_OPEN || s->state == ST_IDLE;
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

/* Deferred work, run from the loop's prepare watcher. */
enum {
	W_HANDSHAKE = 1 << 0,	/* advance the transport handshake */
	W_READ = 1 << 1,	/* pull from the transport (TLS pending) */
	W_DISPATCH = 1 << 2,	/* serve the pending read from the buffer */
	W_FLUSH = 1 << 3,	/* write the buffer out */
	W_HS_CB = 1 << 4,	/* report a finished handshake */
	W_HUP = 1 << 5,		/* look at what the hup set reported */
};

/*
 * A stream's place in its loop's hup set (stream_loop.hup_fd).
 *
 * A stream that does not read its socket (paused by its owner, or its read
 * buffer full) must still learn that its peer reset or sent its FIN, yet
 * cannot keep EV_READ armed: the unread bytes would make the watcher fire
 * on every iteration.  libev knows only readable and writable, so such a
 * stream's socket also goes into an epoll set of the loop's own, watched
 * by one ev_io, for EPOLLRDHUP (the FIN) and the errors and hang-ups that
 * epoll always reports, never EPOLLIN: arriving bytes wake nobody.  It is
 * edge-triggered, so a state that lasts (a FIN, while reading is still
 * held back) is reported once, not on every poll.
 *
 * A stream joins the set the first time it is held back and stays until
 * it closes: pausing and resuming again cost no syscall.  What the set
 * reports while the stream reads anyway is only noted (peer_fin,
 * peer_err): reading meets the EOF or the error itself, and if the stream
 * is held back before it does, the note is acted on then.
 *
 * Weighed and not taken: polling held-back sockets on a timer
 * (recv(MSG_PEEK) or TCP_INFO per stream per tick: latency or syscalls
 * for every paused stream, all the time); reading on past the limit to
 * find the end (that is the memory backpressure exists to bound); a
 * dup()ed descriptor per stream in libev (one more descriptor each, and
 * still no way to ask for EPOLLRDHUP alone).
 */
enum {
	HUP_OFF = 0,	/* not in the set */
	HUP_ON,		/* in the set */
	HUP_FAILED,	/* could not be added (no memory, no descriptor) */
};

/* hup events taken per callback: the rest come on the next iteration. */
#define HUP_EVENTS 64

/* Reads per readiness event before other connections get a turn. */
#define READS_PER_EVENT 16
/* Passes over the work list per loop iteration before yielding to I/O. */
#define WORK_PASSES 16
/*
 * Empty buffers go back to malloc once the stream has been idle this
 * long: an idle connection costs a few hundred bytes, a busy one does not
 * allocate per message (freeing on every drain cost a malloc and a free
 * per small message, and at the top of the heap two brk calls).
 */
#define RECLAIM_IDLE 1.0
/*
 * A trim waits for the loop to stop giving memory back for TRIM_DELAY (the
 * end of a burst), but never more than TRIM_MAX_WAIT.  Trimming during a
 * steady churn of connections, as every quarter second did, handed back
 * pages the next connections faulted straight back in (0.9 page faults
 * per TLS handshake, at 600 a second; now 0.1).
 */
#define TRIM_DELAY 0.25
#define TRIM_MAX_WAIT 10.0

static void update_interest(struct stream *s);
static void hup_check(struct stream *s);
static void handle_write(struct stream *s);
static enum io_result write_out(struct stream *s);
static void advance_handshake(struct stream *s);
static void timer_arm(struct stream *s);
static void start_deadline(struct stream *s, double seconds);

const char *
stream_close_reason_str(enum stream_close_reason why)
{
	switch (why) {
	case STREAM_CLOSE_LOCAL: return "closed";
	case STREAM_CLOSE_EOF: return "eof";
	case STREAM_CLOSE_RESET: return "reset";
	case STREAM_CLOSE_ERROR: return "error";
	case STREAM_CLOSE_TLS: return "tls-error";
	case STREAM_CLOSE_LIMIT: return "limit";
	case STREAM_CLOSE_TIMEOUT: return "timeout";
	case STREAM_CLOSE_CONNECT: return "connect-failed";
	case STREAM_CLOSE_NOMEM: return "out-of-memory";
	}
	return "unknown";
}

void
stream_opts_default(struct stream_opts *o)
{
	o->max_buffer_size = STREAM_DEFAULT_MAX_BUFFER;
	o->max_write_buffer_size = 0;
	o->read_chunk_size = STREAM_DEFAULT_CHUNK;
	o->handshake_timeout = 10.0;
	o->idle_timeout = 0;
	o->linger_timeout = 5.0;
	o->keepalive = STREAM_DEFAULT_KEEPALIVE;
}

/* ---- the plain transport ---- */

static enum stream_close_reason
errno_reason(int e)
{
	return (e == ECONNRESET || e == EPIPE || e == ETIMEDOUT) ?
	    STREAM_CLOSE_RESET : STREAM_CLOSE_ERROR;
}

static enum io_result
plain_read(struct stream *s, char *buf, size_t len, size_t *got)
{
	ssize_t n;

	do
		n = read(s->fd, buf, len);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		*got = (size_t)n;
		return IO_DONE;
	}
	if (n == 0)
		return IO_EOF;
	if (errno == EAGAIN)
		return IO_WANT_READ;
	return stream_fail(s, errno_reason(errno), "read: %s",
	    strerror(errno));
}

static enum io_result
plain_write(struct stream *s, const char *buf, size_t len, size_t *put)
{
	ssize_t n;

	do
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n >= 0) {
		*put = (size_t)n;
		return IO_DONE;
	}
	if (errno == EAGAIN)
		return IO_WANT_WRITE;
	return stream_fail(s, errno_reason(errno), "write: %s",
	    strerror(errno));
}

static void
plain_shutdown(struct stream *s)
{
	(void)shutdown(s->fd, SHUT_WR);
}

static void
plain_close(struct stream *s, bool clean)
{
	(void)s;
	(void)clean;
}

static const struct stream_transport plain_transport = {
	.name = "tcp",
	.handshake = NULL,
	.read = plain_read,
	.write = plain_write,
	.pending = NULL,
	.release = NULL,
	.shutdown = plain_shutdown,
	.close = plain_close,
};

/* ---- the work list ---- */

static void
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

static void
trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	/* Unreferenced while it ran (see trim_later); it repeats: stop it. */
	ev_ref(loop);
	ev_timer_stop(loop, w);
#ifdef __GLIBC__
	(void)malloc_trim(0);
#endif
}

/* Memory went back to malloc: hand its free pages to the kernel soon. */
static void
trim_later(struct stream_loop *sl)
{
	ev_tstamp now = ev_now(sl->loop);

	/* ev_timer_again restarts the repeat interval: the trim waits on. */
	if (ev_is_active(&sl->trim)) {
		if (now - sl->trim_since < TRIM_MAX_WAIT)
			ev_timer_again(sl->loop, &sl->trim);
		return;
	}
	sl->trim_since = now;
	ev_timer_again(sl->loop, &sl->trim);
	/* A pending trim alone must not keep ev_run() alive. */
	ev_unref(sl->loop);
}

static void
finalize(struct stream *s)
{
	struct stream_loop *sl = s->sl;

	if (s->close_cb != NULL)
		s->close_cb(s, s->close_reason, s->arg);
	if (s->stats != NULL)
		s->stats->closed++;
	if (s->free_cb != NULL)
		s->free_cb(s, s->free_arg);
	buffer_free(&s->rbuf);
	buffer_free(&s->wbuf);
	free(s->error);
	sl->live--;
	free(s);
	trim_later(sl);
}

static bool
can_read(const struct stream *s)
{
	return s->state == ST_OPEN && s->in < IN_EOF && !s->paused &&
	    s->out != OUT_ENDING &&
	    buffer_len(&s->rbuf) < s->opts.max_buffer_size;
}

static void read_from_transport(struct stream *s);
static void run_reads(struct stream *s);
static void serve_ready(struct stream_loop *sl);

/*
 * A stream whose last read burst used up its READS_PER_EVENT in this loop
 * iteration: more reading waits for the next one, after a poll, so a busy
 * TLS stream (whose read-ahead keeps it pending) cannot hold the loop for
 * pass after pass.
 */
static bool
read_turn_over(const struct stream *s)
{
	return s->capped_iter == s->sl->iter;
}

/* False when all it did was put a read off until the next iteration. */
static bool
process_work(struct stream *s)
{
	unsigned w = s->work;

	s->work = 0;
	if (is_closed(s)) {
		finalize(s);
		return true;
	}
	if (w == W_READ && read_turn_over(s)) {
		queue_work(s, W_READ);
		return false;
	}
	if ((w & W_HANDSHAKE) && s->state == ST_HANDSHAKING)
		advance_handshake(s);
	if (established(s)) {
		if ((w & W_HS_CB) && s->handshake_cb != NULL) {
			stream_cb cb = s->handshake_cb;
			s->handshake_cb = NULL;
			cb(s, s->arg);
		}
		if (!is_closed(s) && (w & W_HUP))
			hup_check(s);
		if (!is_closed(s) && (w & W_READ) && can_read(s)) {
			if (read_turn_over(s))
				queue_work(s, W_READ);
			else
				read_from_transport(s);
		}
		if (!is_closed(s) && (w & (W_READ | W_DISPATCH)))
			run_reads(s);
		if (!is_closed(s) && (w & W_FLUSH))
			handle_write(s);
	}
	if (is_closed(s))
		queue_work(s, 0);	/* finalize on the next pass */
	else
		update_interest(s);
	return true;
}

void
stream_loop_run_pending(struct stream_loop *sl)
{
	/* Never 0, which a stream's capped_iter holds until it is capped. */
	if (++sl->iter == 0)
		sl->iter = 1;
	serve_ready(sl);
	for (int pass = 0; pass < WORK_PASSES && sl->work_head; pass++) {
		struct stream *s = sl->work_head;
		bool progress = false;

		sl->work_head = sl->work_tail = NULL;
		while (s != NULL) {
			struct stream *next = s->work_next;
			s->work_queued = 0;
			progress |= process_work(s);
			s = next;
		}
		/* Only reads put off are left: they wait for the poll. */
		if (!progress)
			break;
	}
	/* Left-over work: poll without sleeping and come back. */
	if (sl->work_head != NULL)
		ev_idle_start(sl->loop, &sl->idle);
	else
		ev_idle_stop(sl->loop, &sl->idle);
}

static void
prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)revents;
	stream_loop_run_pending(w->data);
}

static void
idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	/* Nothing: its being active makes the next poll non-blocking. */
}

/*
 * The loop decides when free memory goes back to the kernel (trim_cb), so
 * glibc's own trimming on free() is set well above a connection's churn:
 * at its default (128 KiB, moving) every few TLS handshakes shrank the
 * heap with brk() and the next ones faulted the pages back in (0.4 brk
 * calls and 0.4 page faults per handshake; now none).  Setting it fixes
 * the mmap threshold too, which would otherwise stay at 128 KiB: buffers
 * up to 4 MiB come from the heap and go back with the trims.
 */
static void
malloc_policy(void)
{
#ifdef __GLIBC__
	(void)mallopt(M_MMAP_THRESHOLD, 4 << 20);
	(void)mallopt(M_TRIM_THRESHOLD, 8 << 20);
#endif
}

void
stream_loop_init(struct stream_loop *sl, struct ev_loop *loop)
{
	malloc_policy();
	memset(sl, 0, sizeof(*sl));
	sl->loop = loop;
	sl->hup_fd = -1;
	sl->iter = 1;			/* a stream's capped_iter 0 matches none */
	ev_prepare_init(&sl->prepare, prepare_cb);
	sl->prepare.data = sl;
	ev_prepare_start(loop, &sl->prepare);
	/* The prepare watcher alone must not keep ev_run() alive. */
	ev_unref(loop);
	ev_idle_init(&sl->idle, idle_cb);
	sl->idle.data = sl;
	ev_timer_init(&sl->trim, trim_cb, 0., TRIM_DELAY);
	sl->trim.data = sl;
}

void
stream_loop_destroy(struct stream_loop *sl)
{
	stream_loop_run_pending(sl);
	ev_ref(sl->loop);
	ev_prepare_stop(sl->loop, &sl->prepare);
	ev_idle_stop(sl->loop, &sl->idle);
	if (ev_is_active(&sl->trim)) {
		ev_ref(sl->loop);
		ev_timer_stop(sl->loop, &sl->trim);
	}
	if (sl->hup_fd >= 0) {
		ev_ref(sl->loop);
		ev_io_stop(sl->loop, &sl->hup_io);
		close(sl->hup_fd);
		sl->hup_fd = -1;
	}
}

/* ---- the hup set (see HUP_OFF above) ---- */

/* Open and established, but not reading its socket. */
static bool
held_back(const struct stream *s)
{
	return s->state == ST_OPEN && s->in < IN_EOF && s->out != OUT_ENDING &&
	    (s->paused || buffer_len(&s->rbuf) >= s->opts.max_buffer_size);
}

static void
hup_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct stream_loop *sl = w->data;
	struct epoll_event ev[HUP_EVENTS];
	int n;

	(void)loop;
	(void)revents;
	/* On EINTR the set stays readable: libev calls again. */
	n = epoll_wait(sl->hup_fd, ev, HUP_EVENTS, 0);
	for (int i = 0; i < n; i++) {
		struct stream *s = ev[i].data.ptr;

		/* A stream leaves the set as it closes, long before it is freed. */
		if (is_closed(s))
			continue;
		if (ev[i].events & (EPOLLERR | EPOLLHUP))
			s->peer_err = 1;
		if (ev[i].events & (EPOLLRDHUP | EPOLLHUP))
			s->peer_fin = 1;
		queue_work(s, W_HUP);
	}
}

/* Made at the first use, so a loop made before fork() is not shared. */
static bool
hup_open(struct stream_loop *sl)
{
	if (sl->hup_fd >= 0)
		return true;
	sl->hup_fd = epoll_create1(EPOLL_CLOEXEC);
	if (sl->hup_fd < 0)
		return false;
	ev_io_init(&sl->hup_io, hup_cb, sl->hup_fd, EV_READ);
	sl->hup_io.data = sl;
	ev_io_start(sl->loop, &sl->hup_io);
	/* Like the prepare watcher, it alone must not keep ev_run() alive. */
	ev_unref(sl->loop);
	return true;
}

/*
 * A peer that closes while its own kernel still holds bytes for us sends
 * its FIN only after them, and we are not taking them: its kernel gives up
 * after a few zero-window probes (a minute or two) and says nothing.  A
 * held-back socket is therefore probed once the peer has been silent for
 * opts.keepalive: a peer host without the connection answers with a reset,
 * one that is gone does not answer (ETIMEDOUT); both end up in the hup set
 * as errors.  A live peer acknowledges, and stays.  Without it, such a
 * client's pair was still open 400 s after the client closed.
 */
static void
keepalive_on(struct stream *s)
{
	int idle = (int)s->opts.keepalive;

	if (s->opts.keepalive <= 0)
		return;
	if (idle < 1)
		idle = 1;
	/* Not fatal: the stream still works, only its peer's going is not seen. */
	(void)netutil_set_keepalive(s->fd, idle, idle / 4 > 0 ? idle / 4 : 1,
	    4);
}

static void
hup_join(struct stream *s)
{
	struct epoll_event ev = { .events = EPOLLRDHUP | EPOLLET };

	ev.data.ptr = s;
	keepalive_on(s);
	/*
	 * Without a place in the set the stream still works: its peer's
	 * going then shows when it reads or writes again, or at a timeout.
	 * Not retried, or every event would cost a failing syscall.
	 */
	if (!hup_open(s->sl) ||
	    epoll_ctl(s->sl->hup_fd, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
		s->hup = HUP_FAILED;
		return;
	}
	/* Added, the socket's state now is reported: a FIN already in too. */
	s->hup = HUP_ON;
}

/* After every change of state: a held-back stream is watched. */
static void
hup_update(struct stream *s)
{
	if (!held_back(s))
		return;
	if (s->hup == HUP_OFF)
		hup_join(s);
	else if (s->peer_err || (s->peer_fin && s->in == IN_OPEN))
		queue_work(s, W_HUP);	/* noted while it still read */
}

/* What the set reported, acted on while the stream is still held back. */
static void
hup_check(struct stream *s)
{
	if (!held_back(s))
		return;		/* reading meets the error or the EOF itself */
	if (s->peer_err) {
		int err = 0;
		socklen_t len = sizeof(err);

		s->peer_err = 0;
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err != 0) {
			stream_set_error(s, "%s (reading paused)",
			    strerror(err));
			stream_close(s, errno_reason(err));
			return;
		}
		/* A hang-up, no error: the FIN came, and ours went. */
	}
	if (s->peer_fin && s->in == IN_OPEN) {
		s->in = IN_FIN;
		if (s->fin_cb != NULL)
			s->fin_cb(s, s->arg);
	}
}

static void
hup_leave(struct stream *s)
{
	if (s->hup != HUP_ON || s->sl->hup_fd < 0)
		return;
	/*
	 * close() alone would drop it, unless another process holds the
	 * socket too; an entry outliving the stream would hand hup_cb a
	 * freed pointer.  A failure means it was not there.
	 */
	(void)epoll_ctl(s->sl->hup_fd, EPOLL_CTL_DEL, s->fd, NULL);
	s->hup = HUP_OFF;
}

/* ---- interest and timers ---- */

static int
wanted_events(const struct stream *s)
{
	int ev = 0;

	switch (s->state) {
	case ST_IDLE_HS:
	case ST_CLOSED:
		return 0;
	case ST_CONNECTING:
		return EV_WRITE;
	case ST_HANDSHAKING:
		return s->hs_wants;
	case ST_IDLE:
	case ST_OPEN:
		break;
	}
	if (can_read(s))
		ev |= s->read_wants;
	if (buffer_len(&s->wbuf) > 0 && s->out != OUT_SHUT)
		ev |= s->write_wants;
	return ev;
}

static void
update_interest(struct stream *s)
{
	int ev = wanted_events(s);

	/*
	 * Bytes a transport already holds raise no readiness event; after a
	 * read that would block they are an incomplete record, which the
	 * socket completes.
	 */
	if (can_read(s) && !s->tp_blocked && s->tp->pending != NULL &&
	    s->tp->pending(s))
		queue_work(s, W_READ);
	hup_update(s);
	if (ev == s->interest)
		return;
	ev_io_stop(s->sl->loop, &s->io);
	if (ev != 0) {
		ev_io_set(&s->io, s->fd, ev);
		ev_io_start(s->sl->loop, &s->io);
	}
	s->interest = ev;
}

/* Idle: give back what an idle connection does not need. */
static void
reclaim(struct stream *s)
{
	bool freed = false;

	if (s->rbuf.data != NULL && buffer_len(&s->rbuf) == 0) {
		buffer_free(&s->rbuf);
		freed = true;
	}
	if (s->wbuf.data != NULL && buffer_len(&s->wbuf) == 0) {
		buffer_free(&s->wbuf);
		freed = true;
	}
	if (s->tp_held && s->tp->release(s)) {
		s->tp_held = 0;
		freed = true;
	}
	if (freed)
		trim_later(s->sl);
}

static bool
holds_memory(const struct stream *s)
{
	return s->rbuf.data != NULL || s->wbuf.data != NULL || s->tp_held;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct stream *s = w->data;
	ev_tstamp now = ev_now(loop);

	(void)revents;
	if (s->deadline > 0 && now >= s->deadline) {
		if (s->state == ST_CONNECTING)
			stream_set_error(s, "connect timed out");
		else if (handshake_owed(s))
			stream_set_error(s, "handshake timed out");
		else
			stream_set_error(s, "flush timed out");
		stream_close(s, STREAM_CLOSE_TIMEOUT);
		return;
	}
	if (s->opts.idle_timeout > 0 &&
	    now - s->last_io >= s->opts.idle_timeout) {
		stream_set_error(s, "idle for %.0f s", s->opts.idle_timeout);
		stream_close(s, STREAM_CLOSE_TIMEOUT);
		return;
	}
	if (now - s->last_io >= RECLAIM_IDLE)
		reclaim(s);
	timer_arm(s);
}

/*
 * One timer serves every deadline; activity only moves last_io, and the
 * timer re-arms itself when it fires early (libev's recommended idle
 * timeout pattern: no timer update per read).
 */
static void
timer_arm(struct stream *s)
{
	ev_tstamp now = ev_now(s->sl->loop);
	ev_tstamp at = 0;

	if (is_closed(s))
		return;
	if (s->deadline > 0)
		at = s->deadline;
	if (s->opts.idle_timeout > 0) {
		ev_tstamp idle_at = s->last_io + s->opts.idle_timeout;
		if (at == 0 || idle_at < at)
			at = idle_at;
	}
	if (holds_memory(s)) {
		ev_tstamp reclaim_at = s->last_io + RECLAIM_IDLE;
		/*
		 * Idle but still holding memory: bytes queued for a stalled
		 * peer (or half a record) kept it.  Look again in a while,
		 * not on every loop iteration.
		 */
		if (reclaim_at <= now)
			reclaim_at = now + RECLAIM_IDLE;
		if (at == 0 || reclaim_at < at)
			at = reclaim_at;
	}
	ev_timer_stop(s->sl->loop, &s->timer);
	if (at == 0)
		return;
	ev_timer_set(&s->timer, at > now ? at - now : 0., 0.);
	ev_timer_start(s->sl->loop, &s->timer);
}

/* A buffer was just allocated: the timer will give it back when idle. */
static void
reclaim_later(struct stream *s)
{
	timer_arm(s);
}

/* The transport is about to move bytes: it may allocate buffers. */
static inline void
tp_use(struct stream *s)
{
	if (s->tp->release != NULL && !s->tp_held) {
		s->tp_held = 1;
		reclaim_later(s);
	}
}

/* ---- construction ---- */

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);

struct stream *
stream_new(struct stream_loop *sl, int fd, const struct stream_opts *opts)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->sl = sl;
	s->fd = fd;
	s->tp = &plain_transport;
	if (opts != NULL)
		s->opts = *opts;
	else
		stream_opts_default(&s->opts);
	if (s->opts.max_buffer_size == 0)
		s->opts.max_buffer_size = STREAM_DEFAULT_MAX_BUFFER;
	if (s->opts.read_chunk_size == 0)
		s->opts.read_chunk_size = STREAM_DEFAULT_CHUNK;
	buffer_init(&s->rbuf);
	buffer_init(&s->wbuf);
	s->read_wants = EV_READ;
	s->write_wants = EV_WRITE;
	s->hs_wants = EV_READ;
	ev_io_init(&s->io, io_cb, fd, 0);
	s->io.data = s;
	ev_timer_init(&s->timer, timer_cb, 0., 0.);
	s->timer.data = s;
	s->last_io = ev_now(sl->loop);
	snprintf(s->peer, sizeof(s->peer), "fd %d", fd);
	sl->live++;
	timer_arm(s);
	return s;
}

struct stream *
stream_connect(struct stream_loop *sl, const struct sockaddr *addr,
    socklen_t addrlen, const struct stream_opts *opts)
{
	struct stream *s;
	int fd, rc;

	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	(void)netutil_set_nodelay(fd);
	s = stream_new(sl, fd, opts);
	if (s == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	stream_set_peer(s, addr);
	s->state = ST_CONNECTING;
	do
		rc = connect(fd, addr, addrlen);
	while (rc < 0 && errno == EINTR);
	if (rc < 0 && errno != EINPROGRESS) {
		stream_set_error(s, "connect to %s: %s", s->peer,
		    strerror(errno));
		stream_close(s, STREAM_CLOSE_CONNECT);
		return s;
	}
	if (rc < 0)
		start_deadline(s, s->opts.handshake_timeout);
	else
		s->state = ST_OPEN;	/* connected at once */
	update_interest(s);
	return s;
}

void
stream_set_callbacks(struct stream *s, stream_close_cb on_close, void *arg)
{
	s->close_cb = on_close;
	s->arg = arg;
}

void
stream_set_free_hook(struct stream *s, stream_cb on_free, void *arg)
{
	s->free_cb = on_free;
	s->free_arg = arg;
}

void
stream_set_eof_cb(struct stream *s, stream_cb on_eof)
{
	s->eof_cb = on_eof;
}

void
stream_set_fin_cb(struct stream *s, stream_cb on_fin)
{
	s->fin_cb = on_fin;
}

void
stream_set_peer(struct stream *s, const struct sockaddr *sa)
{
	netutil_format_addr(sa, s->peer, sizeof(s->peer));
}

int
stream_local_address(const struct stream *s, struct sockaddr_storage *ss,
    socklen_t *len)
{
	*len = sizeof(*ss);
	if (s->fd < 0) {
		errno = EBADF;
		return -1;
	}
	return getsockname(s->fd, (struct sockaddr *)ss, len);
}

static void __attribute__((format(printf, 2, 0)))
vset_error(struct stream *s, const char *fmt, va_list ap)
{
	/* Without memory the close is reported without its detail. */
	if (s->error == NULL && (s->error = malloc(STREAM_ERROR_MAX)) == NULL)
		return;
	vsnprintf(s->error, STREAM_ERROR_MAX, fmt, ap);
}

void
stream_set_error(struct stream *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset_error(s, fmt, ap);
	va_end(ap);
}

void
stream_set_stats(struct stream *s, struct metrics_conn *stats)
{
	s->stats = stats;
}

void *
stream_arg(const struct stream *s)
{
	return s->arg;
}

const char *
stream_peer(const struct stream *s)
{
	return s->peer;
}

uint64_t
stream_bytes_in(const struct stream *s)
{
	return s->bytes[DIR_IN];
}

uint64_t
stream_bytes_out(const struct stream *s)
{
	return s->bytes[DIR_OUT];
}

ev_tstamp
stream_last_io(const struct stream *s)
{
	return s->last_io;
}

struct metrics_conn *
stream_stats(const struct stream *s)
{
	return s->stats;
}

const char *
stream_error(const struct stream *s)
{
	return s->error != NULL ? s->error : "";
}

bool
stream_peer_eof(const struct stream *s)
{
	return s->in >= IN_EOF;
}

bool
stream_peer_done(const struct stream *s)
{
	return s->in != IN_OPEN;
}

bool
stream_closed(const struct stream *s)
{
	return is_closed(s);
}

void
stream_set_idle_timeout(struct stream *s, double seconds)
{
	s->opts.idle_timeout = seconds;
	s->last_io = ev_now(s->sl->loop);
	timer_arm(s);
}

/*
 * The connection must be established (handshake done) within `seconds`
 * from now, or it is closed with STREAM_CLOSE_TIMEOUT.
 */
static void
start_deadline(struct stream *s, double seconds)
{
	if (seconds <= 0)
		return;
	s->deadline = ev_now(s->sl->loop) + seconds;
	timer_arm(s);
}

/*
 * We speak first: the handshake starts as soon as the connect completes
 * or, on a stream that is already connected, right away, bounded by
 * handshake_timeout from now.
 */
static void
begin_handshake(struct stream *s)
{
	s->hs_wants = EV_WRITE;
	/* A connect in progress is under its deadline; finish_connect goes on. */
	if (s->state != ST_CONNECTING) {
		s->state = ST_HANDSHAKING;
		start_deadline(s, s->opts.handshake_timeout);
		queue_work(s, W_HANDSHAKE);
	}
	update_interest(s);
}

/* ---- for transports (stream_transport.h) ---- */

int
stream_install_transport(struct stream *s, const struct stream_transport *tp,
    void *data)
{
	if (is_closed(s) || s->tp != &plain_transport ||
	    buffer_len(&s->rbuf) > 0)
		return -1;
	s->tp = tp;
	s->tp_data = data;
	if (s->state != ST_IDLE) {
		begin_handshake(s);
		return 0;
	}
	/* The peer speaks first, once the owner asks for I/O (activate). */
	s->state = ST_IDLE_HS;
	s->hs_wants = EV_READ;
	/* Silent clients (port scans, slowloris) must not hold a slot. */
	start_deadline(s, s->opts.handshake_timeout);
	return 0;
}

void
stream_switch_transport(struct stream *s, const struct stream_transport *tp,
    void *data)
{
	s->tp = tp;
	s->tp_data = data;
}

const struct stream_transport *
stream_transport_of(const struct stream *s)
{
	return s->tp;
}

void *
stream_transport_data(const struct stream *s)
{
	return s->tp_data;
}

int
stream_fd(const struct stream *s)
{
	return s->fd;
}

enum io_result
stream_fail(struct stream *s, enum stream_close_reason why,
    const char *fmt, ...)
{
	va_list ap;

	s->tp_fail = why;
	va_start(ap, fmt);
	vset_error(s, fmt, ap);
	va_end(ap);
	return IO_FAIL;
}

void
stream_transport_more(struct stream *s, bool more)
{
	s->tp_more = more;
}

ev_tstamp
stream_now(const struct stream *s)
{
	return ev_now(s->sl->loop);
}

/* The owner asked for I/O: a deferred handshake starts now. */
static void
activate(struct stream *s)
{
	if (s->state == ST_IDLE) {
		s->state = ST_OPEN;
	} else if (s->state == ST_IDLE_HS) {
		s->state = ST_HANDSHAKING;
		queue_work(s, W_HANDSHAKE);
	}
}

/* ---- handshake and connect ---- */

static void
handshake_done(struct stream *s)
{
	s->state = ST_OPEN;
	if (s->stats != NULL)
		s->stats->handshakes_ok++;
	if (s->out != OUT_ENDING)
		s->deadline = 0;
	/*
	 * The handshake's record buffers go back now, unless bytes that
	 * followed it are in them; a silent connection then holds none.
	 * Those bytes (read ahead with the last handshake record) are
	 * picked up by update_interest(), which sees them pending.
	 */
	if (s->tp_held && s->tp->release(s)) {
		s->tp_held = 0;
		trim_later(s->sl);
	}
	timer_arm(s);
	queue_work(s, W_HS_CB | W_DISPATCH |
	    (buffer_len(&s->wbuf) ? W_FLUSH : 0));
}

static void
advance_handshake(struct stream *s)
{
	enum io_result r;

	tp_use(s);
	r = s->tp->handshake(s);
	if (r == IO_DONE) {
		handshake_done(s);
	} else if (io_stalled(s, r, &s->hs_wants) == IO_EOF) {
		if (stream_error(s)[0] == '\0')
			stream_set_error(s, "peer closed during handshake");
		stream_close(s, STREAM_CLOSE_TLS);
	}
	if (!is_closed(s))
		update_interest(s);
}

static void
finish_connect(struct stream *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		stream_set_error(s, "connect to %s: %s", s->peer,
		    strerror(err));
		stream_close(s, STREAM_CLOSE_CONNECT);
		return;
	}
	/* A transport installed meanwhile (a TLS client) speaks now. */
	if (s->tp->handshake != NULL) {
		s->state = ST_HANDSHAKING;
		advance_handshake(s);
		return;
	}
	s->state = ST_OPEN;
	s->deadline = 0;
	timer_arm(s);
	queue_work(s, W_HS_CB | (buffer_len(&s->wbuf) ? W_FLUSH : 0));
}

void
stream_wait_for_handshake(struct stream *s, stream_cb on_done)
{
	if (is_closed(s))
		return;
	s->handshake_cb = on_done;
	activate(s);
	/* Otherwise handshake_done() or finish_connect() queues it. */
	if (s->state == ST_OPEN)
		queue_work(s, W_HS_CB);
}

/* ---- reading ---- */

/*
 * Pulls bytes from the transport into the read buffer until it would
 * block, the buffer is full, or this connection has had its turn.
 */
static void
read_from_transport(struct stream *s)
{
	enum io_result r;
	int i;

	for (i = 0; i < READS_PER_EVENT && can_read(s); i++) {
		size_t len = buffer_len(&s->rbuf);
		size_t want = s->opts.read_chunk_size;
		size_t got = 0;
		bool had = s->rbuf.data != NULL;

		/* Never read past the limit: that is the backpressure. */
		if (want > s->opts.max_buffer_size - len)
			want = s->opts.max_buffer_size - len;
		if (buffer_reserve(&s->rbuf, want) < 0) {
			stream_set_error(s, "no memory for %zu bytes", want);
			stream_close(s, STREAM_CLOSE_NOMEM);
			return;
		}
		if (!had)
			reclaim_later(s);
		tp_use(s);
		r = s->tp->read(s, buffer_tail(&s->rbuf), want, &got);
		if (r == IO_DONE) {
			buffer_commit(&s->rbuf, got);
			moved(s, DIR_IN, got);
			s->tp_blocked = 0;
			/*
			 * A short read from the kernel says it has no more:
			 * the next readiness event brings the rest, without
			 * a read() that would only say EAGAIN.  A transport
			 * that reads ahead (TLS) goes on while it holds
			 * bytes, or while its own socket reads come back
			 * full (tp_more); otherwise the socket says whether
			 * there is more (the watcher is level-triggered).
			 */
			if (got == want || s->tp_more ||
			    (s->tp->pending != NULL && s->tp->pending(s)))
				continue;
			break;
		}
		switch (io_stalled(s, r, &s->read_wants)) {
		case IO_EOF:
			s->in = IN_EOF;
			break;
		case IO_FAIL:
			return;
		default:
			s->tp_blocked = 1;
			break;
		}
		break;
	}
	if (i == READS_PER_EVENT)
		s->capped_iter = s->sl->iter;
}

/*
 * How many bytes the pending read can take now; 0 when it must wait.
 * May close the stream (limit).
 */
static size_t
read_satisfiable(struct stream *s)
{
	size_t len = buffer_len(&s->rbuf);

	switch (s->read_kind) {
	case READ_NONE:
		return 0;
	case READ_BYTES:
		if (s->read_partial)
			return len < s->read_n ? len : s->read_n;
		return len >= s->read_n ? s->read_n : 0;
	case READ_UNTIL: {
		long at = buffer_find(&s->rbuf, s->read_scan_from,
		    s->read_delim, s->read_delim_len);
		size_t limit = s->read_n < s->opts.max_buffer_size ?
		    s->read_n : s->opts.max_buffer_size;
		if (at >= 0) {
			size_t n = (size_t)at + s->read_delim_len;
			if (n > limit)
				goto too_long;
			return n;
		}
		if (len >= limit)
			goto too_long;
		s->read_scan_from = len >= s->read_delim_len ?
		    len - s->read_delim_len + 1 : 0;
		return 0;
	}
	}
	return 0;
too_long:
	stream_set_error(s, "no delimiter within %zu bytes", s->read_n);
	stream_close(s, STREAM_CLOSE_LIMIT);
	return 0;
}

/* A pending read that EOF makes impossible, or EOF with nothing pending. */
static void
check_eof(struct stream *s)
{
	if (s->in < IN_EOF || is_closed(s))
		return;
	if (s->read_kind != READ_NONE && read_satisfiable(s) > 0)
		return;
	if (is_closed(s))
		return;
	if (s->read_kind == READ_NONE && buffer_len(&s->rbuf) > 0)
		return;	/* the owner will still read these */
	if (s->eof_cb != NULL) {
		if (s->in == IN_EOF) {
			s->in = IN_EOF_TOLD;
			s->eof_cb(s, s->arg);
		}
		if (!is_closed(s) && s->out == OUT_SHUT)
			stream_close(s, STREAM_CLOSE_EOF);
		return;
	}
	stream_close(s, STREAM_CLOSE_EOF);
}

/* Serves pending reads from the buffer in a loop (never by recursion). */
static void
run_reads(struct stream *s)
{
	if (s->in_dispatch)
		return;
	s->in_dispatch = 1;
	/* Paused means paused: buffered bytes wait too (backpressure). */
	while (!is_closed(s) && !s->paused && s->read_kind != READ_NONE) {
		size_t n = read_satisfiable(s);
		if (n == 0)
			break;
		stream_read_cb cb = s->read_cb;
		s->read_kind = READ_NONE;
		s->read_cb = NULL;
		cb(s, buffer_data(&s->rbuf), n, s->arg);
		buffer_consume(&s->rbuf, n);
		s->read_scan_from = 0;
	}
	s->in_dispatch = 0;
	check_eof(s);
}

/* Called with read_kind and its parameters set; NULL cb refuses. */
static int
arm_read(struct stream *s, stream_read_cb cb)
{
	if (cb == NULL) {
		errno = is_closed(s) ? EPIPE : EBUSY;
		return -1;
	}
	s->read_cb = cb;
	s->read_scan_from = 0;
	activate(s);
	/* Inside the dispatch loop the loop itself picks the read up. */
	if (!s->in_dispatch && (buffer_len(&s->rbuf) > 0 ||
	    s->in >= IN_EOF))
		queue_work(s, W_DISPATCH);
	if (!s->in_dispatch)
		update_interest(s);
	return 0;
}

int
stream_read_bytes(struct stream *s, size_t n, bool partial, stream_read_cb cb)
{
	if (n == 0) {
		errno = EINVAL;
		return -1;
	}
	if (s->read_kind != READ_NONE || is_closed(s) || cb == NULL)
		return arm_read(s, NULL);
	s->read_kind = READ_BYTES;
	s->read_n = n;
	s->read_partial = partial;
	if (!partial && n > s->opts.max_buffer_size) {
		s->read_kind = READ_NONE;
		stream_set_error(s, "read of %zu bytes exceeds the %zu byte "
		    "buffer limit", n, s->opts.max_buffer_size);
		stream_close(s, STREAM_CLOSE_LIMIT);
		errno = EMSGSIZE;
		return -1;
	}
	if (arm_read(s, cb) < 0) {
		s->read_kind = READ_NONE;
		return -1;
	}
	return 0;
}

int
stream_read_until(struct stream *s, const char *delim, size_t dlen,
    size_t max_bytes, stream_read_cb cb)
{
	if (dlen == 0 || dlen > sizeof(s->read_delim)) {
		errno = EINVAL;
		return -1;
	}
	if (s->read_kind != READ_NONE || is_closed(s) || cb == NULL)
		return arm_read(s, NULL);
	s->read_kind = READ_UNTIL;
	memcpy(s->read_delim, delim, dlen);
	s->read_delim_len = dlen;
	s->read_n = max_bytes ? max_bytes : s->opts.max_buffer_size;
	if (arm_read(s, cb) < 0) {
		s->read_kind = READ_NONE;
		return -1;
	}
	return 0;
}

bool
stream_reading(const struct stream *s)
{
	return s->read_kind != READ_NONE;
}

void
stream_pause_reading(struct stream *s)
{
	if (s->paused || is_closed(s))
		return;
	s->paused = 1;
	update_interest(s);
}

void
stream_resume_reading(struct stream *s)
{
	if (!s->paused || is_closed(s))
		return;
	s->paused = 0;
	activate(s);
	if (!s->in_dispatch && (buffer_len(&s->rbuf) > 0 ||
	    s->in >= IN_EOF))
		queue_work(s, W_DISPATCH);
	update_interest(s);
}

/* ---- writing ---- */

static void
handle_write(struct stream *s)
{
	if (write_out(s) == IO_FAIL)
		return;
	if (buffer_len(&s->wbuf) > 0) {
		update_interest(s);
		return;
	}
	/* Drained; the buffer is kept while the stream is busy. */
	if (s->out == OUT_ENDING) {
		stream_close(s, STREAM_CLOSE_LOCAL);
		return;
	}
	if (s->out == OUT_SHUTTING) {
		s->out = OUT_SHUT;
		/*
		 * Both ways done: a clean close says goodbye the same way
		 * (close_notify, then FIN from close()) without a shutdown()
		 * call just before it.
		 */
		if (s->in == IN_EOF_TOLD) {
			stream_close(s, STREAM_CLOSE_EOF);
			return;
		}
		s->tp->shutdown(s);
	}
	if (s->write_cb != NULL) {
		stream_cb cb = s->write_cb;
		s->write_cb = NULL;
		cb(s, s->arg);
	}
	if (!is_closed(s))
		update_interest(s);
}

/*
 * Whether a write may go to the transport at once: the stream is
 * established, and the write is not made from its own read callback,
 * whose replies are batched (queued, then flushed once per loop
 * iteration, many in one syscall).
 */
static bool
can_write_through(const struct stream *s)
{
	return established(s) && !s->in_dispatch;
}

/*
 * Offers len bytes to the transport until it has taken them all or would
 * block; *put says how many it took.  What it did not take must be queued
 * as it is: a TLS transport that would block has sealed the first of those
 * bytes in a record and expects them again.  IO_DONE when it took all,
 * IO_WANT_* when it would block, IO_FAIL when the stream was closed.
 */
static enum io_result
write_through(struct stream *s, const char *data, size_t len, size_t *put)
{
	*put = 0;
	tp_use(s);
	while (*put < len) {
		size_t n = 0;
		enum io_result r = s->tp->write(s, data + *put, len - *put,
		    &n);

		if (r != IO_DONE) {
			/* A failure is reported from the loop, like any other. */
			if (io_stalled(s, r, &s->write_wants) != IO_EOF)
				return r;
			stream_set_error(s, "peer closed while we wrote");
			stream_close(s, STREAM_CLOSE_RESET);
			return IO_FAIL;
		}
		moved(s, DIR_OUT, n);
		*put += n;
	}
	return IO_DONE;
}

/*
 * Hands the queue to the transport until it is empty (IO_DONE) or the
 * transport would block (IO_WANT_*); runs no callback.  IO_FAIL when the
 * stream was closed (a failure, reported from the loop like any other).
 */
static enum io_result
write_out(struct stream *s)
{
	size_t put;
	enum io_result r;

	if (buffer_len(&s->wbuf) == 0)
		return IO_DONE;
	r = write_through(s, buffer_data(&s->wbuf), buffer_len(&s->wbuf),
	    &put);
	buffer_consume(&s->wbuf, put);
	return r;
}

/* Appends to the queue; -1 (ENOMEM, the stream closed) on failure. */
static int
enqueue(struct stream *s, const char *data, size_t len)
{
	bool had = s->wbuf.data != NULL;

	if (len == 0)
		return 0;
	if (buffer_append(&s->wbuf, data, len) < 0) {
		stream_set_error(s, "no memory to queue %zu bytes", len);
		stream_close(s, STREAM_CLOSE_NOMEM);
		errno = ENOMEM;
		return -1;
	}
	if (!had)
		reclaim_later(s);
	return 0;
}

/*
 * After a write: the loop flushes what is queued and runs the drain
 * callback.  A transport that would block is waited for (its watcher
 * armed), not asked again before the next poll.
 */
static void
after_write(struct stream *s, enum io_result last)
{
	if (is_closed(s))
		return;
	if (buffer_len(&s->wbuf) == 0) {
		if (s->write_cb != NULL)
			queue_work(s, W_FLUSH);
		return;
	}
	if (last == IO_WANT_READ || last == IO_WANT_WRITE)
		update_interest(s);
	else
		queue_work(s, W_FLUSH);
}

static bool
write_refused(struct stream *s)
{
	if (is_closed(s) || s->out != OUT_OPEN) {
		errno = EPIPE;
		return true;
	}
	return false;
}

int
stream_write(struct stream *s, const void *data, size_t len,
    stream_cb on_done)
{
	size_t queued = buffer_len(&s->wbuf), put = 0;
	enum io_result last = IO_DONE;

	if (write_refused(s))
		return -1;
	if (s->opts.max_write_buffer_size > 0 &&
	    (queued > s->opts.max_write_buffer_size ||
	    len > s->opts.max_write_buffer_size - queued)) {
		errno = ENOBUFS;
		return -1;
	}
	activate(s);
	if (on_done != NULL)
		s->write_cb = on_done;
	/* Nothing queued: straight to the socket, no copy, no wait. */
	if (queued == 0 && len > 0 && can_write_through(s)) {
		last = write_through(s, data, len, &put);
		if (last == IO_FAIL)
			return 0;
	}
	if (enqueue(s, (const char *)data + put, len - put) < 0)
		return -1;
	after_write(s, last);
	return 0;
}

size_t
stream_write_records(struct stream *s, const void *data, size_t len,
    size_t size, size_t limit)
{
	const char *p = data;
	size_t n = size > 0 ? len / size : 0, done = 0, room;
	enum io_result last = IO_DONE;

	if (n == 0 || write_refused(s))
		return 0;
	activate(s);
	/* Only what the kernel will not take counts against the limit. */
	if (buffer_len(&s->wbuf) > 0 &&
	    buffer_len(&s->wbuf) + n * size > limit && can_write_through(s)) {
		last = write_out(s);
		if (last == IO_FAIL)
			return 0;
	}
	/*
	 * Write through while the queue is empty, a piece at a time: what the
	 * transport does not take of a piece is queued whole (TLS wants those
	 * bytes again), so no piece is larger than the limit allows.
	 */
	while (done < n && buffer_len(&s->wbuf) == 0 && can_write_through(s)) {
		size_t k = limit / size > 0 ? limit / size : 1, put;

		if (k > n - done)
			k = n - done;
		last = write_through(s, p + done * size, k * size, &put);
		if (last == IO_FAIL)
			return 0;
		if (enqueue(s, p + done * size + put, k * size - put) < 0)
			return 0;
		done += k;
	}
	/* The rest, whole records, while the queue holds at most limit. */
	room = limit > buffer_len(&s->wbuf) ? limit - buffer_len(&s->wbuf) :
	    0;
	if (room / size < n - done) {
		size_t k = room / size;
		if (enqueue(s, p + done * size, k * size) < 0)
			return 0;
		done += k;
	} else {
		if (enqueue(s, p + done * size, (n - done) * size) < 0)
			return 0;
		done = n;
	}
	after_write(s, last);
	return done;
}

void
stream_on_drained(struct stream *s, stream_cb on_done)
{
	if (is_closed(s))
		return;
	s->write_cb = on_done;
	if (buffer_len(&s->wbuf) == 0)
		queue_work(s, W_FLUSH);
}

size_t
stream_write_pending(const struct stream *s)
{
	return buffer_len(&s->wbuf);
}

size_t
stream_read_pending(const struct stream *s)
{
	return buffer_len(&s->rbuf);
}

void
stream_memory(const struct stream *s, struct stream_memory *m)
{
	m->read_buffer = s->rbuf.cap;
	m->write_buffer = s->wbuf.cap;
	m->transport = s->tp_held;
}

void
stream_flush(struct stream *s)
{
	if (!can_write_through(s) || buffer_len(&s->wbuf) == 0)
		return;
	if (write_out(s) == IO_FAIL)
		return;
	/* The drained follow-ups (callback, shutdown, close) run from the loop. */
	if (buffer_len(&s->wbuf) == 0)
		queue_work(s, W_FLUSH);
	else
		update_interest(s);
}

/* ---- closing ---- */

void
stream_shutdown_write(struct stream *s)
{
	if (is_closed(s) || s->out != OUT_OPEN)
		return;
	activate(s);
	s->out = OUT_SHUTTING;
	queue_work(s, W_FLUSH);
}

void
stream_end(struct stream *s)
{
	if (is_closed(s) || s->out == OUT_ENDING)
		return;
	s->out = OUT_ENDING;
	if (buffer_len(&s->wbuf) == 0) {
		stream_close(s, STREAM_CLOSE_LOCAL);
		return;
	}
	if (s->opts.linger_timeout > 0) {
		ev_tstamp d = ev_now(s->sl->loop) + s->opts.linger_timeout;
		if (s->deadline == 0 || d < s->deadline)
			s->deadline = d;
		timer_arm(s);
	}
	queue_work(s, W_FLUSH);
	update_interest(s);
}

void
stream_close(struct stream *s, enum stream_close_reason why)
{
	bool clean = (why == STREAM_CLOSE_LOCAL || why == STREAM_CLOSE_EOF) &&
	    established(s);

	if (is_closed(s))
		return;
	if (handshake_owed(s) && s->stats != NULL)
		s->stats->handshakes_failed++;
	s->state = ST_CLOSED;
	s->close_reason = why;
	ev_io_stop(s->sl->loop, &s->io);
	ev_timer_stop(s->sl->loop, &s->timer);
	s->interest = 0;
	s->tp->close(s, clean);
	s->tp_data = NULL;
	hup_leave(s);
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	s->read_kind = READ_NONE;
	s->read_cb = NULL;
	s->write_cb = NULL;
	s->handshake_cb = NULL;
	queue_work(s, 0);
}

/* ---- events ---- */

/* Serves one stream's readiness: connect, handshake, writes, reads. */
static void
handle_io(struct stream *s, int revents)
{
	if (s->state == ST_CONNECTING) {
		finish_connect(s);
		if (s->state != ST_OPEN)
			return;
	} else if (s->state == ST_HANDSHAKING) {
		if (revents & s->hs_wants)
			advance_handshake(s);
		/* handshake_done() queued the follow-up work. */
		return;
	}
	/* The socket moved: whatever blocked the transport's read may not. */
	if (revents & s->read_wants)
		s->tp_blocked = 0;
	if ((revents & s->write_wants) && buffer_len(&s->wbuf) > 0 &&
	    s->out != OUT_SHUT)
		handle_write(s);
	if (!is_closed(s) && (revents & s->read_wants) && can_read(s)) {
		read_from_transport(s);
		if (!is_closed(s))
			run_reads(s);
	}
	if (!is_closed(s))
		update_interest(s);
}

/*
 * libev invokes the watchers a poll made pending last first; each is
 * pushed here, so the list comes out in the kernel's order, and served
 * from the loop before it polls again (serve_ready).
 */
static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct stream *s = w->data;
	struct stream_loop *sl = s->sl;

	(void)loop;
	if (s->ready_events == 0) {
		s->ready_next = sl->ready;
		sl->ready = s;
	}
	s->ready_events |= revents;
}

/*
 * The readiness events of the last poll, oldest first.  A stream closed
 * meanwhile (by another's callback) is skipped: it is freed only by the
 * work list, after this.
 */
static void
serve_ready(struct stream_loop *sl)
{
	struct stream *s = sl->ready;

	sl->ready = NULL;
	while (s != NULL) {
		struct stream *next = s->ready_next;
		int ev = s->ready_events;

		s->ready_next = NULL;
		s->ready_events = 0;
		if (!is_closed(s))
			handle_io(s, ev);
		s = next;
	}
}
