/* tls: see tls.h. */
#define _GNU_SOURCE
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "metrics.h"
#include "peer_id.h"
#include "stream_transport.h"

/* ---- the transport ---- */

/*
 * Records that carry no application data (TLS 1.3 key updates, TLS 1.2
 * renegotiation attempts, alerts, change_cipher_spec) each cost OpenSSL
 * work, a key update the derivation of new keys and an answer, and
 * OpenSSL handles every such record it holds or can read inside one
 * SSL_read: 100,000 key updates sent back to back (2.7 MB) held the event
 * loop for 2.2 s.  So a peer has an allowance of them: FLOOD_CREDITS,
 * refilled by one for every FLOOD_BYTES of data moved either way and for
 * every FLOOD_SECONDS, up to FLOOD_CREDITS again.  The record beyond it
 * closes the connection, in the SSL_read that met it, before OpenSSL
 * handles it: one read does the work of at most FLOOD_CREDITS such
 * records, and one loop iteration (READS_PER_EVENT reads) no more than
 * that and one per FLOOD_BYTES of data it moved.  A key update answered
 * is written to the socket within the read; one that would block makes
 * the read wait for the socket, so answers do not pile up either.  A
 * peer using TLS as meant sends a key update per gigabytes, or per hour.
 * (Empty records are OpenSSL's to count: 33 in a row fail the read.)
 */
#define FLOOD_CREDITS 32
#define FLOOD_BYTES (16 * 1024)
#define FLOOD_SECONDS 1.0

/* What the transport keeps per connection (stream_transport_data). */
struct tls_conn {
	SSL *ssl;
	struct stream *s;		/* for OpenSSL's callbacks */
	int credits;			/* records without data still allowed */
	bool flooded;			/* one too many: the read fails */
	ev_tstamp credit_time;		/* loop time credited up to */
	uint64_t credit_bytes;		/* data bytes credited up to */
	/* Records without data since the handshake, for the log. */
	unsigned handshakes, alerts, others;
};

/* Outside the hooks, which are handed it. */
static struct tls_conn *
conn_of(const struct stream *s)
{
	return stream_transport_data(s);
}

/*
 * The one place OpenSSL results are interpreted.  `ret` is the return of
 * an SSL_* I/O call that did not succeed.
 */
static enum io_result
tls_result(struct stream *s, SSL *ssl, int ret, const char *op)
{
	int e = SSL_get_error(ssl, ret);
	char reason[200];

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return IO_EOF;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (errno == 0)
				return IO_EOF;
			return stream_fail(s, errno == ECONNRESET ||
			    errno == EPIPE ? STREAM_CLOSE_RESET :
			    STREAM_CLOSE_ERROR, "%s: %s", op, strerror(errno));
		}
		/* The error queue says more than errno. */
		__attribute__((fallthrough));
	default:
		tls_error_text(reason, sizeof(reason));
		return stream_fail(s, STREAM_CLOSE_TLS, "%s: %s", op, reason);
	}
}

/*
 * SSL_get_error() needs the error queue empty before the call it judges.
 * ERR_clear_error() walks every slot of the queue whatever it holds (in
 * OpenSSL 3.0 that was a tenth of the instructions a relayed TLS frame
 * cost), so a queue that is already empty, as it almost always is, is
 * left alone.
 */
