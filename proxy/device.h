/*
 * device: the device protocol, version 1, on one stream.
 *
 * Two parts.  The parser is pure (no I/O, no registry): bytes in, events
 * out, fed in chunks of any size, so it can be tested with every split and
 * fuzzed.  Lengths are checked against the limits before anything is
 * buffered, so a claimed 4 GB never allocates.  Runs of whole frames are
 * reported as pointers into the fed chunk (no copy); only a frame split
 * across two chunks is assembled, in a frame-sized scratch buffer.
 *
 * The glue (device_handle_stream) reads a stream with partial reads, feeds
 * the parser, answers each step (0x00 / 0x01 / the keys) and hands frames
 * to the registry.
 *
 * Producer: 0x0a -> 0x00; uuid (BE32 len + bytes) -> 0x00;
 *           keys (BE32 len + names joined by ',') -> 0x00; frames of 4N.
 * Consumer: 0x0b -> 0x00; uuid -> 0x00 if a producer holds it, else 0x01;
 *           then the keys (BE32 len + bytes); 0x00 accepts; then frames.
 *
 * Consumer slots: a consumer is pending from its uuid's 0x00 until its
 * accept byte, and holds no slot meanwhile; only accepted consumers count
 * against the device's max_consumers (registry.h).  Its uuid is answered
 * 0x01 when max_consumers are accepted already.  An accept byte that
 * comes when they are (others accepted since its uuid step) is refused
 * the only way the protocol allows after the keys: the server closes
 * (FIN, then the linger below) without sending a byte, logs "refused at
 * its accept byte" and counts it in `refused`.  A pending consumer is
 * bounded by the registration deadline (header_timeout), which runs
 * until its accept byte; with none (0) it may stay, holding its
 * connection but no slot.
 *
 * Each relay listener is a struct relay_listener; all of a process's share
 * one registry (one uuid namespace).  A connection's limits and timeouts
 * are those of the listener it arrived on (see registry.h for the rest).
 *
 * Limits (each from relay_opts): uuid 1..max_uuid bytes, keys
 * 1..max_keys_bytes bytes naming 1..max_keys keys; uuid and keys must be
 * UTF-8 and free of control characters (0x00-0x1f, 0x7f); no key name may
 * be empty or given twice (byte for byte: "a" and "A" are two names).  The
 * parser finds a repeated name by sorting the names (8 bytes each, freed
 * at once): O(n log n), never pairwise.  A broken limit is answered 0x01;
 * the server then sends its FIN and reads (discarding) until the client
 * closes, or a couple of seconds pass, so that the 0x01 is not lost to a
 * reset.  Any other first byte than 0x0a / 0x0b closes the connection.
 * Bytes a consumer sends after its accept byte are read and ignored.
 *
 * Access list: on a listener with one (acl.h), the uuid step asks it
 * first, with the identities of the client's verified certificate and the
 * role: a client it does not allow gets 0x01, exactly as for an unknown
 * uuid, and a warning (listener, role, peer, certificate identities,
 * uuid).  What it allowed is logged with the registration: the identity
 * that matched and the rule's line.  A new list (a reload) applies from
 * the next uuid step on; devices already registered stay.
 *
 * Logging: one line when a producer registers or a consumer is accepted,
 * one when such a device leaves (uuid, keys, peer, duration, frames,
 * drops, bytes each way, why); every other connection gets one line
 * when it closes (peer, duration, bytes each way, why), rate-limited.
 */
#ifndef FERRY_DEVICE_H
#define FERRY_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"
#include "tcpserver.h"

#define DEVICE_PRODUCER 0x0a
#define DEVICE_CONSUMER 0x0b

enum device_ev {
	DEV_ROLE,	/* role: DEVICE_PRODUCER / DEVICE_CONSUMER */
	DEV_UUID,	/* data, len */
	DEV_KEYS,	/* data, len; count = number of keys (all limits
			 * kept: names distinct, none empty) */
	DEV_ACCEPT,	/* role = the consumer's answer byte */
	DEV_FRAMES,	/* data, len = count * frame size */
	DEV_ERROR,	/* error: reason; `limit` when a limit was broken,
			 * `nomem` when memory could not be had */
};

struct device_event {
	enum device_ev type;
	int role;
	const char *data;
	size_t len;
	size_t count;		/* frames (DEV_FRAMES) or keys (DEV_KEYS) */
	const char *error;
	bool limit;
	bool nomem;
};

/*
 * Return non-zero to stop the feed: device_parser_feed() returns at once
 * and the parser must not be fed again (the connection is done with it).
 */
typedef int (*device_event_cb)(void *arg, const struct device_event *ev);

enum device_parser_state {
	DP_ROLE, DP_LEN, DP_BODY, DP_ACCEPT, DP_FRAMES, DP_IGNORE, DP_DEAD
};

struct device_parser {
	enum device_parser_state state;
	int role;
	int field;			/* 0 = uuid, 1 = keys */
	uint8_t lenbuf[4];
	size_t lenhave;
	size_t need;
	char *body;			/* uuid / keys split across chunks */
	size_t bodyhave;
	size_t frame_size;		/* 4 * keys, once the keys are read */
	char *scratch;			/* a frame split across chunks */
	size_t scratch_have;
	size_t max_uuid, max_keys_bytes, max_keys;
	uint64_t ignored;		/* consumer bytes after its accept */
	char err[96];
};

void device_parser_init(struct device_parser *p, const struct relay_opts *o);
void device_parser_free(struct device_parser *p);
/*
 * Feeds bytes; returns how many were consumed (all, unless the callback
 * stopped the feed or an error ended the parser).
 */
size_t device_parser_feed(struct device_parser *p, const char *data,
    size_t len, device_event_cb cb, void *arg);

/* Whether uuid / key bytes are well-formed UTF-8. */
bool device_utf8_valid(const char *s, size_t len);

struct acl;
struct device_conn;

/* A relay listener: what its connections share. */
struct relay_listener {
	struct relay_origin o;		/* name, options, totals */
	struct registry *reg;		/* every relay listener's */
	struct acl *acl;		/* NULL: none */
	uint64_t protocol_errors;	/* unknown first byte, bad accept */
	struct device_conn *conns;	/* open connections (shutdown) */
};

/* A listener on the shared registry; NULL when memory cannot be had. */
struct relay_listener *relay_listener_new(const char *name,
    struct registry *reg, const struct relay_opts *opts);
/*
 * After its streams are closed and the registry's entries freed (they
 * point to the listener); NULL is ignored.  The registry is not freed.
 */
void relay_listener_free(struct relay_listener *rl);
/*
 * Closes every open connection of the listener (shutdown past the drain
 * deadline); their close callbacks run with the loop's pending work.
 */
void relay_listener_close_all(struct relay_listener *rl);
/* The listener's access list from now on (NULL: none); frees the old. */
void relay_listener_set_acl(struct relay_listener *rl, struct acl *acl);

/* At most this many uuids get their own series. */
#define RELAY_METRICS_MAX_DEVICES 1000

/*
 * The relay metric families (Prometheus text), each family's header once:
 * totals per listener (ferry_relay_*{listener}; ferry_relay_devices counts
 * the uuids whose device settings come from that listener, so the sum is
 * the registry's entry count), and per uuid (ferry_relay_device_*{uuid})
 * for the uuids an entry exists for now, at most
 * RELAY_METRICS_MAX_DEVICES.  main.c registers this as a metrics source.
 */
void relay_render_metrics(struct registry *reg,
    struct relay_listener *const *ls, size_t n, struct buffer *out);

/* tcpserver_handler; arg is a struct relay_listener. */
void device_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

#endif
