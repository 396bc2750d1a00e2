/* admin: see admin.h. */
#define _GNU_SOURCE
#include "admin.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strings.h>

#include "assets.h"
#include "buffer.h"
#include "log.h"
#include "metrics.h"

/* What is read at a time once the answer is queued (and thrown away). */
#define ADMIN_DISCARD_CHUNK 4096

struct admin {
	struct ev_loop *loop;
	double timeout;
	struct registry *reg;		/* NULL: no devices */
	struct relay_listener *rl;	/* the device page's consumers */
	admin_status_fn status;
	void *status_arg;
	char token[256];
	struct admin_conn *conns;
	size_t nconns;
};

enum admin_state {
	ADMIN_READING,		/* the request head is arriving */
	ADMIN_ANSWERED,		/* answered, FIN to follow; discarding */
};

struct admin_conn {
	struct admin *adm;		/* NULL once admin_free() ran */
	struct ev_loop *loop;
	struct stream *s;
	struct admin_conn *prev, *next;
	ev_timer deadline;
	struct http_head *head;		/* the request head so far */
	enum admin_state state;
};

static void read_more(struct admin_conn *c);

static void
respond(struct admin_conn *c, const char *status, const char *type,
    const char *body, size_t len)
{
	struct buffer head = BUFFER_INIT;

	c->state = ADMIN_ANSWERED;
	free(c->head);
	c->head = NULL;
	if (http_response_head(&head, status, type, len, NULL) < 0) {
		buffer_free(&head);
		stream_close(c->s, STREAM_CLOSE_NOMEM);
		return;
	}
	if (stream_write(c->s, buffer_data(&head), buffer_len(&head),
	    NULL) < 0 || (len > 0 && stream_write(c->s, body, len, NULL) < 0)) {
		buffer_free(&head);
		return;		/* closing already */
	}
	buffer_free(&head);
	stream_shutdown_write(c->s);
}

/* A request the client got wrong: answered, and logged (rate-limited). */
static void
refuse(struct admin_conn *c, const char *status, const char *why)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%s\n", why);

	log_limited(LOG_INFO, "admin: %s from %s: %s", status,
	    stream_peer(c->s), why);
	respond(c, status, "text/plain", body, (size_t)n);
}

static void
respond_buffer(struct admin_conn *c, const char *type, struct buffer *b,
    int rc)
{
	if (rc < 0)
		respond(c, "503 Service Unavailable", "text/plain",
		    "out of memory\n", 14);
	else
		respond(c, "200 OK", type, buffer_data(b), buffer_len(b));
	buffer_free(b);
}

/* ---- the JSON API ---- */

/* A producer on another node (a peer), over WebSocket, or over TCP. */
static const char *
conn_kind(const struct relay_conn *c)
{
	if (c->s == NULL)
		return "cluster";
	return c->wire != NULL ? c->wire->kind : "tcp";
}

static const char *
conn_peer(const struct relay_conn *c)
{
	if (c->s == NULL)
		return c->ops != NULL && c->ops->name != NULL ?
		    c->ops->name(c) : "";
	return stream_peer(c->s);
}

/* One device, as /api/devices lists it. */
static int
device_json(struct buffer *b, struct registry_entry *e, ev_tstamp now)
{
	const char *k = e->keys, *end = e->keys + e->keys_len;
	size_t ws = 0, tcp = 0;
	uint64_t dropped = e->c.dropped.frames;
	int rc = http_printf(b, "{\"uuid\": ");

	for (const struct relay_conn *c = e->consumers; c != NULL; c = c->next)
		*(c->wire != NULL ? &ws : &tcp) += 1;
	rc |= http_json_str(b, e->uuid, e->uuid_len);
	rc |= http_printf(b, ", \"keys\": [");
	while (rc == 0 && k < end) {
		const char *comma = memchr(k, ',', (size_t)(end - k));
		const char *ke = comma != NULL ? comma : end;
		rc |= http_json_str(b, k, (size_t)(ke - k));
		if (comma != NULL)
			rc |= http_printf(b, ", ");
		k = ke + 1;
	}
	rc |= http_printf(b, "], \"producer\": ");
	if (e->producer != NULL) {
		const char *peer = conn_peer(e->producer);
		rc |= http_printf(b, "{\"peer\": ");
		rc |= http_json_str(b, peer, strlen(peer));
		rc |= http_printf(b, ", \"listener\": ");
		rc |= http_json_str(b, e->owner->name, strlen(e->owner->name));
		rc |= http_printf(b, ", \"kind\": \"%s\"}",
		    conn_kind(e->producer));
	} else {
		rc |= http_printf(b, "null");
	}
	rc |= http_printf(b, ", \"consumers\": %zu, \"consumers_tcp\": %zu, "
	    "\"consumers_websocket\": %zu, \"pending\": %zu, "
	    "\"frames_in\": %llu, \"frames_out\": %llu, \"dropped\": %llu, "
	    "\"rate_hz\": %.2f, \"age_s\": %.1f}", e->nconsumers, tcp, ws,
	    e->npending, (unsigned long long)e->c.in.frames,
	    (unsigned long long)e->c.out.frames,
	    (unsigned long long)dropped, registry_rate_hz(e), now - e->since);
	return rc;
}

