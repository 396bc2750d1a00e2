/*
 * cluster_uuid: one uuid as a node of the cluster sees it (cluster.h,
 * cluster_int.h), but its directory work (cluster_jobs.c).
 *
 * A uuid here is an owner's (a local producer holds it: its directory
 * record, its epoch, the nodes interested in it and the link that feeds
 * them), an import (a producer on another node feeds local consumers
 * through a peer producer, the "ghost"), or both in turn.  Frames go out
 * through the link into each interested node's batch (cluster.c sends the
 * batches before the loop polls), and come in as chunks published into
 * the registry by the ghost, checked against the epoch followed and the
 * sequence expected (a gap is counted as lost).  The node's messages and
 * events (a node gone, back, the node rejoining, leaving, the periodic
 * tick: interest leases, grace polls) end here.
 */
#define _GNU_SOURCE
#include "cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "log.h"
#include "obj.h"


/* ---- the table ---- */

void
cu_token(const char *uuid, size_t ulen, uint8_t token[CLUSTER_TOKEN_SIZE])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)uuid, ulen, md);
	memcpy(token, md, CLUSTER_TOKEN_SIZE);
}

static size_t
bucket_of(const uint8_t token[CLUSTER_TOKEN_SIZE])
{
	return ((size_t)token[0] << 8 | token[1]) % CL_BUCKETS;
}

static void
key_of(const uint8_t token[CLUSTER_TOKEN_SIZE], char out[24])
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-_";
	int o = 0;

	for (int i = 0; i < CLUSTER_TOKEN_SIZE; i += 3) {
		uint32_t v = (uint32_t)token[i] << 16;
		if (i + 1 < CLUSTER_TOKEN_SIZE)
			v |= (uint32_t)token[i + 1] << 8;
		if (i + 2 < CLUSTER_TOKEN_SIZE)
			v |= token[i + 2];
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		if (i + 1 < CLUSTER_TOKEN_SIZE)
			out[o++] = b64[v >> 6 & 63];
		if (i + 2 < CLUSTER_TOKEN_SIZE)
			out[o++] = b64[v & 63];
	}
	out[o] = '\0';
}

struct cl_uuid *
cu_find(struct cluster *cl, const uint8_t token[CLUSTER_TOKEN_SIZE])
{
	for (struct cl_uuid *cu = cl->buckets[bucket_of(token)]; cu != NULL;
	    cu = cu->hnext)
		if (memcmp(cu->token, token, CLUSTER_TOKEN_SIZE) == 0)
			return cu;
	return NULL;
}

/* For log lines. */
const char *
cu_name(const struct cl_uuid *cu, char *out, size_t len)
{
	registry_uuid_str(cu->uuid, cu->ulen, out, len);
	return out;
}

static void ghost_evict(struct relay_conn *c, const struct relay_conn *by);
static const char *ghost_name(const struct relay_conn *c);
static void link_send(struct relay_conn *c, const char *frames, size_t n,
    size_t size);
static const char *link_name(const struct relay_conn *c);

/* A remote producer: it cannot be held (a node never waits for another). */
static const struct relay_peer_ops ghost_ops = { NULL, NULL, ghost_evict,
    NULL, ghost_name };
static const struct relay_peer_ops link_ops = { NULL, NULL, NULL,
    link_send, link_name };

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cl_uuid *cu;

	(void)loop;
	(void)revents;
	CAST_OBJ_NOTNULL(cu, w->data, CL_UUID_MAGIC);
	cu_run(cu);
	cu_collect(cu);
}

struct cl_uuid *
cu_get(struct cluster *cl, const char *uuid, size_t ulen)
{
	uint8_t token[CLUSTER_TOKEN_SIZE];
	struct cl_uuid *cu;
	size_t b;

	cu_token(uuid, ulen, token);
	if ((cu = cu_find(cl, token)) != NULL)
		return cu;
	if ((cu = calloc(1, sizeof(*cu))) == NULL)
		return NULL;
	if ((cu->uuid = malloc(ulen)) == NULL) {
		free(cu);
		return NULL;
	}
	cu->magic = CL_UUID_MAGIC;
	cu->cl = cl;
	memcpy(cu->token, token, sizeof(token));
	key_of(token, cu->key);
	memcpy(cu->uuid, uuid, ulen);
	cu->ulen = ulen;
	registry_peer_init(&cu->link, &link_ops, &cl->links);
	relay_opts_default(&cu->origin.opts);
	registry_peer_init(&cu->ghost, &ghost_ops, &cu->origin);
	ev_timer_init(&cu->retry, retry_cb, 0., 0.);
	cu->retry.data = cu;
	b = bucket_of(token);
	cu->hnext = cl->buckets[b];
	cl->buckets[b] = cu;
	cl->nuuids++;
	cu_collect(cu);
	return cu;
}

