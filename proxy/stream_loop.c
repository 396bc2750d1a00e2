/*
 * stream_loop: the loop's side of the streams (see stream.h): the
 * deferred work, the readiness events, each stream's watcher interest,
 * the hup set, and handing freed memory back to the kernel.
 */
#define _GNU_SOURCE
#include "stream_impl.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netutil.h"

/* Passes over the work list per loop iteration before yielding to I/O. */
#define WORK_PASSES 16
/*
 * A trim waits for the loop to stop giving memory back for TRIM_DELAY (the
 * end of a burst), but never more than TRIM_MAX_WAIT.  Trimming during a
 * steady churn of connections, as every quarter second did, handed back
 * pages the next connections faulted straight back in (0.9 page faults
 * per TLS handshake, at 600 a second; now 0.1).
 */
#define TRIM_DELAY 0.25
#define TRIM_MAX_WAIT 10.0

static void hup_update(struct stream *s);
static void hup_check(struct stream *s);
static void serve_ready(struct stream_loop *sl);

/* ---- handing freed memory back ---- */

static void
trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	/* Unreferenced while it ran (see st_trim_later); it repeats: stop it. */
	ev_ref(loop);
	ev_timer_stop(loop, w);
#ifdef __GLIBC__
	(void)malloc_trim(0);
#endif
}

/* Memory went back to malloc: hand its free pages to the kernel soon. */
void
st_trim_later(struct stream_loop *sl)
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

/* ---- the work list ---- */

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
		st_finalize(s);
		return true;
	}
	if (w == W_READ && read_turn_over(s)) {
		queue_work(s, W_READ);
		return false;
	}
	if ((w & W_HANDSHAKE) && s->state == ST_HANDSHAKING)
		st_advance_handshake(s);
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
				st_read_from_transport(s);
		}
		if (!is_closed(s) && (w & (W_READ | W_DISPATCH)))
			st_run_reads(s);
		if (!is_closed(s) && (w & W_FLUSH))
			st_handle_write(s);
	}
	if (is_closed(s))
		queue_work(s, 0);	/* st_finalize on the next pass */
	else
		st_update_interest(s);
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

bool
stream_loop_pending(const struct stream_loop *sl)
{
	return sl->work_head != NULL || sl->ready != NULL;
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

/* ---- readiness events and interest ---- */

/* Serves one stream's readiness: connect, handshake, writes, reads. */
static void
handle_io(struct stream *s, int revents)
{
	if (s->state == ST_CONNECTING) {
		st_finish_connect(s);
		if (s->state != ST_OPEN)
			return;
	} else if (s->state == ST_HANDSHAKING) {
		if (revents & s->hs_wants)
			st_advance_handshake(s);
		/* handshake_done() queued the follow-up work. */
		return;
	}
	/* The socket moved: whatever blocked the transport's read may not. */
	if (revents & s->read_wants)
		s->tp_blocked = 0;
	if ((revents & s->write_wants) && buffer_len(&s->wbuf) > 0 &&
	    s->out != OUT_SHUT)
		st_handle_write(s);
	if (!is_closed(s) && (revents & s->read_wants) && can_read(s)) {
		st_read_from_transport(s);
		if (!is_closed(s))
			st_run_reads(s);
	}
	if (!is_closed(s))
		st_update_interest(s);
}

/*
 * libev invokes the watchers a poll made pending last first; each is
 * pushed here, so the list comes out in the kernel's order, and served
 * from the loop before it polls again (serve_ready).
 */
void
st_io_cb(struct ev_loop *loop, ev_io *w, int revents)
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

/* The readiness to watch for; `readable` is can_read(s). */
static int
wanted_events(const struct stream *s, bool readable)
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
	if (readable)
		ev |= s->read_wants;
	if (buffer_len(&s->wbuf) > 0 && s->out != OUT_SHUT)
		ev |= s->write_wants;
	return ev;
}

void
st_update_interest(struct stream *s)
{
	bool readable = can_read(s);
	int ev = wanted_events(s, readable);

	/*
	 * Bytes a transport already holds raise no readiness event; after a
	 * read that would block they are an incomplete record, which the
	 * socket completes.
	 */
	if (readable && s->tp->pending != NULL && !s->tp_blocked &&
	    s->tp->pending(s, s->tp_data))
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

/* ---- the hup set ---- */

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

/* hup events taken per callback: the rest come on the next iteration. */
#define HUP_EVENTS 64

/* Open and established, but not reading its socket. */
static bool
held_back(const struct stream *s)
{
	return (s->paused || buffer_len(&s->rbuf) >= s->opts.max_buffer_size) &&
	    s->state == ST_OPEN && s->in < IN_EOF && s->out != OUT_ENDING;
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

void
st_hup_leave(struct stream *s)
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
