/* ws: see ws.h. */
#define _GNU_SOURCE
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "log.h"

#define WS_MAGIC 0x77736f63u	/* "wsoc" */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* Framed records' room kept between runs (ws_send_records). */
#define WS_SCRATCH_KEEP (16 * 1024)

struct ws {
	uint32_t magic;
	struct ev_loop *loop;
	struct stream *s;
	wslay_event_context_ptr ctx;
	struct ws_opts o;
	ws_message_cb on_message;
	void *arg;
	enum ws_state state;
	ev_timer close_timer;
	const char *in;			/* what ws_feed() hands wslay */
	size_t inlen;
	ev_tstamp ping_window;		/* the second pings are counted in */
	unsigned pings;
	uint16_t code;			/* the close that ended it */
	char reason[64];
	char *scratch;			/* framed records (ws_send_records) */
	size_t scratch_cap;
};

void
ws_opts_default(struct ws_opts *o)
{
	o->max_message_bytes = 1024 * 1024;
	o->max_pings = 32;
	o->max_pending = 256 * 1024;
	o->close_timeout = 2;
}

/* ---- the opening handshake ---- */

int
ws_check_upgrade(const struct http_request *r,
    char accept[WS_ACCEPT_LEN + 1], const char **why)
{
	unsigned char raw[64], digest[SHA_DIGEST_LENGTH], key16[32];
	size_t klen, vlen;
	const char *key = http_header(r, "Sec-WebSocket-Key", &klen);
	const char *ver = http_header(r, "Sec-WebSocket-Version", &vlen);

	if (strcmp(r->method, "GET") != 0) {
		*why = "a WebSocket opens with GET";
		return 405;
	}
	if (!http_header_has_token(r, "Upgrade", "websocket")) {
		*why = "not a WebSocket upgrade";
		return 426;
	}
	if (r->major != 1 || r->minor < 1 ||
	    !http_header_has_token(r, "Connection", "upgrade")) {
		*why = "upgrade without HTTP/1.1 and Connection: upgrade";
		return 400;
	}
	if (ver == NULL || vlen != 2 || memcmp(ver, "13", 2) != 0) {
		*why = "Sec-WebSocket-Version is not 13";
		return 426;
	}
	/* The key is 16 random bytes, in base64: 24 characters. */
	if (key == NULL || klen != 24 ||
	    EVP_DecodeBlock(key16, (const unsigned char *)key, 24) != 18 ||
	    key[22] != '=' || key[23] != '=') {
		*why = "bad Sec-WebSocket-Key";
		return 400;
	}
	memcpy(raw, key, 24);
	memcpy(raw + 24, WS_GUID, sizeof(WS_GUID) - 1);
	SHA1(raw, 24 + sizeof(WS_GUID) - 1, digest);
	EVP_EncodeBlock((unsigned char *)accept, digest, sizeof(digest));
	accept[WS_ACCEPT_LEN] = '\0';
	return 0;
}

/* ---- wslay's callbacks ---- */

static ssize_t
recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
    void *user)
{
	struct ws *ws = user;
	size_t n = len < ws->inlen ? len : ws->inlen;

	(void)flags;
	if (n == 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	memcpy(buf, ws->in, n);
	ws->in += n;
	ws->inlen -= n;
	return (ssize_t)n;
}

/* The stream queues what the kernel does not take: never would-block. */
static ssize_t
send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *user)
{
	struct ws *ws = user;

	(void)flags;
	if (stream_write(ws->s, data, len, NULL) < 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

static void
set_reason(struct ws *ws, uint16_t code, const char *why)
{
	if (ws->code != 0)
		return;
	ws->code = code;
	snprintf(ws->reason, sizeof(ws->reason), "%s", why);
}

/* A close of ours that will not wait for the client's (a failure). */
static void
fail(struct ws *ws, uint16_t code, const char *why)
{
	set_reason(ws, code, why);
	(void)wslay_event_queue_close(ws->ctx, code,
	    (const uint8_t *)why, strlen(why));
	wslay_event_shutdown_read(ws->ctx);
}

static void
on_frame_start(wslay_event_context_ptr ctx,
    const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
	struct ws *ws = user;
	ev_tstamp now = ev_now(ws->loop);

	(void)ctx;
	if (arg->opcode != WSLAY_PING)
		return;
	if (now - ws->ping_window >= 1.0) {
		ws->ping_window = now;
		ws->pings = 0;
	}
	if (++ws->pings > ws->o.max_pings)
		fail(ws, WS_CLOSE_POLICY, "ping flood");
}

static void
on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg
    *arg, void *user)
{
	struct ws *ws = user;

	(void)ctx;
	if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
		set_reason(ws, arg->status_code, "closed by the client");
		return;
	}
	if ((arg->opcode == WSLAY_BINARY_FRAME ||
	    arg->opcode == WSLAY_TEXT_FRAME) && ws->state == WS_OPEN &&
	    wslay_event_get_read_enabled(ws->ctx))
		ws->on_message(ws, arg->opcode == WSLAY_BINARY_FRAME,
		    (const char *)arg->msg, arg->msg_length, ws->arg);
}