void
cu_collect(struct cl_uuid *cu)
{
	if (cu->collect)
		return;
	cu->collect = true;
	cu->collect_next = cu->cl->collect;
	cu->cl->collect = cu;
}

void
cu_job_free(struct cl_job *j)
{
	free(j->keys);
	free(j);
}

static void
cu_free(struct cl_uuid *cu)
{
	struct cluster *cl = cu->cl;
	struct cl_uuid **pp = &cl->buckets[bucket_of(cu->token)];
	struct cl_job *j;

	while (*pp != NULL && *pp != cu)
		pp = &(*pp)->hnext;
	if (*pp == cu)
		*pp = cu->hnext;
	cl->nuuids--;
	while ((j = cu->jobs) != NULL) {
		cu->jobs = j->next;
		cu_job_free(j);
	}
	ev_timer_stop(cl->loop, &cu->retry);
	free(cu->req.value);
	free(cu->interest);
	free(cu->replay);
	free(cu->waiters);
	free(cu->uuid);
	cu->magic = 0;
	free(cu);
}

/* Nothing holds it: no entry, no producer, no work, no record to delete. */
static bool
cu_idle(const struct cl_uuid *cu)
{
	return cu->e == NULL && cu->producer == NULL && cu->jobs == NULL &&
	    !cu->busy && cu->stale_epoch == 0 && !cu->ghost_live &&
	    cu->nwaiters == 0;
}

void
cu_collect_all(struct cluster *cl)
{
	struct cl_uuid *cu;

	while ((cu = cl->collect) != NULL) {
		cl->collect = cu->collect_next;
		cu->collect = false;
		if (cu_idle(cu))
			cu_free(cu);
	}
}

void
cu_free_all(struct cluster *cl)
{
	cl->collect = NULL;
	for (size_t b = 0; b < CL_BUCKETS; b++)
		while (cl->buckets[b] != NULL) {
			struct cl_uuid *cu = cl->buckets[b];
			if (cu->e != NULL)
				cu->e->ext = NULL;
			cu_free(cu);
		}
}

/* ---- links between the uuid and its registry entry ---- */

void
cu_attach_entry(struct cl_uuid *cu)
{
	struct registry_entry *e = registry_find(cu->cl->reg, cu->uuid,
	    cu->ulen);

	cu->e = e;
	if (e != NULL)
		e->ext = cu;
}

void
cu_entry_freed(struct cl_uuid *cu)
{
	struct cluster *cl = cu->cl;

	cu->e = NULL;
	if (cu->remote_len > 0 && cl->up) {
		/* No consumer left here: the producer's node may stop. */
		struct cluster_interest in = { .instance = cl->instance,
		    .epoch = cu->remote_epoch, .flags = CLUSTER_WITHDRAW };
		struct cluster_peer *peer = peers_find(&cl->peers,
		    cu->remote_node, cu->remote_len);
		uint8_t *msg = cl_scratch(cl, 256);
		size_t n;
		memcpy(in.token, cu->token, sizeof(in.token));
		in.node.p = cl->node;
		in.node.len = cl->node_len;
		if (peer != NULL && msg != NULL &&
		    (n = cluster_put_interest(msg, 256, &in)) > 0)
			(void)cl_send(cl, peer, msg, n);
	}
	cu->remote_len = 0;
	cu_collect(cu);
}

/* ---- the owner's side ---- */

static bool
has_interest(const struct cl_uuid *cu)
{
	return cu->ninterest > 0 || cu->replay_on;
}

