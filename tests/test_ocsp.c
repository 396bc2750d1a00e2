/*
 * OCSP stapling (tls_ocsp.h), end to end: the real binary, a PKI made per
 * test by scripts/gen-certs.sh --pki whose certificates name a responder
 * on a loopback port, and responders started by the test: `openssl ocsp`
 * (good, revoked), or a thread of the test answering a response it built
 * (expired), or not answering at all (slow), or nothing listening (down).
 * The client asks for the status (SSL_set_tlsext_status_type) and reads
 * the staple; once, `openssl s_client -status` does.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static struct backend be, resp;
static pid_t responder = -1;
static char pki[128];
static pid_t stopped;
static char cur_cert[64];		/* the certificate ferry serves */

static void
rm_rf(const char *dir)
{
	char cmd[300];

	if (dir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static void
cleanup(void)
{
	if (stopped > 0)
		kill(stopped, SIGCONT);
	stopped = 0;
	ferry_cleanup(&fp);
	if (responder > 0) {
		kill(responder, SIGKILL);
		waitpid(responder, NULL, 0);
		responder = -1;
	}
	if (be.lfd > 0)
		backend_stop(&be);
	if (resp.lfd > 0)
		backend_stop(&resp);
	rm_rf(pki);
	pki[0] = '\0';
}

/* A port nobody listens on now (bound, read back, closed). */
static int
free_port(void)
{
	int port, fd = listen_loopback(false, &port);

	close(fd);
	return port;
}

/* The test PKI in a fresh directory, naming the responder on `port`. */
static void
make_pki(int port)
{
	char cmd[512];

	snprintf(pki, sizeof(pki), "/tmp/ferry-ocsp-XXXXXX");
	cr_assert_not_null(mkdtemp(pki));
	snprintf(cmd, sizeof(cmd), "%s/scripts/gen-certs.sh --pki %s "
	    "http://127.0.0.1:%d", FERRY_SRCDIR, pki, port);
	cr_assert_eq(system(cmd), 0, "gen-certs.sh --pki failed");
	snprintf(cmd, sizeof(cmd), "mkdir %s/cache", pki);
	cr_assert_eq(system(cmd), 0);
}

static void
pki_file(const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", pki, name);
}

/*
 * `openssl ocsp` answering from the PKI's index, until killed; false if
 * it did not come up (its port taken meanwhile, or another failure,
 * which its stderr in the PKI's ocsp.err says).
 */
static bool
start_openssl_responder(int port)
{
	char p[16], index[192], ca[192], key[192];

	snprintf(p, sizeof(p), "%d", port);
	pki_file("index.txt", index, sizeof(index));
	pki_file("ca.pem", ca, sizeof(ca));
	pki_file("ca.key", key, sizeof(key));
	int pfd[2];
	cr_assert_eq(pipe(pfd), 0);
	responder = fork();
	cr_assert_geq(responder, 0);
	if (responder == 0) {
		char errf[192];
		pki_file("ocsp.err", errf, sizeof(errf));
		int efd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(pfd[1], 1);
		dup2(efd, 2);
		execlp("openssl", "openssl", "ocsp", "-port", p, "-index",
		    index, "-CA", ca, "-rsigner", ca, "-rkey", key, "-ndays",
		    "1", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	/*
	 * It says "ACCEPT addr:port" once listening.  (A probe connection
	 * would not do: the responder serves one connection at a time and
	 * waits on the probe.)
	 */
	char out[256] = "";
	size_t got = 0;
	struct pollfd pl = { .fd = pfd[0], .events = POLLIN };
	while (got < sizeof(out) - 1 && poll(&pl, 1, 10000) == 1) {
		ssize_t n = read(pfd[0], out + got, sizeof(out) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		out[got] = '\0';
		if (strstr(out, "ACCEPT") != NULL && strchr(out, '\n')) {
			close(pfd[0]);
			return true;
		}
	}
	close(pfd[0]);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "cat %s/ocsp.err >&2", pki);
	if (system(cmd) != 0)
		cr_log_warn("no ocsp.err");
	kill(responder, SIGKILL);
	waitpid(responder, NULL, 0);
	responder = -1;
	return false;
}

/*
 * A PKI naming a port picked now, and `openssl ocsp` on it: the port is
 * free when picked, but another process may take it before the responder
 * binds it, so a few tries.
 */
static void
pki_with_openssl_responder(void)
{
	for (int i = 0; i < 3; i++) {
		int port = free_port();
		make_pki(port);
		if (start_openssl_responder(port))
			return;
		rm_rf(pki);
	}
	cr_assert_fail("openssl ocsp did not start, three times");
}

/* ---- responses built by the test ---- */

static X509 *
read_cert(const char *name)
{
	char path[192];
	FILE *f;
	X509 *x;

	pki_file(name, path, sizeof(path));
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x);
	return x;
}

static EVP_PKEY *
read_key(const char *name)
{
	char path[192];
	FILE *f;
	EVP_PKEY *k;

	pki_file(name, path, sizeof(path));
	f = fopen(path, "r");
	cr_assert_not_null(f);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(k);
	return k;
}

/*
 * A "good" response for server.pem, valid from now + this_off to now +
 * next_off seconds, signed by the CA (or, `rogue`, by the server's own
 * key, which is no responder).
 */
static unsigned char *
make_response(long this_off, long next_off, bool rogue, size_t *len)
{
	X509 *leaf = read_cert("server.pem"), *ca = read_cert("ca.pem");
	X509 *signer = rogue ? leaf : ca;
	EVP_PKEY *key = read_key(rogue ? "server.key" : "ca.key");
	OCSP_CERTID *id = OCSP_cert_to_id(NULL, leaf, ca);
	OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
	ASN1_TIME *tu = X509_gmtime_adj(NULL, this_off);
	ASN1_TIME *nu = X509_gmtime_adj(NULL, next_off);
	OCSP_RESPONSE *r;
	unsigned char *der = NULL;

	cr_assert(OCSP_basic_add1_status(bs, id, V_OCSP_CERTSTATUS_GOOD, 0,
	    NULL, tu, nu) != NULL);
	cr_assert_eq(OCSP_basic_sign(bs, signer, key, EVP_sha256(), NULL, 0),
	    1);
	r = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
	int n = i2d_OCSP_RESPONSE(r, &der);
	cr_assert_gt(n, 0);
	*len = (size_t)n;
	OCSP_RESPONSE_free(r);
	OCSP_BASICRESP_free(bs);
	OCSP_CERTID_free(id);
	ASN1_TIME_free(tu);
	ASN1_TIME_free(nu);
	EVP_PKEY_free(key);
	X509_free(leaf);
	X509_free(ca);
	return der;
}

static void
write_file(const char *path, const unsigned char *p, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(p, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

struct canned {
	unsigned char *der;
	size_t len;
	bool silent;		/* read the request, never answer */
	const char *status;	/* the HTTP status line's end; NULL: 200 OK */
	volatile int asked;
};

/* A responder thread: reads one HTTP request, answers the canned one. */
static void
serve_canned(int fd, void *arg)
{
	struct canned *c = arg;
	char buf[4096], head[160];
	size_t got = 0;
	ssize_t n;

	while (got < sizeof(buf) - 1 && (n = read(fd, buf + got,
	    sizeof(buf) - 1 - got)) > 0) {
		got += (size_t)n;
		buf[got] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		char *cl = strcasestr(buf, "Content-Length:");
		if (end != NULL && cl != NULL && got >= (size_t)(end + 4 -
		    buf) + (size_t)atoi(cl + 15))
			break;
	}
	__atomic_add_fetch(&c->asked, 1, __ATOMIC_SEQ_CST);
	if (c->silent) {
		/* Until ferry gives up and closes (10 s at most). */
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		return;
	}
	snprintf(head, sizeof(head), "HTTP/1.0 %s\r\nContent-Type: "
	    "application/ocsp-response\r\nContent-Length: %zu\r\n\r\n",
	    c->status ? c->status : "200 OK", c->len);
	if (write(fd, head, strlen(head)) < 0 || write(fd, c->der, c->len) < 0)
		return;
}

/* ---- ferry and its clients ---- */

static void
start_ferry(int workers, const char *cert, const char *ocsp,
    const char *extra)
{
	char conf[2048], c[192], k[192], dir[192];

	if (be.lfd <= 0)
		backend_start(&be, false, backend_echo, NULL);
	snprintf(cur_cert, sizeof(cur_cert), "%s", cert);
	pki_file(cert, c, sizeof(c));
	snprintf(k, sizeof(k), "%.*s.key", (int)(strlen(c) - 4), c);
	pki_file("cache", dir, sizeof(dir));
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = %d\nadmin = "
	    "127.0.0.1:0\nocsp_dir = %s\n%s[web]\nmode = forward\nbind = "
	    "127.0.0.1:0\ncert = %s\nkey = %s\nocsp = %s\nbackend = "
	    "127.0.0.1:%d\n", workers, dir, extra, c, k, ocsp, be.port);
	ferry_start_args(&fp, conf, workers, NULL);
}

/*
 * A handshake asking for the status: the staple's bytes (malloc'd) and
 * length, or NULL when none came.
 */
static unsigned char *staple_sni(int port, const char *sni, size_t *len);

static unsigned char *
staple(int port, size_t *len)
{
	return staple_sni(port, NULL, len);
}

/* The same, sending `sni` (NULL: none). */
static unsigned char *
staple_sni(int port, const char *sni, size_t *len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	int fd = connect_loopback(false, port);
	const unsigned char *p = NULL;
	unsigned char *out = NULL;
	long n;

	SSL_set_fd(ssl, fd);
	if (sni != NULL)
		SSL_set_tlsext_host_name(ssl, sni);
	SSL_set_tlsext_status_type(ssl, TLSEXT_STATUSTYPE_ocsp);
	cr_assert_eq(SSL_connect(ssl), 1, "handshake failed");
	n = SSL_get_tlsext_status_ocsp_resp(ssl, &p);
	if (n > 0 && p != NULL) {
		out = malloc((size_t)n);
		memcpy(out, p, (size_t)n);
		*len = (size_t)n;
	}
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return out;
}

/* The certificate status a staple says (V_OCSP_CERTSTATUS_*), or -1. */
static int
staple_status(const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	OCSP_BASICRESP *bs = r ? OCSP_response_get1_basic(r) : NULL;
	int status = -1, reason;

	if (bs != NULL && OCSP_resp_count(bs) == 1)
		status = OCSP_single_get0_status(OCSP_resp_get0(bs, 0),
		    &reason, NULL, NULL, NULL);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(r);
	return status;
}

/* Waits (bounded) until a handshake gets a staple; returns it. */
static unsigned char *
wait_staple(int port, size_t *len)
{
	for (int i = 0; i < 100; i++) {
		unsigned char *s = staple(port, len);
		if (s != NULL)
			return s;
		usleep(50 * 1000);
	}
	return NULL;
}

static double
metric(const char *family)
{
	char series[512], c[192];

	pki_file(cur_cert, c, sizeof(c));
	snprintf(series, sizeof(series), "%s{listener=\"web\",cert=\"%s\"}",
	    family, c);
	return ferry_metric(&fp, series);
}

static int
workers(pid_t *out, int n)
{
	int got = 0;

	for (int i = 0; i < 1000 && (got = ferry_children(&fp, out, 8)) != n;
	    i++)
		usleep(10 * 1000);
	cr_assert_eq(got, n, "%d workers, not %d", got, n);
	return got;
}

/* ---- tests ---- */

/*
 * Good: worker 0 fetches, both workers staple (the other one from
 * ocsp_dir), `openssl s_client -status` sees it; a restart staples from
 * ocsp_dir with the responder gone.
 */
Test(ocsp, auto_good_stapled_by_every_worker_and_kept, .timeout = 90,
    .fini = cleanup)
{
	unsigned char *s;
	size_t len;
	pid_t w[8];
	char cmd[256], out[8192];

	pki_with_openssl_responder();
	start_ferry(2, "server.pem", "auto", "");
	int port = ferry_port(&fp, "web");
	cr_assert(ferry_log_wait(&fp, "stapled: good", 1, 20));
	workers(w, 2);
	for (int i = 0; i < 2; i++) {
		stopped = w[1 - i];
		kill(stopped, SIGSTOP);
		s = wait_staple(port, &len);
		cr_assert_not_null(s, "worker %d staples nothing", i);
		cr_assert_eq(staple_status(s, len), V_OCSP_CERTSTATUS_GOOD);
		free(s);
		kill(stopped, SIGCONT);
		stopped = 0;
	}
	snprintf(cmd, sizeof(cmd), "echo | openssl s_client -connect "
	    "127.0.0.1:%d -status 2>&1", port);
	FILE *p = popen(cmd, "r");
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	pclose(p);
	cr_assert_not_null(strstr(out, "Cert Status: good"), "%s", out);
	cr_assert_eq(metric("ferry_ocsp_stapling"), 1);
	cr_assert_geq(metric("ferry_ocsp_response_age_seconds"), 0);
	cr_assert_eq(metric("ferry_ocsp_fetch_failures_total"), 0);
	cr_assert_eq(ferry_log_count(&fp, "stapled: good"), 1,
	    "only worker 0 fetches");
	/* Restart, responder gone: the kept response is stapled at once. */
	ferry_stop(&fp);
	kill(responder, SIGKILL);
	waitpid(responder, NULL, 0);
	responder = -1;
	start_ferry(1, "server.pem", "auto", "");
	s = staple(ferry_port(&fp, "web"), &len);
	cr_assert_not_null(s, "the response kept in ocsp_dir was not used");
	free(s);
	cr_assert_eq(metric("ferry_ocsp_fetch_failures_total"), 0);
}

/*
 * Worker 0, the fetcher, killed: its replacement (a copy of the
 * supervisor, which fetched nothing) staples what is in ocsp_dir at once
 * and does not ask the responder again.
 */
Test(ocsp, restarted_fetcher_uses_ocsp_dir, .timeout = 90,
    .fini = cleanup)
{
	unsigned char *s;
	size_t len;
	pid_t w[8], now[8];

	pki_with_openssl_responder();
	start_ferry(2, "server.pem", "auto", "");
	int port = ferry_port(&fp, "web");
	cr_assert(ferry_log_wait(&fp, "stapled: good", 1, 20));
	workers(w, 2);
	/* The fetcher is the one that logged the fetch. */
	char *log = ferry_log_read(&fp), needle[64];
	snprintf(needle, sizeof(needle), "ferry[%ld] INFO ocsp", (long)w[0]);
	pid_t fetcher = strstr(log, needle) ? w[0] : w[1];
	pid_t other = fetcher == w[0] ? w[1] : w[0];
	free(log);
	kill(fetcher, SIGKILL);
	cr_assert(ferry_log_wait(&fp, " ready: ", 3, 10));
	workers(now, 2);
	pid_t fresh = now[0] == other ? now[1] : now[0];
	cr_assert_neq(fresh, fetcher);
	stopped = other;
	kill(other, SIGSTOP);
	s = staple(port, &len);
	cr_assert_not_null(s, "the restarted worker staples nothing");
	cr_assert_eq(staple_status(s, len), V_OCSP_CERTSTATUS_GOOD);
	free(s);
	kill(other, SIGCONT);
	stopped = 0;
	cr_assert_eq(ferry_log_count(&fp, "stapled: good"), 1,
	    "the restarted worker fetched again");
}

/* Whether a staple is about `name`.pem of the PKI (its serial). */
static bool
staple_for(const unsigned char *der, size_t len, const char *name)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	OCSP_BASICRESP *bs = r ? OCSP_response_get1_basic(r) : NULL;
	X509 *leaf = read_cert(name);
	ASN1_INTEGER *serial = NULL;
	bool same = false;

	if (bs != NULL && OCSP_resp_count(bs) == 1 &&
	    OCSP_id_get0_info(NULL, NULL, NULL, &serial,
	    (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(OCSP_resp_get0(bs, 0))))
		same = ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(leaf))
		    == 0;
	X509_free(leaf);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(r);
	return same;
}

/*
 * Per certificate: two certificates on one listener, chosen by SNI, each
 * stapled with its own response (one fetch each, two series of metrics).
 */
Test(ocsp, per_certificate_by_sni, .timeout = 60, .fini = cleanup)
{
	char conf[2048], dir[192], c1[192], k1[192], c2[192], k2[192];
	unsigned char *s;
	size_t len;

	pki_with_openssl_responder();
	backend_start(&be, false, backend_echo, NULL);
	pki_file("cache", dir, sizeof(dir));
	pki_file("server.pem", c1, sizeof(c1));
	pki_file("server.key", k1, sizeof(k1));
	pki_file("other.pem", c2, sizeof(c2));
	pki_file("other.key", k2, sizeof(k2));
	snprintf(conf, sizeof(conf), "[ferry]\nadmin = 127.0.0.1:0\nocsp_dir = "
	    "%s\n[web]\nmode = forward\nbind = 127.0.0.1:0\ncert = %s\n"
	    "key = %s\ncert = %s\nkey = %s\nocsp = auto\nbackend = "
	    "127.0.0.1:%d\n", dir, c1, k1, c2, k2, be.port);
	ferry_start(&fp, conf);
	int port = ferry_port(&fp, "web");
	cr_assert(ferry_log_wait(&fp, "stapled: good", 2, 20));
	s = staple_sni(port, "localhost", &len);
	cr_assert_not_null(s);
	cr_assert(staple_for(s, len, "server.pem"), "localhost got another "
	    "certificate's response");
	free(s);
	s = staple_sni(port, "other.test", &len);
	cr_assert_not_null(s);
	cr_assert(staple_for(s, len, "other.pem"), "other.test got another "
	    "certificate's response");
	free(s);
	snprintf(cur_cert, sizeof(cur_cert), "other.pem");
	cr_assert_eq(metric("ferry_ocsp_stapling"), 1);
	snprintf(cur_cert, sizeof(cur_cert), "server.pem");
	cr_assert_eq(metric("ferry_ocsp_stapling"), 1);
}

/*
 * SIGHUP with a new certificate in the same files: the old one's
 * response is dropped and the new one's fetched at once.
 */
Test(ocsp, sighup_new_certificate_fetched, .timeout = 60, .fini = cleanup)
{
	char cmd[512];
	unsigned char *s;
	size_t len;

	pki_with_openssl_responder();
	snprintf(cmd, sizeof(cmd), "cd %s && cp server.pem live.pem && "
	    "cp server.key live.key", pki);
	cr_assert_eq(system(cmd), 0);
	start_ferry(1, "live.pem", "auto", "");
	int port = ferry_port(&fp, "web");
	cr_assert(ferry_log_wait(&fp, "stapled: good", 1, 20));
	s = staple(port, &len);
	cr_assert(s != NULL && staple_for(s, len, "server.pem"));
	free(s);
	snprintf(cmd, sizeof(cmd), "cd %s && cp other.pem live.pem && "
	    "cp other.key live.key", pki);
	cr_assert_eq(system(cmd), 0);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 1, 10));
	cr_assert(ferry_log_wait(&fp, "stapled: good", 2, 20),
	    "the new certificate's response was not fetched");
	s = wait_staple(port, &len);
	cr_assert(s != NULL && staple_for(s, len, "other.pem"),
	    "the new certificate is stapled with the old one's response");
	free(s);
}

static void
expect_no_staple(const char *log_needle)
{
	size_t len;

	if (!ferry_log_wait(&fp, log_needle, 1, 20)) {
		ferry_log_dump(&fp);
		cr_assert_fail("no '%s' in the log", log_needle);
	}
	cr_assert_null(staple(ferry_port(&fp, "web"), &len));
	cr_assert_eq(metric("ferry_ocsp_stapling"), 0);
	cr_assert_geq(metric("ferry_ocsp_fetch_failures_total"), 1);
	cr_assert_lt(metric("ferry_ocsp_response_age_seconds"), 0,
	    "no age without a staple");
}

Test(ocsp, auto_revoked_not_stapled, .timeout = 60, .fini = cleanup)
{
	pki_with_openssl_responder();
	start_ferry(1, "revoked.pem", "auto", "");
	expect_no_staple("certificate status revoked");
}

Test(ocsp, auto_expired_not_stapled, .timeout = 60, .fini = cleanup)
{
	static struct canned c;

	backend_start(&resp, false, serve_canned, &c);
	make_pki(resp.port);
	c.der = make_response(-2 * 86400, -86400, false, &c.len);
	start_ferry(1, "server.pem", "auto", "");
	expect_no_staple("outside its validity");
	cr_assert_eq(c.asked, 1);
	OPENSSL_free(c.der);
}

Test(ocsp, auto_bad_signature_not_stapled, .timeout = 60, .fini = cleanup)
{
	static struct canned c;

	backend_start(&resp, false, serve_canned, &c);
	make_pki(resp.port);
	c.der = make_response(-60, 86400, true, &c.len);
	start_ferry(1, "server.pem", "auto", "");
	expect_no_staple("signature does not verify");
	OPENSSL_free(c.der);
}

/* A responder answering an HTTP error: a failure, logged with it. */
Test(ocsp, auto_responder_http_error, .timeout = 60, .fini = cleanup)
{
	static struct canned c = { .status = "500 Internal Server Error" };

	backend_start(&resp, false, serve_canned, &c);
	make_pki(resp.port);
	c.der = make_response(-60, 86400, false, &c.len);
	start_ferry(1, "server.pem", "auto", "");
	expect_no_staple("500");
	OPENSSL_free(c.der);
}

Test(ocsp, auto_responder_down, .timeout = 60, .fini = cleanup)
{
	make_pki(free_port());
	start_ferry(1, "server.pem", "auto", "");
	expect_no_staple("Connection refused");
}

/*
 * A responder that never answers holds nothing up: handshakes are served
 * while the fetch waits, and it fails at ocsp_timeout.
 */
Test(ocsp, auto_responder_slow, .timeout = 60, .fini = cleanup)
{
	static struct canned c = { .silent = true };
	size_t len;

	backend_start(&resp, false, serve_canned, &c);
	make_pki(resp.port);
	start_ferry(1, "server.pem", "auto", "ocsp_timeout = 3\n");
	int port = ferry_port(&fp, "web");
	for (int i = 0; i < 200 && c.asked == 0; i++)
		usleep(10 * 1000);
	cr_assert_eq(c.asked, 1, "no request reached the responder");
	/* The fetch is pending: the loop serves handshakes meanwhile. */
	for (int i = 0; i < 5; i++)
		cr_assert_null(staple(port, &len));
	cr_assert_eq(ferry_log_count(&fp, "no answer within"), 0,
	    "the fetch ended before the handshakes were served");
	expect_no_staple("no answer within 3 s");
}

/*
 * Refreshed before it expires: a response 100 s old with 6 s left is
 * fetched again within seconds (half of what is left), and stays
 * stapled meanwhile.
 */
Test(ocsp, auto_refreshed_before_expiry, .timeout = 60, .fini = cleanup)
{
	static struct canned c;
	unsigned char *s;
	size_t len;

	backend_start(&resp, false, serve_canned, &c);
	make_pki(resp.port);
	c.der = make_response(-100, 6, false, &c.len);
	start_ferry(1, "server.pem", "auto", "");
	cr_assert(ferry_log_wait(&fp, "stapled: good", 1, 20));
	s = staple(ferry_port(&fp, "web"), &len);
	cr_assert_not_null(s);
	free(s);
	for (int i = 0; i < 1000 && c.asked < 2; i++)
		usleep(10 * 1000);
	cr_assert_geq(c.asked, 2, "not fetched again before expiring");
	cr_assert(ferry_log_wait(&fp, "stapled: good", 2, 10));
	cr_assert_eq(metric("ferry_ocsp_fetch_failures_total"), 0);
	OPENSSL_free(c.der);
}

/* ocsp = FILE: stapled as it is, re-read on SIGHUP; a bad one refused. */
Test(ocsp, file_stapled_and_reread, .timeout = 60, .fini = cleanup)
{
	char path[192], bad[192], cmd[1024], out[1024];
	unsigned char *r1, *r2, *r3, *s;
	size_t l1, l2, l3, len;

	make_pki(free_port());
	pki_file("staple.der", path, sizeof(path));
	r1 = make_response(-60, 86400, false, &l1);
	write_file(path, r1, l1);
	start_ferry(1, "server.pem", path, "");
	int port = ferry_port(&fp, "web");
	s = staple(port, &len);
	cr_assert_not_null(s);
	cr_assert(len == l1 && memcmp(s, r1, l1) == 0);
	free(s);
	/* A newer response, then SIGHUP. */
	r2 = make_response(-30, 2 * 86400, false, &l2);
	write_file(path, r2, l2);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 1, 10));
	s = staple(port, &len);
	cr_assert(s != NULL && len == l2 && memcmp(s, r2, l2) == 0,
	    "SIGHUP did not re-read the file");
	free(s);
	/* An expired one: refused, the current one stays. */
	r3 = make_response(-2 * 86400, -86400, false, &l3);
	write_file(path, r3, l3);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "outside its validity", 1, 10));
	s = staple(port, &len);
	cr_assert(s != NULL && len == l2 && memcmp(s, r2, l2) == 0);
	free(s);
	ferry_stop(&fp);
	/* --check (and a start) refuse a file that does not verify. */
	pki_file("bad.der", bad, sizeof(bad));
	write_file(bad, r3, l3);
	snprintf(cmd, sizeof(cmd), "printf '[web]\\nmode = forward\\nbind = "
	    "127.0.0.1:0\\ncert = %s/server.pem\\nkey = %s/server.key\\n"
	    "ocsp = %s\\nbackend = 127.0.0.1:1\\n' > %s/bad.conf", pki, pki,
	    bad, pki);
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/bad.conf", pki);
	const char *argv[] = { "--check", "-c", cmd, NULL };
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "ocsp: OCSP response"), "%s", out);
	OPENSSL_free(r1);
	OPENSSL_free(r2);
	OPENSSL_free(r3);
}

