/* registry: see registry.h. */
#define _GNU_SOURCE
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void
relay_opts_default(struct relay_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_consumers = 64;
	o->queue_bytes = 256 * 1024;
	o->slow = RELAY_DROP;
	o->grace = 10;
	o->takeover = RELAY_REPLACE;
	o->max_uuid = 255;
	o->max_keys_bytes = 65536;
	o->max_keys = 16384;
	o->header_timeout = 10;
}

void
registry_uuid_str(const char *uuid, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)uuid[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	if (outlen > 0)
		out[o < outlen ? o : outlen - 1] = '\0';
}

static size_t
hash(const char *p, size_t len)
{
	uint64_t h = 1469598103934665603ull;	/* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return (size_t)(h % REGISTRY_BUCKETS);
}

void
registry_init(struct registry *reg, struct ev_loop *loop,
    const struct relay_opts *opts)
{
	memset(reg, 0, sizeof(*reg));
	reg->loop = loop;
	if (opts != NULL)
		reg->opts = *opts;
	else
		relay_opts_default(&reg->opts);
}

struct device_entry *
registry_find(struct registry *reg, const char *uuid, size_t len)
{
	for (struct device_entry *e = reg->buckets[hash(uuid, len)]; e;
	    e = e->hnext)
		if (e->uuid_len == len && memcmp(e->uuid, uuid, len) == 0)
			return e;
	return NULL;
}

static void
entry_free(struct device_entry *e)
{
	struct registry *reg = e->reg;
	struct device_entry **pp = &reg->buckets[hash(e->uuid, e->uuid_len)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	ev_timer_stop(reg->loop, &e->grace);
	reg->entries--;
	free(e->keys);
	free(e->last);
	free(e);
}

/* Frees the entry once nobody is attached. */
static void
entry_maybe_free(struct device_entry *e)
{
	if (e->producer == NULL && e->consumers == NULL)
		entry_free(e);
}

static void
grace_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct device_entry *e = w->data;
	char u[1100];

	(void)loop;
	(void)revents;
	if (e->producer != NULL)
		return;
	registry_uuid_str(e->uuid, e->uuid_len, u, sizeof(u));
	LOGI("relay: uuid '%s': no producer within %.1f s, closing %zu "
	    "consumers", u, e->reg->opts.grace, e->nconsumers);
	for (struct relay_conn *c = e->consumers; c != NULL; c = c->next) {
		stream_set_error(c->s, "producer gone");
		stream_end(c->s);
	}
}

static struct device_entry *
entry_new(struct registry *reg, const char *uuid, size_t ulen)
{
	struct device_entry *e = calloc(1, sizeof(*e));
	size_t b = hash(uuid, ulen);

	if (e == NULL)
		return NULL;
	e->reg = reg;
	memcpy(e->uuid, uuid, ulen);
	e->uuid_len = ulen;
	ev_timer_init(&e->grace, grace_expired, reg->opts.grace, 0.);
	e->grace.data = e;
	e->hnext = reg->buckets[b];
	reg->buckets[b] = e;
	reg->entries++;
	return e;
}

static void
close_consumers(struct device_entry *e, const char *why)
{
	for (struct relay_conn *c = e->consumers; c != NULL; c = c->next) {
		stream_set_error(c->s, "%s", why);
		stream_close(c->s, STREAM_CLOSE_LOCAL);
	}
}

int
registry_add_producer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char *keys, size_t klen,
    size_t nkeys)
{
	struct device_entry *e = registry_find(reg, uuid, ulen);
	char *kcopy;

	if (e != NULL && e->producer != NULL) {
		if (reg->opts.takeover == RELAY_REFUSE)
			return -1;
		/* A phone reconnecting: the new connection wins. */
		struct relay_conn *old = e->producer;
		stream_set_error(old->s, "replaced by a new producer from %s",
		    stream_peer(conn->s));
		registry_remove(old);
		stream_close(old->s, STREAM_CLOSE_LOCAL);
		e = registry_find(reg, uuid, ulen);
	}
	kcopy = malloc(klen);
	if (kcopy == NULL)
		return -1;
	memcpy(kcopy, keys, klen);
	if (e == NULL) {
		e = entry_new(reg, uuid, ulen);
		if (e == NULL) {
			free(kcopy);
			return -1;
		}
	} else if (e->keys_len != klen || memcmp(e->keys, keys, klen) != 0) {
		/* Same uuid, other layout: the waiting consumers cannot use it. */
		close_consumers(e, "producer came back with other keys");
		e->has_last = false;
	}
	free(e->keys);
	e->keys = kcopy;
	e->keys_len = klen;
	e->nkeys = nkeys;
	if (e->frame_size != nkeys * 4) {
		free(e->last);
		e->last = NULL;
		e->has_last = false;
	}
	e->frame_size = nkeys * 4;
	if (reg->opts.last_value && e->last == NULL)
		e->last = malloc(e->frame_size);
	ev_timer_stop(reg->loop, &e->grace);
	e->producer = conn;
	e->producer_paused = false;
	conn->entry = e;
	conn->producer = true;
	e->c.producers++;
	reg->total.producers++;
	return 0;
}

