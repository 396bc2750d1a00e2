/* tls_ocsp: see tls_ocsp.h. */
#define _GNU_SOURCE
#include "tls_ocsp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "metrics.h"
#include "netutil.h"

#define RETRY_AFTER 60.		/* seconds after a failed fetch */
#define FOLLOW_EVERY 1.		/* non-fetchers look at dir */
#define NO_NEXT_UPDATE 3600	/* validity of a response without one */
#define CLOCK_SKEW 300
#define MAX_RESPONSE (64 * 1024)

enum fetch_state {
	FETCH_IDLE = 0,		/* the timer says when the next one starts */
	FETCH_CONNECTING,	/* non-blocking connect under way */
	FETCH_EXCHANGING,	/* request out, response in (OpenSSL's HTTP) */
};

struct tls_ocsp {
	char name[64];
	char cert_path[512];
	char file[512];			/* "" = auto */
	char dir[512];
	char cache[1024];		/* dir/<sha256 of the leaf>.der */
	double timeout;
	X509 *leaf, *issuer;
	OCSP_CERTID *id;
	/* auto: the responder */
	char url[512], host[256], path[512];
	int port;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	/* the response in use */
	unsigned char *der;
	size_t len;
	time_t this_update, expires;
	/* dir's file as last read (the followers' change check) */
	struct timespec cache_mtime;
	ino_t cache_ino;
	uint64_t failures;
	/* running */
	struct ev_loop *loop;
	bool fetcher;
	enum fetch_state state;
	ev_timer timer;			/* next fetch, or the next look at dir */
	ev_timer deadline;		/* of the fetch under way */
	ev_io io;
	int fd;
	BIO *bio;
	OSSL_HTTP_REQ_CTX *rctx;
};

/* ---- certificates ---- */

/* OpenSSL's last queued error, with its detail ("code=500,..."). */
static void
openssl_why(char *out, size_t len)
{
	unsigned long e, last = 0;
	const char *data = NULL, *d;
	int flags;
	char text[128];

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &d, &flags)) != 0) {
		last = e;
		data = (flags & ERR_TXT_STRING) && d != NULL && *d ? d : NULL;
	}
	if (last == 0) {
		snprintf(out, len, "unknown error");
		return;
	}
	ERR_error_string_n(last, text, sizeof(text));
	snprintf(out, len, "%s%s%s%s", text, data ? " (" : "", data ? data :
	    "", data ? ")" : "");
}

/* The leaf and the certificate after it (its issuer). */
static int
read_chain(const char *path, X509 **leaf, X509 **issuer, char *err,
    size_t errlen)
{
	FILE *f = fopen(path, "r");

	*leaf = *issuer = NULL;
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	*leaf = PEM_read_X509(f, NULL, NULL, NULL);
	if (*leaf != NULL)
		*issuer = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	if (*leaf == NULL) {
		snprintf(err, errlen, "%s: no certificate", path);
		return -1;
	}
	if (*issuer == NULL) {
		X509_free(*leaf);
		*leaf = NULL;
		snprintf(err, errlen, "%s: OCSP needs the issuer's certificate "
		    "after the leaf in the chain file", path);
		return -1;
	}
	return 0;
}

/* auto: the responder named by the certificate, resolved now. */
static int
responder(struct tls_ocsp *s, X509 *leaf, char *err, size_t errlen)
{
	STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(leaf);
	char *host = NULL, *port = NULL, *path = NULL, why[256];
	int ssl = 0, rc = -1;

	if (urls == NULL || sk_OPENSSL_STRING_num(urls) == 0) {
		snprintf(err, errlen, "%s names no OCSP responder "
		    "(authorityInfoAccess): use ocsp = FILE or off",
		    s->cert_path);
		goto out;
	}
	snprintf(s->url, sizeof(s->url), "%s",
	    sk_OPENSSL_STRING_value(urls, 0));
	if (!OSSL_HTTP_parse_url(s->url, &ssl, NULL, &host, &port, NULL,
	    &path, NULL, NULL) || ssl) {
		snprintf(err, errlen, "%s: OCSP responder '%s': %s",
		    s->cert_path, s->url, ssl ? "https is not supported "
		    "(responders answer over http)" : "not a URL");
		goto out;
	}
	snprintf(s->host, sizeof(s->host), "%s", host);
	snprintf(s->path, sizeof(s->path), "%s", path);
	s->port = atoi(port);
	if (netutil_resolve(host, s->port, &s->addr, &s->addrlen, why,
	    sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: OCSP responder %s: %s",
		    s->cert_path, s->url, why);
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	OPENSSL_free(host);
	OPENSSL_free(port);
	OPENSSL_free(path);
	X509_email_free(urls);
	return rc;
}

static void
cache_path(struct tls_ocsp *s)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	s->cache[0] = '\0';
	if (s->dir[0] == '\0' ||
	    !X509_digest(s->leaf, EVP_sha256(), md, &mdlen))
		return;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(s->cache, sizeof(s->cache), "%s/%s.der", s->dir, hex);
}