static const struct wslay_event_callbacks callbacks = {
	.recv_callback = recv_cb,
	.send_callback = send_cb,
	.on_frame_recv_start_callback = on_frame_start,
	.on_msg_recv_callback = on_msg,
};

/* ---- the close handshake ---- */

static void
on_close_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ws *ws = w->data;

	(void)loop;
	(void)revents;
	stream_set_error(ws->s, "no close frame from the client within "
	    "%g s", ws->o.close_timeout);
	ws->state = WS_CLOSED;
	stream_close(ws->s, STREAM_CLOSE_TIMEOUT);
}

/*
 * Sends what wslay queued, then moves the close handshake on from what
 * it says was sent and received.
 */
static void
pump(struct ws *ws)
{
	bool sent, got;

	if (ws->state == WS_CLOSED)
		return;
	if (wslay_event_send(ws->ctx) != 0) {
		ws->state = WS_CLOSED;
		stream_close(ws->s, STREAM_CLOSE_LOCAL);
		return;
	}
	sent = wslay_event_get_close_sent(ws->ctx);
	got = wslay_event_get_close_received(ws->ctx);
	if (sent && (got || !wslay_event_get_read_enabled(ws->ctx))) {
		/* Done both ways, or nothing more to hear: ours goes last. */
		ws->state = WS_CLOSED;
		ev_timer_stop(ws->loop, &ws->close_timer);
		stream_end(ws->s);
		return;
	}
	if (sent && ws->state != WS_CLOSE_SENT) {
		ws->state = WS_CLOSE_SENT;
		ev_timer_set(&ws->close_timer, ws->o.close_timeout, 0.);
		ev_timer_start(ws->loop, &ws->close_timer);
	} else if (got) {
		ws->state = WS_CLOSE_RECEIVED;
	}
	if (ws->state == WS_OPEN &&
	    stream_write_pending(ws->s) > ws->o.max_pending &&
	    wslay_event_get_read_enabled(ws->ctx)) {
		/* Replies pile up: the client sends and does not read. */
		set_reason(ws, WS_CLOSE_POLICY, "replies not read");
		stream_set_error(ws->s, "replies not read (%zu bytes queued)",
		    stream_write_pending(ws->s));
		ws->state = WS_CLOSED;
		stream_close(ws->s, STREAM_CLOSE_LIMIT);
	}
}

/* ---- the connection ---- */

struct ws *
ws_new(struct ev_loop *loop, struct stream *s, const struct ws_opts *o,
    ws_message_cb on_message, void *arg)
{
	struct ws *ws = calloc(1, sizeof(*ws));

	if (ws == NULL)
		return NULL;
	if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
		free(ws);
		return NULL;
	}
	ws->magic = WS_MAGIC;
	ws->loop = loop;
	ws->s = s;
	ws->o = *o;
	ws->on_message = on_message;
	ws->arg = arg;
	ws->state = WS_OPEN;
	ws->ping_window = ev_now(loop);
	wslay_event_config_set_max_recv_msg_length(ws->ctx,
	    o->max_message_bytes);
	ev_timer_init(&ws->close_timer, on_close_timer, 0., 0.);
	ws->close_timer.data = ws;
	return ws;
}

