/*
 * relay_proto: the relay protocol, version 1, with nothing else: its
 * bytes, its limits, the checks of a uuid and of a key list, and a pure
 * parser of what a client sends.  No I/O, no registry, no Ferry header,
 * no library but libc: the fuzz target, the load generator and the test
 * client build on it alone.
 *
 * Producer: 0x0a -> 0x00; uuid (BE32 len + bytes) -> 0x00;
 *           keys (BE32 len + names joined by ',') -> 0x00; frames of 4N.
 * Consumer: 0x0b -> 0x00; uuid -> 0x00 if a producer holds it, else 0x01;
 *           then the keys (BE32 len + bytes); 0x00 accepts; then frames.
 * A frame is one little-endian float32 per key, no header.  A step that
 * breaks a limit is answered 0x01; the server's side (relay.h) decides
 * the rest.
 *
 * Limits (struct relay_limits): uuid 1..max_uuid bytes, keys
 * 1..max_keys_bytes bytes naming 1..max_keys keys; uuid and keys must be
 * UTF-8 and free of control characters (0x00-0x1f, 0x7f); no key name may
 * be empty or given twice (byte for byte: "a" and "A" are two names).  A
 * repeated name is found by sorting the names (8 bytes each, freed at
 * once): O(n log n), never pairwise.  The RELAY_MAX_* values are the
 * defaults and the most the protocol allows.
 *
 * The parser is fed chunks of any size, and reports the same events
 * whatever the cuts, so it can be tested with every split and fuzzed.
 * Lengths are checked against the limits before anything is buffered, so
 * a claimed 4 GB never allocates.  Runs of whole frames are reported as
 * pointers into the fed chunk (no copy); only a frame split across two
 * chunks is assembled, in a frame-sized scratch buffer.  Any first byte
 * but 0x0a / 0x0b is a protocol error; bytes a consumer sends after its
 * accept byte are counted and ignored.
 */
#ifndef FERRY_RELAY_PROTO_H
#define FERRY_RELAY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A client's first byte: its role. */
#define RELAY_PRODUCER	0x0a
#define RELAY_CONSUMER	0x0b
/* The server's answer to a step. */
#define RELAY_OK	0x00
#define RELAY_REFUSED	0x01
/* A consumer's answer to the keys: this one takes them, any other not. */
#define RELAY_ACCEPT	0x00

#define RELAY_LEN_SIZE	4		/* a length: BE32 */
#define RELAY_VALUE_SIZE 4		/* a frame's value: LE float32 */
#define RELAY_KEY_SEP	','		/* between key names */

#define RELAY_MAX_UUID		255
#define RELAY_MAX_KEYS_BYTES	65536
#define RELAY_MAX_KEYS		16384

struct relay_limits {
	size_t max_uuid;		/* 1..RELAY_MAX_UUID */
	size_t max_keys_bytes;		/* 1..RELAY_MAX_KEYS_BYTES */
	size_t max_keys;		/* 1..RELAY_MAX_KEYS */
};

/* The protocol's own: the RELAY_MAX_* values. */
void relay_limits_default(struct relay_limits *l);

static inline void
relay_len_put(uint8_t out[RELAY_LEN_SIZE], uint32_t n)
{
	out[0] = (uint8_t)(n >> 24);
	out[1] = (uint8_t)(n >> 16);
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
}

static inline uint32_t
relay_len_get(const uint8_t in[RELAY_LEN_SIZE])
{
	return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 |
	    (uint32_t)in[2] << 8 | in[3];
}

static inline size_t
relay_frame_size(size_t nkeys)
{
	return nkeys * RELAY_VALUE_SIZE;
}

/* Whether uuid / key bytes are well-formed UTF-8. */
bool relay_utf8_valid(const char *s, size_t len);

/* The names of a key list that keeps the limits: its separators + 1. */
size_t relay_keys_count(const char *k, size_t len);

/* What a check found. */
enum relay_verdict {
	RELAY_VALID = 0,
	RELAY_BROKEN,			/* a limit is broken: why says which */
	RELAY_NOMEM,			/* memory could not be had */
};

/*
 * Whether a uuid (len bytes) keeps every limit; if not, why (whylen
 * bytes) says which, as the parser does ("uuid has a control character
 * (0x09)").
 */
enum relay_verdict relay_check_uuid(const struct relay_limits *l,
    const char *u, size_t len, char *why, size_t whylen);
/*
 * The same for a key list, with *count set to its names when it is
 * valid ("keys 1 and 3 have the same name").
 */
enum relay_verdict relay_check_keys(const struct relay_limits *l,
    const char *k, size_t len, size_t *count, char *why, size_t whylen);

enum relay_ev {
	RELAY_EV_ROLE,		/* role: RELAY_PRODUCER / RELAY_CONSUMER */
	RELAY_EV_UUID,		/* data, len */
	RELAY_EV_KEYS,		/* data, len; count = number of keys (all
				 * limits kept: names distinct, none empty) */
	RELAY_EV_ACCEPT,	/* role = the consumer's answer byte */
	RELAY_EV_FRAMES,	/* data, len = count * frame size */
	RELAY_EV_ERROR,		/* error: reason; `limit` when a limit was
				 * broken, `nomem` when memory could not be
				 * had */
};

struct relay_event {
	enum relay_ev type;
	int role;
	const char *data;
	size_t len;
	size_t count;		/* frames (FRAMES) or keys (KEYS) */
	const char *error;
	bool limit;
	bool nomem;
};

/*
 * Return non-zero to stop the feed: relay_parser_feed() returns at once,
 * with the bytes consumed up to the end of the event.  After an error the
 * parser is dead; after any other event it may be fed the bytes that
 * followed, later, and goes on from there (the relay waits for the
 * cluster this way).
 */
typedef int (*relay_event_cb)(void *arg, const struct relay_event *ev);

enum relay_parser_state {
	RELAY_PS_ROLE, RELAY_PS_LEN, RELAY_PS_BODY, RELAY_PS_ACCEPT,
	RELAY_PS_FRAMES, RELAY_PS_IGNORE, RELAY_PS_DEAD
};

struct relay_parser {
	enum relay_parser_state state;
	int role;
	int field;			/* 0 = uuid, 1 = keys */
	uint8_t lenbuf[RELAY_LEN_SIZE];
	size_t lenhave;
	size_t need;
	char *body;			/* uuid / keys split across chunks */
	size_t bodyhave;
	size_t frame_size;		/* 4 * keys, once the keys are read */
	char *scratch;			/* a frame split across chunks */
	size_t scratch_have;
	struct relay_limits lim;
	uint64_t ignored;		/* consumer bytes after its accept */
	char err[96];
};

void relay_parser_init(struct relay_parser *p, const struct relay_limits *l);
void relay_parser_free(struct relay_parser *p);
/*
 * Feeds bytes; returns how many were consumed (all, unless the callback
 * stopped the feed or an error ended the parser).
 */
size_t relay_parser_feed(struct relay_parser *p, const char *data,
    size_t len, relay_event_cb cb, void *arg);

#endif
