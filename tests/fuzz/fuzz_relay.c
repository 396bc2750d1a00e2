/*
 * libFuzzer target: the relay protocol parser (relay_proto.h), through
 * its public API only; linked with relay_proto.o alone (no libev, no
 * OpenSSL, no other Ferry module).
 *
 * Input: a 6-byte header, the session (the bytes a client sends), then
 * the chunk sizes.
 *   h[0]        max_uuid = 1 + h[0] % RELAY_MAX_UUID (255)
 *   h[1..2]     max_keys_bytes = 1 + BE16 % RELAY_MAX_KEYS_BYTES (65536)
 *   h[3..4]     max_keys = 1 + BE16 % RELAY_MAX_KEYS (16384)
 *   h[5]        low 6 bits: how many chunk sizes end the input (each byte
 *               + 1); top 2 bits: the event (1..3) at which the third run
 *               stops the feed, 0 = never
 * The session is fed three times: whole, in the chunks the input gives
 * (cycled; every chunk in a buffer of its own size, so ASan sees any read
 * past it), and in those chunks with the callback stopping the feed.  The
 * first two must report the same events (runs of frames may be split
 * differently).  Each run checks the contract as it goes:
 *   - consumed <= fed; less only after a stop or an error;
 *   - events in protocol order; nothing after RELAY_EV_ERROR or a stop, and a
 *     dead parser consumes nothing;
 *   - uuid and keys are the bytes the client sent, within their limits,
 *     UTF-8, no control character in the uuid, no empty key name, no
 *     control character in a key name, no name twice, the key count
 *     right; and keys refused for a limit break one of those (checked
 *     here another way: a hash set, not the parser's sort);
 *   - frames only whole, len = count * 4 * keys, the very bytes sent, in
 *     order, none lost: at the end every whole frame fed was reported.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"fuzz_relay: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	abort(); } } while (0)

#define HEADER 6
#define MAX_RECS 16

/* One event, normalized: runs of frames are merged. */
struct rec {
	enum relay_ev type;
	int role;
	size_t count;
	bool limit, nomem;
	char error[96];
	size_t len;
	uint8_t *data;
};

struct run {
	const struct relay_limits *o;
	const uint8_t *session;
	size_t slen;
	size_t fed;			/* session bytes handed to the parser */
	unsigned events;		/* raw events so far */
	unsigned stop_at;		/* 1-based event that stops; 0 = none */
	bool stopped, dead;
	int expect;			/* next event allowed (enum below) */
	size_t ulen, klen, nkeys;
	size_t frames_at;		/* session offset where frames start */
	size_t frame_bytes;		/* reported so far */
	struct rec recs[MAX_RECS];
	size_t nrecs;
};

enum { X_ROLE, X_UUID, X_KEYS, X_ACCEPT, X_FRAMES, X_NOTHING };

static bool
utf8_ok(const uint8_t *s, size_t len)
{
	return relay_utf8_valid((const char *)s, len);
}

static void
record(struct run *r, const struct relay_event *ev)
{
	struct rec *last = r->nrecs ? &r->recs[r->nrecs - 1] : NULL;
	struct rec *c;

	if (ev->type == RELAY_EV_FRAMES && last != NULL &&
	    last->type == RELAY_EV_FRAMES) {
		last->data = realloc(last->data, last->len + ev->len);
		CHECK(last->data != NULL);
		memcpy(last->data + last->len, ev->data, ev->len);
		last->len += ev->len;
		last->count += ev->count;
		return;
	}
	CHECK(r->nrecs < MAX_RECS);
	c = &r->recs[r->nrecs++];
	memset(c, 0, sizeof(*c));
	c->type = ev->type;
	c->role = ev->role;
	c->count = ev->count;
	c->limit = ev->limit;
	c->nomem = ev->nomem;
	if (ev->error != NULL)
		snprintf(c->error, sizeof(c->error), "%s", ev->error);
	if (ev->len > 0 && ev->data != NULL) {
		c->data = malloc(ev->len);
		CHECK(c->data != NULL);
		memcpy(c->data, ev->data, ev->len);
		c->len = ev->len;
	}
}

/* Whether two of the n names of k are the same (a chained hash set). */
static bool
has_duplicate(const char *k, size_t len, size_t n)
{
	size_t nb = 2 * n + 1, *head = malloc(nb * sizeof(*head));
	size_t *next = malloc(n * sizeof(*next)), *off = malloc(n *
	    sizeof(*off)), *nlen = malloc(n * sizeof(*nlen));
	size_t i = 0, start = 0;
	bool dup = false;

	CHECK(head != NULL && next != NULL && off != NULL && nlen != NULL);
	for (size_t b = 0; b < nb; b++)
		head[b] = SIZE_MAX;
	for (size_t b = 0; b <= len && !dup; b++) {
		if (b < len && k[b] != RELAY_KEY_SEP)
			continue;
		uint64_t h = 1469598103934665603ull;
		for (size_t j = start; j < b; j++)
			h = (h ^ (uint8_t)k[j]) * 1099511628211ull;
		CHECK(i < n);
		off[i] = start;
		nlen[i] = b - start;
		for (size_t e = head[h % nb]; e != SIZE_MAX && !dup; e = next[e])
			dup = nlen[e] == nlen[i] &&
			    memcmp(k + off[e], k + off[i], nlen[i]) == 0;
		next[i] = head[h % nb];
		head[h % nb] = i++;
		start = b + 1;
	}
	free(head);
	free(next);
	free(off);
	free(nlen);
	return dup;
}

