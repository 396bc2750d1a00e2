/*
 * TLS specifics over a real tcpserver: hostile and broken clients, SNI,
 * client certificates, ALPN, versions, records read ahead or decrypted
 * inside OpenSSL, records split across reads, record buffers given back,
 * floods of records without data (and key updates paced by data), the
 * client side of the transport, and session resumption end to end.
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
#include "metrics.h"
#include "netutil.h"
#include "peer_id.h"
#include "tcpserver.h"

/* An echo server that remembers how its connections ended. */
struct srv {
	struct tloop t;
	struct tcpserver *ts;
	struct tls_ctx *tls;
	int port;
	int closes;
	int tls_fails, timeouts;
	int handled;
	char last_error[128];
	char tls_error[128];
	char subject[256];
	bool verified;
	struct peer_ids ids;		/* stream_peer_ids() of the newest */
	bool has_ids;
	char alpn[32];
	/* echo read size; small values force SSL_pending */
	size_t chunk;
	struct stream *last;		/* the newest connection, while open */
	volatile int ready;		/* handshakes done */
	struct metrics_conn stats;	/* the listener's counters */
};

static void
srv_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct srv *sv = arg;

	sv->closes++;
	if (sv->last == s)
		sv->last = NULL;
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

	sv->ready++;
	sv->verified = tls_stream_peer_verified(s);
	sv->has_ids = stream_peer_ids(s, &sv->ids);
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
	sv->last = s;
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
	sv->ts = tcpserver_new(&sv->t.sl, "test-tls", &o, sv->tls,
	    srv_handle, sv);
	cr_assert_not_null(sv->ts);
	tcpserver_set_stats(sv->ts, &sv->stats);
	cr_assert_eq(tcpserver_bind(sv->ts, "127.0.0.1", 0, AF_UNSPEC,
	    NETUTIL_DEFAULT_BACKLOG, false, err, sizeof(err)), 0, "%s", err);
	tcpserver_start(sv->ts);
	sv->port = tcpserver_port(sv->ts);
}

static void
srv_stop(struct srv *sv)
{
	tcpserver_free(sv->ts);
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

/* ---- resumption end to end: stateless tickets shared by the workers ---- */

static struct ferry_proc rfp;
static struct backend rbe;
static pid_t frozen;

static void
resume_fini(void)
{
	if (frozen > 0)
		kill(frozen, SIGCONT);
	frozen = 0;
	if (rfp.pid > 0) {
		ferry_stop(&rfp);
		ferry_cleanup(&rfp);
	}
	if (rbe.port > 0)
		backend_stop(&rbe);
}

/*
 * Only `pid` may accept: the other worker is stopped.  pid 0: both run
 * (a worker left stopped would outlive the test, holding its port).
 */
static void
freeze_all_but(const pid_t *w, int n, pid_t pid)
{
	if (frozen > 0)
		kill(frozen, SIGCONT);
	frozen = 0;
	for (int i = 0; i < n && pid != 0; i++)
		if (w[i] != pid) {
			kill(w[i], SIGSTOP);
			frozen = w[i];
		}
}

/*
 * One connection through the forward listener: handshake (offering
 * `sess` if not NULL), one echo (which also takes in a TLS 1.3 ticket),
 * clean close.  Returns the session to resume next time (or NULL).
 */
static SSL_SESSION *
resume_conn(SSL_CTX *ctx, int port, SSL_SESSION *sess, bool *reused)
{
	int fd = connect_loopback(false, port);
	SSL *ssl = SSL_new(ctx);
	SSL_SESSION *next;
	char buf[5];

	cr_assert_geq(fd, 0);
	cr_assert_not_null(ssl);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (sess != NULL)
		cr_assert_eq(SSL_set_session(ssl, sess), 1);
	cr_assert_eq(SSL_connect(ssl), 1, "handshake failed");
	cr_assert_eq(SSL_write(ssl, "hello", 5), 5);
	cr_assert_eq(SSL_read(ssl, buf, 5), 5, "no echo");
	*reused = SSL_session_reused(ssl) == 1;
	next = SSL_get1_session(ssl);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	return next;
}

static SSL_CTX *
resume_ctx(int version, bool tickets)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(ctx);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	cr_assert_eq(SSL_CTX_load_verify_locations(ctx, CERT("ca.pem"),
	    NULL), 1);
	SSL_CTX_set_min_proto_version(ctx, version);
	SSL_CTX_set_max_proto_version(ctx, version);
	if (!tickets)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
}

