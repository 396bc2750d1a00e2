/*
 * suite: the state the files of one split suite share (test_relay*.c,
 * test_forward*.c, test_hostile*.c): the ferry under test.  Criterion
 * runs each test in a process of its own, so one global serves every
 * test; a suite in one file keeps its own static instead.
 */
#ifndef FERRY_TEST_SUITE_H
#define FERRY_TEST_SUITE_H

#include "ferryproc.h"

extern struct ferry_proc fp;

/* The usual fixture (.fini): stops the ferry of the test. */
void cleanup(void);

#endif
