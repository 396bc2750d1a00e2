/*
 * obj.h: container_of finds the record wherever the member sits, and a
 * callback argument that is not a live record of the expected type (NULL,
 * another type, one already freed) aborts at the cast.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "obj.h"

#define INNER_MAGIC 0x696e6e72u
#define OUTER_MAGIC 0x6f757472u

struct inner {
	uint32_t magic;
	int v;
};

struct outer {
	uint32_t magic;
	char pad[24];
	struct inner in;		/* not first */
	int tail;
};

static struct outer *
outer_of(void *arg)
{
	struct inner *in;
	struct outer *o;

	CAST_OBJ_NOTNULL(in, arg, INNER_MAGIC);
	o = container_of(in, struct outer, in);
	CHECK_OBJ_NOTNULL(o, OUTER_MAGIC);
	return o;
}

Test(obj, container_of_finds_the_record, .timeout = 10)
{
	struct outer o = { .magic = OUTER_MAGIC, .tail = 7,
	    .in = { .magic = INNER_MAGIC, .v = 3 } };

	cr_assert_eq(container_of(&o.in, struct outer, in), &o);
	cr_assert_eq(outer_of(&o.in), &o);
	cr_assert_eq(outer_of(&o.in)->tail, 7);
}

Test(obj, a_freed_record_aborts, .timeout = 10, .signal = SIGABRT)
{
	struct outer o = { .magic = OUTER_MAGIC,
	    .in = { .magic = INNER_MAGIC } };

	/* What a free leaves behind: the magic cleared. */
	o.in.magic = 0;
	(void)outer_of(&o.in);
}

Test(obj, another_type_aborts, .timeout = 10, .signal = SIGABRT)
{
	struct outer o = { .magic = OUTER_MAGIC,
	    .in = { .magic = INNER_MAGIC } };

	/* The container, not the member: its magic is the wrong one. */
	(void)outer_of(&o);
}

Test(obj, null_aborts, .timeout = 10, .signal = SIGABRT)
{
	(void)outer_of(NULL);
}

Test(obj, a_container_without_its_magic_aborts, .timeout = 10,
    .signal = SIGABRT)
{
	struct outer o = { .magic = 0, .in = { .magic = INNER_MAGIC } };

	(void)outer_of(&o.in);
}
