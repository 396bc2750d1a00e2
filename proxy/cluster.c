/*
 * cluster: the node (see cluster.h): its connection and directory, the
 * heartbeats, the messages of other nodes, the batches of frames going to
 * them, the relay's calls, leaving, and the metric families.  One uuid's
 * logic is cluster_uuid.c and cluster_jobs.c.
 */
#define _GNU_SOURCE
#include "cluster_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "obj.h"

#define SCRATCH_MIN (CLUSTER_FRAME_MAX + 1024)

/* ---- helpers for cluster_uuid.c ---- */

uint64_t
cl_random(void)
{
	uint64_t v;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
		v = (uint64_t)time(NULL) * 6364136223846793005ull ^
		    (uint64_t)getpid() << 32 ^ (uint64_t)clock();
	return v;
}

uint8_t *
cl_scratch(struct cluster *cl, size_t n)
{
	uint8_t *p;

	if (n <= cl->scratch_cap)
		return cl->scratch;
	if ((p = realloc(cl->scratch, n)) == NULL)
		return NULL;
	cl->scratch = p;
	cl->scratch_cap = n;
	return p;
}

bool
cl_mine(const struct cluster *cl, const struct cluster_record *r)
{
	return r->instance == cl->instance && r->node.len == cl->node_len &&
	    memcmp(r->node.p, cl->node, cl->node_len) == 0;
}

bool
cl_joined(const struct cluster *cl)
{
	return cl->state == CL_JOINED || (cl->state == CL_LEAVING &&
	    cl->up && cl->dir_open);
}

/* What is batched for a node goes out (or is counted as dropped). */
static void
flush_peer(struct cluster *cl, struct cluster_peer *p)
{
	size_t len = buffer_len(&p->out);

	if (len == 0)
		return;
	if (cluster_conn_publish(cl->conn, p->subject, buffer_data(&p->out),
	    len) == 0) {
		cl->m->msgs_out++;
		cl->m->frames_out += p->out_frames;
		cl->m->bytes_out += len;
	} else {
		cl->m->frames_out_dropped += p->out_frames;
	}
	buffer_consume(&p->out, len);
	p->out_frames = 0;
}

int
cl_send(struct cluster *cl, struct cluster_peer *peer, const uint8_t *msg,
    size_t len)
{
	flush_peer(cl, peer);
	if (cluster_conn_publish(cl->conn, peer->subject, msg, len) < 0)
		return -1;
	cl->m->msgs_out++;
	return 0;
}

void
cl_batch(struct cluster *cl, struct cluster_peer *peer,
    const struct cluster_chunk *c)
{
	struct buffer *b = &peer->out;
	size_t bytes = (size_t)c->count * c->frame_size;
	size_t need = CLUSTER_HDR_SIZE + CLUSTER_CHUNK_HEAD + bytes;

	if (buffer_len(b) > 0 && buffer_len(b) + need > CL_BATCH_BYTES)
		flush_peer(cl, peer);
	if (buffer_reserve(b, need) < 0) {
		cl->m->frames_out_dropped += c->count;
		return;
	}
	if (buffer_len(b) == 0)
		buffer_commit(b, cluster_put_header((uint8_t *)buffer_tail(b),
		    buffer_tail_room(b), CLUSTER_MSG_FRAMES));
	buffer_commit(b, cluster_put_chunk_head((uint8_t *)buffer_tail(b),
	    buffer_tail_room(b), c));
	memcpy(buffer_tail(b), c->data, bytes);
	buffer_commit(b, bytes);
	peer->out_frames += c->count;
	if (buffer_len(b) >= CL_BATCH_BYTES)
		flush_peer(cl, peer);
}

/* ---- joining ---- */

static void
maybe_join(struct cluster *cl)
{
	char url[256];

	if (cl->state != CL_ALONE || !cl->up || !cl->dir_open)
		return;
	cl->state = CL_JOINED;
	cl->m->joined = 1;
	cluster_conn_server(cl->conn, url, sizeof(url));
	LOGN("cluster: node %s joined (NATS %s, directory %s, %d "
	    "replica%s)", cl->node, url, cl->bucket, cl->replicas_seen,
	    cl->replicas_seen == 1 ? "" : "s");
	cu_rejoin(cl);
}

