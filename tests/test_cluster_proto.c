/*
 * cluster_proto: the cluster protocol's codec, version 1 -- round trips,
 * every cut refused, other versions and types told apart, the record's
 * uuid and keys held to the relay protocol's rules.
 */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cluster_proto.h"

#define S(lit) ((struct cluster_str){ lit, sizeof(lit) - 1 })

static const uint8_t token[CLUSTER_TOKEN_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8,
    9, 10, 11, 12, 13, 14, 15, 16 };

static struct cluster_record
a_record(void)
{
	struct cluster_record r = {
		.node = S("node-a:41"), .instance = 7, .nonce = 99,
		.listener = S("devices"), .grace_ms = 10000,
		.max_consumers = 64, .takeover = 1, .last_value = true,
		.uuid = S("dev-1"), .keys = S("x,y,z"),
	};
	return r;
}

static bool
str_is(struct cluster_str s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

Test(cluster_proto, record_round_trip, .timeout = 5)
{
	struct cluster_record r = a_record(), back;
	uint8_t buf[512];
	size_t n = cluster_put_record(buf, sizeof(buf), &r);

	cr_assert_eq(n, cluster_record_len(&r));
	cr_assert_eq(cluster_get_record(buf, n, &back), 0);
	cr_assert(str_is(back.node, "node-a:41"));
	cr_assert(str_is(back.listener, "devices"));
	cr_assert(str_is(back.uuid, "dev-1"));
	cr_assert(str_is(back.keys, "x,y,z"));
	cr_assert_eq(back.nkeys, 3);
	cr_assert_eq(back.instance, 7);
	cr_assert_eq(back.nonce, 99);
	cr_assert_eq(back.grace_ms, 10000);
	cr_assert_eq(back.max_consumers, 64);
	cr_assert_eq(back.takeover, 1);
	cr_assert(back.last_value);
	/* Every cut is refused, and so is a byte too many. */
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(cluster_get_record(buf, i, &back), -1, "cut %zu",
		    i);
	buf[n] = 0;
	cr_assert_eq(cluster_get_record(buf, n + 1, &back), -1);
	/* No room: nothing written. */
	cr_assert_eq(cluster_put_record(buf, n - 1, &r), 0);
}

Test(cluster_proto, record_content_follows_the_relay_rules, .timeout = 5)
{
	static const char *const bad_keys[] = { "a,,b", "a,a", ",a", "a\tb" };
	struct cluster_record r = a_record(), back;
	uint8_t buf[512];
	size_t n;

	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		r.keys.p = bad_keys[i];
		r.keys.len = strlen(bad_keys[i]);
		n = cluster_put_record(buf, sizeof(buf), &r);
		cr_assert_gt(n, 0);
		cr_assert_eq(cluster_get_record(buf, n, &back), -1, "keys '%s'",
		    bad_keys[i]);
	}
	r = a_record();
	r.uuid = S("dev\x01");
	n = cluster_put_record(buf, sizeof(buf), &r);
	cr_assert_eq(cluster_get_record(buf, n, &back), -1);
	/* The encoder refuses what no decoder would take. */
	r = a_record();
	r.max_consumers = 0;
	cr_assert_eq(cluster_put_record(buf, sizeof(buf), &r), 0);
	r = a_record();
	r.node = S("");
	cr_assert_eq(cluster_put_record(buf, sizeof(buf), &r), 0);
	/* A record of another format version is not read. */
	r = a_record();
	n = cluster_put_record(buf, sizeof(buf), &r);
	buf[0] = CLUSTER_RECORD_VERSION + 1;
	cr_assert_eq(cluster_get_record(buf, n, &back), -1);
}

