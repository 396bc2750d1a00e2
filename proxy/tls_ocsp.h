/*
 * tls_ocsp: the OCSP response stapled to one certificate's handshakes.
 *
 * Two sources, per certificate:
 *  - a file (`ocsp = FILE`): a DER OCSP response, read at start and on
 *    every SIGHUP;
 *  - the certificate's own responder (`ocsp = auto`): the URL of its
 *    authorityInfoAccess, fetched over HTTP inside the event loop without
 *    blocking: a non-blocking connect watched by libev, then OpenSSL's
 *    OSSL_HTTP_REQ_CTX driven by the socket's readiness, the whole
 *    exchange bounded by `timeout`.  The responder's host is resolved when
 *    the certificate is read (start, SIGHUP), as backends are, so the loop
 *    never waits on DNS.  A response is fetched again once half of its
 *    validity has passed (one that came in older than that: after half
 *    of what is left, between 1 s and a minute; a failed fetch is retried
 *    after a minute), and the one in use stays stapled meanwhile.
 *
 * With several workers one process fetches: worker 0 (the one that serves
 * the admin page, which shows the fetch metrics).  It writes each response
 * it accepts to `dir`, named after the certificate's SHA-256, by an atomic
 * rename; every other worker looks at that file once a second and takes
 * what changed.  A (re)started process starts with the file's response, so
 * a restart costs the responder nothing.
 *
 * A response is stapled only while it verifies: a successful response,
 * signed by the certificate's issuer (or a responder it delegated to),
 * for this certificate, status good, inside its validity (thisUpdate at
 * most 5 minutes ahead of our clock, nextUpdate not passed; one without
 * nextUpdate counts as valid for an hour).  One that fails any of these is never stapled, from any
 * source; one that expires while in use stops being stapled at once.  The
 * issuer is the certificate after the leaf in its chain file.
 *
 * Not thread-safe (one loop per process); objects are made before the
 * fork and started in each worker.
 */
#ifndef FERRY_TLS_OCSP_H
#define FERRY_TLS_OCSP_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include "buffer.h"

struct tls_ocsp_opts {
	const char *cert;		/* PEM chain: leaf, then its issuer */
	const char *file;		/* DER response; NULL: auto */
	const char *dir;		/* auto: where responses are kept */
	double timeout;			/* auto: one fetch, connect to answer */
	const char *name;		/* the listener, for logs and metrics */
};

struct tls_ocsp;

/*
 * Reads the certificate (and, for auto, its responder, resolved; and the
 * response kept in dir, if it still verifies); a file must hold a
 * response that verifies.  NULL with err.
 */
struct tls_ocsp *tls_ocsp_new(const struct tls_ocsp_opts *o, char *err,
    size_t errlen);

/*
 * In a worker, on its loop: `fetcher` fetches (auto) and writes dir; the
 * others follow dir.  A file needs nothing here.
 */
void tls_ocsp_start(struct tls_ocsp *s, struct ev_loop *loop, bool fetcher);

/*
 * SIGHUP: the certificate read again (a new one drops the response of the
 * old and, in the fetcher, fetches at once), the file read again.  0, or
 * -1 with err (the current response stays).
 */
int tls_ocsp_reload(struct tls_ocsp *s, char *err, size_t errlen);

/* Stops its watchers, closes a fetch in progress.  NULL is ignored. */
void tls_ocsp_free(struct tls_ocsp *s);

/*
 * For the handshake: a copy (OPENSSL_malloc'd) of the response to staple
 * for `leaf` (an X509 *, the certificate the handshake uses); false when
 * there is none that is valid now for that certificate.
 */
bool tls_ocsp_staple(struct tls_ocsp *s, const void *leaf,
    unsigned char **der, size_t *len);

/*
 * The metric families for `n` objects: ferry_ocsp_response_age_seconds
 * (of the response stapled; absent when none), ferry_ocsp_stapling (1
 * when a valid response is stapled, else 0) and
 * ferry_ocsp_fetch_failures_total, labelled with listener and cert.
 */
void tls_ocsp_render_metrics(struct tls_ocsp *const *all, size_t n,
    struct buffer *out);

#endif