static void
alone(struct cluster *cl, const char *why)
{
	if (cl->state == CL_JOINED) {
		cl->state = CL_ALONE;
		LOGW("cluster: node %s lost NATS%s%s; it serves its own uuids "
		    "alone until it is back", cl->node, *why ? ": " : "", why);
	}
	cl->m->joined = 0;
}

static void
dir_opened(void *arg, int replicas)
{
	struct cluster *cl = arg;

	cl->dir_open = true;
	cl->replicas_seen = replicas;
	maybe_join(cl);
}

static void
on_state(void *arg, enum cluster_conn_state st, const char *url,
    const char *why)
{
	struct cluster *cl = arg;
	ev_tstamp now = ev_now(cl->loop);

	switch (st) {
	case CLUSTER_CONN_CONNECTED:
	case CLUSTER_CONN_RECONNECTED:
		if (st == CLUSTER_CONN_RECONNECTED) {
			cl->m->reconnects++;
			LOGN("cluster: node %s reconnected to NATS %s", cl->node,
			    url);
		} else {
			LOGI("cluster: node %s connected to NATS %s", cl->node,
			    url);
		}
		cl->up = true;
		cl->m->connected = 1;
		peers_listening(&cl->peers, now);
		if (cl->dir == NULL && cl->state != CL_LEAVING &&
		    (cl->dir = cluster_dir_start(cluster_conn_nats(cl->conn),
		    cl->loop, cl->bucket, dir_opened, cl)) == NULL)
			LOGE("cluster: node %s: no directory thread", cl->node);
		maybe_join(cl);
		return;
	case CLUSTER_CONN_DISCONNECTED:
		if (cl->up)
			cl->m->disconnects++;
		if (cl->up || *why)
			LOGW("cluster: node %s has no NATS connection%s%s",
			    cl->node, *why ? ": " : "", why);
		cl->up = false;
		cl->m->connected = 0;
		peers_listening(&cl->peers, 0);
		alone(cl, "");
		/* The directory thread waits for the connection itself. */
		if (cl->dir == NULL && cluster_conn_nats(cl->conn) != NULL &&
		    cl->state != CL_LEAVING)
			cl->dir = cluster_dir_start(cluster_conn_nats(cl->conn),
			    cl->loop, cl->bucket, dir_opened, cl);
		return;
	case CLUSTER_CONN_CLOSED:
		cl->up = false;
		cl->closed = true;
		cl->m->connected = 0;
		alone(cl, "closed");
		return;
	case CLUSTER_CONN_FAILED:
		LOGE("cluster: node %s cannot use NATS: %s; it serves its own "
		    "uuids alone", cl->node, why);
		cl->closed = true;
		return;
	}
}

/* ---- messages ---- */

static void
heard(struct cluster *cl, const struct cluster_heartbeat *hb)
{
	struct cluster_peer *peer = NULL;
	uint64_t old = 0;
	enum peer_news news;

	if (hb->node.len == cl->node_len &&
	    memcmp(hb->node.p, cl->node, cl->node_len) == 0) {
		if (hb->instance != cl->instance)
			log_limited(LOG_WARN, "cluster: another node is named "
			    "%s too: names must be unique", cl->node);
		return;
	}
	news = peers_heard(&cl->peers, hb->node.p, hb->node.len,
	    hb->instance, hb->flags & CLUSTER_HB_STOPPING, ev_now(cl->loop),
	    &peer, &old);
	if (peer == NULL)
		return;
	switch (news) {
	case PEER_SAME:
		return;
	case PEER_NEW:
		LOGI("cluster: node %s heard node %s", cl->node, peer->name);
		cu_peer_back(cl, peer);
		return;
	case PEER_BACK:
		LOGN("cluster: node %s is back", peer->name);
		cu_peer_back(cl, peer);
		return;
	case PEER_RESTARTED:
		LOGN("cluster: node %s restarted: what its previous instance "
		    "held is gone", peer->name);
		cl->m->peer_deaths++;
		cu_peer_dead(cl, peer, old);
		cu_peer_back(cl, peer);
		return;
	case PEER_STOPPING:
		LOGN("cluster: node %s is leaving the cluster", peer->name);
		cu_peer_dead(cl, peer, 0);
		return;
	}
}

