/* registry: see registry.h. */
#define _GNU_SOURCE
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"
#include "obj.h"

void
relay_opts_default(struct relay_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_consumers = 64;
	o->queue_bytes = 256 * 1024;
	o->slow = RELAY_DROP;
	o->grace = 10;
	o->takeover = RELAY_REPLACE;
	relay_limits_default(&o->limits);
	o->header_timeout = 10;
}

void
registry_uuid_str(const char *uuid, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	if (outlen == 0)
		return;
	for (size_t i = 0; i < len && o + 5 <= outlen - 1; i++) {
		unsigned char c = (unsigned char)uuid[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
}

/* FNV-1a from a per-registry seed: uuids cannot be picked to collide. */
static size_t
hash(const struct registry *reg, const char *p, size_t len)
{
	uint64_t h = 1469598103934665603ull ^ reg->seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return (size_t)(h % REGISTRY_BUCKETS);
}

void
registry_init(struct registry *reg, struct ev_loop *loop)
{
	memset(reg, 0, sizeof(*reg));
	reg->loop = loop;
	if (getrandom(&reg->seed, sizeof(reg->seed), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(reg->seed)) {
		/* Early boot without entropy: weaker, still not fixed. */
		reg->seed = (uint64_t)time(NULL) * 2654435761u ^
		    (uint64_t)(uintptr_t)reg;
	}
}

struct registry *
registry_new(struct ev_loop *loop)
{
	struct registry *reg = malloc(sizeof(*reg));

	if (reg != NULL)
		registry_init(reg, loop);
	return reg;
}

void
registry_free(struct registry *reg)
{
	if (reg == NULL)
		return;
	registry_destroy(reg);
	free(reg);
}

struct registry_entry *
registry_find(struct registry *reg, const char *uuid, size_t len)
{
	for (struct registry_entry *e = reg->buckets[hash(reg, uuid, len)]; e;
	    e = e->hnext)
		if (e->uuid_len == len && memcmp(e->uuid, uuid, len) == 0)
			return e;
	return NULL;
}

struct registry_entry *
registry_next(struct registry *reg, struct registry_entry *e)
{
	size_t b = 0;

	if (e != NULL) {
		if (e->hnext != NULL)
			return e->hnext;
		b = e->bucket + 1;
	}
	for (; b < REGISTRY_BUCKETS; b++)
		if (reg->buckets[b] != NULL)
			return reg->buckets[b];
	return NULL;
}

static void
entry_free(struct registry_entry *e)
{
	struct registry *reg = e->reg;
	struct registry_entry **pp = &reg->buckets[e->bucket];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	ev_timer_stop(reg->loop, &e->grace);
	if (reg->observer != NULL)
		reg->observer->entry_freed(reg->observer_arg, e);
	e->magic = 0;
	reg->entries--;
	if (e->owner != NULL)
		e->owner->devices--;
	free(e->keys);
	free(e->last);
	free(e);
}

static bool
entry_has_consumers(const struct registry_entry *e)
{
	return e->consumers != NULL || e->pending != NULL;
}

/* Frees the entry once nobody is attached: the uuid is released. */
static void
entry_maybe_free(struct registry_entry *e)
{
	if (e->producer == NULL && !entry_has_consumers(e))
		entry_free(e);
}

/*
 * A consumer left: the entry is freed if nobody is left, and the observer
 * told when only a peer producer is (it may remove it, freeing e).
 */
static void
consumer_left(struct registry_entry *e)
{
	struct registry *reg = e->reg;

	if (e->producer != NULL && e->producer->ops != NULL &&
	    !entry_has_consumers(e) && reg->observer != NULL &&
	    reg->observer->consumers_gone != NULL) {
		reg->observer->consumers_gone(reg->observer_arg, e);
		return;
	}
	entry_maybe_free(e);
}

static void
log_entry(const struct registry_entry *e, const char *what)
{
	char u[REGISTRY_UUID_STR], pending[48] = "";

	registry_uuid_str(e->uuid, e->uuid_len, u, sizeof(u));
	if (e->npending > 0)
		snprintf(pending, sizeof(pending), ", %zu pending",
		    e->npending);
	LOGI("relay %s: uuid '%s': %s (consumers: %zu%s)", e->owner->name, u,
	    what, e->nconsumers, pending);
}

/* The list a consumer is on: accepted ones get frames, pending ones not. */
static struct relay_conn **
consumer_list(struct registry_entry *e, const struct relay_conn *c)
{
	return c->accepted ? &e->consumers : &e->pending;
}

static void
link_consumer(struct registry_entry *e, struct relay_conn *c)
{
	struct relay_conn **head = consumer_list(e, c);

	c->entry = e;
	c->prev = NULL;
	c->next = *head;
	if (*head != NULL)
		(*head)->prev = c;
	*head = c;
	if (c->accepted) {
		e->nconsumers++;
		e->c.consumers++;
		c->origin->total.consumers++;
	} else {
		e->npending++;
		e->c.pending++;
		c->origin->total.pending++;
	}
}

static void
unlink_consumer(struct registry_entry *e, struct relay_conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		*consumer_list(e, c) = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->entry = NULL;
	if (c->accepted) {
		e->nconsumers--;
		e->c.consumers--;
		c->origin->total.consumers--;
	} else {
		e->npending--;
		e->c.pending--;
		c->origin->total.pending--;
	}
}

/*
 * Detaches every consumer, accepted or pending, and closes it: after the
 * queued frames with `flush`, at once otherwise (frames of another layout
 * must not reach it).  The entry may be left empty; the caller decides
 * whether to free it.
 */
static void
detach_consumers(struct registry_entry *e, const char *why, bool flush)
{
	struct relay_conn *c;

	while ((c = e->consumers) != NULL || (c = e->pending) != NULL) {
		unlink_consumer(e, c);
		stream_set_error(c->s, "%s", why);
		if (c->wire != NULL && c->wire->end != NULL)
			c->wire->end(c, why);
		else if (flush)
			stream_end(c->s);
		else
			stream_close(c->s, STREAM_CLOSE_LOCAL);
	}
}

static void
grace_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct registry_entry *e;

	(void)loop;
	(void)revents;
	CAST_OBJ_NOTNULL(e, w->data, REGISTRY_ENTRY_MAGIC);
	if (e->producer != NULL)
		return;
	log_entry(e, "no producer within the grace period, closing");
	detach_consumers(e, "producer gone, grace period over", true);
	entry_maybe_free(e);
}

static struct registry_entry *
entry_new(struct registry *reg, const char *uuid, size_t ulen)
{
	struct registry_entry *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->magic = REGISTRY_ENTRY_MAGIC;
	e->reg = reg;
	memcpy(e->uuid, uuid, ulen);
	e->uuid_len = ulen;
	e->since = e->rate_at = ev_now(reg->loop);
	e->bucket = hash(reg, uuid, ulen);
	ev_timer_init(&e->grace, grace_expired, 0., 0.);
	e->grace.data = e;
	e->hnext = reg->buckets[e->bucket];
	reg->buckets[e->bucket] = e;
	reg->entries++;
	return e;
}

/*
 * The producer side: all the registry asks of a producer's connection
 * beyond its frames (see registry.h on a remote producer).
 */

/* Who a connection is, for log lines: its peer address, or the peer's. */
static const char *
conn_name(const struct relay_conn *c)
{
	return c->ops != NULL ? c->ops->name(c) : stream_peer(c->s);
}

/* Whether the producer can be held back (a peer may not be). */
static bool
can_hold(const struct relay_conn *p)
{
	return p->ops == NULL || p->ops->hold != NULL;
}

/* Stop taking its frames (the block policy). */
static void
producer_hold(struct relay_conn *p)
{
	if (p->ops != NULL)
		p->ops->hold(p);
	else
		stream_pause_reading(p->s);
}

static void
producer_release(struct relay_conn *p)
{
	if (p->ops != NULL)
		p->ops->release(p);
	else
		stream_resume_reading(p->s);
}

/* Replaced by the producer `by` (a takeover): closed, saying by whom. */
static void
producer_evict(struct relay_conn *p, const struct relay_conn *by)
{
	if (p->ops != NULL) {
		p->ops->evict(p, by);
		return;
	}
	stream_set_error(p->s, "replaced by a new producer from %s on %s",
	    conn_name(by), by->origin->name);
	stream_close(p->s, STREAM_CLOSE_LOCAL);
}

/* The producer slot is emptied; its consumers start waiting if `grace`. */
static void
unlink_producer(struct registry_entry *e, bool grace)
{
	struct relay_conn *p = e->producer;

	p->entry = NULL;
	p->origin->total.producers--;
	e->producer = NULL;
	e->producer_paused = false;
	e->c.producers--;
	if (grace && entry_has_consumers(e)) {
		log_entry(e, "producer gone, consumers wait");
		ev_timer_set(&e->grace, e->owner->opts.grace, 0.);
		ev_timer_start(e->reg->loop, &e->grace);
	}
}

/* The device's settings are now those of `o`. */
static void
set_owner(struct registry_entry *e, struct relay_origin *o)
{
	if (e->owner == o)
		return;
	if (e->owner != NULL)
		e->owner->devices--;
	e->owner = o;
	o->devices++;
}

void
registry_conn_init(struct relay_conn *conn, struct stream *s,
    struct relay_origin *origin)
{
	memset(conn, 0, sizeof(*conn));
	conn->magic = RELAY_CONN_MAGIC;
	conn->s = s;
	conn->origin = origin;
}

void
registry_peer_init(struct relay_conn *conn, const struct relay_peer_ops *ops,
    struct relay_origin *origin)
{
	registry_conn_init(conn, NULL, origin);
	conn->ops = ops;
}

void
registry_set_observer(struct registry *reg,
    const struct registry_observer *ob, void *arg)
{
	reg->observer = ob;
	reg->observer_arg = arg;
}

void
registry_set_link(struct registry_entry *e, struct relay_conn *link)
{
	e->link = link;
}

bool
registry_refuses_producer(struct registry *reg, const char *uuid,
    size_t len)
{
	struct registry_entry *e = registry_find(reg, uuid, len);

	return registry_live(e) && e->owner->opts.takeover == RELAY_REFUSE;
}

static int
add_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, bool decided, const char **why)
{
	struct registry_entry *e = registry_find(reg, uuid, ulen);
	struct relay_origin *o = conn->origin;
	size_t fs = nkeys * 4;
	char *kcopy, *last = NULL;
	bool same;

	/* The device decides whether it may be taken over: its owner. */
	if (!decided && registry_live(e) &&
	    e->owner->opts.takeover == RELAY_REFUSE) {
		*why = "uuid held by a live producer";
		return -1;
	}
	/* Everything that can fail comes before anything changes. */
	kcopy = malloc(klen);
	if (o->opts.last_value)
		last = malloc(fs);
	if (kcopy == NULL || (o->opts.last_value && last == NULL) ||
	    (e == NULL && (e = entry_new(reg, uuid, ulen)) == NULL)) {
		free(kcopy);
		free(last);
		*why = "out of memory";
		return -1;
	}
	memcpy(kcopy, keys, klen);
	if (e->producer != NULL) {
		/* A phone reconnecting: the new connection wins. */
		struct relay_conn *old = e->producer;
		unlink_producer(e, false);
		producer_evict(old, conn);
	}
	same = e->keys != NULL && e->keys_len == klen &&
	    memcmp(e->keys, keys, klen) == 0;
	if (!same && entry_has_consumers(e)) {
		/*
		 * Same uuid, other layout: the waiting consumers cannot use
		 * it, nor can those given the old keys and not yet accepted.
		 */
		log_entry(e, "producer has other keys, closing");
		detach_consumers(e, "producer came back with other keys",
		    false);
	}
	/* A kept last frame is only good for the same layout and owner. */
	if (!same || !o->opts.last_value)
		e->has_last = false;
	if (!o->opts.last_value) {
		free(e->last);
		e->last = NULL;
	} else if (e->last == NULL || !same) {
		free(e->last);
		e->last = last;
		last = NULL;
	}
	free(last);
	free(e->keys);
	e->keys = kcopy;
	e->keys_len = klen;
	e->nkeys = nkeys;
	e->frame_size = fs;
	ev_timer_stop(reg->loop, &e->grace);
	set_owner(e, o);
	e->producer = conn;
	e->producer_paused = false;
	conn->entry = e;
	conn->producer = true;
	e->c.producers++;
	o->total.producers++;
	return 0;
}

int
registry_add_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, const char **why)
{
	return add_producer(reg, conn, uuid, ulen, keys, klen, nkeys, false,
	    why);
}

