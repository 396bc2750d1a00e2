/*
 * cluster_jobs: a uuid's directory work (cluster_int.h, cluster_uuid.c):
 * a queue of jobs, one request in flight at a time, each a small state
 * machine over DIR_GET and DIR_WRITE / DIR_DELETE:
 *
 *   CLAIM    read; decide (free, ours, a dead node's, a live node's that
 *            may be taken over, or refused); write at the revision read;
 *            a conflict reads again, an ambiguous failure too (our nonce
 *            in the record means it landed); then the producer is
 *            registered, and its claim sent to every node
 *   LOOKUP   read; a live node's record becomes an import
 *   RELEASE  delete our record at its revision (someone else's newer one
 *            stays)
 *   VERIFY   read again and follow what the directory says (after a
 *            rejoin, while consumers wait out a grace period, when a
 *            frame of an unknown epoch comes)
 *
 * Until the node has joined (or while it has lost NATS), a claim
 * registers its producer on this node alone, and a lookup is refused.
 */
#define _GNU_SOURCE
#include "cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "obj.h"

/* ---- directory jobs ---- */

static void
job_push(struct cl_uuid *cu, struct cl_job *j)
{
	if (cu->jobs_tail != NULL)
		cu->jobs_tail->next = j;
	else
		cu->jobs = j;
	cu->jobs_tail = j;
}

static void
job_pop(struct cl_uuid *cu)
{
	struct cl_job *j = cu->jobs;

	if ((cu->jobs = j->next) == NULL)
		cu->jobs_tail = NULL;
	cu_job_free(j);
}

static struct cl_job *
job_new(enum cl_job_kind kind)
{
	struct cl_job *j = calloc(1, sizeof(*j));

	if (j != NULL)
		j->kind = kind;
	return j;
}

/* Answers a job's connection, once (cancelled: nobody to answer). */
static void
answer(struct cl_job *j, bool ok, const char *why)
{
	struct relay_conn *c = j->conn;

	j->conn = NULL;
	if (c != NULL && j->cb != NULL)
		j->cb(c, ok, why);
}

/* Our record at `rev` is to be deleted (once the directory answers). */
void
cu_release_later(struct cl_uuid *cu, uint64_t rev)
{
	struct cl_job *j;

	cu->stale_epoch = rev;
	if (!cl_joined(cu->cl) || (j = job_new(JOB_RELEASE)) == NULL)
		return;		/* done on rejoin */
	j->rev = rev;
	job_push(cu, j);
}

static void on_done(struct dir_req *r);

static void
submit(struct cl_uuid *cu, enum dir_op op, uint64_t rev, uint8_t *value,
    size_t len)
{
	struct dir_req *r = &cu->req;

	free(r->value);
	memset(r, 0, sizeof(*r));
	r->op = op;
	snprintf(r->key, sizeof(r->key), "%s", cu->key);
	r->rev = rev;
	r->value = value;
	r->len = len;
	r->done = on_done;
	r->arg = cu;
	cu->busy = true;
	cu->cl->m->dir_ops++;
	cluster_dir_submit(cu->cl->dir, r);
}

static void
retry_later(struct cl_uuid *cu)
{
	ev_timer_stop(cu->cl->loop, &cu->retry);
	ev_timer_set(&cu->retry, CL_RETRY, 0.);
	ev_timer_start(cu->cl->loop, &cu->retry);
}

/* Registers a claim on this node alone (no directory now). */
static bool
claim_alone(struct cl_uuid *cu, struct relay_conn *c, const char *keys,
    size_t klen, size_t nkeys, const char **why)
{
	struct cluster *cl = cu->cl;
	char u[REGISTRY_UUID_STR];

	if (registry_add_producer(cl->reg, c, cu->uuid, cu->ulen, keys, klen,
	    nkeys, why) < 0)
		return false;
	if (cu->producer == NULL)
		cl->m->local_only++;
	else if (cu->epoch != 0) {
		/* Our record stays until the directory is back: deleted then. */
		cu->stale_epoch = cu->epoch;
		cl->m->owned--;
		cl->m->local_only++;
	}
	cu_interest_clear(cu);
	cu->producer = c;
	cu->epoch = 0;
	cu_attach_entry(cu);
	LOGI("cluster: node %s has not joined: uuid '%s' is registered on "
	    "this node only (the directory learns it once the node joins)",
	    cl->node, cu_name(cu, u, sizeof(u)));
	return true;
}

