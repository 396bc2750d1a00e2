/*
 * stream_transport: the transports' side of the stream (see
 * stream_transport.h): the plain transport, installing another, and the
 * steps before a stream is open (connect, handshake).
 */
#define _GNU_SOURCE
#include "stream_impl.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the plain transport ---- */

static enum io_result
plain_read(struct stream *s, void *tp, char *buf, size_t len, size_t *got)
{
	ssize_t n;

	(void)tp;
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
plain_write(struct stream *s, void *tp, const char *buf, size_t len,
    size_t *put)
{
	ssize_t n;

	(void)tp;
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
plain_shutdown(struct stream *s, void *tp)
{
	(void)tp;
	(void)shutdown(s->fd, SHUT_WR);
}

static void
plain_close(struct stream *s, void *tp, bool clean)
{
	(void)s;
	(void)tp;
	(void)clean;
}

const struct stream_transport st_plain_transport = {
	.name = "tcp",
	.handshake = NULL,
	.read = plain_read,
	.write = plain_write,
	.pending = NULL,
	.release = NULL,
	.shutdown = plain_shutdown,
	.close = plain_close,
	.peer_ids = NULL,
};

/* ---- for transports (stream_transport.h) ---- */

/*
 * We speak first: the handshake starts as soon as the connect completes
 * or, on a stream that is already connected, right away, bounded by
 * handshake_timeout from now.
 */
static void
begin_handshake(struct stream *s)
{
	s->hs_wants = EV_WRITE;
	/* Connecting, the connect's deadline covers the handshake too. */
	if (s->state != ST_CONNECTING) {
		s->state = ST_HANDSHAKING;
		st_start_deadline(s, s->opts.handshake_timeout);
		queue_work(s, W_HANDSHAKE);
	}
	st_update_interest(s);
}

int
stream_install_transport(struct stream *s, const struct stream_transport *tp,
    void *data)
{
	if (is_closed(s) || s->tp != &st_plain_transport ||
	    buffer_len(&s->rbuf) > 0)
		return -1;
	s->tp = tp;
	s->tp_data = data;
	if (tp->handshake == NULL)
		return 0;		/* nothing to negotiate */
	if (s->state != ST_IDLE) {
		begin_handshake(s);
		return 0;
	}
	/* The peer speaks first, once the owner asks for I/O (activate). */
	s->state = ST_IDLE_HS;
	s->hs_wants = EV_READ;
	/* Silent clients (port scans, slowloris) must not hold a slot. */
	st_start_deadline(s, s->opts.handshake_timeout);
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
	 * picked up by st_update_interest(), which sees them pending.
	 */
	if (s->tp_held && s->tp->release(s, s->tp_data)) {
		s->tp_held = 0;
		st_trim_later(s->sl);
	}
	st_timer_arm(s);
	queue_work(s, W_HS_CB | W_DISPATCH |
	    (buffer_len(&s->wbuf) ? W_FLUSH : 0));
}

void
st_advance_handshake(struct stream *s)
{
	enum io_result r;

	tp_use(s);
	r = s->tp->handshake(s, s->tp_data);
	if (r == IO_DONE) {
		handshake_done(s);
	} else if (io_stalled(s, r, &s->hs_wants) == IO_EOF) {
		if (stream_error(s)[0] == '\0')
			stream_set_error(s, "peer closed during handshake");
		stream_close(s, STREAM_CLOSE_TLS);
	}
	if (!is_closed(s))
		st_update_interest(s);
}

void
st_finish_connect(struct stream *s)
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
		st_advance_handshake(s);
		return;
	}
	s->state = ST_OPEN;
	s->deadline = 0;
	st_timer_arm(s);
	queue_work(s, W_HS_CB | (buffer_len(&s->wbuf) ? W_FLUSH : 0));
}

void
stream_wait_for_handshake(struct stream *s, stream_cb on_done)
{
	if (is_closed(s))
		return;
	s->handshake_cb = on_done;
	activate(s);
	/* Otherwise handshake_done() or st_finish_connect() queues it. */
	if (s->state == ST_OPEN)
		queue_work(s, W_HS_CB);
}
