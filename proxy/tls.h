/*
 * tls: SSL_CTX construction from options, and the TLS transport for
 * streams.
 *
 * A struct tls_ctx holds one SSL_CTX per certificate (the first is the
 * default, the others are chosen by SNI against their DNS names), the ALPN
 * list and the verification policy.  It is reference counted: every TLS
 * stream holds a reference until it closes, so a reload (SIGHUP) can swap a
 * listener's context for a new one while handshakes on the old one finish.
 *
 * The transport maps OpenSSL's results onto the stream's would-block model
 * in one function: WANT_READ/WANT_WRITE become the readiness the stream
 * waits for, in either direction (an SSL_read may need the socket writable,
 * an SSL_write readable); a clean close_notify (or a bare EOF) is EOF;
 * anything else is an error with OpenSSL's reason text.  Decrypted bytes
 * OpenSSL still holds are reported through the `pending` hook so the stream
 * reads them without waiting for a readiness event that will not come.
 *
 * A peer's records that carry no data (TLS 1.3 key updates, TLS 1.2
 * renegotiation attempts, alerts) are paced: once the handshake is done it
 * has an allowance of 32, which refills by one per 16 KiB of data moved
 * either way and per second, up to 32.  The record beyond it fails the
 * read that met it, before OpenSSL acts on it, with the error "flood:
 * ..."; so do OpenSSL's own limits on empty records and on warning alerts
 * in a row.  Such a close is counted in the stream's listener counters
 * (tls_floods) and logged here, rate-limited, with the listener and peer.
 *
 * The handshake is deferred to the stream's first I/O (or
 * stream_wait_for_handshake) and bounded by the stream's handshake_timeout.
 * A failed server-side handshake is logged here, once, rate-limited, with
 * the listener's name and the peer; a client side's failure is left to the
 * stream's owner (its close reason and error say what failed).
 */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "stream.h"

enum tls_verify {
	TLS_VERIFY_NONE = 0,
	TLS_VERIFY_OPTIONAL,	/* ask; check a certificate if one is sent */
	TLS_VERIFY_REQUIRED,	/* no valid client certificate, no service */
};

struct tls_cert_pair {
	const char *cert;	/* PEM chain: leaf first */
	const char *key;	/* PEM private key */
};

#define TLS_MAX_CERTS 32

/* The option a context could not be built from, for error messages. */
enum tls_opt {
	TLS_OPT_OTHER = 0,
	TLS_OPT_CERT,		/* certs[index].cert, or the client cert */
	TLS_OPT_KEY,		/* certs[index].key (or it does not match) */
	TLS_OPT_CLIENT_CA,
	TLS_OPT_VERSION,
	TLS_OPT_CIPHERS,
	TLS_OPT_CIPHERSUITES,
	TLS_OPT_ALPN,
	TLS_OPT_CA_FILE,	/* client contexts: ca_file */
};

struct tls_fault {
	enum tls_opt opt;
	size_t index;
};

struct tls_server_opts {
	const struct tls_cert_pair *certs;	/* first = default */
	size_t ncerts;
	const char *client_ca;		/* CA file for client certificates */
	enum tls_verify verify;
	int min_version;		/* TLS1_2_VERSION (default) or 1_3 */
	const char *ciphers;		/* TLS <= 1.2 list; NULL = ours */
	const char *ciphersuites;	/* TLS 1.3; NULL = ours (AES-128 first) */
	const char *alpn;		/* "h2,http/1.1"; NULL = none */
	const char *name;		/* the listener, for logs; NULL = none */
	struct tls_fault *fault;	/* optional: set when building fails */
};

struct tls_client_opts {
	const char *ca_file;		/* NULL: the system's store */
	bool verify;			/* check chain and host name */
	const char *cert, *key;		/* client certificate (optional) */
	int min_version;
	const char *alpn;
	struct tls_fault *fault;	/* optional: set when building fails */
};

struct tls_ctx;

