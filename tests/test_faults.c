/*
 * Faults around the server, end to end with the real binary on loopback:
 * workers killed under it (restarted, or given up on cleanly past the
 * restart limit, leaving no worker behind) and backends that end a stream
 * in the middle, with a FIN or a reset, while another client keeps
 * flowing.  (Refusing and silent backends: test_forward.c.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static struct backend be;
static pid_t stopped = -1;		/* a worker this test froze */

static void
cleanup(void)
{
	if (stopped > 0)
		kill(stopped, SIGCONT);
	stopped = -1;
	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
}

#define WEB_SERIES(name) name "{listener=\"web\",mode=\"forward\"}"

static void
expect_metric(const char *series, double want)
{
	metric_expect(&fp, series, want, 10, 10);
}

static void
expect_log(const char *needle, int n)
{
	ferry_log_expect(&fp, needle, n);
}

/* ---- workers ---- */

/* Waits for the supervisor to have n workers; returns them in out. */
static void
workers(pid_t *out, int n)
{
	double end = now_s() + 10;
	int got;

	while ((got = ferry_children(&fp, out, 8)) != n && now_s() < end)
		usleep(10 * 1000);
	cr_assert_eq(got, n, "%d workers, not %d", got, n);
}

/* A plain client served through [web]; true if the echo came back. */
static void
served(int port, const char *msg)
{
	struct peer p;
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_plain(&p, fd);
	ping(&p, msg);
	peer_close(&p);
}

static void
start_workers(int max_restarts)
{
	char conf[1024];

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nworkers = 2\nmax_restarts = %d\nadmin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n", max_restarts, be.port);
	ferry_start_args(&fp, conf, 2, NULL);
}

/*
 * SIGKILL, not a crash the worker could log: the supervisor notices,
 * forks a replacement, and the replacement serves (the other worker is
 * frozen meanwhile, so only the new one can take the connection).
 */
Test(faults, killed_worker_is_restarted_and_serves, .timeout = 60,
    .fini = cleanup)
{
	pid_t w[8], now[8], fresh;
	char needle[64];

	start_workers(5);
	int port = ferry_port(&fp, "web");
	workers(w, 2);
	served(port, "before");
	/* Closed on ferry's side too, before the kill (see the next test). */
	expect_log("INFO web: ", 1);
	cr_assert_eq(kill(w[0], SIGKILL), 0);
	expect_log("killed by signal 9 (Killed); restarting (1 of 5)", 1);
	expect_log(" ready: ", 3);
	workers(now, 2);
	fresh = now[0] == w[1] ? now[1] : now[0];
	cr_assert(fresh != w[0] && fresh != w[1], "no new worker");
	cr_assert_not(proc_alive(w[0]));

	stopped = w[1];
	cr_assert_eq(kill(w[1], SIGSTOP), 0);
	for (int i = 0; i < 3; i++)
		served(port, "by the new worker");
	snprintf(needle, sizeof(needle), "ferry[%ld] INFO web: ",
	    (long)fresh);
	expect_log(needle, 3);
	cr_assert_eq(kill(w[1], SIGCONT), 0);
	stopped = -1;

	/* The counters survived the worker (they live in shared memory). */
	served(port, "after");
	expect_metric(WEB_SERIES("ferry_connections_accepted_total"), 5);
	expect_metric(WEB_SERIES("ferry_connections_active"), 0);
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "status %d", status);
}

/*
 * A worker killed with a connection open takes the connection with it;
 * the gauge of open connections must not count it for ever.
 */
