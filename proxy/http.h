/*
 * http: an HTTP/1.x request head, parsed with http-parser, and the few
 * encodings a web answer needs (status lines, percent-decoding, JSON
 * strings).  Pure: no I/O, no stream; the admin listener and the relay's
 * WebSocket path feed it what they read, and own the deadline.
 *
 * The head parser is fed chunks of any size and says when the head is
 * complete, or why it is refused, with the status to answer:
 *  - a head (request line and headers, up to the blank line that ends
 *    them; lines end in CRLF or a bare LF, as http-parser accepts) longer
 *    than max_head bytes, or with more than HTTP_MAX_HEADERS headers: 431;
 *  - a request line that is not METHOD SP TARGET SP HTTP/x.y (HTTP/0.9's
 *    line without a version, two spaces), a target that is not visible
 *    ASCII, or a head holding a NUL or another control byte but HTAB, CR
 *    and LF: 400; so is anything http-parser refuses.
 * A request's body, and bytes after the head of a request that is not an
 * upgrade, are not parsed: the caller answers and closes.  After an
 * upgrade's head, the bytes that followed in the same chunk are the new
 * protocol's (`used` says where they start).
 *
 * The parsed head is copied into the parser's own room (max_head bytes),
 * so it outlives the chunks: struct http_head is a few KiB, made for a
 * connection that sent a letter first, never for a device.
 */
#ifndef FERRY_HTTP_H
#define FERRY_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

#include "buffer.h"

#define HTTP_MAX_HEAD 8192
#define HTTP_MAX_HEADERS 64

struct http_header {
	const char *name, *value;	/* in the head's room, not terminated */
	size_t nlen, vlen;
};

struct http_request {
	const char *method;		/* "GET", ... (terminated) */
	const char *target;		/* raw, as sent */
	size_t tlen;
	size_t plen;			/* the path: target up to any '?' */
	const char *query;		/* after the '?', or NULL */
	size_t qlen;
	int major, minor;
	bool upgrade;			/* Connection: upgrade + Upgrade: */
	struct http_header headers[HTTP_MAX_HEADERS];
	size_t nheaders;
};

enum http_head_result {
	HTTP_HEAD_MORE,			/* incomplete: feed more */
	HTTP_HEAD_DONE,			/* req is complete */
	HTTP_HEAD_ERROR,		/* status and why say what to answer */
};

enum http_head_state { HTTP_HS_FIELD, HTTP_HS_VALUE };

struct http_head {
	http_parser parser;
	struct http_request req;
	size_t max_head;		/* 1..HTTP_MAX_HEAD */
	size_t seen;			/* head bytes fed so far */
	char room[HTTP_MAX_HEAD];	/* target and headers, copied */
	size_t used;
	enum http_head_state hs;	/* what the last header piece was */
	bool in_url;
	size_t url_off;			/* where the target starts */
	const char *chunk;		/* being fed */
	bool done;
	int status;			/* on error: 400, 431 */
	const char *why;
};

void http_head_init(struct http_head *h, size_t max_head);
/*
 * Feeds bytes.  *used is set to how many belong to the head (on
 * HTTP_HEAD_DONE: the rest is the next protocol's).  Once DONE or ERROR,
 * the head must not be fed again.
 */
enum http_head_result http_head_feed(struct http_head *h, const char *data,
    size_t len, size_t *used);

/* A header's value (the first of that name, case-insensitive), or NULL. */
const char *http_header(const struct http_request *r, const char *name,
    size_t *len);
/* Whether a comma-separated header holds `token` (case-insensitive). */
bool http_header_has_token(const struct http_request *r, const char *name,
    const char *token);
/* Whether the path is exactly `p`. */
bool http_path_is(const struct http_request *r, const char *p);

/*
 * Percent-decodes `in` into out (at most outlen bytes): -1 for a bad
 * escape or no room, else the length.  '+' stays '+'.
 */
long http_pct_decode(const char *in, size_t len, char *out, size_t outlen);
/*
 * The value of `name` in a query string (raw, not decoded), or NULL.
 */
const char *http_query_param(const char *q, size_t qlen, const char *name,
    size_t *vlen);

/* Appends a JSON string (quoted, escaped).  0, or -1 without memory. */
int http_json_str(struct buffer *b, const char *s, size_t len);
/* Appends printf output.  0, or -1 without memory. */
int http_printf(struct buffer *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * An answer's head: "HTTP/1.0 <status>" (HTTP/1.1 for 101), Content-Type
 * and Content-Length when type is not NULL, `extra` header lines (each
 * ending in CRLF, may be NULL), Connection: close unless 101.
 */
int http_response_head(struct buffer *b, const char *status,
    const char *type, size_t len, const char *extra);

#endif
