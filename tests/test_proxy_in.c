/*
 * PROXY protocol in: the parser (proxy_in.h) byte for byte, and
 * accept_proxy end to end: the address from the header used for the
 * header sent on, the logs and the per-source limit; headers whole,
 * byte by byte, before TLS; malformed, partial and silent ones closed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
#include "proxy_in.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

static const unsigned char sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

/* Parses s whole; every shorter prefix must be MORE. */
static enum proxy_in_result
parse_all(const void *s, size_t n, struct proxy_in *out)
{
	enum proxy_in_result r = proxy_in_parse(s, n, out);

	if (r == PROXY_IN_DONE)
		for (size_t k = 0; k < out->len; k++) {
			struct proxy_in tmp;
			cr_assert_eq(proxy_in_parse(s, k, &tmp), PROXY_IN_MORE,
			    "prefix of %zu bytes", k);
		}
	return r;
}

static enum proxy_in_result
parse_str(const char *s, struct proxy_in *out)
{
	return parse_all(s, strlen(s), out);
}

static void
expect_v4(const struct proxy_in *p, const char *src, int sport,
    const char *dst, int dport)
{
	char a[INET_ADDRSTRLEN];

	cr_assert_eq(p->kind, PROXY_IN_ADDR);
	cr_assert_eq(p->src.sa.sa_family, AF_INET);
	cr_assert_eq(p->addrlen, sizeof(struct sockaddr_in));
	inet_ntop(AF_INET, &p->src.in.sin_addr, a, sizeof(a));
	cr_assert_str_eq(a, src);
	cr_assert_eq(ntohs(p->src.in.sin_port), sport);
	inet_ntop(AF_INET, &p->dst.in.sin_addr, a, sizeof(a));
	cr_assert_str_eq(a, dst);
	cr_assert_eq(ntohs(p->dst.in.sin_port), dport);
}

Test(proxy_in, v1_valid, .timeout = 10)
{
	struct proxy_in p;
	char a[INET6_ADDRSTRLEN];
	const char *v1 = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nTLS";

	cr_assert_eq(parse_all(v1, strlen(v1), &p), PROXY_IN_DONE);
	cr_assert_eq(p.len, strlen(v1) - 3, "the bytes after it are not its");
	cr_assert_eq(p.version, 1);
	expect_v4(&p, "192.0.2.1", 56324, "198.51.100.2", 443);

	cr_assert_eq(parse_str("PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", &p),
	    PROXY_IN_DONE);
	cr_assert_eq(p.src.sa.sa_family, AF_INET6);
	inet_ntop(AF_INET6, &p.src.in6.sin6_addr, a, sizeof(a));
	cr_assert_str_eq(a, "2001:db8::1");
	cr_assert_eq(ntohs(p.dst.in6.sin6_port), 65535);

	cr_assert_eq(parse_str("PROXY UNKNOWN\r\n", &p), PROXY_IN_DONE);
	cr_assert_eq(p.kind, PROXY_IN_LOCAL);
	cr_assert_eq(parse_str("PROXY UNKNOWN ffff:: 1.2.3.4 1 2\r\n", &p),
	    PROXY_IN_DONE);
	cr_assert_eq(p.kind, PROXY_IN_LOCAL);
}

Test(proxy_in, v1_malformed, .timeout = 10)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1\r\n",
		"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",		/* LF alone */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
		"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",		/* two spaces */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
		"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
		"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",		/* v6 in TCP4 */
		"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",		/* leading 0 */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
		"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n",
		"PROXY UNKNOWNX\r\n",
	};
	struct proxy_in p;
	char longer[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i]);
		if (i == 14)
			n = 34;		/* the NUL inside */
		cr_assert_eq(proxy_in_parse((const void *)bad[i], n, &p),
		    PROXY_IN_ERROR, "accepted: %s", bad[i]);
		cr_assert_not_null(p.error);
	}
	/* No CRLF within 107 bytes. */
	memset(longer, 'a', sizeof(longer));
	memcpy(longer, "PROXY UNKNOWN ", 14);
	cr_assert_eq(proxy_in_parse((void *)longer, 106, &p), PROXY_IN_MORE);
	cr_assert_eq(proxy_in_parse((void *)longer, 107, &p), PROXY_IN_ERROR);
}

