/*
 * Forward mode end to end, the flow of bytes: timeouts, resets and
 * backpressure, a client paused behind a backend that never reads, the
 * per-connection log line under a crowd (see
 * test_forward.c).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "forward.h"
#include "forwardcheck.h"
#include "helpers.h"
#include "log.h"
#include "netutil.h"

/* ---- timeouts, errors, backpressure ---- */

struct trickle {
	int chunks;
	double every;
	volatile bool done;
};

/* A slow one-way download, then silence until the peer goes. */
static void
serve_trickle(int fd, void *arg)
{
	struct trickle *t = arg;
	char buf[1000], c;

	memset(buf, 'd', sizeof(buf));
	for (int i = 0; i < t->chunks; i++) {
		if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != sizeof(buf))
			return;
		usleep((useconds_t)(t->every * 1e6));
	}
	t->done = true;
	(void)recv(fd, &c, 1, 0);
}

Test(forward, idle_timeout_spares_one_way_traffic, .timeout = 30,
    .fini = cleanup)
{
	struct backend be;
	struct trickle t = { .chunks = 8, .every = 0.25 };
	struct peer p;
	char extra[256], buf[8000];

	backend_start(&be, false, serve_trickle, &t);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "idle_timeout = 1\n", be.port);
	start_web(false, extra);
	tls_client(&p, false, ferry_port(&fp, "web"));
	/* 2 s of download, the client silent all along: not idle. */
	cr_assert_eq(peer_read_exact(&p, buf, sizeof(buf)), sizeof(buf));
	cr_assert(wait_flag(&t.done, 5));
	/* Then nothing moves either way: closed. */
	cr_assert(read_to_eof(&p), "an idle connection was not closed");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "idle for 1 s", 1, 10));
	backend_stop(&be);
}

Test(forward, client_reset_closes_backend, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct watch w = { 0 };
	char extra[256];
	struct linger lg = { 1, 0 };

	backend_start(&be, false, serve_watch, &w);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n", be.port);
	start_web(true, extra);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	cr_assert_eq(send(fd, "hello", 5, 0), 5);
	for (int i = 0; i < 500 && be.accepted == 0; i++)
		usleep(10 * 1000);
	cr_assert_eq(be.accepted, 1);
	/* RST, not FIN. */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	cr_assert(wait_flag(&w.closed, 10), "the backend was left open");
	cr_assert(ferry_log_wait(&fp, "client reset", 1, 10));
	backend_stop(&be);
}

struct flood {
	size_t total;
	volatile size_t sent;
	volatile bool done;
};

static void
serve_flood(int fd, void *arg)
{
	struct flood *f = arg;
	static uint8_t buf[65536];
	int small = 65536;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	while (f->sent < f->total) {
		size_t k = f->total - f->sent < sizeof(buf) ?
		    f->total - f->sent : sizeof(buf);
		fill_pattern(buf, k, f->sent, 5);
		ssize_t n = send(fd, buf, k, MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN)
			continue;	/* SO_SNDTIMEO while the client waits */
		if (n <= 0)
			return;
		f->sent += (size_t)n;
	}
	f->done = true;
	shutdown(fd, SHUT_WR);
}

/*
 * A client that does not read holds the backend back: ferry queues at
 * most about high_water per side instead of taking everything in.
 */
Test(forward, backpressure_holds_the_backend, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct flood f = { .total = 64 * 1024 * 1024 };
	struct peer p;
	char extra[256];
	static uint8_t buf[65536];
	int small = 65536;
	size_t got = 0, last = 0;

	backend_start(&be, false, serve_flood, &f);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "high_water = 64k\n", be.port);
	start_web(true, extra);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	peer_plain(&p, fd);
	/* Let the backend run until it stalls (no progress for 0.5 s). */
	for (int i = 0; i < 40; i++) {
		usleep(500 * 1000);
		if (f.sent > 0 && f.sent == last)
			break;
		last = f.sent;
	}
	cr_assert_not(f.done, "64 MB went into a client that reads nothing");
	/* Socket buffers hold some MB; ferry must not have taken the rest. */
	cr_assert_lt(f.sent, (size_t)32 * 1024 * 1024, "sent %zu",
	    (size_t)f.sent);
	/* Reading resumes the flow, every byte intact and in order. */
	while (got < f.total) {
		long n = peer_read(&p, buf, sizeof(buf));
		cr_assert_gt(n, 0, "read failed after %zu bytes", got);
		cr_assert(check_pattern(buf, (size_t)n, got, 5),
		    "corrupt after %zu", got);
		got += (size_t)n;
	}
	cr_assert(read_to_eof(&p));
	cr_assert(f.done);
	peer_close(&p);
	backend_stop(&be);
}

