/*
 * Backends end to end (backend.h): passive health (max_fails,
 * fail_timeout), active checks bringing a backend back, weights, backups,
 * least connections, the workers sharing a backend's state, and the
 * per-backend metrics.  The real binary between plain clients and
 * backends served by threads of this process, on loopback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
#include "netutil.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

/* [web]: plain forward listener, admin page, `extra` lines; `workers`. */
static void
start_web(int workers, const char *extra)
{
	char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "workers = %d\n"
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "%s", workers, extra);
	ferry_start_args(&fp, conf, workers, NULL);
}

/* A plain client through ferry, echoing one message; false if closed. */
static bool
client_ping(struct peer *p, const char *msg)
{
	char buf[128];
	size_t n = strlen(msg);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_plain(p, fd);
	if (peer_write(p, msg, n) != n)
		return false;
	return peer_read_exact(p, buf, n) == n && memcmp(buf, msg, n) == 0;
}

static bool
one_client(const char *msg)
{
	struct peer p;
	bool ok = client_ping(&p, msg);

	peer_close(&p);
	return ok;
}

static int
dead_port(void)
{
	int port, fd = listen_loopback(false, &port);

	close(fd);
	return port;
}

/* One backend's series on the admin page. */
static double
backend_metric(const char *family, int port)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"web\",set=\"default\","
	    "backend=\"127.0.0.1:%d\"}", family, port);
	return ferry_metric(&fp, series);
}

/* Waits (bounded) until the series has value v. */
static bool
backend_wait(const char *family, int port, double v, double timeout)
{
	for (int i = 0; i < (int)(timeout * 20); i++) {
		if (backend_metric(family, port) == v)
			return true;
		usleep(50 * 1000);
	}
	return false;
}

/* Waits until every connection line is logged, so counts are final. */
static void
lines_wait(int n)
{
	cr_assert(ferry_log_wait(&fp, "closed after", n, 10),
	    "%d connection lines expected", n);
}

Test(backends, passive_down_after_max_fails, .timeout = 60, .fini = cleanup)
{
	struct backend be;
	char extra[512];
	int dead = dead_port();

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d\n"
	    "max_fails = 2\nfail_timeout = 120\n", dead, be.port);
	start_web(1, extra);
	cr_assert_eq(backend_metric("ferry_backend_up", dead), 1);
	for (int i = 0; i < 8; i++)
		cr_assert(one_client("hello"), "client %d not served", i);
	lines_wait(8);
	/* Two failures marked it down: no client tried it again. */
	cr_assert_eq(backend_metric("ferry_backend_failures_total", dead), 2);
	cr_assert_eq(backend_metric("ferry_backend_up", dead), 0);
	cr_assert_eq(backend_metric("ferry_backend_up", be.port), 1);
	cr_assert_eq(backend_metric("ferry_backend_connects_total", be.port),
	    8);
	cr_assert_eq(be.accepted, 8);
	cr_assert_eq(ferry_log_count(&fp, "marked down for 120 s"), 1);
	backend_stop(&be);
}

Test(backends, passive_off_by_default, .timeout = 60, .fini = cleanup)
{
	struct backend be;
	char extra[512];
	int dead = dead_port();

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d\n",
	    dead, be.port);
	start_web(1, extra);
	for (int i = 0; i < 4; i++)
		cr_assert(one_client("hello"));
	lines_wait(4);
	/*
	 * Without max_fails, each client's turn comes to the dead one first
	 * (a retry is the next turn): every client pays a failed attempt.
	 */
	cr_assert_eq(backend_metric("ferry_backend_failures_total", dead), 4);
	cr_assert_eq(backend_metric("ferry_backend_up", dead), 1);
	backend_stop(&be);
}

/* Listens on 127.0.0.1:port (a port chosen earlier). */
static int
listen_on(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
	    .sin_port = htons((uint16_t)port),
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0,
	    "bind %d: %s", port, strerror(errno));
	cr_assert_eq(listen(fd, 16), 0);
	return fd;
}

/* Reads to EOF: true if the peer closed (cleanly or with a reset). */
static bool
closed_by_peer(struct peer *p)
{
	char buf[64];
	long n;

	while ((n = peer_read(p, buf, sizeof(buf))) > 0)
		;
	return n == 0 || errno == ECONNRESET;
}