/*
 * A client resumes with a ticket from one worker at the other (they share
 * the ticket key, made before the fork), and again with the ticket the
 * resumed connection brought.  Without tickets a TLS 1.2 client does not
 * resume: there is no server-side session cache, by design.
 */
static void
resume_check(int version)
{
	char conf[1024];
	pid_t w[4];
	bool reused;
	int n = 0;

	backend_start(&rbe, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "backend = 127.0.0.1:%d\n", rbe.port);
	ferry_start_args(&rfp, conf, 2, NULL);
	int port = ferry_port(&rfp, "web");
	for (int i = 0; i < 1000 && (n = ferry_children(&rfp, w, 4)) != 2;
	    i++)
		usleep(10 * 1000);
	cr_assert_eq(n, 2, "%d workers", n);

	SSL_CTX *ctx = resume_ctx(version, true);
	freeze_all_but(w, 2, w[0]);
	SSL_SESSION *s1 = resume_conn(ctx, port, NULL, &reused);
	cr_assert_not(reused);
	cr_assert_not_null(s1);
	cr_assert(SSL_SESSION_is_resumable(s1), "no ticket came");
	freeze_all_but(w, 2, w[1]);
	SSL_SESSION *s2 = resume_conn(ctx, port, s1, &reused);
	cr_assert(reused, "the other worker did not resume the session");
	cr_assert_not_null(s2);
	SSL_SESSION *s3 = resume_conn(ctx, port, s2, &reused);
	cr_assert(reused, "the ticket of a resumed connection did not "
	    "resume");
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_SESSION_free(s3);
	SSL_CTX_free(ctx);

	if (version == TLS1_2_VERSION) {
		/* Same worker both times: only a cache could resume. */
		ctx = resume_ctx(version, false);
		freeze_all_but(w, 2, w[0]);
		s1 = resume_conn(ctx, port, NULL, &reused);
		s2 = resume_conn(ctx, port, s1, &reused);
		cr_assert_not(reused, "resumed without a ticket: a server "
		    "session cache is on");
		SSL_SESSION_free(s1);
		SSL_SESSION_free(s2);
		SSL_CTX_free(ctx);
	}
	freeze_all_but(w, 2, 0);
}

Test(tls, resumption_tls13_across_workers, .timeout = 60,
    .fini = resume_fini)
{
	resume_check(TLS1_3_VERSION);
}

Test(tls, resumption_tls12_across_workers, .timeout = 60,
    .fini = resume_fini)
{
	resume_check(TLS1_2_VERSION);
}

/* ---- records that carry no data ---- */

/*
 * TLS 1.2 records of any type, written under a client's feet with its own
 * keys (AES-128-GCM, RFC 5288): OpenSSL's client has no way to send a
 * second renegotiation attempt, a warning alert or an empty record.  The
 * keys come from the session's master secret (RFC 5246, 6.3).
 */
struct tls12_writer {
	uint8_t key[16];
	uint8_t salt[4];
	uint64_t seq;
};

