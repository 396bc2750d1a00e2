/*
 * libFuzzer target: the cluster protocol's codec (cluster_proto.h),
 * through its public API only; linked with cluster_proto.o and
 * relay_proto.o alone (no libev, OpenSSL or NATS).
 *
 * Input: the bytes of one NATS message (or of one directory value, the
 * first byte saying which: even = message, odd = record).  Each is decoded
 * as what its header says; whatever decodes is checked:
 *   - every string and frame points inside the input;
 *   - the encoding is canonical: re-encoding what was decoded gives the
 *     input back, byte for byte (so nothing was skipped or misread), and
 *     a record's length is cluster_record_len();
 *   - a record's uuid and keys keep relay_proto's rules, and nkeys is the
 *     number of names;
 *   - FRAMES: the chunks cover the message exactly, each whole;
 *   - every decoder of another type refuses the input.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_proto.h"
#include "relay_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"fuzz_cluster: %s:%d: check failed: %s\n", __FILE__, __LINE__, \
	#cond); abort(); } } while (0)

static const uint8_t *in_lo, *in_hi;

static void
inside(const void *p, size_t len)
{
	const uint8_t *b = p;

	if (len == 0)
		return;
	CHECK(b >= in_lo && b + len <= in_hi);
}

static uint8_t out[1 << 17];

static void
same(size_t n, const uint8_t *in, size_t len)
{
	CHECK(n == len);
	CHECK(memcmp(out, in, len) == 0);
}

static void
check_record(const struct cluster_record *r)
{
	struct relay_limits lim;
	size_t count = 0;
	char why[96];

	inside(r->node.p, r->node.len);
	inside(r->listener.p, r->listener.len);
	inside(r->uuid.p, r->uuid.len);
	inside(r->keys.p, r->keys.len);
	relay_limits_default(&lim);
	CHECK(relay_check_uuid(&lim, r->uuid.p, r->uuid.len, why,
	    sizeof(why)) == RELAY_VALID);
	CHECK(relay_check_keys(&lim, r->keys.p, r->keys.len, &count, why,
	    sizeof(why)) == RELAY_VALID);
	CHECK(count == r->nkeys);
}

/* Only the decoder of the input's own type may take it. */
static void
others_refuse(const uint8_t *in, size_t len, int type)
{
	struct cluster_heartbeat hb;
	struct cluster_claim cl;
	struct cluster_gone g;
	struct cluster_interest it;
	struct cluster_chunk c;
	size_t off = 0;

	if (type != CLUSTER_MSG_HEARTBEAT)
		CHECK(cluster_get_heartbeat(in, len, &hb) < 0);
	if (type != CLUSTER_MSG_CLAIM)
		CHECK(cluster_get_claim(in, len, &cl) < 0);
	if (type != CLUSTER_MSG_GONE)
		CHECK(cluster_get_gone(in, len, &g) < 0);
	if (type != CLUSTER_MSG_INTEREST)
		CHECK(cluster_get_interest(in, len, &it) < 0);
	if (type != CLUSTER_MSG_LAST)
		CHECK(cluster_get_last(in, len, &c) < 0);
	if (type != CLUSTER_MSG_FRAMES)
		CHECK(cluster_next_chunk(in, len, &off, &c) < 0);
}

static void
frames(const uint8_t *in, size_t len)
{
	struct cluster_chunk c;
	size_t off = 0, n;
	int rc;

	n = cluster_put_header(out, sizeof(out), CLUSTER_MSG_FRAMES);
	CHECK(n == CLUSTER_HDR_SIZE);
	while ((rc = cluster_next_chunk(in, len, &off, &c)) == 1) {
		size_t bytes = (size_t)c.count * c.frame_size;
		inside(c.data, bytes);
		CHECK(c.frame_size % 4 == 0 && c.count > 0);
		CHECK(n + CLUSTER_CHUNK_HEAD + bytes <= sizeof(out));
		CHECK(cluster_put_chunk_head(out + n, sizeof(out) - n, &c) ==
		    CLUSTER_CHUNK_HEAD);
		n += CLUSTER_CHUNK_HEAD;
		memcpy(out + n, c.data, bytes);
		n += bytes;
		CHECK(off == n);
	}
	if (rc == 0)
		same(n, in, len);
}

static void
message(const uint8_t *in, size_t len)
{
	struct cluster_heartbeat hb;
	struct cluster_claim cl;
	struct cluster_gone g;
	struct cluster_interest it;
	struct cluster_chunk c;
	int type = cluster_msg_type(in, len);

	if (type < 0) {
		others_refuse(in, len, type);
		return;
	}
	others_refuse(in, len, type);
	switch (type) {
	case CLUSTER_MSG_HEARTBEAT:
		if (cluster_get_heartbeat(in, len, &hb) == 0) {
			inside(hb.node.p, hb.node.len);
			same(cluster_put_heartbeat(out, sizeof(out), &hb), in,
			    len);
		}
		break;
	case CLUSTER_MSG_CLAIM:
		if (cluster_get_claim(in, len, &cl) == 0) {
			check_record(&cl.rec);
			same(cluster_put_claim(out, sizeof(out), &cl), in,
			    len);
		}
		break;
	case CLUSTER_MSG_GONE:
		if (cluster_get_gone(in, len, &g) == 0)
			same(cluster_put_gone(out, sizeof(out), &g), in, len);
		break;
	case CLUSTER_MSG_INTEREST:
		if (cluster_get_interest(in, len, &it) == 0) {
			inside(it.node.p, it.node.len);
			same(cluster_put_interest(out, sizeof(out), &it), in,
			    len);
		}
		break;
	case CLUSTER_MSG_LAST:
		if (cluster_get_last(in, len, &c) == 0) {
			inside(c.data, c.frame_size);
			same(cluster_put_last(out, sizeof(out), &c), in, len);
		}
		break;
	case CLUSTER_MSG_FRAMES:
		frames(in, len);
		break;
	}
}

static void
record(const uint8_t *in, size_t len)
{
	struct cluster_record r;

	if (cluster_get_record(in, len, &r) < 0)
		return;
	check_record(&r);
	CHECK(cluster_record_len(&r) == len);
	same(cluster_put_record(out, sizeof(out), &r), in, len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *in;

	if (size < 1 || size - 1 > sizeof(out))
		return 0;
	/* A buffer of the exact size: ASan sees any read past it. */
	in = malloc(size - 1 > 0 ? size - 1 : 1);
	CHECK(in != NULL);
	memcpy(in, data + 1, size - 1);
	in_lo = in;
	in_hi = in + size - 1;
	if (data[0] & 1)
		record(in, size - 1);
	else
		message(in, size - 1);
	free(in);
	return 0;
}
