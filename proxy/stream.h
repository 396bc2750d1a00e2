/*
 * stream: a non-blocking buffered byte stream on one socket (Tornado's
 * IOStream), transport-agnostic.
 *
 * A stream owns an fd, a libev io watcher, a read buffer and a write buffer.
 * The bytes themselves move through a transport (plain sockets here, TLS in
 * tls.c) that reports "would block" together with the readiness it is
 * waiting for, so a TLS read that needs the socket writable (or a write that
 * needs it readable) is just another interest bit.  Protocol code never sees
 * the fd or the SSL object, and no one sees struct stream: protocols use
 * this header, transports stream_transport.h as well.
 *
 * Reading: one pending read at a time.  The callback gets a pointer into the
 * read buffer, valid only during the callback; the bytes are consumed when it
 * returns.  A callback may arm the next read: if it can be satisfied from
 * the buffer it is served by the same loop, not by recursion.
 *
 * Writing: a write to a stream with nothing queued goes to the socket at
 * once, without a copy, and only what the kernel does not take is queued:
 * a relayed frame leaves as soon as it is handled, not after every other
 * connection's events of the loop iteration (at 1000 producers x 60 Hz,
 * waiting for the iteration's end held frames up to milliseconds).  The
 * exception is a stream's own read callback: what it writes (replies) is
 * queued and flushed once per loop iteration, before the loop sleeps, so
 * the replies to one read leave in one syscall.  Batching comes from the
 * reads: a protocol handing on what one read brought (many frames) makes
 * one write of it.  What is queued is flushed when the socket is writable.
 * stream_write_records() writes records that may be refused whole once the
 * queue would pass a limit: only what the kernel will not take counts.
 *
 * Closing: stream_close() stops I/O and closes the fd at once, but the close
 * callback runs later, from the loop, never from inside the caller: a
 * protocol may close any stream (its own, a peer's) from any callback.  The
 * close callback is the last call a stream makes to its protocol; the
 * stream is freed right after it returns (and its server's free hook).
 *
 * Memory: the read and write buffers, and the transport's own (TLS record
 * buffers), are kept while the stream is busy (no allocation per message)
 * and returned to malloc once they are empty and the stream has been idle
 * for a second; a transport also gives its buffers back as soon as its
 * handshake is done, so a connection that then stays silent holds none.
 * Once streams have stopped giving memory back (idle buffers, closed
 * streams) for a quarter second, or at the latest 10 s after they started,
 * the loop returns the heap's free pages to the kernel (malloc_trim): a
 * burst of handshakes otherwise leaves the process's resident memory full
 * of holes for as long as it runs.
 *
 * Backpressure: reading stops (the kernel then pushes back on the sender)
 * while the read buffer holds max_buffer_size bytes or more, or while the
 * owner has paused reading.  While paused no read callback runs either:
 * bytes already buffered wait for stream_resume_reading().
 * stream_write_pending() tells how much is still queued for the peer.
 *
 * A stream held back like this still notices its peer going: a reset
 * (or another socket error) closes it at once with STREAM_CLOSE_RESET
 * (STREAM_CLOSE_ERROR), bytes it had not delivered dropped; the peer's FIN
 * runs the fin callback (stream_set_fin_cb), and the bytes before it are
 * still read, in order, once reading resumes.  A peer whose FIN cannot
 * come (it closed with bytes still queued behind our closed window) or
 * that vanished without a word is found by TCP keepalive (opts.keepalive),
 * as a reset or a timeout.  Otherwise a stream paused behind a peer that
 * never drains would live, with its descriptor and socket buffers, until
 * its owner's timeout, or for ever without one.  (Linux: the loop watches
 * such streams in an epoll set of its own, for EPOLLRDHUP and errors only,
 * see stream_loop.c.)
 *
 * The process must ignore SIGPIPE: OpenSSL writes to its socket with
 * write(), which cannot ask for MSG_NOSIGNAL.
 *
 * All streams of one libev loop share a struct stream_loop, which holds the
 * list of streams with deferred work (flushes, buffered reads, closes) and
 * the readiness events of the last poll.  Those are served from the loop,
 * before it polls again, in the order the kernel reported them: libev
 * calls the watchers of one poll last-ready first, which served the
 * frame that had waited longest last (at 1000 producers x 60 Hz, two of
 * three frames went out behind one that arrived after them).
 */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buffer.h"

