/*
 * TLS termination end to end: the real binary between a client in this
 * process and backends served by threads of this process, all on
 * loopback.  Plus the PROXY header builder, byte for byte.
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
#include "helpers.h"
#include "log.h"
#include "netutil.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

/* Waits (bounded) until *flag is set by a backend thread. */
static bool
wait_flag(volatile bool *flag, double timeout)
{
	double end = now_s() + timeout;

	while (!*flag && now_s() < end)
		usleep(5 * 1000);
	return *flag;
}

#define SERIES(name, listener) \
	name "{listener=\"" listener "\",mode=\"forward\"}"

/*
 * Starts ferry with one forward listener [web] on 127.0.0.1:0 (TLS with
 * the development certificate unless `plain`), an admin listener, and
 * `extra` lines for the listener (backend = ..., etc.).
 */
static void
start_web(bool plain, const char *extra)
{
	char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "%s"
	    "%s",
	    plain ? "" : "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n", extra);
	ferry_start(&fp, conf);
}

/* A TLS client through ferry, handshake done. */
static void
tls_client(struct peer *p, bool v6, int port)
{
	int fd = connect_loopback(v6, port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_tls(p, fd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(p), "handshake with ferry failed");
}

/* Sends and expects back a short message (through an echo). */
/* Reads until EOF (true) or an error/timeout (false), discarding. */
static bool
read_to_eof(struct peer *p)
{
	char buf[4096];
	long n;

	while ((n = peer_read(p, buf, sizeof(buf))) > 0)
		;
	return n == 0;
}

/* A port nobody listens on. */
static int
dead_port(void)
{
	int port, fd = listen_loopback(false, &port);

	close(fd);
	return port;
}

/* ---- the PROXY header builder ---- */

static void
sin4(struct sockaddr_in *a, const char *ip, int port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &a->sin_addr);
}

static void
sin6(struct sockaddr_in6 *a, const char *ip, int port)
{
	memset(a, 0, sizeof(*a));
	a->sin6_family = AF_INET6;
	a->sin6_port = htons((uint16_t)port);
	inet_pton(AF_INET6, ip, &a->sin6_addr);
}

static const unsigned char sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

