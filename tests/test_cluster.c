/*
 * The cluster end to end: real ferry nodes (tests/ferryproc.h) on a real
 * 3-server NATS cluster with JetStream (tests/natscluster.h), relay
 * clients on loopback (tests/relayclient.h).
 *
 * Most tests share the run's NATS cluster (nc_shared) and keep apart by a
 * subject prefix of their own; the tests that kill or hold back NATS
 * servers start a cluster of their own.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
#include "metrics_read.h"
#include "natscluster.h"
#include "relayclient.h"

#define KEYS "a,b,c,d"
#define NKEYS 4
#define FS (NKEYS * 4)
#define MAXN 3

static struct nats_cluster nc;
static struct ferry_proc node[MAXN];
static int nnodes;
static bool own_cluster;
static char prefix[32];

/* The run's shared NATS cluster, and a prefix of this test's own. */
static void
shared(void)
{
	nc_shared(&nc);
	snprintf(prefix, sizeof(prefix), "t%ld", (long)getpid());
}

static void
own(int servers)
{
	nc_start(&nc, servers, true);
	own_cluster = true;
	snprintf(prefix, sizeof(prefix), "t%ld", (long)getpid());
}

static void
teardown(void)
{
	for (int i = 0; i < nnodes; i++)
		if (node[i].pid > 0)
			ferry_cleanup(&node[i]);
	if (own_cluster)
		nc_stop(&nc);
}

/*
 * Node i ("n<i+1>"), seeded with NATS server `server` (it learns the
 * others), a plain relay listener "relay" and a TLS one "relay-tls",
 * `extra` in both, `ferry` in [ferry].  `join`: waits until it joined.
 */
static void
node_start_opts(int i, int server, const char *extra, const char *ferry,
    bool join)
{
	char conf[4096], url[64];
	struct ferry_opts o = { .ready = 1 };

	if (strstr(ferry, "workers") != NULL)
		o.ready = 2;
	nc_url(&nc, server, url, sizeof(url));
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n%s"
	    "[cluster]\nnats = %s\nnode = n%d\nsubject_prefix = %s\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n%s"
	    "[relay-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\n%s", ferry, url, i + 1, prefix, extra,
	    CERT("server.pem"), CERT("server.key"), extra);
	ferry_start_opts(&node[i], conf, &o);
	if (i + 1 > nnodes)
		nnodes = i + 1;
	if (join && !ferry_log_wait(&node[i], "joined", o.ready, 30)) {
		ferry_log_dump(&node[i]);
		nc_dump(&nc);
		cr_assert_fail("node n%d did not join", i + 1);
	}
}

static void
node_start(int i, const char *extra)
{
	node_start_opts(i, i % nc.n, extra, "", true);
}

static int
port(int i, bool tls)
{
	return ferry_port(&node[i], tls ? "relay-tls" : "relay");
}

static void
producer(struct rclient *p, int i, bool tls, const char *uuid)
{
	int r = rc_producer(p, tls, port(i, tls), uuid, KEYS);

	if (r != RC_OK)
		ferry_log_dump(&node[i]);
	cr_assert_eq(r, RC_OK, "producer on n%d: %d (step %d)", i + 1, r,
	    p->refused_at);
}

static void
consumer(struct rclient *c, int i, bool tls, const char *uuid)
{
	int r = rc_consumer(c, tls, port(i, tls), uuid, 0);

	if (r != RC_OK)
		ferry_log_dump(&node[i]);
	cr_assert_eq(r, RC_OK, "consumer on n%d: %d (step %d)", i + 1, r,
	    c->refused_at);
	cr_assert_eq(c->nkeys, NKEYS);
	cr_assert_eq(c->keys_len, strlen(KEYS));
	cr_assert(memcmp(c->keys, KEYS, c->keys_len) == 0);
}

static double
metric(int i, const char *series)
{
	return ferry_metric(&node[i], series);
}

/* Waits until a metric of node i reaches v (true) or timeout. */
static bool
metric_at_least(int i, const char *series, double v, double timeout)
{
	double end = now_s() + timeout;

	while (now_s() < end) {
		if (metric(i, series) >= v)
			return true;
		usleep(20 * 1000);
	}
	return false;
}

