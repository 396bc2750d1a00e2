/*
 * TLS termination end to end: the real binary between a client in this
 * process and backends served by threads of this process, all on
 * loopback.  This file has 10 MB each way, half-close and failing
 * backends; the shared setup is forwardcheck.h, the other forward suites
 * are test_forward_*.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "forward.h"
#include "forwardcheck.h"
#include "helpers.h"
#include "log.h"
#include "netutil.h"

/* ---- 10 MB each way ---- */

/*
 * Writes `len` pattern bytes and reads them back from an echo, both at
 * once on a non-blocking socket (neither side can fill its buffers and
 * wait for the other).  Returns the bytes read back intact.
 */
static size_t
exchange(struct peer *p, size_t len, unsigned seed, double timeout)
{
	static uint8_t wbuf[16384], rbuf[65536];
	size_t sent = 0, got = 0, wlen = 0;
	double end = now_s() + timeout;

	cr_assert_eq(fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) |
	    O_NONBLOCK), 0);
	while (got < len && now_s() < end) {
		bool progress = false;
		if (sent < len) {
			size_t w = 0;
			/* A retried SSL_write must offer the same bytes. */
			if (wlen == 0) {
				wlen = len - sent < sizeof(wbuf) ?
				    len - sent : sizeof(wbuf);
				fill_pattern(wbuf, wlen, sent, seed);
			}
			if (SSL_write_ex(p->ssl, wbuf, wlen, &w) == 1) {
				sent += w;
				wlen = 0;
				progress = true;
			} else {
				int e = SSL_get_error(p->ssl, 0);
				cr_assert(e == SSL_ERROR_WANT_READ ||
				    e == SSL_ERROR_WANT_WRITE, "write: %d", e);
			}
		}
		size_t r = 0;
		if (SSL_read_ex(p->ssl, rbuf, sizeof(rbuf), &r) == 1) {
			cr_assert(check_pattern(rbuf, r, got, seed),
			    "corrupt bytes after %zu", got);
			got += r;
			progress = true;
		} else {
			int e = SSL_get_error(p->ssl, 0);
			cr_assert(e == SSL_ERROR_WANT_READ ||
			    e == SSL_ERROR_WANT_WRITE, "read: %d after %zu", e,
			    got);
		}
		ERR_clear_error();
		if (!progress) {
			struct pollfd pfd = { .fd = p->fd, .events = POLLIN |
			    (sent < len ? POLLOUT : 0) };
			poll(&pfd, 1, 100);
		}
	}
	cr_assert_eq(fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) &
	    ~O_NONBLOCK), 0);
	return got;
}

Test(forward, tls_to_plain_echo_10mb_each_way, .timeout = 120,
    .fini = cleanup)
{
	struct backend be;
	struct peer p;
	char extra[256];
	const size_t len = 10 * 1024 * 1024;

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	cr_assert_eq(exchange(&p, len, 7, 90), len);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_client_received_bytes_total", "web")), (double)len);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_received_bytes_total", "web")), (double)len);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_sent_bytes_total", "web")), (double)len);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_client_sent_bytes_total", "web")), (double)len);
	backend_stop(&be);
}

/* ---- half-close ---- */

struct halfclose {
	size_t expect;		/* bytes the backend expects from the client */
	size_t reply;		/* bytes it sends */
	volatile size_t got;	/* what it received, intact */
	volatile bool done;
};

/* Reads the client's bytes to EOF, and only then answers. */
static void
serve_reply_after_eof(int fd, void *arg)
{
	struct halfclose *h = arg;
	uint8_t buf[65536];
	size_t got = 0, sent = 0;
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
		if (!check_pattern(buf, (size_t)n, got, 1))
			return;
		got += (size_t)n;
	}
	h->got = got;
	if (n < 0)
		return;
	while (sent < h->reply) {
		size_t k = h->reply - sent < sizeof(buf) ? h->reply - sent :
		    sizeof(buf);
		fill_pattern(buf, k, sent, 2);
		if (send(fd, buf, k, MSG_NOSIGNAL) != (ssize_t)k)
			return;
		sent += k;
	}
	shutdown(fd, SHUT_WR);
	h->done = true;
}

