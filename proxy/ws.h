/*
 * ws: the server side of a WebSocket (RFC 6455) on a stream, framed by
 * wslay's event API.  The owner keeps the stream (its callbacks, its
 * reads): it hands what it reads to ws_feed(), and gets whole messages
 * back.  Writes go to the stream: wslay's own (the text messages, pongs,
 * close frames) through its send callback, which never refuses (the
 * stream queues), and the relay's binary frames through
 * ws_send_records(), which frames them here (a 2 to 10-byte header per
 * message, server frames are not masked) and hands them to
 * stream_write_records(), so a slow client's frames are dropped whole
 * as a TCP consumer's are.  Every write is whole messages, so the two
 * never interleave inside a frame.
 *
 * What a hostile client can send is bounded here:
 *  - an unmasked frame, a bad opcode, reserved bits, a fragmented or
 *    oversized control frame, a continuation out of place, bad UTF-8 in
 *    a text message: wslay's checks, answered by a close frame (1002,
 *    1007) and the end of the connection;
 *  - a message over max_message_bytes: closed with 1009;
 *  - pings beyond max_pings in one second, or replies (pongs) piling up
 *    past max_pending bytes because the client does not read: closed
 *    with 1008 (a flood);
 *  - the close handshake in every state (enum ws_state): a close from
 *    the client is answered and the stream ended once the answer is out;
 *    a close of ours waits for the client's for close_timeout seconds
 *    at most; after a protocol error ours is sent and the stream ended
 *    without waiting.
 * The owner's stream close callback is where the ws is freed (ws_free).
 */
#ifndef FERRY_WS_H
#define FERRY_WS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "stream.h"

/* Close codes (RFC 6455, 7.4.1) and Ferry's own (4000-4999). */
#define WS_CLOSE_NORMAL		1000
#define WS_CLOSE_GOING_AWAY	1001
#define WS_CLOSE_PROTOCOL	1002
#define WS_CLOSE_UNSUPPORTED	1003
#define WS_CLOSE_INVALID	1007
#define WS_CLOSE_POLICY		1008
#define WS_CLOSE_TOO_BIG	1009
#define WS_CLOSE_TRY_LATER	1013

enum ws_state {
	WS_OPEN,		/* messages both ways */
	WS_CLOSE_SENT,		/* ours is out, waiting for the client's */
	WS_CLOSE_RECEIVED,	/* the client's came, ours follows */
	WS_CLOSED,		/* both ways done: the stream ends */
};

struct ws_opts {
	size_t max_message_bytes;	/* a client's message, at most */
	unsigned max_pings;		/* per second */
	size_t max_pending;		/* queued replies before a flood */
	double close_timeout;		/* waiting for the client's close */
};

void ws_opts_default(struct ws_opts *o);

struct ws;

/* A whole data message from the client (binary or text). */
typedef void (*ws_message_cb)(struct ws *ws, bool binary, const char *data,
    size_t len, void *arg);

/*
 * The length of Sec-WebSocket-Accept's value (base64 of a SHA-1), and
 * its terminating NUL.
 */
#define WS_ACCEPT_LEN 28

/*
 * Whether the request is a WebSocket opening handshake Ferry takes: 0,
 * with the Sec-WebSocket-Accept value in accept, or the HTTP status to
 * answer (400: bad or missing headers, 426: not an upgrade, or another
 * version than 13; the answer then says Sec-WebSocket-Version: 13),
 * with why.
 */
int ws_check_upgrade(const struct http_request *r,
    char accept[WS_ACCEPT_LEN + 1], const char **why);

/* Over an open stream; NULL when memory cannot be had. */
struct ws *ws_new(struct ev_loop *loop, struct stream *s,
    const struct ws_opts *o, ws_message_cb on_message, void *arg);
/* NULL is ignored.  Does not touch the stream. */
void ws_free(struct ws *ws);

/* Bytes read from the client (after the upgrade's head). */
void ws_feed(struct ws *ws, const char *data, size_t len);

/* A text message (UTF-8).  0, or -1 once closing or without memory. */
int ws_send_text(struct ws *ws, const char *data, size_t len);

/*
 * n records of `size` bytes, one binary message each, with the contract
 * of stream_write_records() (limit: bytes queued, SIZE_MAX for none):
 * how many were taken, the first ones.  0 once closing.
 */
size_t ws_send_records(struct ws *ws, const char *recs, size_t n,
    size_t size, size_t limit);

/* Starts the close handshake with `code` and a short reason. */
void ws_close(struct ws *ws, uint16_t code, const char *reason);

enum ws_state ws_state(const struct ws *ws);
/* The code of the close that ended it (received, else sent), or 0. */
uint16_t ws_close_code(const struct ws *ws);
/* Why it closed (ours), or "". */
const char *ws_close_reason(const struct ws *ws);

#endif
