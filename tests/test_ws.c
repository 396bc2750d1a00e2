/*
 * The WebSocket module (ws.h) over a real stream on a socketpair: the
 * opening handshake's checks and accept value (RFC 6455's own example),
 * messages in, binary records out framed whole, wslay's refusals answered
 * with a close frame, the close handshake from either side.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"
#include "http.h"
#include "ws.h"

static int
upgrade_status(const char *req, char *accept)
{
	struct http_head *h = malloc(sizeof(*h));
	const char *why = NULL;
	size_t used;
	int st;

	cr_assert_not_null(h);
	http_head_init(h, HTTP_MAX_HEAD);
	cr_assert_eq(http_head_feed(h, req, strlen(req), &used),
	    HTTP_HEAD_DONE);
	st = ws_check_upgrade(&h->req, accept, &why);
	cr_assert(st == 0 || why != NULL);
	free(h);
	return st;
}

#define HEAD(extra) "GET /v1/consume/x HTTP/1.1\r\nHost: a\r\n" extra "\r\n"
#define GOOD "Upgrade: websocket\r\nConnection: Upgrade\r\n" \
	"Sec-WebSocket-Version: 13\r\n"

Test(ws, opening_handshake_checks, .timeout = 30)
{
	char acc[WS_ACCEPT_LEN + 1];

	cr_assert_eq(upgrade_status(HEAD(GOOD "Sec-WebSocket-Key: "
	    "dGhlIHNhbXBsZSBub25jZQ==\r\n"), acc), 0);
	cr_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	cr_assert_eq(upgrade_status(HEAD(""), acc), 426);
	cr_assert_eq(upgrade_status(HEAD(GOOD), acc), 400);	/* no key */
	cr_assert_eq(upgrade_status(HEAD(GOOD "Sec-WebSocket-Key: abc\r\n"),
	    acc), 400);
	cr_assert_eq(upgrade_status(HEAD("Upgrade: websocket\r\nConnection: "
	    "Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: "
	    "dGhlIHNhbXBsZSBub25jZQ==\r\n"), acc), 426);
	cr_assert_eq(upgrade_status("POST /x HTTP/1.1\r\n" GOOD "\r\n", acc),
	    405);
	cr_assert_eq(upgrade_status("GET /x HTTP/1.0\r\n" GOOD
	    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", acc), 400);
}

struct fix {
	struct tloop t;
	struct stream *s;
	struct ws *ws;
	int peer;
	bool closed;
	size_t messages;
	char last[64];
	size_t last_len;
};

static void
on_message(struct ws *ws, bool binary, const char *p, size_t len, void *arg)
{
	struct fix *f = arg;

	(void)ws;
	cr_assert(binary);
	f->messages++;
	f->last_len = len < sizeof(f->last) ? len : sizeof(f->last);
	memcpy(f->last, p, f->last_len);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct fix *f = arg;

	(void)s;
	(void)why;
	ws_free(f->ws);
	f->ws = NULL;
	f->closed = true;
}

static void
fix_init(struct fix *f)
{
	int sv[2];
	struct stream_opts o;
	struct ws_opts wo;

	memset(f, 0, sizeof(*f));
	tloop_init(&f->t);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
	    0);
	stream_opts_default(&o);
	f->s = stream_new(&f->t.sl, sv[0], &o);
	f->peer = sv[1];
	ws_opts_default(&wo);
	wo.max_message_bytes = 1000;
	f->ws = ws_new(f->t.loop, f->s, &wo, on_message, f);
	cr_assert_not_null(f->ws);
	stream_set_callbacks(f->s, on_close, f);
}

static void
fix_free(struct fix *f)
{
	if (!f->closed)
		stream_close(f->s, STREAM_CLOSE_LOCAL);
	tloop_run_until(&f->t, &f->closed, 5);
	close(f->peer);
	tloop_destroy(&f->t);
}

/* A client frame: FIN, opcode, masked (or not) payload. */
static size_t
client_frame(uint8_t *out, int op, const void *p, size_t len, bool mask)
{
	static const uint8_t key[4] = { 1, 2, 3, 4 };
	size_t o = 0;

	out[o++] = 0x80 | (uint8_t)op;
	out[o++] = (mask ? 0x80 : 0) | (uint8_t)len;
	if (mask)
		for (int i = 0; i < 4; i++)
			out[o++] = key[i];
	for (size_t i = 0; i < len; i++)
		out[o++] = ((const uint8_t *)p)[i] ^ (mask ? key[i % 4] : 0);
	return o;
}

/* What the peer has been sent so far (up to cap). */
static size_t
peer_got(struct fix *f, uint8_t *buf, size_t cap)
{
	ssize_t n;

	tloop_run_for(&f->t, 0.05);
	n = recv(f->peer, buf, cap, MSG_DONTWAIT);
	return n > 0 ? (size_t)n : 0;
}

