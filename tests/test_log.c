/*
 * log: the text and JSON lines (escaping of any bytes, cutting without
 * breaking an escape), and syslog's datagrams on a socket of the test's own
 * (priority, tag, body, a daemon that goes and comes back, lines lost while
 * it is full).  Each test runs in its own process, so the module's state
 * starts fresh.  (tests/test_logs.py parses the real binary's JSON lines.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "log.h"

static const struct timespec when = { 1795341600, 123456789 };	/* 2026-11-22T10:00:00.123Z */

static const char *
line(enum log_format f, enum log_level level, const char *msg)
{
	static char buf[16384];

	log_format_line(buf, sizeof(buf), f, level, &when, 42, msg);
	return buf;
}

Test(log, text_line_as_before, .timeout = 10)
{
	cr_assert_str_eq(line(LOG_FORMAT_TEXT, LOG_NOTICE, "ready: worker 0"),
	    "2026-11-22T10:00:00.123Z ferry[42] NOTICE ready: worker 0");
	cr_assert_str_eq(line(LOG_FORMAT_TEXT, LOG_WARN, ""),
	    "2026-11-22T10:00:00.123Z ferry[42] WARN ");
}

Test(log, json_line_fields, .timeout = 10)
{
	cr_assert_str_eq(line(LOG_FORMAT_JSON, LOG_INFO,
	    "relay devices: consumer 127.0.0.1:1 joined uuid 'a'"),
	    "{\"time\":\"2026-11-22T10:00:00.123Z\",\"level\":\"info\","
	    "\"pid\":42,\"msg\":\"relay devices: consumer 127.0.0.1:1 joined "
	    "uuid 'a'\"}");
	cr_assert(strstr(line(LOG_FORMAT_JSON, LOG_ERROR, "x"),
	    "\"level\":\"error\"") != NULL);
	cr_assert(strstr(line(LOG_FORMAT_JSON, LOG_NOTICE, "x"),
	    "\"level\":\"notice\"") != NULL);
}

/* Whatever a peer put in a message (its uuid, its SNI), the line parses. */
Test(log, json_escapes_every_byte_that_needs_it, .timeout = 10)
{
	cr_assert_str_eq(line(LOG_FORMAT_JSON, LOG_WARN,
	    "q\" b\\ n\n r\r t\t c\x01 d\x7f u\xc3\xa9 e\xe2\x82\xac "
	    "s\xf0\x9f\x98\x80"),
	    "{\"time\":\"2026-11-22T10:00:00.123Z\",\"level\":\"warn\","
	    "\"pid\":42,\"msg\":\"q\\\" b\\\\ n\\n r\\r t\\t c\\u0001 "
	    "d\\u007f u\xc3\xa9 e\xe2\x82\xac s\xf0\x9f\x98\x80\"}");
	/*
	 * Not UTF-8: a stray continuation byte, 0xff, an overlong '/', a
	 * surrogate, a sequence cut short (at the end too), each U+FFFD per
	 * byte that starts nothing.
	 */
	cr_assert_str_eq(line(LOG_FORMAT_JSON, LOG_WARN,
	    "a\x80 b\xff c\xc0\xaf d\xed\xa0\x80 e\xe2\x82 f\xc3"),
	    "{\"time\":\"2026-11-22T10:00:00.123Z\",\"level\":\"warn\","
	    "\"pid\":42,\"msg\":\"a\\ufffd b\\ufffd c\\ufffd\\ufffd "
	    "d\\ufffd\\ufffd\\ufffd e\\ufffd\\ufffd f\\ufffd\"}");
}

