/* tls: see tls.h. */
#define _GNU_SOURCE
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "metrics.h"
#include "stream_transport.h"

/* Mozilla's "intermediate" TLS 1.2 list: forward secrecy, AEAD only. */
#define DEFAULT_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/*
 * TLS 1.3, in Mozilla's order: AES-128-GCM first.  OpenSSL's own order
 * puts AES-256-GCM with SHA-384 first, whose key schedule and transcript
 * hashes run SHA-512 in software; SHA-256 has CPU instructions (SHA-NI)
 * and in any case cost a full handshake 85k fewer instructions (2.60M ->
 * 2.51M, callgrind, X25519 + ECDSA P-256).
 */
#define DEFAULT_CIPHERSUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:" \
	"TLS_CHACHA20_POLY1305_SHA256"
#define DEFAULT_GROUPS "X25519:P-256:P-384"

struct sni_entry {
	SSL_CTX *ctx;
	char **names;		/* DNS names (SAN, else CN); "*.x" wildcards */
	size_t nnames;
};

struct tls_ctx {
	int refs;
	bool server;
	struct sni_entry *certs;	/* certs[0].ctx is the default */
	size_t ncerts;
	SSL_CTX *client;		/* client contexts have just this */
	unsigned char alpn[256];	/* wire format */
	size_t alpn_len;
	char name[64];			/* the listener, for logs ("" = none) */
};

/* ---- errors ---- */

/* OpenSSL's queued errors as text (the last, most specific, wins). */
static void
ssl_errors(char *out, size_t len)
{
	unsigned long e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0) {
		snprintf(out, len, "unknown OpenSSL error");
		return;
	}
	ERR_error_string_n(last, out, len);
}

static void
ctx_err(char *err, size_t errlen, const char *what, const char *file)
{
	char reason[200];

	ssl_errors(reason, sizeof(reason));
	snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "",
	    file ? file : "", reason);
}

static void
fault(struct tls_fault *f, enum tls_opt opt, size_t index)
{
	if (f != NULL) {
		f->opt = opt;
		f->index = index;
	}
}

/* ---- contexts ---- */

static int
alpn_wire(const char *list, unsigned char *out, size_t outlen, size_t *len)
{
	size_t n = 0;
	const char *p = list;

	while (*p) {
		const char *comma = strchr(p, ',');
		size_t l = comma ? (size_t)(comma - p) : strlen(p);
		if (l == 0 || l > 255 || n + 1 + l > outlen)
			return -1;
		out[n++] = (unsigned char)l;
		memcpy(out + n, p, l);
		n += l;
		p += l;
		if (*p == ',')
			p++;
	}
	*len = n;
	return 0;
}

static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	struct tls_ctx *c = arg;
	unsigned char *sel;

	(void)ssl;
	if (SSL_select_next_proto(&sel, outlen, c->alpn,
	    (unsigned)c->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static bool
name_matches(const char *pattern, const char *name)
{
	if (strcasecmp(pattern, name) == 0)
		return true;
	/* "*.example.com" covers exactly one label. */
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = strchr(name, '.');
		return dot != NULL && dot != name &&
		    strcasecmp(pattern + 1, dot) == 0;
	}
	return false;
}

static int
servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_ctx *c = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	if (name == NULL || c->ncerts < 2)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < c->ncerts; i++)
		for (size_t j = 0; j < c->certs[i].nnames; j++)
			if (name_matches(c->certs[i].names[j], name)) {
				if (i > 0)
					SSL_set_SSL_CTX(ssl, c->certs[i].ctx);
				return SSL_TLSEXT_ERR_OK;
			}
	/* Unknown name: the default certificate, as browsers expect. */
	return SSL_TLSEXT_ERR_OK;
}

static int
add_name(struct sni_entry *e, const char *name, size_t len)
{
	char **names = realloc(e->names, (e->nnames + 1) * sizeof(*names));
	if (names == NULL)
		return -1;
	e->names = names;
	names[e->nnames] = strndup(name, len);
	if (names[e->nnames] == NULL)
		return -1;
	e->nnames++;
	return 0;
}

