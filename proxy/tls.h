/*
 * tls: the TLS transport for streams (stream_transport.h), on the
 * contexts of tls_ctx.h.
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
 *
 * A half-close (the shutdown hook) sends close_notify, then FIN; nothing
 * is written after it (OpenSSL's answers to the peer's key updates, which
 * may still come, go to a sink), and reading goes on.
 *
 * A verified peer certificate's identities are the transport's answer to
 * stream_peer_ids() (peer_id.h): who uses them asks the stream, not this
 * layer.
 */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "stream.h"
#include "tls_ctx.h"

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

/*
 * What routing and PROXY v2 TLVs need to know of a server-side TLS stream
 * whose handshake is done: the strings point into OpenSSL's state and
 * stay valid while the stream is open.  False (out zeroed) when the
 * stream is not TLS or its handshake not done.
 */
struct tls_stream_info {
	const char *sni;		/* the name the client sent, or NULL */
	const char *version;		/* "TLSv1.3" */
	const char *cipher;		/* OpenSSL's name of the cipher */
	bool cert;			/* the client presented a certificate */
	long verify;			/* its X509 verify result (0: ok) */
	char cn[256];			/* its subject's CN, or "" */
};
bool tls_stream_info(const struct stream *s, struct tls_stream_info *out);

#endif