/*
 * Whether a key list keeps every limit; *count set to its names.  The
 * same rules as the parser's, written apart from it.
 */
static bool
keys_ok(const struct relay_limits *o, const char *k, size_t len,
    size_t *count)
{
	size_t n = 1, cur = 0;

	*count = 0;
	if (len < 1 || len > o->max_keys_bytes ||
	    !utf8_ok((const uint8_t *)k, len))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (k[i] == RELAY_KEY_SEP) {
			if (cur == 0)
				return false;
			n++;
			cur = 0;
		} else if ((uint8_t)k[i] < 0x20 || k[i] == 0x7f) {
			return false;
		} else {
			cur++;
		}
	}
	*count = n;
	return cur > 0 && n <= o->max_keys && !has_duplicate(k, len, n);
}

static void
check_keys(const struct run *r, const struct relay_event *ev)
{
	size_t n;

	CHECK(keys_ok(r->o, ev->data, ev->len, &n));
	CHECK(ev->count == n);
}

/*
 * A limit broken at the keys step: the keys (whole, if their length was
 * in range) break a rule.
 */
static void
check_refused_keys(const struct run *r)
{
	const uint8_t *s = r->session;
	size_t at = 5 + r->ulen, klen, n;

	CHECK(r->fed >= at + 4);
	klen = relay_len_get(s + at);
	if (klen < 1 || klen > r->o->max_keys_bytes)
		return;			/* refused on the length alone */
	CHECK(r->fed >= at + 4 + klen);
	CHECK(!keys_ok(r->o, (const char *)s + at + 4, klen, &n));
}

static int
on_event(void *arg, const struct relay_event *ev)
{
	struct run *r = arg;
	const uint8_t *s = r->session;

	CHECK(!r->stopped);
	CHECK(!r->dead);
	r->events++;
	switch (ev->type) {
	case RELAY_EV_ROLE:
		CHECK(r->expect == X_ROLE);
		CHECK(ev->role == RELAY_PRODUCER || ev->role == RELAY_CONSUMER);
		CHECK(r->fed >= 1 && s[0] == ev->role);
		r->expect = X_UUID;
		break;
	case RELAY_EV_UUID:
		CHECK(r->expect == X_UUID);
		CHECK(ev->len >= 1 && ev->len <= r->o->max_uuid);
		CHECK(r->slen >= 5 + ev->len && relay_len_get(s + 1) == ev->len);
		CHECK(memcmp(ev->data, s + 5, ev->len) == 0);
		CHECK(utf8_ok((const uint8_t *)ev->data, ev->len));
		for (size_t i = 0; i < ev->len; i++)
			CHECK((uint8_t)ev->data[i] >= 0x20 &&
			    ev->data[i] != 0x7f);
		r->ulen = ev->len;
		r->expect = s[0] == RELAY_PRODUCER ? X_KEYS : X_ACCEPT;
		break;
	case RELAY_EV_KEYS:
		CHECK(r->expect == X_KEYS);
		check_keys(r, ev);
		CHECK(r->slen >= 9 + r->ulen + ev->len &&
		    relay_len_get(s + 5 + r->ulen) == ev->len);
		CHECK(memcmp(ev->data, s + 9 + r->ulen, ev->len) == 0);
		r->klen = ev->len;
		r->nkeys = ev->count;
		r->frames_at = 9 + r->ulen + r->klen;
		r->expect = X_FRAMES;
		break;
	case RELAY_EV_ACCEPT:
		CHECK(r->expect == X_ACCEPT);
		CHECK(r->fed >= 6 + r->ulen && ev->role == s[5 + r->ulen]);
		r->expect = X_NOTHING;
		break;
	case RELAY_EV_FRAMES: {
		size_t fs = relay_frame_size(r->nkeys);
		CHECK(r->expect == X_FRAMES);
		CHECK(ev->count >= 1 && ev->len == ev->count * fs);
		/* Whole frames of bytes already fed, the very bytes, in order. */
		CHECK(r->frames_at + r->frame_bytes + ev->len <= r->fed);
		CHECK(memcmp(ev->data, s + r->frames_at + r->frame_bytes,
		    ev->len) == 0);
		r->frame_bytes += ev->len;
		break;
	}
	case RELAY_EV_ERROR:
		CHECK(r->expect != X_NOTHING);
		CHECK(ev->error != NULL && ev->error[0] != '\0');
		CHECK(!(ev->limit && ev->nomem));
		if (r->expect == X_KEYS && ev->limit)
			check_refused_keys(r);
		r->dead = true;
		break;
	default:
		CHECK(!"unknown event type");
	}
	record(r, ev);
	if (ev->type != RELAY_EV_ERROR && r->stop_at != 0 &&
	    r->events == r->stop_at) {
		r->stopped = true;
		return 1;
	}
	return 0;
}

