/*
 * The ferry program as a user runs it: command line, --check, the embedded
 * default, signals, workers, the admin page.  Real binary, loopback,
 * port 0; backends are threads of the test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relay_proto.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

Test(program, version_and_help, .timeout = 30)
{
	char out[8192];
	const char *v[] = { "--version", NULL };
	const char *h[] = { "--help", NULL };
	const char *bad[] = { "--no-such-option", NULL };

	cr_assert_eq(ferry_run(v, out, sizeof(out)), 0);
	cr_assert(strncmp(out, "ferry ", 6) == 0, "version: %s", out);
	cr_assert_eq(ferry_run(h, out, sizeof(out)), 0);
	cr_assert_not_null(strstr(out, "--check"), "help: %s", out);
	cr_assert_neq(ferry_run(bad, out, sizeof(out)), 0);
}

Test(program, ports_ready_and_clean_stop, .timeout = 60, .fini = cleanup)
{
	int status;

	ferry_start(&fp,
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[devices]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "[devices-tls]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n");
	int plain = ferry_port(&fp, "devices");
	int tls = ferry_port(&fp, "devices-tls");
	int admin = ferry_port(&fp, "admin");
	cr_assert_neq(plain, tls);
	char *body = http_get(admin, "/metrics", &status);
	cr_assert_not_null(body);
	cr_assert_eq(status, 200);
	cr_assert_not_null(strstr(body,
	    "ferry_connections_accepted_total{listener=\"devices\""));
	free(body);
	status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "exit status %d", status);
	cr_assert_geq(ferry_log_count(&fp, "stopped"), 1);
}

/*
 * At log_level = warn an operator still sees where ferry listens and that
 * it is ready (NOTICE lines), and none of the info lines (the SIGTERM
 * below logs one at info).
 */
Test(program, warn_level_still_shows_ports_and_ready, .timeout = 60,
    .fini = cleanup)
{
	int status;

	/* It waits for the ready line and reads the ports from the log. */
	ferry_start(&fp,
	    "[ferry]\n"
	    "log_level = warn\n"
	    "admin = 127.0.0.1:0\n"
	    "[devices]\n"
	    "mode = relay\n"
	    "bind = 127.0.0.1:0\n");
	cr_assert_gt(ferry_port(&fp, "devices"), 0);
	cr_assert_gt(ferry_port(&fp, "admin"), 0);
	cr_assert_eq(ferry_log_count(&fp, " NOTICE relay listening on "), 1);
	cr_assert_eq(ferry_log_count(&fp, " NOTICE admin listening on "), 1);
	cr_assert_eq(ferry_log_count(&fp, " NOTICE ready: worker 0"), 1);
	status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "exit status %d", status);
	cr_assert_eq(ferry_log_count(&fp, " NOTICE stopped"), 1);
	cr_assert_eq(ferry_log_count(&fp, " INFO "), 0);
}

Test(program, help_documents_every_option, .timeout = 30)
{
	char out[8192];
	const char *h[] = { "--help", NULL };
	const char *opts[] = { "--config", "--check", "--certs", "--log-level",
	    "--relay", "--relay-tls", "--cert", "--key", "--version", NULL };

	cr_assert_eq(ferry_run(h, out, sizeof(out)), 0);
	for (int i = 0; opts[i] != NULL; i++)
		cr_assert_not_null(strstr(out, opts[i]), "--help lacks %s",
		    opts[i]);
}

/* ---- --check ---- */

static char tmpdir[64];

static void
rm_tmpdir(void)
{
	ferry_cleanup(&fp);
	tmpdir_remove(tmpdir);
}

static void
make_tmpdir(void)
{
	tmpdir_make(tmpdir, sizeof(tmpdir), "ferry-prog");
}

static void
copy_file(const char *from, const char *to)
{
	FILE *f = fopen(from, "r");
	char buf[16384];
	size_t n;

	cr_assert_not_null(f, "%s", from);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	cr_assert_gt(n, 0);
	write_file_atomic(to, buf, n);
}

