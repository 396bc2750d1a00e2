/*
 * cluster_conn: a node's connection to NATS, on its loop (natsev.h).
 *
 * Made from [cluster] (config.h): the seed servers (the library also
 * learns the others the cluster advertises and reconnects to any),
 * TLS (on with nats_ca, nats_cert or a tls:// URL; the chain is verified
 * against nats_ca, or the system's CAs), one way to authenticate (user and
 * password, token, or a credentials file), the node's name.  Tuned for a
 * relay, not the library's defaults: a 500 ms connect timeout (the
 * library's reconnect thread holds the connection's lock through a connect
 * attempt), a reconnect every 250 ms for ever, a PING every 2 s with 2
 * outstanding (a half-open server is noticed in 4 to 6 s, not minutes),
 * requests failed at once when the connection is lost (the directory
 * retries), no echo of the node's own messages.
 *
 * The connection is made on a thread of its own (a connect blocks for
 * each unreachable server), which retries in the background when no
 * server answers: the node starts, and serves its own uuids, meanwhile.
 * The library's callbacks (connected, disconnected, reconnected, closed)
 * come from its threads; they are handed to the loop (handoff.h) and
 * reported there, in order, through `state`.
 *
 * Messages: two synchronous subscriptions, drained on the loop right
 * after each read of the socket (no delivery thread, no lock on the hot
 * path): the heartbeats (`hb_subject`, every node) and the node's own
 * subject (`my_subject`: everything addressed to this node, frames
 * included, from one subscription so that what one node sends arrives in
 * the order it was sent).  Each goes to `message`.
 *
 * Publishing (from the loop) goes only while the connection is up (the
 * reconnect trap, natsev.h) and while the library holds less than
 * CLUSTER_CONN_MAX_BUFFERED unsent bytes (with an event loop its buffer
 * has no bound of its own): a node never waits for NATS.
 */
#ifndef FERRY_CLUSTER_CONN_H
#define FERRY_CLUSTER_CONN_H

#include <ev.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define CLUSTER_CONN_MAX_BUFFERED (32 * 1024 * 1024)

enum cluster_conn_state {
	CLUSTER_CONN_CONNECTED,		/* first connect, or after retrying */
	CLUSTER_CONN_DISCONNECTED,
	CLUSTER_CONN_RECONNECTED,
	CLUSTER_CONN_CLOSED,		/* for good (after cluster_conn_close) */
	CLUSTER_CONN_FAILED,		/* the connection could not be made */
};

struct cluster_conn_cb {
	void (*state)(void *arg, enum cluster_conn_state st, const char *url,
	    const char *why);
	void (*message)(void *arg, bool heartbeat, const uint8_t *data,
	    size_t len);
	void *arg;
};

struct cluster_conn;

/*
 * Starts connecting (the thread); NULL with err when the options are bad
 * (a file that does not load) or memory or a thread cannot be had.
 */
struct cluster_conn *cluster_conn_new(struct ev_loop *loop,
    const struct config_cluster *cfg, const char *node,
    const char *hb_subject, const char *my_subject,
    const struct cluster_conn_cb *cb, char *err, size_t errlen);

/* The library's connection once made (NULL before: see `state`). */
natsConnection *cluster_conn_nats(const struct cluster_conn *cc);
/* Whether a publish may go now. */
bool cluster_conn_up(const struct cluster_conn *cc);
/* The server it is connected to ("" when none). */
void cluster_conn_server(const struct cluster_conn *cc, char *out,
    size_t len);

/*
 * Publishes from the loop: 0, or -1 when it cannot go now (down, too
 * much unsent, or an error); nothing is queued then.
 */
int cluster_conn_publish(struct cluster_conn *cc, const char *subject,
    const void *data, size_t len);

/*
 * Drains (what was published is sent; nats.c closes its socket with
 * SO_LINGER 0, which would drop it) and closes, on a library thread; the
 * loop must run until `state` reports CLOSED (or cluster_conn_closed()).
 */
void cluster_conn_close(struct cluster_conn *cc);
bool cluster_conn_closed(const struct cluster_conn *cc);
/* On the loop's thread, after CLOSED (or at exit: it closes at once). */
void cluster_conn_free(struct cluster_conn *cc);

/*
 * --check: the TLS files and the credentials file load; nothing is
 * connected.  0, or -1 with err and *key the [cluster] key at fault.
 */
int cluster_conn_check(const struct config_cluster *cfg, const char **key,
    char *err, size_t errlen);

#endif