void
cu_replay_start(struct cl_uuid *cu)
{
	cu->replay_len = 0;
	cu->claimed_at = ev_now(cu->cl->loop);
	cu->replay_on = cu->replay != NULL ||
	    (cu->replay = malloc(CL_REPLAY_BYTES)) != NULL;
}

void
cu_replay_stop(struct cl_uuid *cu)
{
	if (!cu->replay_on && cu->replay == NULL)
		return;
	cu->replay_on = false;
	free(cu->replay);
	cu->replay = NULL;
	cu->replay_len = 0;
	cu_update_link(cu);
}

/* The link feeds the other nodes while one of them wants the frames. */
void
cu_update_link(struct cl_uuid *cu)
{
	if (cu->e == NULL || cu->producer == NULL)
		return;
	registry_set_link(cu->e, has_interest(cu) ? &cu->link : NULL);
}

void
cu_interest_clear(struct cl_uuid *cu)
{
	cu->cl->m->remote_nodes -= cu->ninterest;
	cu->ninterest = 0;
	if (cu->e != NULL && cu->e->link == &cu->link)
		registry_set_link(cu->e, NULL);
}

static void
link_send(struct relay_conn *c, const char *frames, size_t n, size_t size)
{
	struct cl_uuid *cu = container_of(c, struct cl_uuid, link);
	struct cluster *cl = cu->cl;
	struct cluster_chunk ch = { .epoch = cu->epoch, .seq = cu->seq,
	    .frame_size = (uint32_t)size, .count = (uint32_t)n,
	    .data = frames };

	memcpy(ch.token, cu->token, sizeof(ch.token));
	cu->seq += n;
	if (cu->epoch == 0)
		return;
	if (cu->replay_on) {
		if (cu->replay_len + n * size <= CL_REPLAY_BYTES &&
		    ch.seq * size == cu->replay_len) {
			memcpy(cu->replay + cu->replay_len, frames, n * size);
			cu->replay_len += n * size;
		} else {
			cu->replay_on = false;	/* full: freed by the tick */
		}
	}
	for (size_t i = 0; i < cu->ninterest; i++) {
		if (!cl->up) {
			cl->m->frames_out_dropped += n;
			continue;
		}
		cl_batch(cl, cu->interest[i].peer, &ch);
	}
}

static const char *
link_name(const struct relay_conn *c)
{
	(void)c;
	return "other nodes";
}

static void
send_msg_to(struct cl_uuid *cu, struct cluster_peer *peer, size_t n)
{
	if (n > 0)
		(void)cl_send(cu->cl, peer, cu->cl->scratch, n);
}

/* Our claim, to every node heard (and those interested), or to one. */
static void
announce(struct cl_uuid *cu, struct cluster_peer *to)
{
	struct cluster *cl = cu->cl;
	struct cluster_claim c = { .epoch = cu->epoch };
	struct registry_entry *e = cu->e;
	const struct relay_origin *o;
	size_t n;

	if (e == NULL || cu->producer == NULL || cu->epoch == 0 || !cl->up)
		return;
	o = cu->producer->origin;
	memcpy(c.token, cu->token, sizeof(c.token));
	c.rec.node.p = cl->node;
	c.rec.node.len = cl->node_len;
	c.rec.instance = cl->instance;
	c.rec.nonce = cu->nonce;
	c.rec.listener.p = o->name;
	c.rec.listener.len = strlen(o->name);
	c.rec.grace_ms = (uint32_t)(o->opts.grace * 1000);
	c.rec.max_consumers = (uint32_t)o->opts.max_consumers;
	c.rec.takeover = o->opts.takeover == RELAY_REFUSE;
	c.rec.last_value = o->opts.last_value;
	c.rec.uuid.p = cu->uuid;
	c.rec.uuid.len = cu->ulen;
	c.rec.keys.p = e->keys;
	c.rec.keys.len = e->keys_len;
	if (cl_scratch(cl, cluster_record_len(&c.rec) + 64) == NULL)
		return;
	n = cluster_put_claim(cl->scratch, cl->scratch_cap, &c);
	if (to != NULL) {
		send_msg_to(cu, to, n);
		return;
	}
	for (struct cluster_peer *p = cl->peers.head; p != NULL; p = p->next) {
		bool interested = false;
		for (size_t i = 0; i < cu->ninterest; i++)
			interested |= cu->interest[i].peer == p;
		if (p->alive || interested)
			send_msg_to(cu, p, n);
	}
}