/* A buffer too small cuts the message, never an escape, and closes it. */
Test(log, json_cut_keeps_the_line_whole, .timeout = 10)
{
	char full[512], buf[512];
	size_t n = log_format_line(full, sizeof(full), LOG_FORMAT_JSON,
	    LOG_INFO, &when, 42, "");
	size_t head = n - 2;	/* the empty message's line, less '"}' */

	for (size_t room = 0; room < 13; room++) {
		size_t len = head + 2 + room + 1;
		size_t got = log_format_line(buf, len, LOG_FORMAT_JSON,
		    LOG_INFO, &when, 42, "\"\"\xc3\xa9\x01");
		cr_assert_leq(got, len - 1);
		cr_assert_eq(buf[got], '\0');
		cr_assert_str_eq(buf + got - 2, "\"}", "room %zu: %s", room,
		    buf);
		/* What fits of: \" \" é \u0001, whole pieces only. */
		static const size_t fits[] = { 0, 0, 2, 2, 4, 4, 6, 6, 6, 6,
		    6, 6, 12 };
		cr_assert_eq(got - head - 2, fits[room], "room %zu: %s", room,
		    buf);
	}
	/* Not even the head: nothing, terminated. */
	cr_assert_eq(log_format_line(buf, 10, LOG_FORMAT_JSON, LOG_INFO,
	    &when, 42, "x"), 0);
	cr_assert_str_eq(buf, "");
}

/* ---- syslog on a socket of the test's own ---- */

struct sysl {
	char dir[64];
	char path[96];
	int fd;
};

static void
sysl_bind(struct sysl *s)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s->fd, 0, "socket: %s", strerror(errno));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", s->path);
	cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0,
	    "bind %s: %s", s->path, strerror(errno));
	struct timeval tv = { 5, 0 };
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void
sysl_open(struct sysl *s)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/ferry-log-XXXXXX");
	cr_assert_not_null(mkdtemp(s->dir));
	snprintf(s->path, sizeof(s->path), "%s/log", s->dir);
	sysl_bind(s);
}

static void
sysl_unbind(struct sysl *s)
{
	close(s->fd);
	unlink(s->path);
}

static void
sysl_close(struct sysl *s)
{
	sysl_unbind(s);
	rmdir(s->dir);
}

