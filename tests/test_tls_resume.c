/*
 * TLS session resumption end to end: the real binary with workers, the
 * stateless tickets shared by them, TLS 1.3 and TLS 1.2 (see test_tls.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>

#include "ferryproc.h"
#include "helpers.h"
#include "tlscheck.h"
#include "metrics.h"
#include "netutil.h"
#include "peer_id.h"
#include "tcpserver.h"

/* ---- resumption end to end: stateless tickets shared by the workers ---- */

static struct ferry_proc rfp;
static struct backend rbe;
static pid_t frozen;

static void
resume_fini(void)
{
	if (frozen > 0)
		kill(frozen, SIGCONT);
	frozen = 0;
	if (rfp.pid > 0) {
		ferry_stop(&rfp);
		ferry_cleanup(&rfp);
	}
	if (rbe.port > 0)
		backend_stop(&rbe);
}

/*
 * Only `pid` may accept: the other worker is stopped.  pid 0: both run
 * (a worker left stopped would outlive the test, holding its port).
 */
static void
freeze_all_but(const pid_t *w, int n, pid_t pid)
{
	if (frozen > 0)
		kill(frozen, SIGCONT);
	frozen = 0;
	for (int i = 0; i < n && pid != 0; i++)
		if (w[i] != pid) {
			kill(w[i], SIGSTOP);
			frozen = w[i];
		}
}

/*
 * One connection through the forward listener: handshake (offering
 * `sess` if not NULL), one echo (which also takes in a TLS 1.3 ticket),
 * clean close.  Returns the session to resume next time (or NULL).
 */
static SSL_SESSION *
resume_conn(SSL_CTX *ctx, int port, SSL_SESSION *sess, bool *reused)
{
	int fd = connect_loopback(false, port);
	SSL *ssl = SSL_new(ctx);
	SSL_SESSION *next;
	char buf[5];

	cr_assert_geq(fd, 0);
	cr_assert_not_null(ssl);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (sess != NULL)
		cr_assert_eq(SSL_set_session(ssl, sess), 1);
	cr_assert_eq(SSL_connect(ssl), 1, "handshake failed");
	cr_assert_eq(SSL_write(ssl, "hello", 5), 5);
	cr_assert_eq(SSL_read(ssl, buf, 5), 5, "no echo");
	*reused = SSL_session_reused(ssl) == 1;
	next = SSL_get1_session(ssl);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	return next;
}

static SSL_CTX *
resume_ctx(int version, bool tickets)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(ctx);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	cr_assert_eq(SSL_CTX_load_verify_locations(ctx, CERT("ca.pem"),
	    NULL), 1);
	SSL_CTX_set_min_proto_version(ctx, version);
	SSL_CTX_set_max_proto_version(ctx, version);
	if (!tickets)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
}

/*
 * A client resumes with a ticket from one worker at the other (they share
 * the ticket key, made before the fork), and again with the ticket the
 * resumed connection brought.  Without tickets a TLS 1.2 client does not
 * resume: there is no server-side session cache, by design.
 */
static void
resume_check(int version)
{
	char conf[1024];
	pid_t w[4];
	bool reused;
	int n = 0;

	backend_start(&rbe, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "backend = 127.0.0.1:%d\n", rbe.port);
	ferry_start_args(&rfp, conf, 2, NULL);
	int port = ferry_port(&rfp, "web");
	for (int i = 0; i < 1000 && (n = ferry_children(&rfp, w, 4)) != 2;
	    i++)
		usleep(10 * 1000);
	cr_assert_eq(n, 2, "%d workers", n);

	SSL_CTX *ctx = resume_ctx(version, true);
	freeze_all_but(w, 2, w[0]);
	SSL_SESSION *s1 = resume_conn(ctx, port, NULL, &reused);
	cr_assert_not(reused);
	cr_assert_not_null(s1);
	cr_assert(SSL_SESSION_is_resumable(s1), "no ticket came");
	freeze_all_but(w, 2, w[1]);
	SSL_SESSION *s2 = resume_conn(ctx, port, s1, &reused);
	cr_assert(reused, "the other worker did not resume the session");
	cr_assert_not_null(s2);
	SSL_SESSION *s3 = resume_conn(ctx, port, s2, &reused);
	cr_assert(reused, "the ticket of a resumed connection did not "
	    "resume");
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_SESSION_free(s3);
	SSL_CTX_free(ctx);

	if (version == TLS1_2_VERSION) {
		/* Same worker both times: only a cache could resume. */
		ctx = resume_ctx(version, false);
		freeze_all_but(w, 2, w[0]);
		s1 = resume_conn(ctx, port, NULL, &reused);
		s2 = resume_conn(ctx, port, s1, &reused);
		cr_assert_not(reused, "resumed without a ticket: a server "
		    "session cache is on");
		SSL_SESSION_free(s1);
		SSL_SESSION_free(s2);
		SSL_CTX_free(ctx);
	}
	freeze_all_but(w, 2, 0);
}

Test(tls, resumption_tls13_across_workers, .timeout = 60,
    .fini = resume_fini)
{
	resume_check(TLS1_3_VERSION);
}

Test(tls, resumption_tls12_across_workers, .timeout = 60,
    .fini = resume_fini)
{
	resume_check(TLS1_2_VERSION);
}
