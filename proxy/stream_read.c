/* stream_read: the read loop and the pending read (see stream.h). */
#include "stream_impl.h"

#include <errno.h>
#include <string.h>

/*
 * Pulls bytes from the transport into the read buffer until it would
 * block, the buffer is full, or this connection has had its turn.
 */
void
st_read_from_transport(struct stream *s)
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
			st_reclaim_later(s);
		tp_use(s);
		r = s->tp->read(s, s->tp_data, buffer_tail(&s->rbuf), want,
		    &got);
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
			    (s->tp->pending != NULL &&
			    s->tp->pending(s, s->tp_data)))
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
void
st_run_reads(struct stream *s)
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
		st_update_interest(s);
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
	st_update_interest(s);
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
	st_update_interest(s);
}

size_t
stream_read_pending(const struct stream *s)
{
	return buffer_len(&s->rbuf);
}