Test(forward, half_close_from_client, .timeout = 60, .fini = cleanup)
{
	struct backend be;
	struct halfclose h = { .expect = 300000, .reply = 500000 };
	struct peer p;
	char extra[256];
	uint8_t *buf = malloc(h.reply);

	backend_start(&be, false, serve_reply_after_eof, &h);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	fill_pattern(buf, h.expect, 0, 1);
	cr_assert_eq(peer_write(&p, buf, h.expect), h.expect);
	/* close_notify, then FIN: our sending side is done, reading goes on. */
	cr_assert_geq(SSL_shutdown(p.ssl), 0);
	shutdown(p.fd, SHUT_WR);
	cr_assert_eq(peer_read_exact(&p, buf, h.reply), h.reply,
	    "the reply after our half-close did not arrive");
	cr_assert(check_pattern(buf, h.reply, 0, 2));
	cr_assert(read_to_eof(&p), "no clean end after the reply");
	cr_assert(wait_flag(&h.done, 10));
	cr_assert_eq(h.got, h.expect);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "bytes down: client closed", 1, 10));
	free(buf);
	backend_stop(&be);
}

struct early_fin {
	size_t greeting;
	size_t expect;
	volatile size_t got;
	volatile bool done;
};

/* Sends everything and its FIN first, then reads what the client says. */
static void
serve_fin_first(int fd, void *arg)
{
	struct early_fin *h = arg;
	uint8_t buf[65536];
	size_t got = 0;
	ssize_t n;

	fill_pattern(buf, h->greeting, 0, 3);
	if (send(fd, buf, h->greeting, MSG_NOSIGNAL) != (ssize_t)h->greeting)
		return;
	shutdown(fd, SHUT_WR);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
		if (!check_pattern(buf, (size_t)n, got, 4))
			return;
		got += (size_t)n;
	}
	h->got = got;
	h->done = n == 0;
}

Test(forward, half_close_from_backend, .timeout = 60, .fini = cleanup)
{
	struct backend be;
	struct early_fin h = { .greeting = 20000, .expect = 400000 };
	struct peer p;
	char extra[256];
	uint8_t *buf = malloc(h.expect);

	backend_start(&be, false, serve_fin_first, &h);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	cr_assert_eq(peer_read_exact(&p, buf, h.greeting), h.greeting);
	cr_assert(check_pattern(buf, h.greeting, 0, 3));
	/* The backend's FIN arrives as close_notify... */
	char c;
	cr_assert_eq(peer_read(&p, &c, 1), 0, "expected the backend's EOF");
	/* ...and our direction still works. */
	fill_pattern(buf, h.expect, 0, 4);
	cr_assert_eq(peer_write(&p, buf, h.expect), h.expect);
	SSL_shutdown(p.ssl);
	shutdown(p.fd, SHUT_WR);
	cr_assert(wait_flag(&h.done, 10), "the backend did not get our EOF");
	cr_assert_eq(h.got, h.expect);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "bytes down: backend closed", 1, 10));
	free(buf);
	backend_stop(&be);
}

/*
 * The backend's FIN reaches the client as close_notify and FIN; the client
 * then asks for a key update (update_requested) and sends on.  Ferry may
 * not answer (it has said close_notify: nothing more goes out), and the
 * client's direction must go on flowing: ferry answered into the socket
 * it had shut, failed with EPIPE, and closed the pair as "client reset",
 * the client's bytes lost.  (The hostile key update flood met this when
 * its connection outlived the echo backend's timeout.)
 */