static void
bad_message(struct cluster *cl, const char *what)
{
	cl->m->msgs_bad++;
	log_limited(LOG_WARN, "cluster: node %s ignored a message: %s",
	    cl->node, what);
}

static void
frames(struct cluster *cl, const uint8_t *data, size_t len)
{
	struct cluster_chunk c;
	size_t off = 0;
	int rc;

	while ((rc = cluster_next_chunk(data, len, &off, &c)) == 1)
		cu_on_chunk(cl, &c);
	if (rc < 0)
		bad_message(cl, "malformed frames");
}

static void
on_message(void *arg, bool heartbeat, const uint8_t *data, size_t len)
{
	struct cluster *cl = arg;
	union {
		struct cluster_heartbeat hb;
		struct cluster_claim claim;
		struct cluster_gone gone;
		struct cluster_interest in;
		struct cluster_chunk chunk;
	} m;
	int type = cluster_msg_type(data, len);

	if (cl->state == CL_LEAVING && !heartbeat)
		return;
	cl->m->msgs_in++;
	switch (type) {
	case CLUSTER_MSG_HEARTBEAT:
		if (cluster_get_heartbeat(data, len, &m.hb) == 0)
			heard(cl, &m.hb);
		else
			bad_message(cl, "malformed heartbeat");
		return;
	case CLUSTER_MSG_CLAIM:
		if (heartbeat || cluster_get_claim(data, len, &m.claim) < 0)
			bad_message(cl, "malformed claim");
		else
			cu_on_claim(cl, &m.claim);
		return;
	case CLUSTER_MSG_GONE:
		if (heartbeat || cluster_get_gone(data, len, &m.gone) < 0)
			bad_message(cl, "malformed gone");
		else
			cu_on_gone(cl, &m.gone);
		return;
	case CLUSTER_MSG_FRAMES:
		if (heartbeat)
			bad_message(cl, "frames on the heartbeat subject");
		else
			frames(cl, data, len);
		return;
	case CLUSTER_MSG_LAST:
		if (heartbeat || cluster_get_last(data, len, &m.chunk) < 0)
			bad_message(cl, "malformed last value");
		else
			cu_on_last(cl, &m.chunk);
		return;
	case CLUSTER_MSG_INTEREST:
		if (heartbeat || cluster_get_interest(data, len, &m.in) < 0)
			bad_message(cl, "malformed interest");
		else
			cu_on_interest(cl, &m.in);
		return;
	case CLUSTER_OTHER_VERSION:
		bad_message(cl, "another version of the cluster protocol");
		return;
	case CLUSTER_UNKNOWN:
		bad_message(cl, "a message type version 1 does not have");
		return;
	default:
		bad_message(cl, "not a cluster message");
		return;
	}
}

/* ---- the heartbeat ---- */

static void
beat(struct cluster *cl, bool stopping)
{
	struct cluster_heartbeat hb = { .node = { cl->node, cl->node_len },
	    .instance = cl->instance,
	    .interval_ms = (uint32_t)(CLUSTER_HB_INTERVAL * 1000),
	    .flags = stopping ? CLUSTER_HB_STOPPING : 0,
	    .owned = (uint32_t)cl->m->owned };
	uint8_t msg[256];
	size_t n = cluster_put_heartbeat(msg, sizeof(msg), &hb);

	if (n > 0)
		(void)cluster_conn_publish(cl->conn, cl->hb_subject, msg, n);
}

static void
peer_died(void *arg, struct cluster_peer *peer)
{
	struct cluster *cl = arg;

	LOGW("cluster: node %s not heard for %.1f s: gone; its producers' "
	    "consumers here wait out their grace period", peer->name,
	    CLUSTER_DEAD_AFTER);
	cl->m->peer_deaths++;
	cu_peer_dead(cl, peer, 0);
}

static void
on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster *cl;

	(void)revents;
	CAST_OBJ_NOTNULL(cl, w->data, CLUSTER_MAGIC);
	cl->ticks++;
	if (cl->up && cl->state != CL_LEAVING)
		beat(cl, false);
	peers_expire(&cl->peers, ev_now(loop), peer_died, cl);
	cl->m->peers = cl->peers.alive;
	cu_tick(cl, ev_now(loop), cl->ticks % 4 == 0);
}

