/* relay: see relay.h. */
#define _GNU_SOURCE
#include "relay.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <ctype.h>
#include <strings.h>

#include "acl.h"
#include "cluster.h"
#include "http.h"
#include "log.h"
#include "obj.h"
#include "ws.h"

/* Bytes handed to the parser per callback; bounds a blocked overshoot. */
#define READ_CHUNK (64 * 1024)
/* How long a refused client has to read its 0x01 and close. */
#define LINGER_SECONDS 2.0

#define RELAY_LISTENER_MAGIC 0x726c7374u	/* "rlst" */
#define RELAY_CLIENT_MAGIC 0x72636c69u	/* "rcli" */

LIST_HEAD(relay_clients, relay_client);

struct relay_listener {
	uint32_t magic;			/* RELAY_LISTENER_MAGIC */
	struct relay_origin o;		/* name, options, totals */
	struct registry *reg;		/* every relay listener's */
	struct acl *acl;		/* NULL: none */
	struct cluster *cluster;	/* NULL: this process alone */
	uint64_t protocol_errors;	/* unknown first byte, bad accept */
	struct relay_clients conns;	/* open connections (shutdown) */
	struct relay_web web;		/* WebSocket clients */
};

/* What a connection speaks, known from its first byte. */
enum relay_path {
	RELAY_PATH_UNKNOWN,		/* nothing read yet */
	RELAY_PATH_DEVICE,		/* 0x0a / 0x0b: the device protocol */
	RELAY_PATH_HTTP,		/* a letter: an HTTP request head */
	RELAY_PATH_WS,			/* upgraded: WebSocket messages */
};

/* One client connection: the protocol's side of it. */
struct relay_client {
	uint32_t magic;			/* RELAY_CLIENT_MAGIC while it lives */
	struct relay_listener *lst;
	LIST_ENTRY(relay_client) link;	/* the listener's open ones */
	struct relay_parser p;
	ev_timer timer;			/* registration deadline, then linger */
	ev_tstamp since;		/* connected at */
	bool registered;		/* producer registered / consumer in */
	bool lingering;			/* refused: reading until the close */
	bool done;			/* closing: read no more */
	enum relay_path path;
	struct http_head *head;		/* RELAY_PATH_HTTP only */
	struct ws *ws;			/* RELAY_PATH_WS only */
	size_t frame_size;		/* WebSocket producer */
	/*
	 * Waiting for the cluster (a claim or a lookup): reading is paused,
	 * and the bytes read after the step wait in `held`.
	 */
	bool waiting;
	char *held;
	size_t held_len;
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
	/*
	 * The registry's part.  &rc is the argument of every callback of
	 * the client (stream, timer, parser), checked by client_of().
	 */
	struct relay_conn rc;
};

/* The client of a callback argument (its relay_conn). */
static struct relay_client *
client_of(void *arg)
{
	struct relay_conn *rc;
	struct relay_client *cl;

	CAST_OBJ_NOTNULL(rc, arg, RELAY_CONN_MAGIC);
	cl = container_of(rc, struct relay_client, rc);
	CHECK_OBJ_NOTNULL(cl, RELAY_CLIENT_MAGIC);
	return cl;
}

/* For log lines: "" for a part not allocated. */
static const char *
opt_str(const char *s)
{
	return s != NULL ? s : "";
}

static const char ACK = RELAY_OK, NAK = RELAY_REFUSED;

static const char *
role_name(const struct relay_client *cl)
{
	if (cl->path == RELAY_PATH_WS || cl->path == RELAY_PATH_HTTP)
		return cl->p.role == RELAY_PRODUCER ? "WebSocket producer" :
		    cl->p.role == RELAY_CONSUMER ? "WebSocket consumer" :
		    "HTTP client";
	return cl->p.role == RELAY_PRODUCER ? "producer" :
	    cl->p.role == RELAY_CONSUMER ? "consumer" : "client";
}