struct stream;
struct metrics_conn;
struct peer_ids;

enum stream_close_reason {
	STREAM_CLOSE_LOCAL = 0,	/* the owner called stream_close() */
	STREAM_CLOSE_EOF,	/* the peer closed cleanly */
	STREAM_CLOSE_RESET,	/* ECONNRESET / EPIPE */
	STREAM_CLOSE_ERROR,	/* another socket error (see stream_error) */
	STREAM_CLOSE_TLS,	/* TLS handshake or record failure */
	STREAM_CLOSE_LIMIT,	/* a buffer limit: read larger than allowed */
	STREAM_CLOSE_TIMEOUT,	/* handshake, connect or idle timeout */
	STREAM_CLOSE_CONNECT,	/* outgoing connect failed */
	STREAM_CLOSE_NOMEM,	/* memory could not be had */
};

const char *stream_close_reason_str(enum stream_close_reason why);

typedef void (*stream_read_cb)(struct stream *s, const char *data,
    size_t len, void *arg);
typedef void (*stream_cb)(struct stream *s, void *arg);
typedef void (*stream_close_cb)(struct stream *s,
    enum stream_close_reason why, void *arg);

struct stream_opts {
	size_t max_buffer_size;		/* read buffer limit (bytes) */
	size_t max_write_buffer_size;	/* write buffer limit; 0 = none */
	size_t read_chunk_size;		/* bytes asked of one read() */
	double handshake_timeout;	/* seconds for connect + handshake; 0 = none */
	double idle_timeout;		/* seconds without I/O; 0 = none */
	double linger_timeout;		/* seconds stream_end() waits to flush */
	/*
	 * Once reading is held back: seconds without a segment from the peer
	 * before TCP keepalive probes it (then 4 more, a quarter of that
	 * apart); 0 = none.  See stream_loop.c (hup_join).
	 */
	double keepalive;
};

#define STREAM_DEFAULT_MAX_BUFFER	(1024 * 1024)
#define STREAM_DEFAULT_KEEPALIVE	60.0
#define STREAM_DEFAULT_CHUNK		(64 * 1024)

void stream_opts_default(struct stream_opts *o);

/* Per-loop state shared by the streams on it. */
struct stream_loop {
	struct ev_loop *loop;
	ev_prepare prepare;
	ev_idle idle;			/* keeps the loop from sleeping on work */
	ev_timer trim;			/* hands freed memory back to the kernel */
	ev_tstamp trim_since;		/* the first give-back it waits for */
	struct stream *work_head;	/* streams with deferred work (FIFO) */
	struct stream *work_tail;
	struct stream *ready;		/* readiness events to serve, in the
					   order the kernel reported them */
	size_t live;			/* streams not yet freed */
	unsigned iter;			/* loop iterations (run_pending calls) */
	/*
	 * Held-back streams' sockets, watched for the peer's FIN and errors
	 * only; -1 until the first one (made after any fork, so workers
	 * never share it).
	 */
	int hup_fd;
	ev_io hup_io;
};

void stream_loop_init(struct stream_loop *sl, struct ev_loop *loop);
/* Runs the deferred work now (tests, shutdown); also done before each poll. */
void stream_loop_run_pending(struct stream_loop *sl);
/*
 * Whether the next stream_loop_run_pending() has something to do: work a
 * stream put off (a read served from the buffer, a flush, a close to
 * report, a read burst's next turn) or readiness events of the last poll
 * not yet served.  What the kernel holds for the sockets is not counted:
 * a driver that runs the loop by hand (the fuzz target) is done when this
 * is false and every socket has nothing more for its stream.
 */
bool stream_loop_pending(const struct stream_loop *sl);
void stream_loop_destroy(struct stream_loop *sl);

/*
 * Wraps a connected (accepted) non-blocking fd, on the plain transport; a
 * transport's constructor (tls_stream_accept) may install another before
 * the owner asks for I/O.  Nothing is read or written until the owner asks
 * (a read, a write, stream_wait_for_handshake).  Returns NULL (fd
 * untouched) when memory cannot be had.
 */