Test(forward, proxy_header_bytes, .timeout = 10)
{
	struct sockaddr_in s4, d4;
	struct sockaddr_in6 s6, d6;
	unsigned char out[FORWARD_PROXY_MAX];
	int n;

	sin4(&s4, "192.168.0.1", 56324);
	sin4(&d4, "192.168.0.11", 443);
	n = forward_proxy_header(FORWARD_PROXY_V1, (void *)&s4, (void *)&d4,
	    out, sizeof(out));
	const char *v1 = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	cr_assert_eq(n, (int)strlen(v1));
	cr_assert_eq(memcmp(out, v1, (size_t)n), 0);

	sin6(&s6, "2001:db8::1", 65535);
	sin6(&d6, "::1", 1);
	n = forward_proxy_header(FORWARD_PROXY_V1, (void *)&s6, (void *)&d6,
	    out, sizeof(out));
	const char *v1_6 = "PROXY TCP6 2001:db8::1 ::1 65535 1\r\n";
	cr_assert_eq(n, (int)strlen(v1_6));
	cr_assert_eq(memcmp(out, v1_6, (size_t)n), 0);

	/* The longest v1 header fits FORWARD_PROXY_MAX (107 + NUL). */
	sin6(&s6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	sin6(&d6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	n = forward_proxy_header(FORWARD_PROXY_V1, (void *)&s6, (void *)&d6,
	    out, sizeof(out));
	cr_assert_eq(n, 104);
	cr_assert_eq(forward_proxy_header(FORWARD_PROXY_V1, (void *)&s6,
	    (void *)&d6, out, 50), -1);

	/* Mixed families: UNKNOWN. */
	n = forward_proxy_header(FORWARD_PROXY_V1, (void *)&s4, (void *)&d6,
	    out, sizeof(out));
	cr_assert_eq(n, 15);
	cr_assert_eq(memcmp(out, "PROXY UNKNOWN\r\n", 15), 0);

	/* v2, IPv4: 16 + 12 bytes. */
	n = forward_proxy_header(FORWARD_PROXY_V2, (void *)&s4, (void *)&d4,
	    out, sizeof(out));
	const unsigned char v2_4[28] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
		0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c,
		192, 168, 0, 1, 192, 168, 0, 11,
		0xdc, 0x04, 0x01, 0xbb,		/* 56324, 443 */
	};
	cr_assert_eq(n, 28);
	cr_assert_eq(memcmp(out, v2_4, 28), 0);

	/* v2, IPv6: 16 + 36 bytes. */
	sin6(&s6, "2001:db8::1", 65535);
	sin6(&d6, "::1", 1);
	n = forward_proxy_header(FORWARD_PROXY_V2, (void *)&s6, (void *)&d6,
	    out, sizeof(out));
	cr_assert_eq(n, 52);
	cr_assert_eq(memcmp(out, sig, 12), 0);
	cr_assert_eq(out[12], 0x21);
	cr_assert_eq(out[13], 0x21);
	cr_assert_eq(out[14], 0x00);
	cr_assert_eq(out[15], 36);
	cr_assert_eq(memcmp(out + 16, &s6.sin6_addr, 16), 0);
	cr_assert_eq(memcmp(out + 32, &d6.sin6_addr, 16), 0);
	cr_assert_eq(out[48], 0xff);
	cr_assert_eq(out[49], 0xff);
	cr_assert_eq(out[50], 0x00);
	cr_assert_eq(out[51], 0x01);

	/* v2, mixed: UNSPEC with no addresses. */
	n = forward_proxy_header(FORWARD_PROXY_V2, (void *)&s4, (void *)&d6,
	    out, sizeof(out));
	cr_assert_eq(n, 16);
	cr_assert_eq(out[13], 0x00);
	cr_assert_eq(out[15], 0);

	cr_assert_eq(forward_proxy_header(FORWARD_PROXY_V2, (void *)&s6,
	    (void *)&d6, out, 51), -1);
	cr_assert_eq(forward_proxy_header(FORWARD_PROXY_OFF, (void *)&s4,
	    (void *)&d4, out, sizeof(out)), -1);
}

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

/* ---- failing backends ---- */

struct watch {
	volatile bool closed;
};

/* Reads until the connection ends, however it ends. */
static void
serve_watch(int fd, void *arg)
{
	struct watch *w = arg;
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	w->closed = true;
}

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

/* ---- the PROXY protocol on the wire ---- */

struct capture {
	unsigned char hdr[128];
	size_t len;
	volatile bool got;
	SSL_CTX *tls;		/* then TLS on the same connection, or NULL */
};

/* Reads one PROXY header (v1 or v2) off the connection. */
static bool
read_proxy_header(int fd, struct capture *c)
{
	if (recv(fd, c->hdr, 16, MSG_WAITALL) != 16)
		return false;
	c->len = 16;
	if (memcmp(c->hdr, sig, 12) == 0) {
		size_t alen = (size_t)c->hdr[14] << 8 | c->hdr[15];
		if (alen > sizeof(c->hdr) - 16 || (alen > 0 && recv(fd,
		    c->hdr + 16, alen, MSG_WAITALL) != (ssize_t)alen))
			return false;
		c->len += alen;
	} else {
		while (c->len < sizeof(c->hdr) && !(c->hdr[c->len - 2] ==
		    '\r' && c->hdr[c->len - 1] == '\n'))
			if (recv(fd, c->hdr + c->len++, 1, 0) != 1)
				return false;
	}
	return true;
}

static void
tls_echo(SSL *ssl)
{
	char buf[16384];
	size_t n;

	while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1) {
		size_t w;
		if (SSL_write_ex(ssl, buf, n, &w) != 1)
			break;
	}
	SSL_shutdown(ssl);
}

/* The header in the clear, then echo (in TLS when asked). */
static void
serve_capture(int fd, void *arg)
{
	struct capture *c = arg;

	if (!read_proxy_header(fd, c))
		return;
	c->got = true;
	if (c->tls == NULL) {
		backend_echo(fd, NULL);
		return;
	}
	SSL *ssl = SSL_new(c->tls);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1)
		tls_echo(ssl);
	SSL_free(ssl);
	ERR_clear_error();
}

static void
expect_header(struct capture *c, enum forward_proxy v, bool v6, int cfd,
    int fport)
{
	struct sockaddr_storage me;
	socklen_t len = sizeof(me);
	char want[128];
	int cport;

	cr_assert_eq(getsockname(cfd, (struct sockaddr *)&me, &len), 0);
	cport = v6 ? ntohs(((struct sockaddr_in6 *)&me)->sin6_port) :
	    ntohs(((struct sockaddr_in *)&me)->sin_port);
	if (v == FORWARD_PROXY_V1) {
		int n = snprintf(want, sizeof(want), "PROXY %s %s %s %d %d\r\n",
		    v6 ? "TCP6" : "TCP4", v6 ? "::1" : "127.0.0.1",
		    v6 ? "::1" : "127.0.0.1", cport, fport);
		cr_assert_eq(c->len, (size_t)n, "header: %.*s", (int)c->len,
		    c->hdr);
		cr_assert_eq(memcmp(c->hdr, want, (size_t)n), 0,
		    "header: %.*s", (int)c->len, c->hdr);
		return;
	}
	size_t alen = v6 ? 36 : 12;
	unsigned char lo6[16] = { [15] = 1 };
	unsigned char lo4[4] = { 127, 0, 0, 1 };
	cr_assert_eq(c->len, 16 + alen);
	cr_assert_eq(memcmp(c->hdr, sig, 12), 0);
	cr_assert_eq(c->hdr[12], 0x21);
	cr_assert_eq(c->hdr[13], v6 ? 0x21 : 0x11);
	cr_assert_eq(c->hdr[14], 0);
	cr_assert_eq(c->hdr[15], alen);
	const unsigned char *a = c->hdr + 16;
	size_t al = v6 ? 16 : 4;
	cr_assert_eq(memcmp(a, v6 ? lo6 : lo4, al), 0);
	cr_assert_eq(memcmp(a + al, v6 ? lo6 : lo4, al), 0);
	cr_assert_eq(a[2 * al] << 8 | a[2 * al + 1], cport);
	cr_assert_eq(a[2 * al + 2] << 8 | a[2 * al + 3], fport);
}