void
cu_announce(struct cl_uuid *cu)
{
	announce(cu, NULL);
}

void
cu_announce_to(struct cl_uuid *cu, struct cluster_peer *to)
{
	announce(cu, to);
}

/* Our producer left: the interested nodes are told (after its frames). */
static void
announce_gone(struct cl_uuid *cu, uint8_t reason)
{
	struct cluster *cl = cu->cl;
	struct cluster_gone g = { .epoch = cu->epoch, .reason = reason };
	size_t n;

	if (cu->epoch == 0 || !cl->up || cl_scratch(cl, 64) == NULL)
		return;
	memcpy(g.token, cu->token, sizeof(g.token));
	n = cluster_put_gone(cl->scratch, cl->scratch_cap, &g);
	for (size_t i = 0; i < cu->ninterest; i++)
		send_msg_to(cu, cu->interest[i].peer, n);
}

/* The record a claim writes: malloc'd, *len set; NULL without memory. */
uint8_t *
cu_record_for(struct cl_uuid *cu, const struct cl_job *j, size_t *len)
{
	struct cluster *cl = cu->cl;
	const struct relay_origin *o = j->conn->origin;
	struct cluster_record r = {
		.node = { cl->node, cl->node_len }, .instance = cl->instance,
		.nonce = j->nonce, .listener = { o->name, strlen(o->name) },
		.grace_ms = (uint32_t)(o->opts.grace * 1000),
		.max_consumers = (uint32_t)o->opts.max_consumers,
		.takeover = o->opts.takeover == RELAY_REFUSE,
		.last_value = o->opts.last_value,
		.uuid = { cu->uuid, cu->ulen }, .keys = { j->keys, j->klen },
	};
	size_t cap = cluster_record_len(&r);
	uint8_t *buf = malloc(cap);

	if (buf != NULL && (*len = cluster_put_record(buf, cap, &r)) == 0) {
		free(buf);
		buf = NULL;
	}
	return buf;
}

/* The owner side is over: released, replaced, or never made. */
void
cu_owner_end(struct cl_uuid *cu)
{
	struct cluster *cl = cu->cl;

	cu_interest_clear(cu);
	cu_replay_stop(cu);
	if (cu->producer != NULL) {
		if (cu->epoch != 0)
			cl->m->owned--;
		else
			cl->m->local_only--;
	}
	cu->producer = NULL;
	cu->epoch = 0;
	cu_collect(cu);
}

void
cu_producer_left(struct cl_uuid *cu, struct relay_conn *p)
{
	struct cluster *cl = cu->cl;
	char u[REGISTRY_UUID_STR];

	if (p != cu->producer)
		return;		/* a ghost, or a producer we never knew */
	if (cu->epoch != 0) {
		announce_gone(cu, cl->state == CL_LEAVING ?
		    CLUSTER_GONE_STOPPING : CLUSTER_GONE_LEFT);
		/* Released when the directory can be written. */
		cu->stale_epoch = cu->epoch;
		LOGD("cluster: uuid '%s': producer left, releasing epoch "
		    "%llu", cu_name(cu, u, sizeof(u)),
		    (unsigned long long)cu->epoch);
	}
	cu_owner_end(cu);
	if (cu->stale_epoch != 0) {
		cu_release_later(cu, cu->stale_epoch);
		cu_run(cu);
	}
}

/* ---- the import side ---- */

static void
ghost_evict(struct relay_conn *c, const struct relay_conn *by)
{
	struct cl_uuid *cu = container_of(c, struct cl_uuid, ghost);

	(void)by;
	if (cu->ghost_live) {
		cu->ghost_live = false;
		cu->cl->m->imports--;
	}
}

static const char *
ghost_name(const struct relay_conn *c)
{
	const struct cl_uuid *cu = container_of(c, struct cl_uuid, ghost);

	return cu->remote_node;
}