/* The DNS names a certificate serves: its SANs, else its CN. */
static int
collect_names(struct sni_entry *e)
{
	X509 *x = SSL_CTX_get0_certificate(e->ctx);
	GENERAL_NAMES *sans;
	int rc = 0;

	if (x == NULL)
		return 0;
	sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	if (sans != NULL) {
		for (int i = 0; i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
			GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
			if (g->type != GEN_DNS)
				continue;
			rc = add_name(e, (const char *)ASN1_STRING_get0_data(
			    g->d.dNSName), (size_t)ASN1_STRING_length(
			    g->d.dNSName));
		}
		GENERAL_NAMES_free(sans);
	}
	if (e->nnames == 0 && rc == 0) {
		char cn[256];
		int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x),
		    NID_commonName, cn, sizeof(cn));
		if (n > 0)
			rc = add_name(e, cn, (size_t)n);
	}
	return rc;
}

static void
common_options(SSL_CTX *ctx)
{
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	/*
	 * Partial writes and a moving buffer fit the stream's write buffer.
	 * No SSL_MODE_RELEASE_BUFFERS: it frees and mallocs the record
	 * buffers around every read and write; the stream gives them back
	 * after the handshake and when idle instead (tls_release).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/*
	 * Read-ahead: one read() takes in as much as the record buffer holds
	 * (a full record and then some, or dozens of small ones) rather
	 * than a header and then a body per record.  The buffer keeps its
	 * default size: before each record OpenSSL moves what is left of the
	 * buffer to its front (to align the payload), so a larger one costs
	 * more in copies than it saves in syscalls (64 KiB made bulk
	 * transfer a quarter more instructions per byte).
	 */
	SSL_CTX_set_read_ahead(ctx, 1);
}

/*
 * A cipher string OpenSSL takes may still leave nothing a handshake can
 * use: "NULL" selects the NULL ciphers, which the security level then
 * refuses, and every TLS 1.2 client would fail.  Counted on an SSL object,
 * which applies the version range and the security level.
 */
