/*
 * buffer: a growable byte buffer with a read position, no I/O.
 *
 * Bytes live in one contiguous array between `start` and `end`, so a reader
 * can be handed a pointer to any prefix without copying.  Consuming only
 * advances `start`; space is reclaimed by compacting (moving the live bytes
 * to the front) before growing, so a buffer that is drained as fast as it is
 * filled never reallocates.
 *
 * Allocation failure is reported (-1), never fatal: a connection that cannot
 * get memory is closed, the process carries on.
 */
#ifndef FERRY_BUFFER_H
#define FERRY_BUFFER_H

#include <stddef.h>

struct buffer {
	char *data;
	size_t start;	/* first unread byte */
	size_t end;	/* one past the last byte */
	size_t cap;
};

#define BUFFER_INIT { NULL, 0, 0, 0 }

void buffer_init(struct buffer *b);
/* Releases the memory; the buffer is empty and reusable afterwards. */
void buffer_free(struct buffer *b);

static inline size_t
buffer_len(const struct buffer *b)
{
	return b->end - b->start;
}

static inline const char *
buffer_data(const struct buffer *b)
{
	return b->data + b->start;
}

/*
 * Makes room for at least `n` more bytes at the tail (compacting first,
 * growing geometrically if that is not enough).  Returns 0, or -1 when
 * memory cannot be had.
 */
int buffer_reserve(struct buffer *b, size_t n);

/* The writable tail after buffer_reserve(): fill, then buffer_commit(). */
static inline char *
buffer_tail(struct buffer *b)
{
	return b->data + b->end;
}

static inline size_t
buffer_tail_room(const struct buffer *b)
{
	return b->cap - b->end;
}

void buffer_commit(struct buffer *b, size_t n);

int buffer_append(struct buffer *b, const void *p, size_t n);

/* Drops `n` bytes (at most buffer_len) from the front. */
void buffer_consume(struct buffer *b, size_t n);

/* Moves the live bytes to the front of the array. */
void buffer_compact(struct buffer *b);

/*
 * Returns the memory of an empty buffer whose capacity exceeds `keep`, so
 * idle connections stay small after a burst.
 */
void buffer_shrink(struct buffer *b, size_t keep);

/*
 * Offset of the first occurrence of `delim` (length dlen >= 1) in the
 * buffered bytes at or after `from`, or -1.
 */
long buffer_find(const struct buffer *b, size_t from, const char *delim,
    size_t dlen);

#endif