Test(forward, key_update_after_backend_half_close, .timeout = 60,
    .fini = cleanup)
{
	/* Static: a failed test leaves the backend's threads using them. */
	static struct backend be;
	static struct early_fin h;
	struct peer p;
	char extra[256], c;
	uint8_t *buf;

	h = (struct early_fin){ .greeting = 100, .expect = 4 * 25000 };
	buf = malloc(h.expect);
	cr_assert_not_null(buf);
	backend_start(&be, false, serve_fin_first, &h);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	cr_assert_eq(peer_read_exact(&p, buf, h.greeting), h.greeting);
	cr_assert_eq(peer_read(&p, &c, 1), 0, "expected the backend's EOF");
	/* Four key updates, a quarter of the bytes after each. */
	cr_assert_eq(SSL_version(p.ssl), TLS1_3_VERSION);
	fill_pattern(buf, h.expect, 0, 4);
	for (size_t i = 0, q = h.expect / 4; i < 4; i++) {
		cr_assert_eq(SSL_key_update(p.ssl, SSL_KEY_UPDATE_REQUESTED),
		    1);
		cr_assert_eq(SSL_do_handshake(p.ssl), 1);
		cr_assert_eq(peer_write(&p, buf + i * q, q), q, "write %zu "
		    "failed", i);
	}
	SSL_shutdown(p.ssl);
	shutdown(p.fd, SHUT_WR);
	cr_assert(wait_flag(&h.done, 10), "the backend did not get our EOF "
	    "(%zu of %zu bytes)", h.got, h.expect);
	cr_assert_eq(h.got, h.expect);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "bytes down: backend closed", 1, 10));
	cr_assert_eq(ferry_log_count(&fp, "reset"), 0);
	free(buf);
	backend_stop(&be);
}

/* ---- failing backends ---- */


Test(forward, backend_refusing, .timeout = 60, .fini = cleanup)
{
	struct backend be;
	struct peer p;
	char extra[256];
	int dead = dead_port();

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", dead);
	/* One backend, refusing: the client is closed, nothing echoes. */
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	peer_write(&p, "x", 1);
	cr_assert(read_to_eof(&p), "the client was not closed cleanly");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "no backend answered", 1, 10));
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 1);
	cr_assert_geq(ferry_log_count(&fp, "Connection refused"), 1);
	ferry_stop(&fp);
	ferry_cleanup(&fp);

	/* Refusing then working: each client skips the refuser. */
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, "
	    "127.0.0.1:%d\n", dead, be.port);
	start_web(false, extra);
	for (int i = 0; i < 3; i++) {
		tls_client(&p, false, ferry_port(&fp, "web"));
		ping(&p, "through the second backend");
		peer_close(&p);
	}
	cr_assert(ferry_log_wait(&fp, "closed after", 3, 10));
	cr_assert_eq(be.accepted, 3);
	/* Round-robin: every client tried the refuser once, then the other. */
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 3);
	cr_assert_eq(ferry_log_count(&fp, "no backend answered"), 0);
	backend_stop(&be);
}

/*
 * A backend that never answers: a listener with backlog 0 whose one
 * queue slot is taken, so Linux drops further SYNs and connect() hangs.
 */
static int
silent_backend(int *port, int *filler)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	sin4(&a, "127.0.0.1", 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(fd, 0), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	*filler = connect_loopback(false, *port);
	cr_assert_geq(*filler, 0, "the filler could not connect");
	/* Check the premise: a second connect must not complete. */
	int probe = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	cr_assert_lt(connect(probe, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(errno, EINPROGRESS);
	struct pollfd pfd = { .fd = probe, .events = POLLOUT };
	cr_assert_eq(poll(&pfd, 1, 300), 0, "the full queue answered a SYN");
	close(probe);
	return fd;
}

Test(forward, backend_never_answering, .timeout = 60, .fini = cleanup)
{
	struct backend be;
	struct peer p;
	char extra[256];
	int port, filler, lfd = silent_backend(&port, &filler);

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "connect_timeout = 300ms\n", port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	cr_assert(read_to_eof(&p), "the client was not closed");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "no backend answered", 1, 10));
	cr_assert_geq(ferry_log_count(&fp, "connect timed out"), 1);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 1);
	ferry_stop(&fp);
	ferry_cleanup(&fp);

	/* Silent first, then a working one: the client is served. */
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, "
	    "127.0.0.1:%d\nconnect_timeout = 300ms\n", port, be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	ping(&p, "after a timeout");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 1);
	close(filler);
	close(lfd);
	backend_stop(&be);
}
