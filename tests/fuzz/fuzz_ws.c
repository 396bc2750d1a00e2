/*
 * libFuzzer target: a WebSocket server (ws.h, wslay) on a real stream over
 * a socketpair and the real libev loop, fed the input as what the client
 * sent, in pieces (the first byte picks the cut; its top bit sends the
 * relay's binary frames between pieces).  Checked: every message handed
 * on is at most max_message_bytes; nothing crashes or leaks; the stream
 * and the ws are freed whatever the bytes did (the loop's live count
 * returns to 0).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "stream.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"fuzz_ws: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	abort(); } } while (0)

#define MAX_MESSAGE 4096

static size_t messages;
static bool gone;		/* the close callback ran: s and ws are freed */

static void
on_message(struct ws *ws, bool binary, const char *p, size_t len, void *arg)
{
	(void)ws;
	(void)binary;
	(void)arg;
	CHECK(len <= MAX_MESSAGE);
	CHECK(len == 0 || p != NULL);
	messages++;
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	(void)s;
	(void)why;
	ws_free(arg);
	gone = true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ev_loop *loop;
	struct stream_loop sl;
	struct stream_opts so;
	struct ws_opts wo;
	struct stream *s;
	struct ws *ws;
	int sv[2];
	size_t cut, off = 0;
	bool frames;
	static const char frame[12] = "abcdefghijkl";

	if (size < 1)
		return 0;
	if (loop == NULL) {
		signal(SIGPIPE, SIG_IGN);
		loop = ev_loop_new(EVFLAG_AUTO);
	}
	cut = 1 + (data[0] & 0x7f);
	frames = data[0] & 0x80;
	data++;
	size--;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
	stream_loop_init(&sl, loop);
	stream_opts_default(&so);
	s = stream_new(&sl, sv[0], &so);
	CHECK(s != NULL);
	ws_opts_default(&wo);
	wo.max_message_bytes = MAX_MESSAGE;
	wo.max_pending = 64 * 1024;
	ws = ws_new(loop, s, &wo, on_message, NULL);
	CHECK(ws != NULL);
	stream_set_callbacks(s, on_close, ws);
	gone = false;
	while (off < size && !gone) {
		size_t n = size - off < cut ? size - off : cut;
		if (!stream_closed(s))
			ws_feed(ws, (const char *)data + off, n);
		off += n;
		if (frames && !stream_closed(s))
			(void)ws_send_records(ws, frame, 3, 4, 4096);
		stream_loop_run_pending(&sl);
	}
	if (!gone)
		stream_close(s, STREAM_CLOSE_LOCAL);
	stream_loop_run_pending(&sl);
	close(sv[1]);
	CHECK(sl.live == 0);
	stream_loop_destroy(&sl);
	return 0;
}
