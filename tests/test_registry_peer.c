/*
 * registry: peers (connections without a stream, registry.h) -- a remote
 * producer feeding local consumers, the link to other nodes, the
 * observer -- on one loop, with consumers on plain socketpair streams.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"
#include "registry.h"

struct peer_log {
	int holds, releases, evicts, sends;
	size_t frames_sent;
	char last_frame[16];
	int producer_left, entry_freed;
};

static struct peer_log plog;

static void
p_hold(struct relay_conn *c)
{
	(void)c;
	plog.holds++;
}

static void
p_release(struct relay_conn *c)
{
	(void)c;
	plog.releases++;
}

static void
p_evict(struct relay_conn *c, const struct relay_conn *by)
{
	(void)c;
	(void)by;
	plog.evicts++;
}

static void
p_send(struct relay_conn *c, const char *frames, size_t n, size_t size)
{
	(void)c;
	plog.sends++;
	plog.frames_sent += n;
	if (size <= sizeof(plog.last_frame))
		memcpy(plog.last_frame, frames + (n - 1) * size, size);
}

static const char *
p_name(const struct relay_conn *c)
{
	(void)c;
	return "node test";
}

/* A remote producer: it cannot be held. */
static const struct relay_peer_ops remote_ops = { NULL, NULL, p_evict, NULL,
    p_name };
/* One that can (to see the registry ask). */
static const struct relay_peer_ops holdable_ops = { p_hold, p_release,
    p_evict, NULL, p_name };
static const struct relay_peer_ops link_ops = { NULL, NULL, NULL, p_send,
    p_name };

static void
ob_left(void *arg, struct registry_entry *e, struct relay_conn *p)
{
	(void)arg;
	(void)e;
	(void)p;
	plog.producer_left++;
}

static void
ob_freed(void *arg, struct registry_entry *e)
{
	(void)arg;
	(void)e;
	plog.entry_freed++;
}

static const struct registry_observer observer = { ob_left, ob_freed,
    NULL };

struct fixture {
	struct tloop t;
	struct registry reg;
	struct relay_origin lst, remote;
	struct relay_conn prod, cons[2];
	struct stream *s[2];
	int peer_fd[2];
};

static struct fixture fx;

/* The stream is freed after its close: forgotten then. */
static void
stream_freed(struct stream *s, void *arg)
{
	struct stream **slot = arg;

	(void)s;
	*slot = NULL;
}

static void
consumer(size_t i, enum relay_slow slow, size_t queue)
{
	int sv[2];
	const char *why = NULL;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
	    0);
	fx.s[i] = stream_new(&fx.t.sl, sv[0], NULL);
	cr_assert_not_null(fx.s[i]);
	stream_set_free_hook(fx.s[i], stream_freed, &fx.s[i]);
	fx.peer_fd[i] = sv[1];
	fx.lst.opts.slow = slow;
	fx.lst.opts.queue_bytes = queue;
	registry_conn_init(&fx.cons[i], fx.s[i], &fx.lst);
	stream_set_callbacks(fx.s[i], NULL, &fx.cons[i]);
	cr_assert_not_null(registry_add_consumer(&fx.reg, &fx.cons[i], "u", 1,
	    &why), "%s", why);
	cr_assert_eq(registry_accept(&fx.cons[i], &why), 0, "%s", why);
}

static void
setup(const struct relay_peer_ops *ops, bool last_value)
{
	const char *why = NULL;

	memset(&fx, 0, sizeof(fx));
	memset(&plog, 0, sizeof(plog));
	tloop_init(&fx.t);
	registry_init(&fx.reg, fx.t.loop);
	registry_set_observer(&fx.reg, &observer, NULL);
	snprintf(fx.lst.name, sizeof(fx.lst.name), "devices");
	relay_opts_default(&fx.lst.opts);
	snprintf(fx.remote.name, sizeof(fx.remote.name), "node-b/devices");
	relay_opts_default(&fx.remote.opts);
	fx.remote.opts.last_value = last_value;
	fx.remote.opts.grace = 0.2;
	registry_peer_init(&fx.prod, ops, &fx.remote);
	cr_assert_eq(registry_add_producer(&fx.reg, &fx.prod, "u", 1, "a,b", 3,
	    2, &why), 0, "%s", why);
}

static void
teardown_fx(void)
{
	for (int i = 0; i < 2; i++) {
		if (fx.peer_fd[i] > 0)
			close(fx.peer_fd[i]);
		if (fx.s[i] == NULL)
			continue;
		registry_remove(&fx.cons[i]);
		stream_close(fx.s[i], STREAM_CLOSE_LOCAL);
	}
	registry_remove(&fx.prod);
	registry_destroy(&fx.reg);
	tloop_destroy(&fx.t);
}

static size_t
read_all(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap && (n = read(fd, buf + got, cap - got)) > 0)
		got += (size_t)n;
	return got;
}

