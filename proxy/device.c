/* device: see device.h. */
#define _GNU_SOURCE
#include "device.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

#define READ_CHUNK (64 * 1024)

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

int
device_parser_set_frame_size(struct device_parser *p, size_t size)
{
	free(p->scratch);
	p->scratch = malloc(size);
	p->scratch_have = 0;
	p->frame_size = p->scratch ? size : 0;
	return p->scratch ? 0 : -1;
}

static int
emit_error(struct device_parser *p, device_event_cb cb, void *arg,
    const char *why, bool limit)
{
	struct device_event ev = { .type = DEV_ERROR, .role = p->role,
	    .error = why, .limit = limit };

	p->state = DP_DEAD;
	cb(arg, &ev);
	return 1;
}

/* Counts comma-separated names; 0 if one is empty. */
static size_t
count_keys(const char *k, size_t len)
{
	size_t n = 1, cur = 0;

	for (size_t i = 0; i < len; i++) {
		if (k[i] == ',') {
			if (cur == 0)
				return 0;
			n++;
			cur = 0;
		} else {
			cur++;
		}
	}
	return cur == 0 ? 0 : n;
}

/* A complete uuid or key list. */
static int
field_done(struct device_parser *p, const char *body, device_event_cb cb,
    void *arg)
{
	struct device_event ev = { .role = p->role, .data = body,
	    .len = p->need };

	if (p->field == 0) {
		ev.type = DEV_UUID;
		p->state = p->role == DEVICE_PRODUCER ? DP_LEN : DP_ACCEPT;
		p->field = 1;
		p->lenhave = 0;
		return cb(arg, &ev);
	}
	ev.count = count_keys(body, p->need);
	if (ev.count == 0)
		return emit_error(p, cb, arg, "empty key name", true);
	if (ev.count > p->max_keys)
		return emit_error(p, cb, arg, "too many keys", true);
	ev.type = DEV_KEYS;
	p->state = DP_FRAMES;
	return cb(arg, &ev);
}

static int
length_done(struct device_parser *p, device_event_cb cb, void *arg)
{
	size_t need = (size_t)p->lenbuf[0] << 24 | (size_t)p->lenbuf[1] << 16 |
	    (size_t)p->lenbuf[2] << 8 | p->lenbuf[3];
	size_t max = p->field == 0 ? p->max_uuid : p->max_keys_bytes;

	/* Checked before anything is allocated: 4 GB claims cost nothing. */
	if (need == 0 || need > max)
		return emit_error(p, cb, arg, p->field == 0 ?
		    "uuid length out of range" : "keys length out of range",
		    true);
	p->need = need;
	p->bodyhave = 0;
	p->state = DP_BODY;
	return 0;
}

static int
feed_frames(struct device_parser *p, const char *data, size_t len,
    size_t *used, device_event_cb cb, void *arg)
{
	size_t fs = p->frame_size, i = 0;
	struct device_event ev = { .type = DEV_FRAMES, .role = p->role };

	if (fs == 0)
		return emit_error(p, cb, arg, "frames before keys were "
		    "accepted", false);
	if (p->scratch_have > 0) {
		size_t n = fs - p->scratch_have;
		if (n > len)
			n = len;
		memcpy(p->scratch + p->scratch_have, data, n);
		p->scratch_have += n;
		i = n;
		if (p->scratch_have < fs) {
			*used = i;
			return 0;
		}
		p->scratch_have = 0;
		ev.data = p->scratch;
		ev.count = 1;
		ev.len = fs;
		if (cb(arg, &ev)) {
			*used = i;
			return 1;
		}
	}
	size_t whole = (len - i) / fs;
	if (whole > 0) {
		ev.data = data + i;
		ev.count = whole;
		ev.len = whole * fs;
		i += whole * fs;
		if (cb(arg, &ev)) {
			*used = i;
			return 1;
		}
	}
	memcpy(p->scratch, data + i, len - i);
	p->scratch_have = len - i;
	*used = len;
	return 0;
}