Test(backends, check_marks_down_and_brings_back, .timeout = 90,
    .fini = cleanup)
{
	char extra[512];
	int port = dead_port(), lfd, fd = -1;
	struct peer p;

	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "max_fails = 2\nfail_timeout = 120\ncheck_interval = 100ms\n",
	    port);
	/* Two workers: worker 0 checks, both act on what it finds. */
	start_web(2, extra);
	/* Checks alone (no client) find it dead: down after two. */
	cr_assert(backend_wait("ferry_backend_up", port, 0, 30),
	    "the dead backend was not marked down by the checks");
	cr_assert_geq(backend_metric("ferry_backend_check_failures_total",
	    port), 2);
	cr_assert(ferry_log_wait(&fp, "marked down until a check passes", 1,
	    10));
	/* Clients are closed at once: no attempt on their account. */
	for (int i = 0; i < 6; i++) {
		peer_plain(&p, connect_loopback(false, ferry_port(&fp, "web")));
		peer_write(&p, "x", 1);
		cr_assert(closed_by_peer(&p), "the client was not closed");
		peer_close(&p);
	}
	cr_assert(ferry_log_wait(&fp, "no backend up", 6, 10));
	cr_assert_eq(backend_metric("ferry_backend_failures_total", port), 0);

	/* It comes back: a check passes, and it takes clients again. */
	lfd = listen_on(port);
	cr_assert(ferry_log_wait(&fp, "up: a check passed", 1, 30),
	    "the backend was not brought back by a check");
	cr_assert_eq(backend_metric("ferry_backend_up", port), 1);
	peer_plain(&p, connect_loopback(false, ferry_port(&fp, "web")));
	cr_assert_eq(peer_write(&p, "x", 1), 1);
	/* The checks connect too (and send nothing): skip them. */
	for (int k = 0; k < 200 && fd < 0; k++) {
		char c;
		int afd = accept_timeout(lfd, 10);
		struct timeval tv = { 10, 0 };
		if (afd < 0)
			break;
		cr_assert_eq(fcntl(afd, F_SETFL, 0), 0);
		setsockopt(afd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (recv(afd, &c, 1, 0) == 1 && c == 'x')
			fd = afd;
		else
			close(afd);
	}
	cr_assert_geq(fd, 0, "the client did not reach the revived backend");
	cr_assert_eq(send(fd, "y", 1, 0), 1);
	char c;
	cr_assert_eq(peer_read_exact(&p, &c, 1), 1);
	cr_assert_eq(c, 'y');
	peer_close(&p);
	close(fd);
	close(lfd);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	cr_assert_eq(backend_metric("ferry_backend_connects_total", port), 1);
}

Test(backends, weights_three_to_one, .timeout = 60, .fini = cleanup)
{
	struct backend a, b;
	char extra[512];

	backend_start(&a, false, backend_echo, NULL);
	backend_start(&b, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d weight=3, "
	    "127.0.0.1:%d\n", a.port, b.port);
	start_web(1, extra);
	for (int i = 0; i < 8; i++)
		cr_assert(one_client("weighted"));
	lines_wait(8);
	cr_assert_eq(a.accepted, 6);
	cr_assert_eq(b.accepted, 2);
	cr_assert_eq(backend_metric("ferry_backend_connects_total", a.port),
	    6);
	backend_stop(&a);
	backend_stop(&b);
}

Test(backends, backup_only_when_primaries_are_gone, .timeout = 60,
    .fini = cleanup)
{
	struct backend a, b, bk;
	char extra[512];
	int dead = dead_port();

	backend_start(&a, false, backend_echo, NULL);
	backend_start(&b, false, backend_echo, NULL);
	backend_start(&bk, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d "
	    "backup, 127.0.0.1:%d\n", a.port, bk.port, b.port);
	start_web(1, extra);
	for (int i = 0; i < 4; i++)
		cr_assert(one_client("primary"));
	lines_wait(4);
	cr_assert_eq(a.accepted + b.accepted, 4);
	cr_assert_eq(bk.accepted, 0);
	ferry_stop(&fp);
	ferry_cleanup(&fp);

	/* The only primary is dead (and marked down): the backup serves. */
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d "
	    "backup\nmax_fails = 1\nfail_timeout = 120\n", dead, bk.port);
	start_web(1, extra);
	for (int i = 0; i < 3; i++)
		cr_assert(one_client("backup"));
	lines_wait(3);
	cr_assert_eq(bk.accepted, 3);
	cr_assert_eq(backend_metric("ferry_backend_failures_total", dead), 1);
	backend_stop(&a);
	backend_stop(&b);
	backend_stop(&bk);
}