/* A v2 header: family, address block and extra bytes (TLVs). */
static size_t
v2(unsigned char *out, unsigned char vc, unsigned char fam,
    const void *block, size_t blen)
{
	memcpy(out, sig, 12);
	out[12] = vc;
	out[13] = fam;
	out[14] = (unsigned char)(blen >> 8);
	out[15] = (unsigned char)blen;
	memcpy(out + 16, block, blen);
	return 16 + blen;
}

Test(proxy_in, v2_valid, .timeout = 10)
{
	unsigned char b[600], blk[64] = { 192, 0, 2, 1, 198, 51, 100, 2,
	    0xdc, 0x04, 0x01, 0xbb,
	    0x01, 0x00, 0x02, 'h', '2',		/* ALPN TLV */
	    0x04, 0x00, 0x00 };			/* NOOP, empty */
	struct proxy_in p;
	size_t n;

	n = v2(b, 0x21, 0x11, blk, 12);
	cr_assert_eq(parse_all(b, n, &p), PROXY_IN_DONE);
	cr_assert_eq(p.len, 28);
	cr_assert_eq(p.version, 2);
	expect_v4(&p, "192.0.2.1", 56324, "198.51.100.2", 443);

	n = v2(b, 0x21, 0x11, blk, 20);
	cr_assert_eq(parse_all(b, n, &p), PROXY_IN_DONE);
	cr_assert_eq(p.len, 36);

	unsigned char six[36] = { [15] = 1, [31] = 2, [32] = 0, [33] = 80,
	    [34] = 1, [35] = 187 };
	n = v2(b, 0x21, 0x21, six, 36);
	cr_assert_eq(parse_all(b, n, &p), PROXY_IN_DONE);
	cr_assert_eq(p.src.sa.sa_family, AF_INET6);
	cr_assert_eq(ntohs(p.src.in6.sin6_port), 80);

	/* LOCAL (a load balancer's health check): the socket's address. */
	n = v2(b, 0x20, 0x00, blk, 0);
	cr_assert_eq(parse_all(b, n, &p), PROXY_IN_DONE);
	cr_assert_eq(p.kind, PROXY_IN_LOCAL);
	/* UNIX: no address the server uses. */
	unsigned char un[216] = { 0 };
	n = v2(b, 0x21, 0x31, un, sizeof(un));
	cr_assert_eq(parse_all(b, n, &p), PROXY_IN_DONE);
	cr_assert_eq(p.kind, PROXY_IN_LOCAL);
}

Test(proxy_in, v2_malformed, .timeout = 10)
{
	unsigned char b[2048], blk[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
	    0x01, 0x00, 0x05, 'h' };
	struct proxy_in p;
	size_t n;

	n = v2(b, 0x11, 0x11, blk, 12);			/* version 1 */
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	n = v2(b, 0x22, 0x11, blk, 12);			/* command 2 */
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	n = v2(b, 0x21, 0x12, blk, 12);			/* UDP */
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	n = v2(b, 0x21, 0x11, blk, 8);			/* block too short */
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	n = v2(b, 0x21, 0x21, blk, 12);
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	n = v2(b, 0x21, 0x11, blk, 16);			/* TLV runs past */
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	n = v2(b, 0x21, 0x11, blk, 14);			/* half a TLV head */
	cr_assert_eq(proxy_in_parse(b, n, &p), PROXY_IN_ERROR);
	/* Longer than PROXY_IN_MAX: refused at its length, not read. */
	memcpy(b, sig, 12);
	b[12] = 0x21;
	b[13] = 0x11;
	b[14] = 0x04;
	b[15] = 0x00;
	cr_assert_eq(proxy_in_parse(b, 16, &p), PROXY_IN_ERROR);
	/* A bad signature, early. */
	memcpy(b, sig, 12);
	b[5] = 'X';
	cr_assert_eq(proxy_in_parse(b, 6, &p), PROXY_IN_ERROR);
}

