/*
 * TLS specifics over a real tcpserver: hostile and broken clients, SNI,
 * client certificates, ALPN, versions, records already decrypted inside
 * OpenSSL, and the client side of the transport.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "helpers.h"
#include "netutil.h"
#include "tcpserver.h"

/* An echo server that remembers how its connections ended. */
struct srv {
	struct tloop t;
	struct tcpserver ts;
	struct tls_ctx *tls;
	int port;
	int closes;
	int tls_fails, timeouts;
	int handled;
	char last_error[128];
	char tls_error[128];
	char subject[256];
	bool verified;
	char alpn[32];
	/* echo read size; small values force SSL_pending */
	size_t chunk;
};

static void
srv_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct srv *sv = arg;

	sv->closes++;
	if (why == STREAM_CLOSE_TLS) {
		sv->tls_fails++;
		snprintf(sv->tls_error, sizeof(sv->tls_error), "%s",
		    stream_error(s));
	}
	if (why == STREAM_CLOSE_TIMEOUT)
		sv->timeouts++;
	snprintf(sv->last_error, sizeof(sv->last_error), "%s",
	    stream_error(s));
}

static void
srv_echo(struct stream *s, const char *d, size_t n, void *arg)
{
	struct srv *sv = arg;

	stream_write(s, d, n, NULL);
	stream_read_bytes(s, sv->chunk, true, srv_echo);
}

static void
srv_ready(struct stream *s, void *arg)
{
	struct srv *sv = arg;
	unsigned len;
	const unsigned char *p = tls_stream_alpn(s, &len);

	sv->verified = tls_stream_peer_verified(s);
	if (!tls_stream_peer_subject(s, sv->subject, sizeof(sv->subject)))
		sv->subject[0] = '\0';
	if (p != NULL && len < sizeof(sv->alpn)) {
		memcpy(sv->alpn, p, len);
		sv->alpn[len] = '\0';
	}
	stream_read_bytes(s, sv->chunk, true, srv_echo);
}

static void
srv_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	struct srv *sv = arg;

	(void)sa;
	(void)len;
	sv->handled++;
	stream_set_callbacks(s, srv_closed, sv);
	stream_wait_for_handshake(s, srv_ready);
}

static void
srv_start(struct srv *sv, enum tls_verify verify, double hs_timeout,
    const struct stream_opts *opts)
{
	struct stream_opts o;
	char err[256];

	memset(sv, 0, sizeof(*sv));
	sv->chunk = 65536;
	tloop_init(&sv->t);
	if (opts != NULL)
		o = *opts;
	else
		stream_opts_default(&o);
	o.handshake_timeout = hs_timeout;
	sv->tls = test_server_ctx(verify);
	tcpserver_init(&sv->ts, &sv->t.sl, "test-tls", &o, sv->tls,
	    srv_handle, sv);
	cr_assert_eq(tcpserver_listen(&sv->ts, "127.0.0.1", 0, err,
	    sizeof(err)), 0, "%s", err);
	sv->port = tcpserver_port(&sv->ts);
}

static void
srv_stop(struct srv *sv)
{
	tcpserver_destroy(&sv->ts);
	tls_ctx_unref(sv->tls);
	/* Close whatever is left and check every stream was freed. */
	tloop_run_for(&sv->t, 0.05);
	tloop_destroy(&sv->t);
}

/* A client in a thread: connect, handshake, optional echo check. */
struct client {
	pthread_t th;
	int port;
	const char *sni, *cert, *key;
	int max_version;		/* 0: any */
	const char *ciphers;		/* TLS 1.2 list to offer */
	const char *alpn;		/* wire format */
	size_t alpn_len;
	size_t echo_bytes;		/* 0: handshake only */
	size_t burst_records;		/* records written back to back */
	volatile bool done;
	bool handshake_ok, echo_ok;
	char peer_cn[128];
	char alpn_got[32];
};

