/*
 * hostilecheck: what the hostile-peer suites (test_hostile*.c) share.
 *
 * start_three() runs the real ferry with [relay], [relay-tls] and [web]
 * (forward, TLS, to an echo backend `be`); a test holds a crowd of bad
 * connections (`crowd`, closed by the fixture), keeps good clients going
 * (a relay pair: struct witness; a forward echo: echo_ok()), and reads
 * the counters.  Every wait has a deadline; every connection is the
 * test's own.  The ferry under test is `fp` (suite.h).
 */
#ifndef FERRY_TEST_HOSTILECHECK_H
#define FERRY_TEST_HOSTILECHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "helpers.h"
#include "relay_proto.h"
#include "relayclient.h"
#include "suite.h"

/* The echo backend behind [web]. */
extern struct backend be;
/* The crowd of bad connections a test holds (closed by the fixture). */
extern int *crowd;
extern size_t ncrowd;
struct flooder;
/* A key update flooder running (freed by the fixture). */
extern struct flooder *flooding;

/* Closes the crowd. */
void crowd_close(void);
/* The fixture: the crowd, a flooder, the ferry, the backend. */
void hostile_cleanup(void);
/* "name{listener="L",mode="M"}" */
double mode_metric(const char *name, const char *listener, const char *mode);
/* Waits (15 s at most) for a series to read `want`. */
void expect_mode_metric(const char *name, const char *listener,
    const char *mode, double want);
/* A relay gauge or counter ("ferry_relay_*{listener="L"}"). */
void expect_relay(const char *name, const char *listener, long long want);
/* Deterministic noise (xorshift32): the same garbage on every run. */
uint32_t rnd(uint32_t *s);
/*
 * Connections waiting in the accept queue of the listener on `port`
 * (/proc/net/tcp: the rx_queue of a LISTEN socket), or -1.
 */
long accept_queue(int port);
/*
 * n non-blocking connections to 127.0.0.1:port, made BATCH at a time,
 * each batch once the server's accept queue has room for it: a full
 * queue drops SYNs, and a dropped SYN costs a second.
 * fds[i] is -1 where a connect failed; returns how many connected.
 */
size_t open_many(int port, int *fds, size_t n);
/* Sends all of a small message on a non-blocking socket. */
void send_all(int fd, const void *buf, size_t len);
/*
 * Whether the server has closed each connection (EOF or reset; whatever
 * it sent before is read and dropped).  Polls until all of them are
 * closed or `timeout` passes; closed[i] says which; returns how many.
 */
size_t wait_closed(const int *fds, bool *closed, size_t n, double timeout);
/* How many are already closed, without waiting. */
size_t count_closed_now(const int *fds, size_t n);
/*
 * A real ClientHello (what OpenSSL would send to "localhost"), made
 * without a socket: the bytes a stalled TLS client sends half of.
 */
size_t client_hello(uint8_t *out, size_t cap);
/* The good clients: a relay pair and a forward echo. */
struct witness {
	bool tls;
	int port;
	struct rclient p, c;
	char uuid[64];
	uint32_t seq;			/* next frame to send */
	uint32_t next;			/* next frame the consumer expects */
};

void witness_start(struct witness *w, bool tls, int port, const char *uuid);
/*
 * n more frames through the pair; the consumer reads everything sent so
 * far, every frame, in order.
 */
void witness_ok(struct witness *w, size_t n);
void witness_close(struct witness *w);
/* A forward client through [web]: TLS, one message echoed. */
void echo_ok(int port, const char *msg);
/*
 * [relay] plain, [relay-tls] and [web] (forward, TLS, to an echo
 * backend), all with `timeout` seconds to register or shake hands.
 */
void start_three(double timeout, long nofile);
/* The test process needs room for its crowd too. */
void need_fds(size_t n);
/*
 * A TLS 1.3 client that floods KeyUpdate(update_requested) records: the
 * records are all made first (OpenSSL writes them into a memory BIO), then
 * sent back to back from a thread, and their answers never read.
 */
struct flooder {
	struct peer p;
	char *recs;
	size_t len;
	size_t sent;			/* before the server closed */
	pthread_t thread;
	bool sending;			/* the thread runs, not yet joined */
	volatile bool done;
};

void flooder_make(struct flooder *f, int port, size_t n);
/* Sends until everything is out or the server closes the connection. */
void *flooder_send(void *arg);
void flooder_free(struct flooder *f);

#endif
