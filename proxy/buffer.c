/* buffer: see buffer.h. */
#define _GNU_SOURCE
#include "buffer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUFFER_MIN_CAP 4096

void
buffer_init(struct buffer *b)
{
	b->data = NULL;
	b->start = b->end = b->cap = 0;
}

void
buffer_free(struct buffer *b)
{
	free(b->data);
	buffer_init(b);
}

void
buffer_compact(struct buffer *b)
{
	if (b->start == 0)
		return;
	size_t len = buffer_len(b);
	if (len > 0)
		memmove(b->data, b->data + b->start, len);
	b->start = 0;
	b->end = len;
}

int
buffer_reserve(struct buffer *b, size_t n)
{
	size_t len = buffer_len(b);

	if (buffer_tail_room(b) >= n)
		return 0;
	if (len == 0) {
		b->start = b->end = 0;
		if (b->cap >= n)
			return 0;
	}
	/* Compact when that frees enough and the move is cheap enough. */
	if (b->cap - len >= n && len <= b->cap / 2) {
		buffer_compact(b);
		return 0;
	}
	if (n > SIZE_MAX / 2 - len)
		return -1;
	size_t want = len + n;
	size_t cap = b->cap ? b->cap : BUFFER_MIN_CAP;
	while (cap < want)
		cap *= 2;
	if (b->start > 0 && cap == b->cap) {
		buffer_compact(b);
		return 0;
	}
	char *p = malloc(cap);
	if (p == NULL)
		return -1;
	if (len > 0)
		memcpy(p, b->data + b->start, len);
	free(b->data);
	b->data = p;
	b->start = 0;
	b->end = len;
	b->cap = cap;
	return 0;
}

void
buffer_commit(struct buffer *b, size_t n)
{
	b->end += n;
}

int
buffer_append(struct buffer *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (buffer_reserve(b, n) < 0)
		return -1;
	memcpy(b->data + b->end, p, n);
	b->end += n;
	return 0;
}

void
buffer_consume(struct buffer *b, size_t n)
{
	size_t len = buffer_len(b);

	if (n >= len) {
		b->start = b->end = 0;
		return;
	}
	b->start += n;
}

void
buffer_shrink(struct buffer *b, size_t keep)
{
	if (buffer_len(b) == 0 && b->cap > keep)
		buffer_free(b);
}

long
buffer_find(const struct buffer *b, size_t from, const char *delim,
    size_t dlen)
{
	size_t len = buffer_len(b);

	if (dlen == 0 || from >= len || len - from < dlen)
		return -1;
	const char *base = buffer_data(b);
	const char *hit = memmem(base + from, len - from, delim, dlen);
	return hit ? (long)(hit - base) : -1;
}