/* Runs --check on `conf`; returns the exit status, output in out. */
static int
check_conf(const char *conf, char *out, size_t outlen)
{
	char path[128];
	const char *argv[] = { "--check", "-c", path, NULL };

	snprintf(path, sizeof(path), "%s/check.conf", tmpdir);
	write_file_atomic(path, conf, strlen(conf));
	return ferry_run(argv, out, outlen);
}

static void
check_refused(const char *conf, const char *where)
{
	char out[4096], want[256];

	cr_assert_eq(check_conf(conf, out, sizeof(out)), 2, "accepted:\n%s",
	    conf);
	snprintf(want, sizeof(want), "%s/check.conf:%s", tmpdir, where);
	cr_assert_not_null(strstr(out, want), "'%s' lacks '%s'", out, want);
}

#define WEB "[web]\nmode = forward\nbind = 127.0.0.1:0\n"

Test(program, check_good_and_bad_files, .timeout = 60, .fini = rm_tmpdir)
{
	char out[4096];
	const char *def[] = { "--check", "--certs", FERRY_SRCDIR "/certs",
	    NULL };

	make_tmpdir();
	cr_assert_eq(check_conf("[ferry]\nworkers = 2\n"
	    "[devices]\nmode = relay\nbind = :0\n"
	    WEB
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "cert = " CERT("other.pem") "\nkey = " CERT("other.key") "\n"
	    "verify_client = optional\nclient_ca = " CERT("ca.pem") "\n"
	    "backend = 127.0.0.1:1, [::1]:2\nbackend_tls = on\n"
	    "backend_ca = " CERT("ca.pem") "\nproxy_protocol = v2\n",
	    out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "OK (2 listeners)"), "%s", out);
	cr_assert_eq(ferry_run(def, out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "(embedded default): OK"), "%s", out);

	/* Parse errors: file, line, section, key, reason. */
	check_refused(WEB "backend = 127.0.0.1:1\nbogus = 1\n",
	    "5: [web] bogus: unknown key");
	check_refused(WEB "backend = 127.0.0.1:1\nproxy_protocol = v3\n",
	    "5: [web] proxy_protocol: 'v3' is not one of off, v1, v2");
	/* Certificates are loaded: the failing pair's own line. */
	check_refused(WEB "backend = 127.0.0.1:1\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "cert = /nonexistent/other.pem\nkey = " CERT("other.key") "\n",
	    "7: [web] cert: certificate /nonexistent/other.pem");
	check_refused(WEB "backend = 127.0.0.1:1\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("other.key") "\n",
	    "6: [web] key: private key " CERT("other.key"));
	check_refused(WEB "backend = 127.0.0.1:1\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "ciphers = NO-SUCH-CIPHER\n", "7: [web] ciphers:");
	check_refused(WEB "backend = 127.0.0.1:1\n"
	    "cert = " CERT("server.pem") "\nkey = " CERT("server.key") "\n"
	    "verify_client = required\nclient_ca = /nonexistent/ca.pem\n",
	    "8: [web] client_ca:");
	check_refused(WEB "backend = 127.0.0.1:1\nbackend_tls = on\n"
	    "backend_ca = /nonexistent/ca.pem\n", "6: [web] backend_ca:");
	check_refused("[devices]\nmode = relay\nbind = :0\n"
	    "cert = " CERT("server.pem") "\nkey = /nonexistent/key\n",
	    "5: [devices] key: private key /nonexistent/key");
}

/*
 * What --check passes must start: each of these used to pass --check and
 * then fail at start (or serve wrongly).  Refused by both now, with the
 * key's own file and line.
 */
static void
refused_at_check_and_start(const char *conf, const char *where)
{
	char out[4096], want[256], path[128];
	const char *argv[] = { "-c", path, "--log-level", "error", NULL };

	check_refused(conf, where);
	snprintf(path, sizeof(path), "%s/check.conf", tmpdir);
	cr_assert_neq(ferry_run(argv, out, sizeof(out)), 0, "started:\n%s",
	    conf);
	snprintf(want, sizeof(want), "%s/check.conf:%s", tmpdir, where);
	cr_assert_not_null(strstr(out, want), "start: '%s' lacks '%s'", out,
	    want);
}

#define DEVICES "[devices]\nmode = relay\nbind = 127.0.0.1:0\n"

Test(program, check_connect_timeout_zero, .timeout = 60, .fini = rm_tmpdir)
{
	make_tmpdir();
	/* Was reported at start only, against `backend` and its line. */
	refused_at_check_and_start(WEB "backend = 127.0.0.1:1\n"
	    "connect_timeout = 0\n",
	    "5: [web] connect_timeout: must be more than 0");
}

Test(program, check_handshake_timeout_zero, .timeout = 60,
    .fini = rm_tmpdir)
{
	make_tmpdir();
	/* 0 switched the handshake and registration deadline off. */
	refused_at_check_and_start(DEVICES "handshake_timeout = 0\n",
	    "4: [devices] handshake_timeout: must be more than 0");
}

Test(program, check_bind_addresses, .timeout = 60, .fini = rm_tmpdir)
{
	make_tmpdir();
	refused_at_check_and_start("[devices]\nmode = relay\n"
	    "bind = 256.1.1.1:80\n",
	    "3: [devices] bind: '256.1.1.1' is not an IPv4 address");
	refused_at_check_and_start("[devices]\nmode = relay\n"
	    "bind = 127.0.0.1:0, no-such-host.invalid:0\n",
	    "3: [devices] bind: cannot resolve 'no-such-host.invalid'");
	refused_at_check_and_start("[ferry]\nadmin = no-such-host.invalid:0\n"
	    DEVICES, "2: [ferry] admin: cannot resolve");
}

Test(program, check_unknown_user, .timeout = 60, .fini = rm_tmpdir)
{
	make_tmpdir();
	refused_at_check_and_start("[ferry]\nuser = ferry-no-such-user\n"
	    DEVICES, "2: [ferry] user: no user 'ferry-no-such-user'");
	refused_at_check_and_start("[ferry]\nuser = root\n"
	    "group = ferry-no-such-group\n" DEVICES,
	    "3: [ferry] group: no group 'ferry-no-such-group'");
}

Test(program, check_cipher_list_selecting_nothing, .timeout = 60,
    .fini = rm_tmpdir)
{
	char out[4096];

	make_tmpdir();
	/* OpenSSL takes "NULL", then its security level refuses them all. */
	refused_at_check_and_start(DEVICES "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\nciphers = NULL\n",
	    "6: [devices] ciphers: cipher list 'NULL' leaves no cipher");
	/* Served TLS 1.3 alone, a TLS 1.2 list is not needed. */
	cr_assert_eq(check_conf(DEVICES "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\nciphers = NULL\n"
	    "tls_min_version = 1.3\n", out, sizeof(out)), 0, "%s", out);
}

/* inih kept 49 characters of a name: these two were one listener. */
Test(program, check_long_section_names, .timeout = 60, .fini = rm_tmpdir)
{
	char conf[512], out[4096], name[64];

	make_tmpdir();
	memset(name, 'n', 63);
	name[63] = '\0';
	name[62] = 'a';
	int n = snprintf(conf, sizeof(conf), "[%s]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n", name);
	name[62] = 'b';
	snprintf(conf + n, sizeof(conf) - (size_t)n, "[%s]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n", name);
	cr_assert_eq(check_conf(conf, out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "OK (2 listeners)"), "%s", out);
}

Test(program, check_section_and_key_given_twice, .timeout = 60,
    .fini = rm_tmpdir)
{
	make_tmpdir();
	check_refused(DEVICES "[devices]\nmode = relay\n",
	    "4: [devices] section: given twice (first on line 1)");
	check_refused(DEVICES "grace = 1\ngrace = 5\n",
	    "5: [devices] grace: given twice (first on line 4)");
}

/* ---- TLS clients that look at the certificate ---- */

/* The common name of the certificate ferry presents on `port`. */
static void
served_cn(int port, char *cn, size_t len)
{
	struct peer p;
	X509 *x;

	peer_tls(&p, connect_loopback(false, port), NULL, NULL, NULL);
	cr_assert(peer_tls_handshake(&p));
	x = SSL_get1_peer_certificate(p.ssl);
	cr_assert_not_null(x);
	cr_assert_gt(X509_NAME_get_text_by_NID(X509_get_subject_name(x),
	    NID_commonName, cn, (int)len), 0);
	X509_free(x);
	peer_close(&p);
}

static struct backend be;

static void
stop_all(void)
{
	rm_tmpdir();
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
}

/* A forward listener over the certificate files in tmpdir. */
static void
start_reloadable(int workers)
{
	char conf[1024], cert[128], key[128];

	make_tmpdir();
	snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
	snprintf(key, sizeof(key), "%s/key.pem", tmpdir);
	copy_file(CERT("server.pem"), cert);
	copy_file(CERT("server.key"), key);
	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nworkers = %d\n"
	    WEB "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n",
	    workers, cert, key, be.port);
	ferry_start_args(&fp, conf, workers, NULL);
}

