/*
 * The stream suite, written once and run over both transports (plain TCP
 * and TLS), as Tornado's TestReadWriteMixin does: a stream on the event loop
 * in this thread, a blocking peer in another thread (streamcheck.h).  This
 * file has reads and writes: byte by byte, bulk, read_until, flow control,
 * no recursion, exact and partial reads, write limits, pause and resume, a
 * clean end; the peer's side is test_stream_peer.c, the order in which
 * streams are served test_stream_order.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "helpers.h"
#include "streamcheck.h"

ParameterizedTestParameters(stream, one_byte_at_a_time)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

#define LINES 100

static void
peer_trickle(struct pair *pr)
{
	char line[32];

	for (int i = 0; i < LINES; i++) {
		int n = snprintf(line, sizeof(line), "line %d\n", i);
		for (int k = 0; k < n; k++)
			if (peer_write(&pr->peer, line + k, 1) != 1)
				return;
	}
	static const char digits[] = "12345";
	for (int k = 0; k < 5; k++)
		peer_write(&pr->peer, &digits[k], 1);
	char c;
	peer_read(&pr->peer, &c, 1);	/* wait for the server's verdict */
}

static void trickle_line(struct stream *s, const char *d, size_t n, void *a);

static void
trickle_tail(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	pr->ok = pr->ok && n == 5 && memcmp(d, "12345", 5) == 0;
	stream_write(s, "k", 1, NULL);
	pr->flag = true;
}

static void
trickle_line(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;
	char want[32];
	int wn = snprintf(want, sizeof(want), "line %d\n", pr->calls);

	pr->ok = pr->ok && (size_t)wn == n && memcmp(d, want, n) == 0;
	if (++pr->calls < LINES)
		stream_read_until(s, "\n", 1, 64, trickle_line);
	else
		stream_read_bytes(s, 5, false, trickle_tail);
}

ParameterizedTest(int *transport, stream, one_byte_at_a_time, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_trickle);
	pr.ok = true;
	stream_read_until(pr.s, "\n", 1, 64, trickle_line);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 20), "no tail seen (%d "
	    "lines)", pr.calls);
	cr_assert(pr.ok, "a line or the tail arrived damaged");
	cr_assert_eq(pr.calls, LINES);
	cr_assert_not(pr.closed);
	pair_close(&pr);
}

/* ---- several MB each way, beyond the socket buffers ---- */

#define BIG (8u << 20)

static void
peer_bulk(struct pair *pr)
{
	uint8_t *buf = malloc(BIG);
	size_t got = peer_read_exact(&pr->peer, buf, BIG);

	pr->peer_ok = got == BIG && check_pattern(buf, BIG, 0, 1);
	fill_pattern(buf, BIG, 0, 2);
	/* TLS 1.3: ask for a key update mid-stream, so the server must
	 * answer a post-handshake message while it reads. */
	size_t half = BIG / 2;
	peer_write(&pr->peer, buf, half);
	if (pr->peer.ssl != NULL)
		SSL_key_update(pr->peer.ssl, SSL_KEY_UPDATE_REQUESTED);
	peer_write(&pr->peer, buf + half, BIG - half);
	free(buf);
	char c;
	peer_read(&pr->peer, &c, 1);
}

static void
bulk_written(struct stream *s, void *arg)
{
	struct pair *pr = arg;

	(void)s;
	pr->calls++;
}

static void
bulk_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	pr->ok = pr->ok && check_pattern((const uint8_t *)d, n, pr->got, 2);
	pr->got += n;
	if (pr->got < BIG) {
		stream_read_bytes(s, 65536, true, bulk_read);
	} else {
		stream_write(s, "k", 1, NULL);
		pr->flag = true;
	}
}

ParameterizedTestParameters(stream, bulk_both_ways)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, bulk_both_ways, .timeout = 60)
{
	struct pair pr;
	struct stream_opts o = opts_default();
	uint8_t *out = malloc(BIG);

	pair_open(&pr, *transport, &o, peer_bulk);
	pr.ok = true;
	fill_pattern(out, BIG, 0, 1);
	cr_assert_eq(stream_write(pr.s, out, BIG, bulk_written), 0);
	free(out);	/* the stream owns its copy */
	stream_read_bytes(pr.s, 65536, true, bulk_read);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 40), "received %zu of %u",
	    pr.got, BIG);
	cr_assert(pr.ok, "server received damaged bytes");
	cr_assert_eq(pr.calls, 1, "write callback ran %d times", pr.calls);
	cr_assert_eq(stream_bytes_out(pr.s), BIG + 1);	/* and the 'k' */
	pair_close(&pr);
	cr_assert(pr.peer_ok, "peer received damaged or short data");
}

/* ---- read_until beyond max_bytes ---- */

static void
peer_no_delim(struct pair *pr)
{
	char buf[4096];

	memset(buf, 'a', sizeof(buf));
	peer_write(&pr->peer, buf, sizeof(buf));
	/* Then wait to be closed. */
	while (peer_read(&pr->peer, buf, sizeof(buf)) > 0)
		;
}