Test(backends, leastconn_prefers_the_idle_backend, .timeout = 60,
    .fini = cleanup)
{
	struct backend a, b;
	struct peer p1, p2, p3;
	char extra[512];

	backend_start(&a, false, backend_echo, NULL);
	backend_start(&b, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d\n"
	    "balance = leastconn\n", a.port, b.port);
	start_web(1, extra);
	cr_assert(client_ping(&p1, "one"));
	cr_assert(client_ping(&p2, "two"));
	cr_assert_eq(a.accepted, 1);
	cr_assert_eq(b.accepted, 1);
	cr_assert_eq(backend_metric("ferry_backend_active_connections",
	    a.port), 1);
	/* The second client's backend is idle again: the third goes there
	   (round robin would send it to the first's). */
	peer_close(&p2);
	cr_assert(backend_wait("ferry_backend_active_connections", b.port, 0,
	    10));
	cr_assert(client_ping(&p3, "three"));
	cr_assert_eq(b.accepted, 2, "the third client went to the busy one");
	cr_assert_eq(a.accepted, 1);
	peer_close(&p1);
	peer_close(&p3);
	backend_stop(&a);
	backend_stop(&b);
}

Test(backends, workers_share_a_backend_state, .timeout = 90,
    .fini = cleanup)
{
	struct backend be;
	char extra[512];
	int dead = dead_port();

	backend_start(&be, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d\n"
	    "max_fails = 1\nfail_timeout = 120\n", dead, be.port);
	start_web(2, extra);
	for (int i = 0; i < 16; i++)
		cr_assert(one_client("shared"));
	lines_wait(16);
	/*
	 * One failure, in whichever worker, marks it down for both: had
	 * each worker its own state, each would pay a failure of its own.
	 */
	cr_assert_eq(backend_metric("ferry_backend_failures_total", dead), 1);
	cr_assert_eq(backend_metric("ferry_backend_up", dead), 0);
	cr_assert_eq(be.accepted, 16);
	backend_stop(&be);
}

/* ---- the keys, as config.c reads and checks them ---- */

#include "config.h"

static const char *
load_error(const char *listener_lines)
{
	static char err[512];
	static struct config cfg;
	char text[2048];

	snprintf(text, sizeof(text), "[web]\nmode = forward\n"
	    "bind = 127.0.0.1:0\n%s", listener_lines);
	config_init(&cfg);
	if (config_load_string(&cfg, text, "t.conf", err, sizeof(err)) == 0)
		return NULL;
	return err;
}

#define REFUSED(lines, why) do { \
	const char *e_ = load_error(lines); \
	cr_assert_not_null(e_, "accepted: %s", lines); \
	cr_assert_not_null(strstr(e_, why), "error: %s", e_); \
} while (0)

Test(backends, config_keys_checked, .timeout = 10)
{
	REFUSED("backend = 127.0.0.1:1 weight=0\n", "outside 1..256");
	REFUSED("backend = 127.0.0.1:1 heavy\n", "'heavy' is not weight=N");
	REFUSED("backend = 127.0.0.1:1\nroute = sni:a.example -> api\n",
	    "no backend set 'api'");
	REFUSED("backend = 127.0.0.1:1\nroute = host:a -> default\n",
	    "is not sni:NAME -> SET");
	REFUSED("backend = 127.0.0.1:1\nroute = sni:a.example\n", "no '-> SET'");
	REFUSED("backend_set = api: 127.0.0.1:1\n"
	    "route = sni:a.example -> api\n", "route_nomatch = refuse");
	REFUSED("backend = 127.0.0.1:1\nbackend_set = a: 127.0.0.1:2\n"
	    "backend_set = a: 127.0.0.1:3\n", "set 'a' given twice");
	REFUSED("backend = 127.0.0.1:1\ncheck = tls\ncheck_interval = 1\n",
	    "tls needs backend_tls");
	REFUSED("backend = 127.0.0.1:1\nunix_mode = 0660\n",
	    "no unix: address in bind");
	REFUSED("backend = 127.0.0.1:1\nunix_mode = 0999\n", "octal mode");
	REFUSED("backend = unix:relative.sock\n", "must be absolute");
	REFUSED("backend = 127.0.0.1:1\nbalance = random\n",
	    "not one of roundrobin, leastconn");
	REFUSED("backend = 127.0.0.1:1\nfail_timeout = 0\n", "more than 0");
	REFUSED("backend = 127.0.0.1:1\nalpn_fallback = on\n", "needs TLS");
	REFUSED("backend = 127.0.0.1:1\naccept_proxy = maybe\n",
	    "not on/off");

	/* All of it, valid. */
	static struct config cfg;
	char err[512];
	const char *text = "[web]\nmode = forward\n"
	    "bind = 127.0.0.1:0, unix:/tmp/ferry-test-web.sock\n"
	    "unix_mode = 0660\naccept_proxy = on\n"
	    "backend = 127.0.0.1:1 weight=3, unix:/tmp/be.sock backup\n"
	    "backend_set = api: 127.0.0.1:2, 127.0.0.1:3 weight=2\n"
	    "route = sni:*.api.example -> api\nroute = alpn:h2 -> default\n"
	    "route_nomatch = refuse\nbalance = leastconn\nmax_fails = 3\n"
	    "fail_timeout = 5\ncheck_interval = 2\ncheck = tcp\n"
	    "proxy_protocol = v2\nproxy_tlvs = on\n";
	config_init(&cfg);
	cr_assert_eq(config_load_string(&cfg, text, "t.conf", err,
	    sizeof(err)), 0, "%s", err);
	const struct config_listener *l = &cfg.listeners[0];
	cr_assert_eq(l->nbackend, 4);
	cr_assert_eq(l->backend[0].weight, 3);
	cr_assert(l->backend[1].backup);
	cr_assert_str_eq(l->backend[1].addr.host, "unix:/tmp/be.sock");
	cr_assert_eq(l->backend[2].set, 1);
	cr_assert_eq(l->nsets, 2);
	cr_assert_eq(l->nroutes, 2);
	cr_assert_eq(l->route[0].set, 1);
	cr_assert_eq(l->route[1].kind, CONFIG_ROUTE_ALPN);
	cr_assert_eq(l->route[1].set, 0);
	cr_assert(l->route_refuse);
	cr_assert_eq(l->balance, CONFIG_BALANCE_LEASTCONN);
	cr_assert_eq(l->unix_mode, 0660);
	cr_assert(l->accept_proxy);
}