static void
on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct cluster *cl;

	(void)loop;
	(void)revents;
	CAST_OBJ_NOTNULL(cl, w->data, CLUSTER_MAGIC);
	for (struct cluster_peer *p = cl->peers.head; p != NULL; p = p->next)
		flush_peer(cl, p);
	cu_collect_all(cl);
}

/* ---- the registry's observer ---- */

static void
ob_producer_left(void *arg, struct registry_entry *e, struct relay_conn *p)
{
	(void)arg;
	if (e->ext != NULL)
		cu_producer_left(e->ext, p);
}

static void
ob_entry_freed(void *arg, struct registry_entry *e)
{
	(void)arg;
	if (e->ext != NULL)
		cu_entry_freed(e->ext);
	e->ext = NULL;
}

static void
ob_consumers_gone(void *arg, struct registry_entry *e)
{
	(void)arg;
	if (e->ext != NULL)
		cu_consumers_gone(e->ext);
}

static const struct registry_observer observer = { ob_producer_left,
    ob_entry_freed, ob_consumers_gone };

/* ---- metrics ---- */

#define F(f) offsetof(struct metrics_cluster, f)
static const struct {
	const char *name, *type, *help;
	size_t off;
} families[] = {
	{ "nats_connected", "gauge", "1 while the node's NATS connection is "
	    "up.", F(connected) },
	{ "joined", "gauge", "1 while the node is in the cluster (NATS and "
	    "its directory answer).", F(joined) },
	{ "nats_disconnects_total", "counter", "NATS connections lost.",
	    F(disconnects) },
	{ "nats_reconnects_total", "counter", "NATS reconnections.",
	    F(reconnects) },
	{ "peers", "gauge", "Other nodes heard now.", F(peers) },
	{ "peer_deaths_total", "counter", "Nodes found gone (silent, "
	    "restarted).", F(peer_deaths) },
	{ "uuids_owned", "gauge", "UUIDs whose producer is on this node, in "
	    "the directory.", F(owned) },
	{ "uuids_local_only", "gauge", "UUIDs registered on this node while "
	    "it had not joined, not in the directory yet.", F(local_only) },
	{ "uuids_imported", "gauge", "UUIDs whose producer on another node "
	    "feeds consumers here.", F(imports) },
	{ "remote_consumers", "gauge", "Other nodes with consumers of a "
	    "producer here, summed over the uuids.", F(remote_nodes) },
	{ "frames_sent_total", "counter", "Frames sent to other nodes.",
	    F(frames_out) },
	{ "bytes_sent_total", "counter", "Bytes of frame messages sent to "
	    "other nodes.", F(bytes_out) },
	{ "messages_sent_total", "counter", "NATS messages sent.",
	    F(msgs_out) },
	{ "frames_send_dropped_total", "counter", "Frames for other nodes "
	    "dropped: NATS down, or too much unsent.", F(frames_out_dropped) },
	{ "frames_received_total", "counter", "Frames received from other "
	    "nodes.", F(frames_in) },
	{ "bytes_received_total", "counter", "Frame bytes received from "
	    "other nodes.", F(bytes_in) },
	{ "messages_received_total", "counter", "NATS messages received.",
	    F(msgs_in) },
	{ "frames_lost_total", "counter", "Frames missing in a remote "
	    "producer's sequence (lost between nodes).", F(frames_in_lost) },
	{ "frames_stale_total", "counter", "Frames received for a producer "
	    "no longer followed.", F(frames_in_stale) },
	{ "messages_bad_total", "counter", "Messages ignored: malformed, or "
	    "of another protocol version.", F(msgs_bad) },
	{ "directory_operations_total", "counter", "Directory reads and "
	    "writes made.", F(dir_ops) },
	{ "directory_conflicts_total", "counter", "Directory writes that "
	    "lost a race (compare-and-swap).", F(dir_conflicts) },
	{ "directory_errors_total", "counter", "Directory calls that failed "
	    "or timed out.", F(dir_errors) },
	{ "takeovers_total", "counter", "Local producers replaced by a "
	    "producer on another node.", F(takeovers) },
};
#undef F