static char *
series(const char *name, int i)
{
	static char buf[4][160];
	static int k;
	char *b = buf[k++ % 4];

	snprintf(b, 160, "ferry_cluster_%s{node=\"n%d\"}", name, i + 1);
	return b;
}

/* ---- frames cross byte-exact and in order ---- */

static void
fan_out(bool tls)
{
	struct rclient p, c[MAXN];
	struct rc_reader rd[MAXN];
	size_t which = 0;
	const size_t n = 3000;

	shared();
	for (int i = 0; i < MAXN; i++)
		node_start(i, "");
	producer(&p, 0, tls, "fan");
	/* Visible on every node as soon as the producer has its 0x00. */
	for (int i = 0; i < MAXN; i++) {
		consumer(&c[i], i, tls, "fan");
		cr_assert_eq(rc_reader_start(&rd[i], &c[i], n), 0);
	}
	cr_assert(rc_send_frames(&p, 0, n));
	if (rc_readers_take(rd, MAXN, n, 30, &which) != RC_OK) {
		for (int i = 0; i < MAXN; i++)
			fprintf(stderr, "n%d: got %zu, sent %g received %g "
			    "lost %g stale %g\n", i + 1, rc_reader_got(&rd[i]),
			    metric(i, series("frames_sent_total", i)),
			    metric(i, series("frames_received_total", i)),
			    metric(i, series("frames_lost_total", i)),
			    metric(i, series("frames_stale_total", i)));
		for (int i = 0; i < MAXN; i++)
			fprintf(stderr, "n%d: messages in %g out %g bad %g\n",
			    i + 1, metric(i, series("messages_received_total", i)),
			    metric(i, series("messages_sent_total", i)),
			    metric(i, series("messages_bad_total", i)));
		ferry_log_dump(&node[0]);
		ferry_log_dump(&node[which]);
		cr_assert_fail("consumer on n%zu", which + 1);
	}
	for (int i = 0; i < MAXN; i++) {
		rc_reader_join(&rd[i]);
		cr_assert_not(rd[i].torn);
		rc_reader_free(&rd[i]);
	}
	/* Once per node, whatever its consumers; local ones never cross. */
	cr_assert_eq(metric(0, series("frames_sent_total", 0)), 2.0 * n);
	cr_assert_eq(metric(1, series("frames_received_total", 1)), n);
	cr_assert_eq(metric(2, series("frames_received_total", 2)), n);
	cr_assert_eq(metric(0, series("remote_consumers", 0)), 2);
	cr_assert(ferry_log_count(&node[1], "producer on node n1") >= 1);
	/* The remote consumers leave: their nodes withdraw, nothing crosses. */
	for (int i = 1; i < MAXN; i++)
		rc_close(&c[i]);
	{
		double end = now_s() + 10;
		while (metric(0, series("remote_consumers", 0)) != 0 &&
		    now_s() < end)
			usleep(20 * 1000);
	}
	cr_assert_eq(metric(0, series("remote_consumers", 0)), 0);
	cr_assert(rc_send_frames(&p, (uint32_t)n, 100));
	cr_assert_eq(rc_read_frames(&c[0], 100, NULL, &(bool){ false }), 100);
	cr_assert_eq(metric(0, series("frames_sent_total", 0)), 2.0 * n);
	rc_close(&c[0]);
	rc_close(&p);
}

Test(cluster, fan_out_plain, .fini = teardown,
    .timeout = 90)
{
	fan_out(false);
}

Test(cluster, fan_out_tls, .fini = teardown, .timeout = 90)
{
	fan_out(true);
}

Test(cluster, unknown_uuid_refused_everywhere, .init = shared,
    .fini = teardown, .timeout = 90)
{
	struct rclient c;

	for (int i = 0; i < MAXN; i++)
		node_start(i, "");
	for (int i = 0; i < MAXN; i++) {
		cr_assert_eq(rc_consumer(&c, false, port(i, false), "nobody",
		    0), RC_REFUSED, "n%d", i + 1);
		cr_assert_eq(c.refused_at, 2);
		rc_free(&c);
	}
}

