/*
 * cluster: this worker as a node of a Ferry cluster -- one uuid namespace
 * shared by every node, over NATS.  docs/cluster.md is the user's and
 * operator's description (with the cluster protocol); this is the
 * module's contract.
 *
 * A node has one NATS connection (cluster_conn.h), a directory of who
 * holds which uuid in a JetStream bucket (cluster_dir.h), heartbeats with
 * the other nodes (cluster_peers.h), and plugs into the worker's registry
 * (registry.h) as peers: a remote producer feeding local consumers (an
 * "import"), and one link per local producer to the nodes that have
 * consumers of it (an "export").  Files: cluster.c (the node, its
 * connection and messages, the relay's calls), cluster_uuid.c (one uuid:
 * claims, lookups, releases, imports, exports), cluster_peers.c (the
 * other nodes); cluster_int.h is private to them.
 *
 * The relay layer calls it at two steps, both answered later through a
 * callback (never from inside the call), without blocking the loop:
 *   - cluster_claim(): a producer's keys.  The node writes the uuid's
 *     directory record (atomic create, or compare-and-swap over a record
 *     it may take: its own, one of a dead node, or one whose device lets
 *     itself be taken over), and only then registers the producer in the
 *     registry; the relay answers 0x00 after that, so a registration is
 *     visible cluster-wide before the producer is acknowledged.  A uuid
 *     held on a live node with takeover = refuse is refused;
 *   - cluster_lookup(): a consumer's uuid that no local entry knows.  The
 *     node reads the record from the bucket's leader (consistent with
 *     every acknowledged claim), and when a live node holds it, registers
 *     that producer as a peer in the registry and asks its node for the
 *     frames; the relay then attaches the consumer as usual.
 * cluster_cancel() forgets a connection that closed while waiting.  The
 * rest (a producer leaving, an entry freed) the node hears from the
 * registry's observer.
 *
 * Decisions, documented in docs/cluster.md: max_consumers counts per
 * node (a remote node is one link, with no slot); block cannot hold a
 * producer on another node (its consumers there drop instead); a node
 * that could not join NATS serves its own uuids alone, refuses consumers
 * of uuids it does not know, and reconciles on joining: where the
 * directory names a live node for one of its uuids, the directory wins
 * and the local producer is closed (its consumers follow the cluster's
 * producer when its keys are the same).
 */
#ifndef FERRY_CLUSTER_H
#define FERRY_CLUSTER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "registry.h"

struct cluster;

/* The answer to a claim or a lookup: ok, or why not. */
typedef void (*cluster_cb)(struct relay_conn *c, bool ok, const char *why);

/*
 * A node for worker `worker` of `workers` on the registry `reg` (its
 * observer from now on); it connects at once, in the background.  NULL
 * with err when [cluster] cannot be used (a file that does not load) or
 * memory cannot be had.  cfg must outlive it.
 */
struct cluster *cluster_new(struct ev_loop *loop, struct registry *reg,
    const struct config_cluster *cfg, int worker, int workers, char *err,
    size_t errlen);

/* This node's name. */
const char *cluster_node(const struct cluster *cl);

/*
 * A producer's keys (see above).  0: decided now (*why NULL: registered;
 * else refused); 1: the answer comes through cb.  `origin` is the
 * listener the producer arrived on.
 */
int cluster_claim(struct cluster *cl, struct relay_conn *c,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, cluster_cb cb, const char **why);

/*
 * A consumer's uuid unknown here (see above).  0: decided now (refused,
 * *why set); 1: the answer comes through cb.
 */
int cluster_lookup(struct cluster *cl, struct relay_conn *c,
    const char *uuid, size_t ulen, cluster_cb cb, const char **why);

/* The connection closed while a claim or lookup of uuid waited for it. */
void cluster_cancel(struct cluster *cl, struct relay_conn *c,
    const char *uuid, size_t ulen);

/* The node whose producer feeds an entry, for log lines (this one's name
 * for a local producer). */
const char *cluster_holder(const struct cluster *cl,
    const struct registry_entry *e);

/*
 * Leaving (SIGTERM, after the connections closed): the uuids still held
 * are released in the directory, the other nodes told, the connection
 * drained.  Run the loop until cluster_left(), then cluster_free().
 */
void cluster_leave(struct cluster *cl);
bool cluster_left(const struct cluster *cl);
void cluster_free(struct cluster *cl);

/* --check: [cluster]'s files load.  0, or -1 with err. */
int cluster_check(const struct config *c, char *err, size_t errlen);

#endif
