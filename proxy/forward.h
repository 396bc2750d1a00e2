/*
 * forward: TLS termination, on accepted streams (a tcpserver handler).
 *
 * For each client: wait for its handshake (hitch connects to the backend
 * only then, so a client that never finishes costs no backend connection),
 * connect to a backend without blocking, optionally write a PROXY protocol
 * header (in the clear, first thing on the connection; v2 with proxy_tlvs
 * carries the client's TLS in TLVs, forward_proxy.h), optionally run TLS
 * to the backend (verified, with SNI), then pump bytes both ways.
 *
 * Routing: once the client's handshake is done, the routes are matched
 * in order against the name it sent (SNI: `sni:NAME`, exact or
 * `*.domain` for one label, case-insensitive) or the protocol agreed
 * (`alpn:PROTO`); the first that matches names the backend set.  None
 * matching: the set "default", or, with nomatch_refuse, the client is
 * closed without a backend (logged with its name and protocol).
 *
 * Backends (backend.h): the set's pool picks one (weights, backups,
 * round robin or least connections, skipping those marked down).  One
 * that refuses, times out (connect_timeout covers the connect and the
 * backend TLS handshake) or fails its TLS handshake is counted in
 * backend_failures (and in the backend's health) and the next is tried,
 * each at most once per client; when none is left the client is closed
 * at once.
 *
 * The pump: each side is read with partial reads straight into the other
 * side's stream_write (large chunks go to the socket without a copy).
 * Reading one side pauses while the other's write queue is above
 * high_water and resumes when it has drained.  EOF from one side becomes a
 * half-close of the other (FIN, or close_notify then FIN); the connection
 * ends when both directions are done.  An error on either side closes
 * both, a reset included, also from a side whose reading is paused (the
 * stream layer watches it).
 *
 * Timeouts, for the pair: only when no byte has moved either way for
 * idle_timeout seconds is it closed, so a long one-way download is never
 * cut.  Once either side has ended (its EOF read, or its FIN seen while
 * its reading was paused behind bytes the other side does not take),
 * fin_timeout applies instead when it is shorter: a side that has ended
 * sends no more, and a pair in which nothing then moves for fin_timeout
 * is closed.  A client that closed (or shut down its sending side) while
 * its backend stopped reading is otherwise indistinguishable from one
 * waiting for its answer, and with idle_timeout 0 the pair, its two
 * descriptors and their socket buffers, lived until shutdown.  Bytes
 * moving either way keep it open, a download after a client's
 * shutdown(SHUT_WR) included.  0 turns either off.
 *
 * Counting: client bytes and handshakes are counted by the client stream
 * (the listener's counters); backend_failures, backend_bytes_in/out here;
 * per backend, the pool (backend.h).
 * One log line per connection that got past its handshake: listener,
 * peer, backend, duration, bytes forwarded each way (handed to the other
 * side's connection: bytes read but still queued when it ended are not)
 * and the reason it ended.  At most LOG_BURST such lines a second per
 * listener: a line "NAME: N connection lines suppressed" counts those left
 * out, before the next line let through, or a second after the first left
 * out.
 */
#ifndef FERRY_FORWARD_H
#define FERRY_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "backend.h"
#include "forward_proxy.h"
#include "stream.h"
#include "tls.h"

#define FORWARD_MAX_ROUTES 16

enum forward_route_kind { FORWARD_ROUTE_SNI = 0, FORWARD_ROUTE_ALPN };

struct forward_route {
	enum forward_route_kind kind;
	char match[256];		/* the name, "*.domain", or protocol */
	int set;			/* the backend set it sends to */
};

struct forward_opts {
	struct backend_opts backends;	/* the pool's (backend.h) */
	const struct forward_route *routes;
	size_t nroutes;
	bool nomatch_refuse;		/* no route matched: close */
	bool proxy_tlvs;		/* v2: ALPN, authority, SSL TLVs */
	double connect_timeout;		/* seconds; connect + backend TLS */
	double idle_timeout;		/* seconds without traffic; 0 = none */
	double fin_timeout;		/* the same once a side ended; 0 = none */
	size_t high_water;		/* bytes queued before pausing */
	enum forward_proxy proxy;
	struct tls_ctx *backend_tls;	/* NULL: plain to the backend */
	const char *backend_sni;	/* NULL/"": the backend's host */
};

/* One per forward listener and process: what its connections share. */
struct forward_listener;

/*
 * A listener (the options are copied; backend_tls is referenced).
 * NULL when memory cannot be had or the options make no sense (err).
 */
struct forward_listener *forward_listener_new(const char *name,
    struct stream_loop *sl, const struct forward_opts *o, char *err,
    size_t errlen);

/*
 * Runs the backends' active checks in this process, if configured (one
 * process of all).
 */
void forward_listener_start_checks(struct forward_listener *fl);

/* New connections use `tls` for their backends (reload); NULL = plain. */
void forward_listener_set_backend_tls(struct forward_listener *fl,
    struct tls_ctx *tls);

/* Closes every live connection of the listener (shutdown). */
void forward_listener_close_all(struct forward_listener *fl);

/* Its connections not yet gone (a pair counts until both sides are). */
size_t forward_listener_conns(const struct forward_listener *fl);

/*
 * Frees the listener; its connections must be gone (close them with
 * forward_listener_close_all and let the loop finish them).  NULL is
 * ignored.
 */
void forward_listener_free(struct forward_listener *fl);

/* tcpserver_handler; arg is a struct forward_listener. */
void forward_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

#endif
