/*
 * The stream suite, written once and run over both transports (plain TCP
 * and TLS), as Tornado's TestReadWriteMixin does: a stream on the event loop
 * in this thread, a blocking peer in another thread.
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

struct pair;
typedef void (*peer_fn)(struct pair *pr);

struct pair {
	int transport;
	struct tloop t;
	int lfd, port;
	struct stream *s;
	struct tls_ctx *tls;
	struct peer peer;
	pthread_t th;
	peer_fn fn;
	volatile bool peer_done;
	volatile bool peer_ok;

	/* what the server side saw */
	volatile bool closed;
	enum stream_close_reason why;
	char error[128];
	size_t got;
	int calls;
	int depth, max_depth;
	bool ok;
	uint8_t *buf;
	size_t buflen;
	volatile bool flag;
};

static void *
peer_main(void *arg)
{
	struct pair *pr = arg;

	if (pr->transport == T_TLS && !peer_tls_handshake(&pr->peer)) {
		pr->peer_ok = false;
		pr->peer_done = true;
		return NULL;
	}
	pr->fn(pr);
	pr->peer_done = true;
	return NULL;
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct pair *pr = arg;

	pr->closed = true;
	pr->why = why;
	snprintf(pr->error, sizeof(pr->error), "%s", stream_error(s));
	pr->s = NULL;
}

/* A connected pair: pr->s on the loop, the peer running fn in a thread. */
static void
pair_open(struct pair *pr, int transport, const struct stream_opts *opts,
    peer_fn fn)
{
	memset(pr, 0, sizeof(*pr));
	pr->transport = transport;
	pr->peer_ok = true;
	tloop_init(&pr->t);
	pr->lfd = listen_loopback(false, &pr->port);
	int cfd = connect_loopback(false, pr->port);
	cr_assert_geq(cfd, 0);
	int sfd = accept_timeout(pr->lfd, 5);
	cr_assert_geq(sfd, 0);
	pr->s = stream_new(&pr->t.sl, sfd, opts);
	cr_assert_not_null(pr->s);
	stream_set_callbacks(pr->s, on_close, pr);
	if (transport == T_TLS) {
		pr->tls = test_server_ctx(TLS_VERIFY_NONE);
		cr_assert_eq(tls_stream_accept(pr->s, pr->tls), 0);
		peer_tls(&pr->peer, cfd, "localhost", NULL, NULL);
	} else {
		peer_plain(&pr->peer, cfd);
	}
	pr->fn = fn;
	cr_assert_eq(pthread_create(&pr->th, NULL, peer_main, pr), 0);
}

static bool
peer_finished(void *arg)
{
	return ((struct pair *)arg)->peer_done;
}

static void
pair_close(struct pair *pr)
{
	/* The peer must end by itself: a hung peer fails the test. */
	cr_assert(tloop_run_pred(&pr->t, peer_finished, pr, 20),
	    "peer thread did not finish");
	pthread_join(pr->th, NULL);
	if (pr->s != NULL)
		stream_close(pr->s, STREAM_CLOSE_LOCAL);
	stream_loop_run_pending(&pr->t.sl);
	cr_assert_eq(pr->t.sl.live, 0, "a stream was not freed");
	peer_close(&pr->peer);
	close(pr->lfd);
	tls_ctx_unref(pr->tls);
	tloop_destroy(&pr->t);
	free(pr->buf);
}

static struct stream_opts
opts_default(void)
{
	struct stream_opts o;

	stream_opts_default(&o);
	return o;
}

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

static void
never_called(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	(void)s;
	(void)d;
	(void)n;
	pr->calls++;
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

static void
peer_slow_reader(struct pair *pr)
{
	/* Read nothing until the server has seen its limit, then drain. */
	char buf[65536];

	for (int i = 0; i < 2000 && !pr->flag; i++)
		usleep(10 * 1000);
	while (peer_read(&pr->peer, buf, sizeof(buf)) > 0)
		;
}

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

/* ---- half-close: EOF callback, the write side stays open ---- */

static void
peer_half_close(struct pair *pr)
{
	char buf[8] = { 0 };

	peer_write(&pr->peer, "ping", 4);
	if (pr->peer.ssl != NULL)
		SSL_shutdown(pr->peer.ssl);	/* close_notify */
	else
		shutdown(pr->peer.fd, SHUT_WR);
	pr->peer_ok = peer_read_exact(&pr->peer, buf, 4) == 4 &&
	    memcmp(buf, "pong", 4) == 0;
}

static void
on_eof(struct stream *s, void *arg)
{
	struct pair *pr = arg;

	pr->calls++;
	stream_write(s, "pong", 4, NULL);
	stream_shutdown_write(s);
}

static void
ping_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	pr->ok = n == 4 && memcmp(d, "ping", 4) == 0;
	stream_read_bytes(s, 1, true, never_called);
}

