/*
 * registry: uuid -> device entry (producer, keys, frame size, consumers,
 * counters), and the fan-out of frames to consumers under the
 * slow-consumer policy.
 *
 * Connections are struct relay_conn records owned by the device layer; the
 * registry links them into entries and writes to their streams.  A
 * connection's stream must have the relay_conn as its callback argument
 * (stream_set_callbacks), so the registry's write callbacks find it.  An entry
 * lives while it has a producer or consumers:
 *
 *   - a producer registers a uuid with its keys; a second producer of a
 *     live uuid replaces the first (RELAY_REPLACE) or is refused;
 *   - consumers attach to a live uuid only, up to max_consumers, and get
 *     frames once they have accepted the keys;
 *   - when the producer leaves, its consumers stay attached for `grace`
 *     seconds: a producer of the same uuid with the same keys resumes the
 *     stream to them, one with other keys (or the end of the grace period)
 *     detaches and closes them.
 *
 * Fan-out copies each run of whole frames once into each consumer's write
 * queue (the stream flushes it once per loop iteration).  A consumer whose
 * queue holds queue_bytes or more is slow: RELAY_DROP drops whole frames
 * for it alone (counted), RELAY_DISCONNECT closes it, RELAY_BLOCK pauses
 * the producer until every consumer's queue is back under queue_bytes.
 * Frames are never split: a consumer sees a gap, never half a frame.
 *
 * Everything runs on one loop thread.  Closing a stream from here is safe
 * (close callbacks are deferred); a connection the registry closes is
 * detached at once, so the device layer's registry_remove() finds it gone.
 */
#ifndef FERRY_REGISTRY_H
#define FERRY_REGISTRY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream.h"

enum relay_slow { RELAY_DROP = 0, RELAY_DISCONNECT, RELAY_BLOCK };
enum relay_takeover { RELAY_REPLACE = 0, RELAY_REFUSE };

struct relay_opts {
	size_t max_consumers;		/* per uuid */
	size_t queue_bytes;		/* per consumer, before the policy */
	enum relay_slow slow;
	double grace;			/* seconds consumers wait */
	enum relay_takeover takeover;
	bool last_value;		/* a new consumer gets the last frame */
	size_t max_uuid;		/* 1..255 */
	size_t max_keys_bytes;		/* 1..65536 */
	size_t max_keys;		/* 1..16384 */
	double header_timeout;		/* registration deadline; 0 = none */
	double idle_timeout;		/* after registration; 0 = none */
};

void relay_opts_default(struct relay_opts *o);

/*
 * Frames "out" are frames queued to a consumer; "dropped" frames were
 * meant for a slow consumer and never queued.  producers and consumers
 * are gauges (connected now; a consumer counts from its uuid being
 * answered 0x00).  refused counts 0x01 answers (listener total only).
 */
struct relay_counters {
	uint64_t frames_in, bytes_in;
	uint64_t frames_out, bytes_out;
	uint64_t frames_dropped, bytes_dropped;
	uint64_t producers, consumers;
	uint64_t refused;
};

struct device_entry;

/* One relay connection (producer or consumer). */
struct relay_conn {
	struct stream *s;
	struct device_entry *entry;	/* NULL when detached */
	struct relay_conn *prev, *next;	/* the entry's consumers */
	bool producer;
	bool accepted;			/* consumer sent its accept byte */
	uint64_t frames;		/* published (producer) / queued */
	uint64_t dropped;		/* consumer: frames dropped for it */
	ev_tstamp since;		/* connected at */
};

struct device_entry {
	struct registry *reg;
	char uuid[256];
	size_t uuid_len;
	size_t bucket;
	char *keys;
	size_t keys_len, nkeys, frame_size;
	struct relay_conn *producer;
	struct relay_conn *consumers;
	size_t nconsumers;
	char *last;			/* last frame (last_value) */
	bool has_last;
	bool producer_paused;		/* block policy holds the producer */
	ev_timer grace;
	struct relay_counters c;
	struct device_entry *hnext;
};

#define REGISTRY_BUCKETS 4096

struct registry {
	struct ev_loop *loop;
	struct relay_opts opts;
	char name[64];			/* the listener, for logs */
	uint64_t seed;			/* of the uuid hash */
	struct device_entry *buckets[REGISTRY_BUCKETS];
	size_t entries;
	struct relay_counters total;
};

void registry_init(struct registry *reg, const char *name,
    struct ev_loop *loop, const struct relay_opts *opts);
/* Frees the entries (their streams must be closed already). */
void registry_destroy(struct registry *reg);

struct device_entry *registry_find(struct registry *reg, const char *uuid,
    size_t len);
/* The entry has a producer now. */
static inline bool
registry_live(const struct device_entry *e)
{
	return e != NULL && e->producer != NULL;
}

/* Iterates the entries: NULL starts, NULL ends.  No changes meanwhile. */
struct device_entry *registry_next(struct registry *reg,
    struct device_entry *e);

/*
 * Registers `conn` as the producer of uuid with the given keys (klen bytes
 * naming nkeys keys).  Returns 0, or -1 with *why set: the uuid is live
 * and takeovers are refused, or memory could not be had.
 */
int registry_add_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, const char **why);

/*
 * Attaches a consumer (not yet accepted) to the live entry of uuid.
 * Returns the entry, or NULL with *why set (no producer holds the uuid, or
 * max_consumers are attached).
 */
struct device_entry *registry_add_consumer(struct registry *reg,
    struct relay_conn *conn, const char *uuid, size_t ulen,
    const char **why);

/* The consumer sent its accept byte: frames flow from now on. */
void registry_accept(struct relay_conn *conn);

/* `n` whole frames from the producer conn (ignored unless it is live). */
void registry_publish(struct relay_conn *producer, const char *frames,
    size_t n);

/* The connection is going away: detach it (idempotent). */
void registry_remove(struct relay_conn *conn);

/* Escapes a uuid for logs (printable ASCII kept, the rest as \xNN). */
void registry_uuid_str(const char *uuid, size_t len, char *out, size_t outlen);
/* Room registry_uuid_str needs for any uuid. */
#define REGISTRY_UUID_STR (255 * 4 + 1)

#endif
