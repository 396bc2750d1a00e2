/*
 * The stream suite over both transports, the peer's side (see
 * test_stream.c): half-close, idle timeout, a stalled peer, and a stream
 * that is not reading noticing its peer's reset, FIN or disappearance.
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
