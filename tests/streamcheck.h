/*
 * streamcheck: what the stream suites (test_stream*.c) share: a connected
 * pair, a stream on the test's loop (plain or TLS) and a blocking peer
 * running a function in a thread, with what the stream's side saw.
 */
#ifndef FERRY_TEST_STREAMCHECK_H
#define FERRY_TEST_STREAMCHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "helpers.h"
#include "stream.h"

struct pair;
typedef void (*peer_fn)(struct pair *pr);

struct pair {
	int transport;
	struct tloop t;
	int lfd, port;
	struct stream *s;
	struct tls_ctx *tls;
	struct peer peer;
	pthread_t th;
	peer_fn fn;
	volatile bool peer_done;
	volatile bool peer_ok;

	/* what the server side saw */
	volatile bool closed;
	enum stream_close_reason why;
	char error[128];
	size_t got;
	int calls;
	int depth, max_depth;
	bool ok;
	uint8_t *buf;
	size_t buflen;
	volatile bool flag;
};

/* A connected pair: pr->s on the loop, the peer running fn in a thread. */
void pair_open(struct pair *pr, int transport, const struct stream_opts *opts,
    peer_fn fn);
/*
 * Waits (bounded) for the peer's thread to end by itself (a hung peer
 * fails the test), closes the stream, checks that every stream was freed,
 * and frees the pair.
 */
void pair_close(struct pair *pr);
/* The default stream options. */
struct stream_opts opts_default(void);

/* A read callback that only counts its calls (pr->calls). */
void never_called(struct stream *s, const char *d, size_t n, void *arg);
/* A peer that reads nothing until pr->flag is set, then drains. */
void peer_slow_reader(struct pair *pr);

#endif
