/*
 * Session resumption with the ticket keys every worker shares
 * (tls_tickets.h): across two workers, after SIGHUP, after a killed
 * worker, across two ferries with one `ticket_keys` file, and across a
 * rotation.  Real binary, loopback, an echo backend; the client is
 * OpenSSL's, asking for TLS 1.3 (and 1.2 once).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp, fp2;
static struct backend be;
static pid_t stopped;

static void
cleanup(void)
{
	if (stopped > 0)
		kill(stopped, SIGCONT);
	stopped = 0;
	ferry_cleanup(&fp);
	ferry_cleanup(&fp2);
	if (be.lfd > 0)
		backend_stop(&be);
}

/* A TLS 1.x client over a blocking socket: handshake, one echo. */
static SSL_CTX *
client_ctx(int version)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(c);
	SSL_CTX_set_min_proto_version(c, version);
	SSL_CTX_set_max_proto_version(c, version);
	SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	return c;
}

/*
 * One connection: resumes `in` if given; returns whether it was resumed
 * and, in *out (if not NULL), the session to resume next (the ticket
 * arrives after the handshake: the echo reads it).
 */
static bool
connect_once(SSL_CTX *c, int port, SSL_SESSION *in, SSL_SESSION **out)
{
	int fd = connect_loopback(false, port);
	SSL *ssl = SSL_new(c);
	char buf[8];
	bool reused;

	cr_assert_not_null(ssl);
	SSL_set_fd(ssl, fd);
	if (in != NULL)
		SSL_set_session(ssl, in);
	cr_assert_eq(SSL_connect(ssl), 1, "handshake failed");
	cr_assert_eq(SSL_write(ssl, "ping", 4), 4);
	cr_assert_eq(SSL_read(ssl, buf, 4), 4, "no echo");
	reused = SSL_session_reused(ssl) == 1;
	if (out != NULL) {
		*out = SSL_get1_session(ssl);
		cr_assert_not_null(*out);
		cr_assert(SSL_SESSION_is_resumable(*out), "no ticket");
	}
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	return reused;
}

#define WEB "[web]\nmode = forward\nbind = 127.0.0.1:0\n" \
	"cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"

static void
start_workers(struct ferry_proc *p, int workers, const char *extra)
{
	char conf[2048];

	if (be.lfd <= 0)
		backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = %d\n" WEB
	    "backend = 127.0.0.1:%d\n%s", workers, be.port, extra);
	ferry_start_args(p, conf, workers, NULL);
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

/*
 * n resumptions of `s` served by each worker in turn (the others frozen,
 * so that the kernel hands the connection to that one); returns how many
 * resumed.
 */
static int
resume_on_each(SSL_CTX *c, int port, SSL_SESSION *s, int n)
{
	pid_t w[8];
	int nw = workers(w, 2), ok = 0;

	for (int i = 0; i < nw; i++) {
		stopped = w[1 - i];
		kill(stopped, SIGSTOP);
		for (int j = 0; j < n; j++)
			ok += connect_once(c, port, s, NULL);
		kill(stopped, SIGCONT);
		stopped = 0;
	}
	return ok;
}

/* The case: after one SIGHUP, every resumption succeeds. */
Test(tickets, resume_across_workers_after_sighup, .timeout = 90,
    .fini = cleanup)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION);
	SSL_SESSION *s;

	start_workers(&fp, 2, "");
	int port = ferry_port(&fp, "web");
	cr_assert_not(connect_once(c, port, NULL, &s));
	int n = resume_on_each(c, port, s, 8);
	cr_assert_eq(n, 16, "before SIGHUP: %d of 16 resumed", n);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 3, 10));
	n = resume_on_each(c, port, s, 8);
	cr_assert_eq(n, 16, "after SIGHUP: %d of 16 resumed", n);
	SSL_SESSION_free(s);
	SSL_CTX_free(c);
}

/*
 * A worker restarted after a reload is a copy of the supervisor: it must
 * open the tickets the worker it replaces sealed.  TLS 1.2 tickets too.
 */
Test(tickets, resume_after_killed_worker, .timeout = 90, .fini = cleanup)
{
	SSL_CTX *c13 = client_ctx(TLS1_3_VERSION);
	SSL_CTX *c12 = client_ctx(TLS1_2_VERSION);
	SSL_SESSION *s13, *s12;
	pid_t w[8];

	start_workers(&fp, 2, "");
	int port = ferry_port(&fp, "web");
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 3, 10));
	workers(w, 2);
	/* Sealed by worker 1 after the reload... */
	stopped = w[0];
	kill(w[0], SIGSTOP);
	cr_assert_not(connect_once(c13, port, NULL, &s13));
	cr_assert_not(connect_once(c12, port, NULL, &s12));
	kill(w[0], SIGCONT);
	stopped = 0;
	/* ...opened by its replacement. */
	kill(w[1], SIGKILL);
	cr_assert(ferry_log_wait(&fp, " ready: ", 3, 10));
	int n13 = resume_on_each(c13, port, s13, 8);
	int n12 = resume_on_each(c12, port, s12, 8);
	cr_assert_eq(n13, 16, "TLS 1.3: %d of 16 resumed", n13);
	cr_assert_eq(n12, 16, "TLS 1.2: %d of 16 resumed", n12);
	SSL_SESSION_free(s13);
	SSL_SESSION_free(s12);
	SSL_CTX_free(c13);
	SSL_CTX_free(c12);
}