struct stream *stream_new(struct stream_loop *sl, int fd,
    const struct stream_opts *opts);

/*
 * Starts a non-blocking connect to `addr` and returns the stream at once;
 * reads and writes may be queued immediately.  on_connect (may be NULL)
 * runs once connected and any handshake is done.  A failure or the
 * handshake_timeout closes the stream with STREAM_CLOSE_CONNECT / TIMEOUT.
 * Returns NULL with errno set if no socket could be made.
 */
struct stream *stream_connect(struct stream_loop *sl,
    const struct sockaddr *addr, socklen_t addrlen,
    const struct stream_opts *opts);

/* Callbacks get `arg`; the close callback is the protocol's last call. */
void stream_set_callbacks(struct stream *s, stream_close_cb on_close,
    void *arg);
void *stream_arg(const struct stream *s);

/*
 * For the server that made the stream (tcpserver counts its live
 * connections with it): `on_free` runs once, when the stream is freed,
 * whatever closed it, after the close callback and with the stream already
 * closed; it is the stream's very last call and may only ask the stream
 * questions (stream_peer, stream_error...).  It is separate from
 * stream_set_callbacks() so that the protocol, which owns those, can
 * never displace it.
 */
void stream_set_free_hook(struct stream *s, stream_cb on_free, void *arg);
/* The free hook set (NULL: none), and its argument in *arg. */
stream_cb stream_free_hook(const struct stream *s, void **arg);
/*
 * The listener counters the stream counts into (bytes, handshakes, its
 * close), from now on; NULL: none.  Set by the server that accepted it.
 */
void stream_set_stats(struct stream *s, struct metrics_conn *stats);

/* Sets the peer label used in logs (done by tcpserver/stream_connect). */
void stream_set_peer(struct stream *s, const struct sockaddr *sa);
const char *stream_peer(const struct stream *s);
/*
 * The local end of the connection (getsockname): for an accepted stream,
 * the address the client connected to (PROXY protocol headers need it).
 * 0, or -1 with errno (closed stream: EBADF).
 */
int stream_local_address(const struct stream *s, struct sockaddr_storage *ss,
    socklen_t *len);
/*
 * Who the peer is, by the certificate its transport verified (TLS with
 * client certificates; see peer_id.h): true with *out filled.  False,
 * with out->n = 0, for a plain stream, a peer without a certificate that
 * verified, or a closed stream.
 */