static void
swap_certs(const char *cert, const char *key)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/cert.pem", tmpdir);
	copy_file(cert, path);
	snprintf(path, sizeof(path), "%s/key.pem", tmpdir);
	copy_file(key, path);
}

Test(program, sighup_new_and_broken_certificates, .timeout = 60,
    .fini = stop_all)
{
	struct peer live;
	char cn[128], path[128];

	start_reloadable(1);
	int port = ferry_port(&fp, "web");
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "localhost");
	peer_tls(&live, connect_loopback(false, port), "localhost", NULL,
	    NULL);
	cr_assert(peer_tls_handshake(&live));
	ping(&live, "before");

	/* New files: new connections see them, the open one carries on. */
	swap_certs(CERT("other.pem"), CERT("other.key"));
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 1, 10));
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "other.test");
	ping(&live, "after a reload");

	/* A broken file: refused, logged with its place, the last kept. */
	snprintf(path, sizeof(path), "%s/cert.pem", tmpdir);
	write_file_atomic(path, "not a certificate\n", 18);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current certificates", 1,
	    10));
	cr_assert_geq(ferry_log_count(&fp, "ferry.conf:6: [web] cert: "
	    "certificate"), 1);
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "other.test");
	ping(&live, "still here");
	peer_close(&live);
}