int
cu_claim(struct cl_uuid *cu, struct relay_conn *c, const char *keys,
    size_t klen, size_t nkeys, cluster_cb cb, const char **why)
{
	struct cl_job *j;

	*why = NULL;
	if (registry_refuses_producer(cu->cl->reg, cu->uuid, cu->ulen)) {
		*why = "uuid held by a live producer";
		return 0;
	}
	if (!cl_joined(cu->cl) && cu->jobs == NULL) {
		if (!claim_alone(cu, c, keys, klen, nkeys, why))
			return 0;
		return 0;
	}
	if ((j = job_new(JOB_CLAIM)) == NULL ||
	    (j->keys = malloc(klen)) == NULL) {
		free(j);
		*why = "out of memory";
		return 0;
	}
	memcpy(j->keys, keys, klen);
	j->klen = klen;
	j->nkeys = nkeys;
	j->conn = c;
	j->cb = cb;
	j->nonce = cl_random();
	job_push(cu, j);
	cu_run(cu);
	return 1;
}

int
cu_lookup(struct cl_uuid *cu, struct relay_conn *c, cluster_cb cb,
    const char **why)
{
	struct cl_job *j;

	if (!cl_joined(cu->cl)) {
		*why = "no producer holds this uuid (this node has not joined "
		    "the cluster)";
		cu_collect(cu);
		return 0;
	}
	if ((j = job_new(JOB_LOOKUP)) == NULL) {
		*why = "out of memory";
		return 0;
	}
	j->conn = c;
	j->cb = cb;
	job_push(cu, j);
	cu_run(cu);
	return 1;
}

void
cu_cancel(struct cl_uuid *cu, struct relay_conn *c)
{
	for (struct cl_job *j = cu->jobs; j != NULL; j = j->next)
		if (j->conn == c)
			j->conn = NULL;
	for (size_t i = 0; i < cu->nwaiters; i++)
		if (cu->waiters[i].conn == c)
			cu->waiters[i].conn = NULL;
}

/* Starts the head job; false when it is done already (popped). */
static bool
job_start(struct cl_uuid *cu, struct cl_job *j)
{
	struct cluster *cl = cu->cl;
	const char *why = NULL;

	switch (j->kind) {
	case JOB_CLAIM:
		if (j->conn == NULL)
			return false;
		if (!cl_joined(cl)) {
			/* Lost the directory meanwhile: alone, then. */
			bool ok = claim_alone(cu, j->conn, j->keys, j->klen,
			    j->nkeys, &why);
			answer(j, ok, why);
			return false;
		}
		break;
	case JOB_LOOKUP:
		if (j->conn == NULL)
			return false;
		if (registry_live(registry_find(cl->reg, cu->uuid,
		    cu->ulen))) {
			if (cu->ghost_live && !cu->confirmed &&
			    cu_wait_confirm(cu, j->conn, j->cb) == 0)
				j->conn = NULL;
			else
				answer(j, true, NULL);
			return false;
		}
		if (!cl_joined(cl)) {
			answer(j, false, "no producer holds this uuid (this "
			    "node lost the cluster)");
			return false;
		}
		break;
	case JOB_RELEASE:
		if (!cl_joined(cl) || cu->stale_epoch != j->rev)
			return false;	/* done, or done on rejoin */
		submit(cu, DIR_DELETE, j->rev, NULL, 0);
		return true;
	case JOB_VERIFY:
		if (!cl_joined(cl))
			return false;
		break;
	}
	submit(cu, DIR_GET, 0, NULL, 0);
	return true;
}

void
cu_run(struct cl_uuid *cu)
{
	while (!cu->busy && cu->jobs != NULL && !ev_is_active(&cu->retry)) {
		if (job_start(cu, cu->jobs))
			return;
		job_pop(cu);
	}
	cu_collect(cu);
}