static int
devices_json(struct admin *a, struct buffer *b)
{
	ev_tstamp now = ev_now(a->loop);
	int rc = http_printf(b, "[");
	bool first = true;

	if (a->reg != NULL)
		for (struct registry_entry *e = registry_next(a->reg, NULL);
		    e != NULL && rc == 0; e = registry_next(a->reg, e)) {
			if (!first)
				rc |= http_printf(b, ",\n");
			first = false;
			rc |= device_json(b, e, now);
		}
	return rc | http_printf(b, "]\n");
}

static void
api_device(struct admin_conn *c, const struct http_request *r, size_t skip)
{
	struct admin *a = c->adm;
	struct buffer b = BUFFER_INIT;
	struct registry_entry *e = NULL;
	char uuid[RELAY_MAX_UUID];
	long n = http_pct_decode(r->target + skip, r->plen - skip, uuid,
	    sizeof(uuid));

	if (n > 0 && a->reg != NULL)
		e = registry_find(a->reg, uuid, (size_t)n);
	if (e == NULL) {
		respond(c, "404 Not Found", "application/json",
		    "{\"error\": \"no such device\"}\n", 28);
		return;
	}
	respond_buffer(c, "application/json", &b,
	    device_json(&b, e, ev_now(a->loop)) | http_printf(&b, "\n"));
}

static void
api_status(struct admin_conn *c)
{
	struct admin *a = c->adm;
	struct buffer b = BUFFER_INIT;
	int rc = http_printf(&b, "{\"version\": \"%s\", ", FERRY_VERSION);

	if (a->status != NULL)
		a->status(&b, a->status_arg);
	rc |= http_printf(&b, "\"admin_connections\": %zu, \"devices\": ",
	    a->nconns);
	rc |= devices_json(a, &b);
	rc |= http_printf(&b, "}\n");
	respond_buffer(c, "application/json", &b, rc);
}

static bool
has_prefix(const struct http_request *r, const char *p, size_t n)
{
	return r->plen > n && memcmp(r->target, p, n) == 0;
}

/* The token, as a bearer or in the query; constant time over its length. */
static bool
authorized(const struct admin *a, const struct http_request *r)
{
	size_t tl = strlen(a->token), vlen = 0, diff = 0;
	const char *v;

	if (tl == 0)
		return true;
	v = http_header(r, "Authorization", &vlen);
	if (v != NULL && vlen > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
		v += 7;
		vlen -= 7;
	} else {
		v = http_query_param(r->query, r->qlen, "token", &vlen);
	}
	if (v == NULL || vlen != tl)
		return false;
	for (size_t i = 0; i < tl; i++)
		diff |= (size_t)(v[i] ^ a->token[i]);
	return diff == 0;
}

static void
serve_asset(struct admin_conn *c, const char *name, size_t len)
{
	const struct asset *as = assets_find(name, len);

	if (as == NULL)
		respond(c, "404 Not Found", "text/plain", "not found\n", 10);
	else
		respond(c, "200 OK", as->type, (const char *)as->data,
		    as->len);
}

/*
 * A WebSocket consumer for the device page: the relay layer takes the
 * stream over, with the head; this connection's record goes.
 */
static void unlink_conn(struct admin_conn *c);

static void
hand_over(struct admin_conn *c, const char *rest, size_t restlen)
{
	struct relay_listener *rl = c->adm->rl;
	struct http_head *head = c->head;
	struct stream *s = c->s;

	c->head = NULL;
	ev_timer_stop(c->loop, &c->deadline);
	unlink_conn(c);
	/* None of ours may run once c is gone; the relay sets its own. */
	stream_set_eof_cb(s, NULL);
	stream_set_callbacks(s, NULL, NULL);
	free(c);
	relay_take_http(rl, s, head, rest, restlen);
}

/* Returns true when the stream was handed over (c is gone). */
static bool
answer(struct admin_conn *c, const char *rest, size_t restlen)
{
	const struct http_request *r = &c->head->req;
	struct buffer b = BUFFER_INIT;

	if (strcmp(r->method, "GET") != 0) {
		respond(c, "405 Method Not Allowed", "text/plain", "GET only\n",
		    9);
		return false;
	}
	if (!authorized(c->adm, r)) {
		refuse(c, "401 Unauthorized", "a token is needed "
		    "(Authorization: Bearer, or ?token=)");
		return false;
	}
	if (http_path_is(r, "/metrics")) {
		metrics_render(&b);
		respond_buffer(c, "text/plain; version=0.0.4; charset=utf-8",
		    &b, 0);
	} else if (http_path_is(r, "/")) {
		serve_asset(c, "index.html", 10);
	} else if (has_prefix(r, "/devices/", 9)) {
		serve_asset(c, "device.html", 11);
	} else if (has_prefix(r, "/assets/", 8)) {
		serve_asset(c, r->target + 8, r->plen - 8);
	} else if (http_path_is(r, "/api/status")) {
		api_status(c);
	} else if (http_path_is(r, "/api/devices")) {
		respond_buffer(c, "application/json", &b,
		    devices_json(c->adm, &b));
	} else if (has_prefix(r, "/api/devices/", 13)) {
		api_device(c, r, 13);
	} else if (has_prefix(r, "/v1/consume/", 12) && c->adm->rl != NULL) {
		hand_over(c, rest, restlen);
		return true;
	} else {
		respond(c, "404 Not Found", "text/plain", "not found\n", 10);
	}
	return false;
}

