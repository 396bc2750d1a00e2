/*
 * peer_id: the names a peer's certificate identifies its holder by, as
 * the access lists (acl.c) match them: every commonName of its subject,
 * then its DNS, email and URI subjectAltNames.
 *
 * Layering.  The identities are plain data here, so that the access lists
 * match them without seeing OpenSSL, a stream or the TLS transport.  They
 * are read from a certificate by peer_ids_from_cert(), the one function of
 * this module that needs OpenSSL's X509 (the type stays incomplete here).
 * Who calls it is the transport: the relay asks its stream
 * (stream_peer_ids() in stream.h), the stream asks its transport, and the
 * TLS transport (tls.c), which holds the verified leaf, hands it over.  A
 * plain stream has none.  So the relay glue depends on the stream alone,
 * the access lists on this header alone, and OpenSSL stays in tls*.c and
 * peer_id.c.
 */
#ifndef FERRY_PEER_ID_H
#define FERRY_PEER_ID_H

#include <stdbool.h>
#include <stddef.h>

enum peer_id_kind {
	PEER_ID_CN = 0,		/* a commonName of the subject (as UTF-8) */
	PEER_ID_DNS,		/* subjectAltName dNSName */
	PEER_ID_EMAIL,		/* subjectAltName rfc822Name */
	PEER_ID_URI,		/* subjectAltName uniformResourceIdentifier */
};

struct peer_id {
	enum peer_id_kind kind;
	const char *value;	/* NUL-terminated, within its peer_ids */
	size_t len;
};

#define PEER_IDS_MAX 32
#define PEER_IDS_BYTES 4096

struct peer_ids {
	size_t n;
	struct peer_id id[PEER_IDS_MAX];
	bool truncated;		/* some did not fit and are left out */
	char buf[PEER_IDS_BYTES];
};

/* OpenSSL's X509, left incomplete: only peer_id.c looks inside. */
struct x509_st;

/*
 * Fills `out` with the identities of `cert` (which the caller has
 * verified): every commonName of its subject, then its DNS, email and URI
 * subjectAltNames in the certificate's order.  A value holding a NUL byte
 * is left out (it could pass for a shorter name), as are those beyond
 * PEER_IDS_MAX or PEER_IDS_BYTES (out->truncated says so).
 */
void peer_ids_from_cert(struct peer_ids *out, struct x509_st *cert);

/* "cn", "dns", "email", "uri". */
const char *peer_id_kind_name(enum peer_id_kind kind);

#endif