/* ---- responses ---- */

static time_t
asn1_time(const ASN1_GENERALIZEDTIME *t)
{
	struct tm tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

/*
 * Whether `der` is a response to staple for s's certificate now; its
 * validity in *this_update, *expires.
 */
static bool
verify(const struct tls_ocsp *s, const unsigned char *der, size_t len,
    time_t *this_update, time_t *expires, char *why, size_t whylen)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	OCSP_BASICRESP *bs = NULL;
	X509_STORE *store = NULL;
	STACK_OF(X509) *certs = NULL;
	ASN1_GENERALIZEDTIME *thisupd = NULL, *nextupd = NULL;
	int status = -1, reason = 0;
	bool ok = false;

	if (r == NULL || p != der + len) {
		snprintf(why, whylen, "not a DER OCSP response");
		goto out;
	}
	if (OCSP_response_status(r) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		snprintf(why, whylen, "responder says %s",
		    OCSP_response_status_str(OCSP_response_status(r)));
		goto out;
	}
	if ((bs = OCSP_response_get1_basic(r)) == NULL ||
	    (store = X509_STORE_new()) == NULL ||
	    (certs = sk_X509_new_null()) == NULL ||
	    !X509_STORE_add_cert(store, s->issuer) ||
	    !sk_X509_push(certs, s->issuer)) {
		snprintf(why, whylen, "no basic response (or no memory)");
		goto out;
	}
	/* The issuer is the anchor, whether or not it is a root. */
	X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
	if (OCSP_basic_verify(bs, certs, store, 0) <= 0) {
		char e[200];
		openssl_why(e, sizeof(e));
		snprintf(why, whylen, "signature does not verify: %s", e);
		goto out;
	}
	if (!OCSP_resp_find_status(bs, s->id, &status, &reason, NULL,
	    &thisupd, &nextupd)) {
		snprintf(why, whylen, "no status for this certificate");
		goto out;
	}
	if (status != V_OCSP_CERTSTATUS_GOOD) {
		snprintf(why, whylen, "certificate status %s%s%s",
		    OCSP_cert_status_str(status), status ==
		    V_OCSP_CERTSTATUS_REVOKED ? ": " : "", status ==
		    V_OCSP_CERTSTATUS_REVOKED ? OCSP_crl_reason_str(reason) :
		    "");
		goto out;
	}
	if (!OCSP_check_validity(thisupd, nextupd, CLOCK_SKEW, -1)) {
		snprintf(why, whylen, "outside its validity (expired, or "
		    "not yet valid)");
		goto out;
	}
	*this_update = asn1_time(thisupd);
	*expires = nextupd != NULL ? asn1_time(nextupd) :
	    *this_update + NO_NEXT_UPDATE;
	if (*expires <= time(NULL)) {
		snprintf(why, whylen, "expired");
		goto out;
	}
	ok = true;
out:
	ERR_clear_error();
	sk_X509_free(certs);
	X509_STORE_free(store);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(r);
	return ok;
}

/* Takes der (malloc'd) as the response in use. */
static void
install(struct tls_ocsp *s, unsigned char *der, size_t len, time_t this_update,
    time_t expires)
{
	free(s->der);
	s->der = der;
	s->len = len;
	s->this_update = this_update;
	s->expires = expires;
}

static void
drop(struct tls_ocsp *s)
{
	install(s, NULL, 0, 0, 0);
}