static pid_t stopped[2];

static void
resume_all(void)
{
	for (int i = 0; i < 2; i++)
		if (stopped[i] > 0)
			kill(stopped[i], SIGCONT);
	stop_all();
}

/* Waits for the supervisor to have n children; returns them in out. */
static int
children(pid_t *out, int n)
{
	int got = 0;

	for (int i = 0; i < 1000 && (got = ferry_children(&fp, out, 8)) != n;
	    i++)
		usleep(10 * 1000);
	cr_assert_eq(got, n, "%d workers, not %d", got, n);
	return got;
}

/* A worker restarted after a SIGHUP starts with the new certificate. */
Test(program, sighup_reaches_restarted_workers, .timeout = 60,
    .fini = resume_all)
{
	pid_t w[8], now[8];
	char cn[128];

	start_reloadable(2);
	int port = ferry_port(&fp, "web");
	children(w, 2);
	swap_certs(CERT("other.pem"), CERT("other.key"));
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "certificates reloaded", 3, 10),
	    "two workers and the supervisor should have reloaded");
	cr_assert_eq(ferry_log_count(&fp, "supervisor: reload"), 1);
	/* Worker 0 dies; its replacement is forked from the supervisor. */
	kill(w[0], SIGKILL);
	cr_assert(ferry_log_wait(&fp, " ready: ", 3, 10));
	children(now, 2);
	pid_t fresh = now[0] == w[1] ? now[1] : now[0];
	cr_assert_neq(fresh, w[0]);
	/* Only the new worker may answer. */
	stopped[0] = w[1];
	kill(w[1], SIGSTOP);
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "other.test",
	    "a restarted worker came back with the old certificate");
	kill(w[1], SIGCONT);
	stopped[0] = 0;
}

/* ---- workers ---- */

/* The log line of a served connection says which process served it. */
static bool
served_by(pid_t pid, int n)
{
	char needle[64];

	snprintf(needle, sizeof(needle), "ferry[%ld] INFO web: ", (long)pid);
	return ferry_log_wait(&fp, needle, n, 10);
}