struct device_entry *
registry_add_consumer(struct registry *reg, struct relay_conn *conn,
    const char *uuid, size_t ulen, const char **why)
{
	struct device_entry *e = registry_find(reg, uuid, ulen);

	if (!registry_live(e)) {
		*why = "no producer holds this uuid";
		return NULL;
	}
	if (e->nconsumers >= reg->opts.max_consumers) {
		*why = "too many consumers for this uuid";
		return NULL;
	}
	conn->entry = e;
	conn->producer = false;
	conn->prev = NULL;
	conn->next = e->consumers;
	if (e->consumers != NULL)
		e->consumers->prev = conn;
	e->consumers = conn;
	e->nconsumers++;
	e->c.consumers++;
	reg->total.consumers++;
	return e;
}

static void
count_out(struct device_entry *e, struct relay_conn *c, size_t frames)
{
	size_t bytes = frames * e->frame_size;

	c->frames += frames;
	e->c.frames_out += frames;
	e->c.bytes_out += bytes;
	e->reg->total.frames_out += frames;
	e->reg->total.bytes_out += bytes;
}

static void
count_drop(struct device_entry *e, struct relay_conn *c, size_t frames)
{
	c->dropped += frames;
	e->c.frames_dropped += frames;
	e->reg->total.frames_dropped += frames;
}

static void
consumer_drained(struct stream *s, void *arg)
{
	(void)s;
	registry_drained(arg);
}

void
registry_accept(struct relay_conn *conn)
{
	struct device_entry *e = conn->entry;

	conn->accepted = true;
	if (e != NULL && e->has_last && e->producer != NULL &&
	    stream_write(conn->s, e->last, e->frame_size,
	    consumer_drained) == 0)
		count_out(e, conn, 1);
}

/* Sends what the policy allows of `n` frames to one consumer. */
static void
send_to(struct device_entry *e, struct relay_conn *c, const char *frames,
    size_t n)
{
	struct registry *reg = e->reg;
	size_t fs = e->frame_size;
	size_t queued = stream_write_pending(c->s);
	size_t room = queued < reg->opts.queue_bytes ?
	    reg->opts.queue_bytes - queued : 0;
	size_t fit = room / fs;

	if (fit >= n || reg->opts.slow == RELAY_BLOCK) {
		if (stream_write(c->s, frames, n * fs, consumer_drained) == 0)
			count_out(e, c, n);
		if (reg->opts.slow == RELAY_BLOCK &&
		    stream_write_pending(c->s) > reg->opts.queue_bytes &&
		    !e->producer_paused) {
			/* The seed's behaviour, by choice: hold the producer. */
			e->producer_paused = true;
			stream_pause_reading(e->producer->s);
		}
		return;
	}
	if (reg->opts.slow == RELAY_DISCONNECT) {
		stream_set_error(c->s, "slow consumer: %zu bytes queued",
		    queued);
		count_drop(e, c, n);
		stream_close(c->s, STREAM_CLOSE_LIMIT);
		return;
	}
	/* Drop: whole frames only, the newest are the ones that matter
	 * least to keep order simple: send the first `fit`, drop the rest. */
	if (fit > 0 && stream_write(c->s, frames, fit * fs,
	    consumer_drained) == 0)
		count_out(e, c, fit);
	count_drop(e, c, n - fit);
}

void
registry_publish(struct relay_conn *producer, const char *frames, size_t n)
{
	struct device_entry *e = producer->entry;
	size_t bytes;

	if (e == NULL || e->producer != producer || n == 0)
		return;
	bytes = n * e->frame_size;
	producer->frames += n;
	e->c.frames_in += n;
	e->c.bytes_in += bytes;
	e->reg->total.frames_in += n;
	e->reg->total.bytes_in += bytes;
	for (struct relay_conn *c = e->consumers; c != NULL; c = c->next)
		if (c->accepted && !stream_closed(c->s))
			send_to(e, c, frames, n);
	if (e->last != NULL) {
		memcpy(e->last, frames + bytes - e->frame_size, e->frame_size);
		e->has_last = true;
	}
}

void
registry_drained(struct relay_conn *conn)
{
	struct device_entry *e = conn->entry;

	if (e == NULL || !e->producer_paused || e->producer == NULL)
		return;
	for (struct relay_conn *c = e->consumers; c != NULL; c = c->next)
		if (c->accepted && !stream_closed(c->s) &&
		    stream_write_pending(c->s) > e->reg->opts.queue_bytes)
			return;
	e->producer_paused = false;
	stream_resume_reading(e->producer->s);
}

void
registry_remove(struct relay_conn *conn)
{
	struct device_entry *e = conn->entry;
	struct registry *reg;

	if (e == NULL)
		return;
	reg = e->reg;
	conn->entry = NULL;
	if (conn->producer) {
		if (e->producer == conn) {
			e->producer = NULL;
			e->c.producers--;
			reg->total.producers--;
			if (e->consumers != NULL) {
				ev_timer_set(&e->grace, reg->opts.grace, 0.);
				ev_timer_start(reg->loop, &e->grace);
			}
		}
	} else {
		if (conn->prev != NULL)
			conn->prev->next = conn->next;
		else
			e->consumers = conn->next;
		if (conn->next != NULL)
			conn->next->prev = conn->prev;
		conn->prev = conn->next = NULL;
		e->nconsumers--;
		e->c.consumers--;
		reg->total.consumers--;
		/* A slow consumer leaving may unblock the producer. */
		if (e->producer_paused && e->producer != NULL) {
			struct relay_conn probe = { .entry = e };
			registry_drained(&probe);
		}
	}
	entry_maybe_free(e);
}

void
registry_destroy(struct registry *reg)
{
	for (size_t b = 0; b < REGISTRY_BUCKETS; b++)
		while (reg->buckets[b] != NULL)
			entry_free(reg->buckets[b]);
}
