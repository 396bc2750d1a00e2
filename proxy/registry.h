/*
 * registry: uuid -> entry (producer, keys, frame size, consumers,
 * counters), and the fan-out of frames to consumers under the
 * slow-consumer policy.
 *
 * One registry serves every relay listener of the process: a producer on
 * one listener and a consumer on another meet (one uuid namespace).  Each
 * listener is a struct relay_origin (its name, options and totals), and
 * options split by what they are about:
 *
 *   - a connection's own settings come from the listener it arrived on:
 *     for a consumer, slow_consumer and queue_bytes (and, in the relay
 *     layer, the limits and timeouts of any connection);
 *   - a device's settings come from the listener its producer registered
 *     on, the entry's `owner`: max_consumers, grace, takeover, last_value.
 *     A producer that takes over or resumes a uuid makes its own listener
 *     the owner; the owner stays while consumers wait out the grace period.
 *
 * Totals follow the connection: frames and bytes in count on the
 * producer's listener, out and dropped on the consumer's, producers and
 * consumers on their own.  Each origin's `devices` counts the entries it
 * owns, so the origins' sum is the registry's entry count.
 *
 * Connections are struct relay_conn records that the relay layer
 * (relay.h) embeds in its own, anywhere in them, and sets up with
 * registry_conn_init(); the registry links them into entries and writes
 * to their streams.  A
 * connection's stream has the relay_conn itself as its callback argument
 * (stream_set_callbacks(s, cb, &conn)): the registry's stream callbacks
 * take it from there and check its magic number, and the owner's recover
 * their record from it with container_of (obj.h).  An entry lives while it
 * has a producer or consumers:
 *
 *   - a producer registers a uuid with its keys; a second producer of a
 *     live uuid replaces the first, unless the owner's takeover = refuse;
 *   - consumers attach to a live uuid only.  One is *pending* from its
 *     uuid step (it has been sent the keys) until it accepts them, then
 *     *accepted*, and only then gets frames.  Only accepted consumers
 *     count against the owner's max_consumers: a uuid step is refused
 *     when max_consumers are accepted already, and so is an accept byte
 *     (registry_accept) that comes when they are.  A pending consumer
 *     holds no slot, and is not on the fan-out list (a crowd of them
 *     costs a frame nothing); the relay layer bounds how long it may
 *     stay pending by its registration deadline.  A limit lowered by a
 *     new owner applies from the next admission: no one accepted is
 *     closed for it;
 *   - when the producer leaves, its consumers, accepted and pending, stay
 *     attached for `grace` seconds: a producer of the same uuid with the
 *     same keys resumes the stream to them, one with other keys (or the
 *     end of the grace period) detaches and closes them.
 *
 * Fan-out hands each run of whole frames (what one read of the producer
 * brought) to each consumer's stream as it is read: one write per consumer,
 * which goes to the kernel at once when nothing is queued for it, and only
 * what the kernel does not take is copied into the consumer's queue.  A
 * consumer is slow when what the kernel will not take passes its
 * queue_bytes: before judging, what is queued is handed to the kernel
 * first (a consumer that reads keeps up with any burst the kernel's
 * buffers absorb).  Its listener's policy applies to it alone: RELAY_DROP
 * drops the frames that do not fit, whole, for it (counted),
 * RELAY_DISCONNECT closes it, RELAY_BLOCK pauses the producer until every
 * block consumer's queue is back under its queue_bytes.  While a producer
 * is paused nobody gets its frames: a block consumer holds the drop
 * consumers of its uuid too.  Frames are never split: a consumer sees a
 * gap, never half a frame.
 *
 * Everything runs on one loop thread.  Closing a stream from here is safe
 * (close callbacks are deferred); a connection the registry closes is
 * detached at once, so the relay layer's registry_remove() finds it gone.
 *
 * Remote peers (the cluster, cluster.h; a later in-process transport
 * between the workers of one machine would plug in the same way) are
 * relay_conns without a stream, made with registry_peer_init() and a
 * table of operations (struct relay_peer_ops) the registry calls where it
 * would use a stream:
 *
 *   - a remote producer (a producer on another node feeding this node's
 *     consumers) is a peer registered with registry_add_producer (or
 *     registry_take_producer, when the cluster has decided a takeover
 *     already) whose origin carries the settings of the device (its
 *     owner's max_consumers, grace, takeover, last_value); it publishes
 *     with registry_publish and leaves with registry_remove, like a
 *     stream's producer.  `hold` NULL means it cannot be held back (a
 *     node never waits for another): a `block` consumer of it is then
 *     treated as `drop` (what does not fit its queue is dropped for it,
 *     counted).  `evict` tells it a takeover replaced it;
 *   - the other nodes, as consumers of a local producer, are one link
 *     (registry_set_link): it gets every run of frames the producer
 *     publishes (`send`), after the local consumers, whatever the number
 *     of remote consumers behind it, takes no max_consumers slot, never
 *     holds the producer and is counted by its owner (the registry's
 *     counters are the local consumers');
 *   - an observer (registry_set_observer) hears of a producer that left
 *     by itself (not one replaced), of an entry about to be freed, and of
 *     the last consumer of a peer producer leaving: the cluster releases
 *     the uuid in its directory, forgets the uuid, or stops following a
 *     remote producer nobody here consumes any more; `ext` on an entry is
 *     the observer's.
 *
 * Which uuids live where (the directory) is the cluster's, outside the
 * registry.
 */