static void
proxy_case(enum forward_proxy v, bool v6)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer p;
	char conf[1024];

	backend_start(&be, false, serve_capture, &cap);
	snprintf(conf, sizeof(conf),
	    "[web]\n"
	    "mode = forward\n"
	    "bind = %s:0\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n"
	    "backend = 127.0.0.1:%d\n"
	    "proxy_protocol = %s\n",
	    v6 ? "[::1]" : "127.0.0.1", be.port,
	    v == FORWARD_PROXY_V1 ? "v1" : "v2");
	ferry_start(&fp, conf);
	int fport = ferry_port(&fp, "web");
	tls_client(&p, v6, fport);
	ping(&p, "after the header");
	cr_assert(cap.got);
	expect_header(&cap, v, v6, p.fd, fport);
	peer_close(&p);
	backend_stop(&be);
}

Test(forward, proxy_v1_ipv4, .timeout = 30, .fini = cleanup)
{
	proxy_case(FORWARD_PROXY_V1, false);
}

Test(forward, proxy_v1_ipv6, .timeout = 30, .fini = cleanup)
{
	proxy_case(FORWARD_PROXY_V1, true);
}

Test(forward, proxy_v2_ipv4, .timeout = 30, .fini = cleanup)
{
	proxy_case(FORWARD_PROXY_V2, false);
}

Test(forward, proxy_v2_ipv6, .timeout = 30, .fini = cleanup)
{
	proxy_case(FORWARD_PROXY_V2, true);
}

/* ---- TLS to the backend ---- */

static SSL_CTX *
backend_ssl_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	cr_assert_not_null(ctx);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx,
	    CERT("server.pem")), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, CERT("server.key"),
	    SSL_FILETYPE_PEM), 1);
	return ctx;
}

struct tls_backend {
	SSL_CTX *ctx;
	volatile bool served;
	char sni[64];
};

static void
serve_tls_echo(int fd, void *arg)
{
	struct tls_backend *t = arg;
	SSL *ssl = SSL_new(t->ctx);

	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1) {
		const char *sni = SSL_get_servername(ssl,
		    TLSEXT_NAMETYPE_host_name);
		snprintf(t->sni, sizeof(t->sni), "%s", sni ? sni : "");
		t->served = true;
		tls_echo(ssl);
	}
	SSL_free(ssl);
	ERR_clear_error();
}

Test(forward, backend_tls_verified_with_sni, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct tls_backend t = { .ctx = backend_ssl_ctx() };
	struct peer p;
	char extra[512];

	backend_start(&be, false, serve_tls_echo, &t);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "backend_tls = on\nbackend_ca = " CERT("ca.pem") "\n"
	    "backend_sni = localhost\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	ping(&p, "encrypted both ways");
	cr_assert(t.served);
	cr_assert_str_eq(t.sni, "localhost");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 0);
	backend_stop(&be);
	SSL_CTX_free(t.ctx);
}

/* The PROXY header goes first, in the clear; then the TLS handshake. */
Test(forward, backend_tls_after_proxy_header, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct capture cap = { .tls = backend_ssl_ctx() };
	struct peer p;
	char extra[512];

	backend_start(&be, false, serve_capture, &cap);
	/* No backend_sni: the IP literal is checked against the SAN. */
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "backend_tls = on\nbackend_ca = " CERT("ca.pem") "\n"
	    "proxy_protocol = v2\n", be.port);
	start_web(false, extra);
	int fport = ferry_port(&fp, "web");
	tls_client(&p, false, fport);
	ping(&p, "header, then TLS");
	expect_header(&cap, FORWARD_PROXY_V2, false, p.fd, fport);
	peer_close(&p);
	backend_stop(&be);
	SSL_CTX_free(cap.tls);
}