static bool
tls12_writer_init(struct tls12_writer *w, SSL *ssl)
{
	uint8_t master[48], seed[13 + 2 * SSL3_RANDOM_SIZE], block[40];
	size_t mlen = SSL_SESSION_get_master_key(SSL_get_session(ssl), master,
	    sizeof(master));
	char digest[] = "SHA256";
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
	EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest,
		    0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, master,
		    mlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed,
		    sizeof(seed)),
		OSSL_PARAM_construct_end(),
	};
	bool ok;

	memcpy(seed, "key expansion", 13);
	SSL_get_server_random(ssl, seed + 13, SSL3_RANDOM_SIZE);
	SSL_get_client_random(ssl, seed + 13 + SSL3_RANDOM_SIZE,
	    SSL3_RANDOM_SIZE);
	ok = kctx != NULL && mlen == sizeof(master) &&
	    EVP_KDF_derive(kctx, block, sizeof(block), params) == 1;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	/* No MAC keys with an AEAD: client key, server key, client IV. */
	memcpy(w->key, block, 16);
	memcpy(w->salt, block + 32, 4);
	w->seq = 1;			/* the client's Finished was 0 */
	return ok;
}

/* One record of `type` holding pt[0..len) into out; returns its size. */
static size_t
tls12_record(struct tls12_writer *w, uint8_t type, const void *pt,
    size_t len, uint8_t *out)
{
	uint8_t nonce[12], aad[13];
	size_t clen = 8 + len + 16;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n;

	memcpy(nonce, w->salt, 4);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(w->seq >> (56 - 8 * i));
	memcpy(aad, nonce + 4, 8);
	aad[8] = type;
	aad[9] = 3;
	aad[10] = 3;
	aad[11] = (uint8_t)(len >> 8);
	aad[12] = (uint8_t)len;
	out[0] = type;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(clen >> 8);
	out[4] = (uint8_t)clen;
	memcpy(out + 5, nonce + 4, 8);	/* the explicit nonce: seq */
	if (c == NULL ||
	    EVP_EncryptInit_ex(c, EVP_aes_128_gcm(), NULL, w->key, nonce) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &n, aad, sizeof(aad)) != 1 ||
	    (len > 0 && EVP_EncryptUpdate(c, out + 13, &n, pt, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(c, out + 13 + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + 13 + len) !=
	    1)
		clen = 0;	/* a record the server will refuse */
	EVP_CIPHER_CTX_free(c);
	w->seq++;
	return 5 + clen;
}

enum flood_kind {
	FLOOD_KEY_UPDATES,		/* TLS 1.3 KeyUpdate(update_requested) */
	FLOOD_HELLOS,			/* TLS 1.2 renegotiation attempts */
	FLOOD_ALERTS,			/* TLS 1.2 warning alerts */
	FLOOD_EMPTY,			/* TLS 1.2 empty application data */
	PACED_KEY_UPDATES,		/* a key update per 64 KiB echoed */
};

/* A client in a thread that sends `n` records of a kind, or echoes n bytes. */
struct flood_client {
	pthread_t th;
	int port;
	enum flood_kind kind;
	size_t n;
	volatile bool done;
	bool handshake_ok;
	bool ping_ok;			/* TLS 1.2: a crafted record echoed */
	bool echo_ok;			/* PACED: every byte came back */
	bool closed;			/* the server closed the connection */
	int key_updates_back;		/* KeyUpdates the server sent */
};

static void
count_key_updates(int write_p, int version, int content_type,
    const void *buf, size_t len, SSL *ssl, void *arg)
{
	(void)version;
	(void)ssl;
	if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
	    *(const uint8_t *)buf == SSL3_MT_KEY_UPDATE)
		(*(int *)arg)++;
}

/* Sends what it can: the server may close before all of it is taken. */
static void
send_until_closed(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, (const char *)buf + done, len - done,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		done += (size_t)n;
	}
}

/* Reads to the end: whether the server closed (not a 10 s timeout). */
static bool
read_to_close(struct peer *p)
{
	char buf[4096];

	if (p->ssl != NULL) {
		size_t got;
		while (SSL_read_ex(p->ssl, buf, sizeof(buf), &got) == 1)
			;
		ERR_clear_error();
	}
	for (;;) {
		ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
		if (n > 0)
			continue;
		return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR);
	}
}