#ifndef FERRY_REGISTRY_H
#define FERRY_REGISTRY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay_proto.h"
#include "stream.h"

enum relay_slow { RELAY_DROP = 0, RELAY_DISCONNECT, RELAY_BLOCK };
enum relay_takeover { RELAY_REPLACE = 0, RELAY_REFUSE };

struct relay_opts {
	/* about a device: its owner's */
	size_t max_consumers;		/* per uuid */
	double grace;			/* seconds consumers wait */
	enum relay_takeover takeover;
	bool last_value;		/* a new consumer gets the last frame */
	/* about a connection: its own listener's */
	size_t queue_bytes;		/* per consumer, before the policy */
	enum relay_slow slow;
	struct relay_limits limits;	/* uuid and keys */
	double header_timeout;		/* registration deadline; 0 = none */
	double idle_timeout;		/* after registration; 0 = none */
};

void relay_opts_default(struct relay_opts *o);

/* Frames, and the bytes they make. */
struct relay_flow {
	uint64_t frames, bytes;
};

/*
 * Frames "out" are frames handed to a consumer's stream (written, or
 * queued); "dropped" frames were meant for a slow consumer and never
 * handed on.  producers, consumers and pending are gauges: producers registered, consumers accepted (what
 * max_consumers counts), consumers pending (answered 0x00 at their uuid,
 * keys not yet accepted).  refused counts refusals: 0x01 answers, and
 * consumers closed at their accept byte for max_consumers (the protocol
 * has no answer there); denied those the access list decided (listener
 * totals only).
 */
struct relay_counters {
	struct relay_flow in, out, dropped;
	uint64_t producers, consumers, pending;
	uint64_t refused;
	uint64_t denied;		/* refused by the access list */
};

/* A relay listener as the registry sees it (see above). */
struct relay_origin {
	char name[64];			/* for logs and metric labels */
	struct relay_opts opts;
	struct relay_counters total;
	size_t devices;			/* entries it owns now */
};

struct registry_entry;
struct relay_conn;

/* What the registry asks of a peer instead of its stream (see above). */
struct relay_peer_ops {
	/* A producer: stop publishing, and go on (NULL: cannot be held). */
	void (*hold)(struct relay_conn *c);
	void (*release)(struct relay_conn *c);
	/* A producer replaced by `by` (a takeover); detached already. */
	void (*evict)(struct relay_conn *c, const struct relay_conn *by);
	/* The link: `n` whole frames of `size` bytes the producer published. */
	void (*send)(struct relay_conn *c, const char *frames, size_t n,
	    size_t size);
	/* For log lines, where a stream's peer address would be. */
	const char *(*name)(const struct relay_conn *c);
};

