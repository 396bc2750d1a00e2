/*
 * relaycheck: what the device relay suites (test_relay*.c) share.
 *
 * Every test starts the real ferry with start_relay() (a plain and a TLS
 * relay listener with the same options, and an admin listener) and speaks
 * to it through relayclient.h; the helpers here name the listener of the
 * test's transport, read its counters, and start producers, consumers and
 * reader threads, failing the test (cr_assert) on anything unexpected.
 * Criterion runs each test in a process of its own, so the state of the
 * test (`fp`, `transport`) is one global here.
 */
#ifndef FERRY_TEST_RELAYCHECK_H
#define FERRY_TEST_RELAYCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <criterion/parameterized.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relay_proto.h"
#include "relayclient.h"
#include "suite.h"

/* The transport of the test (the ferry under test, `fp`: suite.h). */
extern int transport;

/* Parameters of a relay test run over plain TCP and over TLS. */
#define BOTH(name)							\
	ParameterizedTestParameters(relay, name)			\
	{								\
		static int t[] = { T_PLAIN, T_TLS };			\
		return cr_make_param_array(int, t, 2);			\
	}

/* The relay listener of the test's transport, and whether it is TLS. */
const char *lname(void);
bool tls(void);
/*
 * Runs ferry with a plain and a TLS relay listener, both with the options
 * in `extra`, and an admin listener; returns the port for the transport.
 */
int start_relay(int t, const char *extra);
/* Whether listener `l` of the running ferry speaks TLS. */
bool tls_at(const char *l);
long long metric_at(const char *family, const char *l);
long long metric(const char *family);
/* Waits (10 s at most) for a counter of listener l to read `want`. */
void expect_metric_at(const char *family, const char *l, long long want);
void expect_metric(const char *family, long long want);
void expect_log(const char *needle, int n);
/* "k0,k1,...": n key names. */
char *keys_n(size_t n);
void producer_at(struct rclient *p, const char *l, const char *uuid,
    const char *keys);
void producer(struct rclient *p, const char *uuid, const char *keys);
/*
 * A consumer, once the server has read its accept byte: frames published
 * before that are not its frames (the protocol does not acknowledge the
 * accept byte, so the log says when).
 */
void consumer_at(struct rclient *c, const char *l, const char *uuid,
    int rcvbuf);
void consumer(struct rclient *c, const char *uuid, int rcvbuf);
/* Reads n frames and checks they are first, first + 1, ... */
void expect_frames(struct rclient *c, uint32_t first, size_t n);
/* A BE32 length and the bytes, into out; returns the size. */
size_t field(uint8_t *out, const void *p, size_t len);
void send_bytewise(struct rclient *c, const uint8_t *p, size_t n);
/* Consumers reading in threads (relayclient.h), checked here. */
void reader_start(struct rc_reader *r, struct rclient *c, size_t want);
size_t reader_got(struct rc_reader *r);
void reader_join(struct rc_reader *r);
/* Waits until every reader has `n` frames (their queues stay short). */
void readers_reach(struct rc_reader *rs, size_t nr, size_t n);
/* A witness pair must keep working while bad clients come and go. */
void pair_ok(struct rclient *p, struct rclient *c, uint32_t *seq);

/*
 * Frames 0 .. n - 1 of `nkeys` values each, back to back (malloc'd;
 * *len their size).
 */
uint8_t *frames_make(size_t nkeys, size_t n, size_t *len);
/*
 * A slow consumer that blocks: writes `stream` to the producer in 64 KB
 * pieces until one is not taken whole within a second (the producer is
 * held); returns the bytes written.
 */
size_t write_until_held(struct rclient *p, const uint8_t *stream,
    size_t total);
/*
 * Writes the rest of `stream`, from `off`: the producer must be released,
 * so a write that takes nothing fails the test ("still held at OFF" and
 * `why`).
 */
void write_rest(struct rclient *p, const uint8_t *stream, size_t off,
    size_t total, const char *why);
/*
 * Joins `nr` readers and checks that each got all `n` frames, in order
 * (every 997th sequence number); frees what they read.
 */
void readers_check(struct rc_reader *rd, size_t nr, size_t n);

#endif
