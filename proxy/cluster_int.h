/*
 * cluster_int: the node's state, shared by cluster.c (the node) and
 * cluster_uuid.c (one uuid) and by no other file.  See cluster.h.
 */
#ifndef FERRY_CLUSTER_INT_H
#define FERRY_CLUSTER_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "cluster_conn.h"
#include "cluster_dir.h"
#include "cluster_peers.h"
#include "cluster_proto.h"
#include "metrics.h"
#include "registry.h"

#define CLUSTER_MAGIC 0x636c7374u	/* "clst" */
#define CL_UUID_MAGIC 0x636c7575u	/* "cluu" */
#define CL_BUCKETS 4096
/* A batch of frames for one node goes out once this big. */
#define CL_BATCH_BYTES (60 * 1024)
/* Interest: refreshed by the consumers' node, forgotten by the owner. */
#define CL_INTEREST_REFRESH 3.0
#define CL_INTEREST_LEASE 10.0
/* A node with consumers waiting out a grace period asks the directory
 * this often whether their producer came back somewhere. */
#define CL_GRACE_POLL 1.0
#define CL_RETRY 0.1			/* a directory call that failed */
#define CL_CLAIM_TRIES 10		/* conflicts in a row, then refused */
#define CL_LEAVE_SECONDS 3.0		/* releases and drain, at most */
/*
 * A new owner keeps the frames of its claim's first second (up to this
 * many bytes) for nodes whose consumers waited for it (a resume): their
 * interest arrives a round trip after the first frames.
 */
#define CL_REPLAY_SECONDS 1.0
#define CL_REPLAY_BYTES (64 * 1024)
/* A consumer waits this long at most for the owner's hello answer. */
#define CL_CONFIRM_WAIT 2.0

enum cl_state {
	CL_ALONE,			/* no NATS or no directory (yet) */
	CL_JOINED,
	CL_LEAVING,
};

enum cl_job_kind {
	JOB_CLAIM,			/* a local producer's keys */
	JOB_LOOKUP,			/* a local consumer's unknown uuid */
	JOB_RELEASE,			/* delete our record at `rev` */
	JOB_VERIFY,			/* read the record again (rejoin, grace) */
};

struct cl_job {
	enum cl_job_kind kind;
	struct cl_job *next;
	struct relay_conn *conn;	/* CLAIM, LOOKUP; NULL: cancelled */
	cluster_cb cb;
	char *keys;			/* CLAIM */
	size_t klen, nkeys;
	uint64_t nonce;			/* CLAIM: ours, to know our write */
	uint64_t rev;			/* RELEASE: the revision to delete */
	int tries;
	bool wrote;			/* a write was sent: re-read first */
	/* CLAIM: the node whose record it overwrites, told directly. */
	char prev[CLUSTER_NODE_MAX + 1];
	size_t prev_len;
};

/* A node that has consumers of a uuid this node's producer holds. */
struct cl_interest {
	struct cluster_peer *peer;
	uint64_t instance;
	ev_tstamp expires;
};

/* A consumer waiting for the owner to confirm it feeds this node. */
struct cl_waiter {
	struct relay_conn *conn;	/* NULL: cancelled */
	cluster_cb cb;
	ev_tstamp since;
};

struct cluster;

struct cl_uuid {
	uint32_t magic;
	struct cluster *cl;
	uint8_t token[CLUSTER_TOKEN_SIZE];
	char key[24];			/* the token in base64url: the KV key */
	char *uuid;
	size_t ulen;
	struct cl_uuid *hnext;
	struct registry_entry *e;	/* the registry's, while it exists */
	bool collect;			/* on the node's list to look at */
	struct cl_uuid *collect_next;

	/* Owner: a local producer holds it. */
	struct relay_conn *producer;	/* the relay's, while registered */
	uint64_t epoch;			/* our record's revision; 0: local only */
	uint64_t nonce;
	uint64_t seq;			/* of the next frame sent */
	struct relay_conn link;		/* the other nodes, as one consumer */
	struct cl_interest *interest;
	size_t ninterest, capinterest;
	bool replay_on;			/* the first frames are being kept */
	ev_tstamp claimed_at;
	uint8_t *replay;		/* CL_REPLAY_BYTES once replay_on */
	size_t replay_len;
	uint64_t stale_epoch;		/* a record of ours to delete */
	/*
	 * The newest epoch another node claimed, heard while our claim's
	 * answer was on its way: a write of ours older than it lost.
	 */
	uint64_t claim_seen;

	/* Import: a producer on another node feeds local consumers. */
	struct relay_conn ghost;
	struct relay_origin origin;	/* that device's settings */
	bool ghost_live;		/* the entry's producer now */
	uint64_t remote_epoch;
	char remote_node[CLUSTER_NODE_MAX + 1];
	size_t remote_len;
	uint64_t remote_instance;
	uint64_t next_seq;		/* of the next frame expected */
	bool synced;			/* a first frame was seen */
	bool want_last;
	bool confirmed;			/* the owner answered our hello */
	struct cl_waiter *waiters;	/* consumers answered once confirmed */
	size_t nwaiters, capwaiters;
	ev_tstamp last_refresh;		/* of our interest */

	/* Directory work, one request at a time. */
	struct cl_job *jobs, *jobs_tail;
	struct dir_req req;
	bool busy;
	ev_timer retry;
};