/* ---- takeover, cluster-wide ---- */

struct racer {
	pthread_t th;
	struct rclient c;
	int port;
	const char *uuid;
	int result;
};

static void *
race_run(void *arg)
{
	struct racer *r = arg;

	r->result = rc_producer(&r->c, false, r->port, r->uuid, KEYS);
	return NULL;
}

/* Whether a producer's connection is still open (quiet, not closed). */
static bool
still_open(struct rclient *c)
{
	return rc_quiet(c, 0.2);
}

static void
race(const char *takeover, int rounds)
{
	char extra[128], uuid[32];
	int refused = 0;

	snprintf(extra, sizeof(extra), "takeover = %s\ngrace = 0\n",
	    takeover);
	shared();
	for (int i = 0; i < MAXN; i++)
		node_start(i, extra);
	for (int round = 0; round < rounds; round++) {
		struct racer r[2];
		struct rclient cons;
		int ok = 0, open_ = 0, alive = -1;
		double end;

		snprintf(uuid, sizeof(uuid), "race-%d", round);
		for (int k = 0; k < 2; k++) {
			r[k].port = port(k, false);
			r[k].uuid = uuid;
			cr_assert_eq(pthread_create(&r[k].th, NULL, race_run,
			    &r[k]), 0);
		}
		for (int k = 0; k < 2; k++) {
			pthread_join(r[k].th, NULL);
			cr_assert(r[k].result == RC_OK ||
			    r[k].result == RC_REFUSED, "round %d: %d", round,
			    r[k].result);
			ok += r[k].result == RC_OK;
		}
		cr_assert_geq(ok, 1, "round %d: nobody holds the uuid", round);
		if (strcmp(takeover, "refuse") == 0)
			cr_assert_eq(ok, 1, "round %d: both registered", round);
		refused += 2 - ok;
		/* Exactly one remains: the other was refused or closed. */
		end = now_s() + 10;
		do {
			open_ = 0;
			for (int k = 0; k < 2; k++)
				if (r[k].result == RC_OK && still_open(&r[k].c)) {
					open_++;
					alive = k;
				}
		} while (open_ > 1 && now_s() < end);
		if (open_ != 1) {
			ferry_log_dump(&node[0]);
			ferry_log_dump(&node[1]);
		}
		cr_assert_eq(open_, 1, "round %d: %d producers left", round,
		    open_);
		/* Every consumer, wherever, follows the one left. */
		consumer(&cons, 2, false, uuid);
		cr_assert(rc_send_frames(&r[alive].c, 0, 10));
		{
			uint32_t seqs[10];
			bool torn = false;
			cr_assert_eq(rc_read_frames(&cons, 10, seqs, &torn), 10,
			    "round %d", round);
			cr_assert_eq(seqs[9], 9);
		}
		rc_close(&cons);
		for (int k = 0; k < 2; k++)
			rc_free(&r[k].c);
	}
	cr_log_info("%s: %d rounds, %d producers refused", takeover, rounds,
	    refused);
}

Test(cluster, takeover_race_replace, .fini = teardown, .timeout = 240)
{
	race("replace", 100);
}

Test(cluster, takeover_race_refuse, .fini = teardown, .timeout = 240)
{
	race("refuse", 100);
}

/* ---- grace and resume across nodes ---- */