static inline void
clear_errors(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

static long raw_read_cb(BIO *b, int oper, const char *argp, size_t len,
    int argi, long argl, int ret, size_t *processed);
static void record_cb(int write_p, int version, int content_type,
    const void *buf, size_t len, SSL *ssl, void *arg);

/* The allowance starts full when the handshake is done. */
static void
credits_start(struct stream *s, struct tls_conn *t)
{
	t->credits = FLOOD_CREDITS;
	t->credit_time = stream_now(s);
	t->credit_bytes = stream_bytes_in(s) + stream_bytes_out(s);
	SSL_set_msg_callback_arg(t->ssl, t);
	SSL_set_msg_callback(t->ssl, record_cb);
}

static enum io_result
tls_handshake(struct stream *s, void *tp)
{
	struct tls_conn *t = tp;
	SSL *ssl = t->ssl;
	enum io_result r;
	int ret;

	clear_errors();
	errno = 0;
	ret = SSL_do_handshake(ssl);
	if (ret == 1) {
		/*
		 * Only now: OpenSSL's many control calls on the socket BIO
		 * during a handshake would each go through the callback
		 * (2.8k instructions a handshake).
		 */
		BIO_set_callback_arg(SSL_get_rbio(ssl), (char *)s);
		BIO_set_callback_ex(SSL_get_rbio(ssl), raw_read_cb);
		credits_start(s, t);
		return IO_DONE;
	}
	r = tls_result(s, ssl, ret, "handshake");
	if (r == IO_EOF || r == IO_FAIL) {
		long v = SSL_get_verify_result(ssl);
		const struct tls_ctx *c = SSL_get_app_data(ssl);
		if (r == IO_EOF)
			stream_set_error(s, "handshake: peer closed");
		if (v != X509_V_OK)
			stream_set_error(s, "handshake: certificate: %s",
			    X509_verify_cert_error_string(v));
		/* A client side's failure is its owner's to report. */
		if (tls_ctx_is_server(c))
			log_limited(LOG_INFO, "%s%stls handshake failed: "
			    "peer %s: %s", tls_ctx_name(c),
			    tls_ctx_name(c)[0] ? ": " : "", stream_peer(s),
			    stream_error(s));
	}
	return r;
}

/*
 * Refills the allowance for the time and the data since it was last
 * credited, then takes one record from it; false when there is none.
 */
static bool
spend_credit(struct stream *s, struct tls_conn *t)
{
	ev_tstamp now = stream_now(s);
	uint64_t bytes = stream_bytes_in(s) + stream_bytes_out(s);
	uint64_t by_data = (bytes - t->credit_bytes) / FLOOD_BYTES;
	uint64_t by_time = 0;

	/* The wall clock may step back: credit nothing for it. */
	if (now < t->credit_time)
		t->credit_time = now;
	else
		by_time = (uint64_t)((now - t->credit_time) / FLOOD_SECONDS);
	if (by_data + by_time >= (uint64_t)(FLOOD_CREDITS - t->credits)) {
		t->credits = FLOOD_CREDITS;
		t->credit_time = now;
		t->credit_bytes = bytes;
	} else {
		t->credits += (int)(by_data + by_time);
		t->credit_time += (double)by_time * FLOOD_SECONDS;
		t->credit_bytes += by_data * FLOOD_BYTES;
	}
	if (t->credits == 0)
		return false;
	t->credits--;
	return true;
}

/*
 * OpenSSL's message callback, installed once the handshake is done, for
 * the type of every record received: in its header, or for a TLS 1.3
 * record (whose header says application data) once it is decrypted.
 * Each record's type is seen once, before OpenSSL acts on the record.
 */
static void record_without_data(struct tls_conn *t, SSL *ssl, int type);

static void
record_cb(int write_p, int version, int content_type, const void *buf,
    size_t len, SSL *ssl, void *arg)
{
	int type;

	(void)version;
	if (write_p || len < 1 || (content_type != SSL3_RT_HEADER &&
	    content_type != SSL3_RT_INNER_CONTENT_TYPE))
		return;
	type = *(const unsigned char *)buf;
	if (type != SSL3_RT_APPLICATION_DATA)
		record_without_data(arg, ssl, type);
}

/*
 * Counted and paid for from the allowance.  Not inlined: the data
 * records' path through record_cb (two calls a record) then needs no
 * registers saved for the credit arithmetic.
 */
static __attribute__((noinline)) void
record_without_data(struct tls_conn *t, SSL *ssl, int type)
{
	if (type == SSL3_RT_HANDSHAKE)
		t->handshakes++;
	else if (type == SSL3_RT_ALERT)
		t->alerts++;
	else
		t->others++;
	if (t->flooded || spend_credit(t->s, t))
		return;
	t->flooded = true;
	/*
	 * The way to stop OpenSSL within SSL_read: it drops any record it
	 * reads while the peer is said to have closed, this one included,
	 * and returns.  tls_read() then fails the connection.
	 */
	SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
}

/* The peer's listener name, for logs ("" for none). */
static const char *
listener_name(const struct tls_conn *t)
{
	return tls_ctx_name(SSL_get_app_data(t->ssl));
}

/*
 * A peer closed for flooding: counted and logged here, once (the owner
 * sees a TLS failure, with `what` as its detail).
 */
static enum io_result
flood_fail(struct stream *s, const struct tls_conn *t, const char *what)
{
	const char *name = listener_name(t);

	(void)stream_fail(s, STREAM_CLOSE_TLS, "flood: %s", what);
	if (stream_stats(s) != NULL)
		stream_stats(s)->tls_floods++;
	log_limited(LOG_WARN, "%s%stls flood: peer %s: %s; since the "
	    "handshake: %llu bytes of data, %u handshake, %u alert and %u "
	    "other records: closed", name, name[0] ? ": " : "", stream_peer(s),
	    what,
	    (unsigned long long)(stream_bytes_in(s) + stream_bytes_out(s)),
	    t->handshakes, t->alerts, t->others);
	return IO_FAIL;
}

/*
 * The floods OpenSSL stops by itself, failing the read: empty records and
 * warning alerts, each counted while they come in a row.  NULL for any
 * other failure.
 */
static const char *
library_flood(void)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0 || ERR_GET_LIB(e) != ERR_LIB_SSL)
		return NULL;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_RECORD_TOO_SMALL:
		return "too many empty records in a row";
	case SSL_R_TOO_MANY_WARN_ALERTS:
		return "too many warning alerts in a row";
	}
	return NULL;
}

