/*
 * natsev and cluster_dir against a real 3-server NATS cluster with
 * JetStream: the adapter carries a connection on a libev loop, and the
 * directory's operations (read from the leader, compare-and-swap write,
 * conditional delete) answer as cluster_dir.h says, also when two
 * connections on two servers open the bucket and claim one key at once.
 */
#include <stdatomic.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cluster_dir.h"
#include "helpers.h"
#include "natscluster.h"
#include "natsev.h"

struct side {
	struct natsev_loop el;
	natsConnection *nc;
	struct cluster_dir *dir;
	bool opened;
	int replicas;
};

static struct tloop t;
static struct nats_cluster nc;

static void
on_opened(void *arg, int replicas)
{
	struct side *s = arg;

	s->opened = true;
	s->replicas = replicas;
}

static void
side_connect(struct side *s, int server, const char *bucket)
{
	natsOptions *o = NULL;
	char url[64];

	nc_url(&nc, server, url, sizeof(url));
	cr_assert_eq(natsev_loop_init(&s->el, t.loop), 0);
	cr_assert_eq(natsOptions_Create(&o), NATS_OK);
	cr_assert_eq(natsev_set_options(o, &s->el), NATS_OK);
	cr_assert_eq(natsOptions_SetURL(o, url), NATS_OK);
	cr_assert_eq(natsOptions_SetFailRequestsOnDisconnect(o, true),
	    NATS_OK);
	cr_assert_eq(natsConnection_Connect(&s->nc, o), NATS_OK, "%s",
	    nats_GetLastError(NULL));
	natsOptions_Destroy(o);
	s->dir = cluster_dir_start(s->nc, t.loop, bucket, on_opened, s);
	cr_assert_not_null(s->dir);
}

static bool
both_opened(void *arg)
{
	struct side *s = arg;

	return s[0].opened && (s[1].dir == NULL || s[1].opened);
}

static bool
dir_stopped(void *arg)
{
	return cluster_dir_stopped(arg);
}

static void
side_close(struct side *s)
{
	if (s->dir != NULL) {
		cluster_dir_stop(s->dir);
		cr_assert(tloop_run_pred(&t, dir_stopped, s->dir, 5));
		cluster_dir_free(s->dir);
	}
	natsConnection_Destroy(s->nc);
	natsev_loop_destroy(&s->el);
}

static void
done(struct dir_req *r)
{
	*(bool *)r->arg = true;
}

/* One request, made and waited for. */
static void
call(struct side *s, struct dir_req *r, enum dir_op op, const char *key,
    const char *value, uint64_t rev)
{
	bool finished = false;

	free(r->value);
	memset(r, 0, sizeof(*r));
	r->op = op;
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->value = value != NULL ? (uint8_t *)strdup(value) : NULL;
	r->len = value != NULL ? strlen(value) : 0;
	r->rev = rev;
	r->done = done;
	r->arg = &finished;
	cluster_dir_submit(s->dir, r);
	cr_assert(tloop_run_until(&t, &finished, 10), "no answer");
}

static void
setup(void)
{
	tloop_init(&t);
	nc_start(&nc, 3, true);
}

static void
teardown(void)
{
	nc_stop(&nc);
	tloop_destroy(&t);
	nats_Close();
}

Test(cluster_dir, operations, .init = setup, .fini = teardown,
    .timeout = 60)
{
	struct side s[2] = { 0 };
	struct dir_req r = { 0 };
	uint64_t r1, r2, r3;

	side_connect(&s[0], 0, "t_ops");
	cr_assert(tloop_run_pred(&t, both_opened, s, 20), "not opened");
	cr_assert_eq(s[0].replicas, 3);

	call(&s[0], &r, DIR_GET, "k1", NULL, 0);
	cr_assert_eq(r.result, DIR_NOT_FOUND);
	call(&s[0], &r, DIR_WRITE, "k1", "one", 0);
	cr_assert_eq(r.result, DIR_OK, "%s", r.error);
	r1 = r.rev;
	call(&s[0], &r, DIR_WRITE, "k1", "again", 0);
	cr_assert_eq(r.result, DIR_CONFLICT);
	call(&s[0], &r, DIR_WRITE, "k1", "two", r1);
	cr_assert_eq(r.result, DIR_OK);
	r2 = r.rev;
	cr_assert_gt(r2, r1);
	call(&s[0], &r, DIR_WRITE, "k1", "stale", r1);
	cr_assert_eq(r.result, DIR_CONFLICT);
	call(&s[0], &r, DIR_GET, "k1", NULL, 0);
	cr_assert_eq(r.result, DIR_OK);
	cr_assert_eq(r.rev, r2);
	cr_assert_eq(r.len, 3);
	cr_assert_eq(memcmp(r.value, "two", 3), 0);
	/* A delete holds only at the last revision. */
	call(&s[0], &r, DIR_DELETE, "k1", NULL, r1);
	cr_assert_eq(r.result, DIR_CONFLICT);
	call(&s[0], &r, DIR_DELETE, "k1", NULL, r2);
	cr_assert_eq(r.result, DIR_OK);
	r3 = r.rev;
	call(&s[0], &r, DIR_GET, "k1", NULL, 0);
	cr_assert_eq(r.result, DIR_OK);
	cr_assert(r.deleted);
	cr_assert_eq(r.rev, r3);
	cr_assert_null(r.value);
	/* After a delete, the claim is made at the marker's revision. */
	call(&s[0], &r, DIR_WRITE, "k1", "three", 0);
	cr_assert_eq(r.result, DIR_CONFLICT);
	call(&s[0], &r, DIR_WRITE, "k1", "three", r3);
	cr_assert_eq(r.result, DIR_OK);
	free(r.value);
	side_close(&s[0]);
}

/*
 * Two nodes on two servers open a bucket nobody made yet and claim the
 * same key at once: both open it (the loser of the creation race does
 * not wait out a JetStream timeout first), exactly one claim holds, and
 * the other is a conflict, not an error.
 */
Test(cluster_dir, two_nodes_race_for_the_bucket_and_a_key,
    .init = setup, .fini = teardown, .timeout = 60)
{
	struct side s[2] = { 0 };
	struct dir_req r[2] = { 0 };
	bool finished[2] = { false, false };

	side_connect(&s[0], 0, "t_race");
	side_connect(&s[1], 2, "t_race");
	cr_assert(tloop_run_pred(&t, both_opened, s, 20), "not opened");
	for (int i = 0; i < 2; i++) {
		r[i].op = DIR_WRITE;
		snprintf(r[i].key, sizeof(r[i].key), "u");
		r[i].value = (uint8_t *)strdup(i ? "b" : "a");
		r[i].len = 1;
		r[i].done = done;
		r[i].arg = &finished[i];
	}
	cluster_dir_submit(s[0].dir, &r[0]);
	cluster_dir_submit(s[1].dir, &r[1]);
	cr_assert(tloop_run_until(&t, &finished[0], 10));
	cr_assert(tloop_run_until(&t, &finished[1], 10));
	cr_assert((r[0].result == DIR_OK) != (r[1].result == DIR_OK),
	    "results %d and %d", r[0].result, r[1].result);
	cr_assert(r[0].result == DIR_CONFLICT || r[1].result == DIR_CONFLICT);
	for (int i = 0; i < 2; i++) {
		free(r[i].value);
		side_close(&s[i]);
	}
}