struct cluster {
	uint32_t magic;
	struct ev_loop *loop;
	struct registry *reg;
	const struct config_cluster *cfg;
	char node[CLUSTER_NODE_MAX + 1];
	size_t node_len;
	uint64_t instance;
	char prefix[64];
	char bucket[96];
	char hb_subject[96];
	char my_subject[CLUSTER_SUBJECT_MAX];
	struct cluster_conn *conn;
	struct cluster_dir *dir;
	struct cluster_peers peers;
	enum cl_state state;
	bool up;			/* the connection is up */
	bool dir_open;
	int replicas_seen;		/* of the directory's bucket */
	bool closed;			/* the connection is closed (leaving) */
	bool freeing;			/* late answers do nothing */
	ev_timer tick;
	unsigned ticks;
	ev_prepare prepare;		/* batches out, uuids collected */
	ev_tstamp leave_deadline;
	struct cl_uuid *buckets[CL_BUCKETS];
	size_t nuuids;
	struct cl_uuid *collect;	/* uuids to look at before the poll */
	struct relay_origin links;	/* origin of the links */
	struct metrics_cluster *m;
	uint8_t *scratch;		/* messages are built here */
	size_t scratch_cap;
};

/* ---- cluster.c, for cluster_uuid.c ---- */

/* Room for a message of n bytes in cl->scratch (NULL without memory). */
uint8_t *cl_scratch(struct cluster *cl, size_t n);
/* To one node, after what is batched for it.  0 or -1. */
int cl_send(struct cluster *cl, struct cluster_peer *peer,
    const uint8_t *msg, size_t len);
/* Frames into the node's batch (a FRAMES chunk). */
void cl_batch(struct cluster *cl, struct cluster_peer *peer,
    const struct cluster_chunk *c);
/* Whether a record is this node's (this start's). */
bool cl_mine(const struct cluster *cl, const struct cluster_record *r);
/* Whether the node may use the directory now. */
bool cl_joined(const struct cluster *cl);
/* Random bits (nonces). */
uint64_t cl_random(void);

/* ---- cluster_jobs.c ---- */

/* Starts the next job, unless one waits for an answer or a retry. */
void cu_run(struct cl_uuid *cu);
/* Our record at `rev` is to be deleted (now, or once joined again). */
void cu_release_later(struct cl_uuid *cu, uint64_t rev);
/* The record is read again, and followed (one such job at a time). */
void cu_verify(struct cl_uuid *cu);
int cu_claim(struct cl_uuid *cu, struct relay_conn *c, const char *keys,
    size_t klen, size_t nkeys, cluster_cb cb, const char **why);
int cu_lookup(struct cl_uuid *cu, struct relay_conn *c, cluster_cb cb,
    const char **why);
void cu_cancel(struct cl_uuid *cu, struct relay_conn *c);

/* ---- cluster_uuid.c ---- */

/* For cluster_jobs.c. */
const char *cu_name(const struct cl_uuid *cu, char *out, size_t len);
void cu_job_free(struct cl_job *j);
void cu_attach_entry(struct cl_uuid *cu);
void cu_update_link(struct cl_uuid *cu);
void cu_interest_clear(struct cl_uuid *cu);
void cu_announce(struct cl_uuid *cu);
/* Our claim to one node (NULL: every node heard). */
void cu_announce_to(struct cl_uuid *cu, struct cluster_peer *to);
void cu_owner_end(struct cl_uuid *cu);
int cu_import(struct cl_uuid *cu, uint64_t epoch,
    const struct cluster_record *r, bool from_start);
/* The owner starts keeping its first frames (a new claim). */
void cu_replay_start(struct cl_uuid *cu);
void cu_replay_stop(struct cl_uuid *cu);
void cu_ghost_gone(struct cl_uuid *cu, const char *why);
void cu_send_interest(struct cl_uuid *cu, uint8_t flags);
/* A consumer's lookup is answered once the owner confirmed (or late). */
int cu_wait_confirm(struct cl_uuid *cu, struct relay_conn *c,
    cluster_cb cb);
void cu_answer_waiters(struct cl_uuid *cu, bool ok, const char *why);
uint8_t *cu_record_for(struct cl_uuid *cu, const struct cl_job *j,
    size_t *len);

void cu_token(const char *uuid, size_t ulen,
    uint8_t token[CLUSTER_TOKEN_SIZE]);
struct cl_uuid *cu_find(struct cluster *cl,
    const uint8_t token[CLUSTER_TOKEN_SIZE]);
struct cl_uuid *cu_get(struct cluster *cl, const char *uuid, size_t ulen);
/* Looks at the uuid before the next poll (frees it if nothing holds it). */
void cu_collect(struct cl_uuid *cu);
void cu_collect_all(struct cluster *cl);
void cu_free_all(struct cluster *cl);

/* The registry's observer. */
void cu_producer_left(struct cl_uuid *cu, struct relay_conn *p);
void cu_entry_freed(struct cl_uuid *cu);
void cu_consumers_gone(struct cl_uuid *cu);

/* Messages. */
void cu_on_claim(struct cluster *cl, const struct cluster_claim *m);
void cu_on_gone(struct cluster *cl, const struct cluster_gone *m);
void cu_on_chunk(struct cluster *cl, const struct cluster_chunk *c);
void cu_on_last(struct cluster *cl, const struct cluster_chunk *c);
void cu_on_interest(struct cluster *cl, const struct cluster_interest *m);

/* The node's events. */
void cu_peer_dead(struct cluster *cl, struct cluster_peer *peer,
    uint64_t instance);
void cu_peer_back(struct cluster *cl, struct cluster_peer *peer);
void cu_rejoin(struct cluster *cl);
void cu_tick(struct cluster *cl, ev_tstamp now, bool slow);
void cu_leave(struct cluster *cl);

#endif
