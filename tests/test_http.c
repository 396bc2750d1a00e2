/*
 * The HTTP request head parser (http.h) alone: what it takes and how it
 * reports it, whatever the cuts; its limits and refusals; the encodings
 * (percent-decoding, query parameters, JSON strings).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "http.h"

static const char upgrade_req[] =
    "GET /v1/produce/dev%201?keys=a,b&x=1 HTTP/1.1\r\n"
    "Host: example\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

/* Feeds `len` bytes in pieces of `cut` (0: whole); the head's length. */
static enum http_head_result
feed(struct http_head *h, const char *p, size_t len, size_t cut,
    size_t *head_len)
{
	enum http_head_result r = HTTP_HEAD_MORE;
	size_t off = 0, used;

	http_head_init(h, HTTP_MAX_HEAD);
	*head_len = 0;
	while (off < len && r == HTTP_HEAD_MORE) {
		size_t n = cut == 0 || cut > len - off ? len - off : cut;
		r = http_head_feed(h, p + off, n, &used);
		*head_len += used;
		off += n;
	}
	return r;
}

static int
status_of(const char *req, size_t len)
{
	struct http_head *h = malloc(sizeof(*h));
	size_t hl;
	int st;

	cr_assert_not_null(h);
	st = feed(h, req, len, 0, &hl) == HTTP_HEAD_ERROR ? h->status :
	    h->done ? 200 : 0;
	free(h);
	return st;
}

#define STATUS(s) status_of(s, sizeof(s) - 1)

Test(http, every_cut_gives_the_same_request, .timeout = 30)
{
	struct http_head *h = malloc(sizeof(*h));
	/* A frame after the head: the next protocol's, never the head's. */
	char buf[sizeof(upgrade_req) + 4];
	size_t len = sizeof(upgrade_req) - 1, hl, vlen;
	const char *v;

	cr_assert_not_null(h);
	memcpy(buf, upgrade_req, len);
	memcpy(buf + len, "\x81\x80" "ab", 4);
	for (size_t cut = 0; cut <= len + 4; cut++) {
		cr_assert_eq(feed(h, buf, len + 4, cut, &hl), HTTP_HEAD_DONE,
		    "cut %zu", cut);
		cr_assert_eq(hl, len, "cut %zu: head of %zu bytes", cut, hl);
		cr_assert_str_eq(h->req.method, "GET");
		cr_assert(h->req.upgrade);
		cr_assert_eq(h->req.major, 1);
		cr_assert_eq(h->req.minor, 1);
		cr_assert(http_path_is(&h->req, "/v1/produce/dev%201"));
		cr_assert_eq(h->req.qlen, 12);
		cr_assert_eq(memcmp(h->req.query, "keys=a,b&x=1", 12), 0);
		cr_assert_eq(h->req.nheaders, 5);
		v = http_header(&h->req, "sec-websocket-key", &vlen);
		cr_assert_not_null(v);
		cr_assert_eq(vlen, 24);
		cr_assert(http_header_has_token(&h->req, "Connection",
		    "upgrade"));
		cr_assert_not(http_header_has_token(&h->req, "Connection",
		    "close"));
		cut += cut > 8 ? 7 : 0;
	}
	free(h);
}

Test(http, a_body_or_a_second_request_is_not_the_heads, .timeout = 30)
{
	static const char post[] = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n"
	    "Connection: upgrade\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1"
	    "\r\n\r\n";
	struct http_head *h = malloc(sizeof(*h));
	size_t hl, want = strstr(post, "abc") - post;

	cr_assert_not_null(h);
	for (size_t cut = 0; cut < sizeof(post); cut++) {
		cr_assert_eq(feed(h, post, sizeof(post) - 1, cut, &hl),
		    HTTP_HEAD_DONE);
		cr_assert_eq(hl, want, "cut %zu: %zu", cut, hl);
	}
	free(h);
}

Test(http, bare_lf_and_both_versions_are_taken, .timeout = 30)
{
	cr_assert_eq(STATUS("GET /metrics HTTP/1.0\n\n"), 200);
	cr_assert_eq(STATUS("GET /metrics HTTP/1.0\nHost: a\r\n\n"), 200);
	cr_assert_eq(STATUS("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
	    200);
	cr_assert_eq(STATUS("GET /metrics HTTP/1.1\r\nHost: a\r\n"), 0);
}

Test(http, bad_request_lines_and_bytes_are_400, .timeout = 30)
{
	cr_assert_eq(status_of("GET /m\0x HTTP/1.0\r\n\r\n", 21), 400);
	cr_assert_eq(STATUS("GET /met\001rics HTTP/1.0\r\n\r\n"), 400);
	cr_assert_eq(STATUS("GET /metrics HTTP/1.0\r\nX: a\001\r\n\r\n"),
	    400);
	cr_assert_eq(STATUS("GET /metrics\r\n\r\n"), 400);
	cr_assert_eq(STATUS("GET  /metrics HTTP/1.0\r\n\r\n"), 400);
	cr_assert_eq(STATUS("GET /metrics HTTP/1.0 x\r\n\r\n"), 400);
	cr_assert_eq(STATUS("\x0b\x00\x00\x00\x04uuid"), 400);
}

Test(http, a_head_over_the_limit_is_431, .timeout = 30)
{
	char *req = malloc(HTTP_MAX_HEAD + 64);
	size_t len = HTTP_MAX_HEAD;

	cr_assert_not_null(req);
	memset(req, 'a', HTTP_MAX_HEAD + 64);
	memcpy(req, "GET / HTTP/1.0\r\nX: ", 19);
	memcpy(req + len - 4, "\r\n\r\n", 4);
	cr_assert_eq(status_of(req, len), 200, "8 KiB exactly is a head");
	req[len - 4] = 'a';
	memcpy(req + len - 3, "\r\n\r\n", 4);
	cr_assert_eq(status_of(req, len + 1), 431);
	free(req);
}

Test(http, more_than_64_headers_is_431, .timeout = 30)
{
	char req[2048];
	int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");

	for (int i = 0; i < 65; i++)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "X%d: y\r\n", i);
	n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
	cr_assert_eq(status_of(req, (size_t)n), 431);
}

Test(http, percent_decoding_and_query, .timeout = 30)
{
	char out[16];
	size_t vlen;
	const char *v;

	cr_assert_eq(http_pct_decode("a%20b%2Fc", 9, out, sizeof(out)), 5);
	cr_assert_eq(memcmp(out, "a b/c", 5), 0);
	cr_assert_eq(http_pct_decode("a%2", 3, out, sizeof(out)), -1);
	cr_assert_eq(http_pct_decode("a%zz", 4, out, sizeof(out)), -1);
	cr_assert_eq(http_pct_decode("abc", 3, out, 2), -1);
	v = http_query_param("keys=a,b&token=t", 16, "token", &vlen);
	cr_assert(v != NULL && vlen == 1 && *v == 't');
	cr_assert_null(http_query_param("keysx=a", 7, "keys", &vlen));
	cr_assert_null(http_query_param(NULL, 0, "keys", &vlen));
}

Test(http, json_strings_are_escaped, .timeout = 30)
{
	struct buffer b = BUFFER_INIT;

	cr_assert_eq(http_json_str(&b, "a\"b\\c\x01", 6), 0);
	cr_assert_eq(buffer_len(&b), 15);
	cr_assert_eq(memcmp(buffer_data(&b), "\"a\\\"b\\\\c\\u0001\"", 15), 0);
	buffer_free(&b);
}