static void set_reason(struct relay_client *cl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int wait_cluster(struct relay_client *cl);
static void on_cluster(struct relay_conn *rc, bool ok, const char *why);
static int send_keys(struct relay_client *cl,
    const struct registry_entry *e);

/* The first reason given is the one logged. */
static void
set_reason(struct relay_client *cl, const char *fmt, ...)
{
	va_list ap;

	if (cl->reason != NULL)
		return;
	va_start(ap, fmt);
	/* Without memory the close is logged with the stream's reason. */
	if (vasprintf(&cl->reason, fmt, ap) < 0)
		cl->reason = NULL;
	va_end(ap);
}

static void
arm_timer(struct relay_client *cl, double seconds)
{
	struct ev_loop *loop = cl->lst->reg->loop;

	ev_timer_stop(loop, &cl->timer);
	if (seconds > 0) {
		ev_timer_set(&cl->timer, seconds, 0.);
		ev_timer_start(loop, &cl->timer);
	}
}

/* Queues a reply; a stream that cannot take it is closing already. */
static int
reply(struct relay_client *cl, const void *p, size_t len)
{
	if (stream_write(cl->rc.s, p, len, NULL) == 0)
		return 0;
	cl->done = true;
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
linger(struct relay_client *cl)
{
	struct stream *s = cl->rc.s;

	cl->lingering = true;
	stream_set_eof_cb(s, linger_eof);
	stream_shutdown_write(s);
	arm_timer(cl, LINGER_SECONDS);
	return 1;
}

/* A refusal the protocol answers: 0x01, then the close. */
static int
refuse(struct relay_client *cl, const char *why)
{
	set_reason(cl, "refused: %s", why);
	cl->lst->o.total.refused++;
	cl->lingering = true;
	if (reply(cl, &NAK, 1) != 0)
		return 1;
	return linger(cl);
}

static void
registered(struct relay_client *cl)
{
	const struct relay_opts *o = &cl->lst->o.opts;

	cl->registered = true;
	ev_timer_stop(cl->lst->reg->loop, &cl->timer);
	if (o->idle_timeout > 0)
		stream_set_idle_timeout(cl->rc.s, o->idle_timeout);
}

/* "kind:value", escaped for a log line. */
static void
id_str(const struct peer_id *id, char *out, size_t len)
{
	int n = snprintf(out, len, "%s:", peer_id_kind_name(id->kind));

	if (n > 0 && (size_t)n < len)
		registry_uuid_str(id->value, id->len, out + n,
		    len - (size_t)n);
}

/* Every identity of a certificate, for the line that denies it. */
static void
ids_str(const struct peer_ids *ids, char *out, size_t len)
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
acl_allows(struct relay_client *cl, const char *uuid, size_t ulen)
{
	struct relay_listener *lst = cl->lst;
	enum acl_role role = cl->p.role == RELAY_PRODUCER ? ACL_PRODUCE :
	    ACL_CONSUME;
	const struct peer_id *id;
	struct peer_ids ids;
	char who[512], u[REGISTRY_UUID_STR];
	bool cert;
	int line;

	if (lst->acl == NULL)
		return true;
	cert = stream_peer_ids(cl->rc.s, &ids);
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
		free(cl->grant);
		cl->grant = strdup(grant);
		return true;
	}
	lst->o.total.denied++;
	if (log_enabled(LOG_WARN)) {
		ids_str(cert ? &ids : NULL, who, sizeof(who));
		registry_uuid_str(uuid, ulen, u, sizeof(u));
		log_limited(LOG_WARN, "relay %s: access list %s: %s %s (%s) may "
		    "not %s uuid '%s'", lst->o.name, acl_path(lst->acl),
		    role_name(cl), stream_peer(cl->rc.s), who,
		    acl_role_name(role), u);
	}
	return false;
}

static int
on_uuid(struct relay_client *cl, const struct relay_event *ev)
{
	struct registry *reg = cl->lst->reg;
	struct registry_entry *e;
	const char *why = NULL;

	free(cl->uuid);
	cl->ulen = 0;
	if ((cl->uuid = malloc(ev->len)) == NULL) {
		cl->done = true;
		set_reason(cl, "no memory for the uuid");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return 1;
	}
	memcpy(cl->uuid, ev->data, ev->len);
	cl->ulen = ev->len;
	/* As for an unknown uuid: a refusal tells nothing about the uuid. */
	if (!acl_allows(cl, ev->data, ev->len))
		return refuse(cl, "not allowed by the access list");
	if (cl->p.role == RELAY_PRODUCER) {
		/* Refused at the uuid, as soon as it can be known. */
		if (registry_refuses_producer(reg, ev->data, ev->len))
			return refuse(cl, "uuid held by a live producer");
		return reply(cl, &ACK, 1);
	}
	e = registry_add_consumer(reg, &cl->rc, ev->data, ev->len, &why);
	if (e == NULL && cl->lst->cluster != NULL &&
	    registry_find(reg, ev->data, ev->len) == NULL) {
		/* Perhaps a producer on another node: the cluster looks. */
		switch (cluster_lookup(cl->lst->cluster, &cl->rc, ev->data,
		    ev->len, on_cluster, &why)) {
		case 1:
			return wait_cluster(cl);
		default:
			return refuse(cl, why);
		}
	}
	if (e == NULL)
		return refuse(cl, why);
	return send_keys(cl, e);
}

/* The answer to a consumer's uuid: 0x00 and the keys. */
static int
send_keys(struct relay_client *cl, const struct registry_entry *e)
{
	uint8_t hdr[1 + RELAY_LEN_SIZE] = { RELAY_OK };

	relay_len_put(hdr + 1, (uint32_t)e->keys_len);
	cl->nkeys = e->nkeys;
	if (reply(cl, hdr, sizeof(hdr)) != 0)
		return 1;
	return reply(cl, e->keys, e->keys_len);
}

/* The producer holds its uuid: 0x00, and the line that says so. */
static int
producer_in(struct relay_client *cl)
{
	char u[REGISTRY_UUID_STR], node[200] = "";

	if (reply(cl, &ACK, 1) != 0)
		return 1;
	registered(cl);
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	if (cl->lst->cluster != NULL)
		snprintf(node, sizeof(node), " on node %s",
		    cluster_node(cl->lst->cluster));
	LOGI("relay %s: producer %s registered uuid '%s' with %zu keys "
	    "(consumers: %zu)%s%s", cl->lst->o.name, stream_peer(cl->rc.s),
	    u, cl->nkeys, cl->rc.entry->nconsumers, node, opt_str(cl->grant));
	return 0;
}

static int
on_keys(struct relay_client *cl, const struct relay_event *ev)
{
	struct registry *reg = cl->lst->reg;
	const char *why = NULL;

	cl->nkeys = ev->count;
	if (cl->lst->cluster != NULL) {
		/* Visible cluster-wide before its 0x00. */
		switch (cluster_claim(cl->lst->cluster, &cl->rc, cl->uuid,
		    cl->ulen, ev->data, ev->len, ev->count, on_cluster, &why)) {
		case 1:
			return wait_cluster(cl);
		default:
			return why != NULL ? refuse(cl, why) : producer_in(cl);
		}
	}
	if (registry_add_producer(reg, &cl->rc, cl->uuid, cl->ulen, ev->data,
	    ev->len, ev->count, &why) < 0)
		return refuse(cl, why);
	return producer_in(cl);
}

static int
on_accept(struct relay_client *cl, const struct relay_event *ev)
{
	char u[REGISTRY_UUID_STR], node[200] = "";
	const char *why = NULL;

	if (ev->role != RELAY_ACCEPT) {
		set_reason(cl, "declined the keys (0x%02x)",
		    (unsigned)ev->role);
		cl->done = true;
		stream_end(cl->rc.s);
		return 1;
	}
	if (cl->rc.entry == NULL) {
		/* Detached meanwhile (other keys): its stream is closing. */
		cl->done = true;
		return 1;
	}
	if (registry_accept(&cl->rc, &why) < 0) {
		/*
		 * max_consumers were accepted since its uuid step.  Nothing
		 * answers an accept byte: the close (no frame, no byte after
		 * the keys) is the refusal, counted with the 0x01 ones.
		 */
		set_reason(cl, "refused at its accept byte: %s", why);
		cl->lst->o.total.refused++;
		return linger(cl);
	}
	registered(cl);
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	if (cl->lst->cluster != NULL)
		snprintf(node, sizeof(node), ", producer on node %s",
		    cluster_holder(cl->lst->cluster, cl->rc.entry));
	LOGI("relay %s: consumer %s joined uuid '%s' (%zu keys)%s%s",
	    cl->lst->o.name, stream_peer(cl->rc.s), u, cl->nkeys, node,
	    opt_str(cl->grant));
	return 0;
}

static int
on_event(void *arg, const struct relay_event *ev)
{
	struct relay_client *cl = client_of(arg);
	struct stream *s = cl->rc.s;

	if (cl->done || cl->lingering || stream_closed(s))
		return 1;
	switch (ev->type) {
	case RELAY_EV_ROLE:
		return reply(cl, &ACK, 1);
	case RELAY_EV_UUID:
		return on_uuid(cl, ev);
	case RELAY_EV_KEYS:
		return on_keys(cl, ev);
	case RELAY_EV_ACCEPT:
		return on_accept(cl, ev);
	case RELAY_EV_FRAMES:
		registry_publish(&cl->rc, ev->data, ev->count);
		return 0;
	case RELAY_EV_ERROR:
		if (ev->limit)
			return refuse(cl, ev->error);
		cl->done = true;
		if (ev->nomem) {
			set_reason(cl, "%s", ev->error);
			stream_close(s, STREAM_CLOSE_NOMEM);
			return 1;
		}
		cl->lst->protocol_errors++;
		set_reason(cl, "protocol error: %s", ev->error);
		stream_close(s, STREAM_CLOSE_LOCAL);
		return 1;
	}
	return 0;
}

/* Keeps bytes read while the cluster decides (at most one read). */
static void
hold(struct relay_client *cl, const char *data, size_t len)
{
	char *p;

	if (len == 0)
		return;
	if ((p = realloc(cl->held, cl->held_len + len)) == NULL) {
		cl->done = true;
		set_reason(cl, "no memory for the bytes after its step");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return;
	}
	memcpy(p + cl->held_len, data, len);
	cl->held = p;
	cl->held_len += len;
}

static void
feed(struct relay_client *cl, const char *data, size_t len)
{
	size_t used;

	if (cl->waiting) {
		hold(cl, data, len);
		return;
	}
	used = relay_parser_feed(&cl->p, data, len, on_event, &cl->rc);
	/* Stopped to wait for the cluster: the rest goes on afterwards. */
	if (cl->waiting)
		hold(cl, data + used, len - used);
}

static void http_feed(struct relay_client *cl, const char *data,
    size_t len);

/* The first byte says the protocol: a device's role, or an HTTP method. */
static void
sniff(struct relay_client *cl, char first)
{
	if (!isalpha((unsigned char)first)) {
		cl->path = RELAY_PATH_DEVICE;
		return;
	}
	cl->path = RELAY_PATH_HTTP;
	if ((cl->head = malloc(sizeof(*cl->head))) == NULL) {
		cl->done = true;
		set_reason(cl, "no memory for an HTTP request");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return;
	}
	http_head_init(cl->head, HTTP_MAX_HEAD);
}

static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct relay_client *cl = client_of(arg);

	if (cl->path == RELAY_PATH_UNKNOWN && len > 0)
		sniff(cl, data[0]);
	/* Once refused, bytes are read only to see the client close. */
	if (!cl->lingering && !cl->done) {
		switch (cl->path) {
		case RELAY_PATH_DEVICE:
			feed(cl, data, len);
			break;
		case RELAY_PATH_HTTP:
			http_feed(cl, data, len);
			break;
		case RELAY_PATH_WS:
			ws_feed(cl->ws, data, len);
			break;
		case RELAY_PATH_UNKNOWN:
			break;
		}
	}
	if (!cl->done && !stream_closed(s))
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

/* ---- WebSocket clients ---- */

static const char *
status_text(int status)
{
	switch (status) {
	case 101: return "101 Switching Protocols";
	case 400: return "400 Bad Request";
	case 403: return "403 Forbidden";
	case 404: return "404 Not Found";
	case 405: return "405 Method Not Allowed";
	case 409: return "409 Conflict";
	case 426: return "426 Upgrade Required";
	case 431: return "431 Request Header Fields Too Large";
	default: return "503 Service Unavailable";
	}
}

/*
 * An HTTP refusal: the status and why (as the body), then the linger a
 * device's 0x01 gets.  Requests Ferry cannot read count as protocol
 * errors, the others (no such uuid, a conflict) as refusals.
 */
static int
http_refuse(struct relay_client *cl, int status, const char *why)
{
	struct buffer b = BUFFER_INIT;
	const char *extra = status == 426 ?
	    "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" : NULL;
	size_t wl = strlen(why);

	set_reason(cl, "refused: HTTP %d: %s", status, why);
	if (status == 400 || status == 405 || status == 426 || status == 431)
		cl->lst->protocol_errors++;
	else if (status != 403)
		cl->lst->o.total.refused++;
	cl->lingering = true;
	if (http_response_head(&b, status_text(status), "text/plain",
	    wl + 1, extra) < 0 || buffer_append(&b, why, wl) < 0 ||
	    buffer_append(&b, "\n", 1) < 0) {
		buffer_free(&b);
		cl->done = true;
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return 1;
	}
	if (reply(cl, buffer_data(&b), buffer_len(&b)) == 0)
		(void)linger(cl);
	buffer_free(&b);
	return 1;
}

static bool
origin_allowed(const struct relay_listener *lst, const struct http_request *r)
{
	const char *o = lst->web.origins, *v;
	size_t vlen;

	if (o[0] == '\0' || (v = http_header(r, "Origin", &vlen)) == NULL)
		return true;
	while (*o != '\0') {
		size_t n;
		o += strspn(o, " ,\t");
		n = strcspn(o, " ,\t");
		if (n > 0 && n == vlen && strncasecmp(o, v, n) == 0)
			return true;
		o += n;
	}
	return false;
}

static size_t
ws_write_frames(struct relay_conn *c, const char *frames, size_t n,
    size_t size, size_t limit)
{
	struct relay_client *cl = client_of(c);

	return ws_send_records(cl->ws, frames, n, size, limit);
}

static void
ws_end(struct relay_conn *c, const char *why)
{
	struct relay_client *cl = client_of(c);

	set_reason(cl, "%s", why);
	ws_close(cl->ws, WS_CLOSE_GOING_AWAY, why);
}

static const struct relay_wire ws_conn_ops = {
	.kind = "websocket",
	.write_frames = ws_write_frames,
	.end = ws_end,
};

/* A message from a WebSocket client: a producer's frames. */
static void
on_ws_message(struct ws *ws, bool binary, const char *data, size_t len,
    void *arg)
{
	struct relay_client *cl = client_of(arg);

	if (cl->p.role != RELAY_PRODUCER)
		return;		/* a consumer's messages are ignored */
	if (!binary || len == 0 || len % cl->frame_size != 0) {
		cl->lst->protocol_errors++;
		set_reason(cl, "protocol error: %s", !binary ?
		    "a text message (frames are binary)" :
		    "a message that is not a whole number of frames");
		ws_close(ws, binary ? WS_CLOSE_INVALID : WS_CLOSE_UNSUPPORTED,
		    binary ? "not a whole number of frames" :
		    "frames are binary messages");
		return;
	}
	registry_publish(&cl->rc, data, len / cl->frame_size);
}

/* The consumer's first message: {"uuid": "...", "keys": [...]}. */
static int
ws_send_keys(struct relay_client *cl, const struct registry_entry *e)
{
	struct buffer b = BUFFER_INIT;
	const char *k = e->keys, *end = e->keys + e->keys_len;
	int rc = http_printf(&b, "{\"uuid\": ");

	rc |= http_json_str(&b, cl->uuid, cl->ulen);
	rc |= http_printf(&b, ", \"keys\": [");
	while (rc == 0 && k < end) {
		const char *comma = memchr(k, RELAY_KEY_SEP, (size_t)(end - k));
		const char *e2 = comma != NULL ? comma : end;
		rc |= http_json_str(&b, k, (size_t)(e2 - k));
		if (comma != NULL)
			rc |= http_printf(&b, ", ");
		k = e2 + 1;
	}
	rc |= http_printf(&b, "]}");
	if (rc == 0)
		rc = ws_send_text(cl->ws, buffer_data(&b), buffer_len(&b));
	buffer_free(&b);
	return rc;
}

/* The 101, and the client is a WebSocket from now on. */
static int
upgrade(struct relay_client *cl, const char *accept, const char *rest,
    size_t restlen)
{
	struct relay_listener *lst = cl->lst;
	struct buffer b = BUFFER_INIT;
	char extra[160], u[REGISTRY_UUID_STR];
	const char *why = NULL;
	bool consumer = cl->p.role == RELAY_CONSUMER;

	snprintf(extra, sizeof(extra), "Upgrade: websocket\r\nConnection: "
	    "Upgrade\r\nSec-WebSocket-Accept: %s\r\n", accept);
	struct ws_opts wo = lst->web.ws;

	/*
	 * Its frames may fill its queue (queue_bytes, and a run more under
	 * block) before a pong piles up behind them: that is not a flood.
	 */
	wo.max_pending += lst->o.opts.queue_bytes + READ_CHUNK;
	cl->ws = ws_new(lst->reg->loop, cl->rc.s, &wo, on_ws_message,
	    &cl->rc);
	if (cl->ws == NULL ||
	    http_response_head(&b, status_text(101), NULL, 0, extra) < 0) {
		buffer_free(&b);
		cl->done = true;
		set_reason(cl, "no memory for a WebSocket");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return 1;
	}
	free(cl->head);
	cl->head = NULL;
	cl->path = RELAY_PATH_WS;
	if (reply(cl, buffer_data(&b), buffer_len(&b)) != 0) {
		buffer_free(&b);
		return 1;
	}
	buffer_free(&b);
	registered(cl);
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	cl->rc.wire = &ws_conn_ops;
	if (consumer) {
		if (ws_send_keys(cl, cl->rc.entry) < 0 ||
		    registry_accept(&cl->rc, &why) < 0) {
			set_reason(cl, "refused after its upgrade: %s",
			    why != NULL ? why : "out of memory");
			lst->o.total.refused++;
			ws_close(cl->ws, WS_CLOSE_TRY_LATER, why != NULL ? why :
			    "out of memory");
			return 1;
		}
		LOGI("relay %s: %s %s joined uuid '%s' (%zu keys)%s",
		    lst->o.name, role_name(cl), stream_peer(cl->rc.s), u,
		    cl->nkeys, opt_str(cl->grant));
	} else {
		LOGI("relay %s: %s %s registered uuid '%s' with %zu keys "
		    "(consumers: %zu)%s", lst->o.name, role_name(cl),
		    stream_peer(cl->rc.s), u, cl->nkeys,
		    cl->rc.entry->nconsumers, opt_str(cl->grant));
	}
	if (restlen > 0)
		ws_feed(cl->ws, rest, restlen);
	return 0;
}

/* The producer's keys, from ?keys=a,b,c; 0 or the status to answer. */
static int
producer_keys(struct relay_client *cl, const struct http_request *r,
    char *keys, size_t cap, size_t *klen, const char **why)
{
	static char msg[128];
	size_t vlen, count = 0;
	const char *v = http_query_param(r->query, r->qlen, "keys", &vlen);
	long n;

	if (v == NULL) {
		*why = "no keys (?keys=a,b,c)";
		return 400;
	}
	if ((n = http_pct_decode(v, vlen, keys, cap)) < 0) {
		*why = "keys: bad percent-encoding or too long";
		return 400;
	}
	*klen = (size_t)n;
	if (relay_check_keys(&cl->lst->o.opts.limits, keys, *klen, &count,
	    msg, sizeof(msg)) != RELAY_VALID) {
		*why = msg;
		return 400;
	}
	cl->nkeys = count;
	cl->frame_size = relay_frame_size(count);
	return 0;
}

static int wait_cluster(struct relay_client *cl);
static void on_cluster(struct relay_conn *rc, bool ok, const char *why);

/* After the head: which endpoint, which uuid, and whether it may. */
static int
web_route(struct relay_client *cl, const char *rest, size_t restlen)
{
	static const char consume[] = "/v1/consume/", produce[] = "/v1/produce/";
	const struct http_request *r = &cl->head->req;
	struct relay_listener *lst = cl->lst;
	struct registry_entry *e;
	char accept[WS_ACCEPT_LEN + 1], uuid[RELAY_MAX_UUID + 1], msg[128];
	char *keys = NULL;
	const char *why = NULL, *enc;
	size_t elen, klen = 0;
	long ulen;
	int status;

	if (r->plen > sizeof(consume) - 1 &&
	    memcmp(r->target, consume, sizeof(consume) - 1) == 0)
		cl->p.role = RELAY_CONSUMER;
	else if (r->plen > sizeof(produce) - 1 &&
	    memcmp(r->target, produce, sizeof(produce) - 1) == 0)
		cl->p.role = RELAY_PRODUCER;
	else
		return http_refuse(cl, 404, "no such endpoint (/v1/consume/"
		    "<uuid>, /v1/produce/<uuid>?keys=...)");
	if ((status = ws_check_upgrade(r, accept, &why)) != 0)
		return http_refuse(cl, status, why);
	if (!origin_allowed(lst, r))
		return http_refuse(cl, 403, "origin not allowed");
	enc = r->target + sizeof(consume) - 1;
	elen = r->plen - (sizeof(consume) - 1);
	if ((ulen = http_pct_decode(enc, elen, uuid, lst->o.opts.limits.
	    max_uuid)) < 0)
		return http_refuse(cl, 400, "uuid: bad percent-encoding or "
		    "too long");
	if (relay_check_uuid(&lst->o.opts.limits, uuid, (size_t)ulen, msg,
	    sizeof(msg)) != RELAY_VALID)
		return http_refuse(cl, 400, msg);
	free(cl->uuid);
	if ((cl->uuid = malloc((size_t)ulen)) == NULL)
		return http_refuse(cl, 503, "out of memory");
	memcpy(cl->uuid, uuid, (size_t)ulen);
	cl->ulen = (size_t)ulen;
	if (!acl_allows(cl, uuid, (size_t)ulen))
		return http_refuse(cl, 403, "not allowed by the access list");
	if (cl->p.role == RELAY_CONSUMER) {
		e = registry_find(lst->reg, uuid, (size_t)ulen);
		if (e == NULL && lst->cluster != NULL) {
			/* Perhaps a producer on another node: the cluster looks. */
			if (cluster_lookup(lst->cluster, &cl->rc, uuid,
			    (size_t)ulen, on_cluster, &why) != 1)
				return http_refuse(cl, 404, why);
			hold(cl, rest, restlen);
			return wait_cluster(cl);
		}
		if (!registry_live(e))
			return http_refuse(cl, 404, "no producer holds this "
			    "uuid");
		if ((e = registry_add_consumer(lst->reg, &cl->rc, uuid,
		    (size_t)ulen, &why)) == NULL)
			return http_refuse(cl, 503, why);
		cl->nkeys = e->nkeys;
		return upgrade(cl, accept, rest, restlen);
	}
	if ((keys = malloc(lst->o.opts.limits.max_keys_bytes)) == NULL)
		return http_refuse(cl, 503, "out of memory");
	status = producer_keys(cl, r, keys, lst->o.opts.limits.max_keys_bytes,
	    &klen, &why);
	if (status == 0 && lst->cluster != NULL) {
		/* Visible cluster-wide before its 101 (as before a 0x00). */
		int claim = cluster_claim(lst->cluster, &cl->rc, uuid,
		    (size_t)ulen, keys, klen, cl->nkeys, on_cluster, &why);
		free(keys);
		if (claim == 1) {
			hold(cl, rest, restlen);
			return wait_cluster(cl);
		}
		if (why != NULL)
			return http_refuse(cl, 409, why);
		return upgrade(cl, accept, rest, restlen);
	}
	if (status == 0 && registry_add_producer(lst->reg, &cl->rc, uuid,
	    (size_t)ulen, keys, klen, cl->nkeys, &why) < 0)
		status = 409;
	free(keys);
	if (status != 0)
		return http_refuse(cl, status, why);
	return upgrade(cl, accept, rest, restlen);
}

static void
http_feed(struct relay_client *cl, const char *data, size_t len)
{
	size_t used;

	switch (http_head_feed(cl->head, data, len, &used)) {
	case HTTP_HEAD_MORE:
		return;
	case HTTP_HEAD_ERROR:
		(void)http_refuse(cl, cl->head->status, cl->head->why);
		return;
	case HTTP_HEAD_DONE:
		(void)web_route(cl, data + used, len - used);
		return;
	}
}

/* Stops the feed until the cluster answers (on_cluster). */
static int
wait_cluster(struct relay_client *cl)
{
	cl->waiting = true;
	stream_pause_reading(cl->rc.s);
	return 1;
}

/* A WebSocket client's claim or lookup answered: refused, or upgraded. */
static int
web_resume(struct relay_client *cl, bool ok, const char *why,
    const char *rest, size_t restlen)
{
	char accept[WS_ACCEPT_LEN + 1];
	const char *unused;
	struct registry_entry *e;

	if (!ok)
		return http_refuse(cl, cl->p.role == RELAY_PRODUCER ? 409 : 404,
		    why);
	/* Checked before the cluster was asked: only the value is wanted. */
	(void)ws_check_upgrade(&cl->head->req, accept, &unused);
	if (cl->p.role == RELAY_CONSUMER) {
		/* A producer holds it now: attached like any consumer. */
		e = registry_add_consumer(cl->lst->reg, &cl->rc, cl->uuid,
		    cl->ulen, &why);
		if (e == NULL)
			return http_refuse(cl, 503, why);
		cl->nkeys = e->nkeys;
	}
	return upgrade(cl, accept, rest, restlen);
}

/*
 * The cluster's answer: the claim or lookup is done (a connection that
 * closed meanwhile was forgotten by cluster_cancel, never answered).
 */
static void
on_cluster(struct relay_conn *rc, bool ok, const char *why)
{
	struct relay_client *cl = client_of(rc);
	struct registry_entry *e;
	char *held = cl->held;
	size_t held_len = cl->held_len;
	int stop;

	cl->waiting = false;
	cl->held = NULL;
	cl->held_len = 0;
	if (cl->done || cl->lingering || stream_closed(rc->s)) {
		free(held);
		return;
	}
	if (cl->path == RELAY_PATH_HTTP) {
		(void)web_resume(cl, ok, why, held, held_len);
		free(held);
		if (!cl->done && !stream_closed(rc->s))
			stream_resume_reading(rc->s);
		return;
	}
	if (!ok) {
		stop = refuse(cl, why);
	} else if (cl->p.role == RELAY_PRODUCER) {
		stop = producer_in(cl);
	} else {
		/* A producer holds it now: attached like any consumer. */
		e = registry_add_consumer(cl->lst->reg, rc, cl->uuid, cl->ulen,
		    &why);
		stop = e == NULL ? refuse(cl, why) : send_keys(cl, e);
	}
	if (!stop && !cl->done && held_len > 0)
		feed(cl, held, held_len);
	free(held);
	if (!cl->done && !stream_closed(rc->s))
		stream_resume_reading(rc->s);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct relay_client *cl = client_of(w->data);

	(void)loop;
	(void)revents;
	cl->done = true;
	if (cl->lingering) {
		stream_close(cl->rc.s, STREAM_CLOSE_LOCAL);
		return;
	}
	set_reason(cl, "no registration within %.1f s",
	    cl->lst->o.opts.header_timeout);
	stream_close(cl->rc.s, STREAM_CLOSE_TIMEOUT);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct relay_client *cl = client_of(arg);
	struct registry *reg = cl->lst->reg;
	double secs = ev_now(reg->loop) - cl->since;
	char u[REGISTRY_UUID_STR], reason[320];

	if (cl->reason != NULL)
		snprintf(reason, sizeof(reason), "%s", cl->reason);
	else if (stream_error(s)[0] != '\0')
		snprintf(reason, sizeof(reason), "%s: %s",
		    stream_close_reason_str(why), stream_error(s));
	else
		snprintf(reason, sizeof(reason), "%s",
		    stream_close_reason_str(why));
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	if (cl->registered)
		LOGI("relay %s: %s %s left uuid '%s' (%zu keys) after %.1f s: "
		    "%llu frames, %llu dropped, %llu bytes in, %llu bytes out: "
		    "%s", cl->lst->o.name, role_name(cl), stream_peer(s), u,
		    cl->nkeys, secs, (unsigned long long)cl->rc.frames,
		    (unsigned long long)cl->rc.dropped,
		    (unsigned long long)stream_bytes_in(s),
		    (unsigned long long)stream_bytes_out(s), reason);
	else
		log_limited(LOG_INFO, "relay %s: %s %s%s%s%s closed after "
		    "%.1f s, %llu bytes in, %llu bytes out: %s", cl->lst->o.name,
		    role_name(cl), stream_peer(s), cl->ulen ? " (uuid '" : "",
		    u, cl->ulen ? "')" : "", secs,
		    (unsigned long long)stream_bytes_in(s),
		    (unsigned long long)stream_bytes_out(s), reason);
	if (cl->waiting)
		cluster_cancel(cl->lst->cluster, &cl->rc, cl->uuid, cl->ulen);
	registry_remove(&cl->rc);
	ev_timer_stop(reg->loop, &cl->timer);
	relay_parser_free(&cl->p);
	ws_free(cl->ws);
	free(cl->head);
	free(cl->held);
	LIST_REMOVE(cl, link);
	free(cl->uuid);
	free(cl->reason);
	free(cl->grant);
	cl->rc.magic = 0;
	cl->magic = 0;
	free(cl);
}

static struct relay_client *
client_new(struct relay_listener *lst, struct stream *s)
{
	struct relay_client *cl = calloc(1, sizeof(*cl));

	if (cl == NULL) {
		LOGW("relay %s: no memory for a connection from %s",
		    lst->o.name, stream_peer(s));
		stream_close(s, STREAM_CLOSE_NOMEM);
		return NULL;
	}
	cl->magic = RELAY_CLIENT_MAGIC;
	cl->lst = lst;
	LIST_INSERT_HEAD(&lst->conns, cl, link);
	registry_conn_init(&cl->rc, s, &lst->o);
	cl->since = ev_now(lst->reg->loop);
	relay_parser_init(&cl->p, &lst->o.opts.limits);
	stream_set_callbacks(s, on_close, &cl->rc);
	ev_timer_init(&cl->timer, on_timer, 0., 0.);
	cl->timer.data = &cl->rc;
	arm_timer(cl, lst->o.opts.header_timeout);
	return cl;
}

void
relay_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct relay_listener *lst;

	(void)sa;
	(void)salen;
	CAST_OBJ_NOTNULL(lst, arg, RELAY_LISTENER_MAGIC);
	if (client_new(lst, s) != NULL)
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

void
relay_take_http(struct relay_listener *lst, struct stream *s,
    struct http_head *head, const char *rest, size_t restlen)
{
	struct relay_client *cl;

	CHECK_OBJ_NOTNULL(lst, RELAY_LISTENER_MAGIC);
	if ((cl = client_new(lst, s)) == NULL) {
		free(head);
		return;
	}
	cl->path = RELAY_PATH_HTTP;
	cl->head = head;
	(void)web_route(cl, rest, restlen);
	if (!cl->done && !stream_closed(s))
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

void
relay_web_default(struct relay_web *w)
{
	memset(w, 0, sizeof(*w));
	ws_opts_default(&w->ws);
}

void
relay_listener_set_web(struct relay_listener *rl, const struct relay_web *w)
{
	rl->web = *w;
}

/* ---- listeners ---- */

struct relay_listener *
relay_listener_new(const char *name, struct registry *reg,
    const struct relay_opts *opts)
{
	struct relay_listener *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return NULL;
	rl->magic = RELAY_LISTENER_MAGIC;
	snprintf(rl->o.name, sizeof(rl->o.name), "%s", name);
	if (opts != NULL)
		rl->o.opts = *opts;
	else
		relay_opts_default(&rl->o.opts);
	rl->reg = reg;
	relay_web_default(&rl->web);
	LIST_INIT(&rl->conns);
	return rl;
}

void
relay_listener_free(struct relay_listener *rl)
{
	if (rl == NULL)
		return;
	acl_free(rl->acl);
	rl->magic = 0;
	free(rl);
}

bool
relay_listener_idle(const struct relay_listener *rl)
{
	return LIST_EMPTY(&rl->conns) && rl->o.devices == 0;
}

void
relay_listener_close_all(struct relay_listener *rl)
{
	struct relay_client *cl;

	if (rl == NULL)
		return;
	/* stream_close() defers the close callback: the list holds still. */
	LIST_FOREACH(cl, &rl->conns, link) {
		set_reason(cl, "shutting down");
		stream_close(cl->rc.s, STREAM_CLOSE_LOCAL);
	}
}

void
relay_listener_set_cluster(struct relay_listener *rl, struct cluster *cl)
{
	rl->cluster = cl;
}

void
relay_listener_set_acl(struct relay_listener *rl, struct acl *acl)
{
	/* Only uuid steps read it, within one callback: no one holds it. */
	acl_free(rl->acl);
	rl->acl = acl;
}

const struct relay_origin *
relay_listener_origin(const struct relay_listener *rl)
{
	return &rl->o;
}

uint64_t
relay_listener_protocol_errors(const struct relay_listener *rl)
{
	return rl->protocol_errors;
}
