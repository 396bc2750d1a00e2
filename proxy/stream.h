/*
 * stream: a non-blocking buffered byte stream on one socket (Tornado's
 * IOStream), transport-agnostic.
 *
 * A stream owns an fd, a libev io watcher, a read buffer and a write buffer.
 * The bytes themselves move through a transport (plain sockets here, TLS in
 * tls.c) that reports "would block" together with the readiness it is
 * waiting for, so a TLS read that needs the socket writable (or a write that
 * needs it readable) is just another interest bit.  Protocol code never sees
 * the fd or the SSL object.
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
 * see stream.c.)
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

/* What a transport reports for one call. */
enum io_result {
	IO_DONE = 0,		/* bytes moved (count returned separately) */
	IO_WANT_READ,		/* would block until the socket is readable */
	IO_WANT_WRITE,		/* would block until the socket is writable */
	IO_EOF,			/* clean end of stream */
	IO_FAIL,		/* error; the transport set the stream's error */
};

/*
 * The transport vtable.  `handshake` may be NULL (nothing to negotiate).
 */
struct stream_transport {
	const char *name;
	enum io_result (*handshake)(struct stream *s);
	enum io_result (*read)(struct stream *s, char *buf, size_t len,
	    size_t *got);
	enum io_result (*write)(struct stream *s, const char *buf, size_t len,
	    size_t *put);
	/*
	 * Whether the transport holds bytes the socket will not signal
	 * again (TLS records read ahead from the kernel, decrypted or not).
	 * NULL: it holds nothing, and a short read means the kernel had no
	 * more.  After a read that would block, what it holds is an
	 * incomplete record: the stream waits for the socket then.
	 */
	bool (*pending)(struct stream *s);
	/*
	 * Gives back the memory the transport can do without while the
	 * stream is idle (TLS record buffers); false when it must keep it (a
	 * record half read or half written).  NULL: nothing to give back.
	 */
	bool (*release)(struct stream *s);
	/* Half-close the sending direction (close_notify / SHUT_WR). */
	void (*shutdown)(struct stream *s);
	/* Best-effort goodbye before the fd is closed; frees transport state. */
	void (*close)(struct stream *s, bool clean);
};

extern const struct stream_transport stream_plain_transport;

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
	 * apart); 0 = none.  See stream.c (hup_join).
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
void stream_loop_destroy(struct stream_loop *sl);

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

	unsigned connecting:1;		/* outgoing connect in progress */
	unsigned handshaking:1;		/* transport handshake not done */
	unsigned handshake_started:1;
	unsigned paused:1;		/* owner paused reading */
	unsigned eof:1;			/* the peer will send no more */
	unsigned write_shut:1;		/* our sending side is closed */
	unsigned want_shutdown:1;	/* shut the sending side once flushed */
	unsigned ending:1;		/* close once flushed (stream_end) */
	unsigned closed:1;
	unsigned in_dispatch:1;		/* inside the read loop */
	unsigned work_queued:1;		/* on the loop's work list */

	unsigned active:1;		/* the owner asked for I/O: start */
	unsigned eof_reported:1;
	unsigned tp_blocked:1;		/* the last transport read would block */
	unsigned tp_held:1;		/* the transport may hold buffers */
	/*
	 * Set by a transport that reads the socket in its own buffer (TLS)
	 * when its last read filled it: the socket may hold more, so the
	 * read loop goes on, as after a full read on a plain stream, rather
	 * than wait for the next poll.  One record per SSL_read makes every
	 * read look short otherwise.
	 */
	unsigned tp_more:1;
	unsigned hup:2;			/* in the loop's hup set (stream.c) */
	unsigned peer_fin:1;		/* the kernel has the peer's FIN */
	unsigned peer_err:1;		/* the socket reported an error or
					   hang-up, not yet looked at */
	unsigned fin_reported:1;
	unsigned capped_iter;		/* iteration whose read burst hit
					   READS_PER_EVENT (0: none) */
	unsigned work;			/* deferred work bits (stream.c) */

	enum stream_close_reason close_reason;
	enum stream_close_reason tp_fail;	/* set by a transport with IO_FAIL */
	/*
	 * Detail for ERROR/TLS/CONNECT, STREAM_ERROR_MAX bytes allocated by
	 * the first error: most streams never have one, and 128 bytes in
	 * every idle connection's struct were a fifth of it.
	 */
	char *error;
	char peer[64];			/* "1.2.3.4:5678" / "[::1]:5678" */

	ev_tstamp last_io;
	ev_tstamp deadline;		/* connect/handshake/linger deadline */

	uint64_t bytes_in, bytes_out;
	struct metrics_conn *stats;	/* listener counters, or NULL */
	struct stream *work_next;
	struct stream *ready_next;	/* on the loop's ready list */
	int ready_events;		/* readiness not yet served; 0: none */
};