Test(cluster, grace_and_resume_across_nodes, .fini = teardown,
    .timeout = 90)
{
	struct rclient p, c;
	uint32_t seqs[100];
	bool torn = false;

	shared();
	for (int i = 0; i < MAXN; i++)
		node_start(i, "grace = 20\n");
	producer(&p, 0, false, "phone");
	consumer(&c, 2, false, "phone");
	cr_assert(rc_send_frames(&p, 0, 100));
	cr_assert_eq(rc_read_frames(&c, 100, seqs, &torn), 100);
	cr_assert_eq(seqs[99], 99);
	/* The phone drops off n1 and comes back on n2. */
	rc_close(&p);
	cr_assert(ferry_log_wait(&node[2], "the producer on node n1 left", 1,
	    10));
	cr_assert(still_open(&c), "the consumer was closed in its grace");
	producer(&p, 1, false, "phone");
	cr_assert(ferry_log_wait(&node[2], "joined uuid", 1, 10));
	cr_assert(rc_send_frames(&p, 100, 100));
	if (rc_read_frames(&c, 100, seqs, &torn) != 100) {
		for (int i = 0; i < MAXN; i++)
			ferry_log_dump(&node[i]);
		cr_assert_fail("no frames after the resume");
	}
	cr_assert_eq(seqs[0], 100);
	cr_assert_eq(seqs[99], 199);
	rc_close(&c);
	rc_close(&p);
}

/* ---- a slow node costs the others nothing ---- */

Test(cluster, slow_consumer_on_one_node_costs_others_nothing,
    .fini = teardown, .timeout = 120)
{
	struct rclient p, fast, slow;
	struct rc_reader rd;
	size_t which;
	/* 8 MB in 4 KB frames: above what n3 and its kernel can hold, not
	 * above what NATS may have unsent on n1 (CLUSTER_CONN_MAX_BUFFERED). */
	const size_t n = 2000;
	char *keys = rc_key_names(1000);

	shared();
	/*
	 * block everywhere: on n2 with room for the whole burst (a consumer
	 * there cannot hold the producer on n1, so a burst beyond its queue
	 * would be dropped), on n3 with little room and a consumer that
	 * never reads.
	 */
	node_start(0, "slow_consumer = block\n");
	node_start(1, "slow_consumer = block\nqueue_bytes = 64m\n");
	node_start(2, "slow_consumer = block\nqueue_bytes = 64k\n");
	cr_assert_eq(rc_producer(&p, false, port(0, false), "slow", keys),
	    RC_OK);
	cr_assert_eq(rc_consumer(&fast, false, port(1, false), "slow", 0),
	    RC_OK);
	cr_assert_eq(rc_consumer(&slow, false, port(2, false), "slow", 4096),
	    RC_OK);
	free(keys);
	cr_assert_eq(rc_reader_start(&rd, &fast, n), 0);
	/* block cannot hold a producer on another node: n1 never waits. */
	cr_assert(rc_send_frames(&p, 0, n), "the producer was held");
	if (rc_readers_take(&rd, 1, n, 60, &which) != RC_OK) {
		rc_reader_join(&rd);
		fprintf(stderr, "got %zu torn %d last %u\n", rd.got, rd.torn,
		    rd.got ? rd.seqs[rd.got - 1] : 0);
		for (int i = 0; i < MAXN; i++)
			fprintf(stderr, "n%d: sent %g dropped %g received %g "
			    "lost %g stale %g relay dropped %g\n", i + 1,
			    metric(i, series("frames_sent_total", i)),
			    metric(i, series("frames_send_dropped_total", i)),
			    metric(i, series("frames_received_total", i)),
			    metric(i, series("frames_lost_total", i)),
			    metric(i, series("frames_stale_total", i)),
			    metric(i, "ferry_relay_frames_dropped_total"
			    "{listener=\"relay\"}"));
		ferry_log_dump(&node[1]);
		cr_assert_fail("n2's consumer lost frames");
	}
	rc_reader_join(&rd);
	rc_reader_free(&rd);
	if (!metric_at_least(2, "ferry_relay_frames_dropped_total"
	    "{listener=\"relay\"}", 1, 10)) {
		char *page;
		int st;
		page = http_get(ferry_port(&node[2], "admin"), "/metrics", &st);
		fprintf(stderr, "%s\n", page ? page : "(none)");
		free(page);
		ferry_log_dump(&node[2]);
		cr_assert_fail("the slow consumer on n3 dropped nothing");
	}
	rc_close(&fast);
	rc_free(&slow);
	rc_close(&p);
}

/* ---- a node SIGKILLed ---- */