static void
backend_tls_refused(const char *keys)
{
	struct backend be;
	struct tls_backend t = { .ctx = backend_ssl_ctx() };
	struct peer p;
	char extra[512];

	backend_start(&be, false, serve_tls_echo, &t);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "backend_tls = on\n%s", be.port, keys);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	peer_write(&p, "secret", 6);
	cr_assert(read_to_eof(&p), "the client was not closed");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "no backend answered", 1, 10));
	cr_assert_geq(ferry_log_count(&fp, "certificate"), 1);
	/* Logged once, by the forward listener, not by the TLS layer too. */
	cr_assert_eq(ferry_log_count(&fp, "backend failed: tls-error"), 1);
	cr_assert_eq(ferry_log_count(&fp, "tls handshake failed"), 0);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 1);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_sent_bytes_total", "web")), 0);
	backend_stop(&be);
	SSL_CTX_free(t.ctx);
}

Test(forward, backend_tls_unknown_ca_refused, .timeout = 30,
    .fini = cleanup)
{
	backend_tls_refused("backend_ca = " CERT("rogue-ca.pem") "\n");
}

Test(forward, backend_tls_wrong_name_refused, .timeout = 30,
    .fini = cleanup)
{
	backend_tls_refused("backend_ca = " CERT("ca.pem") "\n"
	    "backend_sni = other.test\n");
}

/*
 * A backend that takes the PROXY header and then never answers the TLS
 * handshake: connect_timeout covers that handshake too.
 */
Test(forward, backend_tls_silent_after_header, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct watch w = { 0 };
	struct peer p;
	char extra[512];

	backend_start(&be, false, serve_watch, &w);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "backend_tls = on\nbackend_ca = " CERT("ca.pem") "\n"
	    "proxy_protocol = v1\nconnect_timeout = 300ms\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	cr_assert(read_to_eof(&p), "the client was left hanging");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "no backend answered", 1, 10));
	cr_assert_geq(ferry_log_count(&fp, "handshake timed out"), 1);
	cr_assert(wait_flag(&w.closed, 10));
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_connect_failures_total", "web")), 1);
	backend_stop(&be);
}

/* ---- client certificates ---- */

Test(forward, client_certificate_required, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct peer p;
	char extra[512];
	char c;

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "verify_client = required\nclient_ca = " CERT("ca.pem") "\n"
	    "tls_min_version = 1.3\n", be.port);
	start_web(false, extra);
	int port = ferry_port(&fp, "web");

	/* Without a certificate: no service (TLS 1.3 says so on read). */
	int fd = connect_loopback(false, port);
	peer_tls(&p, fd, "localhost", NULL, NULL);
	if (peer_tls_handshake(&p)) {
		peer_write(&p, "x", 1);
		cr_assert_leq(peer_read(&p, &c, 1), 0);
	}
	peer_close(&p);
	/* A certificate from another CA: no service either. */
	fd = connect_loopback(false, port);
	peer_tls(&p, fd, "localhost", CERT("rogue-client.pem"),
	    CERT("rogue-client.key"));
	if (peer_tls_handshake(&p)) {
		peer_write(&p, "x", 1);
		cr_assert_leq(peer_read(&p, &c, 1), 0);
	}
	peer_close(&p);
	/* With ours: served. */
	fd = connect_loopback(false, port);
	peer_tls(&p, fd, "localhost", CERT("client.pem"), CERT("client.key"));
	cr_assert(peer_tls_handshake(&p));
	ping(&p, "verified");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	/* The two refusals, logged with the listener they came to. */
	cr_assert(ferry_log_wait(&fp, "web: tls handshake failed: peer "
	    "127.0.0.1:", 2, 10));
	cr_assert_eq(be.accepted, 1, "a refused client reached the backend");
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_tls_handshake_failures_total", "web")), 2);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_tls_handshakes_total", "web")), 1);
	backend_stop(&be);
}

/* ---- timeouts, errors, backpressure ---- */

struct trickle {
	int chunks;
	double every;
	volatile bool done;
};

/* A slow one-way download, then silence until the peer goes. */
static void
serve_trickle(int fd, void *arg)
{
	struct trickle *t = arg;
	char buf[1000], c;

	memset(buf, 'd', sizeof(buf));
	for (int i = 0; i < t->chunks; i++) {
		if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != sizeof(buf))
			return;
		usleep((useconds_t)(t->every * 1e6));
	}
	t->done = true;
	(void)recv(fd, &c, 1, 0);
}

Test(forward, idle_timeout_spares_one_way_traffic, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct trickle t = { .chunks = 8, .every = 0.25 };
	struct peer p;
	char extra[256], buf[8000];

	backend_start(&be, false, serve_trickle, &t);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "idle_timeout = 1\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	/* 2 s of download, the client silent all along: not idle. */
	cr_assert_eq(peer_read_exact(&p, buf, sizeof(buf)), sizeof(buf));
	cr_assert(wait_flag(&t.done, 5));
	/* Then nothing moves either way: closed. */
	cr_assert(read_to_eof(&p), "an idle connection was not closed");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "idle for 1 s", 1, 10));
	backend_stop(&be);
}

