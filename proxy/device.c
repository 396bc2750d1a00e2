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

/* ---- the glue ---- */

#define DEVICE_CONN_MAGIC 0x64636f6eu	/* "dcon" */

struct device_conn {
	uint32_t magic;			/* DEVICE_CONN_MAGIC while it lives */
	struct relay_listener *lst;
	struct device_conn *next, *prev;	/* the listener's open ones */
	struct relay_parser p;
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

static const char ACK = RELAY_OK, NAK = RELAY_REFUSED;

static const char *
role_name(const struct device_conn *dc)
{
	return dc->p.role == RELAY_PRODUCER ? "producer" :
	    dc->p.role == RELAY_CONSUMER ? "consumer" : "client";
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
	enum acl_role role = dc->p.role == RELAY_PRODUCER ? ACL_PRODUCE :
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
on_uuid(struct device_conn *dc, const struct relay_event *ev)
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
	if (dc->p.role == RELAY_PRODUCER) {
		/* Refused at the uuid, as soon as it can be known. */
		if (registry_refuses_producer(reg, ev->data, ev->len))
			return refuse(dc, "uuid held by a live producer");
		return reply(dc, &ACK, 1);
	}
	e = registry_add_consumer(reg, &dc->rc, ev->data, ev->len, &why);
	if (e == NULL)
		return refuse(dc, why);
	uint8_t hdr[1 + RELAY_LEN_SIZE] = { RELAY_OK };
	relay_len_put(hdr + 1, (uint32_t)e->keys_len);
	dc->nkeys = e->nkeys;
	if (reply(dc, hdr, sizeof(hdr)) != 0)
		return 1;
	return reply(dc, e->keys, e->keys_len);
}

static int
on_keys(struct device_conn *dc, const struct relay_event *ev)
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
on_accept(struct device_conn *dc, const struct relay_event *ev)
{
	char u[REGISTRY_UUID_STR];
	const char *why = NULL;

	if (ev->role != RELAY_ACCEPT) {
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
on_event(void *arg, const struct relay_event *ev)
{
	struct device_conn *dc;
	struct stream *s;

	CAST_OBJ_NOTNULL(dc, arg, DEVICE_CONN_MAGIC);
	s = dc->rc.s;

	if (dc->done || dc->lingering || stream_closed(s))
		return 1;
	switch (ev->type) {
	case RELAY_EV_ROLE:
		return reply(dc, &ACK, 1);
	case RELAY_EV_UUID:
		return on_uuid(dc, ev);
	case RELAY_EV_KEYS:
		return on_keys(dc, ev);
	case RELAY_EV_ACCEPT:
		return on_accept(dc, ev);
	case RELAY_EV_FRAMES:
		registry_publish(&dc->rc, ev->data, ev->count);
		return 0;
	case RELAY_EV_ERROR:
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
		(void)relay_parser_feed(&dc->p, data, len, on_event, dc);
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
	relay_parser_free(&dc->p);
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
	relay_parser_init(&dc->p, &lst->o.opts.limits);
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