Test(cluster, node_killed_remote_consumers_get_the_grace, .fini = teardown,
    .timeout = 90)
{
	struct rclient p, c, p2;
	uint32_t seqs[50];
	bool torn = false;

	shared();
	for (int i = 0; i < MAXN; i++)
		node_start(i, "grace = 30\n");
	producer(&p, 0, false, "dev");
	consumer(&c, 1, false, "dev");
	cr_assert(rc_send_frames(&p, 0, 50));
	cr_assert_eq(rc_read_frames(&c, 50, seqs, &torn), 50);
	ferry_signal(&node[0], SIGKILL);
	cr_assert(ferry_wait_exit(&node[0], 5));
	/* Within CLUSTER_DEAD_AFTER (1 s) of silence: the grace. */
	if (!ferry_log_wait(&node[1], "is gone with its node", 1, 10)) {
		ferry_log_dump(&node[1]);
		cr_assert_fail("n2 did not see n1's producer gone");
	}
	cr_assert(still_open(&c));
	/* The device comes back on n3: the dead node's record is taken. */
	producer(&p2, 2, false, "dev");
	cr_assert(rc_send_frames(&p2, 50, 50));
	cr_assert_eq(rc_read_frames(&c, 50, seqs, &torn), 50);
	cr_assert_eq(seqs[0], 50);
	rc_free(&p);
	rc_close(&p2);
	rc_close(&c);
}

/* ---- last_value across nodes ---- */

Test(cluster, last_value_across_nodes, .fini = teardown, .timeout = 90)
{
	struct rclient p, c;
	uint32_t seqs[11];
	bool torn = false;

	shared();
	for (int i = 0; i < 2; i++)
		node_start(i, "last_value = true\n");
	producer(&p, 0, false, "lv");
	cr_assert(rc_send_frames(&p, 0, 10));
	/* n1 has taken the frames in before the consumer asks. */
	cr_assert(ferry_log_wait(&node[1], "heard node n1", 1, 10));
	usleep(100 * 1000);
	consumer(&c, 1, false, "lv");
	cr_assert(rc_send_frames(&p, 10, 10));
	cr_assert_eq(rc_read_frames(&c, 11, seqs, &torn), 11);
	cr_assert_eq(seqs[0], 9, "the last value first: %u", seqs[0]);
	for (int k = 1; k < 11; k++)
		cr_assert_eq(seqs[k], 9 + (uint32_t)k);
	rc_close(&c);
	rc_close(&p);
}

/* ---- a NATS server killed ---- */

struct pacer {
	pthread_t th;
	struct rclient *p;
	volatile bool stop;
	volatile uint32_t sent;
};

static void *
pace(void *arg)
{
	struct pacer *s = arg;

	while (!s->stop) {
		if (!rc_send_frames(s->p, s->sent, 1))
			break;
		s->sent++;
		usleep(2000);
	}
	return NULL;
}

Test(cluster, nats_server_killed, .fini = teardown, .timeout = 120)
{
	struct rclient p, c;
	struct pacer s = { .p = &p };
	uint32_t seq, last = 0, got = 0, at_kill, after;
	bool torn = false;

	own(3);
	node_start_opts(0, 0, "grace = 30\n", "", true);
	node_start_opts(1, 1, "grace = 30\n", "", true);
	producer(&p, 0, false, "k");
	consumer(&c, 1, false, "k");
	cr_assert_eq(pthread_create(&s.th, NULL, pace, &s), 0);
	while (got < 200) {
		cr_assert_eq(rc_read_frames(&c, 1, &seq, &torn), 1);
		cr_assert(got == 0 || seq > last, "reordered");
		last = seq;
		got++;
	}
	/* n1's server dies: n1 reconnects to another. */
	nc_kill(&nc, 0);
	at_kill = s.sent;
	cr_assert(ferry_log_wait(&node[0], "reconnected to NATS", 1, 20),
	    "n1 did not reconnect");
	after = s.sent;
	/* Relaying resumes: a frame sent after the reconnect arrives. */
	while (last < after + 10) {
		size_t r = rc_read_frames(&c, 1, &seq, &torn);
		if (r != 1) {
			ferry_log_dump(&node[0]);
			ferry_log_dump(&node[1]);
		}
		cr_assert_eq(r, 1, "relaying did not resume");
		cr_assert_not(torn);
		cr_assert(seq > last, "reordered: %u after %u", seq, last);
		last = seq;
		got++;
	}
	s.stop = true;
	pthread_join(s.th, NULL);
	cr_log_info("nats_server_killed: %u frames sent up to %u, %u "
	    "received, %u lost (kill at %u, reconnect by %u)", last + 1,
	    last, got, last + 1 - got, at_kill, after);
	cr_assert_leq(last + 1 - got, after - at_kill + 200);
	rc_close(&c);
	rc_close(&p);
}