static bool
ciphers_usable(SSL_CTX *ctx, int minv, const struct tls_server_opts *o,
    char *err, size_t errlen)
{
	SSL *ssl = SSL_new(ctx);
	STACK_OF(SSL_CIPHER) *sk;
	int n12 = 0, n13 = 0;

	if (ssl == NULL) {
		ctx_err(err, errlen, "SSL_new", NULL);
		return false;
	}
	sk = SSL_get1_supported_ciphers(ssl);
	for (int i = 0; sk != NULL && i < sk_SSL_CIPHER_num(sk); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
		if (strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") == 0)
			n13++;
		else
			n12++;
	}
	sk_SSL_CIPHER_free(sk);
	SSL_free(ssl);
	if (minv <= TLS1_2_VERSION && n12 == 0) {
		snprintf(err, errlen, "cipher list '%s' leaves no cipher TLS "
		    "1.2 may use (security level %d): every TLS 1.2 client "
		    "would be refused (tls_min_version = 1.3 serves TLS 1.3 "
		    "alone)", o->ciphers ? o->ciphers : DEFAULT_CIPHERS,
		    SSL_CTX_get_security_level(ctx));
		fault(o->fault, TLS_OPT_CIPHERS, 0);
		return false;
	}
	if (minv >= TLS1_3_VERSION && n13 == 0) {
		snprintf(err, errlen, "TLS 1.3 ciphersuites '%s' leave none "
		    "to use, and tls_min_version is 1.3", o->ciphersuites ?
		    o->ciphersuites : DEFAULT_CIPHERSUITES);
		fault(o->fault, TLS_OPT_CIPHERSUITES, 0);
		return false;
	}
	return true;
}

static SSL_CTX *
server_ctx(struct tls_ctx *c, const struct tls_server_opts *o, size_t i,
    char *err, size_t errlen)
{
	const struct tls_cert_pair *pair = &o->certs[i];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int minv = o->min_version ? o->min_version : TLS1_2_VERSION;

	if (ctx == NULL) {
		ctx_err(err, errlen, "SSL_CTX_new", NULL);
		return NULL;
	}
	common_options(ctx);
	if (minv < TLS1_2_VERSION)
		minv = TLS1_2_VERSION;
	if (!SSL_CTX_set_min_proto_version(ctx, minv)) {
		ctx_err(err, errlen, "minimum TLS version", NULL);
		fault(o->fault, TLS_OPT_VERSION, 0);
		goto fail;
	}
	if (!SSL_CTX_set_cipher_list(ctx, o->ciphers ? o->ciphers :
	    DEFAULT_CIPHERS)) {
		ctx_err(err, errlen, "cipher list", o->ciphers);
		fault(o->fault, TLS_OPT_CIPHERS, 0);
		goto fail;
	}
	if (!SSL_CTX_set_ciphersuites(ctx, o->ciphersuites ? o->ciphersuites :
	    DEFAULT_CIPHERSUITES)) {
		ctx_err(err, errlen, "TLS 1.3 ciphersuites", o->ciphersuites);
		fault(o->fault, TLS_OPT_CIPHERSUITES, 0);
		goto fail;
	}
	if (!ciphers_usable(ctx, minv, o, err, errlen))
		goto fail;
	if (!SSL_CTX_set1_groups_list(ctx, DEFAULT_GROUPS)) {
		ctx_err(err, errlen, "groups", DEFAULT_GROUPS);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, pair->cert) != 1) {
		ctx_err(err, errlen, "certificate", pair->cert);
		fault(o->fault, TLS_OPT_CERT, i);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, pair->key, SSL_FILETYPE_PEM)
	    != 1) {
		ctx_err(err, errlen, "private key", pair->key);
		fault(o->fault, TLS_OPT_KEY, i);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ctx_err(err, errlen, "key does not match certificate",
		    pair->key);
		fault(o->fault, TLS_OPT_KEY, i);
		goto fail;
	}
	/* Resumed sessions must keep the verification context. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ferry", 5);
	/*
	 * Resumption is stateless, by session tickets sealed with this
	 * context's key, which workers forked from one parent share.  A
	 * server-side session cache would be per process (a client could not
	 * resume with another worker) and costs an insert per TLS 1.2
	 * handshake and periodic sweeps.  One TLS 1.3 ticket per connection
	 * rather than OpenSSL's two: a resumed connection gets a fresh one,
	 * so a client that connects one at a time never runs out.
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_num_tickets(ctx, 1) != 1) {
		ctx_err(err, errlen, "session tickets", NULL);
		goto fail;
	}
	if (o->verify != TLS_VERIFY_NONE) {
		int mode = SSL_VERIFY_PEER;
		if (o->verify == TLS_VERIFY_REQUIRED)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		if (o->client_ca == NULL) {
			snprintf(err, errlen, "client certificate "
			    "verification needs a CA file");
			fault(o->fault, TLS_OPT_CLIENT_CA, 0);
			goto fail;
		}
		if (SSL_CTX_load_verify_locations(ctx, o->client_ca, NULL)
		    != 1) {
			ctx_err(err, errlen, "client CA", o->client_ca);
			fault(o->fault, TLS_OPT_CLIENT_CA, 0);
			goto fail;
		}
		STACK_OF(X509_NAME) *names =
		    SSL_load_client_CA_file(o->client_ca);
		if (names == NULL) {
			ctx_err(err, errlen, "client CA names", o->client_ca);
			fault(o->fault, TLS_OPT_CLIENT_CA, 0);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, mode, NULL);
	}
	if (c->alpn_len > 0)
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, c);
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, c);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static void
ctx_free(struct tls_ctx *c)
{
	for (size_t i = 0; i < c->ncerts; i++) {
		SSL_CTX_free(c->certs[i].ctx);
		for (size_t j = 0; j < c->certs[i].nnames; j++)
			free(c->certs[i].names[j]);
		free(c->certs[i].names);
	}
	free(c->certs);
	SSL_CTX_free(c->client);
	free(c);
}

struct tls_ctx *
tls_ctx_new_server(const struct tls_server_opts *o, char *err, size_t errlen)
{
	struct tls_ctx *c;

	if (o->ncerts == 0 || o->ncerts > TLS_MAX_CERTS) {
		snprintf(err, errlen, "a TLS listener needs 1 to %d "
		    "certificate/key pairs", TLS_MAX_CERTS);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->certs = calloc(o->ncerts,
	    sizeof(*c->certs))) == NULL) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->refs = 1;
	c->server = true;
	snprintf(c->name, sizeof(c->name), "%s", o->name ? o->name : "");
	ERR_clear_error();
	if (o->alpn && alpn_wire(o->alpn, c->alpn, sizeof(c->alpn),
	    &c->alpn_len) < 0) {
		snprintf(err, errlen, "bad ALPN list '%s'", o->alpn);
		fault(o->fault, TLS_OPT_ALPN, 0);
		goto fail;
	}
	for (size_t i = 0; i < o->ncerts; i++) {
		c->certs[i].ctx = server_ctx(c, o, i, err, errlen);
		if (c->certs[i].ctx == NULL)
			goto fail;
		c->ncerts++;
		if (collect_names(&c->certs[i]) < 0) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	return c;
fail:
	ctx_free(c);
	return NULL;
}

struct tls_ctx *
tls_ctx_new_client(const struct tls_client_opts *o, char *err, size_t errlen)
{
	struct tls_ctx *c = calloc(1, sizeof(*c));
	SSL_CTX *ctx;

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->refs = 1;
	ERR_clear_error();
	ctx = c->client = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		ctx_err(err, errlen, "SSL_CTX_new", NULL);
		goto fail;
	}
	common_options(ctx);
	if (!SSL_CTX_set_min_proto_version(ctx, o->min_version ?
	    o->min_version : TLS1_2_VERSION)) {
		ctx_err(err, errlen, "minimum TLS version", NULL);
		fault(o->fault, TLS_OPT_VERSION, 0);
		goto fail;
	}
	if (o->verify) {
		int ok = o->ca_file ?
		    SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) :
		    SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			ctx_err(err, errlen, "CA file", o->ca_file);
			fault(o->fault, TLS_OPT_CA_FILE, 0);
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (o->cert != NULL) {
		if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
			ctx_err(err, errlen, "client certificate", o->cert);
			fault(o->fault, TLS_OPT_CERT, 0);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, o->key ? o->key :
		    o->cert, SSL_FILETYPE_PEM) != 1) {
			ctx_err(err, errlen, "client key", o->key);
			fault(o->fault, TLS_OPT_KEY, 0);
			goto fail;
		}
	}
	if (o->alpn) {
		if (alpn_wire(o->alpn, c->alpn, sizeof(c->alpn),
		    &c->alpn_len) < 0 || SSL_CTX_set_alpn_protos(ctx, c->alpn,
		    (unsigned)c->alpn_len) != 0) {
			snprintf(err, errlen, "bad ALPN list '%s'", o->alpn);
			fault(o->fault, TLS_OPT_ALPN, 0);
			goto fail;
		}
	}
	return c;
fail:
	ctx_free(c);
	return NULL;
}

struct tls_ctx *
tls_ctx_ref(struct tls_ctx *c)
{
	c->refs++;
	return c;
}

void
tls_ctx_unref(struct tls_ctx *c)
{
	if (c != NULL && --c->refs == 0)
		ctx_free(c);
}

int
tls_version_parse(const char *s)
{
	if (strcmp(s, "1.2") == 0 || strcasecmp(s, "TLSv1.2") == 0)
		return TLS1_2_VERSION;
	if (strcmp(s, "1.3") == 0 || strcasecmp(s, "TLSv1.3") == 0)
		return TLS1_3_VERSION;
	return -1;
}

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

/* What the transport keeps per connection (tp_data). */
struct tls_conn {
	SSL *ssl;
	int credits;			/* records without data still allowed */
	bool flooded;			/* one too many: the read fails */
	ev_tstamp credit_time;		/* loop time credited up to */
	uint64_t credit_bytes;		/* data bytes credited up to */
	/* Records without data since the handshake, for the log. */
	unsigned handshakes, alerts, others;
};