int
cu_wait_confirm(struct cl_uuid *cu, struct relay_conn *c, cluster_cb cb)
{
	if (cu->nwaiters == cu->capwaiters) {
		size_t cap = cu->capwaiters ? 2 * cu->capwaiters : 4;
		struct cl_waiter *w = realloc(cu->waiters, cap * sizeof(*w));
		if (w == NULL)
			return -1;
		cu->waiters = w;
		cu->capwaiters = cap;
	}
	cu->waiters[cu->nwaiters++] = (struct cl_waiter){ c, cb,
	    ev_now(cu->cl->loop) };
	return 0;
}

void
cu_answer_waiters(struct cl_uuid *cu, bool ok, const char *why)
{
	struct cl_waiter *w = cu->waiters;
	size_t n = cu->nwaiters;

	/* The answers may come back here (a consumer refused, closed). */
	cu->waiters = NULL;
	cu->nwaiters = cu->capwaiters = 0;
	for (size_t i = 0; i < n; i++)
		if (w[i].conn != NULL)
			w[i].cb(w[i].conn, ok, why);
	free(w);
	cu_collect(cu);
}

/*
 * The remote producer is gone: its consumers here wait out the grace
 * (those still waiting for the owner's answer join them).
 */
void
cu_ghost_gone(struct cl_uuid *cu, const char *why)
{
	char u[REGISTRY_UUID_STR];

	if (!cu->ghost_live)
		return;
	LOGI("cluster: uuid '%s': the producer on node %s %s", cu_name(cu, u,
	    sizeof(u)), cu->remote_node, why);
	cu->ghost_live = false;
	cu->cl->m->imports--;
	registry_remove(&cu->ghost);
	cu_answer_waiters(cu, true, NULL);
	cu_collect(cu);
}

/* Nobody here consumes the remote producer's frames any more. */
void
cu_consumers_gone(struct cl_uuid *cu)
{
	if (!cu->ghost_live || cu->e == NULL ||
	    cu->e->producer != &cu->ghost || cu->nwaiters > 0)
		return;
	cu->ghost_live = false;
	cu->cl->m->imports--;
	/* No consumer: no grace; the entry goes, and its node is told. */
	registry_remove(&cu->ghost);
	cu_collect(cu);
}

/* Tells the producer's node that consumers here want its frames. */
void
cu_send_interest(struct cl_uuid *cu, uint8_t flags)
{
	struct cluster *cl = cu->cl;
	struct cluster_interest in = { .node = { cl->node, cl->node_len },
	    .instance = cl->instance, .epoch = cu->remote_epoch,
	    .flags = flags };
	struct cluster_peer *peer;
	size_t n;

	if (!cl->up || cu->remote_len == 0 || cl_scratch(cl, 256) == NULL)
		return;
	peer = peers_get(&cl->peers, cu->remote_node, cu->remote_len,
	    ev_now(cl->loop));
	if (peer == NULL)
		return;
	memcpy(in.token, cu->token, sizeof(in.token));
	n = cluster_put_interest(cl->scratch, cl->scratch_cap, &in);
	send_msg_to(cu, peer, n);
	cu->last_refresh = ev_now(cl->loop);
}

static bool
same_keys(const struct registry_entry *e, const struct cluster_record *r)
{
	return e != NULL && e->keys_len == r->keys.len &&
	    memcmp(e->keys, r->keys.p, r->keys.len) == 0;
}

/*
 * Follows the producer a record (of revision `epoch`) names, on another
 * node: the ghost takes the uuid (a local producer is replaced: the
 * cluster's claim is newer) and the node is asked for the frames.  0, or
 * -1 (memory).
 */
