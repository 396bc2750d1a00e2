/* stream_write: the write path and its queue (see stream.h). */
#include "stream_impl.h"

#include <errno.h>

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
		enum io_result r = s->tp->write(s, s->tp_data, data + *put,
		    len - *put, &n);

		if (r != IO_DONE) {
			/* Failures are reported from the loop, like any. */
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

/*
 * The socket is writable, or the loop flushes: the queue goes out, and
 * once it has drained, the sending side's next step and the drain
 * callback.
 */
void
st_handle_write(struct stream *s)
{
	if (write_out(s) == IO_FAIL)
		return;
	if (buffer_len(&s->wbuf) > 0) {
		st_update_interest(s);
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
		s->tp->shutdown(s, s->tp_data);
	}
	if (s->write_cb != NULL) {
		stream_cb cb = s->write_cb;
		s->write_cb = NULL;
		cb(s, s->arg);
	}
	if (!is_closed(s))
		st_update_interest(s);
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
		st_reclaim_later(s);
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
		st_update_interest(s);
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
	/* What the transport did not take, if anything, waits. */
	if (put < len && enqueue(s, (const char *)data + put, len - put) < 0)
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
		st_update_interest(s);
}