Test(program, two_workers_both_serve, .timeout = 60, .fini = resume_all)
{
	char conf[512];
	pid_t w[8];
	struct peer p;

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n"
	    WEB "backend = 127.0.0.1:%d\n", be.port);
	ferry_start_args(&fp, conf, 2, NULL);
	int port = ferry_port(&fp, "web");
	children(w, 2);
	for (int i = 0; i < 2; i++) {
		/* One worker frozen: the other must take the connection. */
		stopped[0] = w[1 - i];
		kill(w[1 - i], SIGSTOP);
		peer_plain(&p, connect_loopback(false, port));
		ping(&p, "served");
		peer_close(&p);
		cr_assert(served_by(w[i], 1), "worker %d (pid %ld) did not "
		    "serve", i, (long)w[i]);
		kill(w[1 - i], SIGCONT);
		stopped[0] = 0;
	}
}

/* Relay: big-endian length, then the bytes. */
static void
send_field(int fd, const char *s)
{
	uint32_t n = htonl((uint32_t)strlen(s));

	cr_assert_eq(send(fd, &n, 4, 0), 4);
	cr_assert_eq(send(fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

static unsigned char
answer(int fd)
{
	unsigned char c = 0xff;

	cr_assert_eq(recv(fd, &c, 1, MSG_WAITALL), 1, "no answer");
	return c;
}

/* With two workers the relay still pairs: one process, one registry. */
Test(program, relay_in_one_worker_of_two, .timeout = 60, .fini = stop_all)
{
	char uuid[32];

	ferry_start_args(&fp, "[ferry]\nworkers = 2\n"
	    "[devices]\nmode = relay\nbind = 127.0.0.1:0\n", 2, NULL);
	int port = ferry_port(&fp, "devices");
	cr_assert_eq(ferry_log_count(&fp, "relay listening on"), 1);
	for (int i = 0; i < 6; i++) {
		int prod = connect_loopback(false, port);
		int cons = connect_loopback(false, port);
		snprintf(uuid, sizeof(uuid), "uuid-%d", i);
		cr_assert_eq(send(prod, (char[]){ RELAY_PRODUCER }, 1, 0), 1);
		cr_assert_eq(answer(prod), 0);
		send_field(prod, uuid);
		cr_assert_eq(answer(prod), 0);
		send_field(prod, "x,y");
		cr_assert_eq(answer(prod), 0);
		cr_assert_eq(send(cons, (char[]){ RELAY_CONSUMER }, 1, 0), 1);
		cr_assert_eq(answer(cons), 0);
		send_field(cons, uuid);
		cr_assert_eq(answer(cons), 0, "consumer %d met another "
		    "registry", i);
		close(cons);
		close(prod);
	}
}

/* ---- SIGTERM ---- */

Test(program, sigterm_drains_then_exits, .timeout = 60, .fini = stop_all)
{
	char conf[512];
	struct peer p;
	int status;

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n"
	    "drain_timeout = 30\n"
	    WEB "cert = " CERT("server.pem") "\nkey = " CERT("server.key")
	    "\nbackend = 127.0.0.1:%d\n", be.port);
	ferry_start_args(&fp, conf, 2, NULL);
	int port = ferry_port(&fp, "web");
	peer_tls(&p, connect_loopback(false, port), "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&p));
	ping(&p, "before");
	ferry_signal(&fp, SIGTERM);
	cr_assert(ferry_log_wait(&fp, "no new connections", 2, 10));
	/* New connections are refused (nobody listens any more)... */
	int fd = connect_loopback(false, port);
	cr_assert_lt(fd, 0, "a new connection was accepted while draining");
	cr_assert_eq(errno, ECONNREFUSED);
	/* ...the open one keeps working until it closes... */
	ping(&p, "while draining");
	cr_assert_not(ferry_wait_exit(&fp, 0.5));
	peer_close(&p);
	/* ...and then ferry exits, cleanly. */
	cr_assert(ferry_wait_exit(&fp, 10), "ferry did not exit");
	status = fp.status;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "status %d", status);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 1));
}

/* ---- the metrics page ---- */

