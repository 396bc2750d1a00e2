/*
 * TLS specifics over a real tcpserver: hostile and broken clients, SNI,
 * client certificates, ALPN, versions, records read ahead or decrypted
 * inside OpenSSL, records split across reads, record buffers given back,
 * and the client side of the transport.  The echo server and the client
 * threads are tlscheck.h; floods of records without data are
 * test_tls_records.c, session resumption end to end test_tls_resume.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>

#include "ferryproc.h"
#include "helpers.h"
#include "tlscheck.h"
#include "metrics.h"
#include "netutil.h"
#include "peer_id.h"
#include "tcpserver.h"

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
	/* What the access lists match: the leaf's CN, then its DNS name. */
	cr_assert(sv.has_ids);
	cr_assert_eq(sv.ids.n, 2);
	cr_assert_eq(sv.ids.id[0].kind, PEER_ID_CN);
	cr_assert_str_eq(sv.ids.id[0].value, "ferry-client");
	cr_assert_eq(sv.ids.id[1].kind, PEER_ID_DNS);
	cr_assert_str_eq(sv.ids.id[1].value, "ferry-client");
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
	cr_assert_not(sv.has_ids);
	cr_assert_eq(sv.ids.n, 0);
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

/*
 * Small records, each exactly one read's worth: with read-ahead the
 * kernel's bytes move into OpenSSL as whole records nobody has decrypted
 * yet (SSL_pending() is 0), and the server, which stops after a few reads
 * to let other connections in, must come back for them without a
 * readiness event.
 */