Test(forward, client_reset_closes_backend, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct watch w = { 0 };
	char extra[256];
	struct linger lg = { 1, 0 };

	backend_start(&be, false, serve_watch, &w);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", be.port);
	start_web(true, extra);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	cr_assert_eq(send(fd, "hello", 5, 0), 5);
	for (int i = 0; i < 500 && be.accepted == 0; i++)
		usleep(10 * 1000);
	cr_assert_eq(be.accepted, 1);
	/* RST, not FIN. */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	cr_assert(wait_flag(&w.closed, 10), "the backend was left open");
	cr_assert(ferry_log_wait(&fp, "client reset", 1, 10));
	backend_stop(&be);
}

struct flood {
	size_t total;
	volatile size_t sent;
	volatile bool done;
};

static void
serve_flood(int fd, void *arg)
{
	struct flood *f = arg;
	static uint8_t buf[65536];
	int small = 65536;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	while (f->sent < f->total) {
		size_t k = f->total - f->sent < sizeof(buf) ?
		    f->total - f->sent : sizeof(buf);
		fill_pattern(buf, k, f->sent, 5);
		ssize_t n = send(fd, buf, k, MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN)
			continue;	/* SO_SNDTIMEO while the client waits */
		if (n <= 0)
			return;
		f->sent += (size_t)n;
	}
	f->done = true;
	shutdown(fd, SHUT_WR);
}

/*
 * A client that does not read holds the backend back: ferry queues at
 * most about high_water per side instead of taking everything in.
 */
Test(forward, backpressure_holds_the_backend, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct flood f = { .total = 64 * 1024 * 1024 };
	struct peer p;
	char extra[256];
	static uint8_t buf[65536];
	int small = 65536;
	size_t got = 0, last = 0;

	backend_start(&be, false, serve_flood, &f);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "high_water = 64k\n", be.port);
	start_web(true, extra);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	peer_plain(&p, fd);
	/* Let the backend run until it stalls (no progress for 0.5 s). */
	for (int i = 0; i < 40; i++) {
		usleep(500 * 1000);
		if (f.sent > 0 && f.sent == last)
			break;
		last = f.sent;
	}
	cr_assert_not(f.done, "64 MB went into a client that reads nothing");
	/* Socket buffers hold some MB; ferry must not have taken the rest. */
	cr_assert_lt(f.sent, (size_t)32 * 1024 * 1024, "sent %zu",
	    (size_t)f.sent);
	/* Reading resumes the flow, every byte intact and in order. */
	while (got < f.total) {
		long n = peer_read(&p, buf, sizeof(buf));
		cr_assert_gt(n, 0, "read failed after %zu bytes", got);
		cr_assert(check_pattern(buf, (size_t)n, got, 5),
		    "corrupt after %zu", got);
		got += (size_t)n;
	}
	cr_assert(read_to_eof(&p));
	cr_assert(f.done);
	peer_close(&p);
	backend_stop(&be);
}

/* ---- a client paused behind a backend that never reads ---- */

struct deaf {
	volatile bool drain;	/* told to read, at last */
	volatile size_t got;	/* what it then read, to the end */
	volatile bool done;
};

/* Reads nothing until told to; then everything ferry sent, to the end. */
static void
serve_deaf(int fd, void *arg)
{
	struct deaf *d = arg;
	static char buf[65536];
	size_t got = 0;
	ssize_t n;

	for (int i = 0; i < 6000 && !d->drain; i++)
		usleep(10 * 1000);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		got += (size_t)n;
	d->got = got;
	d->done = true;
}

