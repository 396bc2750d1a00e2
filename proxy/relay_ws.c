/* relay_ws: the relay's WebSocket clients; see relay.h, relay_impl.h. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "http.h"
#include "log.h"
#include "relay_impl.h"
#include "ws.h"

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

	relay_set_reason(cl, "refused: HTTP %d: %s", status, why);
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
	if (relay_reply(cl, buffer_data(&b), buffer_len(&b)) == 0)
		(void)relay_linger(cl);
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
	struct relay_client *cl = relay_client_of(c);

	return ws_send_records(cl->ws, frames, n, size, limit);
}

static void
ws_end(struct relay_conn *c, const char *why)
{
	struct relay_client *cl = relay_client_of(c);

	relay_set_reason(cl, "%s", why);
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
	struct relay_client *cl = relay_client_of(arg);

	if (cl->p.role != RELAY_PRODUCER)
		return;		/* a consumer's messages are ignored */
	if (!binary || len == 0 || len % cl->frame_size != 0) {
		cl->lst->protocol_errors++;
		relay_set_reason(cl, "protocol error: %s", !binary ?
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
		relay_set_reason(cl, "no memory for a WebSocket");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return 1;
	}
	free(cl->head);
	cl->head = NULL;
	cl->path = RELAY_PATH_WS;
	if (relay_reply(cl, buffer_data(&b), buffer_len(&b)) != 0) {
		buffer_free(&b);
		return 1;
	}
	buffer_free(&b);
	relay_registered(cl);
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	cl->rc.wire = &ws_conn_ops;
	if (consumer) {
		if (ws_send_keys(cl, cl->rc.entry) < 0 ||
		    registry_accept(&cl->rc, &why) < 0) {
			relay_set_reason(cl, "refused after its upgrade: %s",
			    why != NULL ? why : "out of memory");
			lst->o.total.refused++;
			ws_close(cl->ws, WS_CLOSE_TRY_LATER, why != NULL ? why :
			    "out of memory");
			return 1;
		}
		LOGI("relay %s: %s %s joined uuid '%s' (%zu keys)%s",
		    lst->o.name, relay_role_name(cl), stream_peer(cl->rc.s), u,
		    cl->nkeys, relay_opt_str(cl->grant));
	} else {
		LOGI("relay %s: %s %s registered uuid '%s' with %zu keys "
		    "(consumers: %zu)%s", lst->o.name, relay_role_name(cl),
		    stream_peer(cl->rc.s), u, cl->nkeys,
		    cl->rc.entry->nconsumers, relay_opt_str(cl->grant));
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

/* After the head: which endpoint, which uuid, and whether it may. */
int
relay_web_route(struct relay_client *cl, const char *rest, size_t restlen)
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
	if (!relay_acl_allows(cl, uuid, (size_t)ulen))
		return http_refuse(cl, 403, "not allowed by the access list");
	if (cl->p.role == RELAY_CONSUMER) {
		e = registry_find(lst->reg, uuid, (size_t)ulen);
		if (e == NULL && lst->cluster != NULL) {
			/* Perhaps a producer on another node: the cluster looks. */
			if (cluster_lookup(lst->cluster, &cl->rc, uuid,
			    (size_t)ulen, relay_on_cluster, &why) != 1)
				return http_refuse(cl, 404, why);
			relay_hold(cl, rest, restlen);
			return relay_wait_cluster(cl);
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
		    (size_t)ulen, keys, klen, cl->nkeys, relay_on_cluster,
		    &why);
		free(keys);
		if (claim == 1) {
			relay_hold(cl, rest, restlen);
			return relay_wait_cluster(cl);
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

void
relay_http_feed(struct relay_client *cl, const char *data, size_t len)
{
	size_t used;

	switch (http_head_feed(cl->head, data, len, &used)) {
	case HTTP_HEAD_MORE:
		return;
	case HTTP_HEAD_ERROR:
		(void)http_refuse(cl, cl->head->status, cl->head->why);
		return;
	case HTTP_HEAD_DONE:
		(void)relay_web_route(cl, data + used, len - used);
		return;
	}
}

/* A WebSocket client's claim or lookup answered: refused, or upgraded. */
int
relay_web_resume(struct relay_client *cl, bool ok, const char *why,
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