/* ---- a client paused behind a backend that never reads ---- */

struct deaf {
	volatile bool drain;	/* told to read, at last */
	volatile size_t got;	/* what it then read, to the end */
	volatile bool done;
};

/* Reads nothing until told to; then everything ferry sent, to the end. */
static void
serve_deaf(int fd, void *arg)
{
	struct deaf *d = arg;
	static char buf[65536];
	size_t got = 0;
	ssize_t n;

	for (int i = 0; i < 6000 && !d->drain; i++)
		usleep(10 * 1000);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		got += (size_t)n;
	d->got = got;
	d->done = true;
}

/* Sockets the process holds (/proc/PID/fd). */
static int
count_sockets(pid_t pid)
{
	char dir[64], path[sizeof(dir) + 256], link[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/%ld/fd", (long)pid);
	d = opendir(dir);
	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		ssize_t k;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		k = readlink(path, link, sizeof(link) - 1);
		if (k > 0 && strncmp(link, "socket:", 7) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* Waits (bounded) until the process holds `want` sockets. */
static bool
wait_sockets(pid_t pid, int want, double timeout)
{
	double end = now_s() + timeout;

	while (count_sockets(pid) != want && now_s() < end)
		usleep(20 * 1000);
	return count_sockets(pid) == want;
}

#define ACTIVE SERIES("ferry_connections_active", "web")

static bool
wait_metric(const char *series, double want, double timeout)
{
	return metric_wait(&fp, series, want, timeout, 20);
}

/*
 * Writes until nothing moves for a second: ferry has stopped reading us
 * (its queue towards the backend is full, and so is every socket buffer
 * on the way).  Returns the bytes written.
 */
static size_t
fill_until_stalled(int fd)
{
	static char buf[65536];
	size_t sent = 0;

	memset(buf, 'u', sizeof(buf));
	for (int i = 0; i < 100000; i++) {
		ssize_t n = send(fd, buf, sizeof(buf), MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		cr_assert(n < 0 && errno == EAGAIN, "send: %s",
		    strerror(errno));
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, 1000) == 0)
			return sent;
	}
	cr_assert_fail("ferry took %zu bytes and wanted more", sent);
	return sent;
}

#define CLIENT_IN SERIES("ferry_client_received_bytes_total", "web")

/*
 * Writes 16 KiB at a time until ferry stops reading, but its kernel still
 * takes our bytes: each chunk leaves our socket (SIOCOUTQ 0: acknowledged)
 * and ferry's count of bytes read from its client stays below what we
 * sent.  Nothing of ours is left queued then, so a close() sends its FIN
 * at once; a FIN behind unsent bytes would wait for ferry to read them.
 * Returns the bytes written.
 */
static size_t
fill_until_paused(int fd)
{
	static char buf[16384];
	size_t sent = 0;

	memset(buf, 'u', sizeof(buf));
	for (int i = 0; i < 4096; i++) {
		int queued = -1;
		double read = -1;

		cr_assert_eq(send(fd, buf, sizeof(buf), MSG_NOSIGNAL),
		    (ssize_t)sizeof(buf), "send: %s", strerror(errno));
		sent += sizeof(buf);
		for (int k = 0; k < 400 && queued != 0; k++) {
			cr_assert_eq(ioctl(fd, SIOCOUTQ, &queued), 0);
			if (queued != 0)
				usleep(5 * 1000);
		}
		cr_assert_eq(queued, 0, "ferry's socket stopped taking bytes "
		    "before ferry stopped reading (%zu sent)", sent);
		for (int k = 0; k < 20; k++) {
			read = ferry_metric(&fp, CLIENT_IN);
			if (read == (double)sent)
				break;
			usleep(10 * 1000);
		}
		if (read < (double)sent)
			return sent;
	}
	cr_assert_fail("ferry read all of %zu bytes", sent);
	return sent;
}

/* "N bytes up" from the connection's log line. */
static long long
logged_bytes_up(void)
{
	char *log = ferry_log_read(&fp);
	const char *p = strstr(log, " closed after ");
	long long up = -1;

	if (p != NULL && (p = strstr(p, " s, ")) != NULL)
		sscanf(p, " s, %lld bytes up", &up);
	free(log);
	return up;
}

/*
 * Ferry with a backend that never reads, and a client whose bytes have
 * filled the queue: its reading is paused.  With `all_sent`, every byte
 * the client wrote has reached ferry's socket (else the client's own
 * buffer is full too).  Returns the client's socket.
 */
static int
stalled_pair(struct backend *be, struct deaf *d, const char *extra,
    bool all_sent, int *sockets)
{
	char conf[512];
	int small = 64 * 1024;

	backend_start(be, false, serve_deaf, d);
	/* Small buffers on the way: the queue fills in a few MB. */
	cr_assert_eq(setsockopt(be->lfd, SOL_SOCKET, SO_RCVBUF, &small,
	    sizeof(small)), 0);
	snprintf(conf, sizeof(conf), "backend = 127.0.0.1:%d\n"
	    "high_water = 64k\nidle_timeout = 0\n%s", be->port, extra);
	start_web(true, conf);
	*sockets = count_sockets(fp.pid);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	cr_assert_geq(fd, 0);
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small,
	    sizeof(small)), 0);
	if (all_sent)
		fill_until_paused(fd);
	else
		cr_assert_gt(fill_until_stalled(fd), 64 * 1024);
	cr_assert(wait_sockets(fp.pid, *sockets + 2, 10),
	    "ferry holds %d sockets, %d before the pair",
	    count_sockets(fp.pid), *sockets);
	cr_assert_eq(ferry_metric(&fp, ACTIVE), 1);
	return fd;
}