Test(registry_peer, remote_producer_feeds_local_consumers, .timeout = 10)
{
	static const char frames[16] = "AAAABBBBCCCCDDDD";
	char buf[64];

	setup(&remote_ops, false);
	consumer(0, RELAY_DROP, 1024);
	registry_publish(&fx.prod, frames, 2);
	tloop_run_for(&fx.t, 0.05);
	cr_assert_eq(read_all(fx.peer_fd[0], buf, sizeof(buf)), 16);
	cr_assert_eq(memcmp(buf, frames, 16), 0);
	cr_assert_eq(fx.reg.entries, 1);
	/* The remote producer goes: grace, then the consumer is closed. */
	registry_remove(&fx.prod);
	cr_assert_eq(plog.producer_left, 1);
	tloop_run_for(&fx.t, 0.4);
	cr_assert(fx.s[0] == NULL || stream_closed(fx.s[0]));
	cr_assert_eq(plog.entry_freed, 1);
	cr_assert_eq(fx.reg.entries, 0);
	teardown_fx();
}

/* A node never waits for another: block turns into drop. */
Test(registry_peer, block_consumer_of_a_remote_producer_drops,
    .timeout = 10)
{
	static char frames[4096];
	struct registry_entry *e;

	setup(&remote_ops, false);
	consumer(0, RELAY_BLOCK, 64);
	e = fx.prod.entry;
	/* Nobody reads the consumer's socket: its buffers fill. */
	for (int i = 0; i < 400; i++)
		registry_publish(&fx.prod, frames, sizeof(frames) / 8);
	cr_assert(!e->producer_paused);
	cr_assert_gt(e->c.dropped.frames, 0);
	cr_assert_leq(stream_write_pending(fx.s[0]), 64 + 8);
	teardown_fx();
}

Test(registry_peer, block_consumer_holds_a_holdable_peer, .timeout = 10)
{
	static char frames[4096];

	setup(&holdable_ops, false);
	consumer(0, RELAY_BLOCK, 64);
	for (int i = 0; i < 400 && plog.holds == 0; i++)
		registry_publish(&fx.prod, frames, sizeof(frames) / 8);
	cr_assert_eq(plog.holds, 1);
	cr_assert_eq(fx.prod.entry->c.dropped.frames, 0);
	teardown_fx();
}

Test(registry_peer, link_gets_every_run_after_the_consumers, .timeout = 10)
{
	static const char frames[24] = "AAAABBBBCCCCDDDDEEEEFFFF";
	struct relay_origin nodes;
	struct relay_conn link;
	const char *why = NULL;
	char buf[64];

	setup(&remote_ops, false);
	/* A local producer takes the uuid over: the peer is evicted. */
	registry_conn_init(&link, NULL, &fx.lst);
	memset(&nodes, 0, sizeof(nodes));
	registry_peer_init(&link, &link_ops, &nodes);
	{
		struct relay_conn local;
		registry_peer_init(&local, &holdable_ops, &fx.lst);
		fx.remote.opts.takeover = RELAY_REFUSE;
		cr_assert_eq(registry_add_producer(&fx.reg, &local, "u", 1,
		    "a,b", 3, 2, &why), -1);
		cr_assert_eq(registry_take_producer(&fx.reg, &local, "u", 1,
		    "a,b", 3, 2, &why), 0, "%s", why);
		cr_assert_eq(plog.evicts, 1);
		/* Replaced, not left: the observer hears nothing. */
		cr_assert_eq(plog.producer_left, 0);
		consumer(0, RELAY_DROP, 1024);
		registry_set_link(local.entry, &link);
		registry_publish(&local, frames, 3);
		cr_assert_eq(plog.sends, 1);
		cr_assert_eq(plog.frames_sent, 3);
		cr_assert_eq(memcmp(plog.last_frame, "EEEEFFFF", 8), 0);
		tloop_run_for(&fx.t, 0.05);
		cr_assert_eq(read_all(fx.peer_fd[0], buf, sizeof(buf)), 24);
		/* The link is not a consumer: no slot, not counted. */
		cr_assert_eq(local.entry->nconsumers, 1);
		registry_remove(&local);
		cr_assert_eq(plog.producer_left, 1);
	}
	teardown_fx();
}

Test(registry_peer, last_value_learnt_late, .timeout = 10)
{
	static const char last[8] = "LLLLMMMM", next[8] = "NNNNOOOO";
	char buf[64];

	setup(&remote_ops, true);
	consumer(0, RELAY_DROP, 1024);
	/* Told the last value after the consumer accepted: it gets it. */
	registry_publish_last(&fx.prod, last);
	registry_publish(&fx.prod, next, 1);
	/* A late answer after a newer frame is ignored. */
	registry_publish_last(&fx.prod, "XXXXXXXX");
	tloop_run_for(&fx.t, 0.05);
	cr_assert_eq(read_all(fx.peer_fd[0], buf, sizeof(buf)), 16);
	cr_assert_eq(memcmp(buf, last, 8), 0);
	cr_assert_eq(memcmp(buf + 8, next, 8), 0);
	/* A consumer that accepts now gets the newest frame first. */
	consumer(1, RELAY_DROP, 1024);
	tloop_run_for(&fx.t, 0.05);
	cr_assert_eq(read_all(fx.peer_fd[1], buf, sizeof(buf)), 8);
	cr_assert_eq(memcmp(buf, next, 8), 0);
	teardown_fx();
}
