/*
 * tlscheck: what the TLS suites (test_tls*.c) share: an echo server on a
 * real tcpserver with the TLS transport, driven by the test's loop, that
 * remembers how its connections ended; and blocking OpenSSL clients in
 * threads (connect, handshake, an optional echo check).
 */
#ifndef FERRY_TEST_TLSCHECK_H
#define FERRY_TEST_TLSCHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "helpers.h"
#include "metrics.h"
#include "peer_id.h"
#include "stream.h"
#include "tcpserver.h"
#include "tls.h"

/* An echo server that remembers how its connections ended. */
struct srv {
	struct tloop t;
	struct tcpserver *ts;
	struct tls_ctx *tls;
	int port;
	int closes;
	int tls_fails, timeouts;
	int handled;
	char last_error[128];
	char tls_error[128];
	char subject[256];
	bool verified;
	struct peer_ids ids;		/* stream_peer_ids() of the newest */
	bool has_ids;
	char alpn[32];
	/* echo read size; small values force SSL_pending */
	size_t chunk;
	struct stream *last;		/* the newest connection, while open */
	volatile int ready;		/* handshakes done */
	struct metrics_conn stats;	/* the listener's counters */
};


/*
 * Starts the server on 127.0.0.1 port 0 (sv->port) with the development
 * certificate, client certificates per `verify`, the handshake timeout,
 * and stream options (NULL: the defaults).
 */
void srv_start(struct srv *sv, enum tls_verify verify, double hs_timeout,
    const struct stream_opts *opts);
void srv_stop(struct srv *sv);

/* A client in a thread: connect, handshake, optional echo check. */
struct client {
	pthread_t th;
	int port;
	const char *sni, *cert, *key;
	int max_version;		/* 0: any */
	const char *ciphers;		/* TLS 1.2 list to offer */
	const char *alpn;		/* wire format */
	size_t alpn_len;
	size_t echo_bytes;		/* 0: handshake only */
	size_t burst_records;		/* records written back to back */
	volatile bool done;
	bool handshake_ok, echo_ok;
	char peer_cn[128];
	char alpn_got[32];
};


void client_start(struct client *c, int port);
/* Runs the server's loop until the client's thread is done, and joins it. */
void client_wait(struct srv *sv, struct client *c);

#endif
