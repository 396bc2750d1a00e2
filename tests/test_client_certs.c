/*
 * Client certificates: the one ferry presents to a TLS backend
 * (backend_cert, backend_key), and the CRL checked against the ones
 * clients present (client_crl, re-read on SIGHUP).  Real binary,
 * loopback; the backend is a TLS server thread of the test that asks for
 * a certificate and answers with its subject's CN.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static struct backend be;
static char pki[128];

static void
cleanup(void)
{
	char cmd[200];

	ferry_cleanup(&fp);
	if (be.lfd > 0)
		backend_stop(&be);
	if (pki[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki);
		cr_assert_eq(system(cmd), 0);
		pki[0] = '\0';
	}
}

/*
 * The backend: TLS with the development server certificate, a client
 * certificate signed by the development CA required; answers
 * "CN=<its CN>\n", or nothing when the handshake fails.
 */
static void
serve_cn(int fd, void *arg)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL *ssl;
	X509 *peer;
	char cn[128] = "", line[160];

	(void)arg;
	SSL_CTX_use_certificate_chain_file(ctx, CERT("server.pem"));
	SSL_CTX_use_PrivateKey_file(ctx, CERT("server.key"), SSL_FILETYPE_PEM);
	SSL_CTX_load_verify_locations(ctx, CERT("ca.pem"), NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
	    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1 &&
	    (peer = SSL_get1_peer_certificate(ssl)) != NULL) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer),
		    NID_commonName, cn, sizeof(cn));
		X509_free(peer);
		snprintf(line, sizeof(line), "CN=%s\n", cn);
		SSL_write(ssl, line, (int)strlen(line));
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

static void
start_backend_tls(const char *extra)
{
	char conf[1024];

	backend_start(&be, false, serve_cn, NULL);
	snprintf(conf, sizeof(conf), "[web]\nmode = forward\nbind = "
	    "127.0.0.1:0\nbackend = 127.0.0.1:%d\nbackend_tls = on\n"
	    "backend_ca = " CERT("ca.pem") "\nbackend_sni = localhost\n%s",
	    be.port, extra);
	ferry_start(&fp, conf);
}

/* What the backend answered a plain client through ferry ("" if none). */
static void
backend_says(char *out, size_t len)
{
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	ssize_t n;
	size_t got = 0;

	while (got < len - 1 && (n = read(fd, out + got, len - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(fd);
}

Test(client_certs, backend_sees_ferrys_certificate, .timeout = 60,
    .fini = cleanup)
{
	char got[160];

	start_backend_tls("backend_cert = " CERT("client.pem") "\n"
	    "backend_key = " CERT("client.key") "\n");
	backend_says(got, sizeof(got));
	cr_assert_str_eq(got, "CN=ferry-client\n");
}

/*
 * Without one, the backend that requires it refuses the handshake (with
 * TLS 1.3, after ferry's side of it: the client is closed, unanswered).
 */
Test(client_certs, backend_without_certificate_refuses, .timeout = 60,
    .fini = cleanup)
{
	char got[160];

	start_backend_tls("");
	backend_says(got, sizeof(got));
	cr_assert_str_eq(got, "");
}

Test(client_certs, config_errors_name_the_key, .timeout = 30)
{
	char out[2048], path[64];
	const char *argv[] = { "--check", "-c", path, NULL };
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/ferry-bc-%ld.conf", (long)getpid());
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:1\nbackend_tls = on\nbackend_cert = "
	    CERT("client.pem") "\nbackend_key = " CERT("server.key") "\n");
	fclose(f);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "[web] backend_key:"), "%s", out);
	f = fopen(path, "w");
	fprintf(f, "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:1\nbackend_cert = " CERT("client.pem")
	    "\n");
	fclose(f);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "backend_tls is off"), "%s", out);
	f = fopen(path, "w");
	fprintf(f, "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:1\ncert = " CERT("server.pem") "\nkey = "
	    CERT("server.key") "\nclient_crl = " CERT("ca.pem") "\n");
	fclose(f);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "client_crl: needs verify_client"),
	    "%s", out);
	unlink(path);
}

/* ---- client_crl ---- */

static void sh(const char *fmt, const char *arg)
	__attribute__((format(printf, 1, 0)));

/* Runs a shell command made of fmt, every %s being `arg`. */
static void
sh(const char *fmt, const char *arg)
{
	char cmd[1024];

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(cmd, sizeof(cmd), fmt, arg, arg, arg, arg, arg, arg);
#pragma GCC diagnostic pop
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* A TLS client with `name`.pem of the PKI: whether an echo came back. */
static bool
client_served(int port, const char *name)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char cert[192], key[192], buf[8];
	int fd = connect_loopback(false, port);
	SSL *ssl;
	bool ok = false;

	snprintf(cert, sizeof(cert), "%s/%s.pem", pki, name);
	snprintf(key, sizeof(key), "%s/%s.key", pki, name);
	cr_assert_eq(SSL_CTX_use_certificate_file(ctx, cert,
	    SSL_FILETYPE_PEM), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM),
	    1);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	/* TLS 1.3: a refused certificate shows at the first read. */
	if (SSL_connect(ssl) == 1 && SSL_write(ssl, "ping", 4) == 4 &&
	    SSL_read(ssl, buf, 4) == 4)
		ok = true;
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return ok;
}

Test(client_certs, crl_refuses_revoked_and_is_reread, .timeout = 60,
    .fini = cleanup)
{
	char conf[2048];

	snprintf(pki, sizeof(pki), "/tmp/ferry-crl-XXXXXX");
	cr_assert_not_null(mkdtemp(pki));
	sh(FERRY_SRCDIR "/scripts/gen-certs.sh --pki %s http://127.0.0.1:9",
	    pki);
	/* A CRL of the same CA revoking nothing, in use first. */
	sh("cd %s && : > empty.txt && sed 's|index.txt|empty.txt|' ca.cnf > "
	    "empty.cnf && openssl ca -config empty.cnf -keyfile ca.key -cert "
	    "ca.pem -gencrl -out crl-empty.pem 2>/dev/null && cp crl-empty.pem "
	    "live.pem", pki);
	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[web]\nmode = forward\nbind = "
	    "127.0.0.1:0\ncert = %s/server.pem\nkey = %s/server.key\n"
	    "client_ca = %s/ca.pem\nverify_client = required\nclient_crl = "
	    "%s/live.pem\nbackend = 127.0.0.1:%d\n", pki, pki, pki, pki,
	    be.port);
	ferry_start(&fp, conf);
	int port = ferry_port(&fp, "web");
	cr_assert(client_served(port, "client"));
	cr_assert(client_served(port, "client-revoked"));
	/* The CA revokes it: SIGHUP, and it is refused. */
	sh("cp %s/crl.pem %s/live.pem", pki);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 1, 10));
	cr_assert(client_served(port, "client"));
	cr_assert_not(client_served(port, "client-revoked"),
	    "a revoked certificate was served");
	cr_assert(ferry_log_wait(&fp, "certificate revoked", 1, 10));
	/* A CRL that does not load keeps the current one. */
	sh("echo garbage > %s/live.pem", pki);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current certificates", 1,
	    10));
	cr_assert_not(client_served(port, "client-revoked"));
	cr_assert(client_served(port, "client"));
}