static enum io_result
tls_read(struct stream *s, void *tp, char *buf, size_t len, size_t *got)
{
	struct tls_conn *t = tp;
	const char *flood;

	clear_errors();
	errno = 0;
	int ret = SSL_read_ex(t->ssl, buf, len, got);
	if (t->flooded) {
		ERR_clear_error();
		return flood_fail(s, t, "records without data beyond the "
		    "allowance");
	}
	if (ret == 1)
		return IO_DONE;
	if ((flood = library_flood()) != NULL) {
		ERR_clear_error();
		return flood_fail(s, t, flood);
	}
	return tls_result(s, t->ssl, ret, "read");
}

static enum io_result
tls_write(struct stream *s, void *tp, const char *buf, size_t len,
    size_t *put)
{
	struct tls_conn *t = tp;

	clear_errors();
	errno = 0;
	int ret = SSL_write_ex(t->ssl, buf, len, put);
	return ret == 1 ? IO_DONE : tls_result(s, t->ssl, ret, "write");
}

/*
 * Raw records read ahead count, not only decrypted bytes (SSL_pending):
 * either way no readiness event will announce them.
 */
static bool
tls_pending(struct stream *s, void *tp)
{
	const struct tls_conn *t = tp;

	(void)s;
	return SSL_has_pending(t->ssl) == 1;
}

/*
 * A socket read finished: whether it filled what OpenSSL asked for (the
 * socket likely holds more; see stream_transport_more).  Returns ret.
 */
static __attribute__((noinline)) long
socket_read_done(BIO *b, size_t len, int ret, size_t *processed)
{
	stream_transport_more((struct stream *)BIO_get_callback_arg(b),
	    ret > 0 && processed != NULL && *processed == len);
	return ret;
}

/*
 * OpenSSL calls it before and after every operation on the socket BIO,
 * control calls included (about 30 per relayed frame): anything but a
 * finished read returns at once, without as much as a register saved.
 */
static long
raw_read_cb(BIO *b, int oper, const char *argp, size_t len, int argi,
    long argl, int ret, size_t *processed)
{
	(void)argp;
	(void)argi;
	(void)argl;
	if (oper != (BIO_CB_READ | BIO_CB_RETURN))
		return ret;
	return socket_read_done(b, len, ret, processed);
}

/* Fails (keeps them) while a record is half read or half written. */
static bool
tls_release(struct stream *s, void *tp)
{
	const struct tls_conn *t = tp;

	(void)s;
	return SSL_free_buffers(t->ssl) == 1;
}

static void
tls_shutdown(struct stream *s, void *tp)
{
	const struct tls_conn *t = tp;
	BIO *sink;

	ERR_clear_error();
	/* close_notify, then FIN: the peer sees a clean end either way. */
	if (SSL_is_init_finished(t->ssl))
		(void)SSL_shutdown(t->ssl);
	ERR_clear_error();
	(void)shutdown(stream_fd(s), SHUT_WR);
	/*
	 * Nothing goes out after close_notify, but the peer may send on (a
	 * half-close), key updates too, and OpenSSL 3.0 answers those that
	 * request it within SSL_read (from the second one on): the write
	 * into the shut socket failed the read with EPIPE, and the pair
	 * closed as a reset, the peer's later bytes lost (a key update
	 * flood too, uncounted).  So OpenSSL writes into a sink from here
	 * on; without memory for one, as before.
	 */
	sink = BIO_new(BIO_s_null());
	if (sink != NULL)
		SSL_set0_wbio(t->ssl, sink);
}

