/*
 * The device protocol parser, pure: every input is fed whole, one byte at
 * a time and in many random cuts (seeded, so a failure replays), and must
 * give the same events, the same stop position and the same verdict.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "relay_proto.h"
#include "relayclient.h"

#define SEEDS 200

/* ---- inputs ---- */

struct bytes {
	uint8_t *p;
	size_t len, cap;
};

static void
b_add(struct bytes *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		cr_assert_not_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void
b_byte(struct bytes *b, int v)
{
	uint8_t c = (uint8_t)v;

	b_add(b, &c, 1);
}

static void
b_u32(struct bytes *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
	    (uint8_t)(v >> 8), (uint8_t)v };

	b_add(b, x, 4);
}

static void
b_field(struct bytes *b, const void *p, size_t n)
{
	b_u32(b, (uint32_t)n);
	b_add(b, p, n);
}

static void
b_str(struct bytes *b, const char *s)
{
	b_field(b, s, strlen(s));
}

/* n frames of nkeys float32 values; frame k, key j: k * 1000 + j. */
static void
b_frames(struct bytes *b, size_t nkeys, size_t n)
{
	for (size_t k = 0; k < n; k++)
		for (size_t j = 0; j < nkeys; j++) {
			float f = (float)(k * 1000 + j);
			b_add(b, &f, 4);
		}
}

/* n distinct names (relayclient.h), allocated. */
static char *
many_keys(size_t n)
{
	char *k = rc_key_names(n);

	cr_assert_not_null(k);
	return k;
}

/* ---- recording the events ---- */

struct rec {
	char *log;
	size_t len, cap;
	int stop_on;			/* event type to stop at, or -1 */
	bool stopped;
	const uint8_t *in;		/* the input, to spot copies */
	size_t inlen;
	size_t copies;			/* uuid/keys/frame runs not in `in` */
	size_t frame_events;
};

static void rec_add(struct rec *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
rec_add(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->cap - r->len < 256) {
		r->cap = r->cap * 2 + 4096;
		r->log = realloc(r->log, r->cap);
		cr_assert_not_null(r->log);
	}
	va_start(ap, fmt);
	n = vsnprintf(r->log + r->len, r->cap - r->len, fmt, ap);
	va_end(ap);
	cr_assert(n >= 0 && (size_t)n < r->cap - r->len);
	r->len += (size_t)n;
}