/* The record a GET read: 1 found, 0 none (free or deleted), -1 bad. */
static int
read_record(struct cl_uuid *cu, struct cluster_record *r)
{
	const struct dir_req *q = &cu->req;

	if (q->result == DIR_NOT_FOUND || (q->result == DIR_OK && q->deleted))
		return 0;
	if (q->value == NULL || cluster_get_record(q->value, q->len, r) < 0)
		return -1;
	if (r->uuid.len != cu->ulen || memcmp(r->uuid.p, cu->uuid, cu->ulen))
		return -1;	/* a token collision: not ours to follow */
	return 1;
}


static enum peer_verdict
judge(struct cluster *cl, const struct cluster_record *r)
{
	return peers_judge(&cl->peers, r->node.p, r->node.len, r->instance,
	    ev_now(cl->loop));
}

/* After a failed call: again later, or give up (false). */
static bool
again(struct cl_uuid *cu, struct cl_job *j, int max)
{
	if (++j->tries > max)
		return false;
	retry_later(cu);
	return true;
}

/* The claim holds at revision `rev`: the producer is registered. */
static void
claim_won(struct cl_uuid *cu, struct cl_job *j, uint64_t rev,
    const struct cluster_record *before)
{
	struct cluster *cl = cu->cl;
	const char *why = NULL;
	char u[REGISTRY_UUID_STR];
	bool was_owner = cu->producer != NULL && cu->epoch != 0;

	if (j->conn == NULL) {
		/* Its producer left meanwhile: nobody to hold it for. */
		cu_release_later(cu, rev);
		return;
	}
	if (cu->claim_seen > rev) {
		/* Overwritten already: a newer producer holds it elsewhere. */
		answer(j, false, "uuid taken over by a producer on another "
		    "node");
		cu_verify(cu);
		return;
	}
	/* A reconciled producer is registered already. */
	if (!(cu->e != NULL && cu->e->producer == j->conn) &&
	    registry_take_producer(cl->reg, j->conn, cu->uuid, cu->ulen,
	    j->keys, j->klen, j->nkeys, &why) < 0) {
		cu_release_later(cu, rev);
		answer(j, false, why);
		return;
	}
	if (cu->producer != NULL && cu->epoch == 0)
		cl->m->local_only--;
	if (!was_owner)
		cl->m->owned++;
	cu->producer = j->conn;
	cu->epoch = rev;
	cu->nonce = j->nonce;
	cu->seq = 0;
	cu_replay_start(cu);
	if (cu->stale_epoch != 0 && cu->stale_epoch < rev)
		cu->stale_epoch = 0;	/* overwritten by this claim */
	cu_attach_entry(cu);
	cu_update_link(cu);
	if (before != NULL && !cl_mine(cl, before))
		LOGI("cluster: uuid '%s' taken over from node %.*s by node %s "
		    "(epoch %llu)", cu_name(cu, u, sizeof(u)),
		    (int)before->node.len, before->node.p, cl->node,
		    (unsigned long long)rev);
	else
		LOGD("cluster: uuid '%s' held by node %s (epoch %llu)",
		    cu_name(cu, u, sizeof(u)), cl->node,
		    (unsigned long long)rev);
	cu_announce(cu);
	if (j->prev_len > 0) {
		/* Not heard yet perhaps, but it must let its producer go. */
		struct cluster_peer *p = peers_get(&cl->peers, j->prev,
		    j->prev_len, ev_now(cl->loop));
		if (p != NULL && !p->alive)
			cu_announce_to(cu, p);
	}
	answer(j, true, NULL);
}