/* Checks the text format; returns the number of families. */
static int
check_exposition(const char *page)
{
	char families[64][96];
	int nf = 0;
	const char *line = page;

	while (*line != '\0') {
		const char *eol = strchr(line, '\n');
		char name[96], kind[16];
		cr_assert_not_null(eol, "unterminated last line");
		size_t len = (size_t)(eol - line);
		if (strncmp(line, "# HELP ", 7) == 0) {
			cr_assert_eq(sscanf(line + 7, "%95s", name), 1);
			for (int i = 0; i < nf; i++)
				cr_assert_str_neq(families[i], name,
				    "family %s twice", name);
			cr_assert_lt(nf, 64);
			snprintf(families[nf++], sizeof(families[0]), "%s",
			    name);
		} else if (strncmp(line, "# TYPE ", 7) == 0) {
			cr_assert_eq(sscanf(line + 7, "%95s %15s", name, kind),
			    2);
			cr_assert(nf > 0 && strcmp(families[nf - 1], name) ==
			    0, "TYPE %s without its HELP", name);
			bool total = len > 6 && strlen(name) > 6 &&
			    strcmp(name + strlen(name) - 6, "_total") == 0;
			if (strcmp(kind, "counter") == 0)
				cr_assert(total, "counter %s lacks _total",
				    name);
			else
				cr_assert(strcmp(kind, "gauge") == 0 && !total,
				    "%s: %s", name, kind);
		} else {
			/* name{label="value",...} number */
			size_t n = strcspn(line, "{ ");
			cr_assert(nf > 0 && strlen(families[nf - 1]) == n &&
			    strncmp(line, families[nf - 1], n) == 0,
			    "sample outside its family: %.*s", (int)len, line);
			const char *p = line + n;
			if (*p == '{') {
				p++;
				while (*p != '}') {
					size_t k = strspn(p, "abcdefghijklmnop"
					    "qrstuvwxyz_");
					cr_assert(k > 0 && p[k] == '=' &&
					    p[k + 1] == '"', "bad label: %.*s",
					    (int)len, line);
					p += k + 2;
					while (*p != '"') {
						cr_assert(*p != '\n' && *p);
						if (*p == '\\') {
							cr_assert(strchr("\\\"n",
							    p[1]) != NULL);
							p++;
						}
						p++;
					}
					p++;
					if (*p == ',')
						p++;
				}
				p++;
			}
			char *end;
			cr_assert_eq(*p, ' ');
			strtod(p + 1, &end);
			cr_assert(end == eol && end > p + 1, "bad value: %.*s",
			    (int)len, line);
		}
		line = eol + 1;
	}
	return nf;
}

static double
metric(const char *series)
{
	double v = ferry_metric(&fp, series);

	cr_assert_geq(v, 0, "no series %s", series);
	return v;
}

#define L(name, listener) \
	name "{listener=\"" listener "\",mode=\"forward\"}"