size_t
device_parser_feed(struct device_parser *p, const char *data, size_t len,
    device_event_cb cb, void *arg)
{
	size_t i = 0;
	int stop = 0;

	while (i < len && !stop) {
		switch (p->state) {
		case DP_ROLE: {
			unsigned char b = (unsigned char)data[i++];
			if (b != DEVICE_PRODUCER && b != DEVICE_CONSUMER) {
				emit_error(p, cb, arg, "unknown first byte",
				    false);
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
		case DP_BODY: {
			size_t n = p->need - p->bodyhave;
			if (p->bodyhave == 0 && len - i >= n) {
				/* Whole in this chunk: no copy. */
				i += n;
				stop = field_done(p, data + i - n, cb, arg);
				break;
			}
			if (p->body == NULL && (p->body = malloc(p->need)) ==
			    NULL) {
				emit_error(p, cb, arg, "out of memory", false);
				return i;
			}
			if (n > len - i)
				n = len - i;
			memcpy(p->body + p->bodyhave, data + i, n);
			p->bodyhave += n;
			i += n;
			if (p->bodyhave == p->need) {
				stop = field_done(p, p->body, cb, arg);
				free(p->body);
				p->body = NULL;
			}
			break;
		}
		case DP_ACCEPT: {
			struct device_event ev = { .type = DEV_ACCEPT,
			    .role = (unsigned char)data[i++] };
			p->state = DP_IGNORE;
			stop = cb(arg, &ev);
			break;
		}
		case DP_FRAMES: {
			size_t used = 0;
			stop = feed_frames(p, data + i, len - i, &used, cb, arg);
			i += used;
			break;
		}
		case DP_IGNORE:
			/* A consumer has nothing more to say; ignore it. */
			i = len;
			break;
		case DP_DEAD:
			return i;
		}
	}
	return i;
}

/* ---- the glue ---- */

struct device_conn {
	struct relay_conn rc;
	struct relay_listener *lst;
	struct device_parser p;
	ev_timer header;
	bool registered;
	bool stopped;		/* answered 0x01 or closed: read no more */
	char uuid[256];
	size_t ulen;
	size_t nkeys;
};

static const char ACK = 0x00, NAK = 0x01;

static const char *
role_name(const struct device_conn *dc)
{
	return dc->p.role == DEVICE_PRODUCER ? "producer" :
	    dc->p.role == DEVICE_CONSUMER ? "consumer" : "client";
}

static int
refuse(struct device_conn *dc, const char *why)
{
	char u[1100];

	registry_uuid_str(dc->uuid, dc->ulen, u, sizeof(u));
	log_limited(LOG_INFO, "relay %s: %s %s refused (uuid '%s'): %s",
	    dc->lst->name, role_name(dc), stream_peer(dc->rc.s), u, why);
	dc->lst->reg->total.refused++;
	stream_set_error(dc->rc.s, "refused: %s", why);
	stream_write(dc->rc.s, &NAK, 1, NULL);
	stream_end(dc->rc.s);
	dc->stopped = true;
	return 1;
}

static void
registered(struct device_conn *dc)
{
	const struct relay_opts *o = &dc->lst->reg->opts;

	dc->registered = true;
	ev_timer_stop(dc->lst->reg->loop, &dc->header);
	if (o->idle_timeout > 0)
		stream_set_idle_timeout(dc->rc.s, o->idle_timeout);
}

static int
on_uuid(struct device_conn *dc, const struct device_event *ev)
{
	struct registry *reg = dc->lst->reg;

	memcpy(dc->uuid, ev->data, ev->len);
	dc->ulen = ev->len;
	if (dc->p.role == DEVICE_PRODUCER) {
		if (reg->opts.takeover == RELAY_REFUSE &&
		    registry_live(registry_find(reg, ev->data, ev->len)))
			return refuse(dc, "uuid held by a live producer");
		stream_write(dc->rc.s, &ACK, 1, NULL);
		return 0;
	}
	const char *why = NULL;
	struct device_entry *e = registry_add_consumer(reg, &dc->rc, ev->data,
	    ev->len, &why);
	if (e == NULL)
		return refuse(dc, why);
	uint8_t hdr[5] = { 0x00, (uint8_t)(e->keys_len >> 24),
	    (uint8_t)(e->keys_len >> 16), (uint8_t)(e->keys_len >> 8),
	    (uint8_t)e->keys_len };
	stream_write(dc->rc.s, hdr, sizeof(hdr), NULL);
	stream_write(dc->rc.s, e->keys, e->keys_len, NULL);
	dc->nkeys = e->nkeys;
	return 0;
}

static int
on_keys(struct device_conn *dc, const struct device_event *ev)
{
	struct registry *reg = dc->lst->reg;
	char u[1100];

	if (registry_add_producer(reg, &dc->rc, dc->uuid, dc->ulen, ev->data,
	    ev->len, ev->count) < 0)
		return refuse(dc, "uuid held by a live producer");
	if (device_parser_set_frame_size(&dc->p, ev->count * 4) < 0) {
		stream_set_error(dc->rc.s, "no memory for a frame");
		stream_close(dc->rc.s, STREAM_CLOSE_NOMEM);
		dc->stopped = true;
		return 1;
	}
	dc->nkeys = ev->count;
	stream_write(dc->rc.s, &ACK, 1, NULL);
	registered(dc);
	registry_uuid_str(dc->uuid, dc->ulen, u, sizeof(u));
	LOGI("relay %s: producer %s registered uuid '%s' (%zu keys, %zu "
	    "consumers waiting)", dc->lst->name, stream_peer(dc->rc.s), u,
	    ev->count, dc->rc.entry ? dc->rc.entry->nconsumers : 0);
	return 0;
}

static int
on_event(void *arg, const struct device_event *ev)
{
	struct device_conn *dc = arg;

	if (stream_closed(dc->rc.s))
		return 1;
	switch (ev->type) {
	case DEV_ROLE:
		stream_write(dc->rc.s, &ACK, 1, NULL);
		return 0;
	case DEV_UUID:
		return on_uuid(dc, ev);
	case DEV_KEYS:
		return on_keys(dc, ev);
	case DEV_ACCEPT:
		if (ev->role != 0x00) {
			stream_set_error(dc->rc.s, "consumer declined (0x%02x)",
			    ev->role);
			stream_end(dc->rc.s);
			dc->stopped = true;
			return 1;
		}
		registry_accept(&dc->rc);
		registered(dc);
		return 0;
	case DEV_FRAMES:
		registry_publish(&dc->rc, ev->data, ev->count);
		return 0;
	case DEV_ERROR:
		dc->lst->protocol_errors++;
		if (ev->limit)
			return refuse(dc, ev->error);
		log_limited(LOG_INFO, "relay %s: protocol error from %s: %s",
		    dc->lst->name, stream_peer(dc->rc.s), ev->error);
		stream_set_error(dc->rc.s, "protocol error: %s", ev->error);
		stream_close(dc->rc.s, STREAM_CLOSE_LOCAL);
		dc->stopped = true;
		return 1;
	}
	return 0;
}

static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct device_conn *dc = arg;

	device_parser_feed(&dc->p, data, len, on_event, dc);
	if (!dc->stopped && !stream_closed(s))
		stream_read_bytes(s, READ_CHUNK, true, on_data);
}

static void
header_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct device_conn *dc = w->data;

	(void)loop;
	(void)revents;
	stream_set_error(dc->rc.s, "no registration within %.1f s",
	    dc->lst->reg->opts.header_timeout);
	stream_close(dc->rc.s, STREAM_CLOSE_TIMEOUT);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct device_conn *dc = arg;
	struct registry *reg = dc->lst->reg;

	if (dc->registered) {
		char u[1100];
		registry_uuid_str(dc->uuid, dc->ulen, u, sizeof(u));
		LOGI("relay %s: %s %s left uuid '%s' (%zu keys) after %.1f s, "
		    "%llu frames%s%llu dropped: %s%s%s", dc->lst->name,
		    role_name(dc), stream_peer(s), u, dc->nkeys,
		    ev_now(reg->loop) - dc->rc.since,
		    (unsigned long long)dc->rc.frames, ", ",
		    (unsigned long long)dc->rc.dropped,
		    stream_close_reason_str(why), stream_error(s)[0] ? ", " : "",
		    stream_error(s));
	} else if (why == STREAM_CLOSE_TIMEOUT) {
		log_limited(LOG_INFO, "relay %s: %s closed: %s", dc->lst->name,
		    stream_peer(s), stream_error(s));
	}
	registry_remove(&dc->rc);
	ev_timer_stop(reg->loop, &dc->header);
	device_parser_free(&dc->p);
	free(dc);
}