/*
 * NULL on failure, with the file and OpenSSL's reason in err (and, when
 * the options ask for it, the option at fault in *fault).  A server
 * context whose cipher list leaves TLS 1.2 nothing to use at OpenSSL's
 * security level (or, with a TLS 1.3 minimum, whose suites leave TLS 1.3
 * nothing) is a failure too, though OpenSSL takes the strings.
 */
struct tls_ctx *tls_ctx_new_server(const struct tls_server_opts *o,
    char *err, size_t errlen);
struct tls_ctx *tls_ctx_new_client(const struct tls_client_opts *o,
    char *err, size_t errlen);
struct tls_ctx *tls_ctx_ref(struct tls_ctx *c);
void tls_ctx_unref(struct tls_ctx *c);

/* Parses "1.2" / "1.3" into a protocol version; -1 if unknown. */
int tls_version_parse(const char *s);

/*
 * Turns a freshly made stream into the server side of a TLS connection,
 * handshake deferred.  The SSL object itself is made when the client's
 * first byte arrives (until then the stream holds a reference to `c`), so
 * a client that never speaks costs no OpenSSL state; `c` is the context
 * the connection gets even if a reload replaces it meanwhile.  Returns 0,
 * or -1 (the stream is untouched).
 */
int tls_stream_accept(struct stream *s, struct tls_ctx *c);

/*
 * Client side, on a stream from stream_connect().  `host` is sent as SNI
 * (unless it is an IP literal) and checked against the certificate when
 * the context verifies.  NULL host: no SNI, no name check.
 * The stream may still be connecting, or already connected with bytes
 * sent in the clear (a PROXY header: wait for its write callback, since
 * bytes still queued are sent encrypted after the handshake).  Returns -1
 * (the stream is untouched) on a closed or TLS stream, or one holding
 * bytes it read in the clear.
 */
int tls_stream_connect(struct stream *s, struct tls_ctx *c,
    const char *host);

bool tls_stream_is_tls(const struct stream *s);
/* Selected ALPN protocol, or NULL; *len gets its length. */
const unsigned char *tls_stream_alpn(const struct stream *s, unsigned *len);
/* Whether the peer presented a certificate that verified. */
bool tls_stream_peer_verified(const struct stream *s);
/* The peer certificate's subject as a one-line string; false if none. */
bool tls_stream_peer_subject(const struct stream *s, char *out, size_t len);

/* The names a peer certificate identifies its holder by. */
enum tls_id_kind {
	TLS_ID_CN = 0,		/* a commonName of the subject (as UTF-8) */
	TLS_ID_DNS,		/* subjectAltName dNSName */
	TLS_ID_EMAIL,		/* subjectAltName rfc822Name */
	TLS_ID_URI,		/* subjectAltName uniformResourceIdentifier */
};

struct tls_peer_id {
	enum tls_id_kind kind;
	const char *value;	/* NUL-terminated, within its tls_peer_ids */
	size_t len;
};

#define TLS_PEER_IDS_MAX 32
#define TLS_PEER_IDS_BYTES 4096

struct tls_peer_ids {
	size_t n;
	struct tls_peer_id id[TLS_PEER_IDS_MAX];
	bool truncated;		/* some did not fit and are left out */
	char buf[TLS_PEER_IDS_BYTES];
};

/*
 * The identities of the peer's certificate, when it presented one that
 * verified: every commonName of its subject, then its DNS, email and URI
 * subjectAltNames in the certificate's order.  A value holding a NUL byte
 * is left out (it could pass for a shorter name), as are those beyond
 * TLS_PEER_IDS_MAX or TLS_PEER_IDS_BYTES.  Returns false (out->n = 0)
 * when the stream has no verified peer certificate.
 */
bool tls_stream_peer_ids(const struct stream *s, struct tls_peer_ids *out);
/* "cn", "dns", "email", "uri". */
const char *tls_id_kind_name(enum tls_id_kind kind);

#endif