static void
render(struct buffer *out, void *arg)
{
	char name[96], node[300];
	int workers = metrics_workers();

	(void)arg;
	for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		snprintf(name, sizeof(name), "ferry_cluster_%s",
		    families[f].name);
		metrics_family(out, name, families[f].type, families[f].help);
		for (int w = 0; w < workers; w++) {
			const struct metrics_cluster *m = metrics_cluster_of(w);
			uint64_t v;
			if (m == NULL || m->node[0] == '\0')
				continue;
			memcpy(&v, (const char *)m + families[f].off,
			    sizeof(v));
			metrics_escape(m->node, node, sizeof(node));
			metrics_printf(out, "%s{node=\"%s\"} %llu\n", name,
			    node, (unsigned long long)v);
		}
	}
}

/* ---- the node ---- */

static void
node_name(const struct config_cluster *cfg, int worker, int workers,
    char *out, size_t len)
{
	char host[256] = "localhost";

	if (cfg->node[0] != '\0') {
		if (workers > 1)
			snprintf(out, len, "%s-w%d", cfg->node, worker);
		else
			snprintf(out, len, "%s", cfg->node);
		return;
	}
	if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(out, len, "%.100s:%ld", host, (long)getpid());
}

const char *
cluster_node(const struct cluster *cl)
{
	return cl->node;
}