static int
read_all(const char *path, unsigned char **out, size_t *len,
    struct stat *st, char *why, size_t whylen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *buf = NULL;
	ssize_t n;

	if (fd < 0 || fstat(fd, st) < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (st->st_size <= 0 || st->st_size > MAX_RESPONSE ||
	    (buf = malloc((size_t)st->st_size)) == NULL) {
		snprintf(why, whylen, "%lld bytes", (long long)st->st_size);
		close(fd);
		return -1;
	}
	n = read(fd, buf, (size_t)st->st_size);
	close(fd);
	if (n != st->st_size) {
		snprintf(why, whylen, "short read");
		free(buf);
		return -1;
	}
	*out = buf;
	*len = (size_t)n;
	return 0;
}

/* A response from a file: in use if it verifies.  0, or -1 with why. */
static int
load(struct tls_ocsp *s, const char *path, char *why, size_t whylen)
{
	unsigned char *der;
	size_t len;
	struct stat st;
	time_t tu, ex;

	if (read_all(path, &der, &len, &st, why, whylen) < 0)
		return -1;
	if (path == s->cache) {
		s->cache_mtime = st.st_mtim;
		s->cache_ino = st.st_ino;
	}
	if (!verify(s, der, len, &tu, &ex, why, whylen)) {
		free(der);
		return -1;
	}
	install(s, der, len, tu, ex);
	return 0;
}

/* The fetcher's response, for the other workers (and restarts). */
static void
cache_write(struct tls_ocsp *s)
{
	char tmp[1100];
	int fd;
	bool ok;

	if (s->cache[0] == '\0')
		return;
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", s->cache, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ok = fd >= 0 && write(fd, s->der, s->len) == (ssize_t)s->len;
	if (fd >= 0 && close(fd) < 0)
		ok = false;
	if (!ok || rename(tmp, s->cache) < 0) {
		LOGW("ocsp [%s] %s: cannot keep the response in %s: %s",
		    s->name, s->cert_path, s->dir, strerror(errno));
		unlink(tmp);
	}
}

/* ---- fetching (the fetcher) ---- */

static void
schedule(struct tls_ocsp *s, double after)
{
	ev_timer_stop(s->loop, &s->timer);
	ev_timer_set(&s->timer, after > 0 ? after : 0, 0.);
	ev_timer_start(s->loop, &s->timer);
}

/*
 * When to fetch again: once half of the response's validity has passed;
 * past that (a response that came in old), half of what is left, at most
 * a minute and at least a second, so a responder that serves old
 * responses is not asked in a loop.  Now when there is none.
 */
static double
refresh_in(const struct tls_ocsp *s)
{
	time_t now = time(NULL);
	double d;

	if (s->der == NULL)
		return 0;
	d = (double)(s->this_update + (s->expires - s->this_update) / 2 -
	    now);
	if (d < 1) {
		d = (double)(s->expires - now) / 2;
		d = d > RETRY_AFTER ? RETRY_AFTER : d < 1 ? 1 : d;
	}
	return d;
}

static void
fetch_close(struct tls_ocsp *s)
{
	if (s->loop != NULL) {
		ev_io_stop(s->loop, &s->io);
		ev_timer_stop(s->loop, &s->deadline);
	}
	OSSL_HTTP_REQ_CTX_free(s->rctx);
	s->rctx = NULL;
	BIO_free(s->bio);
	s->bio = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->state = FETCH_IDLE;
}

static void
fetch_failed(struct tls_ocsp *s, const char *why)
{
	fetch_close(s);
	s->failures++;
	LOGW("ocsp [%s] %s: fetch from %s failed: %s; %s, retrying in %.0f s",
	    s->name, s->cert_path, s->url, why, s->der != NULL ?
	    "the current response stays stapled" : "nothing stapled",
	    RETRY_AFTER);
	schedule(s, RETRY_AFTER);
}

static void
fetch_wait(struct tls_ocsp *s, int events)
{
	ev_io_stop(s->loop, &s->io);
	ev_io_set(&s->io, s->fd, events);
	ev_io_start(s->loop, &s->io);
}

/* One step of OpenSSL's HTTP exchange, on readiness. */
static void
exchange(struct tls_ocsp *s)
{
	ASN1_VALUE *val = NULL;
	unsigned char *der = NULL, *p;
	time_t tu, ex;
	char why[256];
	int rv, n;

	ERR_clear_error();
	rv = OSSL_HTTP_REQ_CTX_nbio_d2i(s->rctx, &val,
	    ASN1_ITEM_rptr(OCSP_RESPONSE));
	if (rv < 0) {
		fetch_wait(s, BIO_should_write(s->bio) ? EV_WRITE : EV_READ);
		return;
	}
	if (rv == 0 || val == NULL) {
		char e[256];
		openssl_why(e, sizeof(e));
		fetch_failed(s, e);
		return;
	}
	n = i2d_OCSP_RESPONSE((OCSP_RESPONSE *)val, NULL);
	if (n <= 0 || n > MAX_RESPONSE || (der = malloc((size_t)n)) == NULL) {
		OCSP_RESPONSE_free((OCSP_RESPONSE *)val);
		fetch_failed(s, "response too large");
		return;
	}
	p = der;
	i2d_OCSP_RESPONSE((OCSP_RESPONSE *)val, &p);
	OCSP_RESPONSE_free((OCSP_RESPONSE *)val);
	fetch_close(s);
	if (!verify(s, der, (size_t)n, &tu, &ex, why, sizeof(why))) {
		free(der);
		fetch_failed(s, why);
		return;
	}
	install(s, der, (size_t)n, tu, ex);
	cache_write(s);
	LOGI("ocsp [%s] %s: response from %s stapled: good, valid for %lld s",
	    s->name, s->cert_path, s->url, (long long)(ex - time(NULL)));
	schedule(s, refresh_in(s));
}

/* The connect finished: hand the socket to OpenSSL's HTTP client. */
static int
exchange_begin(struct tls_ocsp *s)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	OCSP_CERTID *id = OCSP_CERTID_dup(s->id);
	int rc = -1;

	if (req == NULL || id == NULL || !OCSP_request_add0_id(req, id)) {
		OCSP_CERTID_free(id);
		goto out;
	}
	s->bio = BIO_new_socket(s->fd, BIO_NOCLOSE);
	if (s->bio == NULL)
		goto out;
	s->rctx = OSSL_HTTP_REQ_CTX_new(s->bio, s->bio, 0);
	if (s->rctx == NULL ||
	    !OSSL_HTTP_REQ_CTX_set_request_line(s->rctx, 1, NULL, NULL,
	    s->path) ||
	    !OSSL_HTTP_REQ_CTX_add1_header(s->rctx, "Host", s->host) ||
	    !OSSL_HTTP_REQ_CTX_set_expected(s->rctx,
	    "application/ocsp-response", 1, 0, 0) ||
	    !OSSL_HTTP_REQ_CTX_set1_req(s->rctx, "application/ocsp-request",
	    ASN1_ITEM_rptr(OCSP_REQUEST), (const ASN1_VALUE *)req))
		goto out;
	OSSL_HTTP_REQ_CTX_set_max_response_length(s->rctx, MAX_RESPONSE);
	s->state = FETCH_EXCHANGING;
	rc = 0;
out:
	OCSP_REQUEST_free(req);
	return rc;
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct tls_ocsp *s = w->data;
	int err = 0;
	socklen_t elen = sizeof(err);

	(void)loop;
	(void)revents;
	if (s->state == FETCH_CONNECTING) {
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		if (err != 0) {
			char why[128];
			snprintf(why, sizeof(why), "connect: %s",
			    strerror(err));
			fetch_failed(s, why);
			return;
		}
		if (exchange_begin(s) < 0) {
			char e[256];
			openssl_why(e, sizeof(e));
			fetch_failed(s, e);
			return;
		}
	}
	exchange(s);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tls_ocsp *s = w->data;
	char why[96];

	(void)loop;
	(void)revents;
	snprintf(why, sizeof(why), "no answer within %g s", s->timeout);
	fetch_failed(s, why);
}

