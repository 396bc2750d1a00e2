/*
 * ferry-bench: the load generator.  One process, one libev loop, one
 * thread, so it can be pinned to one core and measured against any server
 * on another.
 *
 * The client side talks to sockets and OpenSSL directly (conn.c) rather
 * than through Ferry's stream layer: the instrument must not share the code
 * it measures (a slow path in stream.c would otherwise slow the client for
 * every server alike and hide itself), it has to write only while the socket
 * is writable and stamp a frame just before the syscall that sends it (the
 * stream layer queues and flushes once per loop iteration), and it needs
 * OpenSSL knobs the tls layer rightly does not offer a server (a maximum
 * protocol version, no session cache, no tickets).  Server-side helpers
 * come from the project: netutil binds and accepts for the sink.
 *
 * Modes (main.c parses the command line):
 *   relay      P producer/consumer pairs over the device protocol
 *   handshake  C clients doing full TLS handshakes back to back
 *   bulk       C connections streaming bytes to HOST:PORT
 *   sink       a plaintext backend that discards what it reads
 *   idle       N connections opened (handshakes done) and held
 *
 * Every mode ends with one line on stdout, "RESULT mode=... key=value ...",
 * for scripts; with stdout on a terminal it also prints progress each
 * second.  Errors go to stderr.
 */
#ifndef FERRY_BENCH_H
#define FERRY_BENCH_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

struct bench_opts {
	const char *mode;
	const char *host;		/* server to load (127.0.0.1) */
	int port;
	bool tls;
	const char *cafile;		/* verify the server against it */
	const char *sni;		/* server name sent (default: none) */
	int tls_version;		/* 0 = any, or TLS1_2/1_3_VERSION */
	const char *groups;		/* key exchange groups, OpenSSL list */
	const char *ciphersuites;	/* TLS 1.3 suites, OpenSSL list */
	const char *ciphers;		/* TLS 1.2 cipher list */
	int pairs;			/* relay: P */
	int keys;			/* relay: K floats per frame */
	double rate;			/* relay: frames/s per producer; 0 = max */
	double duration;		/* measured seconds */
	double warmup;			/* seconds run before measuring */
	int conns;			/* handshake/bulk/idle: C or N */
	size_t chunk;			/* bulk: bytes per write */
	int parallel;			/* connections being set up at once */
	double hold;			/* idle: seconds to hold; 0 = until signal */
	double timeout;			/* setup / per-connection deadline */
	bool progress;			/* live lines each second */
	const char *trace;		/* relay: per-frame records to this file */
	int server_pid;			/* relay: report its scheduling delay */
	bool resume;			/* handshake: resume by session tickets */
	int consumer_port;		/* relay: consumers here (0: --port) */
	const char *other_pids;		/* relay: "pid,pid": CPU of all threads */
	bool ws;			/* relay: consumers over WebSocket */
};

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft. */
long bench_raise_nofile(void);

/* Resolves o->host:o->port.  0, or -1 with a message on stderr. */
int bench_resolve(const struct bench_opts *o, struct sockaddr_storage *ss,
    socklen_t *len);

/* A client SSL_CTX for o (version, groups, verification, no resumption). */
SSL_CTX *bench_client_ctx(const struct bench_opts *o);

/* The OpenSSL error queue as one line (and cleared). */
void bench_ssl_error(char *out, size_t len);

/*
 * A latency histogram in the style of HdrHistogram: values (ns) fall into
 * power-of-two ranges, each split into 2^HIST_SUB_BITS linear buckets, so
 * any value is kept within 1/2^HIST_SUB_BITS of itself in constant memory
 * and time.
 */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t b[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
/* The value at quantile q (0..1), as the middle of its bucket; 0 if empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/*
 * A client connection: a non-blocking socket, optionally TLS, and its
 * libev watcher.  The owner drives it from its callback: bconn_establish()
 * until B_DONE, then bconn_read()/bconn_write(), arming interest with
 * bconn_want() from what each call returned.
 */
enum bres {
	B_DONE = 0,		/* done; bytes moved */
	B_WANT_READ,		/* call again when readable */
	B_WANT_WRITE,		/* call again when writable */
	B_EOF,			/* the peer closed */
	B_ERR,			/* failed; err says why */
};

struct bconn;
typedef void (*bconn_cb)(struct bconn *c, int revents);

struct bconn {
	ev_io io;
	struct ev_loop *loop;
	int fd;
	SSL *ssl;
	int armed;			/* events the watcher waits for */
	bool connecting;
	bool established;
	bconn_cb cb;
	void *owner;
	char err[160];
};

/*
 * Starts a non-blocking connect (and, with ctx, a TLS client on it; host
 * is checked when ctx verifies, and sent as SNI when sni is not NULL).
 * Returns 0, or -1 with c->err set and nothing left open.
 */
int bconn_start(struct bconn *c, struct ev_loop *loop,
    const struct sockaddr *sa, socklen_t salen, SSL_CTX *ctx,
    const char *host, const char *sni, bconn_cb cb, void *owner);
/* Completes the connect and the TLS handshake. */
enum bres bconn_establish(struct bconn *c);
enum bres bconn_read(struct bconn *c, void *buf, size_t len, size_t *got);
/*
 * Plain connections: the kernel stamps every segment as it arrives
 * (SO_TIMESTAMPNS), and bconn_read_stamped() returns the stamp of the
 * last segment read, CLOCK_REALTIME in ns (0 when there is none), so the
 * time a frame reached this socket is known apart from the time this
 * process got round to reading it.  0, or -1 with c->err set.
 */
int bconn_enable_rx_stamps(struct bconn *c);
enum bres bconn_read_stamped(struct bconn *c, void *buf, size_t len,
    size_t *got, uint64_t *rx_realtime_ns);
/*
 * After B_WANT_*, the same call must be repeated with the same bytes (TLS
 * keeps a record half sent); a longer length is allowed.
 */
enum bres bconn_write(struct bconn *c, const void *buf, size_t len,
    size_t *put);
/*
 * Whether OpenSSL holds bytes (records read ahead, or decrypted) that no
 * readiness event will announce.
 */
bool bconn_pending(const struct bconn *c);
/* Sends close_notify (TLS) once; a no-op on plain connections. */
void bconn_notify_close(struct bconn *c);
/* libev priority of the watcher (EV_MINPRI..EV_MAXPRI). */
void bconn_set_priority(struct bconn *c, int pri);
/* Arms the watcher for `events` (0 stops it); cheap when unchanged. */
void bconn_want(struct bconn *c, int events);
/* Arms from a B_WANT_* result. */
void bconn_want_res(struct bconn *c, enum bres r);
/* Stops the watcher, frees TLS state, closes the socket. */
void bconn_close(struct bconn *c);
bool bconn_open(const struct bconn *c);

/* Modes: each returns the process exit status. */
int bench_relay(const struct bench_opts *o);
int bench_handshake(const struct bench_opts *o);
int bench_bulk(const struct bench_opts *o);
int bench_sink(const struct bench_opts *o);
int bench_idle(const struct bench_opts *o);

#endif