/* ---- NATS down at start ---- */

Test(cluster, nats_down_at_start, .fini = teardown, .timeout = 120)
{
	struct rclient p, c, lc;
	uint32_t seqs[10];
	bool torn = false;
	int r = RC_REFUSED;
	double end;

	own(3);
	for (int i = 0; i < 3; i++)
		nc_kill(&nc, i);
	node_start_opts(0, 0, "", "", false);
	node_start_opts(1, 1, "", "", false);
	cr_assert(ferry_log_wait(&node[0], "has no NATS connection", 1, 10));
	/* Alone, n1 serves its own uuids. */
	producer(&p, 0, false, "early");
	consumer(&lc, 0, false, "early");
	cr_assert_eq(rc_consumer(&c, false, port(1, false), "early", 0),
	    RC_REFUSED);
	rc_free(&c);
	cr_assert(rc_send_frames(&p, 0, 10));
	cr_assert_eq(rc_read_frames(&lc, 10, seqs, &torn), 10);
	/* NATS answers: both join, and n1's uuid is known everywhere. */
	for (int i = 0; i < 3; i++)
		nc_restart(&nc, i);
	cr_assert(nc_ready(&nc, 30));
	for (int i = 0; i < 2; i++)
		cr_assert(ferry_log_wait(&node[i], "joined", 1, 30),
		    "n%d did not join", i + 1);
	end = now_s() + 15;
	while (now_s() < end) {
		r = rc_consumer(&c, false, port(1, false), "early", 0);
		if (r == RC_OK)
			break;
		rc_free(&c);
		usleep(100 * 1000);
	}
	cr_assert_eq(r, RC_OK);
	cr_assert(rc_send_frames(&p, 10, 10));
	cr_assert_eq(rc_read_frames(&c, 10, seqs, &torn), 10);
	cr_assert_eq(seqs[0], 10);
	cr_assert_eq(rc_read_frames(&lc, 10, seqs, &torn), 10);
	rc_close(&c);
	rc_close(&lc);
	rc_close(&p);
}

/* ---- workers = 2: each worker a node ---- */

Test(cluster, two_workers_are_two_nodes, .fini = teardown, .timeout = 120)
{
	struct rclient p, c[32];
	int nc_ = 0, remote = -1;
	uint32_t seqs[20];
	bool torn = false;
	const char *imp0 = "ferry_cluster_uuids_imported{node=\"n1-w0\"}";
	const char *imp1 = "ferry_cluster_uuids_imported{node=\"n1-w1\"}";

	shared();
	node_start_opts(0, 0, "", "workers = 2\n", true);
	producer(&p, 0, false, "w");
	/* Consumers until one lands on the other worker (the kernel picks). */
	while (nc_ < 32) {
		consumer(&c[nc_], 0, false, "w");
		nc_++;
		if (metric(0, imp0) + metric(0, imp1) >= 1) {
			remote = nc_ - 1;
			break;
		}
	}
	cr_assert_geq(remote, 0, "every consumer on the producer's worker");
	cr_assert(rc_send_frames(&p, 0, 20));
	for (int k = 0; k < nc_; k++) {
		cr_assert_eq(rc_read_frames(&c[k], 20, seqs, &torn), 20,
		    "consumer %d", k);
		cr_assert_eq(seqs[19], 19);
	}
	for (int k = 0; k < nc_; k++)
		rc_close(&c[k]);
	rc_close(&p);
}