/* `ferry --check` on `conf`: its exit status, its output in out. */
static int
check_conf(const char *conf, char *out, size_t len)
{
	char path[192];
	const char *argv[] = { "--check", "-c", path, NULL };
	FILE *f;
	int rc;

	pki_file("check.conf", path, sizeof(path));
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	fclose(f);
	rc = ferry_run(argv, out, len);
	unlink(path);
	return rc;
}

/* Mistakes caught before a start: each names its key and says why. */
Test(ocsp, config_mistakes_refused, .timeout = 60, .fini = cleanup)
{
	char conf[2048], out[2048], base[1024];

	make_pki(free_port());
	snprintf(base, sizeof(base), "[web]\nmode = forward\nbind = "
	    "127.0.0.1:0\nbackend = 127.0.0.1:1\ncert = %s/server.pem\n"
	    "key = %s/server.key\n", pki, pki);
	/* auto without ocsp_dir */
	snprintf(conf, sizeof(conf), "%socsp = auto\n", base);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "ocsp: auto needs ocsp_dir"), "%s",
	    out);
	/* an ocsp_dir that is not there */
	snprintf(conf, sizeof(conf), "[ferry]\nocsp_dir = %s/nowhere\n%s"
	    "ocsp = auto\n", pki, base);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "ocsp_dir"), "%s", out);
	/* a certificate that names no responder */
	snprintf(conf, sizeof(conf), "[ferry]\nocsp_dir = %s/cache\n[web]\n"
	    "mode = forward\nbind = 127.0.0.1:0\nbackend = 127.0.0.1:1\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "ocsp = auto\n", pki);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "names no OCSP responder"), "%s", out);
	/* two values for one certificate; a file for two */
	snprintf(conf, sizeof(conf), "%socsp = off\nocsp = off\n", base);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "2 values for 1 certificates"), "%s",
	    out);
	snprintf(conf, sizeof(conf), "%scert = %s/revoked.pem\nkey = "
	    "%s/revoked.key\nocsp = %s/x.der\n", base, pki, pki, pki);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "one file for 2 certificates"), "%s",
	    out);
	/* on a plain listener */
	snprintf(conf, sizeof(conf), "[web]\nmode = forward\nbind = "
	    "127.0.0.1:0\nbackend = 127.0.0.1:1\nocsp = auto\n");
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "ocsp: needs TLS"), "%s", out);
	/* and a good one */
	snprintf(conf, sizeof(conf), "[ferry]\nocsp_dir = %s/cache\n%s"
	    "ocsp = auto\n", pki, base);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 0, "%s", out);
}
