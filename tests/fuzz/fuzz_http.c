/*
 * libFuzzer target: the HTTP request head parser (http.h), fed the input
 * whole and cut in pieces (the first byte picks the cut), which must
 * agree.  Checked: the result and the status do not depend on the cuts;
 * a complete head is at most max_head bytes, its target, path and query
 * lie inside it, every header is whole; an error has a status (400/431)
 * and a reason.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"fuzz_http: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	abort(); } } while (0)

static enum http_head_result
run(struct http_head *h, const char *p, size_t len, size_t cut,
    size_t *head_len)
{
	enum http_head_result r = HTTP_HEAD_MORE;
	size_t off = 0, used;

	*head_len = 0;
	while (off < len && r == HTTP_HEAD_MORE) {
		size_t n = cut == 0 ? len - off : cut;
		if (n > len - off)
			n = len - off;
		r = http_head_feed(h, p + off, n, &used);
		CHECK(used <= n);
		if (r != HTTP_HEAD_ERROR)
			*head_len += used;
		off += n;
	}
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_head a, b;
	size_t cut, la, lb;
	enum http_head_result ra, rb;

	if (size < 1)
		return 0;
	cut = 1 + data[0] % 64;
	data++;
	size--;
	http_head_init(&a, HTTP_MAX_HEAD);
	http_head_init(&b, HTTP_MAX_HEAD);
	ra = run(&a, (const char *)data, size, 0, &la);
	rb = run(&b, (const char *)data, size, cut, &lb);
	CHECK(ra == rb);
	if (ra == HTTP_HEAD_ERROR) {
		CHECK(a.status == 400 || a.status == 431);
		CHECK(a.why != NULL && b.why != NULL);
		return 0;
	}
	if (ra != HTTP_HEAD_DONE)
		return 0;
	CHECK(la == lb && la <= HTTP_MAX_HEAD);
	CHECK(a.req.tlen == b.req.tlen &&
	    memcmp(a.req.target, b.req.target, a.req.tlen) == 0);
	CHECK(a.req.plen <= a.req.tlen);
	CHECK(a.req.target >= a.room &&
	    a.req.target + a.req.tlen <= a.room + a.used);
	if (a.req.query != NULL)
		CHECK(a.req.query + a.req.qlen == a.req.target + a.req.tlen);
	CHECK(a.req.nheaders == b.req.nheaders);
	for (size_t i = 0; i < a.req.nheaders; i++) {
		const struct http_header *x = &a.req.headers[i];
		const struct http_header *y = &b.req.headers[i];
		CHECK(x->nlen == y->nlen && x->vlen == y->vlen);
		CHECK(memcmp(x->name, y->name, x->nlen) == 0);
		CHECK(x->vlen == 0 || memcmp(x->value, y->value, x->vlen) == 0);
	}
	return 0;
}