static void
conn_free(struct tls_conn *t)
{
	tls_ctx_unref(SSL_get_app_data(t->ssl));
	SSL_free(t->ssl);
	free(t);
}

static void
tls_close(struct stream *s, void *tp, bool clean)
{
	struct tls_conn *t = tp;

	(void)s;
	if (t == NULL)
		return;
	/* One best-effort close_notify; a close never waits for the peer. */
	if (clean && !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)) {
		ERR_clear_error();
		(void)SSL_shutdown(t->ssl);
	}
	ERR_clear_error();
	conn_free(t);
}

/* The identities of the peer's leaf, once it has verified. */
static bool
tls_peer_ids(const struct stream *s, void *tp, struct peer_ids *out)
{
	SSL *ssl = ((const struct tls_conn *)tp)->ssl;
	X509 *x = SSL_get0_peer_certificate(ssl);

	(void)s;
	if (x == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return false;
	peer_ids_from_cert(out, x);
	return true;
}

static const struct stream_transport tls_transport = {
	.name = "tls",
	.handshake = tls_handshake,
	.read = tls_read,
	.write = tls_write,
	.pending = tls_pending,
	.release = tls_release,
	.shutdown = tls_shutdown,
	.close = tls_close,
	.peer_ids = tls_peer_ids,
};

/* The SSL object on the context's SSL_CTX (SNI may switch a server's). */
static struct tls_conn *
conn_new(struct stream *s, struct tls_ctx *c)
{
	struct tls_conn *t = calloc(1, sizeof(*t));

	ERR_clear_error();
	if (t == NULL)
		return NULL;
	t->ssl = SSL_new(tls_ctx_ssl_ctx(c));
	if (t->ssl == NULL || SSL_set_fd(t->ssl, stream_fd(s)) != 1) {
		SSL_free(t->ssl);
		free(t);
		return NULL;
	}
	SSL_set_app_data(t->ssl, tls_ctx_ref(c));
	t->s = s;
	return t;
}

/*
 * The server side until the client's first byte: no SSL object yet, only
 * a reference to the context (its transport data).  The first
 * SSL_do_handshake allocates the object and its handshake and record
 * buffers, and a client that stays silent (a port scan, a slowloris
 * client, a pool's spare connection) held them until its handshake
 * timeout: 38.7 KiB of RSS per connection, where the stream and its
 * protocol's state are about 1 KiB.
 */
static enum io_result
lazy_handshake(struct stream *s, void *tp)
{
	struct tls_ctx *c = tp;
	struct tls_conn *t;
	ssize_t n;
	char b;

	do
		n = recv(stream_fd(s), &b, 1, MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return IO_WANT_READ;
	/* Bytes, or an EOF or error for OpenSSL to report as it always has. */
	t = conn_new(s, c);
	if (t == NULL) {
		ERR_clear_error();
		return stream_fail(s, STREAM_CLOSE_NOMEM, "handshake: no "
		    "memory for the TLS state");
	}
	SSL_set_accept_state(t->ssl);
	tls_ctx_unref(c);		/* conn_new took its own reference */
	stream_switch_transport(s, &tls_transport, t);
	return tls_handshake(s, t);
}

/* Unreachable: the stream moves no bytes before its handshake is done. */
static enum io_result
lazy_io(struct stream *s)
{
	return stream_fail(s, STREAM_CLOSE_TLS, "TLS I/O before the "
	    "handshake");
}

static enum io_result
lazy_read(struct stream *s, void *tp, char *buf, size_t len, size_t *got)
{
	(void)tp;
	(void)buf;
	(void)len;
	(void)got;
	return lazy_io(s);
}

static enum io_result
lazy_write(struct stream *s, void *tp, const char *buf, size_t len,
    size_t *put)
{
	(void)tp;
	(void)buf;
	(void)len;
	(void)put;
	return lazy_io(s);
}

/*
 * Nothing to give back; a release hook all the same, so the stream
 * marks the transport as holding memory when the handshake starts, and
 * gives the real one's buffers back once it is done.
 */
static bool
lazy_release(struct stream *s, void *tp)
{
	(void)s;
	(void)tp;
	return true;
}

/* No TLS yet, so nothing to say goodbye with: a plain FIN. */
static void
lazy_shutdown(struct stream *s, void *tp)
{
	(void)tp;
	(void)shutdown(stream_fd(s), SHUT_WR);
}

static void
lazy_close(struct stream *s, void *tp, bool clean)
{
	(void)s;
	(void)clean;
	tls_ctx_unref(tp);
}

static const struct stream_transport tls_lazy_transport = {
	.name = "tls",
	.handshake = lazy_handshake,
	.read = lazy_read,
	.write = lazy_write,
	.pending = NULL,
	.release = lazy_release,
	.shutdown = lazy_shutdown,
	.close = lazy_close,
	.peer_ids = NULL,	/* no certificate before the handshake */
};

/* The SSL object, or NULL before the client's first byte or after close. */
static SSL *
live_ssl(const struct stream *s)
{
	return stream_transport_of(s) == &tls_transport &&
	    conn_of(s) != NULL ? conn_of(s)->ssl : NULL;
}

int
tls_stream_accept(struct stream *s, struct tls_ctx *c)
{
	if (!tls_ctx_is_server(c))
		return -1;
	/* The handshake, when the owner asks for I/O, bounded from now. */
	if (stream_install_transport(s, &tls_lazy_transport,
	    tls_ctx_ref(c)) < 0) {
		tls_ctx_unref(c);
		return -1;
	}
	return 0;
}

static bool
is_ip_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 ||
	    inet_pton(AF_INET6, host, buf) == 1;
}

int
tls_stream_connect(struct stream *s, struct tls_ctx *c, const char *host)
{
	struct tls_conn *t;
	SSL *ssl;

	if (tls_ctx_is_server(c) || tls_ctx_ssl_ctx(c) == NULL)
		return -1;
	t = conn_new(s, c);
	if (t == NULL)
		return -1;
	ssl = t->ssl;
	SSL_set_connect_state(ssl);
	if (host != NULL && *host) {
		int ok;
		if (is_ip_literal(host)) {
			ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
			    host);
		} else {
			ok = SSL_set_tlsext_host_name(ssl, host) &&
			    SSL_set1_host(ssl, host);
		}
		if (!ok) {
			conn_free(t);
			return -1;
		}
	}
	/*
	 * The client speaks first: once connected, or now if it is.  Refused
	 * on a stream holding bytes read in the clear (they would pass for
	 * TLS plaintext), or one already TLS or closed.
	 */
	if (stream_install_transport(s, &tls_transport, t) < 0) {
		conn_free(t);
		return -1;
	}
	return 0;
}

