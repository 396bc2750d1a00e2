/*
 * Rough edges a new user meets (issue 16): what --check refuses and warns
 * about, what ferry says when a certificate is missing, and the log lines
 * about timeouts, drains and limits.  Real binary, loopback, port 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relayclient.h"

static struct ferry_proc fp;
static struct backend be;
static char dir[64], conf[128];

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
	if (conf[0] != '\0')
		unlink(conf);
	if (dir[0] != '\0')
		rmdir(dir);
	conf[0] = dir[0] = '\0';
}

/* `ferry --check -c` on text; the exit status, the output in out. */
static int
check(const char *text, char *out, size_t len)
{
	const char *argv[] = { "--check", "-c", conf, NULL };
	FILE *f;

	if (dir[0] == '\0') {
		snprintf(dir, sizeof(dir), "/tmp/ferry-checks-XXXXXX");
		cr_assert_not_null(mkdtemp(dir));
		snprintf(conf, sizeof(conf), "%s/ferry.conf", dir);
	}
	f = fopen(conf, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	return ferry_run(argv, out, len);
}

Test(checks, missing_certificate_names_the_path, .timeout = 30,
    .fini = cleanup)
{
	char out[4096];
	const char *def[] = { "--check", "--certs", "/nonexistent-dir",
	    NULL };

	cr_assert_eq(check("[web]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = /nonexistent/server.pem\nkey = /nonexistent/server.key\n",
	    out, sizeof(out)), 2);
	cr_assert_not_null(strstr(out, "ferry.conf:4: [web] cert: "
	    "certificate /nonexistent/server.pem: No such file or directory"),
	    "%s", out);
	cr_assert_null(strstr(out, "system lib"), "%s", out);
	/* The embedded default says where it looked and how to fix it. */
	cr_assert_eq(ferry_run(def, out, sizeof(out)), 2);
	cr_assert_not_null(strstr(out, "/nonexistent-dir/server.pem: No such "
	    "file or directory"), "%s", out);
	cr_assert_not_null(strstr(out, "--certs DIR"), "%s", out);
	cr_assert_not_null(strstr(out, "make run"), "%s", out);
}

Test(checks, two_listeners_on_one_address, .timeout = 30, .fini = cleanup)
{
	char out[4096];

	cr_assert_eq(check("[a]\nmode = relay\nbind = 127.0.0.1:7000\n"
	    "[b]\nmode = relay\nbind = 127.0.0.1:7001, :7000\n", out,
	    sizeof(out)), 2);
	cr_assert_not_null(strstr(out, "ferry.conf:6: [b] bind: :7000 is also "
	    "bound by [a] (line 1)"), "%s", out);
	cr_assert_eq(check("[ferry]\nadmin = 127.0.0.1:9100\n"
	    "[a]\nmode = relay\nbind = :9100\n", out, sizeof(out)), 2);
	cr_assert_not_null(strstr(out, "[a] bind: :9100 is also bound by "
	    "admin"), "%s", out);
	/* Other hosts, other families, port 0: no clash. */
	cr_assert_eq(check("[a]\nmode = relay\nbind = 127.0.0.1:7000, "
	    "[::1]:7000, 127.0.0.1:0\n[b]\nmode = relay\n"
	    "bind = 127.0.0.2:7000, 127.0.0.1:0\n", out, sizeof(out)), 0,
	    "%s", out);
}

Test(checks, workers_not_a_number, .timeout = 30, .fini = cleanup)
{
	char out[4096];

	cr_assert_eq(check("[ferry]\nworkers = two\n[a]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n", out, sizeof(out)), 2);
	cr_assert_not_null(strstr(out, "'two' is not a whole number"), "%s",
	    out);
}

Test(checks, idle_workers_warned, .timeout = 60, .fini = cleanup)
{
	char out[4096];

	cr_assert_eq(check("[ferry]\nworkers = 2\n[a]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n", out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "warning: workers = 2: every listener "
	    "is a relay listener"), "%s", out);
	/* A forward listener gives the others work: no word. */
	cr_assert_eq(check("[ferry]\nworkers = 2\n[a]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n[f]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:9\n", out, sizeof(out)), 0, "%s", out);
	cr_assert_null(strstr(out, "warning"), "%s", out);
	/* Nor with [cluster]: every worker is a node, serving relays. */
	cr_assert_eq(check("[ferry]\nworkers = 2\n[cluster]\n"
	    "nats = nats://127.0.0.1:4222\n[a]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n", out, sizeof(out)), 0, "%s", out);
	cr_assert_null(strstr(out, "warning"), "%s", out);
	ferry_start_args(&fp, "[ferry]\nworkers = 2\n[a]\nmode = relay\n"
	    "bind = 127.0.0.1:0\n", 2, NULL);
	cr_assert_eq(ferry_log_count(&fp, "workers = 2: every listener is a "
	    "relay listener, which worker 0 alone serves (one registry): 1 "
	    "workers idle"), 1);
}

Test(checks, forward_handshake_timeout_logged, .timeout = 60,
    .fini = cleanup)
{
	char buf[1];

	ferry_start(&fp, "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:9\ncert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\nhandshake_timeout = 0.2\n");
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	cr_assert_geq(fd, 0);
	/* Silent: no ClientHello.  Closed by the deadline, and logged. */
	cr_assert_eq(read(fd, buf, 1), 0);
	close(fd);
	cr_assert(ferry_log_wait(&fp, "web: 127.0.0.1:", 1, 10));
	cr_assert(ferry_log_wait(&fp, "closed during the handshake: handshake "
	    "timed out", 1, 10));
}

Test(checks, drain_counts_a_forwarded_connection_once, .timeout = 60,
    .fini = cleanup)
{
	struct peer p;
	char buf[4], text[256];

	backend_start(&be, false, backend_echo, NULL);
	snprintf(text, sizeof(text), "[web]\nmode = forward\n"
	    "bind = 127.0.0.1:0\nbackend = 127.0.0.1:%d\n", be.port);
	ferry_start(&fp, text);
	peer_plain(&p, connect_loopback(false, ferry_port(&fp, "web")));
	cr_assert_eq(peer_write(&p, "ping", 4), 4);
	cr_assert_eq(peer_read_exact(&p, buf, 4), 4);
	ferry_signal(&fp, SIGTERM);
	cr_assert(ferry_log_wait(&fp, "no new connections; draining", 1, 10));
	cr_assert_eq(ferry_log_count(&fp, "no new connections; draining 1 "
	    "for up to"), 1);
	peer_close(&p);
	cr_assert(ferry_wait_exit(&fp, 15));
}

Test(checks, idle_timeout_fraction_logged_as_given, .timeout = 60,
    .fini = cleanup)
{
	struct rclient c;

	ferry_start(&fp, "[devices]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "idle_timeout = 0.3\n");
	cr_assert_eq(rc_producer(&c, false, ferry_port(&fp, "devices"),
	    "idle-1", "k"), RC_OK);
	cr_assert(rc_closed(&c, 10));
	rc_free(&c);
	cr_assert(ferry_log_wait(&fp, "idle for 0.3 s", 1, 10));
	cr_assert_eq(ferry_log_count(&fp, "idle for 0 s"), 0);
}

Test(checks, admin_cap_names_its_key, .timeout = 60, .fini = cleanup)
{
	int fds[2];

	ferry_start(&fp, "[ferry]\nadmin = 127.0.0.1:0\n"
	    "admin_max_connections = 1\n"
	    "[devices]\nmode = relay\nbind = 127.0.0.1:0\n");
	int port = ferry_port(&fp, "admin");
	fds[0] = connect_loopback(false, port);
	cr_assert_geq(fds[0], 0);
	/* Counted from its accept: the second is over the cap. */
	fds[1] = connect_loopback(false, port);
	cr_assert_geq(fds[1], 0);
	cr_assert(ferry_log_wait(&fp, "admin_max_connections (1) reached", 1,
	    10));
	cr_assert_eq(ferry_log_count(&fp, ": max_connections (1)"), 0);
	close(fds[0]);
	close(fds[1]);
}
