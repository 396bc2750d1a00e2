/* cluster_proto: see cluster_proto.h. */
#include "cluster_proto.h"

#include <string.h>

#include "relay_proto.h"

#define MAGIC0 'F'
#define MAGIC1 'c'

/* ---- writer ---- */

struct wr {
	uint8_t *p;
	size_t n, cap;
	bool bad;			/* ran out of room */
};

static void
put(struct wr *w, const void *p, size_t len)
{
	if (w->bad || len > w->cap - w->n) {
		w->bad = true;
		return;
	}
	if (len > 0)
		memcpy(w->p + w->n, p, len);
	w->n += len;
}

static void
put_u8(struct wr *w, uint8_t v)
{
	put(w, &v, 1);
}

static void
put_u32(struct wr *w, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
	    (uint8_t)(v >> 8), (uint8_t)v };

	put(w, b, 4);
}

static void
put_u64(struct wr *w, uint64_t v)
{
	put_u32(w, (uint32_t)(v >> 32));
	put_u32(w, (uint32_t)v);
}

/* A string of at most 255 bytes: its length in one byte. */
static void
put_str8(struct wr *w, struct cluster_str s)
{
	if (s.len > 255) {
		w->bad = true;
		return;
	}
	put_u8(w, (uint8_t)s.len);
	put(w, s.p, s.len);
}

static void
put_hdr(struct wr *w, enum cluster_msg type)
{
	uint8_t h[CLUSTER_HDR_SIZE] = { MAGIC0, MAGIC1, CLUSTER_PROTO_VERSION,
	    (uint8_t)type };

	put(w, h, sizeof(h));
}

static size_t
done(const struct wr *w)
{
	return w->bad ? 0 : w->n;
}

/* ---- reader ---- */

struct rd {
	const uint8_t *p;
	size_t n, off;
	bool bad;			/* cut short, or a bad value */
};

static const uint8_t *
take(struct rd *r, size_t len)
{
	const uint8_t *at;

	if (r->bad || len > r->n - r->off) {
		r->bad = true;
		return NULL;
	}
	at = r->p + r->off;
	r->off += len;
	return at;
}

static uint8_t
get_u8(struct rd *r)
{
	const uint8_t *b = take(r, 1);

	return b != NULL ? b[0] : 0;
}

static uint32_t
get_u32(struct rd *r)
{
	const uint8_t *b = take(r, 4);

	return b != NULL ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	    (uint32_t)b[2] << 8 | b[3] : 0;
}

static uint64_t
get_u64(struct rd *r)
{
	uint64_t hi = get_u32(r);

	return hi << 32 | get_u32(r);
}

static struct cluster_str
get_str8(struct rd *r)
{
	struct cluster_str s = { NULL, get_u8(r) };

	s.p = (const char *)take(r, s.len);
	if (s.p == NULL)
		s.len = 0;
	return s;
}

static void
get_token(struct rd *r, uint8_t out[CLUSTER_TOKEN_SIZE])
{
	const uint8_t *b = take(r, CLUSTER_TOKEN_SIZE);

	if (b != NULL)
		memcpy(out, b, CLUSTER_TOKEN_SIZE);
	else
		memset(out, 0, CLUSTER_TOKEN_SIZE);
}

/* A reader past the header of a message of `type`; bad if it is not. */
static struct rd
reader(const uint8_t *in, size_t len, enum cluster_msg type)
{
	struct rd r = { in, len, 0, false };

	if (cluster_msg_type(in, len) != (int)type)
		r.bad = true;
	else
		r.off = CLUSTER_HDR_SIZE;
	return r;
}

/* The whole input read, nothing bad, nothing left over. */
static int
finish(const struct rd *r)
{
	return !r->bad && r->off == r->n ? 0 : -1;
}

/* ---- messages ---- */

int
cluster_msg_type(const uint8_t *in, size_t len)
{
	if (len < CLUSTER_HDR_SIZE || in[0] != MAGIC0 || in[1] != MAGIC1)
		return CLUSTER_BAD;
	if (in[2] != CLUSTER_PROTO_VERSION)
		return CLUSTER_OTHER_VERSION;
	if (in[3] < CLUSTER_MSG_HEARTBEAT || in[3] > CLUSTER_MSG_INTEREST)
		return CLUSTER_UNKNOWN;
	return in[3];
}

size_t
cluster_put_header(uint8_t *out, size_t cap, enum cluster_msg type)
{
	struct wr w = { out, 0, cap, false };

	put_hdr(&w, type);
	return done(&w);
}

static bool
node_ok(struct cluster_str s)
{
	return s.len >= 1 && s.len <= CLUSTER_NODE_MAX;
}