/* ---- end to end ---- */

/* The backend: reads the v1 header ferry sends on, then echoes. */
struct capture {
	char line[128];
	volatile bool got;
};

static void
serve_capture(int fd, void *arg)
{
	struct capture *c = arg;
	size_t n = 0;

	while (n + 1 < sizeof(c->line) && recv(fd, c->line + n, 1, 0) == 1)
		if (c->line[n++] == '\n')
			break;
	c->line[n] = '\0';
	c->got = true;
	backend_echo(fd, NULL);
}

static void
start(bool tls, const char *extra, int backend_port)
{
	char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "accept_proxy = on\n"
	    "backend = 127.0.0.1:%d\n"
	    "proxy_protocol = v1\n"
	    "%s%s", backend_port, tls ? "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n" : "", extra);
	ferry_start(&fp, conf);
}

static int
client(void)
{
	int fd = connect_loopback(false, ferry_port(&fp, "web"));

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	return fd;
}

static bool
echoes(struct peer *p, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg);

	return peer_write(p, msg, n) == n && peer_read_exact(p, buf, n) == n &&
	    memcmp(buf, msg, n) == 0;
}

/* Reads until EOF (true) or error/timeout (false). */
static bool
closed(int fd)
{
	char buf[256];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		;
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

Test(proxy_in, v1_address_used_everywhere, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer p;
	const char *hdr = "PROXY TCP4 192.0.2.7 198.51.100.9 4242 443\r\n";

	backend_start(&be, false, serve_capture, &cap);
	start(false, "", be.port);
	peer_plain(&p, client());
	cr_assert_eq(peer_write(&p, hdr, strlen(hdr)), strlen(hdr));
	cr_assert(echoes(&p, "hello"));
	peer_close(&p);
	cr_assert(cap.got);
	/* The header sent on names the client of the header received. */
	cr_assert_eq(strncmp(cap.line, "PROXY TCP4 192.0.2.7 127.0.0.1 4242 ",
	    36), 0, "sent on: %s", cap.line);
	cr_assert(ferry_log_wait(&fp, "web: 192.0.2.7:4242 -> 127.0.0.1:", 1,
	    10), "the log line does not name the PROXY client");
	backend_stop(&be);
}

Test(proxy_in, v2_byte_by_byte_then_tls, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer p;
	unsigned char b[64], blk[12] = { 203, 0, 113, 5, 127, 0, 0, 1,
	    0x30, 0x39, 0x01, 0xbb };
	size_t n = v2(b, 0x21, 0x11, blk, sizeof(blk));
	int fd;

	backend_start(&be, false, serve_capture, &cap);
	start(true, "", be.port);
	fd = client();
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(send(fd, b + i, 1, 0), 1);
		usleep(2000);
	}
	peer_tls(&p, fd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&p), "TLS after the PROXY header");
	cr_assert(echoes(&p, "over tls"));
	peer_close(&p);
	cr_assert_eq(strncmp(cap.line, "PROXY TCP4 203.0.113.5 127.0.0.1 "
	    "12345 ", 33), 0, "sent on: %s", cap.line);
	backend_stop(&be);
}

Test(proxy_in, local_keeps_the_socket_address, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer p;
	unsigned char b[16];
	size_t n = v2(b, 0x20, 0x00, "", 0);

	backend_start(&be, false, serve_capture, &cap);
	start(false, "", be.port);
	peer_plain(&p, client());
	cr_assert_eq(peer_write(&p, b, n), n);
	cr_assert(echoes(&p, "local"));
	peer_close(&p);
	cr_assert_eq(strncmp(cap.line, "PROXY TCP4 127.0.0.1 127.0.0.1 ", 31),
	    0, "sent on: %s", cap.line);
	backend_stop(&be);
}