ParameterizedTestParameters(stream, half_close)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, half_close, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_half_close);
	stream_set_eof_cb(pr.s, on_eof);
	stream_read_bytes(pr.s, 4, false, ping_read);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10));
	cr_assert(pr.ok);
	cr_assert_eq(pr.calls, 1, "eof callback ran %d times", pr.calls);
	cr_assert_eq(pr.why, STREAM_CLOSE_EOF);
	pair_close(&pr);
	cr_assert(pr.peer_ok, "the reply after the half-close was lost");
}

/* ---- idle timeout ---- */

static void
peer_silent(struct pair *pr)
{
	char c;

	peer_read(&pr->peer, &c, 1);	/* until closed */
}

ParameterizedTestParameters(stream, idle_timeout)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

ParameterizedTest(int *transport, stream, idle_timeout, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_silent);
	stream_set_idle_timeout(pr.s, 0.3);
	stream_read_bytes(pr.s, 1, false, never_called);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10));
	cr_assert_eq(pr.why, STREAM_CLOSE_TIMEOUT);
	pair_close(&pr);
}

/* ---- a stream with bytes queued for a stalled peer sleeps ---- */

static bool
write_drained(void *arg)
{
	struct pair *pr = arg;

	return pr->s == NULL || stream_write_pending(pr->s) == 0;
}

ParameterizedTestParameters(stream, stalled_peer_loop_sleeps)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

/*
 * Bytes queued for a peer that reads nothing for longer than the idle
 * reclaim delay: the buffer cannot be given back, and the loop must sleep
 * rather than retry the reclaim on every iteration (a busy loop would run
 * hundreds of thousands of iterations in that time, a sleeping one a few).
 */
ParameterizedTest(int *transport, stream, stalled_peer_loop_sleeps,
    .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();
	size_t len = 8 * 1024 * 1024;
	char *data = calloc(1, len);
	unsigned before;

	pair_open(&pr, *transport, &o, peer_slow_reader);
	cr_assert_eq(stream_write(pr.s, data, len, NULL), 0);
	free(data);
	tloop_run_for(&pr.t, 0.2);
	cr_assert_gt(stream_write_pending(pr.s), 0, "the peer took it all");
	before = ev_iteration(pr.t.loop);
	tloop_run_for(&pr.t, 1.5);
	cr_assert_lt(ev_iteration(pr.t.loop) - before, 200,
	    "%u loop iterations while stalled",
	    ev_iteration(pr.t.loop) - before);
	cr_assert_not(pr.closed);
	pr.flag = true;
	cr_assert(tloop_run_pred(&pr.t, write_drained, &pr, 20));
	pair_close(&pr);
}

/* ---- a stream that is not reading still notices its peer go ---- */