int
registry_take_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys, const char **why)
{
	return add_producer(reg, conn, uuid, ulen, keys, klen, nkeys, true,
	    why);
}

struct registry_entry *
registry_add_consumer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char **why)
{
	struct registry_entry *e = registry_find(reg, uuid, ulen);

	if (!registry_live(e)) {
		*why = "no producer holds this uuid";
		return NULL;
	}
	/* Answered now if it is already full; only accepting takes a slot. */
	if (e->nconsumers >= e->owner->opts.max_consumers) {
		*why = "too many consumers for this uuid";
		return NULL;
	}
	conn->producer = false;
	conn->accepted = false;
	link_consumer(e, conn);
	return e;
}

/* Frames and their bytes, counted on the entry and on a listener. */
static void
flow_add(struct relay_flow *f, size_t frames, size_t frame_size)
{
	f->frames += frames;
	f->bytes += frames * frame_size;
}

static void
count_out(struct registry_entry *e, struct relay_conn *c, size_t frames)
{
	c->frames += frames;
	flow_add(&e->c.out, frames, e->frame_size);
	flow_add(&c->origin->total.out, frames, e->frame_size);
}

static void
count_drop(struct registry_entry *e, struct relay_conn *c, size_t frames)
{
	c->dropped += frames;
	flow_add(&e->c.dropped, frames, e->frame_size);
	flow_add(&c->origin->total.dropped, frames, e->frame_size);
}