static void
fetch_start(struct tls_ocsp *s)
{
	char why[128];

	if (s->state != FETCH_IDLE)
		return;
	s->fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		snprintf(why, sizeof(why), "socket: %s", strerror(errno));
		fetch_failed(s, why);
		return;
	}
	if (connect(s->fd, (struct sockaddr *)&s->addr, s->addrlen) < 0 &&
	    errno != EINPROGRESS) {
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		fetch_failed(s, why);
		return;
	}
	s->state = FETCH_CONNECTING;
	ev_timer_set(&s->deadline, s->timeout, 0.);
	ev_timer_start(s->loop, &s->deadline);
	fetch_wait(s, EV_WRITE);
}

/* ---- following dir (the other workers) ---- */

static void
follow(struct tls_ocsp *s)
{
	struct stat st;
	char why[256];

	if (stat(s->cache, &st) < 0)
		return;
	if (st.st_ino == s->cache_ino && st.st_mtim.tv_sec ==
	    s->cache_mtime.tv_sec && st.st_mtim.tv_nsec ==
	    s->cache_mtime.tv_nsec)
		return;
	if (load(s, s->cache, why, sizeof(why)) < 0)
		LOGW("ocsp [%s] %s: %s: %s; not stapled", s->name,
		    s->cert_path, s->cache, why);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tls_ocsp *s = w->data;

	(void)loop;
	(void)revents;
	if (s->fetcher)
		fetch_start(s);
	else
		follow(s);
}

