/* accesslog: see accesslog.h. */
#define _GNU_SOURCE
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct accesslog {
	int refs;
	int fd;
	enum log_format format;
	char path[512];
	char listener[64];
};

static int
open_file(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

struct accesslog *
accesslog_open(const char *path, const char *listener,
    enum log_format format, char *err, size_t errlen)
{
	struct accesslog *a = calloc(1, sizeof(*a));

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->fd = open_file(path);
	if (a->fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(a);
		return NULL;
	}
	a->refs = 1;
	a->format = format;
	snprintf(a->path, sizeof(a->path), "%s", path);
	snprintf(a->listener, sizeof(a->listener), "%s", listener);
	return a;
}

struct accesslog *
accesslog_ref(struct accesslog *a)
{
	a->refs++;
	return a;
}

void
accesslog_unref(struct accesslog *a)
{
	if (a == NULL || --a->refs > 0)
		return;
	close(a->fd);
	free(a);
}

void
accesslog_reopen(struct accesslog *a)
{
	int fd = open_file(a->path);

	if (fd < 0) {
		LOGE("[%s] access_log %s: %s; writing to the old file",
		    a->listener, a->path, strerror(errno));
		return;
	}
	close(a->fd);
	a->fd = fd;
}

void
accesslog_write(struct accesslog *a, const char *peer, uint64_t bytes_in,
    uint64_t bytes_out, double duration, const char *result)
{
	struct timespec ts;
	struct tm tm;
	char when[40], line[512];
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	if (a->format == LOG_FORMAT_JSON)
		n = snprintf(line, sizeof(line), "{\"time\":\"%s.%03ldZ\","
		    "\"listener\":\"%s\",\"peer\":\"%s\",\"bytes_in\":%" PRIu64
		    ",\"bytes_out\":%" PRIu64 ",\"duration\":%.3f,"
		    "\"result\":\"%s\"}\n", when, ts.tv_nsec / 1000000,
		    a->listener, peer, bytes_in, bytes_out, duration, result);
	else
		n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s in=%" PRIu64
		    " out=%" PRIu64 " duration=%.3f result=%s\n", when,
		    ts.tv_nsec / 1000000, a->listener, peer, bytes_in,
		    bytes_out, duration, result);
	if (n > 0 && (size_t)n < sizeof(line) &&
	    write(a->fd, line, (size_t)n) != n)
		log_limited(LOG_WARN, "[%s] access_log %s: %s", a->listener,
		    a->path, strerror(errno));
}