/* The next datagram, as a string; "" if none within 5 s. */
static const char *
sysl_recv(struct sysl *s)
{
	static char buf[16384];
	ssize_t n = recv(s->fd, buf, sizeof(buf) - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static bool
sysl_empty(struct sysl *s)
{
	char c;

	return recv(s->fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) < 0 && errno == EAGAIN;
}

/* "<PRI>Mmm dd hh:mm:ss ferry[PID]: BODY": the PRI and the body. */
static const char *
body_of(const char *dgram, int *pri)
{
	char tag[32];
	const char *p;

	cr_assert_eq(sscanf(dgram, "<%d>", pri), 1, "no priority: %s", dgram);
	snprintf(tag, sizeof(tag), " ferry[%ld]: ", (long)getpid());
	p = strstr(dgram, tag);
	cr_assert_not_null(p, "no tag '%s': %s", tag, dgram);
	/* "Mmm dd hh:mm:ss" between them */
	cr_assert_eq(p - strchr(dgram, '>') - 1, 15, "%s", dgram);
	return p + strlen(tag);
}

Test(log, syslog_text_and_json, .timeout = 20)
{
	struct sysl s;
	int pri;

	sysl_open(&s);
	cr_assert_eq(log_open(LOG_TO_SYSLOG, LOG_FORMAT_TEXT, s.path), 0,
	    "%s", strerror(errno));
	LOGW("drain deadline: closing %d connections", 3);
	cr_assert_str_eq(body_of(sysl_recv(&s), &pri),
	    "WARN drain deadline: closing 3 connections");
	cr_assert_eq(pri, 3 * 8 + 4, "daemon.warning");
	LOGE("e");
	body_of(sysl_recv(&s), &pri);
	cr_assert_eq(pri, 3 * 8 + 3, "daemon.err");
	LOGN("n");
	body_of(sysl_recv(&s), &pri);
	cr_assert_eq(pri, 3 * 8 + 5, "daemon.notice");
	LOGI("i");
	body_of(sysl_recv(&s), &pri);
	cr_assert_eq(pri, 3 * 8 + 6, "daemon.info");
	LOGD("below the level");
	cr_assert(sysl_empty(&s));

	cr_assert_eq(log_open(LOG_TO_SYSLOG, LOG_FORMAT_JSON, s.path), 0);
	LOGI("peer %s", "q\"\n");
	const char *b = body_of(sysl_recv(&s), &pri);
	char want[128];
	snprintf(want, sizeof(want), "\",\"level\":\"info\",\"pid\":%ld,"
	    "\"msg\":\"peer q\\\"\\n\"}", (long)getpid());
	cr_assert(strncmp(b, "{\"time\":\"", 9) == 0, "%s", b);
	cr_assert_str_eq(b + strlen(b) - strlen(want), want);

	/* Back to stderr (here /dev/null): nothing more on the socket. */
	log_close();
	int saved = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY);
	cr_assert(saved >= 0 && null >= 0);
	dup2(null, STDERR_FILENO);
	LOGW("to stderr");
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(null);
	cr_assert(sysl_empty(&s));
	sysl_close(&s);
}

Test(log, syslog_missing_is_an_error_and_changes_nothing, .timeout = 10)
{
	struct sysl s;

	sysl_open(&s);
	cr_assert_eq(log_open(LOG_TO_SYSLOG, LOG_FORMAT_TEXT, s.path), 0);
	cr_assert_eq(log_open(LOG_TO_SYSLOG, LOG_FORMAT_JSON,
	    "/nonexistent/log"), -1);
	cr_assert_eq(errno, ENOENT);
	/* Still the first socket, still text. */
	LOGW("still here");
	cr_assert_str_eq(body_of(sysl_recv(&s), &(int){0}), "WARN still here");
	sysl_close(&s);
}

/*
 * The daemon restarts (a new socket at the same path): the next line
 * reconnects; the lines sent while it was away are counted and said.
 */
Test(log, syslog_daemon_restarted, .timeout = 20)
{
	struct sysl s;

	sysl_open(&s);
	cr_assert_eq(log_open(LOG_TO_SYSLOG, LOG_FORMAT_TEXT, s.path), 0);
	LOGW("before");
	cr_assert_str_eq(body_of(sysl_recv(&s), &(int){0}), "WARN before");
	sysl_unbind(&s);
	LOGW("lost 1");
	LOGW("lost 2");
	sysl_bind(&s);
	LOGW("after");
	cr_assert_str_eq(body_of(sysl_recv(&s), &(int){0}),
	    "WARN (2 log lines lost: the syslog socket was full or gone)");
	cr_assert_str_eq(body_of(sysl_recv(&s), &(int){0}), "WARN after");
	sysl_close(&s);
}

/* A daemon that does not read: lines are dropped, never waited for. */
Test(log, syslog_full_drops_and_counts, .timeout = 20)
{
	struct sysl s;
	int i, got = 0;
	const char *d;

	sysl_open(&s);
	cr_assert_eq(log_open(LOG_TO_SYSLOG, LOG_FORMAT_TEXT, s.path), 0);
	/* More than a unix datagram queue holds (max_dgram_qlen, 512). */
	for (i = 0; i < 5000; i++)
		LOGW("line %d", i);
	while (!sysl_empty(&s)) {
		d = sysl_recv(&s);
		got++;
	}
	cr_assert_lt(got, 5000);
	cr_assert_gt(got, 0);
	LOGW("last");
	d = body_of(sysl_recv(&s), &(int){0});
	char want[96];
	snprintf(want, sizeof(want), "WARN (%d log lines lost: the syslog "
	    "socket was full or gone)", 5000 - got);
	cr_assert_str_eq(d, want);
	cr_assert_str_eq(body_of(sysl_recv(&s), &(int){0}), "WARN last");
	sysl_close(&s);
}