/* ---- life ---- */

/* The certificate's parts: leaf, issuer, id, and for auto the responder. */
static int
read_cert(struct tls_ocsp *s, char *err, size_t errlen)
{
	X509 *leaf, *issuer;
	OCSP_CERTID *id;

	if (read_chain(s->cert_path, &leaf, &issuer, err, errlen) < 0)
		return -1;
	if (s->file[0] == '\0' && responder(s, leaf, err, errlen) < 0) {
		X509_free(leaf);
		X509_free(issuer);
		return -1;
	}
	id = OCSP_cert_to_id(NULL, leaf, issuer);
	if (id == NULL) {
		snprintf(err, errlen, "%s: no OCSP id", s->cert_path);
		X509_free(leaf);
		X509_free(issuer);
		return -1;
	}
	X509_free(s->leaf);
	X509_free(s->issuer);
	OCSP_CERTID_free(s->id);
	s->leaf = leaf;
	s->issuer = issuer;
	s->id = id;
	cache_path(s);
	return 0;
}

struct tls_ocsp *
tls_ocsp_new(const struct tls_ocsp_opts *o, char *err, size_t errlen)
{
	struct tls_ocsp *s = calloc(1, sizeof(*s));
	char why[256];

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->fd = -1;
	snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "");
	snprintf(s->cert_path, sizeof(s->cert_path), "%s", o->cert);
	snprintf(s->file, sizeof(s->file), "%s", o->file ? o->file : "");
	snprintf(s->dir, sizeof(s->dir), "%s", o->file == NULL && o->dir ?
	    o->dir : "");
	s->timeout = o->timeout > 0 ? o->timeout : 10;
	ev_timer_init(&s->timer, timer_cb, 0., 0.);
	ev_timer_init(&s->deadline, deadline_cb, 0., 0.);
	ev_io_init(&s->io, io_cb, -1, EV_WRITE);
	s->timer.data = s->deadline.data = s->io.data = s;
	if (read_cert(s, err, errlen) < 0)
		goto fail;
	if (s->dir[0] != '\0' && access(s->dir, W_OK | X_OK) < 0) {
		snprintf(err, errlen, "ocsp_dir %s: %s (ocsp = auto keeps its "
		    "responses there)", s->dir, strerror(errno));
		goto fail;
	}
	if (s->file[0] != '\0' && load(s, s->file, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "OCSP response %s: %s", s->file, why);
		goto fail;
	}
	/* auto: what an earlier run kept, if it still verifies. */
	if (s->file[0] == '\0' && s->cache[0] != '\0' &&
	    load(s, s->cache, why, sizeof(why)) < 0 && errno != ENOENT)
		LOGD("ocsp [%s] %s: %s: %s", s->name, s->cert_path, s->cache,
		    why);
	return s;
fail:
	tls_ocsp_free(s);
	return NULL;
}

void
tls_ocsp_start(struct tls_ocsp *s, struct ev_loop *loop, bool fetcher)
{
	if (s->file[0] != '\0')
		return;
	s->loop = loop;
	s->fetcher = fetcher;
	/*
	 * A worker restarted long after the start is a copy of the
	 * supervisor, which does not follow dir: take the newest response.
	 */
	follow(s);
	if (fetcher) {
		schedule(s, refresh_in(s));
	} else {
		ev_timer_set(&s->timer, FOLLOW_EVERY, FOLLOW_EVERY);
		ev_timer_start(loop, &s->timer);
	}
}

