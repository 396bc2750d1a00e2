/*
 * obj: a struct from a pointer to one of its members, and a check of what
 * a callback's void * argument points to.
 *
 * container_of() recovers the record that embeds a member, wherever the
 * member sits in it: a layer that hands out a pointer to its own part of
 * a larger record (the registry's relay_conn inside the relay's client)
 * never needs to be the first member.  The member's type is checked at
 * compile time.
 *
 * A record that travels as a void * (a stream's or a timer's callback
 * argument) carries a magic number, set when it is made and cleared just
 * before it is freed.  CAST_OBJ_NOTNULL() takes such an argument and
 * checks it: a NULL, a record of another type or one already freed is
 * logged and aborts at once (as hitch's CAST_OBJ_NOTNULL does), in tests
 * and wherever NDEBUG is not defined, instead of corrupting memory
 * quietly.  With NDEBUG the checks compile away.
 */
#ifndef FERRY_OBJ_H
#define FERRY_OBJ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "log.h"

#define container_of(ptr, type, member) __extension__ ({		\
	const __typeof__(((type *)0)->member) *obj_mptr_ = (ptr);	\
	(type *)(void *)((char *)obj_mptr_ - offsetof(type, member)); })

__attribute__((noreturn, cold)) static inline void
obj_fail(const char *what, const uint32_t *have, uint32_t want,
    const char *file, int line)
{
	if (have == NULL)
		log_write(LOG_ERROR, "%s:%d: %s is NULL", file, line, what);
	else
		log_write(LOG_ERROR, "%s:%d: %s is not a live object (magic "
		    "0x%08x, want 0x%08x)", file, line, what, (unsigned)*have,
		    (unsigned)want);
	abort();
}

#ifdef NDEBUG
#define CHECK_OBJ_NOTNULL(obj, magic_) ((void)0)
#else
#define CHECK_OBJ_NOTNULL(obj, magic_) do {				\
	if ((obj) == NULL)						\
		obj_fail(#obj, NULL, (magic_), __FILE__, __LINE__);	\
	if ((obj)->magic != (magic_))					\
		obj_fail(#obj, &(obj)->magic, (magic_), __FILE__,	\
		    __LINE__);						\
} while (0)
#endif

/* to = from (a void *), checked as above. */
#define CAST_OBJ_NOTNULL(to, from, magic_) do {			\
	(to) = (from);							\
	CHECK_OBJ_NOTNULL(to, magic_);					\
} while (0)

#endif