Test(cluster_proto, messages_round_trip, .timeout = 5)
{
	struct cluster_heartbeat hb = { S("node-b"), 42, 250,
	    CLUSTER_HB_STOPPING, 3 }, hb2;
	struct cluster_claim cl = { .epoch = 12, .rec = a_record() }, cl2;
	struct cluster_gone g = { .epoch = 12, .reason = CLUSTER_GONE_LEFT },
	    g2;
	struct cluster_interest in = { .node = S("node-c"), .instance = 5,
	    .epoch = 12, .flags = CLUSTER_WANT_LAST }, in2;
	uint8_t buf[1024];
	size_t n;

	memcpy(cl.token, token, sizeof(token));
	memcpy(g.token, token, sizeof(token));
	memcpy(in.token, token, sizeof(token));

	n = cluster_put_heartbeat(buf, sizeof(buf), &hb);
	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_MSG_HEARTBEAT);
	cr_assert_eq(cluster_get_heartbeat(buf, n, &hb2), 0);
	cr_assert(str_is(hb2.node, "node-b"));
	cr_assert_eq(hb2.instance, 42);
	cr_assert_eq(hb2.interval_ms, 250);
	cr_assert_eq(hb2.flags, CLUSTER_HB_STOPPING);
	cr_assert_eq(hb2.owned, 3);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(cluster_get_heartbeat(buf, i, &hb2), -1);

	n = cluster_put_claim(buf, sizeof(buf), &cl);
	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_MSG_CLAIM);
	cr_assert_eq(cluster_get_claim(buf, n, &cl2), 0);
	cr_assert_eq(cl2.epoch, 12);
	cr_assert_eq(memcmp(cl2.token, token, sizeof(token)), 0);
	cr_assert(str_is(cl2.rec.keys, "x,y,z"));
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(cluster_get_claim(buf, i, &cl2), -1);

	n = cluster_put_gone(buf, sizeof(buf), &g);
	cr_assert_eq(cluster_get_gone(buf, n, &g2), 0);
	cr_assert_eq(g2.epoch, 12);
	cr_assert_eq(g2.reason, CLUSTER_GONE_LEFT);
	/* A message decodes only as its own type. */
	cr_assert_eq(cluster_get_claim(buf, n, &cl2), -1);

	n = cluster_put_interest(buf, sizeof(buf), &in);
	cr_assert_eq(cluster_get_interest(buf, n, &in2), 0);
	cr_assert(str_is(in2.node, "node-c"));
	cr_assert_eq(in2.instance, 5);
	cr_assert_eq(in2.epoch, 12);
	cr_assert_eq(in2.flags, CLUSTER_WANT_LAST);
	buf[n - 1] = CLUSTER_HELLO | CLUSTER_FROM_START | CLUSTER_WITHDRAW;
	cr_assert_eq(cluster_get_interest(buf, n, &in2), 0);
	cr_assert_eq(in2.flags, CLUSTER_HELLO | CLUSTER_FROM_START |
	    CLUSTER_WITHDRAW);
	buf[n - 1] = 0x80;	/* a flag version 1 does not have */
	cr_assert_eq(cluster_get_interest(buf, n, &in2), -1);
}

/* A FRAMES message of two chunks, as a node builds it. */
static size_t
two_chunks(uint8_t *buf, size_t cap)
{
	struct cluster_chunk a = { .epoch = 12, .seq = 5, .frame_size = 8,
	    .count = 3 }, b = { .epoch = 4, .seq = 0, .frame_size = 4,
	    .count = 1 };
	size_t n = cluster_put_header(buf, cap, CLUSTER_MSG_FRAMES);

	memcpy(a.token, token, sizeof(token));
	memset(b.token, 0xee, sizeof(b.token));
	n += cluster_put_chunk_head(buf + n, cap - n, &a);
	for (int i = 0; i < 24; i++)
		buf[n++] = (uint8_t)i;
	n += cluster_put_chunk_head(buf + n, cap - n, &b);
	memcpy(buf + n, "abcd", 4);
	return n + 4;
}

