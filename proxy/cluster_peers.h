/*
 * cluster_peers: the other nodes of the cluster, as one node hears them.
 *
 * Every node publishes a heartbeat every CLUSTER_HB_INTERVAL seconds; a
 * node not heard for CLUSTER_DEAD_AFTER (4 intervals) is dead, and so is
 * an instance of a name that came back with another (a restart), and a
 * node whose heartbeat says it is stopping.  While this node has no NATS
 * connection it hears nobody, and judges nobody: the silence is its own;
 * once connected again, every peer has a whole CLUSTER_DEAD_AFTER to be
 * heard before it is judged.
 *
 * Judging the owner of a directory record (peers_judge): ALIVE, DEAD, or
 * UNKNOWN -- a name not heard yet, while this node has not listened for
 * CLUSTER_DEAD_AFTER since it connected (a node that just joined has not
 * heard the others yet; after that, a node never heard is a dead one).
 *
 * Each peer also has the subject of its messages (the prefix, "n", and a
 * token of its name: a name may hold characters a subject may not) and
 * the batch of frames waiting to be sent to it (cluster.c).  Loop thread
 * only; times are the loop's.
 */
#ifndef FERRY_CLUSTER_PEERS_H
#define FERRY_CLUSTER_PEERS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "cluster_proto.h"

#define CLUSTER_HB_INTERVAL	0.25
#define CLUSTER_DEAD_AFTER	(4 * CLUSTER_HB_INTERVAL)
#define CLUSTER_SUBJECT_MAX	160

struct cluster_peer {
	char name[CLUSTER_NODE_MAX + 1];
	size_t len;
	uint64_t instance;		/* the one heard last */
	char subject[CLUSTER_SUBJECT_MAX];
	ev_tstamp last_seen;
	bool alive;
	bool written_off;		/* named, never heard: judged dead */
	struct buffer out;		/* FRAMES being batched for it */
	size_t out_frames;		/* frames in it */
	struct cluster_peer *next;
};

struct cluster_peers {
	struct cluster_peer *head;
	size_t alive;			/* peers alive now */
	char prefix[64];
	ev_tstamp listening_since;	/* connected since; 0: not connected */
};

enum peer_news {
	PEER_SAME,			/* heard again */
	PEER_NEW,			/* first heard */
	PEER_BACK,			/* was judged dead, heard again */
	PEER_RESTARTED,			/* another instance: the old one died */
	PEER_STOPPING,			/* says it leaves: dead now */
};

enum peer_verdict { PEER_ALIVE, PEER_DEAD, PEER_UNKNOWN };

void peers_init(struct cluster_peers *p, const char *prefix);
void peers_free(struct cluster_peers *p);

/* The subject of node `name`'s messages: PREFIX.n.TOKEN. */
void peers_subject(const char *prefix, const char *name, size_t len,
    char *out, size_t outlen);

struct cluster_peer *peers_find(struct cluster_peers *p, const char *name,
    size_t len);
/* Found or added (not alive until heard); NULL without memory. */
struct cluster_peer *peers_get(struct cluster_peers *p, const char *name,
    size_t len, ev_tstamp now);

/*
 * A heartbeat.  *old is the instance that died when PEER_RESTARTED; *pp
 * the peer (NULL only without memory).
 */
enum peer_news peers_heard(struct cluster_peers *p, const char *name,
    size_t len, uint64_t instance, bool stopping, ev_tstamp now,
    struct cluster_peer **pp, uint64_t *old);

/* The connection came up (now) or went down (0). */
void peers_listening(struct cluster_peers *p, ev_tstamp now);

/*
 * Judges the silent: each peer alive but not heard for
 * CLUSTER_DEAD_AFTER is dead now, reported to `dead`, and so is (once) a
 * peer named by a record or a message but never heard within
 * CLUSTER_DEAD_AFTER (a node killed before this one heard it).  Nothing
 * while not connected.
 */
void peers_expire(struct cluster_peers *p, ev_tstamp now,
    void (*dead)(void *arg, struct cluster_peer *peer), void *arg);

enum peer_verdict peers_judge(const struct cluster_peers *p,
    const char *name, size_t len, uint64_t instance, ev_tstamp now);

#endif
