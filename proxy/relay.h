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

#include "registry.h"

struct acl;
struct cluster;
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

/* tcpserver_handler; arg is a struct relay_listener. */
void relay_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

#endif