/* A claim's read came back: decide. */
static void
claim_read(struct cl_uuid *cu, struct cl_job *j)
{
	struct cluster *cl = cu->cl;
	struct cluster_record r;
	uint8_t *value;
	size_t len;
	int found;

	if (cu->req.result == DIR_AMBIGUOUS || cu->req.result == DIR_FAILED) {
		if (!again(cu, j, 50)) {
			answer(j, false, "the cluster's directory does not "
			    "answer");
			job_pop(cu);
		}
		return;
	}
	found = read_record(cu, &r);
	if (found < 0 && cu->req.value != NULL &&
	    cluster_get_record(cu->req.value, cu->req.len, &r) == 0) {
		answer(j, false, "another uuid has the same directory key");
		job_pop(cu);
		return;
	}
	if (found > 0 && r.nonce == j->nonce && cl_mine(cl, &r)) {
		/* Our write landed though its answer was lost. */
		claim_won(cu, j, cu->req.rev, NULL);
		job_pop(cu);
		return;
	}
	if (found > 0 && !cl_mine(cl, &r) && r.takeover &&
	    judge(cl, &r) != PEER_DEAD) {
		static char why[200];
		snprintf(why, sizeof(why), "uuid held by a live producer on "
		    "node %.*s", (int)r.node.len, r.node.p);
		answer(j, false, why);
		job_pop(cu);
		return;
	}
	if (found > 0 && cl_mine(cl, &r) &&
	    registry_refuses_producer(cl->reg, cu->uuid, cu->ulen)) {
		answer(j, false, "uuid held by a live producer");
		job_pop(cu);
		return;
	}
	j->prev_len = 0;
	if (found > 0 && !cl_mine(cl, &r) && !(r.node.len == cl->node_len &&
	    memcmp(r.node.p, cl->node, cl->node_len) == 0)) {
		memcpy(j->prev, r.node.p, r.node.len);
		j->prev_len = r.node.len;
	}
	/* Free, deleted, ours, a dead node's, or one we may take over. */
	if ((value = cu_record_for(cu, j, &len)) == NULL) {
		answer(j, false, "out of memory");
		job_pop(cu);
		return;
	}
	j->wrote = true;
	submit(cu, DIR_WRITE, cu->req.rev, value, len);
}

static void
claim_wrote(struct cl_uuid *cu, struct cl_job *j)
{
	switch (cu->req.result) {
	case DIR_OK:
		claim_won(cu, j, cu->req.rev, NULL);
		job_pop(cu);
		return;
	case DIR_CONFLICT:
		cu->cl->m->dir_conflicts++;
		if (++j->tries > CL_CLAIM_TRIES) {
			answer(j, false, "the uuid's directory record keeps "
			    "changing");
			job_pop(cu);
			return;
		}
		submit(cu, DIR_GET, 0, NULL, 0);
		return;
	case DIR_AMBIGUOUS:
		/* It may have landed: read, and look for our nonce. */
		submit(cu, DIR_GET, 0, NULL, 0);
		return;
	default:
		if (!again(cu, j, 50)) {
			answer(j, false, "the cluster's directory does not "
			    "answer");
			job_pop(cu);
		}
		return;
	}
}

static void
lookup_read(struct cl_uuid *cu, struct cl_job *j)
{
	struct cluster *cl = cu->cl;
	struct cluster_record r;
	const char *why = NULL;
	int found;

	if (cu->req.result == DIR_AMBIGUOUS || cu->req.result == DIR_FAILED) {
		if (!again(cu, j, 20)) {
			answer(j, false, "no producer holds this uuid (the "
			    "cluster's directory does not answer)");
			job_pop(cu);
		}
		return;
	}
	found = read_record(cu, &r);
	if (found <= 0)
		why = "no producer holds this uuid";
	else if (cl_mine(cl, &r))
		why = "no producer holds this uuid (its record here is stale)";
	else if (judge(cl, &r) == PEER_DEAD)
		why = "no producer holds this uuid (its node is gone)";
	else if (cu->ghost_live && cu->remote_epoch > cu->req.rev)
		why = NULL;		/* a newer claim came meanwhile */
	else if (cu_import(cu, cu->req.rev, &r, false) < 0)
		why = "out of memory";
	/*
	 * Every lookup queued behind it has its answer too; a consumer of an
	 * import waits until the owner said it feeds this node (its frames
	 * from then on reach the consumer).
	 */
	while (cu->jobs != NULL && cu->jobs->kind == JOB_LOOKUP) {
		struct cl_job *l = cu->jobs;
		if (why == NULL && l->conn != NULL && cu->ghost_live &&
		    !cu->confirmed && cu_wait_confirm(cu, l->conn, l->cb) == 0)
			l->conn = NULL;
		answer(l, why == NULL, why);
		job_pop(cu);
	}
}

static void
release_done(struct cl_uuid *cu, struct cl_job *j)
{
	switch (cu->req.result) {
	case DIR_OK:
	case DIR_CONFLICT:	/* someone else's record now: not ours */
	case DIR_NOT_FOUND:
		if (cu->stale_epoch == j->rev)
			cu->stale_epoch = 0;
		job_pop(cu);
		return;
	default:
		/* A retry of a delete that landed is a conflict: harmless. */
		if (!again(cu, j, 30)) {
			LOGW("cluster: could not release a uuid in the "
			    "directory: %s", cu->req.error);
			job_pop(cu);
		}
		return;
	}
}