void
ws_free(struct ws *ws)
{
	if (ws == NULL)
		return;
	ev_timer_stop(ws->loop, &ws->close_timer);
	wslay_event_context_free(ws->ctx);
	free(ws->scratch);
	ws->magic = 0;
	free(ws);
}

void
ws_feed(struct ws *ws, const char *data, size_t len)
{
	if (ws->state == WS_CLOSED || stream_closed(ws->s))
		return;
	ws->in = data;
	ws->inlen = len;
	if (wslay_event_get_read_enabled(ws->ctx)) {
		int r = wslay_event_recv(ws->ctx);
		if (r == WSLAY_ERR_NOMEM) {
			stream_set_error(ws->s, "WebSocket: out of memory");
			ws->state = WS_CLOSED;
			stream_close(ws->s, STREAM_CLOSE_NOMEM);
			return;
		}
		/*
		 * Some protocol errors (a fragmented control frame) come
		 * back as a failure rather than as wslay's own close.
		 */
		if (r != 0)
			fail(ws, WS_CLOSE_PROTOCOL, "protocol error");
	}
	ws->in = NULL;
	ws->inlen = 0;
	pump(ws);
}

int
ws_send_text(struct ws *ws, const char *data, size_t len)
{
	struct wslay_event_msg m = {
		.opcode = WSLAY_TEXT_FRAME,
		.msg = (const uint8_t *)data,
		.msg_length = len,
	};

	if (ws->state != WS_OPEN || wslay_event_queue_msg(ws->ctx, &m) != 0)
		return -1;
	pump(ws);
	return 0;
}

/* A server frame's header (FIN, opcode, length, no mask): its length. */
static size_t
frame_header(uint8_t *h, uint8_t opcode, size_t len)
{
	h[0] = 0x80 | opcode;
	if (len < 126) {
		h[1] = (uint8_t)len;
		return 2;
	}
	if (len <= 0xffff) {
		h[1] = 126;
		h[2] = (uint8_t)(len >> 8);
		h[3] = (uint8_t)len;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

size_t
ws_send_records(struct ws *ws, const char *recs, size_t n, size_t size,
    size_t limit)
{
	uint8_t hdr[10];
	size_t hl = frame_header(hdr, WSLAY_BINARY_FRAME, size);
	size_t rec = hl + size, need = n * rec, took;

	if (ws->state != WS_OPEN || n == 0)
		return 0;
	if (need > ws->scratch_cap) {
		char *p = realloc(ws->scratch, need);
		if (p == NULL)
			return 0;
		ws->scratch = p;
		ws->scratch_cap = need;
	}
	for (size_t i = 0; i < n; i++) {
		memcpy(ws->scratch + i * rec, hdr, hl);
		memcpy(ws->scratch + i * rec + hl, recs + i * size, size);
	}
	took = stream_write_records(ws->s, ws->scratch, need, rec, limit);
	/* A burst's room is not kept: 60 Hz needs one frame's. */
	if (ws->scratch_cap > WS_SCRATCH_KEEP) {
		free(ws->scratch);
		ws->scratch = NULL;
		ws->scratch_cap = 0;
	}
	return took;
}

void
ws_close(struct ws *ws, uint16_t code, const char *reason)
{
	size_t rl = strlen(reason);

	if (ws->state != WS_OPEN)
		return;
	set_reason(ws, code, reason);
	(void)wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason,
	    rl < 123 ? rl : 122);
	pump(ws);
}

enum ws_state
ws_state(const struct ws *ws)
{
	return ws->state;
}

uint16_t
ws_close_code(const struct ws *ws)
{
	uint16_t got = wslay_event_get_status_code_received(ws->ctx);

	if (got != 0 && got != WSLAY_CODE_NO_STATUS_RCVD)
		return got;
	if (ws->code != 0)
		return ws->code;
	return wslay_event_get_status_code_sent(ws->ctx);
}

const char *
ws_close_reason(const struct ws *ws)
{
	return ws->reason;
}
