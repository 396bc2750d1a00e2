/*
 * access_log: one line per connection at its close, in text or JSON;
 * SIGUSR1 reopens the file (logrotate).  And cert_watch: a certificate
 * renewed on disk is served without a SIGHUP.  Real binary, loopback,
 * port 0, an echo backend that is a thread of the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static struct backend be;
static char dir[64];

static void
cleanup(void)
{
	char cmd[128];

	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
	if (dir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		(void)!system(cmd);
	}
	dir[0] = '\0';
}

static void
make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ferry-access-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 65536);
	size_t n;

	cr_assert_not_null(buf);
	if (f == NULL)
		return buf;
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int
count_lines(const char *path)
{
	char *s = slurp(path);
	int n = 0;

	for (char *p = s; *p; p++)
		n += *p == '\n';
	free(s);
	return n;
}

/* Waits until path has n lines. */
static bool
wait_lines(const char *path, int n)
{
	for (int i = 0; i < 1000; i++) {
		if (count_lines(path) >= n)
			return true;
		usleep(10 * 1000);
	}
	return false;
}

static void
echo_once(int port, const char *msg)
{
	struct peer p;
	char buf[64];
	size_t n = strlen(msg);

	peer_plain(&p, connect_loopback(false, port));
	cr_assert_eq(peer_write(&p, msg, n), n);
	cr_assert_eq(peer_read_exact(&p, buf, n), n);
	peer_close(&p);
}

static void
start(const char *format, char *logpath, size_t len)
{
	char conf[1024];

	make_dir();
	snprintf(logpath, len, "%s/access.log", dir);
	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nlog_format = %s\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\naccess_log = %s\n", format, be.port,
	    logpath);
	ferry_start(&fp, conf);
}

Test(access_log, text_line_per_connection_and_sigusr1, .timeout = 60,
    .fini = cleanup)
{
	char logpath[128], rotated[160];

	start("text", logpath, sizeof(logpath));
	int port = ferry_port(&fp, "web");
	echo_once(port, "hello");
	cr_assert(wait_lines(logpath, 1));
	char *s = slurp(logpath);
	cr_assert_not_null(strstr(s, "Z web 127.0.0.1:"), "%s", s);
	cr_assert_not_null(strstr(s, " in=5 out=5 duration="), "%s", s);
	cr_assert_not_null(strstr(s, " result="), "%s", s);
	free(s);

	/* logrotate: moved, then SIGUSR1; the next lines go to a new file. */
	snprintf(rotated, sizeof(rotated), "%s.1", logpath);
	cr_assert_eq(rename(logpath, rotated), 0);
	ferry_signal(&fp, SIGUSR1);
	for (int i = 0; i < 1000 && access(logpath, F_OK) != 0; i++)
		usleep(10 * 1000);
	cr_assert_eq(access(logpath, F_OK), 0, "not reopened");
	echo_once(port, "again!");
	cr_assert(wait_lines(logpath, 1));
	s = slurp(logpath);
	cr_assert_not_null(strstr(s, " in=6 out=6 "), "%s", s);
	free(s);
	cr_assert_eq(count_lines(rotated), 1);
	cr_assert_eq(count_lines(logpath), 1);
	/* The process lives on: SIGUSR1 did not kill it. */
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

Test(access_log, json_lines, .timeout = 60, .fini = cleanup)
{
	char logpath[128];

	start("json", logpath, sizeof(logpath));
	echo_once(ferry_port(&fp, "web"), "abc");
	cr_assert(wait_lines(logpath, 1));
	char *s = slurp(logpath);
	cr_assert(strncmp(s, "{\"time\":\"", 9) == 0, "%s", s);
	cr_assert_not_null(strstr(s, "\"listener\":\"web\",\"peer\":"
	    "\"127.0.0.1:"), "%s", s);
	cr_assert_not_null(strstr(s, "\"bytes_in\":3,\"bytes_out\":3,"),
	    "%s", s);
	cr_assert_not_null(strstr(s, "\"result\":\""), "%s", s);
	cr_assert_not_null(strstr(s, "}\n"), "%s", s);
	free(s);
}

Test(access_log, unwritable_file_is_a_config_error, .timeout = 60,
    .fini = cleanup)
{
	char conf[512], out[4096];
	const char *argv[] = { "-c", conf, NULL };

	make_dir();
	snprintf(out, sizeof(out), "[web]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "access_log = %s/no/such/dir/a.log\n", dir);
	snprintf(conf, sizeof(conf), "%s/ferry.conf", dir);
	FILE *f = fopen(conf, "w");
	cr_assert_not_null(f);
	fputs(out, f);
	fclose(f);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 1, "%s", out);
	cr_assert_not_null(strstr(out, "ferry.conf:4: [web] access_log: "),
	    "%s", out);
	cr_assert_not_null(strstr(out, "No such file or directory"), "%s",
	    out);
	/* --check says it first, and creates nothing. */
	const char *chk[] = { "--check", "-c", conf, NULL };
	cr_assert_eq(ferry_run(chk, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "ferry.conf:4: [web] access_log: "
	    "directory "), "%s", out);
	cr_assert_not_null(strstr(out, "/no/such/dir: No such file or "
	    "directory"), "%s", out);
}

/* ---- cert_watch ---- */

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

static void
copy(const char *from, const char *to)
{
	char *s = slurp(from), tmp[192];
	FILE *f;

	/* As a renewal does: a new file renamed over the old one. */
	snprintf(tmp, sizeof(tmp), "%s.new", to);
	f = fopen(tmp, "w");
	cr_assert_not_null(f);
	fputs(s, f);
	fclose(f);
	cr_assert_eq(rename(tmp, to), 0);
	free(s);
}

Test(access_log, cert_watch_renewal_without_sighup, .timeout = 60,
    .fini = cleanup)
{
	char conf[1024], cert[128], key[128], cn[128];

	make_dir();
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	copy(CERT("server.pem"), cert);
	copy(CERT("server.key"), key);
	snprintf(conf, sizeof(conf), "[ferry]\ncert_watch = on\n"
	    "[web]\nmode = relay\nbind = 127.0.0.1:0\ncert = %s\nkey = %s\n",
	    cert, key);
	ferry_start(&fp, conf);
	int port = ferry_port(&fp, "web");
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "localhost");

	/* Half a renewal (a certificate without its key): nothing changes. */
	copy(CERT("other.pem"), cert);
	cr_assert(ferry_log_wait(&fp, "cert_watch: reload: ", 1, 15));
	cr_assert(ferry_log_wait(&fp, "keeping the current", 1, 5));
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "localhost");
	/* The key follows: the new pair is served. */
	copy(CERT("other.key"), key);
	cr_assert(ferry_log_wait(&fp, "cert_watch: reload: 1 listeners", 1,
	    15));
	served_cn(port, cn, sizeof(cn));
	cr_assert_str_eq(cn, "other.test");
	cr_assert_eq(ferry_log_count(&fp, "SIGHUP"), 0);
}