static void *
client_main(void *arg)
{
	struct client *c = arg;
	struct peer p;
	int fd = connect_loopback(false, c->port);

	if (fd < 0)
		goto out;
	peer_tls(&p, fd, c->sni, c->cert, c->key);
	if (c->max_version)
		SSL_set_max_proto_version(p.ssl, c->max_version);
	if (c->ciphers) {
		SSL_set_max_proto_version(p.ssl, TLS1_2_VERSION);
		SSL_set_cipher_list(p.ssl, c->ciphers);
	}
	if (c->alpn)
		SSL_set_alpn_protos(p.ssl, (const unsigned char *)c->alpn,
		    (unsigned)c->alpn_len);
	c->handshake_ok = peer_tls_handshake(&p);
	/* TLS 1.3 reports a refused client certificate on the first read. */
	if (c->handshake_ok && c->echo_bytes == 0) {
		char b;
		SSL_write(p.ssl, "x", 1);
		c->handshake_ok = peer_read(&p, &b, 1) == 1;
	}
	if (c->handshake_ok) {
		X509 *x = SSL_get1_peer_certificate(p.ssl);
		if (x != NULL) {
			X509_NAME_get_text_by_NID(X509_get_subject_name(x),
			    NID_commonName, c->peer_cn, sizeof(c->peer_cn));
			X509_free(x);
		}
		const unsigned char *a;
		unsigned alen;
		SSL_get0_alpn_selected(p.ssl, &a, &alen);
		if (alen > 0 && alen < sizeof(c->alpn_got)) {
			memcpy(c->alpn_got, a, alen);
			c->alpn_got[alen] = '\0';
		}
	}
	if (c->handshake_ok && c->echo_bytes > 0) {
		uint8_t *out = malloc(c->echo_bytes), *in = malloc(c->echo_bytes);
		fill_pattern(out, c->echo_bytes, 0, 9);
		if (c->burst_records > 0) {
			/* Many records in one burst, then wait for all back. */
			size_t per = c->echo_bytes / c->burst_records;
			for (size_t i = 0; i < c->burst_records; i++)
				peer_write(&p, out + i * per, per);
		} else {
			peer_write(&p, out, c->echo_bytes);
		}
		c->echo_ok = peer_read_exact(&p, in, c->echo_bytes) ==
		    c->echo_bytes && memcmp(in, out, c->echo_bytes) == 0;
		free(out);
		free(in);
	}
	peer_close(&p);
out:
	c->done = true;
	return NULL;
}

static void
client_start(struct client *c, int port)
{
	c->port = port;
	cr_assert_eq(pthread_create(&c->th, NULL, client_main, c), 0);
}

static bool
client_finished(void *arg)
{
	return ((struct client *)arg)->done;
}

static void
client_wait(struct srv *sv, struct client *c)
{
	cr_assert(tloop_run_pred(&sv->t, client_finished, c, 20),
	    "client did not finish");
	pthread_join(c->th, NULL);
}

Test(tls, plaintext_client_is_closed_others_served, .timeout = 30)
{
	struct srv sv;
	struct client good = { .sni = "localhost", .echo_bytes = 100000 };
	char buf[256];

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	int fd = connect_loopback(false, sv.port);
	cr_assert_geq(fd, 0);
	const char *req = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
	cr_assert_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	client_start(&good, sv.port);
	client_wait(&sv, &good);
	cr_assert(good.echo_ok, "the TLS client was not served");
	tloop_run_for(&sv.t, 0.2);
	/* The plaintext client gets an alert or nothing, then the close. */
	long n, total = 0;
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		total += n;
	cr_assert(n == 0 || errno == ECONNRESET, "not closed: %s",
	    strerror(errno));
	cr_assert_lt(total, 64, "plaintext client got %ld bytes", total);
	cr_assert_eq(sv.tls_fails, 1, "tls failures: %d", sv.tls_fails);
	cr_assert(strstr(sv.tls_error, "handshake") != NULL, "%s",
	    sv.tls_error);
	close(fd);
	srv_stop(&sv);
}

static bool
two_timeouts(void *arg)
{
	return ((struct srv *)arg)->timeouts >= 2;
}

Test(tls, stalled_handshake_times_out, .timeout = 30)
{
	struct srv sv;
	struct client good = { .sni = "localhost", .echo_bytes = 1000 };
	/* The first bytes of a ClientHello, then silence. */
	static const unsigned char partial[] = { 0x16, 0x03, 0x01, 0x02, 0x00,
	    0x01, 0x00, 0x01, 0xfc, 0x03, 0x03 };
	char b;

	srv_start(&sv, TLS_VERIFY_NONE, 0.5, NULL);
	int silent = connect_loopback(false, sv.port);
	int stalled = connect_loopback(false, sv.port);
	cr_assert(silent >= 0 && stalled >= 0);
	send(stalled, partial, sizeof(partial), 0);
	client_start(&good, sv.port);
	client_wait(&sv, &good);
	cr_assert(good.echo_ok);
	cr_assert(tloop_run_pred(&sv.t, two_timeouts, &sv, 10),
	    "timeouts: %d", sv.timeouts);
	cr_assert_leq(recv(silent, &b, 1, 0), 0);
	cr_assert_leq(recv(stalled, &b, 1, 0), 0);
	close(silent);
	close(stalled);
	srv_stop(&sv);
}