/* A record read again: the directory's word is followed. */
static void
verify_read(struct cl_uuid *cu, struct cl_job *j)
{
	struct cluster *cl = cu->cl;
	struct cluster_record r;
	char u[REGISTRY_UUID_STR];
	int found;

	if (cu->req.result == DIR_AMBIGUOUS || cu->req.result == DIR_FAILED) {
		if (!again(cu, j, 10))
			job_pop(cu);
		return;
	}
	found = read_record(cu, &r);
	if (cu->producer != NULL) {
		/* Ours, still?  Or taken while we were away? */
		if (found > 0 && cl_mine(cl, &r) && cu->req.rev == cu->epoch) {
			cu_announce(cu);
		} else if (found > 0 && !cl_mine(cl, &r) &&
		    judge(cl, &r) != PEER_DEAD) {
			LOGW("cluster: uuid '%s' is held by node %.*s in the "
			    "cluster%s: the directory wins, the producer here "
			    "is closed", cu_name(cu, u, sizeof(u)),
			    (int)r.node.len, r.node.p, cu->epoch == 0 ?
			    " (it was registered here while this node was "
			    "alone)" : " (taken over while this node was cut "
			    "off)");
			(void)cu_import(cu, cu->req.rev, &r, true);
		} else if (found >= 0 && cu->e != NULL &&
		    cu->e->producer == cu->producer) {
			/* Free, or a dead node's: ours to write, as a claim. */
			struct cl_job *c = job_new(JOB_CLAIM);
			if (c != NULL && (c->keys = malloc(cu->e->keys_len)) !=
			    NULL) {
				c->conn = cu->producer;
				memcpy(c->keys, cu->e->keys, cu->e->keys_len);
				c->klen = cu->e->keys_len;
				c->nkeys = cu->e->nkeys;
				c->nonce = cl_random();
				/* After this job: claimed like any other. */
				c->next = j->next;
				j->next = c;
				if (cu->jobs_tail == j)
					cu->jobs_tail = c;
			} else if (c != NULL) {
				cu_job_free(c);
			}
		}
		job_pop(cu);
		return;
	}
	if (cu->e == NULL) {
		job_pop(cu);
		return;
	}
	/* An import: follow the record, or let the consumers wait. */
	if (found <= 0 || cl_mine(cl, &r) || judge(cl, &r) == PEER_DEAD)
		cu_ghost_gone(cu, "is gone (the directory says so)");
	else if (cu->req.rev > cu->remote_epoch || !cu->ghost_live)
		(void)cu_import(cu, cu->req.rev, &r, true);
	else
		cu_send_interest(cu, 0);
	job_pop(cu);
}

static void
on_done(struct dir_req *r)
{
	struct cl_uuid *cu;
	struct cl_job *j;

	CAST_OBJ_NOTNULL(cu, r->arg, CL_UUID_MAGIC);
	cu->busy = false;
	if (cu->cl->freeing)
		return;
	if (r->result == DIR_FAILED || r->result == DIR_AMBIGUOUS)
		cu->cl->m->dir_errors++;
	if ((j = cu->jobs) == NULL) {
		cu_collect(cu);
		return;
	}
	switch (j->kind) {
	case JOB_CLAIM:
		if (r->op == DIR_GET)
			claim_read(cu, j);
		else
			claim_wrote(cu, j);
		break;
	case JOB_LOOKUP:
		lookup_read(cu, j);
		break;
	case JOB_RELEASE:
		release_done(cu, j);
		break;
	case JOB_VERIFY:
		verify_read(cu, j);
		break;
	}
	cu_run(cu);
}

void
cu_verify(struct cl_uuid *cu)
{
	struct cl_job *j;

	for (j = cu->jobs; j != NULL; j = j->next)
		if (j->kind == JOB_VERIFY)
			return;
	if ((j = job_new(JOB_VERIFY)) != NULL) {
		job_push(cu, j);
		cu_run(cu);
	}
}

