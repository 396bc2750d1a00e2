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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
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

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The run's shared NATS cluster, and a prefix of this test's own. */
static void
shared(void)
{
	nc_shared(&nc);
	snprintf(prefix, sizeof(prefix), "t%ld", (long)getpid());
}

static void __attribute__((unused))
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
static bool __attribute__((unused))
metric_wait(int i, const char *series, double v, double timeout)
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
	for (int i = 0; i < MAXN; i++)
		rc_close(&c[i]);
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