/* A block consumer holding its producer back. */
static bool
holds(const struct relay_conn *c)
{
	return c->origin->opts.slow == RELAY_BLOCK && c->accepted &&
	    !stream_closed(c->s) &&
	    stream_write_pending(c->s) > c->origin->opts.queue_bytes;
}

/* Block policy: the producer reads again once no consumer holds it. */
static void
maybe_unblock(struct registry_entry *e)
{
	if (!e->producer_paused || e->producer == NULL)
		return;
	for (struct relay_conn *c = e->consumers; c != NULL; c = c->next)
		if (holds(c))
			return;
	e->producer_paused = false;
	producer_release(e->producer);
}

static void
consumer_drained(struct stream *s, void *arg)
{
	struct relay_conn *c;

	(void)s;
	/* The stream's callback argument is its relay_conn (registry.h). */
	CAST_OBJ_NOTNULL(c, arg, RELAY_CONN_MAGIC);
	if (c->entry != NULL)
		maybe_unblock(c->entry);
}

/* Hands frames to one consumer's stream. */
static int
queue_frames(struct registry_entry *e, struct relay_conn *c, const char *p,
    size_t n)
{
	if (c->wire != NULL) {
		if (c->wire->write_frames(c, p, n, e->frame_size, SIZE_MAX) < n)
			return -1;
	} else if (stream_write(c->s, p, n * e->frame_size, NULL) < 0)
		return -1;
	count_out(e, c, n);
	return 0;
}

