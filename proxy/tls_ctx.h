/*
 * tls_ctx: TLS contexts (SSL_CTX) built from options, for the TLS
 * transport (tls.h) and its owners (the listeners, a reload).
 *
 * A struct tls_ctx holds one SSL_CTX per certificate (the first is the
 * default, the others are chosen by SNI against their DNS names), the ALPN
 * list and the verification policy (with a CRL, optionally); the session
 * ticket keys (tls_tickets.h) and each certificate's OCSP staple
 * (tls_ocsp.h) are the owner's, referenced, not owned; a client context holds one SSL_CTX,
 * its CA store and optional client certificate.  Every option is checked
 * as the context is built, and a failure names the option at fault.
 *
 * It is reference counted: every TLS stream holds a reference until it
 * closes, so a reload (SIGHUP) can swap a listener's context for a new
 * one while handshakes on the old one finish.  Not thread-safe (one
 * process, one loop).
 */
#ifndef FERRY_TLS_CTX_H
#define FERRY_TLS_CTX_H

#include <stdbool.h>
#include <stddef.h>

#include "tls_ocsp.h"
#include "tls_tickets.h"

enum tls_verify {
	TLS_VERIFY_NONE = 0,
	TLS_VERIFY_OPTIONAL,	/* ask; check a certificate if one is sent */
	TLS_VERIFY_REQUIRED,	/* no valid client certificate, no service */
};

struct tls_cert_pair {
	const char *cert;	/* PEM chain: leaf first */
	const char *key;	/* PEM private key */
	/* The OCSP response stapled for it (tls_ocsp.h), which must outlive
	 * the context; NULL = none. */
	struct tls_ocsp *ocsp;
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
	TLS_OPT_CLIENT_CRL,
};

struct tls_fault {
	enum tls_opt opt;
	size_t index;
};

struct tls_server_opts {
	const struct tls_cert_pair *certs;	/* first = default */
	size_t ncerts;
	const char *client_ca;		/* CA file for client certificates */
	const char *client_crl;		/* PEM CRLs checked against a client's
					 * certificate (its issuer's CRL must be
					 * there); NULL = none */
	enum tls_verify verify;
	int min_version;		/* TLS1_2_VERSION (default) or 1_3 */
	const char *ciphers;		/* TLS <= 1.2 list; NULL = ours */
	const char *ciphersuites;	/* TLS 1.3; NULL = ours (AES-128 first) */
	const char *alpn;		/* "h2,http/1.1"; NULL = none */
	/*
	 * A client whose ALPN list has none of ours: false, the handshake
	 * fails (no_application_protocol, RFC 7301); true, it goes on with
	 * no protocol agreed (as HAProxy does).
	 */
	bool alpn_fallback;
	const char *name;		/* the listener, for logs; NULL = none */
	/* Session ticket keys (tls_tickets.h), which must outlive the
	 * context; NULL = OpenSSL's own key, made per context. */
	struct tls_tickets *tickets;
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
 * For the transport.  The SSL_CTX a connection starts on: a server's
 * default certificate (SNI may switch it during the handshake), or a
 * client's; OpenSSL's type, left incomplete here.
 */
struct ssl_ctx_st *tls_ctx_ssl_ctx(const struct tls_ctx *c);
bool tls_ctx_is_server(const struct tls_ctx *c);
/* The listener it serves, for logs ("" for none). */
const char *tls_ctx_name(const struct tls_ctx *c);

/* OpenSSL's queued errors as text (the last, most specific, wins). */
void tls_error_text(char *out, size_t len);

#endif