/*
 * How frames reach a consumer whose stream does not carry them bare (a
 * WebSocket client, which gets one message per frame).  NULL wire: the
 * frames are written to the stream as they are.  write_frames has the
 * contract of stream_write_records() counted in frames: n frames of
 * `size` bytes, the first ones taken whole while what is queued stays
 * within `limit` bytes (SIZE_MAX: no limit); it returns how many it took.
 * `kind` names such consumers for the status page ("websocket"); the
 * registry does not look into it.
 */
struct relay_wire {
	const char *kind;
	size_t (*write_frames)(struct relay_conn *c, const char *frames,
	    size_t n, size_t size, size_t limit);
	/*
	 * Detached by the registry (producer gone, other keys): says so and
	 * closes in its own way; `why` is for the peer and the log.
	 */
	void (*end)(struct relay_conn *c, const char *why);
};

#define RELAY_CONN_MAGIC 0x72636f6eu	/* "rcon" */

/* One relay connection (producer or consumer), or a peer. */
struct relay_conn {
	uint32_t magic;			/* RELAY_CONN_MAGIC while it lives */
	struct stream *s;		/* NULL for a peer */
	const struct relay_peer_ops *ops;	/* a peer's; NULL for a stream */
	struct relay_origin *origin;	/* the listener it arrived on */
	struct registry_entry *entry;	/* NULL when detached */
	struct relay_conn *prev, *next;	/* consumers: the entry's list */
	const struct relay_wire *wire;	/* a stream's framing; NULL: bare */
	bool producer;
	bool accepted;			/* consumer: took a slot, gets frames */
	uint64_t frames;		/* published (producer) / queued */
	uint64_t dropped;		/* consumer: frames dropped for it */
};

#define REGISTRY_ENTRY_MAGIC 0x72656e74u	/* "rent" */

/* What every frame touches comes first, the uuid (256 bytes) last. */
struct registry_entry {
	struct relay_conn *producer;
	struct relay_conn *consumers;	/* accepted: the fan-out list */
	size_t frame_size;
	char *last;			/* last frame (last_value) */
	bool has_last;
	bool producer_paused;		/* block policy holds the producer */
	struct relay_conn *link;	/* the other nodes, or NULL */
	struct relay_counters c;
	struct registry *reg;
	struct relay_origin *owner;	/* its producer's listener */
	size_t nconsumers;		/* at most the owner's max_consumers,
					 * unless a new owner lowered it */
	struct relay_conn *pending;	/* sent the keys, not yet accepted */
	size_t npending;
	char *keys;
	size_t keys_len, nkeys;
	ev_timer grace;
	ev_tstamp since;		/* made at (loop time) */
	ev_tstamp rate_at;		/* the rate's window started at */
	uint64_t rate_frames;		/* frames in at that time */
	double rate_hz;			/* frames in per second, last window */
	void *ext;			/* the observer's */
	uint32_t magic;			/* REGISTRY_ENTRY_MAGIC while it lives */
	struct registry_entry *hnext;
	size_t bucket;
	size_t uuid_len;
	char uuid[256];
};

#define REGISTRY_BUCKETS 4096

/* Called from inside registry calls: they must not call back into it. */
struct registry_observer {
	/* A producer left by itself (closed, removed); not one replaced. */
	void (*producer_left)(void *arg, struct registry_entry *e,
	    struct relay_conn *p);
	/* Nobody is attached any more: the entry is freed on return. */
	void (*entry_freed)(void *arg, struct registry_entry *e);
	/*
	 * The last consumer of a peer producer's entry left: the observer may
	 * remove that producer (which frees the entry).
	 */
	void (*consumers_gone)(void *arg, struct registry_entry *e);
};

struct registry {
	struct ev_loop *loop;
	uint64_t seed;			/* of the uuid hash */
	struct registry_entry *buckets[REGISTRY_BUCKETS];
	size_t entries;
	const struct registry_observer *observer;
	void *observer_arg;
};