static void
flood_key_updates(struct flood_client *c, struct peer *p)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *data;
	long len;

	if (mem == NULL)
		return;
	SSL_set0_wbio(p->ssl, mem);
	for (size_t i = 0; i < c->n; i++)
		if (SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) != 1 ||
		    SSL_do_handshake(p->ssl) != 1)
			return;
	len = BIO_get_mem_data(mem, &data);
	send_until_closed(p->fd, data, (size_t)len);
	c->closed = read_to_close(p);
}

static void
flood_tls12(struct flood_client *c, struct peer *p)
{
	static const uint8_t hello[4] = { SSL3_MT_CLIENT_HELLO, 0, 0, 0 };
	static const uint8_t alert[2] = { SSL3_AL_WARNING,
	    SSL_AD_USER_CANCELLED };
	struct tls12_writer w;
	uint8_t rec[64], back[4];
	uint8_t *out = malloc(c->n * sizeof(rec));
	size_t len = 0;

	if (out == NULL || !tls12_writer_init(&w, p->ssl))
		goto out;
	/* Our records must pass: one of data first, echoed back. */
	len = tls12_record(&w, SSL3_RT_APPLICATION_DATA, "ping", 4, rec);
	send_until_closed(p->fd, rec, len);
	c->ping_ok = peer_read_exact(p, back, 4) == 4 &&
	    memcmp(back, "ping", 4) == 0;
	len = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (c->kind == FLOOD_HELLOS)
			len += tls12_record(&w, SSL3_RT_HANDSHAKE, hello,
			    sizeof(hello), out + len);
		else if (c->kind == FLOOD_ALERTS)
			len += tls12_record(&w, SSL3_RT_ALERT, alert,
			    sizeof(alert), out + len);
		else
			len += tls12_record(&w, SSL3_RT_APPLICATION_DATA, NULL,
			    0, out + len);
	}
	send_until_closed(p->fd, out, len);
	/* The server's answers (no_renegotiation alerts) are not for
	 * OpenSSL's client, which would take them as fatal: read them raw. */
	SSL_free(p->ssl);
	p->ssl = NULL;
	c->closed = read_to_close(p);
out:
	free(out);
}

static void
paced_key_updates(struct flood_client *c, struct peer *p)
{
	enum { CHUNK = 64 * 1024 };
	uint8_t *out = malloc(CHUNK), *in = malloc(CHUNK);

	c->echo_ok = out != NULL && in != NULL;
	for (size_t off = 0; c->echo_ok && off < c->n; off += CHUNK) {
		fill_pattern(out, CHUNK, off, 5);
		c->echo_ok = SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) ==
		    1 && peer_write(p, out, CHUNK) == CHUNK &&
		    peer_read_exact(p, in, CHUNK) == CHUNK &&
		    check_pattern(in, CHUNK, off, 5);
	}
	free(out);
	free(in);
}

static void *
flood_main(void *arg)
{
	struct flood_client *c = arg;
	struct peer p;
	int fd = connect_loopback(false, c->port);

	if (fd < 0)
		goto out;
	peer_tls(&p, fd, "localhost", NULL, NULL);
	if (c->kind == FLOOD_KEY_UPDATES || c->kind == PACED_KEY_UPDATES) {
		SSL_set_min_proto_version(p.ssl, TLS1_3_VERSION);
		SSL_set_msg_callback(p.ssl, count_key_updates);
		SSL_set_msg_callback_arg(p.ssl, &c->key_updates_back);
	} else {
		SSL_set_max_proto_version(p.ssl, TLS1_2_VERSION);
		SSL_set_cipher_list(p.ssl, "ECDHE-ECDSA-AES128-GCM-SHA256:"
		    "ECDHE-RSA-AES128-GCM-SHA256");
	}
	c->handshake_ok = peer_tls_handshake(&p);
	if (c->handshake_ok) {
		if (c->kind == FLOOD_KEY_UPDATES)
			flood_key_updates(c, &p);
		else if (c->kind == PACED_KEY_UPDATES)
			paced_key_updates(c, &p);
		else
			flood_tls12(c, &p);
	}
	peer_close(&p);
out:
	c->done = true;
	return NULL;
}

