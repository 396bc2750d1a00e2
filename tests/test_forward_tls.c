/*
 * Forward mode toward the backend: the PROXY header builder byte for
 * byte and the PROXY protocol on the wire (v1 and v2, IPv4 and IPv6), TLS
 * to the backend (verified, with SNI, after a PROXY header, refused),
 * client certificates, and the mechanism below: TLS started on a stream
 * already connected (see test_forward.c).
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

/* ---- the PROXY header builder ---- */


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
