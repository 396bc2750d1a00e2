/*
 * Leaks: the real binary opens and closes thousands of connections of
 * every kind (relay and forward, plain and TLS; idle, whole sessions,
 * garbage, resets mid-frame, clients gone mid-handshake), then must still
 * serve, and stop on SIGTERM with exit status 0.  Under SANITIZE=1 the
 * binary is built with ASan, whose LeakSanitizer runs at its exit:
 * ferry_stop() fails the test on any report in the server's log, so a
 * connection that leaves memory behind fails here.
 *
 * Connections are opened in batches held open together, so the server
 * sees many at once, and every one is closed before the next batch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relayclient.h"

#define BATCH 100

static struct ferry_proc fp;
static struct backend be;
static bool be_on;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	if (be_on)
		backend_stop(&be);
	be_on = false;
}

static void
reset_close(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* The start of a ClientHello: the server waits for the rest. */
static const unsigned char hello_head[] = {
	0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
	0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
};

/* Batches of connections that say nothing; closed, or reset. */
static int
idle_batches(int port, int n, bool hello, bool reset)
{
	int fds[BATCH], done = 0;

	while (done < n) {
		int k = n - done < BATCH ? n - done : BATCH;
		for (int i = 0; i < k; i++) {
			fds[i] = connect_loopback(false, port);
			cr_assert_geq(fds[i], 0, "connect: %s", strerror(errno));
			if (hello)
				cr_assert_eq(send(fds[i], hello_head,
				    sizeof(hello_head), MSG_NOSIGNAL),
				    (ssize_t)sizeof(hello_head));
		}
		for (int i = 0; i < k; i++) {
			if (reset && i % 2 == 0)
				reset_close(fds[i]);
			else
				close(fds[i]);
		}
		done += k;
	}
	return n;
}

/*
 * Garbage instead of a role byte (nor a letter: HTTP): the relay closes
 * the connection.
 */
static int
garbage(int port, int n)
{
	static const char junk[] = "\x7f / HTTP/1.0\r\n\r\n";
	char c;

	for (int i = 0; i < n; i++) {
		int fd = connect_loopback(false, port);
		cr_assert_geq(fd, 0);
		cr_assert_eq(send(fd, junk, sizeof(junk) - 1, MSG_NOSIGNAL),
		    (ssize_t)sizeof(junk) - 1);
		/* Closed by the server: EOF, or a reset for the unread rest. */
		cr_assert_leq(recv(fd, &c, 1, 0), 0);
		close(fd);
	}
	return n;
}

/*
 * Relay sessions: a producer and three consumers per uuid, frames flow,
 * then some leave cleanly, some reset, and the producer is reset in the
 * middle of a frame every other time.
 */
static int
relay_sessions(int port, bool tls, int rounds)
{
	uint8_t frame[3 * 4];
	char uuid[64], needle[96];
	int opened = 0;

	for (int r = 0; r < rounds; r++) {
		struct rclient p, c[3];
		snprintf(uuid, sizeof(uuid), "leak-%s-%d", tls ? "tls" : "tcp",
		    r);
		cr_assert_eq(rc_producer(&p, tls, port, uuid, "x,y,z"), RC_OK);
		for (int i = 0; i < 3; i++)
			cr_assert_eq(rc_consumer(&c[i], tls, port, uuid, 0),
			    RC_OK);
		opened += 4;
		/* Frames are theirs once the server has read their accept
		 * bytes, which the log says. */
		snprintf(needle, sizeof(needle), " joined uuid '%s'", uuid);
		cr_assert(ferry_log_wait(&fp, needle, 3, 10));
		cr_assert(rc_send_frames(&p, 0, 2));
		for (int i = 0; i < 3; i++) {
			cr_assert(rc_read_exact(&c[i], frame, sizeof(frame)));
			cr_assert(rc_read_exact(&c[i], frame, sizeof(frame)));
		}
		if (r % 2 == 0) {
			rc_frame(frame, 3, 2);
			cr_assert(rc_send(&p, frame, 5));	/* mid-frame */
			rc_reset(&p);
		} else {
			rc_close(&p);
		}
		rc_reset(&c[0]);
		rc_close(&c[1]);
		rc_free(&c[2]);
	}
	return opened;
}

/* Forward: a round trip through the echo backend, closed or reset. */
static int
forward_sessions(int port, bool tls, int n)
{
	char buf[5];

	for (int i = 0; i < n; i++) {
		struct peer p;
		int fd = connect_loopback(false, port);
		cr_assert_geq(fd, 0);
		if (tls) {
			peer_tls(&p, fd, "localhost", NULL, NULL);
			cr_assert(peer_tls_handshake(&p));
		} else {
			peer_plain(&p, fd);
		}
		cr_assert_eq(peer_write(&p, "ping", 4), 4);
		cr_assert_eq(peer_read_exact(&p, buf, 4), 4);
		cr_assert_eq(memcmp(buf, "ping", 4), 0);
		if (i % 4 == 0) {
			/* Bytes in flight, then a reset. */
			peer_write(&p, "more", 4);
			struct linger lg = { 1, 0 };
			setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &lg,
			    sizeof(lg));
		}
		peer_close(&p);
	}
	return n;
}