/* Sockets the process holds (/proc/PID/fd). */
static int
count_sockets(pid_t pid)
{
	char dir[64], path[sizeof(dir) + 256], link[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/%ld/fd", (long)pid);
	d = opendir(dir);
	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		ssize_t k;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		k = readlink(path, link, sizeof(link) - 1);
		if (k > 0 && strncmp(link, "socket:", 7) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* Waits (bounded) until the process holds `want` sockets. */
static bool
wait_sockets(pid_t pid, int want, double timeout)
{
	double end = now_s() + timeout;

	while (count_sockets(pid) != want && now_s() < end)
		usleep(20 * 1000);
	return count_sockets(pid) == want;
}

#define ACTIVE SERIES("ferry_connections_active", "web")

static bool
wait_metric(const char *series, double want, double timeout)
{
	return metric_wait(&fp, series, want, timeout, 20);
}

/*
 * Writes until nothing moves for a second: ferry has stopped reading us
 * (its queue towards the backend is full, and so is every socket buffer
 * on the way).  Returns the bytes written.
 */
static size_t
fill_until_stalled(int fd)
{
	static char buf[65536];
	size_t sent = 0;

	memset(buf, 'u', sizeof(buf));
	for (int i = 0; i < 100000; i++) {
		ssize_t n = send(fd, buf, sizeof(buf), MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		cr_assert(n < 0 && errno == EAGAIN, "send: %s",
		    strerror(errno));
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, 1000) == 0)
			return sent;
	}
	cr_assert_fail("ferry took %zu bytes and wanted more", sent);
	return sent;
}

#define CLIENT_IN SERIES("ferry_client_received_bytes_total", "web")

/*
 * Writes 16 KiB at a time until ferry stops reading, but its kernel still
 * takes our bytes: each chunk leaves our socket (SIOCOUTQ 0: acknowledged)
 * and ferry's count of bytes read from its client stays below what we
 * sent.  Nothing of ours is left queued then, so a close() sends its FIN
 * at once; a FIN behind unsent bytes would wait for ferry to read them.
 * Returns the bytes written.
 */
static size_t
fill_until_paused(int fd)
{
	static char buf[16384];
	size_t sent = 0;

	memset(buf, 'u', sizeof(buf));
	for (int i = 0; i < 4096; i++) {
		int queued = -1;
		double read = -1;

		cr_assert_eq(send(fd, buf, sizeof(buf), MSG_NOSIGNAL),
		    (ssize_t)sizeof(buf), "send: %s", strerror(errno));
		sent += sizeof(buf);
		for (int k = 0; k < 400 && queued != 0; k++) {
			cr_assert_eq(ioctl(fd, SIOCOUTQ, &queued), 0);
			if (queued != 0)
				usleep(5 * 1000);
		}
		cr_assert_eq(queued, 0, "ferry's socket stopped taking bytes "
		    "before ferry stopped reading (%zu sent)", sent);
		for (int k = 0; k < 20; k++) {
			read = ferry_metric(&fp, CLIENT_IN);
			if (read == (double)sent)
				break;
			usleep(10 * 1000);
		}
		if (read < (double)sent)
			return sent;
	}
	cr_assert_fail("ferry read all of %zu bytes", sent);
	return sent;
}

/* "N bytes up" from the connection's log line. */
static long long
logged_bytes_up(void)
{
	char *log = ferry_log_read(&fp);
	const char *p = strstr(log, " closed after ");
	long long up = -1;

	if (p != NULL && (p = strstr(p, " s, ")) != NULL)
		sscanf(p, " s, %lld bytes up", &up);
	free(log);
	return up;
}

/*
 * Ferry with a backend that never reads, and a client whose bytes have
 * filled the queue: its reading is paused.  With `all_sent`, every byte
 * the client wrote has reached ferry's socket (else the client's own
 * buffer is full too).  Returns the client's socket.
 */
static int
stalled_pair(struct backend *be, struct deaf *d, const char *extra,
    bool all_sent, int *sockets)
{
	char conf[512];
	int small = 64 * 1024;

	backend_start(be, false, serve_deaf, d);
	/* Small buffers on the way: the queue fills in a few MB. */
	cr_assert_eq(setsockopt(be->lfd, SOL_SOCKET, SO_RCVBUF, &small,
	    sizeof(small)), 0);
	snprintf(conf, sizeof(conf), "backend = 127.0.0.1:%d\n"
	    "high_water = 64k\nidle_timeout = 0\n%s", be->port, extra);
	start_web(true, conf);
	*sockets = count_sockets(fp.pid);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	cr_assert_geq(fd, 0);
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small,
	    sizeof(small)), 0);
	if (all_sent)
		fill_until_paused(fd);
	else
		cr_assert_gt(fill_until_stalled(fd), 64 * 1024);
	cr_assert(wait_sockets(fp.pid, *sockets + 2, 10),
	    "ferry holds %d sockets, %d before the pair",
	    count_sockets(fp.pid), *sockets);
	cr_assert_eq(ferry_metric(&fp, ACTIVE), 1);
	return fd;
}

/*
 * The client resets while ferry is not reading it: the pair is closed at
 * once (idle_timeout 0, nothing else would), its descriptors freed.
 */
Test(forward, paused_client_reset_frees_the_pair, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct deaf d = { 0 };
	struct linger lg = { 1, 0 };
	int sockets, fd = stalled_pair(&be, &d, "", false, &sockets);

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg,
	    sizeof(lg)), 0);
	close(fd);
	cr_assert(ferry_log_wait(&fp, "client reset", 1, 10),
	    "the reset of a paused client went unnoticed");
	cr_assert(wait_metric(ACTIVE, 0, 10));
	cr_assert(wait_sockets(fp.pid, sockets, 10), "ferry holds %d "
	    "sockets, %d before the pair", count_sockets(fp.pid), sockets);
	d.drain = true;
	cr_assert(wait_flag(&d.done, 20));
	backend_stop(&be);
}

/*
 * "bytes up" is what went to the backend, not what was read from the
 * client: the queue ferry dropped with the pair never reached it.
 */