Test(proxy_in, per_source_limit_counts_the_header_address, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer p1, p2, p3;
	const char *a = "PROXY TCP4 192.0.2.1 127.0.0.1 1000 443\r\n";
	const char *a2 = "PROXY TCP4 192.0.2.1 127.0.0.1 1001 443\r\n";
	const char *b = "PROXY TCP4 192.0.2.2 127.0.0.1 1000 443\r\n";

	backend_start(&be, false, serve_capture, &cap);
	start(false, "max_connections_per_source = 1\n", be.port);
	peer_plain(&p1, client());
	peer_write(&p1, a, strlen(a));
	cr_assert(echoes(&p1, "first"));
	/* Same PROXY source (the same socket source for all three). */
	peer_plain(&p2, client());
	peer_write(&p2, a2, strlen(a2));
	cr_assert(closed(p2.fd), "a second connection from 192.0.2.1");
	cr_assert(ferry_log_wait(&fp, "refused a connection from "
	    "192.0.2.1:1001", 1, 10));
	/* Another PROXY source is another source. */
	peer_plain(&p3, client());
	peer_write(&p3, b, strlen(b));
	cr_assert(echoes(&p3, "other"));
	peer_close(&p1);
	peer_close(&p2);
	peer_close(&p3);
	backend_stop(&be);
}

Test(proxy_in, malformed_partial_and_silent_are_closed, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer good;
	int bad, partial, silent, tlsfirst;
	const char *ok = "PROXY TCP4 192.0.2.3 127.0.0.1 7 443\r\n";

	backend_start(&be, false, serve_capture, &cap);
	start(false, "handshake_timeout = 500ms\n", be.port);
	/* A client that is fine, through it all. */
	peer_plain(&good, client());
	peer_write(&good, ok, strlen(ok));
	cr_assert(echoes(&good, "before"));

	bad = client();
	cr_assert_gt(send(bad, "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 33, 0),
	    0);
	cr_assert(closed(bad));
	cr_assert(ferry_log_wait(&fp, "v1: bad port", 1, 10));

	tlsfirst = client();	/* a TLS client that forgot the header */
	cr_assert_eq(send(tlsfirst, "\x16\x03\x01\x02\x00", 5, 0), 5);
	cr_assert(closed(tlsfirst));
	cr_assert(ferry_log_wait(&fp, "not a PROXY protocol header", 1, 10));

	partial = client();
	cr_assert_eq(send(partial, "PROXY TCP4 1.2.", 15, 0), 15);
	silent = client();
	cr_assert(closed(partial));
	cr_assert(closed(silent));
	cr_assert(ferry_log_wait(&fp, "no whole PROXY header within 0.5 s", 2,
	    10));
	cr_assert(echoes(&good, "after"));
	peer_close(&good);
	cr_assert_eq(ferry_metric(&fp, "ferry_proxy_header_failures_total{"
	    "listener=\"web\",mode=\"forward\"}"), 4);
	close(bad);
	close(tlsfirst);
	close(partial);
	close(silent);
	/* None of them reached the backend. */
	cr_assert_eq(be.accepted, 1);
	backend_stop(&be);
}

Test(proxy_in, waiting_sockets_count_against_max_connections,
    .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct capture cap = { 0 };
	struct peer p;
	int silent, over;
	const char *hdr = "PROXY TCP4 192.0.2.9 127.0.0.1 9 443\r\n";

	backend_start(&be, false, serve_capture, &cap);
	start(false, "max_connections = 1\nhandshake_timeout = 2\n", be.port);
	silent = client();	/* holds the one place, sending nothing */
	usleep(200 * 1000);
	over = client();
	cr_assert(closed(over), "a second connection while one waits");
	cr_assert(ferry_log_wait(&fp, "max_connections (1) reached", 1, 10));
	cr_assert_eq(ferry_metric(&fp, "ferry_connections_refused_total{"
	    "listener=\"web\",mode=\"forward\"}"), 1);
	/* Once the silent one is gone, a client gets in. */
	cr_assert(closed(silent));
	peer_plain(&p, client());
	peer_write(&p, hdr, strlen(hdr));
	cr_assert(echoes(&p, "room again"));
	peer_close(&p);
	close(silent);
	close(over);
	backend_stop(&be);
}
