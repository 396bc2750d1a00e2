/* device: see device.h. */
#define _GNU_SOURCE
#include "device.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "log.h"
#include "metrics.h"
#include "obj.h"
#include "tls.h"

/* Bytes handed to the parser per callback; bounds a blocked overshoot. */
#define READ_CHUNK (64 * 1024)
/* How long a refused client has to read its 0x01 and close. */
#define LINGER_SECONDS 2.0

/* ---- the parser ---- */

void
device_parser_init(struct device_parser *p, const struct relay_opts *o)
{
	memset(p, 0, sizeof(*p));
	p->state = DP_ROLE;
	p->max_uuid = o->max_uuid;
	p->max_keys_bytes = o->max_keys_bytes;
	p->max_keys = o->max_keys;
}

void
device_parser_free(struct device_parser *p)
{
	free(p->body);
	free(p->scratch);
	p->body = p->scratch = NULL;
}

bool
device_utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned c = u[i], cp;
		size_t more;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			more = 1;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3;
		else
			return false;
		cp = c & (0x3fu >> more);
		if (len - i - 1 < more)
			return false;
		for (size_t k = 1; k <= more; k++) {
			if ((u[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (u[i + k] & 0x3f);
		}
		/* Overlong forms, surrogates and beyond U+10FFFF. */
		if (cp < (more == 1 ? 0x80u : more == 2 ? 0x800u : 0x10000u) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += more + 1;
	}
	return true;
}

enum fail_kind { F_PROTOCOL, F_LIMIT, F_NOMEM };

static int fail(struct device_parser *p, device_event_cb cb, void *arg,
    enum fail_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Ends the parser with an error event; returns 1 (stop). */
static int
fail(struct device_parser *p, device_event_cb cb, void *arg,
    enum fail_kind kind, const char *fmt, ...)
{
	struct device_event ev = { .type = DEV_ERROR, .role = p->role,
	    .error = p->err, .limit = kind == F_LIMIT,
	    .nomem = kind == F_NOMEM };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
	p->state = DP_DEAD;
	cb(arg, &ev);
	return 1;
}

/* Whether a uuid or key byte is a control character (NUL included). */
static bool
is_control(char c)
{
	return (unsigned char)c < 0x20 || c == 0x7f;
}

/*
 * Counts the comma-separated names of a key list into *n; fails the
 * parser on an empty name or a control character.
 */
static int
count_keys(struct device_parser *p, const char *k, size_t len, size_t *n,
    device_event_cb cb, void *arg)
{
	size_t cur = 0;

	*n = 1;
	for (size_t i = 0; i < len; i++) {
		if (k[i] == ',') {
			if (cur == 0)
				break;
			++*n;
			cur = 0;
		} else if (is_control(k[i])) {
			return fail(p, cb, arg, F_LIMIT, "key %zu has a control "
			    "character (0x%02x)", *n,
			    (unsigned)(unsigned char)k[i]);
		} else {
			cur++;
		}
	}
	if (cur == 0)
		return fail(p, cb, arg, F_LIMIT, "empty key name");
	return 0;
}

/* One name of a key list, for the duplicate check. */
struct key_name {
	uint32_t off, len;
};

static int
key_name_cmp(const void *a, const void *b, void *keys)
{
	const struct key_name *x = a, *y = b;
	const char *k = keys;
	int c = memcmp(k + x->off, k + y->off, x->len < y->len ? x->len :
	    y->len);

	if (c != 0)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	/* Equal names: the first in the list first, to name the pair. */
	return x->off < y->off ? -1 : x->off > y->off;
}

/* The 1-based position of the name at byte `off` of the list. */
static size_t
key_position(const char *k, uint32_t off)
{
	size_t n = 1;

	for (uint32_t i = 0; i < off; i++)
		n += k[i] == ',';
	return n;
}

/*
 * Fails the parser if two of the n names (well-formed, non-empty) of the
 * list are the same.  Sorted, not compared in pairs: 16,384 names would
 * be 134 million comparisons.
 */
static int
unique_keys(struct device_parser *p, const char *k, size_t len, size_t n,
    device_event_cb cb, void *arg)
{
	struct key_name *names;
	size_t i = 0, start = 0;
	int stop = 0;

	if (n < 2)
		return 0;
	if ((names = malloc(n * sizeof(*names))) == NULL)
		return fail(p, cb, arg, F_NOMEM, "out of memory");
	for (size_t b = 0; b <= len; b++)
		if (b == len || k[b] == ',') {
			names[i].off = (uint32_t)start;
			names[i].len = (uint32_t)(b - start);
			i++;
			start = b + 1;
		}
	qsort_r(names, n, sizeof(*names), key_name_cmp, (void *)k);
	for (i = 1; i < n; i++) {
		const struct key_name *x = &names[i - 1], *y = &names[i];
		if (x->len == y->len &&
		    memcmp(k + x->off, k + y->off, x->len) == 0) {
			stop = fail(p, cb, arg, F_LIMIT, "keys %zu and %zu have "
			    "the same name", key_position(k, x->off),
			    key_position(k, y->off));
			break;
		}
	}
	free(names);
	return stop;
}

/* A complete uuid or key list of p->need bytes. */
static int
field_done(struct device_parser *p, const char *body, device_event_cb cb,
    void *arg)
{
	struct device_event ev = { .role = p->role, .data = body,
	    .len = p->need };

	if (p->field == 0) {
		if (!device_utf8_valid(body, p->need))
			return fail(p, cb, arg, F_LIMIT, "uuid is not UTF-8");
		/* An identifier: shown in logs and metric labels as is. */
		for (size_t i = 0; i < p->need; i++)
			if (is_control(body[i]))
				return fail(p, cb, arg, F_LIMIT, "uuid has a "
				    "control character (0x%02x)",
				    (unsigned)(unsigned char)body[i]);
		ev.type = DEV_UUID;
		p->state = p->role == DEVICE_PRODUCER ? DP_LEN : DP_ACCEPT;
		p->field = 1;
		p->lenhave = 0;
		return cb(arg, &ev);
	}
	if (!device_utf8_valid(body, p->need))
		return fail(p, cb, arg, F_LIMIT, "keys are not UTF-8");
	if (count_keys(p, body, p->need, &ev.count, cb, arg) != 0)
		return 1;
	if (ev.count > p->max_keys)
		return fail(p, cb, arg, F_LIMIT, "%zu keys, more than %zu",
		    ev.count, p->max_keys);
	/* Names the consumers map values by: one name, one value. */
	if (unique_keys(p, body, p->need, ev.count, cb, arg) != 0)
		return 1;
	ev.type = DEV_KEYS;
	p->frame_size = ev.count * 4;
	p->state = DP_FRAMES;
	return cb(arg, &ev);
}

static int
length_done(struct device_parser *p, device_event_cb cb, void *arg)
{
	uint32_t need = (uint32_t)p->lenbuf[0] << 24 |
	    (uint32_t)p->lenbuf[1] << 16 | (uint32_t)p->lenbuf[2] << 8 |
	    p->lenbuf[3];
	size_t max = p->field == 0 ? p->max_uuid : p->max_keys_bytes;

	/* Checked before anything is allocated: 4 GB claims cost nothing. */
	if (need == 0 || need > max)
		return fail(p, cb, arg, F_LIMIT, "%s length %lu out of range "
		    "1..%zu", p->field == 0 ? "uuid" : "keys",
		    (unsigned long)need, max);
	p->need = need;
	p->bodyhave = 0;
	p->state = DP_BODY;
	return 0;
}

static int
feed_body(struct device_parser *p, const char *data, size_t len,
    size_t *used, device_event_cb cb, void *arg)
{
	size_t n = p->need - p->bodyhave;
	int stop;

	if (p->bodyhave == 0 && len >= n) {
		/* Whole in this chunk: no copy. */
		*used = n;
		return field_done(p, data, cb, arg);
	}
	if (p->body == NULL && (p->body = malloc(p->need)) == NULL) {
		*used = 0;
		return fail(p, cb, arg, F_NOMEM, "out of memory");
	}
	if (n > len)
		n = len;
	memcpy(p->body + p->bodyhave, data, n);
	p->bodyhave += n;
	*used = n;
	if (p->bodyhave < p->need)
		return 0;
	stop = field_done(p, p->body, cb, arg);
	free(p->body);
	p->body = NULL;
	return stop;
}

static int
feed_frames(struct device_parser *p, const char *data, size_t len,
    size_t *used, device_event_cb cb, void *arg)
{
	struct device_event ev = { .type = DEV_FRAMES, .role = p->role };
	size_t fs = p->frame_size, i = 0;

	*used = 0;
	if (p->scratch_have > 0) {
		size_t n = fs - p->scratch_have;
		if (n > len)
			n = len;
		memcpy(p->scratch + p->scratch_have, data, n);
		p->scratch_have += n;
		i = *used = n;
		if (p->scratch_have < fs)
			return 0;
		p->scratch_have = 0;
		ev.data = p->scratch;
		ev.count = 1;
		ev.len = fs;
		if (cb(arg, &ev))
			return 1;
	}
	if (len - i >= fs) {
		ev.count = (len - i) / fs;
		ev.data = data + i;
		ev.len = ev.count * fs;
		i += ev.len;
		*used = i;
		if (cb(arg, &ev))
			return 1;
	}
	if (i < len) {
		/* The head of a frame: kept until its tail arrives. */
		if (p->scratch == NULL && (p->scratch = malloc(fs)) == NULL)
			return fail(p, cb, arg, F_NOMEM, "out of memory");
		memcpy(p->scratch, data + i, len - i);
		p->scratch_have = len - i;
		*used = len;
	}
	return 0;
}

size_t
device_parser_feed(struct device_parser *p, const char *data, size_t len,
    device_event_cb cb, void *arg)
{
	size_t i = 0, used;
	int stop = 0;

	while (i < len && !stop) {
		switch (p->state) {
		case DP_ROLE: {
			unsigned char b = (unsigned char)data[i++];
			if (b != DEVICE_PRODUCER && b != DEVICE_CONSUMER) {
				fail(p, cb, arg, F_PROTOCOL,
				    "unknown first byte 0x%02x", b);
				return i;
			}
			struct device_event ev = { .type = DEV_ROLE,
			    .role = b };
			p->role = b;
			p->state = DP_LEN;
			p->field = 0;
			p->lenhave = 0;
			stop = cb(arg, &ev);
			break;
		}
		case DP_LEN:
			while (i < len && p->lenhave < 4)
				p->lenbuf[p->lenhave++] = (uint8_t)data[i++];
			if (p->lenhave == 4)
				stop = length_done(p, cb, arg);
			break;
		case DP_BODY:
			stop = feed_body(p, data + i, len - i, &used, cb, arg);
			i += used;
			break;
		case DP_ACCEPT: {
			struct device_event ev = { .type = DEV_ACCEPT,
			    .role = (unsigned char)data[i++] };
			p->state = DP_IGNORE;
			stop = cb(arg, &ev);
			break;
		}
		case DP_FRAMES:
			stop = feed_frames(p, data + i, len - i, &used, cb,
			    arg);
			i += used;
			break;
		case DP_IGNORE:
			/* A consumer has nothing more to say; ignore it. */
			p->ignored += len - i;
			i = len;
			break;
		case DP_DEAD:
			return i;
		}
	}
	return i;
}

/* ---- the glue ---- */

#define DEVICE_CONN_MAGIC 0x64636f6eu	/* "dcon" */

struct device_conn {
	uint32_t magic;			/* DEVICE_CONN_MAGIC while it lives */
	struct relay_listener *lst;
	struct device_conn *next, *prev;	/* the listener's open ones */
	struct device_parser p;
	ev_timer timer;			/* registration deadline, then linger */
	bool registered;		/* producer registered / consumer in */
	bool lingering;			/* refused: reading until the close */
	bool done;			/* closing: read no more */
	/*
	 * Allocated when needed, to their length: fixed arrays made every
	 * connection carry 600 bytes that most never fill (no access list,
	 * no reason until it closes, a uuid far shorter than 256 bytes).
	 */
	char *uuid;
	size_t ulen;
	size_t nkeys;
	char *reason;			/* why it ended, when we decided */
	char *grant;			/* what the access list allowed, if any */
	/* The registry's part; &rc is the stream's callback argument. */
	struct relay_conn rc;
};

/* The connection of a stream's callback argument (its relay_conn). */
static struct device_conn *
conn_of(void *arg)
{
	struct relay_conn *rc;
	struct device_conn *dc;

	CAST_OBJ_NOTNULL(rc, arg, RELAY_CONN_MAGIC);
	dc = container_of(rc, struct device_conn, rc);
	CHECK_OBJ_NOTNULL(dc, DEVICE_CONN_MAGIC);
	return dc;
}

/* For log lines: "" for a part not allocated. */
static const char *
opt_str(const char *s)
{
	return s != NULL ? s : "";
}

static const char ACK = 0x00, NAK = 0x01;

static const char *
role_name(const struct device_conn *dc)
{
	return dc->p.role == DEVICE_PRODUCER ? "producer" :
	    dc->p.role == DEVICE_CONSUMER ? "consumer" : "client";
}

static void set_reason(struct device_conn *dc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The first reason given is the one logged. */
static void
set_reason(struct device_conn *dc, const char *fmt, ...)
{
	va_list ap;
	char buf[160];

	if (dc->reason != NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* Without memory the close is logged with the stream's reason. */
	dc->reason = strdup(buf);
}

static void
arm_timer(struct device_conn *dc, double seconds)
{
	struct ev_loop *loop = dc->lst->reg->loop;

	ev_timer_stop(loop, &dc->timer);
	if (seconds <= 0)
		return;
	ev_timer_set(&dc->timer, seconds, 0.);
	ev_timer_start(loop, &dc->timer);
}

/* Queues a reply; a stream that cannot take it is closing already. */
static int
reply(struct device_conn *dc, const void *p, size_t len)
{
	if (stream_write(dc->rc.s, p, len, NULL) == 0)
		return 0;
	dc->done = true;
	return 1;
}

static void
linger_eof(struct stream *s, void *arg)
{
	/* Both directions are shut now: the stream closes by itself. */
	(void)s;
	(void)arg;
}

/*
 * Our FIN, then read until the client's: closing with its unread bytes in
 * our socket would send a reset that can overtake what we sent last.  The
 * timer bounds the wait.
 */
static int
linger(struct device_conn *dc)
{
	struct stream *s = dc->rc.s;

	dc->lingering = true;
	stream_set_eof_cb(s, linger_eof);
	stream_shutdown_write(s);
	arm_timer(dc, LINGER_SECONDS);
	return 1;
}

/* A refusal the protocol answers: 0x01, then the close. */
static int
refuse(struct device_conn *dc, const char *why)
{
	set_reason(dc, "refused: %s", why);
	dc->lst->o.total.refused++;
	dc->lingering = true;
	if (reply(dc, &NAK, 1) != 0)
		return 1;
	return linger(dc);
}

static void
registered(struct device_conn *dc)
{
	const struct relay_opts *o = &dc->lst->o.opts;

	dc->registered = true;
	ev_timer_stop(dc->lst->reg->loop, &dc->timer);
	if (o->idle_timeout > 0)
		stream_set_idle_timeout(dc->rc.s, o->idle_timeout);
}

/* "kind:value", escaped for a log line. */
static void
id_str(const struct tls_peer_id *id, char *out, size_t len)
{
	int n = snprintf(out, len, "%s:", tls_id_kind_name(id->kind));

	if (n > 0 && (size_t)n < len)
		registry_uuid_str(id->value, id->len, out + n,
		    len - (size_t)n);
}

/* Every identity of a certificate, for the line that denies it. */
static void
ids_str(const struct tls_peer_ids *ids, char *out, size_t len)
{
	size_t o = 0;

	if (ids == NULL) {
		snprintf(out, len, "no verified certificate");
		return;
	}
	if (ids->n == 0)
		snprintf(out, len, "a certificate without names");
	for (size_t i = 0; i < ids->n && o + 1 < len; i++) {
		char one[256];
		id_str(&ids->id[i], one, sizeof(one));
		o += (size_t)snprintf(out + o, len - o, "%s%s", i ? ", " : "",
		    one);
	}
}

/*
 * The access list's word on this client taking its role on uuid, when the
 * listener has one.  A denial is logged here, where it is decided.
 */
static bool
acl_allows(struct device_conn *dc, const char *uuid, size_t ulen)
{
	struct relay_listener *lst = dc->lst;
	enum acl_role role = dc->p.role == DEVICE_PRODUCER ? ACL_PRODUCE :
	    ACL_CONSUME;
	const struct tls_peer_id *id;
	struct tls_peer_ids ids;
	char who[512], u[REGISTRY_UUID_STR];
	bool cert;
	int line;

	if (lst->acl == NULL)
		return true;
	cert = tls_stream_peer_ids(dc->rc.s, &ids);
	line = acl_check(lst->acl, role, cert ? &ids : NULL, uuid, ulen, &id);
	if (line > 0) {
		char one[128], grant[192];
		if (id != NULL)
			id_str(id, one, sizeof(one));
		else
			snprintf(one, sizeof(one), "any certificate");
		snprintf(grant, sizeof(grant), "; access list line %d for %s",
		    line, one);
		/* Only for the log line: without memory it is left out. */
		free(dc->grant);
		dc->grant = strdup(grant);
		return true;
	}
	lst->o.total.denied++;
	if (log_enabled(LOG_WARN)) {
		ids_str(cert ? &ids : NULL, who, sizeof(who));
		registry_uuid_str(uuid, ulen, u, sizeof(u));
		log_limited(LOG_WARN, "relay %s: access list %s: %s %s (%s) may "
		    "not %s uuid '%s'", lst->o.name, acl_path(lst->acl),
		    role_name(dc), stream_peer(dc->rc.s), who,
		    acl_role_name(role), u);
	}
	return false;
}

static int
on_uuid(struct device_conn *dc, const struct device_event *ev)
{
	struct registry *reg = dc->lst->reg;
	struct device_entry *e;
	const char *why = NULL;

	free(dc->uuid);
	dc->ulen = 0;
	if ((dc->uuid = malloc(ev->len)) == NULL) {
		dc->done = true;
		set_reason(dc, "no memory for the uuid");
		stream_close(dc->rc.s, STREAM_CLOSE_NOMEM);
		return 1;
	}
	memcpy(dc->uuid, ev->data, ev->len);
	dc->ulen = ev->len;
	/* As for an unknown uuid: a refusal tells nothing about the uuid. */
	if (!acl_allows(dc, ev->data, ev->len))
		return refuse(dc, "not allowed by the access list");
	if (dc->p.role == DEVICE_PRODUCER) {
		/* Refused at the uuid, as soon as it can be known. */
		if (registry_refuses_producer(reg, ev->data, ev->len))
			return refuse(dc, "uuid held by a live producer");
		return reply(dc, &ACK, 1);
	}
	e = registry_add_consumer(reg, &dc->rc, ev->data, ev->len, &why);
	if (e == NULL)
		return refuse(dc, why);
	uint8_t hdr[5] = { 0x00, (uint8_t)(e->keys_len >> 24),
	    (uint8_t)(e->keys_len >> 16), (uint8_t)(e->keys_len >> 8),
	    (uint8_t)e->keys_len };
	dc->nkeys = e->nkeys;
	if (reply(dc, hdr, sizeof(hdr)) != 0)
		return 1;
	return reply(dc, e->keys, e->keys_len);
}

static int
on_keys(struct device_conn *dc, const struct device_event *ev)
{
	struct registry *reg = dc->lst->reg;
	const char *why = NULL;
	char u[REGISTRY_UUID_STR];

	if (registry_add_producer(reg, &dc->rc, dc->uuid, dc->ulen, ev->data,
	    ev->len, ev->count, &why) < 0)
		return refuse(dc, why);
	dc->nkeys = ev->count;
	if (reply(dc, &ACK, 1) != 0)
		return 1;
	registered(dc);
	registry_uuid_str(dc->uuid, dc->ulen, u, sizeof(u));
	LOGI("relay %s: producer %s registered uuid '%s' with %zu keys "
	    "(consumers: %zu)%s", dc->lst->o.name, stream_peer(dc->rc.s),
	    u, ev->count, dc->rc.entry->nconsumers, opt_str(dc->grant));
	return 0;
}

static int
on_accept(struct device_conn *dc, const struct device_event *ev)
{
	char u[REGISTRY_UUID_STR];
	const char *why = NULL;

	if (ev->role != 0x00) {
		set_reason(dc, "declined the keys (0x%02x)",
		    (unsigned)ev->role);
		dc->done = true;
		stream_end(dc->rc.s);
		return 1;
	}
	if (dc->rc.entry == NULL) {
		/* Detached meanwhile (other keys): its stream is closing. */
		dc->done = true;
		return 1;
	}
	if (registry_accept(&dc->rc, &why) < 0) {
		/*
		 * max_consumers were accepted since its uuid step.  Nothing
		 * answers an accept byte: the close (no frame, no byte after
		 * the keys) is the refusal, counted with the 0x01 ones.
		 */
		set_reason(dc, "refused at its accept byte: %s", why);
		dc->lst->o.total.refused++;
		return linger(dc);
	}
	registered(dc);
	registry_uuid_str(dc->uuid, dc->ulen, u, sizeof(u));
	LOGI("relay %s: consumer %s joined uuid '%s' (%zu keys)%s",
	    dc->lst->o.name, stream_peer(dc->rc.s), u, dc->nkeys,
	    opt_str(dc->grant));
	return 0;
}

static int
on_event(void *arg, const struct device_event *ev)
{
	struct device_conn *dc;
	struct stream *s;

	CAST_OBJ_NOTNULL(dc, arg, DEVICE_CONN_MAGIC);
	s = dc->rc.s;

	if (dc->done || dc->lingering || stream_closed(s))
		return 1;
	switch (ev->type) {
	case DEV_ROLE:
		return reply(dc, &ACK, 1);
	case DEV_UUID:
		return on_uuid(dc, ev);
	case DEV_KEYS:
		return on_keys(dc, ev);
	case DEV_ACCEPT:
		return on_accept(dc, ev);
	case DEV_FRAMES:
		registry_publish(&dc->rc, ev->data, ev->count);
		return 0;
	case DEV_ERROR:
		if (ev->limit)
			return refuse(dc, ev->error);
		dc->done = true;
		if (ev->nomem) {
			set_reason(dc, "%s", ev->error);
			stream_close(s, STREAM_CLOSE_NOMEM);
			return 1;
		}
		dc->lst->protocol_errors++;
		set_reason(dc, "protocol error: %s", ev->error);
		stream_close(s, STREAM_CLOSE_LOCAL);
		return 1;
	}
	return 0;
}

static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct device_conn *dc = conn_of(arg);

	/* Once refused, bytes are read only to see the client close. */
	if (!dc->lingering && !dc->done)
		(void)device_parser_feed(&dc->p, data, len, on_event, dc);
	if (!dc->done && !stream_closed(s))
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct device_conn *dc;

	(void)loop;
	(void)revents;
	CAST_OBJ_NOTNULL(dc, w->data, DEVICE_CONN_MAGIC);
	dc->done = true;
	if (dc->lingering) {
		stream_close(dc->rc.s, STREAM_CLOSE_LOCAL);
		return;
	}
	set_reason(dc, "no registration within %.1f s",
	    dc->lst->o.opts.header_timeout);
	stream_close(dc->rc.s, STREAM_CLOSE_TIMEOUT);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct device_conn *dc = conn_of(arg);
	struct registry *reg = dc->lst->reg;
	double secs = ev_now(reg->loop) - dc->rc.since;
	char u[REGISTRY_UUID_STR], reason[320];

	if (dc->reason != NULL)
		snprintf(reason, sizeof(reason), "%s", dc->reason);
	else if (stream_error(s)[0] != '\0')
		snprintf(reason, sizeof(reason), "%s: %s",
		    stream_close_reason_str(why), stream_error(s));
	else
		snprintf(reason, sizeof(reason), "%s",
		    stream_close_reason_str(why));
	registry_uuid_str(dc->uuid, dc->ulen, u, sizeof(u));
	if (dc->registered)
		LOGI("relay %s: %s %s left uuid '%s' (%zu keys) after %.1f s: "
		    "%llu frames, %llu dropped, %llu bytes in, %llu bytes out: "
		    "%s", dc->lst->o.name, role_name(dc), stream_peer(s), u,
		    dc->nkeys, secs, (unsigned long long)dc->rc.frames,
		    (unsigned long long)dc->rc.dropped,
		    (unsigned long long)stream_bytes_in(s),
		    (unsigned long long)stream_bytes_out(s), reason);
	else
		log_limited(LOG_INFO, "relay %s: %s %s%s%s%s closed after "
		    "%.1f s, %llu bytes in, %llu bytes out: %s", dc->lst->o.name,
		    role_name(dc), stream_peer(s), dc->ulen ? " (uuid '" : "",
		    u, dc->ulen ? "')" : "", secs,
		    (unsigned long long)stream_bytes_in(s),
		    (unsigned long long)stream_bytes_out(s), reason);
	registry_remove(&dc->rc);
	ev_timer_stop(reg->loop, &dc->timer);
	device_parser_free(&dc->p);
	if (dc->prev != NULL)
		dc->prev->next = dc->next;
	else
		dc->lst->conns = dc->next;
	if (dc->next != NULL)
		dc->next->prev = dc->prev;
	free(dc->uuid);
	free(dc->reason);
	free(dc->grant);
	dc->rc.magic = 0;
	dc->magic = 0;
	free(dc);
}

void
device_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct relay_listener *lst = arg;
	struct device_conn *dc = calloc(1, sizeof(*dc));

	(void)sa;
	(void)salen;
	if (dc == NULL) {
		LOGW("relay %s: no memory for a connection from %s",
		    lst->o.name, stream_peer(s));
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	dc->magic = DEVICE_CONN_MAGIC;
	dc->lst = lst;
	dc->next = lst->conns;
	if (lst->conns != NULL)
		lst->conns->prev = dc;
	lst->conns = dc;
	registry_conn_init(&dc->rc, s, &lst->o);
	dc->rc.since = ev_now(lst->reg->loop);
	device_parser_init(&dc->p, &lst->o.opts);
	stream_set_callbacks(s, on_close, &dc->rc);
	ev_timer_init(&dc->timer, on_timer, 0., 0.);
	dc->timer.data = dc;
	arm_timer(dc, lst->o.opts.header_timeout);
	(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

/* ---- listeners and their metrics ---- */

struct relay_listener *
relay_listener_new(const char *name, struct registry *reg,
    const struct relay_opts *opts)
{
	struct relay_listener *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return NULL;
	snprintf(rl->o.name, sizeof(rl->o.name), "%s", name);
	if (opts != NULL)
		rl->o.opts = *opts;
	else
		relay_opts_default(&rl->o.opts);
	rl->reg = reg;
	return rl;
}

void
relay_listener_free(struct relay_listener *rl)
{
	if (rl == NULL)
		return;
	acl_free(rl->acl);
	free(rl);
}

void
relay_listener_close_all(struct relay_listener *rl)
{
	if (rl == NULL)
		return;
	/* stream_close() defers the close callback: the list holds still. */
	for (struct device_conn *dc = rl->conns; dc != NULL; dc = dc->next) {
		set_reason(dc, "shutting down");
		stream_close(dc->rc.s, STREAM_CLOSE_LOCAL);
	}
}

void
relay_listener_set_acl(struct relay_listener *rl, struct acl *acl)
{
	/* Only uuid steps read it, within one callback: no one holds it. */
	acl_free(rl->acl);
	rl->acl = acl;
}

#define C(f) offsetof(struct relay_counters, f)
static const struct {
	const char *name, *type, *help;
	size_t off;
	bool per_device;
} relay_families[] = {
	{ "frames_in_total", "counter", "Frames received from producers.",
	    C(frames_in), true },
	{ "bytes_in_total", "counter", "Frame bytes received from producers.",
	    C(bytes_in), true },
	{ "frames_out_total", "counter", "Frames queued to consumers.",
	    C(frames_out), true },
	{ "bytes_out_total", "counter", "Frame bytes queued to consumers.",
	    C(bytes_out), true },
	{ "frames_dropped_total", "counter",
	    "Frames dropped for slow consumers.", C(frames_dropped), true },
	{ "bytes_dropped_total", "counter",
	    "Frame bytes dropped for slow consumers.", C(bytes_dropped), true },
	{ "refused_total", "counter", "Requests refused: answered with 0x01, "
	    "or a consumer closed at its accept byte (max_consumers).",
	    C(refused), false },
	{ "acl_denied_total", "counter",
	    "Requests the access list refused (answered with 0x01).",
	    C(denied), false },
	{ "producers", "gauge", "Producers connected.", C(producers), true },
	{ "consumers", "gauge",
	    "Consumers that accepted the keys (max_consumers counts them).",
	    C(consumers), true },
	{ "consumers_pending", "gauge",
	    "Consumers sent the keys that have not accepted them yet.",
	    C(pending), true },
};
#undef C

static uint64_t
counter(const struct relay_counters *c, size_t off)
{
	uint64_t v;

	memcpy(&v, (const char *)c + off, sizeof(v));
	return v;
}

static void
render_devices(struct registry *reg, struct buffer *out, size_t f)
{
	char name[96], help[128], uuid[512];
	size_t shown = 0;

	snprintf(name, sizeof(name), "ferry_relay_device_%s",
	    relay_families[f].name);
	snprintf(help, sizeof(help), "%s Per uuid.", relay_families[f].help);
	metrics_family(out, name, relay_families[f].type, help);
	for (struct device_entry *e = registry_next(reg, NULL);
	    e != NULL && shown < RELAY_METRICS_MAX_DEVICES;
	    e = registry_next(reg, e), shown++) {
		/* uuids hold no NUL (no control characters). */
		metrics_escape(e->uuid, uuid, sizeof(uuid));
		metrics_printf(out, "%s{uuid=\"%s\"} %llu\n", name, uuid,
		    (unsigned long long)counter(&e->c, relay_families[f].off));
	}
}

/* One family with a value per listener. */
static void
render_listeners(struct relay_listener *const *ls, size_t n,
    struct buffer *out, const char *name, const char *type,
    const char *help, uint64_t (*value)(const struct relay_listener *,
    size_t), size_t arg)
{
	char lst[160];

	metrics_family(out, name, type, help);
	for (size_t i = 0; i < n; i++) {
		metrics_escape(ls[i]->o.name, lst, sizeof(lst));
		metrics_printf(out, "%s{listener=\"%s\"} %llu\n", name, lst,
		    (unsigned long long)value(ls[i], arg));
	}
}

static uint64_t
total_of(const struct relay_listener *l, size_t off)
{
	return counter(&l->o.total, off);
}

static uint64_t
protocol_errors_of(const struct relay_listener *l, size_t off)
{
	(void)off;
	return l->protocol_errors;
}

static uint64_t
devices_of(const struct relay_listener *l, size_t off)
{
	(void)off;
	return l->o.devices;
}

void
relay_render_metrics(struct registry *reg, struct relay_listener *const *ls,
    size_t n, struct buffer *out)
{
	const size_t nf = sizeof(relay_families) / sizeof(relay_families[0]);
	char name[96];

	if (n == 0)
		return;
	for (size_t f = 0; f < nf; f++) {
		snprintf(name, sizeof(name), "ferry_relay_%s",
		    relay_families[f].name);
		render_listeners(ls, n, out, name, relay_families[f].type,
		    relay_families[f].help, total_of, relay_families[f].off);
	}
	render_listeners(ls, n, out, "ferry_relay_protocol_errors_total",
	    "counter", "Connections closed for a protocol error.",
	    protocol_errors_of, 0);
	render_listeners(ls, n, out, "ferry_relay_devices", "gauge",
	    "UUIDs with a producer or waiting consumers, by the listener "
	    "their producer registered on.", devices_of, 0);
	for (size_t f = 0; f < nf; f++)
		if (relay_families[f].per_device)
			render_devices(reg, out, f);
}