bool stream_peer_ids(const struct stream *s, struct peer_ids *out);
/* Bytes moved through the transport so far (plaintext for TLS). */
uint64_t stream_bytes_in(const struct stream *s);
uint64_t stream_bytes_out(const struct stream *s);
/* When bytes last moved either way (loop time). */
ev_tstamp stream_last_io(const struct stream *s);
/* The listener counters the stream counts into, or NULL. */
struct metrics_conn *stream_stats(const struct stream *s);
/* Why it closed (meaningful once closed: the free hook asks it). */
enum stream_close_reason stream_close_why(const struct stream *s);
/* The detail of the error that closed (or will close) it; "" for none. */
#define STREAM_ERROR_MAX 128
const char *stream_error(const struct stream *s);
/* Records an error detail (transports; protocol layers explaining a close). */
void stream_set_error(struct stream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Reads exactly `n` bytes, or with `partial` whatever is available (at
 * least 1, at most n).  n must not exceed max_buffer_size: such a read fails
 * with STREAM_CLOSE_LIMIT.  Returns -1 if a read is already pending or the
 * stream is closed.
 */
int stream_read_bytes(struct stream *s, size_t n, bool partial,
    stream_read_cb cb);

/*
 * Reads up to and including `delim` (1..16 bytes).  If max_bytes bytes
 * arrive without it (or max_buffer_size, whichever is smaller), the stream
 * is closed with STREAM_CLOSE_LIMIT.
 */
int stream_read_until(struct stream *s, const char *delim, size_t dlen,
    size_t max_bytes, stream_read_cb cb);

bool stream_reading(const struct stream *s);

/*
 * Queues `len` bytes.  on_done, if not NULL, replaces any earlier one and
 * runs when the write buffer has drained to the kernel.  Returns -1 with
 * errno EPIPE on a closed stream, or ENOBUFS when max_write_buffer_size
 * would be exceeded (nothing is queued then; the stream stays open).
 */
int stream_write(struct stream *s, const void *data, size_t len,
    stream_cb on_done);

/*
 * Writes records (data is len / size records of `size` bytes) for a
 * producer that would rather drop whole records than queue without bound
 * (a relay's frames to one consumer): what is queued is handed to the
 * kernel first when the records would take the queue past `limit`, then
 * the records, as far as the kernel takes them, and what it does not take
 * is queued while the queue holds at most `limit` bytes.  A record the
 * transport has started is always finished (it may take the queue past
 * the limit by less than a record), so the reader never sees half of
 * one.  Returns how many records were accepted, the first ones; nothing
 * of the others was written.  0 also on a stream that takes no more
 * writes (errno EPIPE), or that a failure closed.  No callback runs from
 * inside it; max_write_buffer_size does not apply (limit does).
 */
size_t stream_write_records(struct stream *s, const void *data, size_t len,
    size_t size, size_t limit);

/*
 * on_done runs once, from the loop, when what is queued has gone to the
 * kernel (on the next iteration if nothing is queued now); it replaces the
 * one a stream_write() gave.  For a writer that needs to hear of the drain
 * only sometimes (the relay's block policy, while a consumer holds its
 * producer back), rather than after every write.
 */
void stream_on_drained(struct stream *s, stream_cb on_done);

/* Bytes accepted by stream_write() but not yet handed to the kernel. */
size_t stream_write_pending(const struct stream *s);
/* Bytes read from the transport that no read of the owner's took yet. */
size_t stream_read_pending(const struct stream *s);

/*
 * What the stream holds beyond its struct: the room of its read and write
 * buffers, and whether its transport may hold buffers of its own (TLS
 * records).  See Memory above for when they are given back.
 */
struct stream_memory {
	size_t read_buffer;
	size_t write_buffer;
	bool transport;
};
void stream_memory(const struct stream *s, struct stream_memory *m);

/*
 * Hands what is queued to the kernel now rather than when the loop gets to
 * it; what the kernel does not take stays queued.  The drain callback, a
 * pending half-close or stream_end()'s close follow from the loop, never
 * from inside this call.
 */
void stream_flush(struct stream *s);

void stream_pause_reading(struct stream *s);
void stream_resume_reading(struct stream *s);

/*
 * Advances the handshake now (it otherwise starts with the first read or
 * write) and calls on_done when it completes; a failure closes the stream.
 * For a plain stream on_done runs on the next loop iteration.
 */
void stream_wait_for_handshake(struct stream *s, stream_cb on_done);

/* Sends a half-close (FIN / close_notify) once the write buffer is flushed. */
void stream_shutdown_write(struct stream *s);
/*
 * Half-close support.  By default a peer's EOF closes the stream (with
 * STREAM_CLOSE_EOF) once the buffered bytes can no longer satisfy a read.
 * With an EOF callback the stream stays open for writing instead and the
 * callback runs once, when the buffered bytes have been read; the stream
 * closes by itself once both directions are shut.
 */
void stream_set_eof_cb(struct stream *s, stream_cb on_eof);
bool stream_peer_eof(const struct stream *s);
/*
 * The peer's FIN arrived while reading was held back (paused, or the read
 * buffer full): on_fin runs once, from the loop.  The peer will send no
 * more, but the bytes before its FIN are still to be read; the EOF (and
 * its callback) comes as usual once they have been.  A FIN met by reading
 * is not reported here: the EOF is.
 */
void stream_set_fin_cb(struct stream *s, stream_cb on_fin);
/* The peer has finished sending: its EOF was read, or its FIN seen. */
bool stream_peer_done(const struct stream *s);

/* Closes once everything queued is written (or linger_timeout passes). */
void stream_end(struct stream *s);
void stream_close(struct stream *s, enum stream_close_reason why);
bool stream_closed(const struct stream *s);

void stream_set_idle_timeout(struct stream *s, double seconds);

#endif