Test(forward, bytes_up_is_what_the_backend_received, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct deaf d = { 0 };
	struct linger lg = { 1, 0 };
	int sockets, fd = stalled_pair(&be, &d, "", false, &sockets);
	double read_from_client;

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	/* Ferry's socket to the backend still holds bytes: they arrive. */
	d.drain = true;
	cr_assert(wait_flag(&d.done, 20));
	read_from_client = ferry_metric(&fp, SERIES(
	    "ferry_client_received_bytes_total", "web"));
	cr_log_info("ferry read %.0f bytes from the client, forwarded %lld; "
	    "the backend received %zu", read_from_client, logged_bytes_up(),
	    (size_t)d.got);
	cr_assert_eq(logged_bytes_up(), (long long)d.got,
	    "logged %lld bytes up; the backend received %zu (ferry read %.0f "
	    "from the client)", logged_bytes_up(), (size_t)d.got,
	    read_from_client);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_sent_bytes_total", "web")), (double)d.got);
	cr_assert_gt(read_from_client, (double)d.got,
	    "the premise: ferry held bytes it never forwarded");
	backend_stop(&be);
}

/*
 * A paused client that stays connected is left alone, past fin_timeout;
 * once it closes (a FIN ferry cannot read past, the backend still not
 * reading), the pair goes when nothing has moved for fin_timeout.
 */
Test(forward, paused_client_close_frees_the_pair, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct deaf d = { 0 };
	int sockets, fd = stalled_pair(&be, &d, "fin_timeout = 1\n",
	    true, &sockets);

	usleep(2500 * 1000);
	cr_assert_eq(ferry_log_count(&fp, "closed after"), 0,
	    "a paused pair with both peers connected was closed");
	cr_assert_eq(ferry_metric(&fp, ACTIVE), 1);
	/* The metric read's admin connection may not be closed yet. */
	cr_assert(wait_sockets(fp.pid, sockets + 2, 10));
	close(fd);		/* FIN, nothing of ours queued before it */
	cr_assert(ferry_log_wait(&fp, "idle for 1 s after the client closed",
	    1, 10), "the pair outlived its client");
	cr_assert(wait_metric(ACTIVE, 0, 10));
	cr_assert(wait_sockets(fp.pid, sockets, 10), "ferry holds %d "
	    "sockets, %d before the pair", count_sockets(fp.pid), sockets);
	d.drain = true;
	cr_assert(wait_flag(&d.done, 20));
	backend_stop(&be);
}

/* Reads the request to its end, then answers slowly, then closes. */
static void
serve_slow_answer(int fd, void *arg)
{
	struct trickle *t = arg;
	char buf[1000];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	memset(buf, 'd', sizeof(buf));
	for (int i = 0; i < t->chunks; i++) {
		usleep((useconds_t)(t->every * 1e6));
		if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != sizeof(buf))
			return;
	}
	t->done = true;
}

/* fin_timeout counts silence, not time: a download after the FIN flows. */
Test(forward, fin_timeout_spares_a_download_after_half_close,
    .timeout = 60, .fini = cleanup)
{
	struct backend be;
	struct trickle t = { .chunks = 12, .every = 0.25 };
	struct peer p;
	char extra[256], buf[12000];

	backend_start(&be, false, serve_slow_answer, &t);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "fin_timeout = 2\n", be.port);
	start_web(true, extra);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	peer_plain(&p, fd);
	cr_assert_eq(peer_write(&p, "GET", 3), 3);
	shutdown(fd, SHUT_WR);
	/* 3 s of download after our FIN, a chunk every 0.25 s. */
	cr_assert_eq(peer_read_exact(&p, buf, sizeof(buf)), sizeof(buf),
	    "the download was cut");
	cr_assert(read_to_eof(&p));
	cr_assert(t.done);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "12000 bytes down: client closed", 1,
	    10));
	cr_assert_eq(ferry_log_count(&fp, "idle for"), 0);
	backend_stop(&be);
}

/* ---- the per-connection log line under a crowd ---- */

/* Sum of the "N connection lines suppressed" lines. */
static long
suppressed_lines(void)
{
	char *log = ferry_log_read(&fp);
	const char *p = log;
	long sum = 0;

	while ((p = strstr(p, "web: ")) != NULL) {
		long n;
		char tail[32];
		p += 5;
		if (sscanf(p, "%ld %31[a-z ]", &n, tail) == 2 &&
		    strcmp(tail, "connection lines suppressed") == 0)
			sum += n;
	}
	free(log);
	return sum;
}

/*
 * 3,000 clients of a listener whose backend is down: at most LOG_BURST
 * connection lines a second, and every one left out counted in a line
 * that says so.
 */