static bool
flood_finished(void *arg)
{
	return ((struct flood_client *)arg)->done;
}

static void
flood_run(struct srv *sv, struct flood_client *c)
{
	c->port = sv->port;
	cr_assert_eq(pthread_create(&c->th, NULL, flood_main, c), 0);
	cr_assert(tloop_run_pred(&sv->t, flood_finished, c, 25),
	    "the flooding client did not finish");
	pthread_join(c->th, NULL);
	cr_assert(c->handshake_ok);
}

/*
 * 1,000 KeyUpdate(update_requested) records back to back: the server
 * handles the allowance (32, answering each with its own key update),
 * then closes the connection with a flood error, counted for its
 * listener, and goes on serving others.
 */
Test(tls, key_update_flood_closed_at_allowance, .timeout = 30)
{
	struct srv sv;
	struct flood_client f = { .kind = FLOOD_KEY_UPDATES, .n = 1000 };
	struct client good = { .sni = "localhost", .echo_bytes = 100000 };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	flood_run(&sv, &f);
	cr_assert(f.closed, "the flooder was not closed");
	cr_assert_eq(sv.tls_fails, 1);
	cr_assert(strstr(sv.tls_error, "flood") != NULL, "%s", sv.tls_error);
	cr_assert_eq(sv.stats.tls_floods, 1);
	/*
	 * It handled no more than the allowance (and a refill or two, if a
	 * second passed).  Fewer may arrive: closing on the unread flood
	 * resets the connection, and the kernel drops what it had not sent.
	 */
	cr_assert_leq(f.key_updates_back, 34, "the server answered %d key "
	    "updates", f.key_updates_back);
	client_start(&good, sv.port);
	client_wait(&sv, &good);
	cr_assert(good.echo_ok);
	cr_assert_eq(sv.stats.tls_floods, 1);
	srv_stop(&sv);
}

/*
 * TLS 1.2: renegotiation attempts (each answered with a no_renegotiation
 * alert, and the connection went on), warning alerts and empty records,
 * each a flood closed and counted.  OpenSSL itself ends the last two
 * after 5 and 32 in a row; they count as floods all the same.
 */
Test(tls, tls12_floods_closed, .timeout = 60)
{
	static const struct {
		enum flood_kind kind;
		size_t n;
		const char *name;
	} kinds[] = {
		{ FLOOD_HELLOS, 1000, "renegotiation attempts" },
		{ FLOOD_ALERTS, 50, "warning alerts" },
		{ FLOOD_EMPTY, 200, "empty records" },
	};
	struct srv sv;

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		struct flood_client f = { .kind = kinds[i].kind,
		    .n = kinds[i].n };
		flood_run(&sv, &f);
		cr_assert(f.ping_ok, "%s: the crafted record was refused (%s)",
		    kinds[i].name, sv.tls_error);
		cr_assert(f.closed, "%s: the flooder was not closed",
		    kinds[i].name);
		cr_assert(strstr(sv.tls_error, "flood") != NULL, "%s: %s",
		    kinds[i].name, sv.tls_error);
		cr_assert_eq(sv.stats.tls_floods, i + 1, "%s: %llu floods "
		    "counted", kinds[i].name,
		    (unsigned long long)sv.stats.tls_floods);
	}
	srv_stop(&sv);
}

/*
 * A peer that asks for a key update every 64 KiB of an 8 MB echo (128
 * of them, four times the allowance) pays for each with data: it is
 * served to the end and never taken for a flood.
 */
Test(tls, key_updates_paced_by_data_kept, .timeout = 60)
{
	struct srv sv;
	struct flood_client c = { .kind = PACED_KEY_UPDATES, .n = 8 << 20 };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	flood_run(&sv, &c);
	cr_assert(c.echo_ok, "the echo broke off (%s)", sv.last_error);
	cr_assert_eq(c.key_updates_back, 128);
	cr_assert_eq(sv.tls_fails, 0, "%s", sv.tls_error);
	cr_assert_eq(sv.stats.tls_floods, 0);
	srv_stop(&sv);
}