/*
 * Wraps a connected (accepted) non-blocking fd.  `tp` NULL means plain.
 * The transport state, if any, is installed by the transport's constructor
 * (tls_stream_new) after this returns.  Returns NULL (fd untouched) when
 * memory cannot be had.
 */
struct stream *stream_new(struct stream_loop *sl, int fd,
    const struct stream_transport *tp, const struct stream_opts *opts);

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
static inline void *stream_arg(const struct stream *s) { return s->arg; }

/*
 * For the server that made the stream (tcpserver counts its live
 * connections with it): `on_free` runs once, when the stream is freed,
 * whatever closed it, after the close callback and with the stream already
 * closed; it is the stream's very last call and must not use the stream
 * beyond reading its fields.  It is separate from stream_set_callbacks()
 * so that the protocol, which owns those, can never displace it.
 */
void stream_set_free_hook(struct stream *s, stream_cb on_free, void *arg);

/* Sets the peer label used in logs (done by tcpserver/stream_connect). */
void stream_set_peer(struct stream *s, const struct sockaddr *sa);
static inline const char *stream_peer(const struct stream *s) { return s->peer; }
/*
 * The local end of the connection (getsockname): for an accepted stream,
 * the address the client connected to (PROXY protocol headers need it).
 * 0, or -1 with errno (closed stream: EBADF).
 */
int stream_local_address(const struct stream *s, struct sockaddr_storage *ss,
    socklen_t *len);
/* Bytes moved through the transport so far (plaintext for TLS). */
static inline uint64_t stream_bytes_in(const struct stream *s) { return s->bytes_in; }
static inline uint64_t stream_bytes_out(const struct stream *s) { return s->bytes_out; }
/* The loop's time now (ev_now), for transports that pace a peer. */
static inline ev_tstamp stream_now(const struct stream *s) { return ev_now(s->sl->loop); }
/* When bytes last moved either way (loop time). */
static inline ev_tstamp stream_last_io(const struct stream *s) { return s->last_io; }
/* The listener counters the stream counts into, or NULL. */
static inline struct metrics_conn *stream_stats(const struct stream *s) { return s->stats; }
#define STREAM_ERROR_MAX 128
static inline const char *stream_error(const struct stream *s) { return s->error != NULL ? s->error : ""; }
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
static inline bool stream_peer_eof(const struct stream *s) { return s->eof; }
/*
 * The peer's FIN arrived while reading was held back (paused, or the read
 * buffer full): on_fin runs once, from the loop.  The peer will send no
 * more, but the bytes before its FIN are still to be read; the EOF (and
 * its callback) comes as usual once they have been.  A FIN met by reading
 * is not reported here: the EOF is.
 */
void stream_set_fin_cb(struct stream *s, stream_cb on_fin);
/* The peer has finished sending: its EOF was read, or its FIN seen. */
static inline bool stream_peer_done(const struct stream *s) { return s->eof || s->fin_reported; }

/* Closes once everything queued is written (or linger_timeout passes). */
void stream_end(struct stream *s);
void stream_close(struct stream *s, enum stream_close_reason why);
static inline bool stream_closed(const struct stream *s) { return s->closed; }

void stream_set_idle_timeout(struct stream *s, double seconds);

/*
 * For transports: the connection must be established (handshake done)
 * within `seconds` from now, or it is closed with STREAM_CLOSE_TIMEOUT.
 */
void stream_start_deadline(struct stream *s, double seconds);

/*
 * For transports that speak first (a TLS client), once installed: the
 * handshake starts as soon as the connect completes or, on a stream that
 * is already connected (after bytes sent in the clear, like a PROXY
 * header), right away, bounded by handshake_timeout from now.  Bytes still
 * queued go through the new transport after the handshake.
 */
void stream_begin_handshake(struct stream *s);

#endif
