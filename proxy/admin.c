/* admin: see admin.h. */
#define _GNU_SOURCE
#include "admin.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "log.h"
#include "metrics.h"

/* What is read at a time once the answer is queued (and thrown away). */
#define ADMIN_DISCARD_CHUNK 4096

struct admin {
	struct ev_loop *loop;
	double timeout;
	struct admin_conn *conns;
	size_t nconns;
};

enum admin_state {
	ADMIN_READING,		/* the request head is arriving */
	ADMIN_ANSWERED,		/* answered, FIN to follow; discarding */
};

struct admin_conn {
	struct admin *adm;		/* NULL once admin_free() ran */
	struct ev_loop *loop;
	struct stream *s;
	struct admin_conn *prev, *next;
	ev_timer deadline;
	struct buffer head;		/* the request head so far */
	enum admin_state state;
};

static void read_more(struct admin_conn *c);

static void
respond(struct admin_conn *c, const char *status, const char *type,
    const char *body, size_t len)
{
	char head[256];
	int n = snprintf(head, sizeof(head), "HTTP/1.0 %s\r\n"
	    "Content-Type: %s\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n", status, type, len);

	c->state = ADMIN_ANSWERED;
	buffer_free(&c->head);
	if (stream_write(c->s, head, (size_t)n, NULL) < 0 ||
	    (len > 0 && stream_write(c->s, body, len, NULL) < 0))
		return;		/* closing already */
	stream_shutdown_write(c->s);
}

/* A request the client got wrong: answered, and logged (rate-limited). */
static void
refuse(struct admin_conn *c, const char *status, const char *why)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%s\n", why);

	log_limited(LOG_INFO, "admin: %s from %s: %s", status,
	    stream_peer(c->s), why);
	respond(c, status, "text/plain", body, (size_t)n);
}

/*
 * The length of the head up to and including its blank line, or 0 while
 * it is incomplete.  Lines end in LF, with or without a CR before it.  The
 * search resumes at `from`: a terminator is at most 3 bytes, so two bytes
 * before what was last appended.
 */
static size_t
head_end(const char *p, size_t len, size_t from)
{
	for (size_t i = from; i < len; i++) {
		size_t j = i + 1;
		if (p[i] != '\n')
			continue;
		if (j < len && p[j] == '\r')
			j++;
		if (j < len && p[j] == '\n')
			return j + 1;
	}
	return 0;
}

/* No control bytes but HTAB, and CR only as part of a line end. */
static bool
head_bytes_ok(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch == '\r' && i + 1 < len && p[i + 1] == '\n')
			continue;
		if ((ch < 0x20 && ch != '\t' && ch != '\n') || ch == 0x7f)
			return false;
	}
	return true;
}

struct request {
	const char *method, *target;
	size_t mlen, tlen;
};

/*
 * METHOD SP TARGET SP HTTP/x.y (RFC 9112): a token, a target of visible
 * ASCII, a version.  False for anything else.
 */
static bool
parse_request_line(const char *line, size_t len, struct request *r)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~0123456789"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	const char *end = line + len, *p = line;

	r->method = p;
	while (p < end && *p != '\0' && strchr(tchar, *p) != NULL)
		p++;
	r->mlen = (size_t)(p - line);
	if (r->mlen == 0 || p == end || *p++ != ' ')
		return false;
	r->target = p;
	while (p < end && *p > ' ' && *p < 0x7f)
		p++;
	r->tlen = (size_t)(p - r->target);
	if (r->tlen == 0 || p == end || *p++ != ' ')
		return false;
	return end - p == 8 && memcmp(p, "HTTP/", 5) == 0 &&
	    p[5] >= '0' && p[5] <= '9' && p[6] == '.' &&
	    p[7] >= '0' && p[7] <= '9';
}

static void
answer(struct admin_conn *c, const char *head, size_t len)
{
	struct request r;
	const char *nl = memchr(head, '\n', len);
	size_t llen = (size_t)(nl - head), plen;

	if (llen > 0 && head[llen - 1] == '\r')
		llen--;
	if (!head_bytes_ok(head, len)) {
		refuse(c, "400 Bad Request", "control byte in the request");
		return;
	}
	if (!parse_request_line(head, llen, &r)) {
		refuse(c, "400 Bad Request", "bad request line");
		return;
	}
	if (r.mlen != 3 || memcmp(r.method, "GET", 3) != 0) {
		respond(c, "405 Method Not Allowed", "text/plain", "GET only\n",
		    9);
		return;
	}
	plen = strcspn(r.target, "? ");
	if (plen == 8 && memcmp(r.target, "/metrics", 8) == 0) {
		struct buffer page = BUFFER_INIT;
		metrics_render(&page);
		respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
		    buffer_data(&page), buffer_len(&page));
		buffer_free(&page);
		return;
	}
	if (plen == 1 && r.target[0] == '/') {
		static const char idx[] = "ferry " FERRY_VERSION
		    "\n/metrics  Prometheus metrics\n";
		respond(c, "200 OK", "text/plain", idx, sizeof(idx) - 1);
		return;
	}
	respond(c, "404 Not Found", "text/plain", "not found\n", 10);
}