static struct tls_conn *
conn_of(const struct stream *s)
{
	return stream_transport_data(s);
}

static SSL *
ssl_of(const struct stream *s)
{
	return conn_of(s)->ssl;
}

/*
 * The one place OpenSSL results are interpreted.  `ret` is the return of
 * an SSL_* I/O call that did not succeed.
 */
static enum io_result
tls_result(struct stream *s, int ret, const char *op)
{
	SSL *ssl = ssl_of(s);
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
		ssl_errors(reason, sizeof(reason));
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
	SSL_set_msg_callback_arg(t->ssl, s);
	SSL_set_msg_callback(t->ssl, record_cb);
}

static enum io_result
tls_handshake(struct stream *s)
{
	SSL *ssl = ssl_of(s);
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
		credits_start(s, conn_of(s));
		return IO_DONE;
	}
	r = tls_result(s, ret, "handshake");
	if (r == IO_EOF || r == IO_FAIL) {
		long v = SSL_get_verify_result(ssl);
		const struct tls_ctx *c = SSL_get_app_data(ssl);
		if (r == IO_EOF)
			stream_set_error(s, "handshake: peer closed");
		if (v != X509_V_OK)
			stream_set_error(s, "handshake: certificate: %s",
			    X509_verify_cert_error_string(v));
		/* A client side's failure is its owner's to report. */
		if (c->server)
			log_limited(LOG_INFO, "%s%stls handshake failed: "
			    "peer %s: %s", c->name, c->name[0] ? ": " : "",
			    stream_peer(s), stream_error(s));
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
static void
record_cb(int write_p, int version, int content_type, const void *buf,
    size_t len, SSL *ssl, void *arg)
{
	struct stream *s = arg;
	struct tls_conn *t = conn_of(s);
	int type;

	(void)version;
	if (write_p || len < 1 || (content_type != SSL3_RT_HEADER &&
	    content_type != SSL3_RT_INNER_CONTENT_TYPE))
		return;
	type = *(const unsigned char *)buf;
	if (type == SSL3_RT_APPLICATION_DATA)
		return;
	if (type == SSL3_RT_HANDSHAKE)
		t->handshakes++;
	else if (type == SSL3_RT_ALERT)
		t->alerts++;
	else
		t->others++;
	if (t->flooded || spend_credit(s, t))
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
listener_name(const struct stream *s)
{
	const struct tls_ctx *c = SSL_get_app_data(ssl_of(s));

	return c->name;
}

/*
 * A peer closed for flooding: counted and logged here, once (the owner
 * sees a TLS failure, with `what` as its detail).
 */
static enum io_result
flood_fail(struct stream *s, const char *what)
{
	const struct tls_conn *t = conn_of(s);
	const char *name = listener_name(s);

	(void)stream_fail(s, STREAM_CLOSE_TLS, "flood: %s", what);
	if (stream_stats(s) != NULL)
		stream_stats(s)->tls_floods++;
	log_limited(LOG_WARN, "%s%stls flood: peer %s: %s; since the "
	    "handshake: %llu bytes of data, %u handshake, %u alert and %u "
	    "other records: closed", name, name[0] ? ": " : "", stream_peer(s), what,
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
tls_read(struct stream *s, char *buf, size_t len, size_t *got)
{
	struct tls_conn *t = conn_of(s);
	const char *flood;

	clear_errors();
	errno = 0;
	int ret = SSL_read_ex(t->ssl, buf, len, got);
	if (t->flooded) {
		ERR_clear_error();
		return flood_fail(s, "records without data beyond the "
		    "allowance");
	}
	if (ret == 1)
		return IO_DONE;
	if ((flood = library_flood()) != NULL) {
		ERR_clear_error();
		return flood_fail(s, flood);
	}
	return tls_result(s, ret, "read");
}

static enum io_result
tls_write(struct stream *s, const char *buf, size_t len, size_t *put)
{
	clear_errors();
	errno = 0;
	int ret = SSL_write_ex(ssl_of(s), buf, len, put);
	return ret == 1 ? IO_DONE : tls_result(s, ret, "write");
}

/*
 * Raw records read ahead count, not only decrypted bytes (SSL_pending):
 * either way no readiness event will announce them.
 */
static bool
tls_pending(struct stream *s)
{
	return SSL_has_pending(ssl_of(s)) == 1;
}

/*
 * Notes whether a socket read filled what OpenSSL asked for: the socket
 * likely holds more (see tp_more in stream.h).
 */
static long
raw_read_cb(BIO *b, int oper, const char *argp, size_t len, int argi,
    long argl, int ret, size_t *processed)
{
	struct stream *s = (struct stream *)BIO_get_callback_arg(b);

	(void)argp;
	(void)argi;
	(void)argl;
	if (oper == (BIO_CB_READ | BIO_CB_RETURN))
		stream_transport_more(s, ret > 0 && processed != NULL &&
		    *processed == len);
	return ret;
}

/* Fails (keeps them) while a record is half read or half written. */
static bool
tls_release(struct stream *s)
{
	return SSL_free_buffers(ssl_of(s)) == 1;
}

static void
tls_shutdown(struct stream *s)
{
	ERR_clear_error();
	/* close_notify, then FIN: the peer sees a clean end either way. */
	if (SSL_is_init_finished(ssl_of(s)))
		(void)SSL_shutdown(ssl_of(s));
	ERR_clear_error();
	(void)shutdown(stream_fd(s), SHUT_WR);
}

static void
conn_free(struct tls_conn *t)
{
	tls_ctx_unref(SSL_get_app_data(t->ssl));
	SSL_free(t->ssl);
	free(t);
}

static void
tls_close(struct stream *s, bool clean)
{
	struct tls_conn *t = conn_of(s);

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

static const struct stream_transport tls_transport = {
	.name = "tls",
	.handshake = tls_handshake,
	.read = tls_read,
	.write = tls_write,
	.pending = tls_pending,
	.release = tls_release,
	.shutdown = tls_shutdown,
	.close = tls_close,
};

static struct tls_conn *
conn_new(struct stream *s, struct tls_ctx *c, SSL_CTX *ctx)
{
	struct tls_conn *t = calloc(1, sizeof(*t));

	ERR_clear_error();
	if (t == NULL)
		return NULL;
	t->ssl = SSL_new(ctx);
	if (t->ssl == NULL || SSL_set_fd(t->ssl, stream_fd(s)) != 1) {
		SSL_free(t->ssl);
		free(t);
		return NULL;
	}
	SSL_set_app_data(t->ssl, tls_ctx_ref(c));
	return t;
}

/*
 * The server side until the client's first byte: no SSL object yet, only
 * a reference to the context (tp_data).  The first SSL_do_handshake
 * allocates the object and its handshake and record buffers, and a client
 * that stays silent (a port scan, a slowloris client, a pool's spare
 * connection) held them until its handshake timeout: 38.7 KiB of RSS per
 * connection, where the stream and its protocol's state are about 1 KiB.
 */
static enum io_result
lazy_handshake(struct stream *s)
{
	struct tls_ctx *c = stream_transport_data(s);
	struct tls_conn *t;
	ssize_t n;
	char b;

	do
		n = recv(stream_fd(s), &b, 1, MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return IO_WANT_READ;
	/* Bytes, or an EOF or error for OpenSSL to report as it always has. */
	t = conn_new(s, c, c->certs[0].ctx);
	if (t == NULL) {
		ERR_clear_error();
		return stream_fail(s, STREAM_CLOSE_NOMEM, "handshake: no "
		    "memory for the TLS state");
	}
	SSL_set_accept_state(t->ssl);
	tls_ctx_unref(c);		/* conn_new took its own reference */
	stream_switch_transport(s, &tls_transport, t);
	return tls_handshake(s);
}

/* Unreachable: the stream moves no bytes before its handshake is done. */
static enum io_result
lazy_io(struct stream *s)
{
	return stream_fail(s, STREAM_CLOSE_TLS, "TLS I/O before the "
	    "handshake");
}

static enum io_result
lazy_read(struct stream *s, char *buf, size_t len, size_t *got)
{
	(void)buf;
	(void)len;
	(void)got;
	return lazy_io(s);
}

static enum io_result
lazy_write(struct stream *s, const char *buf, size_t len, size_t *put)
{
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
lazy_release(struct stream *s)
{
	(void)s;
	return true;
}

/* No TLS yet, so nothing to say goodbye with: a plain FIN. */
static void
lazy_shutdown(struct stream *s)
{
	(void)shutdown(stream_fd(s), SHUT_WR);
}

static void
lazy_close(struct stream *s, bool clean)
{
	(void)clean;
	tls_ctx_unref(stream_transport_data(s));
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
};

/* The SSL object, or NULL before the client's first byte or after close. */
static SSL *
live_ssl(const struct stream *s)
{
	return stream_transport_of(s) == &tls_transport &&
	    conn_of(s) != NULL ? ssl_of(s) : NULL;
}

int
tls_stream_accept(struct stream *s, struct tls_ctx *c)
{
	if (!c->server)
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

	if (c->server || c->client == NULL)
		return -1;
	t = conn_new(s, c, c->client);
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

const char *
tls_id_kind_name(enum tls_id_kind kind)
{
	switch (kind) {
	case TLS_ID_CN: return "cn";
	case TLS_ID_DNS: return "dns";
	case TLS_ID_EMAIL: return "email";
	case TLS_ID_URI: return "uri";
	}
	return "?";
}

static void
add_peer_id(struct tls_peer_ids *out, size_t *used, enum tls_id_kind kind,
    const unsigned char *p, int len)
{
	size_t n = len > 0 ? (size_t)len : 0;

	/* An embedded NUL could make "a\0.evil" pass for "a". */
	if (n == 0 || memchr(p, '\0', n) != NULL)
		return;
	if (out->n == TLS_PEER_IDS_MAX || n + 1 > sizeof(out->buf) - *used) {
		out->truncated = true;
		return;
	}
	memcpy(out->buf + *used, p, n);
	out->buf[*used + n] = '\0';
	out->id[out->n].kind = kind;
	out->id[out->n].value = out->buf + *used;
	out->id[out->n].len = n;
	out->n++;
	*used += n + 1;
}

static void
add_subject_cns(struct tls_peer_ids *out, size_t *used, X509 *x)
{
	X509_NAME *name = X509_get_subject_name(x);
	int i = -1;

	while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >=
	    0) {
		ASN1_STRING *d = X509_NAME_ENTRY_get_data(
		    X509_NAME_get_entry(name, i));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, d);

		if (len >= 0)
			add_peer_id(out, used, TLS_ID_CN, utf8, len);
		OPENSSL_free(utf8);
	}
}

static void
add_sans(struct tls_peer_ids *out, size_t *used, X509 *x)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL);

	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const ASN1_IA5STRING *v;
		enum tls_id_kind kind;

		switch (g->type) {
		case GEN_DNS:
			kind = TLS_ID_DNS;
			v = g->d.dNSName;
			break;
		case GEN_EMAIL:
			kind = TLS_ID_EMAIL;
			v = g->d.rfc822Name;
			break;
		case GEN_URI:
			kind = TLS_ID_URI;
			v = g->d.uniformResourceIdentifier;
			break;
		default:
			continue;
		}
		add_peer_id(out, used, kind, ASN1_STRING_get0_data(v),
		    ASN1_STRING_length(v));
	}
	GENERAL_NAMES_free(sans);
}

bool
tls_stream_peer_ids(const struct stream *s, struct tls_peer_ids *out)
{
	size_t used = 0;
	X509 *x;

	out->n = 0;
	out->truncated = false;
	if (live_ssl(s) == NULL)
		return false;
	x = SSL_get1_peer_certificate(live_ssl(s));
	if (x == NULL)
		return false;
	if (SSL_get_verify_result(live_ssl(s)) != X509_V_OK) {
		X509_free(x);
		return false;
	}
	add_subject_cns(out, &used, x);
	add_sans(out, &used, x);
	X509_free(x);
	return true;
}