Test(program, metrics_parse_and_count, .timeout = 60, .fini = stop_all)
{
	char conf[1024], msg[1000];
	int status, dead, lfd;
	struct peer p;

	lfd = listen_loopback(false, &dead);
	close(lfd);
	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[devices]\nmode = relay\nbind = 127.0.0.1:0\n"
	    WEB "cert = " CERT("server.pem") "\nkey = " CERT("server.key")
	    "\nbackend = 127.0.0.1:%d\n"
	    "[down]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n", be.port, dead);
	ferry_start(&fp, conf);
	int web = ferry_port(&fp, "web"), down = ferry_port(&fp, "down");
	memset(msg, 'm', sizeof(msg));
	msg[sizeof(msg) - 1] = '\0';
	for (int i = 0; i < 3; i++) {
		peer_tls(&p, connect_loopback(false, web), "localhost", NULL,
		    NULL);
		cr_assert(peer_tls_handshake(&p));
		ping(&p, msg);
		peer_close(&p);
	}
	/* Not TLS at all: a failed handshake. */
	int fd = connect_loopback(false, web);
	cr_assert_eq(send(fd, "GET / HTTP/1.0\r\n\r\n", 18, 0), 18);
	char c;
	cr_assert_leq(recv(fd, &c, 1, 0), 0);
	close(fd);
	/* No backend behind [down]. */
	peer_plain(&p, connect_loopback(false, down));
	cr_assert_leq(peer_read(&p, &c, 1), 0);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "closed after", 4, 10));

	char *page = http_get(ferry_port(&fp, "admin"), "/metrics", &status);
	cr_assert_not_null(page);
	cr_assert_eq(status, 200);
	cr_assert_geq(check_exposition(page), 15);
	cr_assert_not_null(strstr(page, "ferry_relay_devices{"));
	cr_assert_not_null(strstr(page,
	    "ferry_worker_resident_memory_bytes{worker=\"0\"} "));
	free(page);

	cr_assert_eq(metric(L("ferry_connections_accepted_total", "web")), 4);
	cr_assert_eq(metric(L("ferry_connections_active", "web")), 0);
	cr_assert_eq(metric(L("ferry_tls_handshakes_total", "web")), 3);
	cr_assert_eq(metric(L("ferry_tls_handshake_failures_total", "web")), 1);
	cr_assert_eq(metric(L("ferry_client_received_bytes_total", "web")),
	    3 * 999);
	cr_assert_eq(metric(L("ferry_client_sent_bytes_total", "web")),
	    3 * 999);
	cr_assert_eq(metric(L("ferry_backend_sent_bytes_total", "web")),
	    3 * 999);
	cr_assert_eq(metric(L("ferry_backend_received_bytes_total", "web")),
	    3 * 999);
	cr_assert_eq(metric(L("ferry_backend_connect_failures_total", "web")),
	    0);
	cr_assert_eq(metric(L("ferry_connections_accepted_total", "down")),
	    1);
	cr_assert_eq(metric(L("ferry_backend_connect_failures_total",
	    "down")), 1);
	cr_assert_eq(metric(L("ferry_connections_active", "down")), 0);
	cr_assert_gt(metric("ferry_process_resident_memory_bytes"), 0);
}

/* A client from `src` (any 127.0.0.0/8 address works on loopback). */
static int
connect_from(const char *src, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = 10 };

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	inet_pton(AF_INET, src, &a.sin_addr);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0,
	    "bind %s: %s", src, strerror(errno));
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	a.sin_port = htons((uint16_t)port);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* Closed by the server without a byte: refused at accept. */
static bool
refused(int fd)
{
	char c;

	return recv(fd, &c, 1, 0) == 0;
}

/* The config's limits reach the listeners: over either, a client is closed
 * at once and counted; below them, it is served. */
Test(program, connection_limits_from_config, .timeout = 60,
    .fini = stop_all)
{
	int a[3], b;
	unsigned char ack;

	ferry_start(&fp,
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[devices]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "max_connections = 3\nmax_connections_per_source = 2\n");
	int port = ferry_port(&fp, "devices");

	a[0] = connect_from("127.0.0.1", port);
	a[1] = connect_from("127.0.0.1", port);
	/* A third from the same source: over the per-source limit. */
	a[2] = connect_from("127.0.0.1", port);
	cr_assert(refused(a[2]), "third connection from one source served");
	close(a[2]);
	/* Another source still gets in, up to the listener's limit. */
	b = connect_from("127.0.0.2", port);
	cr_assert_eq(send(b, (char[]){ RELAY_PRODUCER }, 1, 0), 1);
	cr_assert_eq(recv(b, &ack, 1, 0), 1, "second source not served");
	cr_assert_eq(ack, RELAY_OK);
	a[2] = connect_from("127.0.0.3", port);
	cr_assert(refused(a[2]), "fourth connection served past the limit");
	close(a[2]);
	cr_assert_eq(metric("ferry_connections_refused_total"
	    "{listener=\"devices\",mode=\"relay\"}"), 2);
	/* A slot comes back when a connection closes. */
	close(a[0]);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	a[0] = connect_from("127.0.0.1", port);
	cr_assert_eq(send(a[0], (char[]){ RELAY_PRODUCER }, 1, 0), 1);
	cr_assert_eq(recv(a[0], &ack, 1, 0), 1, "freed slot not reused");
	close(a[0]);
	close(a[1]);
	close(b);
}