/* Waits for the go-ahead, then resets (SO_LINGER 0): no close_notify. */
static void
reset_when_told(struct pair *pr)
{
	struct linger lg = { 1, 0 };

	for (int i = 0; i < 2000 && !pr->flag; i++)
		usleep(10 * 1000);
	setsockopt(pr->peer.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(pr->peer.fd);
	pr->peer.fd = -1;
}

static void
peer_send_then_reset(struct pair *pr)
{
	peer_write(&pr->peer, "0123456789", 10);
	reset_when_told(pr);
}

/* More than a 4 KiB read buffer, less than the socket buffers hold. */
static void
peer_fill_then_reset(struct pair *pr)
{
	char buf[48 * 1024];

	memset(buf, 'x', sizeof(buf));
	peer_write(&pr->peer, buf, sizeof(buf));
	reset_when_told(pr);
}

static void
pause_when_ready(struct stream *s, void *arg)
{
	struct pair *pr = arg;

	stream_pause_reading(s);
	pr->ok = true;
}

static bool
ready_pred(void *arg)
{
	return ((struct pair *)arg)->ok;
}

ParameterizedTestParameters(stream, paused_stream_sees_reset)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

/*
 * Reading paused by the owner: nothing watches the socket for reading,
 * yet the peer's reset must close the stream at once (a forwarder that
 * paused a client behind a stalled backend held it until shutdown).
 */
ParameterizedTest(int *transport, stream, paused_stream_sees_reset,
    .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_send_then_reset);
	stream_wait_for_handshake(pr.s, pause_when_ready);
	cr_assert(tloop_run_pred(&pr.t, ready_pred, &pr, 10),
	    "the handshake did not complete");
	stream_read_bytes(pr.s, 100, false, never_called);
	/* The peer's bytes arrive and stay in the kernel: still open. */
	tloop_run_for(&pr.t, 0.3);
	cr_assert_not(pr.closed, "a paused stream with a live peer closed");
	cr_assert_eq(stream_bytes_in(pr.s), 0, "socket read while paused");
	pr.flag = true;		/* the peer resets */
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10),
	    "the paused stream did not notice its peer's reset");
	cr_assert_eq(pr.why, STREAM_CLOSE_RESET, "closed for %s (%s)",
	    stream_close_reason_str(pr.why), pr.error);
	cr_assert_eq(pr.calls, 0, "bytes delivered while paused");
	pair_close(&pr);
}

ParameterizedTestParameters(stream, full_buffer_sees_reset)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

/* Reading stopped by a full read buffer (nobody consumes): the same. */
ParameterizedTest(int *transport, stream, full_buffer_sees_reset,
    .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	o.max_buffer_size = 4096;
	pair_open(&pr, *transport, &o, peer_fill_then_reset);
	stream_wait_for_handshake(pr.s, NULL);
	for (int i = 0; i < 500 &&
	    stream_bytes_in(pr.s) < o.max_buffer_size; i++)
		tloop_run_for(&pr.t, 0.01);
	cr_assert_eq(stream_read_pending(pr.s), o.max_buffer_size);
	tloop_run_for(&pr.t, 0.3);
	cr_assert_not(pr.closed, "a full stream with a live peer closed");
	cr_assert_eq(stream_bytes_in(pr.s), o.max_buffer_size);
	pr.flag = true;
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10),
	    "the full stream did not notice its peer's reset");
	cr_assert_eq(pr.why, STREAM_CLOSE_RESET, "closed for %s (%s)",
	    stream_close_reason_str(pr.why), pr.error);
	pair_close(&pr);
}

/* Sends ten bytes and its end (close_notify, then FIN), reads to EOF. */
static void
peer_send_then_fin(struct pair *pr)
{
	char buf[64];

	peer_write(&pr->peer, "0123456789", 10);
	if (pr->peer.ssl != NULL)
		SSL_shutdown(pr->peer.ssl);
	shutdown(pr->peer.fd, SHUT_WR);
	while (peer_read(&pr->peer, buf, sizeof(buf)) > 0)
		;
}

static void
on_fin(struct stream *s, void *arg)
{
	struct pair *pr = arg;

	(void)s;
	pr->depth++;
	pr->flag = true;
}

static void
fin_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	(void)s;
	pr->ok = n == 10 && memcmp(d, "0123456789", 10) == 0;
	pr->calls++;
}

ParameterizedTestParameters(stream, paused_stream_sees_fin)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

/*
 * The peer's FIN behind bytes a paused stream has not read: the owner is
 * told (the peer will send no more), the stream stays open, and once
 * reading resumes the bytes come, then the EOF.
 */