Test(cluster_proto, frames_chunks, .timeout = 5)
{
	uint8_t buf[256];
	size_t n = two_chunks(buf, sizeof(buf)), off = 0;
	struct cluster_chunk c;

	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_MSG_FRAMES);
	cr_assert_eq(cluster_next_chunk(buf, n, &off, &c), 1);
	cr_assert_eq(c.epoch, 12);
	cr_assert_eq(c.seq, 5);
	cr_assert_eq(c.count, 3);
	cr_assert_eq(c.frame_size, 8);
	cr_assert_eq((const uint8_t *)c.data, buf + CLUSTER_HDR_SIZE +
	    CLUSTER_CHUNK_HEAD);
	cr_assert_eq(c.data[23], 23);
	cr_assert_eq(cluster_next_chunk(buf, n, &off, &c), 1);
	cr_assert_eq(c.count, 1);
	cr_assert_eq(memcmp(c.data, "abcd", 4), 0);
	cr_assert_eq(cluster_next_chunk(buf, n, &off, &c), 0);
	/* Cut inside the second chunk: the first is whole, then an error. */
	off = 0;
	cr_assert_eq(cluster_next_chunk(buf, n - 1, &off, &c), 1);
	cr_assert_eq(cluster_next_chunk(buf, n - 1, &off, &c), -1);
	/* A count that would pass the end (and wrap a 32-bit product). */
	off = 0;
	buf[CLUSTER_HDR_SIZE + CLUSTER_CHUNK_HEAD - 4] = 0xff;
	cr_assert_eq(cluster_next_chunk(buf, n, &off, &c), -1);
}

Test(cluster_proto, frame_sizes_are_whole_floats, .timeout = 5)
{
	struct cluster_chunk c = { .epoch = 1, .frame_size = 6, .count = 1 };
	uint8_t buf[64];

	cr_assert_eq(cluster_put_chunk_head(buf, sizeof(buf), &c), 0);
	c.frame_size = 0;
	cr_assert_eq(cluster_put_chunk_head(buf, sizeof(buf), &c), 0);
	c.frame_size = CLUSTER_FRAME_MAX + 4;
	cr_assert_eq(cluster_put_chunk_head(buf, sizeof(buf), &c), 0);
	c.frame_size = 8;
	c.count = 0;
	cr_assert_eq(cluster_put_chunk_head(buf, sizeof(buf), &c), 0);
}

Test(cluster_proto, last_is_one_frame, .timeout = 5)
{
	static const char frame[12] = "abcdefghijkl";
	struct cluster_chunk c = { .epoch = 3, .seq = 77, .frame_size = 12,
	    .count = 1, .data = frame }, back;
	uint8_t buf[128];
	size_t n;

	memcpy(c.token, token, sizeof(token));
	n = cluster_put_last(buf, sizeof(buf), &c);
	cr_assert_eq(n, CLUSTER_HDR_SIZE + CLUSTER_CHUNK_HEAD + 12);
	cr_assert_eq(cluster_get_last(buf, n, &back), 0);
	cr_assert_eq(back.seq, 77);
	cr_assert_eq(memcmp(back.data, frame, 12), 0);
	c.count = 2;
	cr_assert_eq(cluster_put_last(buf, sizeof(buf), &c), 0);
}

Test(cluster_proto, versions_and_types, .timeout = 5)
{
	uint8_t buf[256];
	size_t n = two_chunks(buf, sizeof(buf)), off = 0;
	struct cluster_chunk c;

	cr_assert_eq(cluster_msg_type(buf, 3), CLUSTER_BAD);
	buf[0] = 'G';
	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_BAD);
	buf[0] = 'F';
	buf[2] = CLUSTER_PROTO_VERSION + 1;
	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_OTHER_VERSION);
	cr_assert_eq(cluster_next_chunk(buf, n, &off, &c), -1);
	buf[2] = CLUSTER_PROTO_VERSION;
	buf[3] = 0;
	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_UNKNOWN);
	buf[3] = 7;
	cr_assert_eq(cluster_msg_type(buf, n), CLUSTER_UNKNOWN);
}