Test(tls, read_ahead_records_delivered, .timeout = 30)
{
	struct srv sv;
	struct stream_opts o;
	struct client c = { .sni = "localhost", .echo_bytes = 500 * 100,
	    .burst_records = 500 };

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

/* ---- records split across reads ---- */

#define SPLIT_RECORDS 6
#define SPLIT_RECORD 1000

struct split_client {
	pthread_t th;
	int port;
	volatile bool half_sent, go_on, done;
	bool ok;
};

static size_t
send_raw(int fd, const unsigned char *p, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, p + done, len - done, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	return done;
}

/*
 * The records are made into memory, then sent by hand: two and a half
 * in one segment, a pause, the rest of the third, then the others a few
 * bytes at a time.
 */
static void *
split_main(void *arg)
{
	struct split_client *c = arg;
	unsigned char out[SPLIT_RECORDS * SPLIT_RECORD];
	unsigned char in[sizeof(out)];
	struct peer p;
	unsigned char *wire;
	long wlen;
	size_t first, at;
	int one = 1;
	int fd = connect_loopback(false, c->port);

	if (fd < 0)
		goto out;
	peer_tls(&p, fd, "localhost", NULL, NULL);
	if (!peer_tls_handshake(&p))
		goto close;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	BIO *mem = BIO_new(BIO_s_mem());
	BIO *sock = SSL_get_wbio(p.ssl);
	BIO_up_ref(sock);
	SSL_set0_wbio(p.ssl, mem);
	fill_pattern(out, sizeof(out), 0, 11);
	for (int i = 0; i < SPLIT_RECORDS; i++)
		if (SSL_write(p.ssl, out + i * SPLIT_RECORD, SPLIT_RECORD) !=
		    SPLIT_RECORD)
			goto close_bio;
	wlen = BIO_get_mem_data(mem, (char **)&wire);
	first = (size_t)wlen / SPLIT_RECORDS * 5 / 2;
	if (send_raw(fd, wire, first) != first)
		goto close_bio;
	c->half_sent = true;
	for (int i = 0; i < 1000 && !c->go_on; i++)
		usleep(10 * 1000);
	for (at = first; at < (size_t)wlen; at += 7) {
		size_t n = (size_t)wlen - at < 7 ? (size_t)wlen - at : 7;
		if (send_raw(fd, wire + at, n) != n)
			goto close_bio;
		usleep(500);
	}
	c->ok = peer_read_exact(&p, in, sizeof(in)) == sizeof(in) &&
	    memcmp(in, out, sizeof(out)) == 0;
close_bio:
	SSL_set0_wbio(p.ssl, sock);
close:
	peer_close(&p);
out:
	c->done = true;
	return NULL;
}

/*
 * With read-ahead OpenSSL holds whatever the kernel had: whole records,
 * which must be delivered at once, and an incomplete one, on which the
 * server must wait for the socket rather than spin (a busy loop would
 * run hundreds of thousands of iterations during the pause, a sleeping
 * one a handful).
 */
Test(tls, records_split_across_reads, .timeout = 30)
{
	struct srv sv;
	struct split_client c = { 0 };
	unsigned iters;

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	c.port = sv.port;
	cr_assert_eq(pthread_create(&c.th, NULL, split_main, &c), 0);
	cr_assert(tloop_run_until(&sv.t, &c.half_sent, 20));
	tloop_run_for(&sv.t, 0.1);
	cr_assert_not_null(sv.last);
	cr_assert_eq(stream_bytes_in(sv.last), 2 * SPLIT_RECORD,
	    "%llu bytes delivered of the two whole records",
	    (unsigned long long)stream_bytes_in(sv.last));
	iters = ev_iteration(sv.t.loop);
	tloop_run_for(&sv.t, 0.3);
	iters = ev_iteration(sv.t.loop) - iters;
	c.go_on = true;
	cr_assert(tloop_run_until(&sv.t, &c.done, 20));
	pthread_join(c.th, NULL);
	cr_assert(c.ok, "the echo of the split records differs");
	cr_assert_lt(iters, 100, "%u loop iterations with half a record "
	    "held", iters);
	srv_stop(&sv);
}

/* ---- record buffers: kept while busy, given back when idle ---- */

struct idle_client {
	pthread_t th;
	int port;
	volatile bool go1, echoed, go2, done;
	bool ok;
};

static bool
wait_flag(volatile bool *flag)
{
	for (int i = 0; i < 2000 && !*flag; i++)
		usleep(10 * 1000);
	return *flag;
}

static void *
idle_main(void *arg)
{
	struct idle_client *c = arg;
	char buf[100];
	struct peer p;
	int fd = connect_loopback(false, c->port);

	if (fd < 0)
		goto out;
	peer_tls(&p, fd, "localhost", NULL, NULL);
	if (!peer_tls_handshake(&p) || !wait_flag(&c->go1))
		goto close;
	memset(buf, 'a', sizeof(buf));
	if (peer_write(&p, buf, sizeof(buf)) != sizeof(buf) ||
	    peer_read_exact(&p, buf, sizeof(buf)) != sizeof(buf))
		goto close;
	c->echoed = true;
	if (!wait_flag(&c->go2))
		goto close;
	memset(buf, 'b', sizeof(buf));
	if (peer_write(&p, buf, sizeof(buf)) != sizeof(buf) ||
	    peer_read_exact(&p, buf, sizeof(buf)) != sizeof(buf))
		goto close;
	c->ok = buf[0] == 'b' && buf[sizeof(buf) - 1] == 'b';
close:
	peer_close(&p);
out:
	c->done = true;
	return NULL;
}

static bool
srv_ready_one(void *arg)
{
	return ((struct srv *)arg)->ready >= 1;
}

/*
 * A connection holds no record buffers once its handshake is done, keeps
 * them while it moves bytes, gives them back after a second idle, and
 * moves bytes again after that.
 */
Test(tls, record_buffers_given_back, .timeout = 30)
{
	struct srv sv;
	struct idle_client c = { 0 };
	struct stream_memory m;

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	c.port = sv.port;
	cr_assert_eq(pthread_create(&c.th, NULL, idle_main, &c), 0);
	cr_assert(tloop_run_pred(&sv.t, srv_ready_one, &sv, 20));
	cr_assert_not_null(sv.last);
	stream_memory(sv.last, &m);
	cr_assert_not(m.transport, "record buffers kept after the "
	    "handshake");
	c.go1 = true;
	cr_assert(tloop_run_until(&sv.t, &c.echoed, 20));
	cr_assert_not_null(sv.last);
	stream_memory(sv.last, &m);
	cr_assert(m.transport, "record buffers given back while busy");
	tloop_run_for(&sv.t, 1.5);
	cr_assert_not_null(sv.last);
	stream_memory(sv.last, &m);
	cr_assert_not(m.transport, "record buffers kept while idle");
	cr_assert_eq(m.read_buffer, 0);
	cr_assert_eq(m.write_buffer, 0);
	c.go2 = true;
	cr_assert(tloop_run_until(&sv.t, &c.done, 20));
	pthread_join(c.th, NULL);
	cr_assert(c.ok, "no echo after the buffers were given back");
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