static double
active(const char *listener, const char *mode)
{
	char series[160];

	snprintf(series, sizeof(series),
	    "ferry_connections_active{listener=\"%s\",mode=\"%s\"}",
	    listener, mode);
	return ferry_metric(&fp, series);
}

static double
accepted(const char *listener, const char *mode)
{
	char series[160];

	snprintf(series, sizeof(series),
	    "ferry_connections_accepted_total{listener=\"%s\",mode=\"%s\"}",
	    listener, mode);
	return ferry_metric(&fp, series);
}

/* Waits (bounded) until the server has closed every connection. */
static void
wait_all_closed(void)
{
	static const char *const ls[][2] = { { "relay", "relay" },
	    { "relay-tls", "relay" }, { "fwd", "forward" },
	    { "fwd-tls", "forward" } };

	for (int tries = 0; tries < 300; tries++) {
		double sum = 0;
		for (size_t i = 0; i < 4; i++)
			sum += active(ls[i][0], ls[i][1]);
		if (sum == 0)
			return;
		usleep(100 * 1000);
	}
	ferry_log_dump(&fp);
	cr_assert_fail("connections still open on the server");
}

Test(leaks, thousands_of_connections_then_clean_exit, .timeout = 240,
    .fini = cleanup)
{
	char conf[2048];
	int relay, relay_tls, fwd, fwd_tls, status;
	int n_relay = 0, n_relay_tls = 0, n_fwd = 0, n_fwd_tls = 0;
	struct rclient p, c[2];
	uint8_t frame[3 * 4];

	backend_start(&be, false, backend_echo, NULL);
	be_on = true;
	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "drain_timeout = 5\n"
	    "[relay]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "grace = 0\n"
	    "[relay-tls]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "grace = 0\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n"
	    "[fwd]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n"
	    "[fwd-tls]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n", be.port, be.port);
	ferry_start(&fp, conf);
	relay = ferry_port(&fp, "relay");
	relay_tls = ferry_port(&fp, "relay-tls");
	fwd = ferry_port(&fp, "fwd");
	fwd_tls = ferry_port(&fp, "fwd-tls");

	n_relay += idle_batches(relay, 800, false, true);
	n_relay += garbage(relay, 200);
	n_relay += relay_sessions(relay, false, 75);
	n_relay_tls += idle_batches(relay_tls, 300, true, true);
	n_relay_tls += relay_sessions(relay_tls, true, 50);
	n_fwd += forward_sessions(fwd, false, 400);
	n_fwd += idle_batches(fwd, 200, false, true);
	n_fwd_tls += forward_sessions(fwd_tls, true, 300);
	n_fwd_tls += idle_batches(fwd_tls, 300, true, true);
	cr_assert_geq(n_relay + n_relay_tls + n_fwd + n_fwd_tls, 3000);
	wait_all_closed();
	cr_assert_geq(accepted("relay", "relay"), n_relay);
	cr_assert_geq(accepted("relay-tls", "relay"), n_relay_tls);
	cr_assert_geq(accepted("fwd", "forward"), n_fwd);
	cr_assert_geq(accepted("fwd-tls", "forward"), n_fwd_tls);

	/* Still serving: a frame from a plain producer to consumers on both
	 * relay listeners (one registry), bytes through both forwards. */
	cr_assert_eq(rc_producer(&p, false, relay, "after", "x,y,z"), RC_OK);
	cr_assert_eq(rc_consumer(&c[0], true, relay_tls, "after", 0), RC_OK);
	cr_assert_eq(rc_consumer(&c[1], false, relay, "after", 0), RC_OK);
	cr_assert(ferry_log_wait(&fp, " joined uuid 'after'", 2, 10));
	cr_assert(rc_send_frames(&p, 7, 1));
	for (int i = 0; i < 2; i++) {
		uint32_t seq;
		cr_assert(rc_read_exact(&c[i], frame, sizeof(frame)));
		cr_assert(rc_frame_seq(frame, 3, &seq) && seq == 7);
		rc_close(&c[i]);
	}
	rc_close(&p);
	forward_sessions(fwd, false, 1);
	forward_sessions(fwd_tls, true, 1);
	wait_all_closed();

	/* SIGTERM: clean exit, and (sanitized) no leak report. */
	status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "exit status %d", status);
	cr_assert_geq(ferry_log_count(&fp, "stopped"), 1);
}