ParameterizedTestParameters(stream, read_until_max_bytes)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, read_until_max_bytes,
    .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_no_delim);
	stream_read_until(pr.s, "\r\n", 2, 1024, never_called);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 20));
	cr_assert_eq(pr.why, STREAM_CLOSE_LIMIT, "closed for %s",
	    stream_close_reason_str(pr.why));
	cr_assert_eq(pr.calls, 0);
	cr_assert(strstr(pr.error, "delimiter") != NULL, "error: %s",
	    pr.error);
	pair_close(&pr);
}

/* ---- the peer goes away during a pending read ---- */

static void
peer_short_then_close(struct pair *pr)
{
	int one = 1;

	/*
	 * A TLS 1.3 peer closes with the server's session ticket unread, so
	 * its kernel sends a reset; without Nagle the close_notify is on the
	 * wire before that, not held back behind the unacknowledged record
	 * and thrown away with the reset.
	 */
	setsockopt(pr->peer.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	peer_write(&pr->peer, "0123456789", 10);
	peer_close(&pr->peer);
}

static void
peer_short_then_reset(struct pair *pr)
{
	struct linger lg = { 1, 0 };

	peer_write(&pr->peer, "0123456789", 10);
	usleep(100 * 1000);
	setsockopt(pr->peer.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(pr->peer.fd);	/* RST, no close_notify */
	pr->peer.fd = -1;
}

ParameterizedTestParameters(stream, close_during_read)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, close_during_read, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_short_then_close);
	stream_read_bytes(pr.s, 100, false, never_called);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 20));
	cr_assert_eq(pr.why, STREAM_CLOSE_EOF, "closed for %s (%s)",
	    stream_close_reason_str(pr.why), pr.error);
	cr_assert_eq(pr.calls, 0, "a short read was delivered as complete");
	pair_close(&pr);
}

ParameterizedTestParameters(stream, reset_during_read)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, reset_during_read, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_short_then_reset);
	stream_read_bytes(pr.s, 100, false, never_called);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 20));
	cr_assert_eq(pr.why, STREAM_CLOSE_RESET, "closed for %s (%s)",
	    stream_close_reason_str(pr.why), pr.error);
	cr_assert_eq(pr.calls, 0);
	pair_close(&pr);
}

/* ---- backpressure: a full read buffer stops reading the socket ---- */

#define FLOOD (4u << 20)
#define SMALL_MAX (64u * 1024)

static void
peer_flood(struct pair *pr)
{
	uint8_t *buf = malloc(FLOOD);

	fill_pattern(buf, FLOOD, 0, 3);
	pr->peer_ok = peer_write(&pr->peer, buf, FLOOD) == FLOOD;
	free(buf);
	char c;
	peer_read(&pr->peer, &c, 1);
}

static void
flood_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	if (stream_read_pending(s) > SMALL_MAX)
		pr->ok = false;
	pr->ok = pr->ok && check_pattern((const uint8_t *)d, n, pr->got, 3);
	pr->got += n;
	if (pr->got < FLOOD) {
		stream_read_bytes(s, 4096, true, flood_read);
	} else {
		stream_write(s, "k", 1, NULL);
		pr->flag = true;
	}
}

ParameterizedTestParameters(stream, flow_control)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, flow_control, .timeout = 60)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	o.max_buffer_size = SMALL_MAX;
	pair_open(&pr, *transport, &o, peer_flood);
	pr.ok = true;
	/* Start the stream (and the handshake) without consuming. */
	stream_wait_for_handshake(pr.s, NULL);
	tloop_run_for(&pr.t, 1.0);
	cr_assert_not(pr.closed);
	cr_assert_leq(stream_read_pending(pr.s), SMALL_MAX,
	    "read buffer grew to %zu", stream_read_pending(pr.s));
	cr_assert_leq(stream_bytes_in(pr.s), SMALL_MAX,
	    "read %llu bytes from the socket with nobody consuming",
	    (unsigned long long)stream_bytes_in(pr.s));
	cr_assert_gt(stream_bytes_in(pr.s), 0);
	stream_read_bytes(pr.s, 4096, true, flood_read);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 40));
	cr_assert(pr.ok);
	pair_close(&pr);
	cr_assert(pr.peer_ok);
}

/* ---- buffered data is served by a loop, not by recursion ---- */

#define MANY 20000

static void
peer_burst(struct pair *pr)
{
	uint8_t *buf = malloc(MANY);

	fill_pattern(buf, MANY, 0, 4);
	peer_write(&pr->peer, buf, MANY);
	free(buf);
	char c;
	peer_read(&pr->peer, &c, 1);
}

static void
one_byte(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	if (++pr->depth > pr->max_depth)
		pr->max_depth = pr->depth;
	pr->ok = pr->ok && n == 1 &&
	    check_pattern((const uint8_t *)d, 1, pr->got, 4);
	pr->got++;
	if (pr->got < MANY) {
		stream_read_bytes(s, 1, false, one_byte);
	} else {
		stream_write(s, "k", 1, NULL);
		pr->flag = true;
	}
	pr->depth--;
}

