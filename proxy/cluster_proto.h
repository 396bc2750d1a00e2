/*
 * cluster_proto: the cluster protocol, version 1 -- the messages Ferry
 * nodes exchange over NATS and the directory record they keep in its
 * key-value store -- with nothing else: no I/O, no libev, no OpenSSL, no
 * NATS (the fuzz target links it with relay_proto alone).  docs/cluster.md
 * describes the subjects and the rules; this is the bytes.
 *
 * Integers are big-endian.  Every message starts with a 4-byte header:
 * 'F' 'c' VERSION TYPE.  A message of another version, or of a type this
 * version does not know, is not decoded (cluster_msg_type() says which)
 * and the node ignores it, counted: nodes of two versions never misread
 * each other.  Strings are a length (1 byte, or 4 for the keys) and the
 * bytes.  A uuid travels as its token: the first 16 bytes of its SHA-256
 * (computed by the node; the directory record carries the uuid itself, so
 * a collision would be seen, not believed).
 *
 *   HEARTBEAT  node, instance (random per start), interval (ms), flags
 *              (STOPPING), uuids owned
 *   CLAIM      token, epoch, record: a producer now holds the uuid (a
 *              registration, a resume, a takeover)
 *   GONE       token, epoch, reason: that producer left
 *   FRAMES     chunks, each: token, epoch, sequence of its first frame,
 *              frame size, count, the frames -- one message carries the
 *              frames of many uuids read in one loop iteration
 *   LAST       token, epoch, sequence, frame size, the frame: the last
 *              value, for a node whose consumers want it
 *   INTEREST   token, node, instance, epoch, flags (WANT_LAST, WITHDRAW,
 *              HELLO): a node has consumers of the uuid, following that
 *              epoch (or has none any more); HELLO asks the owner to
 *              answer with its CLAIM, after which every frame it sends
 *              reaches the asking node (messages between two nodes keep
 *              their order); FROM_START (consumers waited for this
 *              producer) asks for the frames the owner sent before the
 *              interest arrived, kept for the epoch's first second
 *
 * The directory record (the value of a uuid's key) has a version byte of
 * its own, then: owner node, its instance, the claim's nonce, the owner's
 * listener, the device's settings (grace in ms, max_consumers, takeover,
 * last_value), the uuid and the keys.  Its KV revision is the producer's
 * epoch.
 *
 * Every decoder checks every length against what is left (nothing is
 * read past the end, whatever the input), refuses trailing bytes, and
 * checks the uuid and keys with relay_proto's rules; strings point into
 * the input (no copy, valid while it is).  Every encoder writes into the
 * caller's buffer and returns the bytes written, or 0 when they do not
 * fit.
 */
#ifndef FERRY_CLUSTER_PROTO_H
#define FERRY_CLUSTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_PROTO_VERSION	1
#define CLUSTER_RECORD_VERSION	1
#define CLUSTER_HDR_SIZE	4
#define CLUSTER_TOKEN_SIZE	16
#define CLUSTER_NODE_MAX	128	/* bytes of a node name */
#define CLUSTER_LISTENER_MAX	63	/* bytes of a listener name */
/* A FRAMES chunk's head: token, epoch, sequence, frame size, count. */
#define CLUSTER_CHUNK_HEAD	(CLUSTER_TOKEN_SIZE + 8 + 8 + 4 + 4)
/* The largest frame: RELAY_MAX_KEYS floats. */
#define CLUSTER_FRAME_MAX	(16384 * 4)

enum cluster_msg {
	CLUSTER_MSG_HEARTBEAT = 1,
	CLUSTER_MSG_CLAIM = 2,
	CLUSTER_MSG_GONE = 3,
	CLUSTER_MSG_FRAMES = 4,
	CLUSTER_MSG_LAST = 5,
	CLUSTER_MSG_INTEREST = 6,
};

/* What cluster_msg_type() says of a message it does not decode. */
#define CLUSTER_BAD	(-1)		/* not a cluster message, or cut */
#define CLUSTER_OTHER_VERSION (-2)	/* a version this node does not speak */
#define CLUSTER_UNKNOWN	(-3)		/* a type version 1 does not have */

#define CLUSTER_HB_STOPPING	0x01	/* the node is leaving the cluster */
#define CLUSTER_WANT_LAST	0x01	/* INTEREST: send the last value */
#define CLUSTER_WITHDRAW	0x02	/* INTEREST: no consumer left */
#define CLUSTER_HELLO		0x04	/* INTEREST: answer with the CLAIM */
#define CLUSTER_FROM_START	0x08	/* INTEREST: the epoch's first frames */