static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct admin_conn *c = arg;
	size_t used;

	if (c->state == ADMIN_ANSWERED) {
		read_more(c);	/* what follows the request is dropped */
		return;
	}
	switch (http_head_feed(c->head, data, len, &used)) {
	case HTTP_HEAD_MORE:
		break;
	case HTTP_HEAD_ERROR:
		refuse(c, c->head->status == 431 ?
		    "431 Request Header Fields Too Large" : "400 Bad Request",
		    c->head->why);
		break;
	case HTTP_HEAD_DONE:
		if (c->adm == NULL) {
			stream_close(s, STREAM_CLOSE_LOCAL);
			return;
		}
		if (answer(c, data + used, len - used))
			return;
		break;
	}
	read_more(c);
}

static void
read_more(struct admin_conn *c)
{
	size_t n = c->state == ADMIN_ANSWERED ? ADMIN_DISCARD_CHUNK :
	    ADMIN_MAX_HEAD + 1;

	if (!stream_closed(c->s))
		(void)stream_read_bytes(c->s, n, true, on_data);
}

static void
on_eof(struct stream *s, void *arg)
{
	struct admin_conn *c = arg;

	/*
	 * Answered: both directions are shut once the answer is out, and the
	 * stream closes by itself.  A request cut short gets no answer.
	 */
	if (c->state == ADMIN_READING)
		stream_close(s, STREAM_CLOSE_EOF);
}

static void
on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct admin_conn *c = w->data;

	(void)loop;
	(void)revents;
	if (c->state == ADMIN_READING && c->adm != NULL)
		log_limited(LOG_INFO, "admin: %s: no complete request within "
		    "%g s; closed", stream_peer(c->s), c->adm->timeout);
	stream_set_error(c->s, "deadline");
	stream_close(c->s, STREAM_CLOSE_TIMEOUT);
}

static void
unlink_conn(struct admin_conn *c)
{
	if (c->adm == NULL)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->adm->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->adm->nconns--;
	c->adm = NULL;
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct admin_conn *c = arg;

	if (why != STREAM_CLOSE_LOCAL && why != STREAM_CLOSE_EOF)
		LOGD("admin: %s closed: %s %s", stream_peer(s),
		    stream_close_reason_str(why), stream_error(s));
	ev_timer_stop(c->loop, &c->deadline);
	unlink_conn(c);
	free(c->head);
	free(c);
}

struct admin *
admin_new(struct ev_loop *loop, double timeout)
{
	struct admin *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->loop = loop;
	a->timeout = timeout;
	return a;
}

void
admin_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct admin *a = arg;
	struct admin_conn *c = calloc(1, sizeof(*c));

	(void)sa;
	(void)salen;
	if (c == NULL) {
		LOGW("admin: no memory for a connection from %s",
		    stream_peer(s));
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	c->adm = a;
	c->loop = a->loop;
	c->s = s;
	c->state = ADMIN_READING;
	if ((c->head = malloc(sizeof(*c->head))) == NULL) {
		free(c);
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	http_head_init(c->head, ADMIN_MAX_HEAD);
	c->next = a->conns;
	if (a->conns != NULL)
		a->conns->prev = c;
	a->conns = c;
	a->nconns++;
	ev_timer_init(&c->deadline, on_deadline, a->timeout, 0.);
	c->deadline.data = c;
	ev_timer_start(a->loop, &c->deadline);
	stream_set_callbacks(s, on_close, c);
	stream_set_eof_cb(s, on_eof);
	read_more(c);
}

void
admin_close_all(struct admin *a)
{
	if (a == NULL)
		return;
	for (struct admin_conn *c = a->conns; c != NULL; c = c->next)
		stream_close(c->s, STREAM_CLOSE_LOCAL);
}

size_t
admin_live(const struct admin *a)
{
	return a != NULL ? a->nconns : 0;
}

void
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	if (a->nconns > 0)
		LOGW("admin: freed with %zu connections open", a->nconns);
	while (a->conns != NULL)
		unlink_conn(a->conns);
	free(a);
}

void
admin_set_relay(struct admin *a, struct registry *reg,
    struct relay_listener *rl)
{
	a->reg = reg;
	a->rl = rl;
}

void
admin_set_status(struct admin *a, admin_status_fn fn, void *arg)
{
	a->status = fn;
	a->status_arg = arg;
}

void
admin_set_token(struct admin *a, const char *token)
{
	snprintf(a->token, sizeof(a->token), "%s", token != NULL ? token : "");
}