struct cluster *
cluster_new(struct ev_loop *loop, struct registry *reg,
    const struct config_cluster *cfg, int worker, int workers, char *err,
    size_t errlen)
{
	struct cluster *cl = calloc(1, sizeof(*cl));
	struct cluster_conn_cb cb;
	char why[512];

	if (cl == NULL || cl_scratch(cl, SCRATCH_MIN) == NULL) {
		free(cl);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	cl->magic = CLUSTER_MAGIC;
	cl->loop = loop;
	cl->reg = reg;
	cl->cfg = cfg;
	cl->state = CL_ALONE;
	node_name(cfg, worker, workers, cl->node, sizeof(cl->node));
	cl->node_len = strlen(cl->node);
	cl->instance = cl_random() | 1;
	snprintf(cl->prefix, sizeof(cl->prefix), "%s", cfg->subject_prefix);
	snprintf(cl->bucket, sizeof(cl->bucket), "%s_dir", cfg->subject_prefix);
	for (char *c = cl->bucket; *c; c++)
		if (*c == '.')
			*c = '_';
	snprintf(cl->hb_subject, sizeof(cl->hb_subject), "%s.hb", cl->prefix);
	peers_init(&cl->peers, cl->prefix);
	peers_subject(cl->prefix, cl->node, cl->node_len, cl->my_subject,
	    sizeof(cl->my_subject));
	snprintf(cl->links.name, sizeof(cl->links.name), "cluster");
	relay_opts_default(&cl->links.opts);
	cl->m = metrics_cluster();
	memset(cl->m, 0, sizeof(*cl->m));
	snprintf(cl->m->node, sizeof(cl->m->node), "%s", cl->node);
	registry_set_observer(reg, &observer, cl);
	cb.state = on_state;
	cb.message = on_message;
	cb.arg = cl;
	cl->conn = cluster_conn_new(loop, cfg, cl->node, cl->hb_subject,
	    cl->my_subject, &cb, why, sizeof(why));
	if (cl->conn == NULL) {
		snprintf(err, errlen, "[cluster] %s", why);
		registry_set_observer(reg, NULL, NULL);
		peers_free(&cl->peers);
		free(cl->scratch);
		free(cl);
		return NULL;
	}
	ev_timer_init(&cl->tick, on_tick, CLUSTER_HB_INTERVAL,
	    CLUSTER_HB_INTERVAL);
	cl->tick.data = cl;
	ev_timer_start(loop, &cl->tick);
	ev_prepare_init(&cl->prepare, on_prepare);
	cl->prepare.data = cl;
	ev_prepare_start(loop, &cl->prepare);
	metrics_add_source(render, cl);
	LOGN("cluster: node %s starts (subjects %s.*, directory %s); "
	    "joining via %s%s", cl->node, cl->prefix, cl->bucket,
	    cfg->nats[0], cfg->nnats > 1 ? " and others" : "");
	return cl;
}

/* ---- the relay's calls ---- */

int
cluster_claim(struct cluster *cl, struct relay_conn *c, const char *uuid,
    size_t ulen, const char *keys, size_t klen, size_t nkeys,
    cluster_cb cb, const char **why)
{
	struct cl_uuid *cu;

	if (cl->state == CL_LEAVING) {
		*why = "the node is stopping";
		return 0;
	}
	if ((cu = cu_get(cl, uuid, ulen)) == NULL) {
		*why = "out of memory";
		return 0;
	}
	return cu_claim(cu, c, keys, klen, nkeys, cb, why);
}

int
cluster_lookup(struct cluster *cl, struct relay_conn *c, const char *uuid,
    size_t ulen, cluster_cb cb, const char **why)
{
	struct cl_uuid *cu;

	if (cl->state != CL_JOINED) {
		*why = "no producer holds this uuid (this node has not joined "
		    "the cluster)";
		return 0;
	}
	if ((cu = cu_get(cl, uuid, ulen)) == NULL) {
		*why = "out of memory";
		return 0;
	}
	return cu_lookup(cu, c, cb, why);
}

void
cluster_cancel(struct cluster *cl, struct relay_conn *c, const char *uuid,
    size_t ulen)
{
	uint8_t token[CLUSTER_TOKEN_SIZE];
	struct cl_uuid *cu;

	cu_token(uuid, ulen, token);
	if ((cu = cu_find(cl, token)) != NULL)
		cu_cancel(cu, c);
}

const char *
cluster_holder(const struct cluster *cl, const struct registry_entry *e)
{
	const struct cl_uuid *cu = e->ext;

	if (cu != NULL && cu->ghost_live && e->producer == &cu->ghost)
		return cu->remote_node;
	return cl->node;
}

/* ---- leaving ---- */

static void
leave_step(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cluster *cl;
	bool late;

	(void)revents;
	CAST_OBJ_NOTNULL(cl, w->data, CLUSTER_MAGIC);
	late = ev_now(loop) >= cl->leave_deadline;
	if (cl->dir != NULL && cluster_dir_busy(cl->dir) > 0 && !late)
		return;
	if (cl->dir != NULL) {
		cluster_dir_stop(cl->dir);
		if (!cluster_dir_stopped(cl->dir) && !late)
			return;
	}
	if (!cl->closed && !cluster_conn_closed(cl->conn)) {
		if (cl->up)
			beat(cl, true);
		cluster_conn_close(cl->conn);
		if (!late)
			return;
	}
	ev_timer_stop(loop, &cl->tick);
}

void
cluster_leave(struct cluster *cl)
{
	if (cl->state == CL_LEAVING)
		return;
	cl->state = CL_LEAVING;
	cl->m->joined = 0;
	cu_leave(cl);
	LOGI("cluster: node %s leaves the cluster", cl->node);
	cl->leave_deadline = ev_now(cl->loop) + CL_LEAVE_SECONDS;
	/* The tick timer becomes the leaving's: every 10 ms. */
	ev_timer_stop(cl->loop, &cl->tick);
	ev_timer_init(&cl->tick, leave_step, 0.01, 0.01);
	cl->tick.data = cl;
	ev_timer_start(cl->loop, &cl->tick);
}

bool
cluster_left(const struct cluster *cl)
{
	return cl->state == CL_LEAVING && (cl->closed ||
	    cluster_conn_closed(cl->conn) ||
	    ev_now(cl->loop) >= cl->leave_deadline + 1);
}

void
cluster_free(struct cluster *cl)
{
	if (cl == NULL)
		return;
	cl->freeing = true;
	ev_timer_stop(cl->loop, &cl->tick);
	ev_prepare_stop(cl->loop, &cl->prepare);
	/* The directory's last answers, then the connection. */
	cluster_dir_free(cl->dir);
	cl->dir = NULL;
	cluster_conn_free(cl->conn);
	registry_set_observer(cl->reg, NULL, NULL);
	cu_free_all(cl);
	peers_free(&cl->peers);
	cl->m->connected = cl->m->joined = 0;
	cl->magic = 0;
	free(cl->scratch);
	free(cl);
}

int
cluster_check(const struct config *c, char *err, size_t errlen)
{
	const char *key = "nats";
	char why[512];

	if (!c->cluster.set)
		return 0;
	if (cluster_conn_check(&c->cluster, &key, why, sizeof(why)) < 0) {
		config_cluster_error(c, key, why, err, errlen);
		return -1;
	}
	return 0;
}