/* As many of n frames as `limit` lets through, whole (send_to). */
static size_t
write_frames(struct registry_entry *e, struct relay_conn *c,
    const char *p, size_t n, size_t limit)
{
	size_t fs = e->frame_size;

	if (c->wire != NULL)
		return c->wire->write_frames(c, p, n, fs, limit);
	return stream_write_records(c->s, p, n * fs, fs, limit);
}

int
registry_accept(struct relay_conn *conn, const char **why)
{
	struct registry_entry *e = conn->entry;

	if (e == NULL) {
		*why = "detached from its uuid";
		return -1;
	}
	if (conn->accepted)
		return 0;
	unlink_consumer(e, conn);
	/* The slot is taken here, by the owner's limit of this moment. */
	if (e->nconsumers >= e->owner->opts.max_consumers) {
		*why = "too many consumers for this uuid";
		consumer_left(e);
		return -1;
	}
	conn->accepted = true;
	link_consumer(e, conn);
	if (e->has_last && e->producer != NULL)
		(void)queue_frames(e, conn, e->last, 1);
	return 0;
}

/*
 * Sends what its policy allows of `n` frames to one consumer.  A consumer
 * is slow when what the kernel will not take of its frames passes its
 * queue_bytes, not when one read's worth of frames waits to be written: a
 * producer's burst (one write of many frames, read at once) is offered to
 * the kernel as it is handed on, and what was queued goes first.
 */