Test(forward, connection_lines_are_rate_limited, .timeout = 120,
    .fini = cleanup)
{
	const int n = 3000;
	char extra[256], c;
	double t0, elapsed;
	int lines = 0;
	long suppressed = 0;

	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n",
	    dead_port());
	start_web(true, extra);
	t0 = now_s();
	for (int i = 0; i < n; i++) {
		int fd = connect_loopback(false, ferry_port(&fp, "web"));
		cr_assert_geq(fd, 0, "connect %d: %s", i, strerror(errno));
		/* Closed by ferry once the backend refused. */
		cr_assert_leq(recv(fd, &c, 1, 0), 0);
		close(fd);
	}
	for (int i = 0; i < 1000; i++) {
		lines = ferry_log_count(&fp, " closed after ");
		suppressed = suppressed_lines();
		if (lines + suppressed >= n)
			break;
		usleep(20 * 1000);
	}
	elapsed = now_s() - t0;
	cr_log_info("%d connection lines and %ld suppressed in %.1f s", lines,
	    suppressed, elapsed);
	cr_assert_eq(lines + suppressed, n, "%d lines + %ld suppressed for "
	    "%d connections", lines, suppressed, n);
	/* At most LOG_BURST in each second the run touched. */
	cr_assert_leq(lines, LOG_BURST * ((int)elapsed + 2), "%d lines in "
	    "%.1f s", lines, elapsed);
	cr_assert_gt(suppressed, 0);
}

/* ---- the mechanism below: TLS on a stream already connected ---- */

struct upgrade {
	struct tls_ctx *ctx;
	int second_try;			/* tls_stream_connect on a TLS stream */
	volatile bool done, closed;
	char got[8];
};

static void
up_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct upgrade *u = arg;

	memcpy(u->got, d, n);
	u->done = true;
	stream_close(s, STREAM_CLOSE_LOCAL);
}

static void
up_ready(struct stream *s, void *arg)
{
	(void)arg;
	stream_write(s, "ping", 4, NULL);
	stream_read_bytes(s, 4, false, up_read);
}

/* The clear bytes are on the wire: from now on, TLS. */
static void
up_clear_sent(struct stream *s, void *arg)
{
	struct upgrade *u = arg;

	cr_assert_eq(tls_stream_connect(s, u->ctx, "localhost"), 0);
	u->second_try = tls_stream_connect(s, u->ctx, "localhost");
	stream_wait_for_handshake(s, up_ready);
}

static void
up_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct upgrade *u = arg;

	(void)s;
	(void)why;
	u->closed = true;
}

Test(forward, tls_after_clear_bytes_on_a_connected_stream, .timeout = 30)
{
	struct tls_client_opts co = { .ca_file = CERT("ca.pem"),
	    .verify = true };
	struct backend be;
	struct capture cap = { .tls = backend_ssl_ctx() };
	struct upgrade u = { 0 };
	struct sockaddr_storage ss;
	socklen_t len;
	struct tloop t;
	char err[256];
	const char *hdr = "PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n";

	u.ctx = tls_ctx_new_client(&co, err, sizeof(err));
	cr_assert_not_null(u.ctx, "%s", err);
	backend_start(&be, false, serve_capture, &cap);
	tloop_init(&t);
	cr_assert_eq(netutil_resolve("127.0.0.1", be.port, &ss, &len, err,
	    sizeof(err)), 0);
	struct stream *s = stream_connect(&t.sl, (struct sockaddr *)&ss, len,
	    NULL);
	cr_assert_not_null(s);
	stream_set_callbacks(s, up_closed, &u);
	stream_write(s, hdr, strlen(hdr), up_clear_sent);
	cr_assert(tloop_run_until(&t, &u.closed, 10));
	cr_assert(u.done, "no echo over TLS after the clear bytes");
	cr_assert_eq(memcmp(u.got, "ping", 4), 0);
	cr_assert_eq(u.second_try, -1, "TLS installed twice");
	cr_assert_eq(cap.len, strlen(hdr));
	cr_assert_eq(memcmp(cap.hdr, hdr, cap.len), 0);

	/* Bytes already read in the clear: refused (no injection). */
	struct backend echo;
	backend_start(&echo, false, backend_echo, NULL);
	netutil_resolve("127.0.0.1", echo.port, &ss, &len, err, sizeof(err));
	u.closed = false;
	s = stream_connect(&t.sl, (struct sockaddr *)&ss, len, NULL);
	stream_set_callbacks(s, up_closed, &u);
	/* No read pending: the echo is buffered, not delivered. */
	stream_write(s, "abc", 3, NULL);
	for (int i = 0; i < 200 && stream_bytes_in(s) == 0; i++)
		tloop_run_for(&t, 0.01);
	cr_assert_gt(stream_bytes_in(s), 0);
	cr_assert_eq(tls_stream_connect(s, u.ctx, "localhost"), -1);
	/* A closed stream (not yet freed): refused, or its SSL would leak. */
	stream_close(s, STREAM_CLOSE_LOCAL);
	cr_assert_eq(tls_stream_connect(s, u.ctx, "localhost"), -1);
	cr_assert(tloop_run_until(&t, &u.closed, 10));

	tls_ctx_unref(u.ctx);
	tloop_destroy(&t);
	backend_stop(&echo);
	backend_stop(&be);
	SSL_CTX_free(cap.tls);
}