bool
tls_stream_is_tls(const struct stream *s)
{
	return live_ssl(s) != NULL ||
	    (stream_transport_of(s) == &tls_lazy_transport &&
	    stream_transport_data(s) != NULL);
}

const unsigned char *
tls_stream_alpn(const struct stream *s, unsigned *len)
{
	const unsigned char *p = NULL;

	*len = 0;
	if (live_ssl(s) != NULL)
		SSL_get0_alpn_selected(live_ssl(s), &p, len);
	return *len ? p : NULL;
}

bool
tls_stream_peer_verified(const struct stream *s)
{
	X509 *x;
	bool ok;

	if (live_ssl(s) == NULL)
		return false;
	x = SSL_get1_peer_certificate(live_ssl(s));
	ok = x != NULL && SSL_get_verify_result(live_ssl(s)) == X509_V_OK;
	X509_free(x);
	return ok;
}

bool
tls_stream_peer_subject(const struct stream *s, char *out, size_t len)
{
	X509 *x;

	if (live_ssl(s) == NULL || len == 0)
		return false;
	x = SSL_get1_peer_certificate(live_ssl(s));
	if (x == NULL)
		return false;
	X509_NAME_oneline(X509_get_subject_name(x), out, (int)len);
	X509_free(x);
	return true;
}

bool
tls_stream_info(const struct stream *s, struct tls_stream_info *out)
{
	SSL *ssl = live_ssl(s);
	X509 *x;

	memset(out, 0, sizeof(*out));
	if (ssl == NULL || !SSL_is_init_finished(ssl))
		return false;
	out->sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	out->version = SSL_get_version(ssl);
	out->cipher = SSL_get_cipher_name(ssl);
	out->verify = SSL_get_verify_result(ssl);
	x = SSL_get1_peer_certificate(ssl);
	if (x != NULL) {
		out->cert = true;
		if (X509_NAME_get_text_by_NID(X509_get_subject_name(x),
		    NID_commonName, out->cn, (int)sizeof(out->cn)) < 0)
			out->cn[0] = '\0';
		X509_free(x);
	}
	return true;
}