static uint64_t
fnv(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static bool
inside(const struct rec *r, const char *p)
{
	return (const uint8_t *)p >= r->in &&
	    (const uint8_t *)p < r->in + r->inlen;
}

static int
record(void *arg, const struct relay_event *ev)
{
	struct rec *r = arg;

	switch (ev->type) {
	case RELAY_EV_ROLE:
		rec_add(r, "role %02x\n", ev->role);
		break;
	case RELAY_EV_UUID:
		rec_add(r, "uuid %zu %016llx\n", ev->len,
		    (unsigned long long)fnv(ev->data, ev->len));
		r->copies += !inside(r, ev->data);
		break;
	case RELAY_EV_KEYS:
		rec_add(r, "keys %zu bytes %zu names %016llx\n", ev->len,
		    ev->count, (unsigned long long)fnv(ev->data, ev->len));
		r->copies += !inside(r, ev->data);
		break;
	case RELAY_EV_ACCEPT:
		rec_add(r, "accept %02x\n", ev->role);
		break;
	case RELAY_EV_FRAMES: {
		size_t fs = ev->len / ev->count;
		cr_assert_eq(ev->len % ev->count, 0);
		for (size_t i = 0; i < ev->count; i++)
			rec_add(r, "frame %zu %016llx\n", fs,
			    (unsigned long long)fnv(ev->data + i * fs, fs));
		r->copies += !inside(r, ev->data);
		r->frame_events++;
		break;
	}
	case RELAY_EV_ERROR:
		rec_add(r, "error %s%s%s\n", ev->error,
		    ev->limit ? " [limit]" : "", ev->nomem ? " [nomem]" : "");
		break;
	}
	if ((int)ev->type == r->stop_on) {
		r->stopped = true;
		return 1;
	}
	return 0;
}

/* ---- feeding ---- */

static uint32_t
lcg(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return *s >> 8;
}

/* Cut lengths: mostly small, sometimes large, from `seed`. */
static size_t
cut(uint32_t *s, size_t left)
{
	static const size_t scale[] = { 1, 3, 7, 64, 1000, 70000 };
	size_t n = 1 + lcg(s) % scale[lcg(s) % 6];

	return n < left ? n : left;
}

struct run {
	char *log;
	size_t consumed;
	bool stopped;
	size_t copies, frame_events;
	uint64_t ignored;
	bool body_left;			/* an assembled body is still held */
};

/*
 * Feeds `in` with the given split (0 = whole, 1 = one byte at a time,
 * else a seed for random cuts), as the glue does: stop at the first
 * piece not consumed whole or once the callback said stop.
 */
static struct run
feed(const struct relay_limits *o, const struct bytes *in, uint32_t split,
    int stop_on)
{
	struct relay_parser p;
	struct rec r = { .stop_on = stop_on, .in = in->p, .inlen = in->len };
	struct run out = { 0 };
	uint32_t seed = split;
	size_t off = 0;

	relay_parser_init(&p, o);
	rec_add(&r, "%s", "");
	while (off < in->len && !r.stopped) {
		size_t n = split == 0 ? in->len : split == 1 ? 1 :
		    cut(&seed, in->len - off);
		size_t used = relay_parser_feed(&p, (const char *)in->p + off,
		    n, record, &r);
		cr_assert_leq(used, n);
		off += used;
		if (used < n || p.state == RELAY_PS_DEAD)
			break;
	}
	out.log = r.log;
	out.consumed = off;
	out.stopped = r.stopped;
	out.copies = r.copies;
	out.frame_events = r.frame_events;
	out.ignored = p.ignored;
	out.body_left = p.body != NULL;
	relay_parser_free(&p);
	return out;
}

/* Every split gives the run of the whole feed; returns that run. */
static struct run
feed_every_way(const struct relay_limits *o, const struct bytes *in,
    int stop_on)
{
	struct run whole = feed(o, in, 0, stop_on);

	for (uint32_t split = 1; split < SEEDS + 2; split++) {
		struct run r = feed(o, in, split, stop_on);
		cr_assert_str_eq(r.log, whole.log, "split %u: events differ",
		    split);
		cr_assert_eq(r.consumed, whole.consumed,
		    "split %u: consumed %zu, whole feed %zu", split,
		    r.consumed, whole.consumed);
		cr_assert_eq(r.ignored, whole.ignored);
		cr_assert_not(r.body_left);
		free(r.log);
	}
	return whole;
}

static struct relay_limits
opts(void)
{
	struct relay_limits o;

	relay_limits_default(&o);
	return o;
}

static size_t
count_lines(const char *log, const char *prefix)
{
	size_t n = 0, pl = strlen(prefix);

	for (const char *p = log; *p; p = strchr(p, '\n') + 1) {
		if (strncmp(p, prefix, pl) == 0)
			n++;
		if (strchr(p, '\n') == NULL)
			break;
	}
	return n;
}

/* ---- whole sequences ---- */

Test(device, producer_sequence_any_split, .timeout = 60)
{
	struct relay_limits o = opts();
	struct bytes in = { 0 };
	const char *keys = "eyeBlinkLeft,eyeBlinkRight,jawOpen";
	char expect[256];

	b_byte(&in, RELAY_PRODUCER);
	b_str(&in, "phone-1");
	b_str(&in, keys);
	b_frames(&in, 3, 50);
	struct run r = feed_every_way(&o, &in, -1);
	cr_assert_eq(r.consumed, in.len);
	snprintf(expect, sizeof(expect), "role 0a\nuuid 7 %016llx\n"
	    "keys %zu bytes 3 names %016llx\n",
	    (unsigned long long)fnv("phone-1", 7), strlen(keys),
	    (unsigned long long)fnv(keys, strlen(keys)));
	cr_assert(strncmp(r.log, expect, strlen(expect)) == 0, "log:\n%s",
	    r.log);
	cr_assert_eq(count_lines(r.log, "frame 12 "), 50);
	cr_assert_eq(count_lines(r.log, "error"), 0);
	/* All at once: one run of frames, straight from the input. */
	cr_assert_eq(r.frame_events, 1);
	cr_assert_eq(r.copies, 0);
	free(r.log);
	free(in.p);
}

Test(device, consumer_sequence_any_split, .timeout = 60)
{
	struct relay_limits o = opts();
	struct bytes in = { 0 };
	uint8_t extra[100];

	b_byte(&in, RELAY_CONSUMER);
	b_str(&in, "phone-1");
	b_byte(&in, RELAY_ACCEPT);
	/* After its accept byte a consumer has nothing to say: ignored. */
	memset(extra, 0x5a, sizeof(extra));
	b_add(&in, extra, sizeof(extra));
	struct run r = feed_every_way(&o, &in, -1);
	char expect[128];
	snprintf(expect, sizeof(expect), "role 0b\nuuid 7 %016llx\n"
	    "accept 00\n", (unsigned long long)fnv("phone-1", 7));
	cr_assert_str_eq(r.log, expect);
	cr_assert_eq(r.consumed, in.len);
	cr_assert_eq(r.ignored, sizeof(extra));
	free(r.log);
	free(in.p);
}

Test(device, consumer_answer_byte_is_reported, .timeout = 30)
{
	struct relay_limits o = opts();
	struct bytes in = { 0 };

	b_byte(&in, RELAY_CONSUMER);
	b_str(&in, "u");
	b_byte(&in, 0x07);
	struct run r = feed_every_way(&o, &in, -1);
	cr_assert_not_null(strstr(r.log, "accept 07\n"));
	free(r.log);
	free(in.p);
}

Test(device, frames_straddle_chunks, .timeout = 60)
{
	struct relay_limits o = opts();
	struct bytes in = { 0 };
	char *keys = many_keys(16384);	/* the largest frame: 64 KiB */

	b_byte(&in, RELAY_PRODUCER);
	b_str(&in, "big");
	b_str(&in, keys);
	b_frames(&in, 16384, 5);
	struct run r = feed_every_way(&o, &in, -1);
	cr_assert_eq(r.consumed, in.len);
	cr_assert_eq(count_lines(r.log, "frame 65536 "), 5);
	free(r.log);
	/* A frame cut in two is assembled once; whole ones are not copied. */
	size_t head = 1 + 4 + 3 + 4 + strlen(keys);
	struct bytes a = { .p = in.p, .len = head + 65536 + 100 };
	struct relay_parser p;
	struct rec rc = { .stop_on = -1, .in = in.p, .inlen = in.len };
	relay_parser_init(&p, &o);
	rec_add(&rc, "%s", "");
	cr_assert_eq(relay_parser_feed(&p, (const char *)a.p, a.len, record,
	    &rc), a.len);
	cr_assert_eq(rc.copies, 0, "whole frames were copied");
	cr_assert_eq(p.scratch_have, 100);
	cr_assert_eq(relay_parser_feed(&p, (const char *)in.p + a.len,
	    in.len - a.len, record, &rc), in.len - a.len);
	cr_assert_eq(rc.copies, 1, "the split frame: one assembled copy");
	cr_assert_eq(count_lines(rc.log, "frame 65536 "), 5);
	relay_parser_free(&p);
	free(rc.log);
	free(keys);
	free(in.p);
}

Test(device, stop_returns_the_position, .timeout = 30)
{
	struct relay_limits o = opts();
	struct bytes in = { 0 };

	b_byte(&in, RELAY_PRODUCER);
	b_str(&in, "dev");
	b_str(&in, "a,b");
	b_frames(&in, 2, 3);
	struct run r = feed_every_way(&o, &in, RELAY_EV_UUID);
	cr_assert(r.stopped);
	cr_assert_eq(r.consumed, 1 + 4 + 3);
	free(r.log);
	r = feed_every_way(&o, &in, RELAY_EV_KEYS);
	cr_assert_eq(r.consumed, 1 + 4 + 3 + 4 + 3);
	free(r.log);
	r = feed(&o, &in, 0, RELAY_EV_FRAMES);
	cr_assert_eq(r.consumed, in.len);
	free(r.log);
	free(in.p);
}

/* ---- limits ---- */

struct bad {
	const char *name;
	int role;
	/* the uuid field, or the raw length when `raw` */
	const char *uuid;
	size_t ulen;
	bool uuid_raw;
	uint32_t raw_ulen;
	const char *keys;		/* producer; NULL = not sent */
	size_t klen;
	bool keys_raw;
	uint32_t raw_klen;
	const char *error;		/* expected reason (prefix) */
};

static void
build_bad(struct bytes *in, const struct bad *c)
{
	b_byte(in, c->role);
	if (c->uuid_raw) {
		b_u32(in, c->raw_ulen);
		b_add(in, "xxxxxxxx", 8);	/* what follows the claim */
		return;
	}
	b_field(in, c->uuid, c->ulen);
	if (c->role != RELAY_PRODUCER) {
		b_byte(in, RELAY_ACCEPT);		/* the accept byte */
		return;
	}
	if (c->keys_raw) {
		b_u32(in, c->raw_klen);
		b_add(in, "yyyyyyyy", 8);
		return;
	}
	b_field(in, c->keys, c->klen);
	b_frames(in, 2, 2);
}

/* The roles, short enough for the table below. */
#define PROD RELAY_PRODUCER
#define CONS RELAY_CONSUMER

Test(device, every_limit_is_a_limit_error, .timeout = 120)
{
	char u256[256], *k16385 = many_keys(16385);
	struct relay_limits o = opts();
	/* 16,384 names, the last one the first's: far apart. */
	char *far = many_keys(16384);
	char *comma = strrchr(far, ',');
	strcpy(comma + 1, "0");

	memset(u256, 'u', sizeof(u256));
	struct bad cases[] = {
		{ "uuid length 0", PROD, "", 0, true, 0, NULL, 0, false, 0,
		    "uuid length 0 out of range 1..255" },
		{ "uuid of 256 bytes", PROD, u256, 256, false, 0, "a", 1,
		    false, 0, "uuid length 256 out of range" },
		{ "uuid claiming 4 GB", PROD, NULL, 0, true, 0xffffffffu,
		    NULL, 0, false, 0, "uuid length 4294967295 out of range" },
		{ "consumer uuid length 0", CONS, NULL, 0, true, 0, NULL, 0,
		    false, 0, "uuid length 0 out of range" },
		{ "consumer uuid claiming 4 GB", CONS, NULL, 0, true,
		    0xffffffffu, NULL, 0, false, 0, "uuid length 4294967295" },
		{ "uuid not UTF-8", PROD, "dev\xff", 4, false, 0, "a", 1,
		    false, 0, "uuid is not UTF-8" },
		{ "consumer uuid not UTF-8", CONS, "\xc0\xaf", 2, false, 0,
		    NULL, 0, false, 0, "uuid is not UTF-8" },
		{ "uuid with a NUL", PROD, "a\0b", 3, false, 0, "a", 1, false,
		    0, "uuid has a control character (0x00)" },
		{ "uuid with a newline", CONS, "a\nb", 3, false, 0, NULL, 0,
		    false, 0, "uuid has a control character (0x0a)" },
		{ "keys length 0", PROD, "d", 1, false, 0, NULL, 0, true, 0,
		    "keys length 0 out of range 1..65536" },
		{ "keys of 65537 bytes", PROD, "d", 1, false, 0, NULL, 0,
		    true, 65537, "keys length 65537 out of range" },
		{ "keys claiming 4 GB", PROD, "d", 1, false, 0, NULL, 0, true,
		    0xffffffffu, "keys length 4294967295 out of range" },
		{ "empty first key", PROD, "d", 1, false, 0, ",a", 2, false,
		    0, "empty key name" },
		{ "empty middle key", PROD, "d", 1, false, 0, "a,,b", 4, false,
		    0, "empty key name" },
		{ "empty last key", PROD, "d", 1, false, 0, "a,", 2, false, 0,
		    "empty key name" },
		{ "only a comma", PROD, "d", 1, false, 0, ",", 1, false, 0,
		    "empty key name" },
		{ "16385 keys", PROD, "d", 1, false, 0, k16385,
		    strlen(k16385), false, 0, "16385 keys, more than 16384" },
		{ "key with a NUL", PROD, "d", 1, false, 0, "a\0b", 3, false,
		    0, "key 1 has a control character (0x00)" },
		{ "key that is a NUL", PROD, "d", 1, false, 0, "a,\0", 3,
		    false, 0, "key 2 has a control character (0x00)" },
		{ "key with a tab", PROD, "d", 1, false, 0, "x,y,y\tz", 7,
		    false, 0, "key 3 has a control character (0x09)" },
		{ "key with an escape", PROD, "d", 1, false, 0, "\x1b[31m", 5,
		    false, 0, "key 1 has a control character (0x1b)" },
		{ "key with a DEL", PROD, "d", 1, false, 0, "a,b\x7f", 4,
		    false, 0, "key 2 has a control character (0x7f)" },
		{ "the same name twice", PROD, "d", 1, false, 0, "a,a", 3,
		    false, 0, "keys 1 and 2 have the same name" },
		{ "a name again later", PROD, "d", 1, false, 0, "x,y,z,y", 7,
		    false, 0, "keys 2 and 4 have the same name" },
		{ "a UTF-8 name again", PROD, "d", 1, false, 0,
		    "\xc3\xa9,e,\xc3\xa9", 7, false, 0,
		    "keys 1 and 3 have the same name" },
		{ "16384 names, the first again last", PROD, "d", 1, false, 0,
		    far, strlen(far), false, 0,
		    "keys 1 and 16384 have the same name" },
		{ "keys with a surrogate", PROD, "d", 1, false, 0,
		    "a,\xed\xa0\x80", 5, false, 0, "keys are not UTF-8" },
		{ "keys cut mid-character", PROD, "d", 1, false, 0,
		    "a,\xe2\x82", 4, false, 0, "keys are not UTF-8" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bytes in = { 0 };
		build_bad(&in, &cases[i]);
		struct run r = feed_every_way(&o, &in, -1);
		const char *err = strstr(r.log, "error ");
		cr_assert_not_null(err, "%s: no error in\n%s", cases[i].name,
		    r.log);
		cr_assert(strncmp(err + 6, cases[i].error,
		    strlen(cases[i].error)) == 0, "%s: got %s", cases[i].name,
		    err);
		cr_assert_not_null(strstr(err, "[limit]"), "%s: not a limit",
		    cases[i].name);
		cr_assert_eq(count_lines(r.log, "frame"), 0);
		cr_assert_lt(r.consumed, in.len, "%s: the rest was eaten",
		    cases[i].name);
		if (cases[i].uuid_raw || cases[i].keys_raw)
			/* Refused on the length alone: its claim unread. */
			cr_assert_eq(r.consumed, in.len - 8, "%s",
			    cases[i].name);
		free(r.log);
		free(in.p);
	}
	free(k16385);
	free(far);
}

Test(device, limits_are_inclusive_and_configurable, .timeout = 120)
{
	struct relay_limits o = opts();
	char u255[255], *k16384 = many_keys(16384);
	char *k65536 = malloc(65536);

	cr_assert_not_null(k65536);
	memset(u255, 'u', sizeof(u255));
	memset(k65536, 'k', 65536);
	struct { const char *u; size_t ul; const char *k; size_t kl;
	    size_t names; } ok[] = {
		{ u255, 255, "a", 1, 1 },
		{ "d", 1, k16384, strlen(k16384), 16384 },
		{ "d", 1, k65536, 65536, 1 },
		{ "\xe2\x82\xac", 3, "\xc3\xa9t\xc3\xa9,\xf0\x9f\x98\x80", 10,
		    2 },
		/* Alike, never the same: prefixes, case, accents, spaces. */
		{ "d", 1, "a,ab,abc,b,ba,A,e,\xc3\xa9, a,a ", 26, 10 },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct bytes in = { 0 };
		char want[64];
		b_byte(&in, RELAY_PRODUCER);
		b_field(&in, ok[i].u, ok[i].ul);
		b_field(&in, ok[i].k, ok[i].kl);
		b_frames(&in, ok[i].names, 1);
		struct run r = i == 0 || i >= 3 ? feed_every_way(&o, &in, -1) :
		    feed(&o, &in, 0, -1);
		snprintf(want, sizeof(want), "keys %zu bytes %zu names ",
		    ok[i].kl, ok[i].names);
		cr_assert_not_null(strstr(r.log, want), "case %zu:\n%s", i,
		    r.log);
		cr_assert_eq(count_lines(r.log, "frame"), 1);
		cr_assert_eq(r.consumed, in.len);
		free(r.log);
		free(in.p);
	}
	/* Lowered limits apply at their edges. */
	o.max_uuid = 8;
	o.max_keys = 2;
	o.max_keys_bytes = 5;
	struct { const char *u, *k; bool good; const char *err; } edge[] = {
		{ "12345678", "ab,cd", true, NULL },
		{ "123456789", "a", false, "uuid length 9 out of range 1..8" },
		{ "u", "a,b,c", false, "3 keys, more than 2" },
		{ "u", "ab,cde", false, "keys length 6 out of range 1..5" },
	};
	for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) {
		struct bytes in = { 0 };
		b_byte(&in, RELAY_PRODUCER);
		b_str(&in, edge[i].u);
		b_str(&in, edge[i].k);
		struct run r = feed_every_way(&o, &in, -1);
		if (edge[i].good)
			cr_assert_null(strstr(r.log, "error"), "%s", r.log);
		else
			cr_assert_not_null(strstr(r.log, edge[i].err), "%s",
			    r.log);
		free(r.log);
		free(in.p);
	}
	free(k16384);
	free(k65536);
}

Test(device, unknown_first_byte, .timeout = 30)
{
	struct relay_limits o = opts();
	static const int bytes[] = { 0x00, 0x01, 0x0c, 0x41, 0xff };

	for (size_t i = 0; i < sizeof(bytes) / sizeof(bytes[0]); i++) {
		struct bytes in = { 0 };
		char want[64];
		b_byte(&in, bytes[i]);
		b_str(&in, "dev");
		struct run r = feed_every_way(&o, &in, -1);
		snprintf(want, sizeof(want), "error unknown first byte "
		    "0x%02x\n", bytes[i]);
		cr_assert_str_eq(r.log, want);
		cr_assert_eq(r.consumed, 1);
		free(r.log);
		free(in.p);
	}
}

Test(device, dead_after_an_error, .timeout = 30)
{
	struct relay_limits o = opts();
	struct relay_parser p;
	struct rec r = { .stop_on = -1 };

	relay_parser_init(&p, &o);
	rec_add(&r, "%s", "");
	cr_assert_eq(relay_parser_feed(&p, "\x0a\x00\x00\x00\x00", 5, record,
	    &r), 5);
	cr_assert_eq(p.state, RELAY_PS_DEAD);
	size_t before = r.len;
	cr_assert_eq(relay_parser_feed(&p, "\x0a\x00\x00\x00\x01u", 6,
	    record, &r), 0);
	cr_assert_eq(r.len, before, "events after the error");
	relay_parser_free(&p);
	free(r.log);
}

Test(device, utf8_validation, .timeout = 10)
{
	static const struct { const char *s; size_t n; bool ok; } t[] = {
		{ "plain ascii", 11, true },
		{ "", 0, true },
		{ "\xc3\xa9", 2, true },			/* é */
		{ "\xe2\x82\xac", 3, true },			/* € */
		{ "\xf0\x9f\x98\x80", 4, true },		/* U+1F600 */
		{ "\xf4\x8f\xbf\xbf", 4, true },		/* U+10FFFF */
		{ "\x00", 1, true },
		{ "\x80", 1, false },				/* lone tail */
		{ "\xc0\xaf", 2, false },			/* overlong */
		{ "\xe0\x80\xaf", 3, false },			/* overlong */
		{ "\xed\xa0\x80", 3, false },			/* surrogate */
		{ "\xf4\x90\x80\x80", 4, false },		/* > U+10FFFF */
		{ "\xe2\x82", 2, false },			/* cut short */
		{ "\xc3(", 2, false },				/* bad tail */
		{ "\xff", 1, false },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		cr_assert_eq(relay_utf8_valid(t[i].s, t[i].n), t[i].ok,
		    "case %zu", i);
}

/* The checks a caller without a parser uses say what the parser says. */
Test(device, checks_without_the_parser, .timeout = 10)
{
	static const struct {
		bool keys;
		const char *s;
		size_t n;
		enum relay_verdict v;
		size_t count;
		const char *why;
	} t[] = {
		{ false, "phone-1", 7, RELAY_VALID, 0, "" },
		{ false, "", 0, RELAY_BROKEN, 0,
		    "uuid length 0 out of range 1..255" },
		{ false, "a\nb", 3, RELAY_BROKEN, 0,
		    "uuid has a control character (0x0a)" },
		{ false, "\xc0\xaf", 2, RELAY_BROKEN, 0, "uuid is not UTF-8" },
		{ true, "x,y", 3, RELAY_VALID, 2, "" },
		{ true, "a,\tb", 4, RELAY_BROKEN, 0,
		    "key 2 has a control character (0x09)" },
		{ true, "x,y,x", 5, RELAY_BROKEN, 0,
		    "keys 1 and 3 have the same name" },
		{ true, "a,,b", 4, RELAY_BROKEN, 0, "empty key name" },
		{ true, "a,b,c,d", 7, RELAY_BROKEN, 0, "4 keys, more than 3" },
	};
	struct relay_limits l;

	relay_limits_default(&l);
	l.max_keys = 3;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char why[96] = "";
		size_t count = 99;
		enum relay_verdict v = t[i].keys ?
		    relay_check_keys(&l, t[i].s, t[i].n, &count, why,
		    sizeof(why)) :
		    relay_check_uuid(&l, t[i].s, t[i].n, why, sizeof(why));

		cr_assert_eq(v, t[i].v, "case %zu", i);
		cr_assert_str_eq(why, t[i].why, "case %zu", i);
		if (t[i].keys)
			cr_assert_eq(count, t[i].count, "case %zu", i);
	}
}
