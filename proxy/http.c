/* http: see http.h. */
#define _GNU_SOURCE
#include "http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct http_head *
head_of(http_parser *p)
{
	return p->data;
}

/* Appends a piece of the target or of a header to the head's room. */
static int
keep(struct http_head *h, const char *at, size_t len)
{
	if (len > sizeof(h->room) - h->used) {
		h->status = 431;
		h->why = "request head over 8 KiB";
		return -1;
	}
	memcpy(h->room + h->used, at, len);
	h->used += len;
	return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	if (!h->in_url) {
		h->in_url = true;
		h->req.target = h->room + h->used;
		h->url_off = h->seen + (size_t)(at - h->chunk);
	}
	if (keep(h, at, len) < 0)
		return -1;
	h->req.tlen += len;
	return 0;
}

static int
on_field(http_parser *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);
	struct http_request *r = &h->req;

	if (r->nheaders == 0 || h->hs == HTTP_HS_VALUE) {
		if (r->nheaders == HTTP_MAX_HEADERS) {
			h->status = 431;
			h->why = "more than 64 headers";
			return -1;
		}
		r->headers[r->nheaders].name = h->room + h->used;
		r->headers[r->nheaders].value = "";
		r->nheaders++;
		h->hs = HTTP_HS_FIELD;
	}
	if (keep(h, at, len) < 0)
		return -1;
	r->headers[r->nheaders - 1].nlen += len;
	return 0;
}

static int
on_value(http_parser *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);
	struct http_header *hd = &h->req.headers[h->req.nheaders - 1];

	if (h->hs == HTTP_HS_FIELD) {
		hd->value = h->room + h->used;
		h->hs = HTTP_HS_VALUE;
	}
	if (keep(h, at, len) < 0)
		return -1;
	hd->vlen += len;
	return 0;
}

static int
on_headers_complete(http_parser *p)
{
	struct http_head *h = head_of(p);

	h->done = true;
	/*
	 * Stop at the head, whatever follows: a body is not read, and after
	 * an upgrade's head (even one that claims a body) come the new
	 * protocol's bytes.  http-parser returns at the head's last LF.
	 */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_url = on_url,
	.on_header_field = on_field,
	.on_header_value = on_value,
	.on_headers_complete = on_headers_complete,
};

void
http_head_init(struct http_head *h, size_t max_head)
{
	memset(h, 0, sizeof(*h));
	http_parser_init(&h->parser, HTTP_REQUEST);
	h->parser.data = h;
	h->max_head = max_head > 0 && max_head <= HTTP_MAX_HEAD ? max_head :
	    HTTP_MAX_HEAD;
}

static enum http_head_result
refuse(struct http_head *h, int status, const char *why)
{
	h->status = status;
	h->why = why;
	return HTTP_HEAD_ERROR;
}

/* No control bytes but HTAB, CR and LF. */
static bool
bytes_ok(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)p[i];
		if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') ||
		    ch == 0x7f)
			return false;
	}
	return true;
}

/*
 * What http-parser lets through and the request line must not have: a
 * missing version (HTTP/0.9), more than one space before the target, a
 * target of anything but visible ASCII.
 */
static enum http_head_result
finish(struct http_head *h)
{
	struct http_request *r = &h->req;
	const char *q;

	r->method = http_method_str((enum http_method)h->parser.method);
	r->major = h->parser.http_major;
	r->minor = h->parser.http_minor;
	r->upgrade = h->parser.upgrade;
	if (r->major == 0 || r->tlen == 0 ||
	    h->url_off != strlen(r->method) + 1)
		return refuse(h, 400, "bad request line");
	for (size_t i = 0; i < r->tlen; i++)
		if ((unsigned char)r->target[i] <= ' ' ||
		    (unsigned char)r->target[i] >= 0x7f)
			return refuse(h, 400, "bad request line");
	q = memchr(r->target, '?', r->tlen);
	r->plen = q != NULL ? (size_t)(q - r->target) : r->tlen;
	if (q != NULL) {
		r->query = q + 1;
		r->qlen = r->tlen - r->plen - 1;
	}
	return HTTP_HEAD_DONE;
}