static void
send_to(struct registry_entry *e, struct relay_conn *c, const char *frames,
    size_t n)
{
	const struct relay_opts *o = &c->origin->opts;
	size_t fs = e->frame_size, took;
	enum relay_slow slow = o->slow;

	/* A producer that cannot wait (on another node): drop instead. */
	if (slow == RELAY_BLOCK && !can_hold(e->producer))
		slow = RELAY_DROP;
	if (slow == RELAY_BLOCK) {
		/* Judged on what the kernel refuses, as below. */
		if (stream_write_pending(c->s) + n * fs > o->queue_bytes)
			stream_flush(c->s);
		(void)queue_frames(e, c, frames, n);
		if (!holds(c))
			return;
		/* Once it has drained, the producer may read again. */
		stream_on_drained(c->s, consumer_drained);
		if (!e->producer_paused) {
			/* The seed's behaviour, by choice: hold the producer. */
			e->producer_paused = true;
			producer_hold(e->producer);
		}
		return;
	}
	took = write_frames(e, c, frames, n, o->queue_bytes);
	if (took > 0)
		count_out(e, c, took);
	if (took == n || stream_closed(c->s))
		return;
	if (slow == RELAY_DISCONNECT) {
		count_drop(e, c, n - took);
		stream_set_error(c->s, "slow consumer: %zu bytes queued",
		    stream_write_pending(c->s));
		unlink_consumer(e, c);
		stream_close(c->s, STREAM_CLOSE_LIMIT);
		return;
	}
	/*
	 * Drop: the oldest frames went or wait in the queue, the rest of the
	 * run is dropped whole; the consumer sees a gap, never half a frame.
	 */
	count_drop(e, c, n - took);
}

/* Closes the rate's window once it is a second old (before counting). */
static void
update_rate(struct registry_entry *e)
{
	ev_tstamp now = ev_now(e->reg->loop), dt = now - e->rate_at;

	if (dt < 1.0)
		return;
	e->rate_hz = (double)(e->c.in.frames - e->rate_frames) / dt;
	e->rate_frames = e->c.in.frames;
	e->rate_at = now;
}

double
registry_rate_hz(const struct registry_entry *e)
{
	ev_tstamp dt = ev_now(e->reg->loop) - e->rate_at;

	if (dt >= 2.0)
		return 0;
	return e->rate_hz;
}

void
registry_publish(struct relay_conn *producer, const char *frames, size_t n)
{
	struct registry_entry *e = producer->entry;
	struct relay_conn *c, *next;

	if (e == NULL || e->producer != producer || n == 0)
		return;
	producer->frames += n;
	update_rate(e);
	flow_add(&e->c.in, n, e->frame_size);
	flow_add(&producer->origin->total.in, n, e->frame_size);
	for (c = e->consumers; c != NULL; c = next) {
		next = c->next;		/* disconnect unlinks c */
		if (!stream_closed(c->s))
			send_to(e, c, frames, n);
	}
	/* The other nodes last: a node never waits for them. */
	if (e->link != NULL)
		e->link->ops->send(e->link, frames, n, e->frame_size);
	if (e->last != NULL) {
		memcpy(e->last, frames + (n - 1) * e->frame_size,
		    e->frame_size);
		e->has_last = true;
	}
}

void
registry_publish_last(struct relay_conn *producer, const char *frame)
{
	struct registry_entry *e = producer->entry;
	struct relay_conn *c, *next;

	if (e == NULL || e->producer != producer || e->last == NULL ||
	    e->has_last)
		return;
	memcpy(e->last, frame, e->frame_size);
	e->has_last = true;
	for (c = e->consumers; c != NULL; c = next) {
		next = c->next;
		if (c->frames == 0 && !stream_closed(c->s))
			(void)queue_frames(e, c, e->last, 1);
	}
}

void
registry_remove(struct relay_conn *conn)
{
	struct registry_entry *e = conn->entry;

	if (e == NULL)
		return;
	if (conn->producer) {
		bool left = e->producer == conn;
		if (left)
			unlink_producer(e, true);
		conn->entry = NULL;
		if (left && e->reg->observer != NULL)
			e->reg->observer->producer_left(e->reg->observer_arg, e,
			    conn);
		entry_maybe_free(e);
		return;
	}
	unlink_consumer(e, conn);
	/* A slow consumer leaving may unblock the producer. */
	maybe_unblock(e);
	consumer_left(e);
}

void
registry_destroy(struct registry *reg)
{
	for (size_t b = 0; b < REGISTRY_BUCKETS; b++)
		while (reg->buckets[b] != NULL)
			entry_free(reg->buckets[b]);
}