void
device_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct relay_listener *lst = arg;
	struct registry *reg = lst->reg;
	struct device_conn *dc = calloc(1, sizeof(*dc));

	(void)sa;
	(void)salen;
	if (dc == NULL) {
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	dc->lst = lst;
	dc->rc.s = s;
	dc->rc.since = ev_now(reg->loop);
	device_parser_init(&dc->p, &reg->opts);
	stream_set_callbacks(s, on_close, dc);
	if (reg->opts.header_timeout > 0) {
		ev_timer_init(&dc->header, header_timeout,
		    reg->opts.header_timeout, 0.);
		dc->header.data = dc;
		ev_timer_start(reg->loop, &dc->header);
	}
	stream_read_bytes(s, READ_CHUNK, true, on_data);
}

/* ---- listeners and their metrics ---- */

struct relay_listener *
relay_listener_new(const char *name, struct ev_loop *loop,
    const struct relay_opts *opts)
{
	struct relay_listener *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return NULL;
	rl->reg = calloc(1, sizeof(*rl->reg));
	if (rl->reg == NULL) {
		free(rl);
		return NULL;
	}
	registry_init(rl->reg, loop, opts);
	snprintf(rl->name, sizeof(rl->name), "%s", name);
	return rl;
}

void
relay_listener_free(struct relay_listener *rl)
{
	if (rl == NULL)
		return;
	registry_destroy(rl->reg);
	free(rl->reg);
	free(rl);
}