ParameterizedTest(int *transport, stream, paused_stream_sees_fin,
    .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	pair_open(&pr, *transport, &o, peer_send_then_fin);
	stream_set_fin_cb(pr.s, on_fin);
	stream_wait_for_handshake(pr.s, pause_when_ready);
	cr_assert(tloop_run_pred(&pr.t, ready_pred, &pr, 10),
	    "the handshake did not complete");
	pr.ok = false;
	stream_read_bytes(pr.s, 10, false, fin_read);
	cr_assert(tloop_run_until(&pr.t, &pr.flag, 10),
	    "the paused stream did not notice its peer's FIN");
	tloop_run_for(&pr.t, 0.2);
	cr_assert_eq(pr.depth, 1, "fin callback ran %d times", pr.depth);
	cr_assert_not(pr.closed, "closed for %s (%s) with bytes unread",
	    stream_close_reason_str(pr.why), pr.error);
	cr_assert_eq(stream_bytes_in(pr.s), 0, "socket read while paused");
	cr_assert(stream_peer_done(pr.s));
	cr_assert_not(stream_peer_eof(pr.s));
	stream_resume_reading(pr.s);
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 10));
	cr_assert(pr.ok, "the bytes before the FIN were lost");
	cr_assert_eq(pr.calls, 1);
	cr_assert_eq(pr.why, STREAM_CLOSE_EOF, "closed for %s (%s)",
	    stream_close_reason_str(pr.why), pr.error);
	cr_assert_eq(pr.depth, 1);
	pair_close(&pr);
}

/*
 * Waits for the go-ahead, then goes without a word: TCP_REPAIR makes the
 * close send neither FIN nor reset (needs CAP_NET_ADMIN), as a peer whose
 * FIN is stuck behind its own unsent bytes, whose kernel then gives up.
 */
static void
vanish_when_told(struct pair *pr)
{
	int on = 1;

	peer_write(&pr->peer, "0123456789", 10);
	for (int i = 0; i < 2000 && !pr->flag; i++)
		usleep(10 * 1000);
	if (setsockopt(pr->peer.fd, IPPROTO_TCP, TCP_REPAIR, &on,
	    sizeof(on)) < 0) {
		pr->peer_ok = false;
		return;
	}
	close(pr->peer.fd);
	pr->peer.fd = -1;
}

static bool
can_repair(void)
{
	int on = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on,
	    sizeof(on)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

ParameterizedTestParameters(stream, paused_stream_probes_a_vanished_peer)
{
	static int t[] = { T_PLAIN, T_TLS };
	return cr_make_param_array(int, t, 2);
}

/* Held back, the stream probes a silent peer: one that is gone is found. */
ParameterizedTest(int *transport, stream,
    paused_stream_probes_a_vanished_peer, .timeout = 30)
{
	struct pair pr;
	struct stream_opts o = opts_default();

	if (!can_repair())
		cr_skip_test("TCP_REPAIR needs CAP_NET_ADMIN");
	o.keepalive = 1;
	pair_open(&pr, *transport, &o, vanish_when_told);
	stream_wait_for_handshake(pr.s, pause_when_ready);
	cr_assert(tloop_run_pred(&pr.t, ready_pred, &pr, 10),
	    "the handshake did not complete");
	/* Silent, but there: it answers the probes. */
	tloop_run_for(&pr.t, 2.5);
	cr_assert_not(pr.closed, "closed for %s (%s) with its peer there",
	    stream_close_reason_str(pr.why), pr.error);
	pr.flag = true;
	cr_assert(tloop_run_until(&pr.t, &pr.closed, 15),
	    "the paused stream did not notice its peer was gone");
	cr_assert(pr.peer_ok, "the peer could not vanish");
	cr_assert_eq(pr.why, STREAM_CLOSE_RESET, "closed for %s (%s)",
	    stream_close_reason_str(pr.why), pr.error);
	pair_close(&pr);
}

/* ---- latency: when reads are served and writes leave ---- */

#define ORDER_N 8

/* Plain streams on socketpairs, their peers held by the test. */
struct many {
	struct tloop t;
	struct stream *s[ORDER_N];
	int peer[ORDER_N];
	int order[ORDER_N];		/* stream indexes, as served */
	int served;
	size_t pending_other;		/* the other stream's queue, seen by a callback */
	size_t pending_own;		/* its own, after writing to itself */
};

static int
stream_index(struct many *m, struct stream *s)
{
	for (int i = 0; i < ORDER_N; i++)
		if (m->s[i] == s)
			return i;
	return -1;
}

static void
many_close_cb(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct many *m = arg;
	int i = stream_index(m, s);

	(void)why;
	if (i >= 0)
		m->s[i] = NULL;
}

static void
many_open(struct many *m, stream_read_cb cb)
{
	memset(m, 0, sizeof(*m));
	tloop_init(&m->t);
	for (int i = 0; i < ORDER_N; i++) {
		int sv[2];

		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK,
		    0, sv), 0);
		m->s[i] = stream_new(&m->t.sl, sv[0], NULL);
		cr_assert_not_null(m->s[i]);
		m->peer[i] = sv[1];
		stream_set_callbacks(m->s[i], many_close_cb, m);
		cr_assert_eq(stream_read_bytes(m->s[i], 1, true, cb), 0);
	}
	/* Every watcher registered while nothing is readable. */
	tloop_run_for(&m->t, 0.05);
}

