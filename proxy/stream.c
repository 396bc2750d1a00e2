/*
 * stream: see stream.h.  This file: the states of a stream and their
 * transitions, making, closing and freeing a stream, its timers.  The
 * rest of the module is in stream_*.c (see stream_impl.h).
 */
#define _GNU_SOURCE
#include "stream_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "netutil.h"
#include "peer_id.h"

/*
 * The states of a stream (struct stream in stream_impl.h) and their
 * transitions.  Its life (state):
 *
 *   IDLE         accepted; the owner has asked for nothing, and the
 *                socket is left alone
 *                -> OPEN at the owner's first I/O
 *                -> IDLE_HS when a transport with a handshake is installed
 *   IDLE_HS      the same, with a transport handshake to run first
 *                -> HANDSHAKING at the first I/O, or
 *                   stream_wait_for_handshake()
 *   CONNECTING   stream_connect()'s connect() in progress
 *                -> HANDSHAKING once connected, if a transport was
 *                   installed meanwhile (a TLS client)
 *                -> OPEN once connected, otherwise
 *   HANDSHAKING  the transport's handshake runs
 *                -> OPEN when it is done
 *   OPEN         bytes move
 *                -> HANDSHAKING when a transport is installed (TLS to a
 *                   backend after a PROXY header in the clear)
 *   CLOSED       stream_close(): the fd is closed, no callback runs but
 *                the close callback, from the loop, which then frees it
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

/*
 * Empty buffers go back to malloc once the stream has been idle this
 * long: an idle connection costs a few hundred bytes, a busy one does not
 * allocate per message (freeing on every drain cost a malloc and a free
 * per small message, and at the top of the heap two brk calls).
 */
#define RECLAIM_IDLE 1.0

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

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

/* ---- construction ---- */

struct stream *
stream_new(struct stream_loop *sl, int fd, const struct stream_opts *opts)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->sl = sl;
	s->fd = fd;
	s->state = ST_IDLE;		/* nothing asked yet: see above */
	s->tp = &st_plain_transport;
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
	ev_io_init(&s->io, st_io_cb, fd, 0);
	s->io.data = s;
	ev_timer_init(&s->timer, timer_cb, 0., 0.);
	s->timer.data = s;
	s->last_io = ev_now(sl->loop);
	snprintf(s->peer, sizeof(s->peer), "fd %d", fd);
	sl->live++;
	st_timer_arm(s);
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
		st_start_deadline(s, s->opts.handshake_timeout);
	else
		s->state = ST_OPEN;	/* connected at once */
	st_update_interest(s);
	return s;
}

void
stream_set_callbacks(struct stream *s, stream_close_cb on_close, void *arg)
{
	s->close_cb = on_close;
	s->arg = arg;
}

stream_cb
stream_free_hook(const struct stream *s, void **arg)
{
	*arg = s->free_arg;
	return s->free_cb;
}

enum stream_close_reason
stream_close_why(const struct stream *s)
{
	return s->close_reason;
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

bool
stream_peer_ids(const struct stream *s, struct peer_ids *out)
{
	out->n = 0;
	out->truncated = false;
	if (is_closed(s) || s->tp->peer_ids == NULL)
		return false;
	return s->tp->peer_ids(s, s->tp_data, out);
}

void
stream_memory(const struct stream *s, struct stream_memory *m)
{
	m->read_buffer = s->rbuf.cap;
	m->write_buffer = s->wbuf.cap;
	m->transport = s->tp_held;
}

void
stream_set_idle_timeout(struct stream *s, double seconds)
{
	s->opts.idle_timeout = seconds;
	s->last_io = ev_now(s->sl->loop);
	st_timer_arm(s);
}

/* ---- timers ---- */

/*
 * The connection must be established (handshake done) within `seconds`
 * from now, or it is closed with STREAM_CLOSE_TIMEOUT.
 */
void
st_start_deadline(struct stream *s, double seconds)
{
	if (seconds <= 0)
		return;
	s->deadline = ev_now(s->sl->loop) + seconds;
	st_timer_arm(s);
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
	if (s->tp_held && s->tp->release(s, s->tp_data)) {
		s->tp_held = 0;
		freed = true;
	}
	if (freed)
		st_trim_later(s->sl);
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
		stream_set_error(s, "idle for %g s", s->opts.idle_timeout);
		stream_close(s, STREAM_CLOSE_TIMEOUT);
		return;
	}
	if (now - s->last_io >= RECLAIM_IDLE)
		reclaim(s);
	st_timer_arm(s);
}

/*
 * One timer serves every deadline; activity only moves last_io, and the
 * timer re-arms itself when it fires early (libev's recommended idle
 * timeout pattern: no timer update per read).
 */
void
st_timer_arm(struct stream *s)
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
void
st_reclaim_later(struct stream *s)
{
	st_timer_arm(s);
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
		st_timer_arm(s);
	}
	queue_work(s, W_FLUSH);
	st_update_interest(s);
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
	s->tp->close(s, s->tp_data, clean);
	s->tp_data = NULL;
	st_hup_leave(s);
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

/* Freed, from the loop: the close callback is the last call. */
void
st_finalize(struct stream *s)
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
	st_trim_later(sl);
}