/* Feeds the session in chunks (sizes NULL: whole). */
static void
run(struct run *r, const struct relay_limits *o, const uint8_t *s, size_t n,
    const uint8_t *sizes, size_t nsizes, unsigned stop_at)
{
	struct relay_parser p;
	size_t off = 0, k = 0;

	memset(r, 0, sizeof(*r));
	r->o = o;
	r->session = s;
	r->slen = n;
	r->stop_at = stop_at;
	relay_parser_init(&p, o);
	while (off < n) {
		size_t len = nsizes ? (size_t)sizes[k++ % nsizes] + 1 : n;
		char *chunk;
		size_t used;

		if (len > n - off)
			len = n - off;
		/* Exactly the chunk: ASan catches a read past it. */
		chunk = malloc(len);
		CHECK(chunk != NULL);
		memcpy(chunk, s + off, len);
		r->fed = off + len;
		used = relay_parser_feed(&p, chunk, len, on_event, r);
		free(chunk);
		CHECK(used <= len);
		if (used < len)
			CHECK(r->stopped || r->dead);
		off += used;
		if (r->stopped)
			break;
		if (r->dead) {
			/* A dead parser takes nothing and says nothing. */
			char b = RELAY_PRODUCER;
			CHECK(relay_parser_feed(&p, &b, 1, on_event, r) == 0);
			break;
		}
		CHECK(used == len);
	}
	if (!r->stopped && !r->dead && r->expect == X_FRAMES) {
		/* None lost: every whole frame fed was reported. */
		size_t fs = relay_frame_size(r->nkeys), avail = n - r->frames_at;
		CHECK(r->frame_bytes == avail / fs * fs);
	}
	relay_parser_free(&p);
}

/* FUZZ_VERBOSE=1 when replaying an input: what the parser reported. */
static void
dump(const struct run *r)
{
	static const char *const names[] = { "role", "uuid", "keys", "accept",
	    "frames", "error" };

	for (size_t i = 0; i < r->nrecs; i++) {
		const struct rec *c = &r->recs[i];
		fprintf(stderr, "  %s role=0x%02x len=%zu count=%zu%s%s %s\n",
		    names[c->type], c->role, c->len, c->count,
		    c->limit ? " limit" : "", c->nomem ? " nomem" : "",
		    c->error);
	}
}

static void
free_run(struct run *r)
{
	for (size_t i = 0; i < r->nrecs; i++)
		free(r->recs[i].data);
}

static bool
same(const struct run *a, const struct run *b)
{
	if (a->nrecs != b->nrecs)
		return false;
	for (size_t i = 0; i < a->nrecs; i++) {
		const struct rec *x = &a->recs[i], *y = &b->recs[i];
		if (x->type != y->type || x->role != y->role ||
		    x->count != y->count || x->limit != y->limit ||
		    x->nomem != y->nomem || strcmp(x->error, y->error) != 0 ||
		    x->len != y->len ||
		    (x->len > 0 && memcmp(x->data, y->data, x->len) != 0))
			return false;
	}
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_limits o;
	struct run whole, cut, stop;
	size_t nsizes, slen;
	const uint8_t *sizes;

	if (size < HEADER)
		return 0;
	relay_limits_default(&o);
	o.max_uuid = 1 + data[0] % RELAY_MAX_UUID;
	o.max_keys_bytes = 1 + ((size_t)data[1] << 8 | data[2]) %
	    RELAY_MAX_KEYS_BYTES;
	o.max_keys = 1 + ((size_t)data[3] << 8 | data[4]) % RELAY_MAX_KEYS;
	nsizes = data[5] & 0x3f;
	if (nsizes > size - HEADER)
		nsizes = size - HEADER;
	slen = size - HEADER - nsizes;
	sizes = data + HEADER + slen;

	run(&whole, &o, data + HEADER, slen, NULL, 0, 0);
	if (getenv("FUZZ_VERBOSE") != NULL)
		dump(&whole);
	run(&cut, &o, data + HEADER, slen, sizes, nsizes, 0);
	CHECK(same(&whole, &cut));
	/* The callback's stop must end the feed at once. */
	run(&stop, &o, data + HEADER, slen, sizes, nsizes, data[5] >> 6);
	free_run(&whole);
	free_run(&cut);
	free_run(&stop);
	return 0;
}