Test(backends, check_validates_unix_owner, .timeout = 30)
{
	char dir[] = "/tmp/ferry-check-XXXXXX", path[64], out[4096];
	const char *argv[] = { "--check", "-c", path, NULL };
	FILE *f;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ferry.conf", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "[web]\nmode = forward\nbind = unix:%s/web.sock\n"
	    "unix_owner = no-such-user-here\nbackend = 127.0.0.1:1\n", dir);
	fclose(f);
	cr_assert_neq(ferry_run(argv, out, sizeof(out)), 0);
	cr_assert_not_null(strstr(out, "unix_owner: no user "
	    "'no-such-user-here'"), "%s", out);
	unlink(path);
	rmdir(dir);
}

/* ---- check = tls ---- */

#include <openssl/err.h>
#include <openssl/ssl.h>

/* TLS with the development certificate, then echo. */
static void
serve_tls_echo(int fd, void *arg)
{
	SSL_CTX *ctx = arg;
	SSL *ssl = SSL_new(ctx);
	char buf[4096];
	size_t n, w;

	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1) {
		while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1 &&
		    SSL_write_ex(ssl, buf, n, &w) == 1)
			;
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	ERR_clear_error();
}

/* Accepts and closes at once: a TCP check passes, a TLS one does not. */
static void
serve_close(int fd, void *arg)
{
	(void)fd;
	(void)arg;
}

Test(backends, tls_check_finds_a_backend_tcp_would_pass, .timeout = 60,
    .fini = cleanup)
{
	struct backend bad, good;
	char extra[1024];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx,
	    CERT("server.pem")), 1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, CERT("server.key"),
	    SSL_FILETYPE_PEM), 1);
	backend_start(&bad, false, serve_close, NULL);
	backend_start(&good, false, serve_tls_echo, ctx);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d, 127.0.0.1:%d\n"
	    "backend_tls = on\nbackend_ca = " CERT("ca.pem") "\n"
	    "backend_sni = localhost\ncheck = tls\ncheck_interval = 100ms\n"
	    "max_fails = 2\nfail_timeout = 60\n", bad.port, good.port);
	start_web(1, extra);
	cr_assert(backend_wait("ferry_backend_up", bad.port, 0, 30),
	    "a backend that fails the TLS handshake stayed up");
	cr_assert(backend_wait("ferry_backend_check_failures_total", good.port,
	    0, 1));
	cr_assert_eq(backend_metric("ferry_backend_up", good.port), 1);
	for (int i = 0; i < 3; i++)
		cr_assert(one_client("via tls"));
	lines_wait(3);
	cr_assert_eq(backend_metric("ferry_backend_failures_total", bad.port),
	    0);
	cr_assert_eq(backend_metric("ferry_backend_connects_total", good.port),
	    3);
	backend_stop(&bad);
	backend_stop(&good);
	SSL_CTX_free(ctx);
}