/*
 * The client resets while ferry is not reading it: the pair is closed at
 * once (idle_timeout 0, nothing else would), its descriptors freed.
 */
Test(forward, paused_client_reset_frees_the_pair, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct deaf d = { 0 };
	struct linger lg = { 1, 0 };
	int sockets, fd = stalled_pair(&be, &d, "", false, &sockets);

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg,
	    sizeof(lg)), 0);
	close(fd);
	cr_assert(ferry_log_wait(&fp, "client reset", 1, 10),
	    "the reset of a paused client went unnoticed");
	cr_assert(wait_metric(ACTIVE, 0, 10));
	cr_assert(wait_sockets(fp.pid, sockets, 10), "ferry holds %d "
	    "sockets, %d before the pair", count_sockets(fp.pid), sockets);
	d.drain = true;
	cr_assert(wait_flag(&d.done, 20));
	backend_stop(&be);
}

/*
 * "bytes up" is what went to the backend, not what was read from the
 * client: the queue ferry dropped with the pair never reached it.
 */
Test(forward, bytes_up_is_what_the_backend_received, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct deaf d = { 0 };
	struct linger lg = { 1, 0 };
	int sockets, fd = stalled_pair(&be, &d, "", false, &sockets);
	double read_from_client;

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	/* Ferry's socket to the backend still holds bytes: they arrive. */
	d.drain = true;
	cr_assert(wait_flag(&d.done, 20));
	read_from_client = ferry_metric(&fp, SERIES(
	    "ferry_client_received_bytes_total", "web"));
	cr_log_info("ferry read %.0f bytes from the client, forwarded %lld; "
	    "the backend received %zu", read_from_client, logged_bytes_up(),
	    (size_t)d.got);
	cr_assert_eq(logged_bytes_up(), (long long)d.got,
	    "logged %lld bytes up; the backend received %zu (ferry read %.0f "
	    "from the client)", logged_bytes_up(), (size_t)d.got,
	    read_from_client);
	cr_assert_eq(ferry_metric(&fp, SERIES(
	    "ferry_backend_sent_bytes_total", "web")), (double)d.got);
	cr_assert_gt(read_from_client, (double)d.got,
	    "the premise: ferry held bytes it never forwarded");
	backend_stop(&be);
}

/*
 * A paused client that stays connected is left alone, past fin_timeout;
 * once it closes (a FIN ferry cannot read past, the backend still not
 * reading), the pair goes when nothing has moved for fin_timeout.
 */
Test(forward, paused_client_close_frees_the_pair, .timeout = 60,
    .fini = cleanup)
{
	struct backend be;
	struct deaf d = { 0 };
	int sockets, fd = stalled_pair(&be, &d, "fin_timeout = 1\n",
	    true, &sockets);

	usleep(2500 * 1000);
	cr_assert_eq(ferry_log_count(&fp, "closed after"), 0,
	    "a paused pair with both peers connected was closed");
	cr_assert_eq(ferry_metric(&fp, ACTIVE), 1);
	/* The metric read's admin connection may not be closed yet. */
	cr_assert(wait_sockets(fp.pid, sockets + 2, 10));
	close(fd);		/* FIN, nothing of ours queued before it */
	cr_assert(ferry_log_wait(&fp, "idle for 1 s after the client closed",
	    1, 10), "the pair outlived its client");
	cr_assert(wait_metric(ACTIVE, 0, 10));
	cr_assert(wait_sockets(fp.pid, sockets, 10), "ferry holds %d "
	    "sockets, %d before the pair", count_sockets(fp.pid), sockets);
	d.drain = true;
	cr_assert(wait_flag(&d.done, 20));
	backend_stop(&be);
}