int
cu_import(struct cl_uuid *cu, uint64_t epoch, const struct cluster_record *r,
    bool from_start)
{
	struct cluster *cl = cu->cl;
	struct relay_opts *o = &cu->origin.opts;
	const char *why = NULL;
	char u[REGISTRY_UUID_STR];
	bool was_owner = cu->producer != NULL;

	if (cu->ghost_live && epoch == cu->remote_epoch)
		return 0;
	if (cu->ghost_live && !same_keys(cu->e, r)) {
		/* Another layout: the consumers here cannot use it. */
		cu_ghost_gone(cu, "was replaced with other keys");
	}
	snprintf(cu->origin.name, sizeof(cu->origin.name), "%.*s/%.*s",
	    (int)r->node.len, r->node.p, (int)r->listener.len, r->listener.p);
	o->grace = r->grace_ms / 1000.0;
	o->max_consumers = r->max_consumers;
	o->takeover = r->takeover ? RELAY_REFUSE : RELAY_REPLACE;
	o->last_value = r->last_value;
	memcpy(cu->remote_node, r->node.p, r->node.len);
	cu->remote_node[r->node.len] = '\0';
	cu->remote_len = r->node.len;
	cu->remote_instance = r->instance;
	cu->remote_epoch = epoch;
	cu->confirmed = false;
	cu->synced = false;
	cu->want_last = r->last_value;
	if (!cu->ghost_live) {
		if (registry_take_producer(cl->reg, &cu->ghost, cu->uuid,
		    cu->ulen, r->keys.p, r->keys.len, r->nkeys, &why) < 0) {
			LOGW("cluster: uuid '%s': cannot follow the producer on "
			    "node %s: %s", cu_name(cu, u, sizeof(u)),
			    cu->remote_node, why);
			return -1;
		}
		cu->ghost_live = true;
		cl->m->imports++;
		cu_attach_entry(cu);
	}
	if (was_owner) {
		/* Our producer was replaced (closed by the registry). */
		cl->m->takeovers++;
		cu_owner_end(cu);
	}
	cu_send_interest(cu, CLUSTER_HELLO |
	    (from_start ? CLUSTER_FROM_START : 0) |
	    (cu->want_last ? CLUSTER_WANT_LAST : 0));
	return 0;
}

/* ---- messages from other nodes ---- */

void
cu_on_claim(struct cluster *cl, const struct cluster_claim *m)
{
	struct cl_uuid *cu = cu_find(cl, m->token);
	char u[REGISTRY_UUID_STR];

	if (cu == NULL || cu->ulen != m->rec.uuid.len ||
	    memcmp(cu->uuid, m->rec.uuid.p, cu->ulen) != 0)
		return;		/* nothing here cares */
	if (cl_mine(cl, &m->rec))
		return;
	if (m->epoch > cu->claim_seen)
		cu->claim_seen = m->epoch;
	if (cu->ghost_live && m->epoch == cu->remote_epoch &&
	    m->rec.node.len == cu->remote_len &&
	    memcmp(m->rec.node.p, cu->remote_node, cu->remote_len) == 0) {
		/* The owner's answer: its frames reach this node now. */
		cu->confirmed = true;
		cu_answer_waiters(cu, true, NULL);
		return;
	}
	if (cu->producer != NULL && m->epoch > cu->epoch) {
		/* Another node took the uuid: its producer wins here too. */
		LOGI("cluster: uuid '%s' taken over by node %.*s (epoch %llu)",
		    cu_name(cu, u, sizeof(u)), (int)m->rec.node.len,
		    m->rec.node.p, (unsigned long long)m->epoch);
		if (cu->epoch != 0)
			cu->stale_epoch = 0;
		(void)cu_import(cu, m->epoch, &m->rec, true);
		cu_collect(cu);
		return;
	}
	if (cu->producer == NULL && cu->e != NULL &&
	    m->epoch > cu->remote_epoch)
		(void)cu_import(cu, m->epoch, &m->rec, true);
	else if (cu->producer == NULL && cu->e != NULL && !cu->ghost_live &&
	    m->epoch == cu->remote_epoch)
		(void)cu_import(cu, m->epoch, &m->rec, true);	/* back */
}

void
cu_on_gone(struct cluster *cl, const struct cluster_gone *m)
{
	struct cl_uuid *cu = cu_find(cl, m->token);

	if (cu == NULL || !cu->ghost_live || m->epoch != cu->remote_epoch)
		return;
	cu_ghost_gone(cu, m->reason == CLUSTER_GONE_STOPPING ?
	    "left (its node is stopping)" : "left");
}