enum cluster_gone_reason {
	CLUSTER_GONE_LEFT = 1,		/* the producer closed */
	CLUSTER_GONE_STOPPING = 2,	/* its node is shutting down */
};

/* Bytes inside a decoded message. */
struct cluster_str {
	const char *p;
	size_t len;
};

struct cluster_heartbeat {
	struct cluster_str node;
	uint64_t instance;
	uint32_t interval_ms;
	uint8_t flags;
	uint32_t owned;
};

struct cluster_record {
	struct cluster_str node;	/* the owner */
	uint64_t instance;		/* the owner's, this start */
	uint64_t nonce;			/* this claim's: our own write, re-read */
	struct cluster_str listener;	/* the owner's listener (for logs) */
	uint32_t grace_ms;
	uint32_t max_consumers;		/* >= 1 */
	uint8_t takeover;		/* 0 replace, 1 refuse */
	bool last_value;
	struct cluster_str uuid;
	struct cluster_str keys;
	size_t nkeys;			/* decoded: the names in keys */
};

struct cluster_claim {
	uint8_t token[CLUSTER_TOKEN_SIZE];
	uint64_t epoch;
	struct cluster_record rec;
};

struct cluster_gone {
	uint8_t token[CLUSTER_TOKEN_SIZE];
	uint64_t epoch;
	uint8_t reason;			/* enum cluster_gone_reason */
};

struct cluster_chunk {
	uint8_t token[CLUSTER_TOKEN_SIZE];
	uint64_t epoch;
	uint64_t seq;			/* of the first frame */
	uint32_t frame_size;		/* 4..CLUSTER_FRAME_MAX, a multiple of 4 */
	uint32_t count;			/* >= 1 */
	const char *data;		/* count * frame_size bytes */
};

struct cluster_interest {
	uint8_t token[CLUSTER_TOKEN_SIZE];
	struct cluster_str node;
	uint64_t instance;
	uint64_t epoch;			/* the producer it follows */
	uint8_t flags;
};

/* LAST is one chunk of one frame (count 1). */

/* ---- encoding ---- */

size_t cluster_put_heartbeat(uint8_t *out, size_t cap,
    const struct cluster_heartbeat *hb);
/* The record alone: a directory value. */
size_t cluster_put_record(uint8_t *out, size_t cap,
    const struct cluster_record *r);
/* Room a record needs. */
size_t cluster_record_len(const struct cluster_record *r);
size_t cluster_put_claim(uint8_t *out, size_t cap,
    const struct cluster_claim *c);
size_t cluster_put_gone(uint8_t *out, size_t cap,
    const struct cluster_gone *g);
size_t cluster_put_interest(uint8_t *out, size_t cap,
    const struct cluster_interest *in);
/* The header of a message of `type` (FRAMES: then chunks). */
size_t cluster_put_header(uint8_t *out, size_t cap, enum cluster_msg type);
/*
 * A chunk's head (CLUSTER_CHUNK_HEAD bytes): its frames, count *
 * frame_size bytes, follow it; c->data is not read.
 */
size_t cluster_put_chunk_head(uint8_t *out, size_t cap,
    const struct cluster_chunk *c);
/* A LAST message: header and one chunk of one frame, copied. */
size_t cluster_put_last(uint8_t *out, size_t cap,
    const struct cluster_chunk *c);

/* ---- decoding ---- */

/*
 * The type of a message (enum cluster_msg), or CLUSTER_BAD,
 * CLUSTER_OTHER_VERSION, CLUSTER_UNKNOWN.
 */
int cluster_msg_type(const uint8_t *in, size_t len);

/* Each: 0, or -1 when the message (of its type) is malformed. */
int cluster_get_heartbeat(const uint8_t *in, size_t len,
    struct cluster_heartbeat *hb);
int cluster_get_record(const uint8_t *in, size_t len,
    struct cluster_record *r);
int cluster_get_claim(const uint8_t *in, size_t len, struct cluster_claim *c);
int cluster_get_gone(const uint8_t *in, size_t len, struct cluster_gone *g);
int cluster_get_interest(const uint8_t *in, size_t len,
    struct cluster_interest *in_);
int cluster_get_last(const uint8_t *in, size_t len, struct cluster_chunk *c);
/*
 * The next chunk of a FRAMES message: *off starts at 0 (the header is
 * checked then).  1 with *c set, 0 at the end, -1 when malformed (the
 * chunks before it were whole and may be used).
 */
int cluster_next_chunk(const uint8_t *in, size_t len, size_t *off,
    struct cluster_chunk *c);

#endif
