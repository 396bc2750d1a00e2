/*
 * The admin listener against the real binary: what it answers, what it
 * refuses, and the bounds a client cannot stretch (a deadline per request,
 * a connection cap, and SIGTERM's drain, which it must not hold).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "admin.h"
#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

/* ferry with an admin page, `extra` in [ferry], and one relay listener. */
static int
start(const char *extra)
{
	char conf[1024];

	snprintf(conf, sizeof(conf), "[ferry]\nadmin = 127.0.0.1:0\n%s"
	    "[devices]\nmode = relay\nbind = 127.0.0.1:0\n", extra);
	ferry_start(&fp, conf);
	return ferry_port(&fp, "admin");
}

static void
send_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		cr_assert_gt(n, 0, "send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* Everything the server sends until it closes (at most cap - 1 bytes). */
static size_t
recv_all(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t n;

	while (len + 1 < cap && (n = recv(fd, buf + len, cap - len - 1, 0)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	return len;
}

/* Sends `len` bytes of request, returns the status of the answer (0: none). */
static int
exchange(int port, const char *req, size_t len, char *resp, size_t cap)
{
	int fd = connect_loopback(false, port), status = 0;

	cr_assert_geq(fd, 0);
	send_all(fd, req, len);
	recv_all(fd, resp, cap);
	close(fd);
	if (sscanf(resp, "HTTP/1.0 %d ", &status) != 1)
		status = 0;
	return status;
}

static int
status_of(int port, const char *req)
{
	char resp[65536];

	return exchange(port, req, strlen(req), resp, sizeof(resp));
}

Test(admin, answers_and_refuses_methods_and_paths, .timeout = 30,
    .fini = cleanup)
{
	int port = start("");

	cr_assert_eq(status_of(port, "GET /metrics HTTP/1.0\r\n\r\n"), 200);
	cr_assert_eq(status_of(port, "GET /metrics?x=1 HTTP/1.1\r\n"
	    "Host: a\r\n\r\n"), 200);
	cr_assert_eq(status_of(port, "GET / HTTP/1.0\r\n\r\n"), 200);
	cr_assert_eq(status_of(port, "GET /nothing HTTP/1.0\r\n\r\n"), 404);
	cr_assert_eq(status_of(port, "POST /metrics HTTP/1.0\r\n\r\n"), 405);
}

/* Lines ending in a bare LF, as HTTP parsers accept them. */
Test(admin, bare_lf_request_is_answered, .timeout = 30, .fini = cleanup)
{
	char resp[65536];
	int port = start("");

	cr_assert_eq(status_of(port, "GET /metrics HTTP/1.0\n\n"), 200);
	cr_assert_eq(exchange(port, "GET /metrics HTTP/1.0\nHost: a\r\n\n",
	    33, resp, sizeof(resp)), 200);
	cr_assert_not_null(strstr(resp, "ferry_connections_accepted_total"));
}

Test(admin, nul_and_control_bytes_are_refused_400, .timeout = 30,
    .fini = cleanup)
{
	static const char nul[] = "GET /metrics\0junk HTTP/1.0\r\n\r\n";
	char resp[4096];
	int port = start("");

	cr_assert_eq(exchange(port, nul, sizeof(nul) - 1, resp, sizeof(resp)),
	    400, "a NUL in the target: %s", resp);
	cr_assert_eq(status_of(port, "GET /met\001rics HTTP/1.0\r\n\r\n"), 400);
	cr_assert_eq(status_of(port, "GET /metrics HTTP/1.0\r\nX: a\001\r\n"
	    "\r\n"), 400);
	cr_assert_eq(status_of(port, "GET /metrics\r\n\r\n"), 400);
	cr_assert_eq(status_of(port, "GET  /metrics HTTP/1.0\r\n\r\n"), 400);
	cr_assert_eq(status_of(port, "GET /metrics HTTP/1.0 x\r\n\r\n"), 400);
	/* And the page is still served. */
	cr_assert_eq(status_of(port, "GET /metrics HTTP/1.0\r\n\r\n"), 200);
}

/*
 * A head over 8 KiB gets 431, and gets it whole although the server has
 * not read all the client sent (it reads on, discarding, until the
 * client closes: closing at once would reset the connection).
 */
Test(admin, oversized_head_is_answered_431, .timeout = 30, .fini = cleanup)
{
	size_t len = 64 * 1024;
	char *req = malloc(len), resp[4096];
	int port = start("");

	cr_assert_not_null(req);
	memset(req, 'a', len);
	memcpy(req, "GET /metrics HTTP/1.0\r\nX-Pad: ", 30);
	memcpy(req + len - 4, "\r\n\r\n", 4);
	cr_assert_eq(exchange(port, req, len, resp, sizeof(resp)), 431,
	    "answer: '%.80s'", resp);
	cr_assert_not_null(strstr(resp, "\r\n\r\nrequest head over 8 KiB\n"));
	/* 8 KiB exactly is still a request; a byte more is not. */
	len = ADMIN_MAX_HEAD;
	memcpy(req + len - 4, "\r\n\r\n", 4);
	cr_assert_eq(exchange(port, req, len, resp, sizeof(resp)), 200);
	req[len - 4] = 'a';
	memcpy(req + len - 3, "\r\n\r\n", 4);
	cr_assert_eq(exchange(port, req, len + 1, resp, sizeof(resp)), 431);
	free(req);
}

/*
 * The request has a deadline from the accept, which bytes do not move: a
 * client trickling a byte at a time is closed long before it has sent its
 * request (on the old idle timeout, restarted by every byte, it would
 * have sent all of it and been answered).
 */
Test(admin, trickling_client_is_closed_at_the_deadline, .timeout = 60,
    .fini = cleanup)
{
	char req[400];
	size_t sent = 0, total;
	bool closed = false;
	int port = start("admin_timeout = 1\n");
	int fd = connect_loopback(false, port);

	memset(req, 'a', sizeof(req));
	memcpy(req, "GET /metrics HTTP/1.0\r\nX-Pad: ", 30);
	memcpy(req + sizeof(req) - 4, "\r\n\r\n", 4);
	total = sizeof(req);
	while (sent < total && !closed) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		char c;
		if (send(fd, req + sent, 1, MSG_NOSIGNAL) != 1) {
			closed = true;
			break;
		}
		sent++;
		/* 50 ms a byte: the whole request would take 20 s. */
		if (poll(&pfd, 1, 50) == 1)
			closed = recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
	}
	close(fd);
	cr_assert(closed, "the trickling client was never closed");
	cr_assert_lt(sent, total, "all %zu bytes were sent", total);
	/* The page still answers others. */
	cr_assert_eq(status_of(port, "GET /metrics HTTP/1.0\r\n\r\n"), 200);
}

/* Closed by the server without a byte of answer. */
static bool
refused(int fd)
{
	char c;

	return recv(fd, &c, 1, 0) <= 0;
}

Test(admin, connections_over_the_cap_are_refused, .timeout = 60,
    .fini = cleanup)
{
	int port = start("admin_max_connections = 2\n");
	int a = connect_loopback(false, port);
	int b = connect_loopback(false, port);
	int c = connect_loopback(false, port);
	int status = 0;

	/* Two held with half a request; the third is over the cap. */
	send_all(a, "GET /", 5);
	send_all(b, "GET /", 5);
	send(c, "GET /metrics HTTP/1.0\r\n\r\n", 25, MSG_NOSIGNAL);
	cr_assert(refused(c), "a third admin connection was served");
	close(c);
	cr_assert(ferry_log_wait(&fp, "admin: refused a connection", 1, 10));
	/* The held ones are still served... */
	send_all(a, "metrics HTTP/1.0\r\n\r\n", 20);
	char resp[65536];
	recv_all(a, resp, sizeof(resp));
	cr_assert_eq(strncmp(resp, "HTTP/1.0 200 ", 13), 0, "%.40s", resp);
	close(a);
	/* ...and a slot comes back once one closes. */
	for (int i = 0; i < 200 && status != 200; i++) {
		char *body = http_get(port, "/metrics", &status);
		free(body);
		if (status != 200)
			usleep(50 * 1000);
	}
	cr_assert_eq(status, 200, "no slot came back");
	close(b);
}

/*
 * SIGTERM with a half-sent admin request that keeps trickling: the drain
 * does not wait for it (drain_timeout and admin_timeout are 60 s, longer
 * than the test may run; the old idle timeout, restarted by every byte,
 * never fired), ferry closes it and exits 0, and (SANITIZE=1) with no
 * leak report.
 */
Test(admin, drain_closes_a_half_sent_request, .timeout = 45,
    .fini = cleanup)
{
	int port = start("drain_timeout = 60\nadmin_timeout = 60\n");
	int fd = connect_loopback(false, port), status;
	bool exited = false;
	char c;

	send_all(fd, "GET /metrics HTTP/1.0\r\nX-Pad: ", 30);
	/* Accepted in order: once this is answered, fd has been accepted. */
	char *body = http_get(port, "/metrics", &status);
	cr_assert_eq(status, 200);
	free(body);
	ferry_signal(&fp, SIGTERM);
	for (int i = 0; i < 30 && !exited; i++) {
		/* A byte a second; refused once the server has closed. */
		(void)send(fd, "a", 1, MSG_NOSIGNAL);
		exited = ferry_wait_exit(&fp, 1);
	}
	cr_assert(exited, "ferry still draining after 30 s");
	cr_assert(WIFEXITED(fp.status) && WEXITSTATUS(fp.status) == 0,
	    "exit status %d", fp.status);
	cr_assert_not(ferry_sanitizer_report(&fp), "sanitizer report");
	cr_assert_leq(recv(fd, &c, 1, 0), 0, "the admin client got a byte");
	close(fd);
}
