/* tls_ctx: see tls_ctx.h. */
#define _GNU_SOURCE
#include "tls_ctx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

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
	bool alpn_fallback;		/* no common protocol: go on without */
	char name[64];			/* the listener, for logs ("" = none) */
};

/* ---- errors ---- */

void
tls_error_text(char *out, size_t len)
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

	tls_error_text(reason, sizeof(reason));
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

/*
 * The ALPN list (NULL: none) into c, in wire format, and into a client's
 * SSL_CTX; false, with the error, when it is no list.
 */
static bool
alpn_parse(struct tls_ctx *c, SSL_CTX *client, const char *list,
    struct tls_fault *f, char *err, size_t errlen)
{
	if (list == NULL)
		return true;
	if (alpn_wire(list, c->alpn, sizeof(c->alpn), &c->alpn_len) == 0 &&
	    (client == NULL || SSL_CTX_set_alpn_protos(client, c->alpn,
	    (unsigned)c->alpn_len) == 0))
		return true;
	snprintf(err, errlen, "bad ALPN list '%s'", list);
	fault(f, TLS_OPT_ALPN, 0);
	return false;
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
		return c->alpn_fallback ? SSL_TLSEXT_ERR_NOACK :
		    SSL_TLSEXT_ERR_ALERT_FATAL;
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

/* A client asked for the certificate's status: staple it if we have it. */
static int
status_cb(SSL *ssl, void *arg)
{
	unsigned char *der;
	size_t len;

	if (!tls_ocsp_staple(arg, SSL_get_certificate(ssl), &der, &len))
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_set_tlsext_status_ocsp_resp(ssl, der, (long)len) != 1) {
		OPENSSL_free(der);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

/*
 * The CRLs of client_crl into the context's store, checked for the
 * client's own certificate: a revoked one fails the handshake, and so does
 * one whose issuer has no CRL in the file (no CRL, no service, rather than
 * a silent pass).
 */
static bool
load_crl(SSL_CTX *ctx, const struct tls_server_opts *o, char *err,
    size_t errlen)
{
	X509_STORE *st = SSL_CTX_get_cert_store(ctx);
	X509_LOOKUP *lu = X509_STORE_add_lookup(st, X509_LOOKUP_file());

	if (lu == NULL || X509_load_crl_file(lu, o->client_crl,
	    X509_FILETYPE_PEM) <= 0) {
		ctx_err(err, errlen, "client CRL", o->client_crl);
		fault(o->fault, TLS_OPT_CLIENT_CRL, 0);
		return false;
	}
	X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
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
	 * Resumption is stateless, by session tickets sealed with the
	 * listener's ticket keys (tls_tickets.h), which every worker shares
	 * and which outlive a reload; without them, with this context's own
	 * key, which a reload replaces in each worker separately.  A
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
		if (o->client_crl != NULL && !load_crl(ctx, o, err, errlen))
			goto fail;
	}
	if (pair->ocsp != NULL) {
		SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
		SSL_CTX_set_tlsext_status_arg(ctx, pair->ocsp);
	}
	if (o->tickets != NULL && tls_tickets_install(o->tickets, ctx) < 0) {
		ctx_err(err, errlen, "session ticket keys", NULL);
		goto fail;
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
	c->alpn_fallback = o->alpn_fallback;
	snprintf(c->name, sizeof(c->name), "%s", o->name ? o->name : "");
	ERR_clear_error();
	if (!alpn_parse(c, NULL, o->alpn, o->fault, err, errlen))
		goto fail;
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
	if (!alpn_parse(c, ctx, o->alpn, o->fault, err, errlen))
		goto fail;
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

/* ---- for the transport ---- */

struct ssl_ctx_st *
tls_ctx_ssl_ctx(const struct tls_ctx *c)
{
	return c->server ? c->certs[0].ctx : c->client;
}

bool
tls_ctx_is_server(const struct tls_ctx *c)
{
	return c->server;
}

const char *
tls_ctx_name(const struct tls_ctx *c)
{
	return c->name;
}