ParameterizedTestParameters(stream, no_recursion)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, no_recursion, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_burst);
	pr.ok = true;
	stream_read_bytes(pr.s, 1, false, one_byte);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 20));
	cr_assert(pr.ok);
	cr_assert_eq(pr.max_depth, 1, "callbacks nested %d deep",
	    pr.max_depth);
	pair_close(&pr);
}

/* ---- exact and partial reads, one pending read ---- */

static void
peer_hello(struct pair *pr)
{
	peer_write(&pr->peer, "hello world", 11);
	char c;
	peer_read(&pr->peer, &c, 1);
}

static void
partial_got(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	(void)s;
	memcpy(pr->error, d, n);
	pr->got = n;
	pr->flag = true;
}

ParameterizedTestParameters(stream, read_semantics)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, read_semantics, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_hello);
	/* Partial: whatever is there, at most n. */
	stream_read_bytes(pr.s, 5, true, partial_got);
	cr_assert_eq(stream_read_bytes(pr.s, 5, true, partial_got), -1,
	    "a second pending read was accepted");
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 20));
	cr_assert_leq(pr.got, 5);
	cr_assert_geq(pr.got, 1);
	size_t first = pr.got;
	char seen[16] = { 0 };
	memcpy(seen, pr.error, first);
	/* Exact: the rest, in one piece. */
	pr.flag = false;
	stream_read_bytes(pr.s, 11 - first, false, partial_got);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 20));
	cr_assert_eq(pr.got, 11 - first);
	memcpy(seen + first, pr.error, pr.got);
	cr_assert_str_eq(seen, "hello world");
	stream_write(pr.s, "k", 1, NULL);
	pair_close(&pr);
}

/* ---- the write side: limits and the pending query ---- */


ParameterizedTestParameters(stream, write_limits)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, write_limits, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();
	size_t chunk = 256 * 1024;
	char *data = calloc(1, 2 * chunk);
	bool refused = false;

	o.max_write_buffer_size = 1024 * 1024;
	pair_open(&pr, *transport, &o, peer_slow_reader);
	cr_assert_eq(stream_write(pr.s, data, 2 * o.max_write_buffer_size,
	    NULL), -1);
	cr_assert_eq(errno, ENOBUFS);
	cr_assert_not(pr.closed, "a refused write closed the stream");
	/* Fill until the limit refuses: the peer does not read. */
	for (int i = 0; i < 400 && !refused; i++) {
		if (stream_write(pr.s, data, chunk, NULL) < 0) {
			cr_assert_eq(errno, ENOBUFS);
			refused = true;
		}
		tloop_run_for(&pr.t, 0.01);
	}
	free(data);
	cr_assert(refused, "the write buffer limit never applied");
	cr_assert_gt(stream_write_pending(pr.s), 0);
	cr_assert_leq(stream_write_pending(pr.s), o.max_write_buffer_size);
	pr.flag = true;
	stream_close(pr.s, STREAM_CLOSE_LOCAL);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10));
	cr_assert_eq(pr.why, STREAM_CLOSE_LOCAL);
	pair_close(&pr);
}

/* ---- pause and resume ---- */

static void
peer_two_parts(struct pair *pr)
{
	peer_write(&pr->peer, "abc", 3);
	char c;
	peer_read(&pr->peer, &c, 1);
}

ParameterizedTestParameters(stream, pause_resume)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, pause_resume, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_two_parts);
	stream_wait_for_handshake(pr.s, NULL);
	stream_pause_reading(pr.s);
	stream_read_bytes(pr.s, 3, false, partial_got);
	tloop_run_for(&pr.t, 0.5);
	cr_assert_not(pr.flag, "data delivered while paused");
	cr_assert_eq(stream_bytes_in(pr.s), 0, "socket read while paused");
	stream_resume_reading(pr.s);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 10));
	cr_assert_eq(pr.got, 3);
	stream_write(pr.s, "k", 1, NULL);
	pair_close(&pr);
}

/* ---- a clean end flushes, then closes ---- */

static void
peer_expect_bye(struct pair *pr)
{
	char buf[8] = { 0 };

	pr->peer_ok = peer_read_exact(&pr->peer, buf, 3) == 3 &&
	    memcmp(buf, "bye", 3) == 0 && peer_read(&pr->peer, buf, 1) == 0;
	if (pr->peer.ssl != NULL)
		pr->peer_ok = pr->peer_ok && (SSL_get_shutdown(pr->peer.ssl) &
		    SSL_RECEIVED_SHUTDOWN);
}

ParameterizedTestParameters(stream, end_flushes)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, end_flushes, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_expect_bye);
	stream_write(pr.s, "bye", 3, NULL);
	stream_end(pr.s);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10));
	cr_assert_eq(pr.why, STREAM_CLOSE_LOCAL);
	pair_close(&pr);
	cr_assert(pr.peer_ok, "peer did not see bye and a clean close%s",
	    *transport == T_TLS ? " (close_notify)" : "");
}
