/* admin: see admin.h. */
#define _GNU_SOURCE
#include "admin.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

#define ADMIN_MAX_HEAD 8192
#define ADMIN_TIMEOUT 10.0

static void
respond(struct stream *s, const char *status, const char *type,
    const char *body, size_t len)
{
	char head[256];
	int n = snprintf(head, sizeof(head), "HTTP/1.0 %s\r\n"
	    "Content-Type: %s\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n", status, type, len);

	stream_write(s, head, (size_t)n, NULL);
	if (len > 0)
		stream_write(s, body, len, NULL);
	stream_end(s);
}

static void
on_request(struct stream *s, const char *data, size_t len, void *arg)
{
	struct buffer page = BUFFER_INIT;
	const char *sp, *path;
	size_t plen;

	(void)arg;
	sp = memchr(data, ' ', len);
	if (sp == NULL) {
		respond(s, "400 Bad Request", "text/plain", "bad request\n", 12);
		return;
	}
	path = sp + 1;
	plen = strcspn(path, " ?\r\n");
	if ((size_t)(sp - data) != 3 || memcmp(data, "GET", 3) != 0) {
		respond(s, "405 Method Not Allowed", "text/plain",
		    "GET only\n", 9);
		return;
	}
	if (plen == 8 && memcmp(path, "/metrics", 8) == 0) {
		metrics_render(&page);
		respond(s, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
		    buffer_data(&page), buffer_len(&page));
		buffer_free(&page);
		return;
	}
	if (plen == 1 && path[0] == '/') {
		static const char idx[] = "ferry " FERRY_VERSION
		    "\n/metrics  Prometheus metrics\n";
		respond(s, "200 OK", "text/plain", idx, sizeof(idx) - 1);
		return;
	}
	respond(s, "404 Not Found", "text/plain", "not found\n", 10);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	(void)arg;
	if (why != STREAM_CLOSE_LOCAL && why != STREAM_CLOSE_EOF)
		LOGD("admin: %s closed: %s %s", stream_peer(s),
		    stream_close_reason_str(why), stream_error(s));
}

void
admin_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	(void)sa;
	(void)salen;
	(void)arg;
	stream_set_callbacks(s, on_close, NULL);
	stream_set_idle_timeout(s, ADMIN_TIMEOUT);
	stream_read_until(s, "\r\n\r\n", 4, ADMIN_MAX_HEAD, on_request);
}
