/*
 * stream_transport: what a transport sees of a stream, for transports only
 * (tls.c).  Protocol code includes stream.h and never this.
 *
 * A transport moves a stream's bytes over its socket (the plain one in
 * stream_transport.c: read(), send()) and says, for every call, whether
 * bytes moved, whether it would block and on which readiness, or that the
 * peer ended or something failed.  It keeps its own state (an SSL
 * object) behind one pointer that the stream holds for it and hands back
 * (stream_transport_data); it installs itself with
 * stream_install_transport() and never touches the stream otherwise than
 * through the calls below and stream.h's.
 *
 * Ownership: once installed, the stream owns the transport's state and
 * calls tp->close exactly once, as it closes, for the transport to free
 * it; after that stream_transport_data() is NULL.
 *
 * Every hook is called from the stream's own code on the loop, never from
 * inside another hook; a hook must not close the stream (it reports
 * IO_FAIL with stream_fail() and the stream closes itself).
 */
#ifndef FERRY_STREAM_TRANSPORT_H
#define FERRY_STREAM_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "stream.h"

/* What a transport reports for one call. */
enum io_result {
	IO_DONE = 0,		/* bytes moved (count returned separately) */
	IO_WANT_READ,		/* would block until the socket is readable */
	IO_WANT_WRITE,		/* would block until the socket is writable */
	IO_EOF,			/* clean end of stream */
	IO_FAIL,		/* error; the transport called stream_fail() */
};

/*
 * The transport vtable.  Every hook gets the stream and the transport's
 * state (`tp`, as installed; the same as stream_transport_data(s)).
 * `handshake` may be NULL (nothing to negotiate).
 */
struct stream_transport {
	const char *name;
	enum io_result (*handshake)(struct stream *s, void *tp);
	enum io_result (*read)(struct stream *s, void *tp, char *buf,
	    size_t len, size_t *got);
	enum io_result (*write)(struct stream *s, void *tp, const char *buf,
	    size_t len, size_t *put);
	/*
	 * Whether the transport holds bytes the socket will not signal
	 * again (TLS records read ahead from the kernel, decrypted or not).
	 * NULL: it holds nothing, and a short read means the kernel had no
	 * more.  After a read that would block, what it holds is an
	 * incomplete record: the stream waits for the socket then.
	 */
	bool (*pending)(struct stream *s, void *tp);
	/*
	 * Gives back the memory the transport can do without while the
	 * stream is idle (TLS record buffers); false when it must keep it (a
	 * record half read or half written).  NULL: nothing to give back.
	 */
	bool (*release)(struct stream *s, void *tp);
	/* Half-close the sending direction (close_notify / SHUT_WR). */
	void (*shutdown)(struct stream *s, void *tp);
	/*
	 * Frees the transport's state, before the fd is closed.  `clean`: the
	 * stream was established and closes without a fault, so a goodbye
	 * (close_notify) is in order, best effort, never waited for.
	 */
	void (*close)(struct stream *s, void *tp, bool clean);
	/*
	 * The identities of the peer's certificate (stream_peer_ids): true
	 * with *out filled, false when it has none that verified.  NULL: a
	 * transport without certificates.
	 */
	bool (*peer_ids)(const struct stream *s, void *tp,
	    struct peer_ids *out);
};

/*
 * Installs `tp` with its state `data` on a stream that is still on the
 * plain transport, not closed, and has read nothing in the clear (bytes
 * read before would pass for the new transport's plaintext: the STARTTLS
 * injection).  Its handshake, if it has one, runs
 *  - on a stream the owner has asked nothing of yet (just accepted): at
 *    the owner's first I/O or stream_wait_for_handshake(), and the peer
 *    is expected to speak first; bounded by handshake_timeout from now,
 *    so that a client that never speaks does not hold its slot;
 *  - on a stream still connecting: once connected, under the connect's
 *    deadline; we speak first;
 *  - on an open stream (a PROXY header sent in the clear first): now,
 *    bounded by handshake_timeout from now; we speak first.  Bytes still
 *    queued go through the new transport after the handshake.
 * Returns 0 (the stream owns `data`), or -1 with nothing changed.
 */
int stream_install_transport(struct stream *s,
    const struct stream_transport *tp, void *data);

/*
 * From inside its handshake hook: the transport hands the stream over to
 * another, with its state (the lazy TLS server, which makes its SSL object
 * at the client's first byte).  The old state is the caller's to free;
 * the next steps of the handshake, and all I/O, go to the new transport
 * (the caller may take the first step itself, as the lazy server does).
 */
void stream_switch_transport(struct stream *s,
    const struct stream_transport *tp, void *data);

/* The installed transport, and its state (NULL once closed). */
const struct stream_transport *stream_transport_of(const struct stream *s);
void *stream_transport_data(const struct stream *s);

/* The socket (-1 once closed). */
int stream_fd(const struct stream *s);

/*
 * A hook's failure: the reason the stream will close with and the detail
 * (stream_error).  Returns IO_FAIL, for `return stream_fail(...)`.
 */
enum io_result stream_fail(struct stream *s, enum stream_close_reason why,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * For a transport that reads the socket into its own buffer (TLS read
 * ahead), after each of its socket reads: whether the read filled what
 * it asked for.  Then the socket may hold more, and the stream's read
 * loop goes on, as after a full read on a plain stream, rather than wait
 * for the next poll (one record per SSL_read makes every read look short
 * otherwise).
 */
void stream_transport_more(struct stream *s, bool more);

/* The loop's time now (ev_now), for transports that pace a peer. */
ev_tstamp stream_now(const struct stream *s);

#endif
