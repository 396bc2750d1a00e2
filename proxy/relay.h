/*
 * relay: the relay protocol on a stream, and the relay listeners.
 *
 * The protocol itself (bytes, limits, checks, the pure parser) is
 * relay_proto.h; the uuid -> producer and consumers table and the
 * fan-out are the registry (registry.h); the metric families are
 * relay_metrics.h.  This is the glue between them: relay_handle_stream
 * reads a client's stream with partial reads, feeds the parser, answers
 * each step (0x00 / 0x01 / the keys) and hands frames to the registry.
 *
 * Consumer slots: a consumer is pending from its uuid's 0x00 until its
 * accept byte, and holds no slot meanwhile; only accepted consumers count
 * against the uuid's max_consumers (registry.h).  Its uuid is answered
 * 0x01 when max_consumers are accepted already.  An accept byte that
 * comes when they are (others accepted since its uuid step) is refused
 * the only way the protocol allows after the keys: the server closes
 * (FIN, then the linger below) without sending a byte, logs "refused at
 * its accept byte" and counts it in `refused`.  A pending consumer is
 * bounded by the registration deadline (header_timeout), which runs
 * until its accept byte; with none (0) it may stay, holding its
 * connection but no slot.
 *
 * WebSocket clients: a connection whose first byte is a letter is an
 * HTTP request (http.h), read under the same registration deadline:
 * GET /v1/consume/<uuid> or GET /v1/produce/<uuid>?keys=..., upgraded to a
 * WebSocket (ws.h) and then a consumer or producer like any other (the
 * same registry calls, limits, access list, policies and counters; see
 * docs/protocol.md, section 9).  What the device protocol answers 0x01 is
 * answered with an HTTP status before the upgrade (404 no producer, 409
 * taken, 403 access list or Origin not in `origins`, 400 a broken limit,
 * 426/400 a bad upgrade, 431 a head too large) and the same linger.  A
 * consumer gets a text message with the keys as JSON, then one binary
 * message per frame, framed by the registry through relay_wire (the
 * registry does not know WebSocket); it is accepted at once.  A producer's
 * binary messages must hold whole frames (else closed with 1007; text:
 * 1003).
 *
 * Each relay listener is a struct relay_listener; all of a process's share
 * one registry (one uuid namespace).  A connection's limits and timeouts
 * are those of the listener it arrived on (see registry.h for the rest).
 *
 * Limits: those of relay_proto.h, each from the listener's relay_opts.
 * A broken limit is answered 0x01; the server then sends its FIN and
 * reads (discarding) until the client closes, or a couple of seconds
 * pass, so that the 0x01 is not lost to a reset.  Any other first byte
 * than 0x0a / 0x0b closes the connection.  Bytes a consumer sends after
 * its accept byte are read and ignored.
 *
 * Access list: on a listener with one (acl.h), the uuid step asks it
 * first, with the identities of the client's verified certificate and the
 * role: a client it does not allow gets 0x01, exactly as for an unknown
 * uuid, and a warning (listener, role, peer, certificate identities,
 * uuid).  What it allowed is logged with the registration: the identity
 * that matched and the rule's line.  A new list (a reload) applies from
 * the next uuid step on; uuids already registered stay.
 *
 * Logging: one line when a producer registers or a consumer is accepted,
 * one when such a client leaves (uuid, keys, peer, duration, frames,
 * drops, bytes each way, why); every other connection gets one line
 * when it closes (peer, duration, bytes each way, why), rate-limited.
 *
 * Cluster (cluster.h): on a node of a cluster, a producer's keys are
 * claimed cluster-wide, and a consumer's uuid that no local entry knows
 * is looked up, before they are answered; meanwhile the connection's
 * reading is paused and the bytes it had pipelined after the step wait,
 * to be fed to the parser once the answer came.  The registration
 * deadline bounds the wait.  Log lines name the node whose producer
 * holds the uuid.
 *
 * Memory: a connection's record (its parser, timer and the registry's
 * relay_conn) is freed by its stream's close callback, whatever closed
 * it; the listener keeps a list of the open ones for shutdown.
 */
#ifndef FERRY_RELAY_H
#define FERRY_RELAY_H

#include <stdint.h>
#include <sys/socket.h>

#include "http.h"
#include "registry.h"
#include "ws.h"

struct acl;
struct cluster;

/* A relay listener's WebSocket side (see WebSocket clients above). */
struct relay_web {
	struct ws_opts ws;
	/*
	 * The Origin values a browser's request may carry, separated by
	 * spaces or commas; "" allows any.  A request without Origin (not a
	 * browser) is not checked.
	 */
	char origins[1024];
};

void relay_web_default(struct relay_web *w);
struct relay_listener;

/* A listener on the shared registry; NULL when memory cannot be had. */
struct relay_listener *relay_listener_new(const char *name,
    struct registry *reg, const struct relay_opts *opts);
/*
 * After its streams are closed and the registry's entries freed (they
 * point to the listener); NULL is ignored.  The registry is not freed.
 */
void relay_listener_free(struct relay_listener *rl);
/*
 * Closes every open connection of the listener (shutdown past the drain
 * deadline); their close callbacks run with the loop's pending work.
 */
void relay_listener_close_all(struct relay_listener *rl);
/*
 * No connection of it is open and no registry entry is its: it may be
 * freed (a listener a reload removed, once drained).
 */
bool relay_listener_idle(const struct relay_listener *rl);
/* The node of a cluster the listener is part of (NULL: none). */
void relay_listener_set_cluster(struct relay_listener *rl,
    struct cluster *cl);
/* The listener's access list from now on (NULL: none); frees the old. */
void relay_listener_set_acl(struct relay_listener *rl, struct acl *acl);

/* Its name, options and totals, as the registry counts them. */
const struct relay_origin *relay_listener_origin(
    const struct relay_listener *rl);
/* Connections it closed for a protocol error (first byte, accept byte). */
uint64_t relay_listener_protocol_errors(const struct relay_listener *rl);

/* Its WebSocket settings from now on (new connections). */
void relay_listener_set_web(struct relay_listener *rl,
    const struct relay_web *w);

/*
 * Takes over a stream whose HTTP request head another listener has read
 * (the admin listener's device page): the request is answered as on a
 * relay listener, WebSocket upgrade and all.  `head` (malloc'ed) is
 * taken over; `rest` is what followed the head.
 */
void relay_take_http(struct relay_listener *rl, struct stream *s,
    struct http_head *head, const char *rest, size_t restlen);

/* tcpserver_handler; arg is a struct relay_listener. */
void relay_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

#endif