static void
write_keys(const char *path, const unsigned char *keys, size_t n)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(keys, 80, n, f), n);
	cr_assert_eq(fclose(f), 0);
}

/*
 * Two ferries (two machines) with one file resume each other's tickets;
 * the file is re-read on SIGHUP: its first key seals, the others open.
 */
Test(tickets, file_shared_and_reread, .timeout = 90, .fini = cleanup)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION);
	unsigned char k[3][80];
	char path[256], extra[512];
	SSL_SESSION *s1, *s2, *s3;

	cr_assert_eq(RAND_bytes(&k[0][0], sizeof(k)), 1);
	snprintf(path, sizeof(path), "/tmp/ferry-tickets-%ld.key",
	    (long)getpid());
	write_keys(path, k[0], 1);
	snprintf(extra, sizeof(extra), "ticket_keys = %s\n", path);
	start_workers(&fp, 1, extra);
	start_workers(&fp2, 1, extra);
	int a = ferry_port(&fp, "web"), b = ferry_port(&fp2, "web");
	cr_assert_not(connect_once(c, a, NULL, &s1));
	cr_assert(connect_once(c, b, s1, NULL), "B did not open A's ticket");
	/* B: a new first key seals, the old one still opens. */
	memcpy(k[1], k[0], 80);
	cr_assert_eq(RAND_bytes(k[0], 80), 1);
	write_keys(path, k[0], 2);
	ferry_signal(&fp2, SIGHUP);
	cr_assert(ferry_log_wait(&fp2, "certificates reloaded", 1, 10));
	cr_assert(connect_once(c, b, s1, &s2), "the second key must open");
	/* A has not re-read the file: the new key is unknown there. */
	cr_assert_not(connect_once(c, a, s2, NULL));
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 1, 10));
	cr_assert(connect_once(c, a, s2, NULL));
	/* A key taken out of the file opens nothing any more. */
	memcpy(k[2], k[0], 80);
	write_keys(path, k[2], 1);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 2, 10));
	cr_assert_not(connect_once(c, a, s1, &s3));
	cr_assert(connect_once(c, a, s2, NULL));
	/* A bad file keeps the keys in use. */
	write_keys(path, k[0], 0);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current ticket keys", 1,
	    10));
	cr_assert(connect_once(c, a, s3, NULL));
	unlink(path);
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_SESSION_free(s3);
	SSL_CTX_free(c);
}

/*
 * Generated keys rotate: after one period a ticket still opens (and a
 * fresh one is sent); once TLS_TICKETS_KEEP newer keys have sealed, it
 * no longer does.  Periods of one second, waited out; the assertions are
 * on resumption, not on time.
 */
Test(tickets, rotation, .timeout = 90, .fini = cleanup)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION);
	SSL_SESSION *s1, *s2;

	start_workers(&fp, 2, "ticket_rotate = 1\n");
	int port = ferry_port(&fp, "web");
	cr_assert_not(connect_once(c, port, NULL, &s1));
	usleep(1200 * 1000);
	/* Sealed after the deadline: a new key; s1's key is the second. */
	cr_assert(connect_once(c, port, s1, &s2));
	cr_assert(connect_once(c, port, s1, NULL));
	cr_assert_eq(resume_on_each(c, port, s2, 2), 4);
	for (int i = 0; i < 2; i++) {
		usleep(1200 * 1000);
		connect_once(c, port, NULL, NULL);
	}
	cr_assert_not(connect_once(c, port, s1, NULL),
	    "a key three rotations old still opened a ticket");
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_CTX_free(c);
}

/* A ticket key file that is not whole keys is refused at start. */
Test(tickets, bad_file_refused, .timeout = 30)
{
	char path[64], conf[128], out[2048];
	const char *argv[] = { "--check", "-c", conf, NULL };
	unsigned char k[100] = { 0 };
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/ferry-tk-%ld.key", (long)getpid());
	snprintf(conf, sizeof(conf), "/tmp/ferry-tk-%ld.conf", (long)getpid());
	write_keys(path, k, 1);
	f = fopen(path, "ab");
	fwrite(k, 1, 20, f);
	fclose(f);
	f = fopen(conf, "w");
	fprintf(f, WEB "backend = 127.0.0.1:1\nticket_keys = %s\n", path);
	fclose(f);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "[web] ticket_keys:"), "%s", out);
	cr_assert_not_null(strstr(out, "100 bytes"), "%s", out);
	unlink(path);
	unlink(conf);
}

/* ---- the module alone ---- */

#include "tls_tickets.h"

static struct tls_tickets *
from_bytes(const unsigned char *k, size_t len, char *err, size_t errlen)
{
	char path[64];
	FILE *f;
	struct tls_tickets *t;

	snprintf(path, sizeof(path), "/tmp/ferry-tku-%ld.key", (long)getpid());
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	if (len > 0)
		cr_assert_eq(fwrite(k, 1, len, f), len);
	fclose(f);
	t = tls_tickets_new(path, 0, err, errlen);
	unlink(path);
	return t;
}