Test(tls, sni_selects_certificate, .timeout = 30)
{
	struct srv sv;
	struct client a = { .sni = "localhost" };
	struct client b = { .sni = "other.test" };
	struct client c = { .sni = NULL };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	client_start(&a, sv.port);
	client_wait(&sv, &a);
	client_start(&b, sv.port);
	client_wait(&sv, &b);
	client_start(&c, sv.port);
	client_wait(&sv, &c);
	cr_assert(a.handshake_ok && b.handshake_ok && c.handshake_ok);
	cr_assert_str_eq(a.peer_cn, "localhost");
	cr_assert_str_eq(b.peer_cn, "other.test");
	cr_assert_str_eq(c.peer_cn, "localhost", "no SNI: default cert");
	srv_stop(&sv);
}

Test(tls, client_certificate_required, .timeout = 30)
{
	struct srv sv;
	struct client none = { .sni = "localhost" };
	struct client rogue = { .sni = "localhost",
	    .cert = CERT("rogue-client.pem"), .key = CERT("rogue-client.key") };
	struct client good = { .sni = "localhost", .echo_bytes = 1000,
	    .cert = CERT("client.pem"), .key = CERT("client.key") };

	srv_start(&sv, TLS_VERIFY_REQUIRED, 5, NULL);
	client_start(&none, sv.port);
	client_wait(&sv, &none);
	cr_assert_not(none.handshake_ok, "served without a certificate");
	client_start(&rogue, sv.port);
	client_wait(&sv, &rogue);
	cr_assert_not(rogue.handshake_ok || rogue.echo_ok,
	    "served with a certificate from an unknown CA");
	client_start(&good, sv.port);
	client_wait(&sv, &good);
	cr_assert(good.echo_ok);
	cr_assert(sv.verified);
	cr_assert(strstr(sv.subject, "ferry-client") != NULL, "%s",
	    sv.subject);
	cr_assert_geq(sv.tls_fails, 2);
	srv_stop(&sv);
}

Test(tls, client_certificate_optional, .timeout = 30)
{
	struct srv sv;
	struct client none = { .sni = "localhost", .echo_bytes = 100 };

	srv_start(&sv, TLS_VERIFY_OPTIONAL, 5, NULL);
	client_start(&none, sv.port);
	client_wait(&sv, &none);
	cr_assert(none.echo_ok);
	cr_assert_not(sv.verified);
	srv_stop(&sv);
}

Test(tls, alpn_negotiated, .timeout = 30)
{
	struct srv sv;
	struct client c = { .sni = "localhost", .echo_bytes = 10,
	    .alpn = "\x02h2\x07" "ferry/1", .alpn_len = 11 };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	client_start(&c, sv.port);
	client_wait(&sv, &c);
	cr_assert(c.echo_ok);
	cr_assert_str_eq(c.alpn_got, "ferry/1");
	cr_assert_str_eq(sv.alpn, "ferry/1");
	srv_stop(&sv);
}

Test(tls, old_versions_and_weak_ciphers_refused, .timeout = 30)
{
	struct srv sv;
	struct client v11 = { .sni = "localhost", .max_version =
	    TLS1_1_VERSION };
	struct client weak = { .sni = "localhost", .ciphers =
	    "AES128-SHA:DES-CBC3-SHA" };
	struct client v12 = { .sni = "localhost", .echo_bytes = 10,
	    .max_version = TLS1_2_VERSION };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	client_start(&v11, sv.port);
	client_wait(&sv, &v11);
	cr_assert_not(v11.handshake_ok, "TLS 1.1 accepted");
	client_start(&weak, sv.port);
	client_wait(&sv, &weak);
	cr_assert_not(weak.handshake_ok, "a non-forward-secret cipher "
	    "was accepted");
	client_start(&v12, sv.port);
	client_wait(&sv, &v12);
	cr_assert(v12.echo_ok, "TLS 1.2 with a modern cipher refused");
	srv_stop(&sv);
}