size_t
cluster_put_heartbeat(uint8_t *out, size_t cap,
    const struct cluster_heartbeat *hb)
{
	struct wr w = { out, 0, cap, false };

	w.bad = !node_ok(hb->node);
	put_hdr(&w, CLUSTER_MSG_HEARTBEAT);
	put_str8(&w, hb->node);
	put_u64(&w, hb->instance);
	put_u32(&w, hb->interval_ms);
	put_u8(&w, hb->flags);
	put_u32(&w, hb->owned);
	return done(&w);
}

int
cluster_get_heartbeat(const uint8_t *in, size_t len,
    struct cluster_heartbeat *hb)
{
	struct rd r = reader(in, len, CLUSTER_MSG_HEARTBEAT);

	hb->node = get_str8(&r);
	hb->instance = get_u64(&r);
	hb->interval_ms = get_u32(&r);
	hb->flags = get_u8(&r);
	hb->owned = get_u32(&r);
	if (!node_ok(hb->node) || hb->interval_ms == 0)
		r.bad = true;
	return finish(&r);
}

/* ---- the directory record ---- */

static void
put_record(struct wr *w, const struct cluster_record *r)
{
	if (!node_ok(r->node) || r->listener.len > CLUSTER_LISTENER_MAX ||
	    r->uuid.len < 1 || r->uuid.len > RELAY_MAX_UUID ||
	    r->keys.len < 1 || r->keys.len > RELAY_MAX_KEYS_BYTES ||
	    r->max_consumers < 1 || r->takeover > 1) {
		w->bad = true;
		return;
	}
	put_u8(w, CLUSTER_RECORD_VERSION);
	put_str8(w, r->node);
	put_u64(w, r->instance);
	put_u64(w, r->nonce);
	put_str8(w, r->listener);
	put_u32(w, r->grace_ms);
	put_u32(w, r->max_consumers);
	put_u8(w, r->takeover);
	put_u8(w, r->last_value ? 1 : 0);
	put_str8(w, r->uuid);
	put_u32(w, (uint32_t)r->keys.len);
	put(w, r->keys.p, r->keys.len);
}

size_t
cluster_record_len(const struct cluster_record *r)
{
	return 1 + 1 + r->node.len + 8 + 8 + 1 + r->listener.len + 4 + 4 +
	    1 + 1 + 1 + r->uuid.len + 4 + r->keys.len;
}

size_t
cluster_put_record(uint8_t *out, size_t cap, const struct cluster_record *r)
{
	struct wr w = { out, 0, cap, false };

	put_record(&w, r);
	return done(&w);
}

/* The uuid and keys as a relay would take them from a client. */
static bool
record_content_ok(struct cluster_record *r)
{
	struct relay_limits lim;
	char why[96];

	relay_limits_default(&lim);
	return relay_check_uuid(&lim, r->uuid.p, r->uuid.len, why,
	    sizeof(why)) == RELAY_VALID && relay_check_keys(&lim, r->keys.p,
	    r->keys.len, &r->nkeys, why, sizeof(why)) == RELAY_VALID;
}

static void
get_record(struct rd *rd, struct cluster_record *r)
{
	uint8_t last;

	memset(r, 0, sizeof(*r));
	if (get_u8(rd) != CLUSTER_RECORD_VERSION)
		rd->bad = true;
	r->node = get_str8(rd);
	r->instance = get_u64(rd);
	r->nonce = get_u64(rd);
	r->listener = get_str8(rd);
	r->grace_ms = get_u32(rd);
	r->max_consumers = get_u32(rd);
	r->takeover = get_u8(rd);
	last = get_u8(rd);
	r->last_value = last == 1;
	r->uuid = get_str8(rd);
	r->keys.len = get_u32(rd);
	r->keys.p = (const char *)take(rd, r->keys.len);
	if (rd->bad || !node_ok(r->node) ||
	    r->listener.len > CLUSTER_LISTENER_MAX || r->max_consumers < 1 ||
	    r->takeover > 1 || last > 1 || !record_content_ok(r))
		rd->bad = true;
}

int
cluster_get_record(const uint8_t *in, size_t len, struct cluster_record *r)
{
	struct rd rd = { in, len, 0, false };

	get_record(&rd, r);
	return finish(&rd);
}

size_t
cluster_put_claim(uint8_t *out, size_t cap, const struct cluster_claim *c)
{
	struct wr w = { out, 0, cap, false };

	put_hdr(&w, CLUSTER_MSG_CLAIM);
	put(&w, c->token, CLUSTER_TOKEN_SIZE);
	put_u64(&w, c->epoch);
	put_record(&w, &c->rec);
	return done(&w);
}

int
cluster_get_claim(const uint8_t *in, size_t len, struct cluster_claim *c)
{
	struct rd r = reader(in, len, CLUSTER_MSG_CLAIM);

	get_token(&r, c->token);
	c->epoch = get_u64(&r);
	get_record(&r, &c->rec);
	if (c->epoch == 0)
		r.bad = true;
	return finish(&r);
}