static void
many_close(struct many *m)
{
	for (int i = 0; i < ORDER_N; i++) {
		if (m->s[i] != NULL)
			stream_close(m->s[i], STREAM_CLOSE_LOCAL);
		close(m->peer[i]);
	}
	stream_loop_run_pending(&m->t.sl);
	cr_assert_eq(m->t.sl.live, 0, "a stream was not freed");
	tloop_destroy(&m->t);
}

static void
record_order(struct stream *s, const char *data, size_t len, void *arg)
{
	struct many *m = stream_arg(s);

	(void)data;
	(void)len;
	(void)arg;
	if (m->served < ORDER_N)
		m->order[m->served++] = stream_index(m, s);
}

static bool
all_served(void *arg)
{
	return ((struct many *)arg)->served == ORDER_N;
}

/*
 * Streams that became readable together are served in the order the
 * kernel reported them (the order their bytes arrived), oldest first.
 * libev calls the watchers of one poll in the reverse order: served
 * as it called them, the frame that had waited longest went out last
 * (at 1000 producers x 60 Hz, two frames of three behind a younger one).
 */
Test(stream, ready_streams_served_oldest_first, .timeout = 30)
{
	static const int arrival[ORDER_N] = { 5, 2, 7, 0, 3, 6, 1, 4 };
	struct many m;

	many_open(&m, record_order);
	for (int k = 0; k < ORDER_N; k++)
		cr_assert_eq(write(m.peer[arrival[k]], "x", 1), 1);
	cr_assert(tloop_run_pred(&m.t, all_served, &m, 10));
	for (int k = 0; k < ORDER_N; k++)
		cr_assert_eq(m.order[k], arrival[k], "served number %d: "
		    "stream %d, where stream %d was readable number %d", k,
		    m.order[k], arrival[k], k);
	many_close(&m);
}

static void
write_both(struct stream *s, const char *data, size_t len, void *arg)
{
	struct many *m = stream_arg(s);

	(void)data;
	(void)len;
	(void)arg;
	/* Another stream: to the kernel now; its own: batched. */
	cr_assert_eq(stream_write(m->s[1], "to-1", 4, NULL), 0);
	m->pending_other = stream_write_pending(m->s[1]);
	cr_assert_eq(stream_write(s, "to-0", 4, NULL), 0);
	m->pending_own = stream_write_pending(s);
	m->served++;
}

static bool
one_served(void *arg)
{
	return ((struct many *)arg)->served > 0;
}

/*
 * A write to a stream with nothing queued goes to the kernel from the
 * callback that makes it, not at the end of the loop iteration: a relayed
 * frame does not wait for the other connections' events.  What a stream's
 * own read callback writes to it (a reply) is still queued, and flushed
 * with the other replies to that read before the loop sleeps.
 */
Test(stream, write_leaves_at_once_but_replies_batch, .timeout = 30)
{
	struct many m;
	char buf[8];

	many_open(&m, write_both);
	cr_assert_eq(write(m.peer[0], "x", 1), 1);
	cr_assert(tloop_run_pred(&m.t, one_served, &m, 10));
	cr_assert_eq(m.pending_other, 0, "%zu bytes waited for the flush",
	    m.pending_other);
	cr_assert_eq(m.pending_own, 4, "the reply was not queued");
	cr_assert_eq(read(m.peer[1], buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "to-1", 4), 0);
	/* The reply leaves with the loop's flush. */
	tloop_run_for(&m.t, 0.05);
	cr_assert_eq(read(m.peer[0], buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "to-0", 4), 0);
	many_close(&m);
}