Test(tickets, file_sizes, .timeout = 10)
{
	unsigned char k[9 * 80], name[16];
	char err[256];
	struct tls_tickets *t;

	cr_assert_eq(RAND_bytes(k, sizeof(k)), 1);
	for (size_t n = 1; n <= 8; n++) {
		t = from_bytes(k, n * 80, err, sizeof(err));
		cr_assert_not_null(t, "%zu keys: %s", n, err);
		cr_assert_eq(tls_tickets_count(t), n);
		/* The first key's name seals. */
		tls_tickets_current_name(t, name);
		cr_assert_eq(memcmp(name, k, 16), 0);
		tls_tickets_free(t);
	}
	const size_t bad[] = { 0, 1, 79, 81, 160 - 1, 9 * 80 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_null(from_bytes(k, bad[i], err, sizeof(err)),
		    "%zu bytes taken", bad[i]);
		cr_assert_not_null(strstr(err, "expected 1 to 8 keys"), "%s",
		    err);
	}
	/* Generated: one key, 16 random bytes of name. */
	t = tls_tickets_new(NULL, 3600, err, sizeof(err));
	cr_assert_not_null(t);
	cr_assert_eq(tls_tickets_count(t), 1);
	cr_assert_eq(tls_tickets_reload(t, err, sizeof(err)), 0,
	    "generated keys reload as they are");
	tls_tickets_free(t);
}

Test(tickets, reload_publishes_a_changed_file, .timeout = 10)
{
	unsigned char k[2 * 80], name[16];
	char path[64], err[256];
	struct tls_tickets *t;

	cr_assert_eq(RAND_bytes(k, sizeof(k)), 1);
	snprintf(path, sizeof(path), "/tmp/ferry-tkr-%ld.key", (long)getpid());
	write_keys(path, k, 1);
	t = tls_tickets_new(path, 0, err, sizeof(err));
	cr_assert_not_null(t, "%s", err);
	/* The same file: the same keys. */
	cr_assert_eq(tls_tickets_reload(t, err, sizeof(err)), 0, "%s", err);
	tls_tickets_current_name(t, name);
	cr_assert_eq(memcmp(name, k, 16), 0);
	/* The second key first, the first after it. */
	unsigned char k2[160];
	memcpy(k2, k + 80, 80);
	memcpy(k2 + 80, k, 80);
	write_keys(path, k2, 2);
	cr_assert_eq(tls_tickets_reload(t, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(tls_tickets_count(t), 2);
	tls_tickets_current_name(t, name);
	cr_assert_eq(memcmp(name, k + 80, 16), 0);
	/* A bad file keeps them. */
	write_keys(path, k, 0);
	cr_assert_eq(tls_tickets_reload(t, err, sizeof(err)), -1);
	cr_assert_eq(tls_tickets_count(t), 2);
	/* Many reloads: the ring of generations wraps. */
	for (int i = 0; i < 10; i++) {
		write_keys(path, k + (i % 2) * 80, 1);
		cr_assert_eq(tls_tickets_reload(t, err, sizeof(err)), 0);
		tls_tickets_current_name(t, name);
		cr_assert_eq(memcmp(name, k + (i % 2) * 80, 16), 0);
	}
	tls_tickets_free(t);
	unlink(path);
}

/*
 * A reload that changes a listener (any key but ticket_keys and
 * ticket_rotate) keeps its generated keys: clients resume across it.  A
 * listener the reload adds has keys of its own.
 */
Test(tickets, changed_listener_keeps_its_keys_added_one_has_its_own,
    .timeout = 60, .fini = cleanup)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION);
	SSL_SESSION *s;
	char conf[2048];
	FILE *f;

	start_workers(&fp, 1, "");
	int port = ferry_port(&fp, "web");
	cr_assert_not(connect_once(c, port, NULL, &s));
	cr_assert(connect_once(c, port, s, NULL), "no resumption at all");

	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 1\n" WEB
	    "backend = 127.0.0.1:%d\nidle_timeout = 120\n"
	    "[other]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "backend = 127.0.0.1:%d\n", be.port, be.port);
	f = fopen(fp.conf, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	cr_assert_eq(fclose(f), 0);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "reload: 2 listeners (1 added, 1 "
	    "changed, 0 removed)", 1, 10), "no reload line");
	cr_assert(connect_once(c, port, s, NULL),
	    "the changed listener did not resume a session of the old one");
	char *log = ferry_log_read(&fp), *at = strstr(log, " (tls) [other]");
	cr_assert_not_null(at, "the added listener is not listening");
	while (at > log && *at != ':')
		at--;
	int other = atoi(at + 1);
	free(log);
	cr_assert_gt(other, 0);
	cr_assert_not(connect_once(c, other, s, NULL),
	    "an added listener opened another listener's ticket");
	SSL_SESSION_free(s);
	SSL_CTX_free(c);
}
