/*
 * PROXY v2 TLVs sent to the backend (proxy_tlvs = on, forward_proxy.h):
 * the backend of this test reads the header and its TLVs as HAProxy's
 * specification lays them out, for a TLS client with SNI, ALPN and a
 * client certificate, one without a certificate, and a plain listener.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

static const unsigned char sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

/* What the backend found in the header. */
struct tlvs {
	volatile bool got;
	unsigned char fam;
	char alpn[64], authority[256], version[64], cn[128], cipher[128];
	bool ssl;
	unsigned char client;
	unsigned long verify;
	int unknown;		/* TLVs of other types */
};

static void
copy(char *dst, size_t cap, const unsigned char *v, size_t n)
{
	cr_assert_lt(n, cap);
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* The SSL TLV's value: client, verify, sub-TLVs. */
static void
parse_ssl(struct tlvs *t, const unsigned char *v, size_t n)
{
	cr_assert_geq(n, 5);
	t->ssl = true;
	t->client = v[0];
	t->verify = (unsigned long)v[1] << 24 | v[2] << 16 | v[3] << 8 | v[4];
	for (size_t at = 5; at < n;) {
		cr_assert_leq(at + 3, n, "sub-TLV head past the SSL TLV");
		size_t len = (size_t)v[at + 1] << 8 | v[at + 2];
		cr_assert_leq(at + 3 + len, n, "sub-TLV past the SSL TLV");
		const unsigned char *s = v + at + 3;
		if (v[at] == 0x21)
			copy(t->version, sizeof(t->version), s, len);
		else if (v[at] == 0x22)
			copy(t->cn, sizeof(t->cn), s, len);
		else if (v[at] == 0x23)
			copy(t->cipher, sizeof(t->cipher), s, len);
		else
			t->unknown++;
		at += 3 + len;
	}
}

static void
serve_tlvs(int fd, void *arg)
{
	struct tlvs *t = arg;
	unsigned char h[1100];
	size_t alen, at;

	if (recv(fd, h, 16, MSG_WAITALL) != 16 || memcmp(h, sig, 12) != 0)
		return;
	alen = (size_t)h[14] << 8 | h[15];
	if (alen > sizeof(h) - 16 || recv(fd, h + 16, alen, MSG_WAITALL) !=
	    (ssize_t)alen)
		return;
	t->fam = h[13];
	at = 16 + (h[13] == 0x11 ? 12 : h[13] == 0x21 ? 36 : 0);
	while (at < 16 + alen) {
		size_t len = (size_t)h[at + 1] << 8 | h[at + 2];
		const unsigned char *v = h + at + 3;
		cr_assert_leq(at + 3 + len, 16 + alen, "TLV past the header");
		if (h[at] == 0x01)
			copy(t->alpn, sizeof(t->alpn), v, len);
		else if (h[at] == 0x02)
			copy(t->authority, sizeof(t->authority), v, len);
		else if (h[at] == 0x20)
			parse_ssl(t, v, len);
		else
			t->unknown++;
		at += 3 + len;
	}
	t->got = true;
	backend_echo(fd, NULL);
}

static void
start(bool tls, int port)
{
	char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n"
	    "proxy_protocol = v2\n"
	    "proxy_tlvs = on\n"
	    "%s", port, tls ? "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n"
	    "alpn = h2,http/1.1\n"
	    "client_ca = " CERT("ca.pem") "\n"
	    "verify_client = optional\n" : "");
	ferry_start(&fp, conf);
}

static void
through(struct peer *p)
{
	char buf[8];

	cr_assert_eq(peer_write(p, "tlv!", 4), 4);
	cr_assert_eq(peer_read_exact(p, buf, 4), 4);
	cr_assert_eq(memcmp(buf, "tlv!", 4), 0);
}

Test(proxy_tlv, tls_client_with_certificate, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct tlvs t = { 0 };
	struct peer p;
	int fd;

	backend_start(&be, false, serve_tlvs, &t);
	start(true, be.port);
	fd = connect_loopback(false, ferry_port(&fp, "web"));
	peer_tls(&p, fd, NULL, CERT("client.pem"), CERT("client.key"));
	SSL_set_tlsext_host_name(p.ssl, "tlv.example.com");
	SSL_set_alpn_protos(p.ssl, (const unsigned char *)"\x02h2", 3);
	cr_assert(peer_tls_handshake(&p));
	through(&p);
	cr_assert(t.got);
	cr_assert_eq(t.fam, 0x11);
	cr_assert_str_eq(t.alpn, "h2");
	cr_assert_str_eq(t.authority, "tlv.example.com");
	cr_assert(t.ssl);
	cr_assert_eq(t.client, 0x07, "client flags %#x", t.client);
	cr_assert_eq(t.verify, 0);
	cr_assert_str_eq(t.version, SSL_get_version(p.ssl));
	cr_assert_str_eq(t.cipher, SSL_get_cipher_name(p.ssl));
	cr_assert_str_eq(t.cn, "ferry-client");
	cr_assert_eq(t.unknown, 0);
	peer_close(&p);
	backend_stop(&be);
}

Test(proxy_tlv, tls_client_without_certificate, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct tlvs t = { 0 };
	struct peer p;
	int fd;

	backend_start(&be, false, serve_tlvs, &t);
	start(true, be.port);
	fd = connect_loopback(false, ferry_port(&fp, "web"));
	peer_tls(&p, fd, NULL, NULL, NULL);
	cr_assert(peer_tls_handshake(&p));
	through(&p);
	cr_assert(t.got);
	cr_assert_str_eq(t.alpn, "");
	cr_assert_str_eq(t.authority, "");
	cr_assert(t.ssl);
	cr_assert_eq(t.client, 0x01);
	cr_assert_neq(t.verify, 0, "no certificate, yet verified");
	cr_assert_str_eq(t.cn, "");
	cr_assert_str_eq(t.version, SSL_get_version(p.ssl));
	peer_close(&p);
	backend_stop(&be);
}

Test(proxy_tlv, plain_client_gets_no_ssl_tlv, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct tlvs t = { 0 };
	struct peer p;

	backend_start(&be, false, serve_tlvs, &t);
	start(false, be.port);
	peer_plain(&p, connect_loopback(false, ferry_port(&fp, "web")));
	through(&p);
	cr_assert(t.got);
	cr_assert_not(t.ssl);
	cr_assert_str_eq(t.alpn, "");
	cr_assert_eq(t.unknown, 0);
	peer_close(&p);
	backend_stop(&be);
}