Test(ws, masked_messages_in_records_out, .timeout = 30)
{
	struct fix f;
	uint8_t fr[64], got[256];
	size_t n;
	const char recs[8] = "abcdefgh";

	fix_init(&f);
	n = client_frame(fr, 2, "hello", 5, true);
	ws_feed(f.ws, (const char *)fr, 3);	/* cut inside the mask */
	ws_feed(f.ws, (const char *)fr + 3, n - 3);
	cr_assert_eq(f.messages, 1);
	cr_assert_eq(f.last_len, 5);
	cr_assert_eq(memcmp(f.last, "hello", 5), 0);
	/* Two records of 4 bytes: two binary messages, unmasked. */
	cr_assert_eq(ws_send_records(f.ws, recs, 2, 4, SIZE_MAX), 2);
	n = peer_got(&f, got, sizeof(got));
	cr_assert_eq(n, 12);
	cr_assert_eq(memcmp(got, "\x82\x04" "abcd" "\x82\x04" "efgh", 12), 0);
	cr_assert_eq(ws_send_text(f.ws, "{}", 2), 0);
	n = peer_got(&f, got, sizeof(got));
	cr_assert_eq(n, 4);
	cr_assert_eq(memcmp(got, "\x81\x02{}", 4), 0);
	fix_free(&f);
}

Test(ws, an_unmasked_frame_is_answered_1002_and_ends, .timeout = 30)
{
	struct fix f;
	uint8_t fr[64], got[64];
	size_t n;

	fix_init(&f);
	n = client_frame(fr, 2, "hi", 2, false);
	ws_feed(f.ws, (const char *)fr, n);
	cr_assert_eq(f.messages, 0);
	n = peer_got(&f, got, sizeof(got));
	cr_assert_geq(n, 4);
	cr_assert_eq(got[0], 0x88);
	cr_assert_eq(got[2] << 8 | got[3], 1002);
	cr_assert(tloop_run_until(&f.t, &f.closed, 5), "not ended");
	fix_free(&f);
}

Test(ws, an_oversized_message_is_answered_1009, .timeout = 30)
{
	struct fix f;
	uint8_t fr[108] = { 0x82, 0x80 | 126, 0x04, 0x00, 1, 2, 3, 4 }, got[64];
	size_t n;

	fix_init(&f);
	/* Claims 1024 bytes (> 1000), sends 100 of them. */
	ws_feed(f.ws, (const char *)fr, sizeof(fr));
	n = peer_got(&f, got, sizeof(got));
	cr_assert_geq(n, 4);
	cr_assert_eq(got[0], 0x88);
	cr_assert_eq(got[2] << 8 | got[3], 1009);
	fix_free(&f);
}

Test(ws, close_handshake_from_either_side, .timeout = 30)
{
	struct fix f;
	uint8_t fr[64], got[64];
	size_t n;

	/* The client's close is answered, then the stream ends. */
	fix_init(&f);
	n = client_frame(fr, 8, "\x03\xe8", 2, true);
	ws_feed(f.ws, (const char *)fr, n);
	n = peer_got(&f, got, sizeof(got));
	cr_assert_eq(n, 4);
	cr_assert_eq(memcmp(got, "\x88\x02\x03\xe8", 4), 0);
	cr_assert(tloop_run_until(&f.t, &f.closed, 5));
	fix_free(&f);
	/* Ours waits for the client's, then ends; records are refused. */
	fix_init(&f);
	ws_close(f.ws, WS_CLOSE_GOING_AWAY, "bye");
	cr_assert_eq(ws_state(f.ws), WS_CLOSE_SENT);
	cr_assert_eq(ws_send_records(f.ws, "abcd", 1, 4, SIZE_MAX), 0);
	n = peer_got(&f, got, sizeof(got));
	cr_assert_eq(n, 7);
	cr_assert_eq(memcmp(got, "\x88\x05\x03\xe9" "bye", 7), 0);
	cr_assert_not(f.closed);
	n = client_frame(fr, 8, "\x03\xe9", 2, true);
	ws_feed(f.ws, (const char *)fr, n);
	cr_assert(tloop_run_until(&f.t, &f.closed, 5));
	fix_free(&f);
}

Test(ws, a_silent_client_after_our_close_is_cut, .timeout = 30)
{
	struct fix f;

	fix_init(&f);
	ws_close(f.ws, WS_CLOSE_NORMAL, "");
	/* close_timeout (2 s by default) ends it. */
	cr_assert(tloop_run_until(&f.t, &f.closed, 10));
	fix_free(&f);
}