enum http_head_result
http_head_feed(struct http_head *h, const char *data, size_t len,
    size_t *used)
{
	size_t room = h->max_head + 1 - h->seen, n, took;
	enum http_errno err;

	*used = 0;
	/* Never parse past the limit: a byte more than it says enough. */
	n = len < room ? len : room;
	if (n == 0)
		return HTTP_HEAD_MORE;	/* to http-parser, 0 bytes is EOF */
	if (h->seen == 0 && n > 0 && !isalpha((unsigned char)data[0]))
		return refuse(h, 400, "bad request line");
	h->chunk = data;
	took = http_parser_execute(&h->parser, &settings, data, n);
	err = HTTP_PARSER_ERRNO(&h->parser);
	if (h->done && (err == HPE_OK || err == HPE_PAUSED)) {
		/* Paused just before the head's last LF: it is the head's. */
		if (err == HPE_PAUSED && took < n && data[took] == '\n')
			took++;
		*used = took;
		if (!bytes_ok(data, took))
			return refuse(h, 400, "control byte in the request");
		if (h->seen + took > h->max_head)
			return refuse(h, 431, "request head over 8 KiB");
		h->seen += took;
		return finish(h);
	}
	if (h->status != 0)
		return HTTP_HEAD_ERROR;
	if (err != HPE_OK || !bytes_ok(data, took))
		return refuse(h, 400, err == HPE_OK ?
		    "control byte in the request" :
		    http_errno_description(err));
	h->seen += took;
	*used = took;
	if (h->seen > h->max_head)
		return refuse(h, 431, "request head over 8 KiB");
	return HTTP_HEAD_MORE;
}

const char *
http_header(const struct http_request *r, const char *name, size_t *len)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < r->nheaders; i++) {
		const struct http_header *hd = &r->headers[i];
		if (hd->nlen == nl && strncasecmp(hd->name, name, nl) == 0) {
			*len = hd->vlen;
			return hd->value;
		}
	}
	*len = 0;
	return NULL;
}

bool
http_header_has_token(const struct http_request *r, const char *name,
    const char *token)
{
	size_t vlen, tl = strlen(token);
	const char *v = http_header(r, name, &vlen), *end;

	if (v == NULL)
		return false;
	end = v + vlen;
	while (v < end) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		const char *e = comma != NULL ? comma : end, *b = v;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		const char *t = e;
		while (t > b && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - b) == tl && strncasecmp(b, token, tl) == 0)
			return true;
		v = e + 1;
	}
	return false;
}

bool
http_path_is(const struct http_request *r, const char *p)
{
	size_t n = strlen(p);

	return r->plen == n && memcmp(r->target, p, n) == 0;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

long
http_pct_decode(const char *in, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= len || (hi = hexval(in[i + 1])) < 0 ||
			    (lo = hexval(in[i + 2])) < 0)
				return -1;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (o >= outlen)
			return -1;
		out[o++] = c;
	}
	return (long)o;
}

const char *
http_query_param(const char *q, size_t qlen, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *end = q + qlen;

	while (q != NULL && q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *e = amp != NULL ? amp : end;
		if ((size_t)(e - q) > nl && memcmp(q, name, nl) == 0 &&
		    q[nl] == '=') {
			*vlen = (size_t)(e - q) - nl - 1;
			return q + nl + 1;
		}
		q = e + 1;
	}
	*vlen = 0;
	return NULL;
}

int
http_printf(struct buffer *b, const char *fmt, ...)
{
	char small[512], *big = NULL;
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n < sizeof(small))
		return buffer_append(b, small, (size_t)n);
	va_start(ap, fmt);
	n = vasprintf(&big, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	rc = buffer_append(b, big, (size_t)n);
	free(big);
	return rc;
}

int
http_json_str(struct buffer *b, const char *s, size_t len)
{
	if (buffer_append(b, "\"", 1) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		size_t el = 0;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			el = 2;
		} else if (c < 0x20 || c == 0x7f) {
			el = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
		}
		if (el > 0 ? buffer_append(b, esc, el) < 0 :
		    buffer_append(b, s + i, 1) < 0)
			return -1;
	}
	return buffer_append(b, "\"", 1);
}

int
http_response_head(struct buffer *b, const char *status, const char *type,
    size_t len, const char *extra)
{
	bool upgrade = strncmp(status, "101", 3) == 0;

	if (http_printf(b, "HTTP/1.%d %s\r\n", upgrade ? 1 : 0, status) < 0)
		return -1;
	if (type != NULL && http_printf(b, "Content-Type: %s\r\n"
	    "Content-Length: %zu\r\nCache-Control: no-store\r\n", type,
	    len) < 0)
		return -1;
	if (extra != NULL && http_printf(b, "%s", extra) < 0)
		return -1;
	if (!upgrade && http_printf(b, "Connection: close\r\n") < 0)
		return -1;
	return http_printf(b, "\r\n");
}