/*
 * SIGTERM while connections of every kind are still open: the drain
 * deadline passes, ferry closes what is left and exits 0, and (sanitized)
 * nothing it frees on the way out is used after, nor lost.  It destroys
 * its event loop too, so a connection it forgot to close would no longer
 * be reachable through the loop: LeakSanitizer would report it.
 */
Test(leaks, exit_past_the_drain_deadline_with_live_connections,
    .timeout = 60, .fini = cleanup)
{
	char conf[2048];
	struct rclient p, c, t;
	struct peer fw, fwt;
	int idle, hs, status;
	char buf[4];

	backend_start(&be, false, backend_echo, NULL);
	be_on = true;
	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "drain_timeout = 0.5\n"
	    "[relay]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "[relay-tls]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n"
	    "[fwd]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n"
	    "[fwd-tls]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n", be.port, be.port);
	ferry_start(&fp, conf);
	cr_assert_eq(rc_producer(&p, false, ferry_port(&fp, "relay"), "held",
	    "x,y,z"), RC_OK);
	cr_assert_eq(rc_consumer(&c, true, ferry_port(&fp, "relay-tls"),
	    "held", 0), RC_OK);
	cr_assert(ferry_log_wait(&fp, " joined uuid 'held'", 1, 10));
	/* Frames the consumer never reads; a TLS client never registering. */
	cr_assert(rc_send_frames(&p, 0, 3));
	cr_assert_eq(rc_connect(&t, true, ferry_port(&fp, "relay-tls"), 0), 0);
	idle = connect_loopback(false, ferry_port(&fp, "relay"));
	cr_assert_geq(idle, 0);
	hs = connect_loopback(false, ferry_port(&fp, "fwd-tls"));
	cr_assert_geq(hs, 0);
	cr_assert_eq(send(hs, hello_head, sizeof(hello_head), MSG_NOSIGNAL),
	    (ssize_t)sizeof(hello_head));
	peer_plain(&fw, connect_loopback(false, ferry_port(&fp, "fwd")));
	cr_assert_geq(fw.fd, 0);
	cr_assert_eq(peer_write(&fw, "ping", 4), 4);
	cr_assert_eq(peer_read_exact(&fw, buf, 4), 4);
	int tfd = connect_loopback(false, ferry_port(&fp, "fwd-tls"));
	cr_assert_geq(tfd, 0);
	peer_tls(&fwt, tfd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&fwt));
	cr_assert_eq(peer_write(&fwt, "ping", 4), 4);
	cr_assert_eq(peer_read_exact(&fwt, buf, 4), 4);

	status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "exit status %d", status);
	cr_assert_geq(ferry_log_count(&fp, "drain deadline"), 1);
	cr_assert_geq(ferry_log_count(&fp, "stopped"), 1);
	/* Every connection was closed, relay ones too, not left to exit():
	 * two relay clients, producer, consumer and two forwards. */
	cr_assert_eq(ferry_log_count(&fp, "left uuid 'held'"), 2);
	cr_assert_geq(ferry_log_count(&fp, ": shutting down"), 6);
	cr_assert_eq(ferry_log_count(&fp, "still open"), 0);
	rc_free(&p);
	rc_free(&c);
	rc_free(&t);
	close(idle);
	close(hs);
	peer_close(&fw);
	peer_close(&fwt);
}

/*
 * The harness itself: a server that logs a sanitizer report is seen.  A
 * stand-in script plays ferry (ready line, then a LeakSanitizer report at
 * SIGTERM).
 */
Test(leaks, harness_sees_a_sanitizer_report, .timeout = 30)
{
	char dir[] = "/tmp/ferry-fake-XXXXXX", bin[128];
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(bin, sizeof(bin), "%s/ferry", dir);
	f = fopen(bin, "w");
	cr_assert_not_null(f);
	fputs("#!/bin/sh\n"
	    "trap 'echo \"==1==ERROR: LeakSanitizer: detected memory leaks\" "
	    ">&2; exit 23' TERM\n"
	    "echo \"x ferry[$$] NOTICE relay listening on 127.0.0.1:9 (tcp) "
	    "[fake]\" >&2\n"
	    "echo \"x ferry[$$] NOTICE ready: worker 0 (pid $$)\" >&2\n"
	    "while :; do sleep 0.05; done\n", f);
	fclose(f);
	cr_assert_eq(chmod(bin, 0755), 0);
	setenv("FERRY_BIN", bin, 1);

	ferry_start(&fp, "[fake]\nmode = relay\nbind = 127.0.0.1:0\n");
	cr_assert_not(ferry_sanitizer_report(&fp));
	ferry_signal(&fp, SIGTERM);
	cr_assert(ferry_wait_exit(&fp, 10));
	cr_assert(ferry_sanitizer_report(&fp));
	/* Not a real failure: empty the log so cleanup does not abort. */
	f = fopen(fp.log, "w");
	cr_assert_not_null(f);
	fclose(f);
	ferry_cleanup(&fp);
	unlink(bin);
	rmdir(dir);
}