/* Reads the request to its end, then answers slowly, then closes. */
static void
serve_slow_answer(int fd, void *arg)
{
	struct trickle *t = arg;
	char buf[1000];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	memset(buf, 'd', sizeof(buf));
	for (int i = 0; i < t->chunks; i++) {
		usleep((useconds_t)(t->every * 1e6));
		if (send(fd, buf, sizeof(buf), MSG_NOSIGNAL) != sizeof(buf))
			return;
	}
	t->done = true;
}

/* fin_timeout counts silence, not time: a download after the FIN flows. */
Test(forward, fin_timeout_spares_a_download_after_half_close,
    .timeout = 60, .fini = cleanup)
{
	struct backend be;
	struct trickle t = { .chunks = 12, .every = 0.25 };
	struct peer p;
	char extra[256], buf[12000];

	backend_start(&be, false, serve_slow_answer, &t);
	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n"
	    "fin_timeout = 2\n", be.port);
	start_web(true, extra);
	int fd = connect_loopback(false, ferry_port(&fp, "web"));
	peer_plain(&p, fd);
	cr_assert_eq(peer_write(&p, "GET", 3), 3);
	shutdown(fd, SHUT_WR);
	/* 3 s of download after our FIN, a chunk every 0.25 s. */
	cr_assert_eq(peer_read_exact(&p, buf, sizeof(buf)), sizeof(buf),
	    "the download was cut");
	cr_assert(read_to_eof(&p));
	cr_assert(t.done);
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "12000 bytes down: client closed", 1,
	    10));
	cr_assert_eq(ferry_log_count(&fp, "idle for"), 0);
	backend_stop(&be);
}

/* ---- the per-connection log line under a crowd ---- */

/* Sum of the "N connection lines suppressed" lines. */
static long
suppressed_lines(void)
{
	char *log = ferry_log_read(&fp);
	const char *p = log;
	long sum = 0;

	while ((p = strstr(p, "web: ")) != NULL) {
		long n;
		char tail[32];
		p += 5;
		if (sscanf(p, "%ld %31[a-z ]", &n, tail) == 2 &&
		    strcmp(tail, "connection lines suppressed") == 0)
			sum += n;
	}
	free(log);
	return sum;
}

/*
 * 3,000 clients of a listener whose backend is down: at most LOG_BURST
 * connection lines a second, and every one left out counted in a line
 * that says so.
 */
Test(forward, connection_lines_are_rate_limited, .timeout = 120,
    .fini = cleanup)
{
	const int n = 3000;
	char extra[256], c;
	double t0, elapsed;
	int lines = 0;
	long suppressed = 0;

	snprintf(extra, sizeof(extra), "backend = 127.0.0.1:%d\n",
	    dead_port());
	start_web(true, extra);
	t0 = now_s();
	for (int i = 0; i < n; i++) {
		int fd = connect_loopback(false, ferry_port(&fp, "web"));
		cr_assert_geq(fd, 0, "connect %d: %s", i, strerror(errno));
		/* Closed by ferry once the backend refused. */
		cr_assert_leq(recv(fd, &c, 1, 0), 0);
		close(fd);
	}
	for (int i = 0; i < 1000; i++) {
		lines = ferry_log_count(&fp, " closed after ");
		suppressed = suppressed_lines();
		if (lines + suppressed >= n)
			break;
		usleep(20 * 1000);
	}
	elapsed = now_s() - t0;
	cr_log_info("%d connection lines and %ld suppressed in %.1f s", lines,
	    suppressed, elapsed);
	cr_assert_eq(lines + suppressed, n, "%d lines + %ld suppressed for "
	    "%d connections", lines, suppressed, n);
	/* At most LOG_BURST in each second the run touched. */
	cr_assert_leq(lines, LOG_BURST * ((int)elapsed + 2), "%d lines in "
	    "%.1f s", lines, elapsed);
	cr_assert_gt(suppressed, 0);
}