Test(faults, killed_worker_connection_not_left_active, .timeout = 60,
    .fini = cleanup)
{
	pid_t w[8];
	struct peer held;
	char needle[64];

	start_workers(5);
	int port = ferry_port(&fp, "web");
	workers(w, 2);
	/* Freeze worker 1: worker 0 takes the connection. */
	stopped = w[1];
	cr_assert_eq(kill(w[1], SIGSTOP), 0);
	peer_plain(&held, connect_loopback(false, port));
	ping(&held, "held");
	cr_assert_eq(kill(w[1], SIGCONT), 0);
	stopped = -1;
	expect_metric(WEB_SERIES("ferry_connections_active"), 1);
	cr_assert_eq(kill(w[0], SIGKILL), 0);
	expect_log(" ready: ", 3);
	char c;
	cr_assert_leq(peer_read(&held, &c, 1), 0);
	peer_close(&held);
	snprintf(needle, sizeof(needle), "worker 0 (pid %ld) killed",
	    (long)w[0]);
	expect_log(needle, 1);
	expect_metric(WEB_SERIES("ferry_connections_active"), 0);
}

/*
 * Past max_restarts the supervisor stops as on a SIGTERM: the port is
 * closed, the other worker drains its client, and only then does the
 * supervisor exit 1, so that no worker is ever left without it.
 */
Test(faults, restart_limit_gives_up_cleanly, .timeout = 60,
    .fini = cleanup)
{
	pid_t w[8], all[8];
	int nall = 0;
	struct peer live;
	char needle[64];

	start_workers(1);
	int port = ferry_port(&fp, "web");
	workers(w, 2);
	all[nall++] = w[0];
	all[nall++] = w[1];
	/* A client inside worker 1 (worker 0 frozen), which will survive. */
	stopped = w[0];
	cr_assert_eq(kill(w[0], SIGSTOP), 0);
	peer_plain(&live, connect_loopback(false, port));
	ping(&live, "live");
	cr_assert_eq(kill(w[0], SIGCONT), 0);
	stopped = -1;

	cr_assert_eq(kill(w[0], SIGKILL), 0);
	expect_log("restarting (1 of 1)", 1);
	expect_log(" ready: ", 3);
	workers(w, 2);
	for (int i = 0; i < 2; i++)
		if (w[i] != all[0] && w[i] != all[1])
			all[nall++] = w[i];
	cr_assert_eq(nall, 3);
	served(port, "still up");

	/* The second death is one too many. */
	cr_assert_eq(kill(all[2], SIGKILL), 0);
	expect_log("too many restarts (1), giving up", 1);
	snprintf(needle, sizeof(needle), "ferry[%ld] INFO signal 15: no new "
	    "connections", (long)all[1]);
	expect_log(needle, 1);
	/* Nobody accepts any more... */
	cr_assert_lt(connect_loopback(false, port), 0);
	cr_assert_eq(errno, ECONNREFUSED);
	/* ...the live client is still served, and the supervisor waits. */
	ping(&live, "draining");
	cr_assert_not(ferry_wait_exit(&fp, 0.2), "the supervisor left its "
	    "worker behind");
	cr_assert(proc_alive(all[1]));
	peer_close(&live);

	cr_assert(ferry_wait_exit(&fp, 10), "the supervisor did not exit");
	cr_assert(WIFEXITED(fp.status) && WEXITSTATUS(fp.status) == 1,
	    "supervisor status %d", fp.status);
	/* Every worker it ever had is gone (or a zombie awaiting init). */
	for (int i = 0; i < nall; i++)
		cr_assert_not(proc_alive(all[i]), "worker pid %ld outlived "
		    "its supervisor", (long)all[i]);
}

/* ---- backends that end in the middle ---- */

#define MID_BYTES (512 * 1024)

enum ending { END_FIN, END_RESET };

struct midway {
	enum ending how;
	volatile bool done;
};

/*
 * Reads the client's 5-byte request, sends MID_BYTES of the test
 * pattern (more than the socket buffers hold, so ferry has some queued
 * when the end comes), then ends: a plain close (FIN) or a reset.
 */