void
cu_on_chunk(struct cluster *cl, const struct cluster_chunk *c)
{
	struct cl_uuid *cu = cu_find(cl, c->token);

	if (cu == NULL || !cu->ghost_live || cu->e == NULL ||
	    c->epoch != cu->remote_epoch ||
	    c->frame_size != cu->e->frame_size) {
		cl->m->frames_in_stale += c->count;
		/* A producer we have not heard of: ask the directory. */
		if (cu != NULL && cu->e != NULL && c->epoch > cu->remote_epoch)
			cu_verify(cu);
		return;
	}
	if (cu->synced && c->seq > cu->next_seq)
		cl->m->frames_in_lost += c->seq - cu->next_seq;
	cu->next_seq = c->seq + c->count;
	cu->synced = true;
	cl->m->frames_in += c->count;
	cl->m->bytes_in += (uint64_t)c->count * c->frame_size;
	registry_publish(&cu->ghost, c->data, c->count);
}

void
cu_on_last(struct cluster *cl, const struct cluster_chunk *c)
{
	struct cl_uuid *cu = cu_find(cl, c->token);

	if (cu == NULL || !cu->ghost_live || cu->e == NULL ||
	    c->epoch != cu->remote_epoch ||
	    c->frame_size != cu->e->frame_size)
		return;
	registry_publish_last(&cu->ghost, c->data);
}

/* Sends our last frame of the uuid to one node. */
static void
send_last(struct cl_uuid *cu, struct cluster_peer *peer)
{
	struct cluster *cl = cu->cl;
	struct registry_entry *e = cu->e;
	struct cluster_chunk c = { .epoch = cu->epoch, .count = 1 };
	size_t n;

	if (e == NULL || !e->has_last || e->last == NULL ||
	    cl_scratch(cl, e->frame_size + 64) == NULL)
		return;
	memcpy(c.token, cu->token, sizeof(c.token));
	c.seq = cu->seq > 0 ? cu->seq - 1 : 0;
	c.frame_size = (uint32_t)e->frame_size;
	c.data = e->last;
	n = cluster_put_last(cl->scratch, cl->scratch_cap, &c);
	send_msg_to(cu, peer, n);
}

/* The epoch's first frames to a node whose consumers waited for them. */
static void
replay_to(struct cl_uuid *cu, struct cluster_peer *peer)
{
	size_t fs = cu->e->frame_size;
	struct cluster_chunk c = { .epoch = cu->epoch, .seq = 0,
	    .frame_size = (uint32_t)fs,
	    .count = (uint32_t)(cu->replay_len / fs),
	    .data = (const char *)cu->replay };

	memcpy(c.token, cu->token, sizeof(c.token));
	cl_batch(cu->cl, peer, &c);
}

static void
interest_drop(struct cl_uuid *cu, size_t i)
{
	cu->interest[i] = cu->interest[--cu->ninterest];
	cu->cl->m->remote_nodes--;
	cu_update_link(cu);
}

void
cu_on_interest(struct cluster *cl, const struct cluster_interest *m)
{
	struct cl_uuid *cu = cu_find(cl, m->token);
	struct cluster_peer *peer = peers_get(&cl->peers, m->node.p,
	    m->node.len, ev_now(cl->loop));
	size_t i;

	if (peer == NULL)
		return;
	if (cu == NULL || cu->producer == NULL || cu->epoch == 0) {
		/* Not ours (any more): that node should stop waiting. */
		struct cluster_gone g = { .epoch = m->epoch,
		    .reason = CLUSTER_GONE_LEFT };
		size_t n;
		if (m->flags & CLUSTER_WITHDRAW || m->epoch == 0 ||
		    cl_scratch(cl, 64) == NULL)
			return;
		memcpy(g.token, m->token, sizeof(g.token));
		n = cluster_put_gone(cl->scratch, cl->scratch_cap, &g);
		if (n > 0)
			(void)cl_send(cl, peer, cl->scratch, n);
		return;
	}
	for (i = 0; i < cu->ninterest; i++)
		if (cu->interest[i].peer == peer)
			break;
	if (m->flags & CLUSTER_WITHDRAW) {
		if (i < cu->ninterest)
			interest_drop(cu, i);
		return;
	}
	if (m->epoch != cu->epoch) {
		/* It follows an older producer: tell it about ours. */
		cu_announce(cu);
	}
	if (i == cu->ninterest) {
		if (cu->ninterest == cu->capinterest) {
			size_t cap = cu->capinterest ? 2 * cu->capinterest : 4;
			struct cl_interest *n = realloc(cu->interest,
			    cap * sizeof(*n));
			if (n == NULL)
				return;
			cu->interest = n;
			cu->capinterest = cap;
		}
		cu->interest[cu->ninterest++].peer = peer;
		cl->m->remote_nodes++;
		cu_update_link(cu);
	}
	cu->interest[i].instance = m->instance;
	cu->interest[i].expires = ev_now(cl->loop) + CL_INTEREST_LEASE;
	if (m->flags & CLUSTER_FROM_START && m->epoch == cu->epoch &&
	    cu->replay_len > 0 && cu->e != NULL)
		replay_to(cu, peer);
	if (m->flags & CLUSTER_HELLO && m->epoch == cu->epoch)
		announce(cu, peer);
	if (m->flags & CLUSTER_WANT_LAST)
		send_last(cu, peer);
}