void registry_init(struct registry *reg, struct ev_loop *loop);
/* Frees the entries (their streams must be closed already). */
void registry_destroy(struct registry *reg);
/* The same, allocated; NULL when memory cannot be had.  NULL is ignored. */
struct registry *registry_new(struct ev_loop *loop);
void registry_free(struct registry *reg);

struct registry_entry *registry_find(struct registry *reg, const char *uuid,
    size_t len);
/* The entry has a producer now. */
static inline bool
registry_live(const struct registry_entry *e)
{
	return e != NULL && e->producer != NULL;
}

/* Iterates the entries: NULL starts, NULL ends.  No changes meanwhile. */
struct registry_entry *registry_next(struct registry *reg,
    struct registry_entry *e);

/* Whether a producer of uuid would be refused: it is live, and its
 * owner refuses takeovers. */
bool registry_refuses_producer(struct registry *reg, const char *uuid,
    size_t len);

/*
 * Makes `conn` a detached connection on stream `s` (whose callback
 * argument must be `conn`) from listener `origin`.  Its owner clears
 * conn->magic when it frees it, after registry_remove().
 */
void registry_conn_init(struct relay_conn *conn, struct stream *s,
    struct relay_origin *origin);
/* The same for a peer: no stream, its operations instead. */
void registry_peer_init(struct relay_conn *conn,
    const struct relay_peer_ops *ops, struct relay_origin *origin);

/* The observer (one; NULL: none). */
void registry_set_observer(struct registry *reg,
    const struct registry_observer *ob, void *arg);

/*
 * Registers `conn` (its origin set) as the producer of uuid with the given
 * keys (klen bytes naming nkeys keys); conn's listener becomes the owner.
 * Returns 0, or -1 with *why set: the uuid is live and its owner refuses
 * takeovers, or memory could not be had.
 */
int registry_add_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, const char **why);

/*
 * The same, without asking the owner's takeover setting: the caller (the
 * cluster, whose directory said so) decided that conn takes the uuid.
 */
int registry_take_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, const char **why);

/*
 * Attaches a consumer (its origin set) to the live entry of uuid, pending:
 * it holds no slot and gets no frames.  Returns the entry, or NULL with
 * *why set (no producer holds the uuid, or the owner's max_consumers are
 * accepted already).
 */
struct registry_entry *registry_add_consumer(struct registry *reg,
    struct relay_conn *conn, const char *uuid, size_t ulen,
    const char **why);

/*
 * The pending consumer sent its accept byte: if fewer than the owner's
 * max_consumers are accepted, it takes a slot, frames flow to it from now
 * on (with last_value, the last frame first), and 0 is returned.
 * Otherwise (or if it was detached meanwhile) it is detached, with *why
 * set, and -1 returned: the caller closes it.  0 if already accepted.
 */
int registry_accept(struct relay_conn *conn, const char **why);

/* `n` whole frames from the producer conn (ignored unless it is live). */
void registry_publish(struct relay_conn *producer, const char *frames,
    size_t n);

/*
 * The last value of a peer producer's device, learnt late (the cluster
 * asks the producer's node when a node's first consumer comes): kept as
 * the entry's last frame, and sent to every accepted consumer that has
 * had no frame yet.  Ignored unless the producer is live, the device
 * keeps last values, and no newer frame came meanwhile.
 */
void registry_publish_last(struct relay_conn *producer, const char *frame);

/* The entry's link to the other nodes (NULL: none; see above). */
void registry_set_link(struct registry_entry *e, struct relay_conn *link);

/* The connection is going away: detach it (idempotent). */
void registry_remove(struct relay_conn *conn);

/*
 * Frames in per second, over the last whole second or so (0 when none
 * came for two seconds).  For the status page.
 */
double registry_rate_hz(const struct registry_entry *e);

/* Escapes a uuid for logs (printable ASCII kept, the rest as \xNN). */
void registry_uuid_str(const char *uuid, size_t len, char *out, size_t outlen);
/* Room registry_uuid_str needs for any uuid. */
#define REGISTRY_UUID_STR (255 * 4 + 1)

#endif