static void
serve_midway(int fd, void *arg)
{
	struct midway *m = arg;
	static __thread uint8_t buf[65536];
	size_t sent = 0;
	char req[5];

	if (recv(fd, req, sizeof(req), MSG_WAITALL) != (ssize_t)sizeof(req))
		return;
	while (sent < MID_BYTES) {
		size_t k = MID_BYTES - sent < sizeof(buf) ? MID_BYTES - sent :
		    sizeof(buf);
		fill_pattern(buf, k, sent, 9);
		ssize_t n = send(fd, buf, k, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		sent += (size_t)n;
	}
	if (m->how == END_RESET) {
		struct linger lg = { 1, 0 };
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	m->done = true;
	/* backend_conn_main closes the fd when this returns. */
}

/*
 * Reads what arrives; checks it is the pattern, in order.  Returns the
 * byte count; *how is 0 for a clean EOF, -1 for an error or reset.
 */
static size_t
drain(struct peer *p, int *how)
{
	static uint8_t buf[65536];
	size_t got = 0;
	long n;

	while ((n = peer_read(p, buf, sizeof(buf))) > 0) {
		cr_assert(check_pattern(buf, (size_t)n, got, 9),
		    "corrupt after %zu bytes", got);
		got += (size_t)n;
	}
	*how = n == 0 ? 0 : -1;
	return got;
}

static void
start_midway(struct midway *m, struct backend *echo)
{
	char conf[1024];

	backend_start(&be, false, serve_midway, m);
	backend_start(echo, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n"
	    "[echo]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n",
	    CERT("server.pem"), CERT("server.key"), be.port,
	    CERT("server.pem"), CERT("server.key"), echo->port);
	ferry_start(&fp, conf);
}

static void
tls_client(struct peer *p, int port)
{
	peer_tls(p, connect_loopback(false, port), "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(p), "handshake with ferry failed");
}

/*
 * The backend closes (FIN) after half a megabyte: the client gets every
 * byte, then a clean end of stream (close_notify), while a client on
 * another listener keeps its echo going.
 */
Test(faults, backend_closes_mid_stream, .timeout = 60, .fini = cleanup)
{
	struct midway m = { END_FIN, false };
	struct backend echo;
	struct peer p, witness;
	int how;

	start_midway(&m, &echo);
	tls_client(&witness, ferry_port(&fp, "echo"));
	ping(&witness, "before");
	tls_client(&p, ferry_port(&fp, "web"));
	cr_assert_eq(peer_write(&p, "GET\r\n", 5), 5);
	ping(&witness, "during");
	cr_assert_eq(drain(&p, &how), MID_BYTES, "bytes lost before the "
	    "backend's close");
	cr_assert_eq(how, 0, "no clean end of stream after the backend's "
	    "close");
	cr_assert(m.done);
	peer_close(&p);
	/* One line for the connection, with the bytes and why it ended. */
	expect_log("web: 127.0.0.1:", 1);
	expect_log(" 5 bytes up, 524288 bytes down: backend closed", 1);
	ping(&witness, "after");
	peer_close(&witness);
	expect_metric(WEB_SERIES("ferry_connections_active"), 0);
	expect_metric(WEB_SERIES("ferry_backend_received_bytes_total"),
	    MID_BYTES);
	backend_stop(&echo);
}

/*
 * The backend resets after half a megabyte: what reaches the client is
 * a clean prefix of the stream, then the connection ends at once; the
 * log says the backend reset it; the witness never notices.
 */
Test(faults, backend_resets_mid_stream, .timeout = 60, .fini = cleanup)
{
	struct midway m = { END_RESET, false };
	struct backend echo;
	struct peer p, witness;
	int how;

	start_midway(&m, &echo);
	tls_client(&witness, ferry_port(&fp, "echo"));
	ping(&witness, "before");
	for (int i = 0; i < 3; i++) {
		tls_client(&p, ferry_port(&fp, "web"));
		cr_assert_eq(peer_write(&p, "GET\r\n", 5), 5);
		size_t got = drain(&p, &how);
		cr_assert_leq(got, MID_BYTES);
		peer_close(&p);
		ping(&witness, "between resets");
	}
	expect_log("backend reset", 3);
	expect_metric(WEB_SERIES("ferry_connections_active"), 0);
	ping(&witness, "after");
	peer_close(&witness);
	expect_metric("ferry_connections_active{listener=\"echo\","
	    "mode=\"forward\"}", 0);
	backend_stop(&echo);
}