/* ---- the node's events ---- */

#define FOR_EACH_UUID(cl, cu) \
	for (size_t b_ = 0; b_ < CL_BUCKETS; b_++) \
		for (struct cl_uuid *cu = (cl)->buckets[b_], *n_; \
		    cu != NULL && (n_ = cu->hnext, 1); cu = n_)

void
cu_peer_dead(struct cluster *cl, struct cluster_peer *peer,
    uint64_t instance)
{
	FOR_EACH_UUID(cl, cu) {
		for (size_t i = 0; i < cu->ninterest; i++)
			if (cu->interest[i].peer == peer) {
				interest_drop(cu, i);
				break;
			}
		if (cu->ghost_live && cu->remote_len == peer->len &&
		    memcmp(cu->remote_node, peer->name, peer->len) == 0 &&
		    (instance == 0 || cu->remote_instance == instance))
			cu_ghost_gone(cu, "is gone with its node");
	}
}

void
cu_peer_back(struct cluster *cl, struct cluster_peer *peer)
{
	FOR_EACH_UUID(cl, cu)
		if (cu->e != NULL && !cu->ghost_live &&
		    cu->remote_len == peer->len &&
		    memcmp(cu->remote_node, peer->name, peer->len) == 0)
			cu_verify(cu);
}

void
cu_rejoin(struct cluster *cl)
{
	FOR_EACH_UUID(cl, cu) {
		if (cu->stale_epoch != 0 && cu->producer == NULL)
			cu_release_later(cu, cu->stale_epoch);
		if (cu->producer != NULL || cu->e != NULL)
			cu_verify(cu);
		cu_run(cu);
	}
}

void
cu_tick(struct cluster *cl, ev_tstamp now, bool slow)
{
	if (!slow)
		return;
	FOR_EACH_UUID(cl, cu) {
		/* Owner: forget nodes that stopped saying they care. */
		for (size_t i = 0; i < cu->ninterest; )
			if (cu->interest[i].expires < now)
				interest_drop(cu, i);
			else
				i++;
		/* Owner: the first frames are kept for a second only. */
		if (cu->replay != NULL && (!cu->replay_on ||
		    now - cu->claimed_at >= CL_REPLAY_SECONDS))
			cu_replay_stop(cu);
		/* Import: say we still care (hello again until answered). */
		if (cu->ghost_live &&
		    now - cu->last_refresh >= CL_INTEREST_REFRESH)
			cu_send_interest(cu, cu->confirmed ? 0 : CLUSTER_HELLO);
		/* The owner did not answer in time: the consumers go on. */
		if (cu->nwaiters > 0 &&
		    now - cu->waiters[0].since >= CL_CONFIRM_WAIT)
			cu_answer_waiters(cu, true, NULL);
		/* Consumers waiting: did their producer come back? */
		if (cu->e != NULL && !cu->ghost_live && cu->producer == NULL &&
		    cu->jobs == NULL && cl_joined(cl))
			cu_verify(cu);
	}
}

void
cu_leave(struct cluster *cl)
{
	FOR_EACH_UUID(cl, cu) {
		uint64_t epoch = cu->epoch;
		if (cu->producer != NULL && epoch != 0) {
			announce_gone(cu, CLUSTER_GONE_STOPPING);
			cu_owner_end(cu);
			cu_release_later(cu, epoch);
		}
		cu_run(cu);
	}
}