size_t
cluster_put_gone(uint8_t *out, size_t cap, const struct cluster_gone *g)
{
	struct wr w = { out, 0, cap, false };

	put_hdr(&w, CLUSTER_MSG_GONE);
	put(&w, g->token, CLUSTER_TOKEN_SIZE);
	put_u64(&w, g->epoch);
	put_u8(&w, g->reason);
	return done(&w);
}

int
cluster_get_gone(const uint8_t *in, size_t len, struct cluster_gone *g)
{
	struct rd r = reader(in, len, CLUSTER_MSG_GONE);

	get_token(&r, g->token);
	g->epoch = get_u64(&r);
	g->reason = get_u8(&r);
	if (g->epoch == 0 || (g->reason != CLUSTER_GONE_LEFT &&
	    g->reason != CLUSTER_GONE_STOPPING))
		r.bad = true;
	return finish(&r);
}

size_t
cluster_put_interest(uint8_t *out, size_t cap,
    const struct cluster_interest *in)
{
	struct wr w = { out, 0, cap, false };

	w.bad = !node_ok(in->node);
	put_hdr(&w, CLUSTER_MSG_INTEREST);
	put(&w, in->token, CLUSTER_TOKEN_SIZE);
	put_str8(&w, in->node);
	put_u64(&w, in->instance);
	put_u64(&w, in->epoch);
	put_u8(&w, in->flags);
	return done(&w);
}

int
cluster_get_interest(const uint8_t *in, size_t len,
    struct cluster_interest *out)
{
	struct rd r = reader(in, len, CLUSTER_MSG_INTEREST);

	get_token(&r, out->token);
	out->node = get_str8(&r);
	out->instance = get_u64(&r);
	out->epoch = get_u64(&r);
	out->flags = get_u8(&r);
	if (!node_ok(out->node) ||
	    (out->flags & ~(CLUSTER_WANT_LAST | CLUSTER_WITHDRAW |
	    CLUSTER_HELLO | CLUSTER_FROM_START)) != 0)
		r.bad = true;
	return finish(&r);
}

/* ---- frames ---- */

static bool
frame_size_ok(uint32_t fs)
{
	return fs >= 4 && fs <= CLUSTER_FRAME_MAX && fs % 4 == 0;
}

static void
put_chunk_head(struct wr *w, const struct cluster_chunk *c)
{
	if (!frame_size_ok(c->frame_size) || c->count == 0) {
		w->bad = true;
		return;
	}
	put(w, c->token, CLUSTER_TOKEN_SIZE);
	put_u64(w, c->epoch);
	put_u64(w, c->seq);
	put_u32(w, c->frame_size);
	put_u32(w, c->count);
}

size_t
cluster_put_chunk_head(uint8_t *out, size_t cap,
    const struct cluster_chunk *c)
{
	struct wr w = { out, 0, cap, false };

	put_chunk_head(&w, c);
	return done(&w);
}

/* A chunk at r's position: head, then its frames (pointed to). */
static void
get_chunk(struct rd *r, struct cluster_chunk *c)
{
	uint64_t bytes;

	get_token(r, c->token);
	c->epoch = get_u64(r);
	c->seq = get_u64(r);
	c->frame_size = get_u32(r);
	c->count = get_u32(r);
	if (r->bad || !frame_size_ok(c->frame_size) || c->count == 0 ||
	    c->epoch == 0) {
		r->bad = true;
		c->data = NULL;
		return;
	}
	/* 64 bits: a count of 2^32 - 1 frames cannot wrap the product. */
	bytes = (uint64_t)c->count * c->frame_size;
	if (bytes > r->n - r->off) {
		r->bad = true;
		c->data = NULL;
		return;
	}
	c->data = (const char *)take(r, (size_t)bytes);
}

int
cluster_next_chunk(const uint8_t *in, size_t len, size_t *off,
    struct cluster_chunk *c)
{
	struct rd r = { in, len, *off, false };

	if (*off == 0) {
		if (cluster_msg_type(in, len) != CLUSTER_MSG_FRAMES)
			return -1;
		r.off = CLUSTER_HDR_SIZE;
	}
	if (r.off > len)
		return -1;
	if (r.off == len) {
		*off = r.off;
		return 0;
	}
	get_chunk(&r, c);
	if (r.bad)
		return -1;
	*off = r.off;
	return 1;
}

size_t
cluster_put_last(uint8_t *out, size_t cap, const struct cluster_chunk *c)
{
	struct wr w = { out, 0, cap, false };

	if (c->count != 1)
		w.bad = true;
	put_hdr(&w, CLUSTER_MSG_LAST);
	put_chunk_head(&w, c);
	put(&w, c->data, c->frame_size);
	return done(&w);
}

int
cluster_get_last(const uint8_t *in, size_t len, struct cluster_chunk *c)
{
	struct rd r = reader(in, len, CLUSTER_MSG_LAST);

	get_chunk(&r, c);
	if (c->count != 1)
		r.bad = true;
	return finish(&r);
}