int
tls_ocsp_reload(struct tls_ocsp *s, char *err, size_t errlen)
{
	X509 *old = s->leaf;
	bool same;
	char why[256];

	X509_up_ref(old);
	if (read_cert(s, err, errlen) < 0) {
		X509_free(old);
		return -1;
	}
	same = X509_cmp(old, s->leaf) == 0;
	X509_free(old);
	if (s->file[0] != '\0') {
		if (load(s, s->file, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "OCSP response %s: %s", s->file,
			    why);
			if (!same)
				drop(s);
			return -1;
		}
		return 0;
	}
	if (same)
		return 0;
	drop(s);
	load(s, s->cache, why, sizeof(why));
	if (s->loop != NULL && s->fetcher) {
		fetch_close(s);
		schedule(s, refresh_in(s));
	}
	return 0;
}

void
tls_ocsp_free(struct tls_ocsp *s)
{
	if (s == NULL)
		return;
	fetch_close(s);
	if (s->loop != NULL)
		ev_timer_stop(s->loop, &s->timer);
	X509_free(s->leaf);
	X509_free(s->issuer);
	OCSP_CERTID_free(s->id);
	free(s->der);
	free(s);
}

bool
tls_ocsp_staple(struct tls_ocsp *s, const void *leaf, unsigned char **der,
    size_t *len)
{
	if (s->der == NULL)
		return false;
	if (time(NULL) >= s->expires) {
		LOGW("ocsp [%s] %s: the response expired; no longer stapled",
		    s->name, s->cert_path);
		drop(s);
		if (s->fetcher && s->state == FETCH_IDLE)
			schedule(s, 0);
		return false;
	}
	/* A handshake begun on a context from before a reload. */
	if (leaf != NULL && X509_cmp(leaf, s->leaf) != 0)
		return false;
	*der = OPENSSL_memdup(s->der, s->len);
	if (*der == NULL)
		return false;
	*len = s->len;
	return true;
}

void
tls_ocsp_render_metrics(struct tls_ocsp *const *all, size_t n,
    struct buffer *out)
{
	char lst[160], cert[1100];
	time_t now = time(NULL);

	if (n == 0)
		return;
	metrics_family(out, "ferry_ocsp_stapling", "gauge", "1 while a valid "
	    "OCSP response is stapled to the certificate's handshakes.");
	for (size_t i = 0; i < n; i++) {
		metrics_escape(all[i]->name, lst, sizeof(lst));
		metrics_escape(all[i]->cert_path, cert, sizeof(cert));
		metrics_printf(out, "ferry_ocsp_stapling{listener=\"%s\","
		    "cert=\"%s\"} %d\n", lst, cert, all[i]->der != NULL &&
		    now < all[i]->expires);
	}
	metrics_family(out, "ferry_ocsp_response_age_seconds", "gauge",
	    "Seconds since the thisUpdate of the stapled OCSP response.");
	for (size_t i = 0; i < n; i++) {
		if (all[i]->der == NULL || now >= all[i]->expires)
			continue;
		metrics_escape(all[i]->name, lst, sizeof(lst));
		metrics_escape(all[i]->cert_path, cert, sizeof(cert));
		metrics_printf(out, "ferry_ocsp_response_age_seconds{listener="
		    "\"%s\",cert=\"%s\"} %lld\n", lst, cert,
		    (long long)(now - all[i]->this_update));
	}
	metrics_family(out, "ferry_ocsp_fetch_failures_total", "counter",
	    "OCSP fetches that failed (this worker fetches: worker 0).");
	for (size_t i = 0; i < n; i++) {
		metrics_escape(all[i]->name, lst, sizeof(lst));
		metrics_escape(all[i]->cert_path, cert, sizeof(cert));
		metrics_printf(out, "ferry_ocsp_fetch_failures_total{listener="
		    "\"%s\",cert=\"%s\"} %llu\n", lst, cert,
		    (unsigned long long)all[i]->failures);
	}
}
