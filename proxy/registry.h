/*
 * registry: uuid -> device entry (producer, keys, frame size, consumers,
 * counters), and the fan-out of frames to consumers with the slow-consumer
 * policy.
 *
 * Connections are struct relay_conn records owned by the device layer;
 * the registry links them into entries and writes to their streams.  An
 * entry lives while it has a producer or consumers; when its producer
 * leaves, its consumers wait `grace` seconds for a producer of the same
 * uuid and keys, then are closed.  Everything is single-threaded on the
 * loop; closing a stream from here is safe (close callbacks are deferred),
 * and a closed consumer is unlinked only from its own close callback.
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
	double header_timeout;		/* registration deadline */
	double idle_timeout;		/* after registration; 0 = none */
};

void relay_opts_default(struct relay_opts *o);

struct relay_counters {
	uint64_t frames_in, bytes_in;
	uint64_t frames_out, bytes_out;
	uint64_t frames_dropped;
	uint64_t producers, consumers;	/* connected now */
	uint64_t refused;		/* 0x01 answers */
};

struct device_entry;

/* One relay connection (producer or consumer). */
struct relay_conn {
	struct stream *s;
	struct device_entry *entry;
	struct relay_conn *prev, *next;	/* the entry's consumers */
	bool producer;
	bool accepted;			/* consumer sent its accept byte */
	uint64_t frames, dropped;
	ev_tstamp since;
};

struct device_entry {
	struct registry *reg;
	char uuid[256];
	size_t uuid_len;
	char *keys;
	size_t keys_len, nkeys, frame_size;
	struct relay_conn *producer;
	struct relay_conn *consumers;
	size_t nconsumers;
	char *last;			/* last frame (last_value) */
	bool has_last;
	bool producer_paused;		/* block policy */
	ev_timer grace;
	struct relay_counters c;
	struct device_entry *hnext;
};

#define REGISTRY_BUCKETS 4096

struct registry {
	struct ev_loop *loop;
	struct relay_opts opts;
	struct device_entry *buckets[REGISTRY_BUCKETS];
	size_t entries;
	struct relay_counters total;
};

void registry_init(struct registry *reg, struct ev_loop *loop,
    const struct relay_opts *opts);
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

/*
 * Registers `conn` as the producer of uuid with the given keys.  Returns 0,
 * or -1 when the uuid is live and takeovers are refused.
 */
int registry_add_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys);

/*
 * Attaches a consumer (not yet accepted) to the live entry of uuid.
 * Returns the entry, or NULL (no producer, or max_consumers reached:
 * *why says which).
 */
struct device_entry *registry_add_consumer(struct registry *reg,
    struct relay_conn *conn, const char *uuid, size_t ulen,
    const char **why);

/* The consumer sent its accept byte: frames flow from now on. */
void registry_accept(struct relay_conn *conn);

/* `n` whole frames from the producer of conn->entry. */
void registry_publish(struct relay_conn *producer, const char *frames,
    size_t n);

/* The consumer's queue drained (stream write callback). */
void registry_drained(struct relay_conn *conn);

/* The connection is going away: unlink it (idempotent). */
void registry_remove(struct relay_conn *conn);

/* Escapes a uuid for logs (printable ASCII kept, the rest as \xNN). */
void registry_uuid_str(const char *uuid, size_t len, char *out, size_t outlen);

#endif