/*
 * Many records in one burst with tiny reads and a small buffer: the
 * server stops reading the socket with plaintext still inside OpenSSL,
 * and must deliver it without a new readiness event.
 */
Test(tls, pending_records_delivered, .timeout = 30)
{
	struct srv sv;
	struct stream_opts o;
	struct client c = { .sni = "localhost", .echo_bytes = 200 * 1000,
	    .burst_records = 40 };	/* 5000-byte records > the buffer */

	stream_opts_default(&o);
	o.read_chunk_size = 100;
	o.max_buffer_size = 4096;
	srv_start(&sv, TLS_VERIFY_NONE, 5, &o);
	sv.chunk = 300;
	client_start(&c, sv.port);
	client_wait(&sv, &c);
	cr_assert(c.echo_ok, "records stranded inside OpenSSL");
	srv_stop(&sv);
}

/* ---- the client side: stream_connect + tls_stream_connect ---- */

struct cside {
	volatile bool ready, closed;
	enum stream_close_reason why;
	char error[160];
	char got[8];
};

static void
cside_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct cside *c = arg;

	c->why = why;
	snprintf(c->error, sizeof(c->error), "%s", stream_error(s));
	c->closed = true;
}

static void
cside_read(struct stream *s, const char *d, size_t n, void *arg)
{
	struct cside *c = arg;

	memcpy(c->got, d, n);
	c->ready = true;
	stream_close(s, STREAM_CLOSE_LOCAL);
}

static void
client_side(struct srv *sv, const char *host, struct cside *c)
{
	struct tls_client_opts co = { .ca_file = CERT("ca.pem"),
	    .verify = true };
	struct sockaddr_storage ss;
	socklen_t len;
	char err[256];
	struct tls_ctx *ctx = tls_ctx_new_client(&co, err, sizeof(err));

	cr_assert_not_null(ctx, "%s", err);
	cr_assert_eq(netutil_resolve("127.0.0.1", sv->port, &ss, &len, err,
	    sizeof(err)), 0);
	struct stream *s = stream_connect(&sv->t.sl, (struct sockaddr *)&ss,
	    len, NULL);
	cr_assert_not_null(s);
	cr_assert_eq(tls_stream_connect(s, ctx, host), 0);
	tls_ctx_unref(ctx);	/* the stream holds its own reference */
	stream_set_callbacks(s, cside_closed, c);
	stream_write(s, "hello", 5, NULL);
	stream_read_bytes(s, 5, false, cside_read);
	cr_assert(tloop_run_until(&sv->t, &c->closed, 10));
}

Test(tls, client_stream_verifies_server, .timeout = 30)
{
	struct srv sv;
	struct cside ok = { 0 }, bad = { 0 };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	client_side(&sv, "localhost", &ok);
	cr_assert(ok.ready, "no echo: %s", ok.error);
	cr_assert_eq(memcmp(ok.got, "hello", 5), 0);
	client_side(&sv, "wrong.example", &bad);
	cr_assert_not(bad.ready, "a certificate for another name passed");
	cr_assert_eq(bad.why, STREAM_CLOSE_TLS, "%s",
	    stream_close_reason_str(bad.why));
	cr_assert(strstr(bad.error, "certificate") != NULL, "%s", bad.error);
	srv_stop(&sv);
}

Test(tls, connect_refused_reported, .timeout = 30)
{
	struct tloop t;
	struct cside c = { 0 };
	struct sockaddr_storage ss;
	socklen_t len;
	char err[128];
	int port;
	int lfd = listen_loopback(false, &port);

	close(lfd);	/* nobody listens there now */
	tloop_init(&t);
	netutil_resolve("127.0.0.1", port, &ss, &len, err, sizeof(err));
	struct stream *s = stream_connect(&t.sl, (struct sockaddr *)&ss, len,
	    NULL);
	cr_assert_not_null(s);
	stream_set_callbacks(s, cside_closed, &c);
	stream_write(s, "x", 1, NULL);
	cr_assert(tloop_run_until(&t, &c.closed, 10));
	cr_assert_eq(c.why, STREAM_CLOSE_CONNECT);
	cr_assert(strstr(c.error, "refused") != NULL, "%s", c.error);
	tloop_destroy(&t);
}