void
relay_render_metrics(struct relay_listener *const *ls, size_t n,
    struct buffer *out)
{
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} fam[] = {
#define C(f) offsetof(struct relay_counters, f)
		{ "ferry_relay_frames_in_total", "counter",
		    "Frames received from producers.", C(frames_in) },
		{ "ferry_relay_bytes_in_total", "counter",
		    "Frame bytes received from producers.", C(bytes_in) },
		{ "ferry_relay_frames_out_total", "counter",
		    "Frames sent to consumers.", C(frames_out) },
		{ "ferry_relay_bytes_out_total", "counter",
		    "Frame bytes sent to consumers.", C(bytes_out) },
		{ "ferry_relay_frames_dropped_total", "counter",
		    "Frames dropped for slow consumers.", C(frames_dropped) },
		{ "ferry_relay_refused_total", "counter",
		    "Registrations answered with 0x01.", C(refused) },
		{ "ferry_relay_producers", "gauge",
		    "Producers connected.", C(producers) },
		{ "ferry_relay_consumers", "gauge",
		    "Consumers connected.", C(consumers) },
#undef C
	};

	if (n == 0)
		return;
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		metrics_family(out, fam[f].name, fam[f].type, fam[f].help);
		for (size_t i = 0; i < n; i++)
			metrics_printf(out, "%s{listener=\"%s\"} %llu\n",
			    fam[f].name, ls[i]->name, (unsigned long long)
			    *(const uint64_t *)((const char *)&ls[i]->reg->total +
			    fam[f].off));
	}
	metrics_family(out, "ferry_relay_devices", "gauge",
	    "UUIDs with a producer or waiting consumers.");
	for (size_t i = 0; i < n; i++)
		metrics_printf(out, "ferry_relay_devices{listener=\"%s\"} %zu\n",
		    ls[i]->name, ls[i]->reg->entries);
}