static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct admin_conn *c = arg;
	size_t had = buffer_len(&c->head), end;

	if (c->state == ADMIN_ANSWERED) {
		read_more(c);	/* what follows the request is dropped */
		return;
	}
	if (buffer_append(&c->head, data, len) < 0) {
		stream_set_error(s, "no memory for the request");
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	end = head_end(buffer_data(&c->head), buffer_len(&c->head),
	    had > 2 ? had - 2 : 0);
	if (end > 0 && end <= ADMIN_MAX_HEAD)
		answer(c, buffer_data(&c->head), end);
	else if (end > 0 || buffer_len(&c->head) > ADMIN_MAX_HEAD)
		refuse(c, "431 Request Header Fields Too Large",
		    "request head over 8 KiB");
	read_more(c);
}

static void
read_more(struct admin_conn *c)
{
	size_t n = c->state == ADMIN_ANSWERED ? ADMIN_DISCARD_CHUNK :
	    ADMIN_MAX_HEAD + 1 - buffer_len(&c->head);

	if (!stream_closed(c->s))
		(void)stream_read_bytes(c->s, n, true, on_data);
}

static void
on_eof(struct stream *s, void *arg)
{
	struct admin_conn *c = arg;

	/*
	 * Answered: both directions are shut once the answer is out, and the
	 * stream closes by itself.  A request cut short gets no answer.
	 */
	if (c->state == ADMIN_READING)
		stream_close(s, STREAM_CLOSE_EOF);
}

static void
on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct admin_conn *c = w->data;

	(void)loop;
	(void)revents;
	if (c->state == ADMIN_READING && c->adm != NULL)
		log_limited(LOG_INFO, "admin: %s: no complete request within "
		    "%g s; closed", stream_peer(c->s), c->adm->timeout);
	stream_set_error(c->s, "deadline");
	stream_close(c->s, STREAM_CLOSE_TIMEOUT);
}

static void
unlink_conn(struct admin_conn *c)
{
	if (c->adm == NULL)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->adm->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->adm->nconns--;
	c->adm = NULL;
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct admin_conn *c = arg;

	if (why != STREAM_CLOSE_LOCAL && why != STREAM_CLOSE_EOF)
		LOGD("admin: %s closed: %s %s", stream_peer(s),
		    stream_close_reason_str(why), stream_error(s));
	ev_timer_stop(c->loop, &c->deadline);
	unlink_conn(c);
	buffer_free(&c->head);
	free(c);
}

struct admin *
admin_new(struct ev_loop *loop, double timeout)
{
	struct admin *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->loop = loop;
	a->timeout = timeout;
	return a;
}

void
admin_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct admin *a = arg;
	struct admin_conn *c = calloc(1, sizeof(*c));

	(void)sa;
	(void)salen;
	if (c == NULL) {
		LOGW("admin: no memory for a connection from %s",
		    stream_peer(s));
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	c->adm = a;
	c->loop = a->loop;
	c->s = s;
	c->state = ADMIN_READING;
	c->next = a->conns;
	if (a->conns != NULL)
		a->conns->prev = c;
	a->conns = c;
	a->nconns++;
	ev_timer_init(&c->deadline, on_deadline, a->timeout, 0.);
	c->deadline.data = c;
	ev_timer_start(a->loop, &c->deadline);
	stream_set_callbacks(s, on_close, c);
	stream_set_eof_cb(s, on_eof);
	read_more(c);
}

void
admin_close_all(struct admin *a)
{
	if (a == NULL)
		return;
	for (struct admin_conn *c = a->conns; c != NULL; c = c->next)
		stream_close(c->s, STREAM_CLOSE_LOCAL);
}

size_t
admin_live(const struct admin *a)
{
	return a != NULL ? a->nconns : 0;
}

void
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	if (a->nconns > 0)
		LOGW("admin: freed with %zu connections open", a->nconns);
	while (a->conns != NULL)
		unlink_conn(a->conns);
	free(a);
}
