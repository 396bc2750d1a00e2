/*
 * The device relay's grace period, takeover and consumer slots (squatters,
 * pending consumers), over plain TCP and TLS (see test_relay.c).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relaycheck.h"
#include "relayclient.h"

/* ---- grace period, takeover ---- */

BOTH(grace_resume)
ParameterizedTest(int *t, relay, grace_resume, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p1, p2, c;

	start_relay(*t, "");			/* grace 10 s */
	producer(&p1, "g-resume", "a,b");
	consumer(&c, "g-resume", 0);
	cr_assert(rc_send_frames(&p1, 0, 10));
	expect_frames(&c, 0, 10);
	rc_reset(&p1);
	expect_log("uuid 'g-resume': producer gone, consumers wait", 1);
	expect_metric("ferry_relay_producers", 0);
	expect_metric("ferry_relay_consumers", 1);
	/* The same uuid and keys: the stream resumes to the same consumer. */
	producer(&p2, "g-resume", "a,b");
	expect_log("registered uuid 'g-resume' with 2 keys (consumers: 1)", 1);
	cr_assert(rc_send_frames(&p2, 100, 10));
	expect_frames(&c, 100, 10);
	rc_close(&p2);
	rc_close(&c);
}

BOTH(grace_expiry_and_other_keys)
ParameterizedTest(int *t, relay, grace_expiry_and_other_keys, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p, c, c2;

	start_relay(*t, "grace = 0.5\n");
	producer(&p, "g-expire", "a,b");
	consumer(&c, "g-expire", 0);
	cr_assert(rc_send_frames(&p, 0, 5));
	expect_frames(&c, 0, 5);
	rc_close(&p);
	/* No producer holds the uuid: a new consumer is refused, as in the
	 * table; the waiting one gets the end of its stream. */
	cr_assert_eq(rc_consumer(&c2, tls(), ferry_port(&fp, lname()),
	    "g-expire", 0), RC_REFUSED);
	rc_close(&c2);
	cr_assert(rc_closed(&c, RC_TIMEOUT), "not closed after the grace");
	rc_close(&c);
	expect_log("uuid 'g-expire': no producer within the grace period", 1);
	expect_log("producer gone, grace period over", 1);
	expect_metric("ferry_relay_devices", 0);

	/* Back within the grace period but with other keys: the waiting
	 * consumers cannot use its frames and are closed at once. */
	producer(&p, "g-keys", "a,b");
	consumer(&c, "g-keys", 0);
	rc_close(&p);
	expect_log("uuid 'g-keys': producer gone, consumers wait", 1);
	producer(&p, "g-keys", "a,b,c");
	cr_assert(rc_closed(&c, RC_TIMEOUT));
	rc_close(&c);
	expect_log("producer came back with other keys", 1);
	consumer(&c, "g-keys", 0);
	cr_assert_str_eq(c.keys, "a,b,c");
	cr_assert(rc_send_frames(&p, 7, 2));
	expect_frames(&c, 7, 2);
	rc_close(&c);
	rc_close(&p);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_producers", 0);
}

BOTH(takeover_replace)
ParameterizedTest(int *t, relay, takeover_replace, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p1, p2, c;
	uint8_t msg[256];
	size_t n = 0;

	start_relay(*t, "");
	producer(&p1, "phone", "x,y");
	consumer(&c, "phone", 0);
	cr_assert(rc_send_frames(&p1, 0, 5));
	expect_frames(&c, 0, 5);
	/* The phone comes back on a new connection and says it all at
	 * once, frames included, before reading any answer. */
	cr_assert_eq(rc_connect(&p2, tls(), ferry_port(&fp, lname()), 0), 0);
	msg[n++] = RELAY_PRODUCER;
	n += field(msg + n, "phone", 5);
	n += field(msg + n, "x,y", 3);
	for (uint32_t k = 0; k < 5; k++, n += 8)
		rc_frame(msg + n, 2, 100 + k);
	cr_assert(rc_send(&p2, msg, n));
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rc_byte(&p2, RC_TIMEOUT), RELAY_OK, "ack %d", i);
	expect_frames(&c, 100, 5);
	cr_assert(rc_closed(&p1, RC_TIMEOUT), "the old producer stays");
	expect_log("replaced by a new producer from 127.0.0.1:", 1);
	expect_metric("ferry_relay_producers", 1);
	rc_close(&p1);
	rc_close(&p2);
	rc_close(&c);
}

BOTH(takeover_refused)
ParameterizedTest(int *t, relay, takeover_refused, .timeout = 60,
    .fini = cleanup)
{
	struct rclient p1, p2, c;

	start_relay(*t, "takeover = refuse\n");
	producer(&p1, "phone", "x,y");
	consumer(&c, "phone", 0);
	cr_assert_eq(rc_producer(&p2, tls(), ferry_port(&fp, lname()),
	    "phone", "x,y"), RC_REFUSED);
	cr_assert_eq(p2.refused_at, 2, "refused at the uuid");
	cr_assert(rc_closed(&p2, RC_TIMEOUT));
	rc_close(&p2);
	expect_log("refused: uuid held by a live producer", 1);
	/* The first one never noticed. */
	cr_assert(rc_send_frames(&p1, 0, 5));
	expect_frames(&c, 0, 5);
	rc_close(&p1);
	rc_close(&c);
}

/* ---- consumer slots ---- */

/*
 * A consumer that asks for the keys and never accepts them: it holds
 * the connection and nothing else.  Answered 0x00 and the keys.
 */
static void
squatter(struct rclient *x, const char *uuid)
{
	cr_assert_eq(rc_connect(x, tls(), ferry_port(&fp, lname()), 0), 0);
	int r = rc_ask_keys(x, uuid);
	cr_assert_eq(r, RC_OK, "squatter of '%s': %d (refused at %d)", uuid, r,
	    x->refused_at);
}

#define SQUATTERS 64			/* max_consumers by default */

/*
 * max_consumers consumers that send their uuid and never accept: a real
 * consumer still gets the keys and the frames.  Slots are held by
 * accepted consumers only; the squatters stay connected (within their
 * registration deadline, 60 s here) and are sent nothing past the keys.
 */
BOTH(squatters_hold_no_slot)
ParameterizedTest(int *t, relay, squatters_hold_no_slot, .timeout = 120,
    .fini = cleanup)
{
	static struct rclient sq[SQUATTERS];
	struct rclient p, c, c2;

	start_relay(*t, "handshake_timeout = 60\n");
	producer(&p, "crowded", "a,b");
	for (int i = 0; i < SQUATTERS; i++)
		squatter(&sq[i], "crowded");
	consumer(&c, "crowded", 0);
	cr_assert_str_eq(c.keys, "a,b");
	cr_assert(rc_send_frames(&p, 0, 10));
	expect_frames(&c, 0, 10);
	expect_metric("ferry_relay_consumers", 1);
	expect_metric("ferry_relay_consumers_pending", SQUATTERS);
	/* Room for max_consumers accepted ones, whatever waits. */
	for (int i = 1; i < SQUATTERS; i++) {
		consumer(&c2, "crowded", 0);
		rc_close(&c2);
	}
	for (int i = 0; i < SQUATTERS; i++)
		cr_assert(rc_quiet(&sq[i], 0), "squatter %d was sent a frame "
		    "or closed", i);
	for (int i = 0; i < SQUATTERS; i++)
		rc_close(&sq[i]);
	cr_assert(rc_send_frames(&p, 10, 5));
	expect_frames(&c, 10, 5);
	expect_metric("ferry_relay_consumers_pending", 0);
	expect_metric("ferry_relay_refused_total", 0);
	rc_close(&c);
	rc_close(&p);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_devices", 0);
}

/*
 * A consumer given the keys while there was room, that accepts once
 * max_consumers others have: it is refused at its accept byte.  The
 * protocol has no answer after the keys, so it is closed without one,
 * before any frame (the last value included), logged and counted.
 */
BOTH(squatter_accepting_over_the_limit)
ParameterizedTest(int *t, relay, squatter_accepting_over_the_limit,
    .timeout = 60, .fini = cleanup)
{
	struct rclient p, s, c1, c2, x;
	uint8_t b;

	start_relay(*t, "max_consumers = 2\nlast_value = on\n"
	    "handshake_timeout = 60\n");
	producer(&p, "full", "a,b");
	cr_assert(rc_send_frames(&p, 0, 5));
	expect_metric("ferry_relay_frames_in_total", 5);
	squatter(&s, "full");
	consumer(&c1, "full", 0);
	consumer(&c2, "full", 0);
	expect_frames(&c1, 4, 1);		/* the last value */
	expect_frames(&c2, 4, 1);
	/* Full: a newcomer is answered 0x01 at its uuid, as before. */
	cr_assert_eq(rc_consumer(&x, tls(), ferry_port(&fp, lname()), "full",
	    0), RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	cr_assert(rc_closed(&x, RC_TIMEOUT));
	rc_close(&x);
	/* The squatter accepts now: closed, with nothing after the keys. */
	cr_assert(rc_send_byte(&s, RELAY_ACCEPT));
	expect_log("refused at its accept byte: too many consumers for this "
	    "uuid", 1);
	cr_assert(rc_send_frames(&p, 5, 5));
	expect_frames(&c1, 5, 5);
	expect_frames(&c2, 5, 5);
	cr_assert_eq(rc_read(&s, &b, 1, RC_TIMEOUT), 0, "the refused "
	    "squatter got a byte or no clean close");
	rc_close(&s);
	expect_metric("ferry_relay_refused_total", 2);
	expect_metric("ferry_relay_consumers", 2);
	expect_metric("ferry_relay_consumers_pending", 0);
	/* A slot freed is a slot again. */
	rc_close(&c1);
	expect_metric("ferry_relay_consumers", 1);
	consumer(&c1, "full", 0);
	expect_frames(&c1, 9, 1);
	cr_assert(rc_send_frames(&p, 10, 2));
	expect_frames(&c1, 10, 2);
	expect_frames(&c2, 10, 2);
	rc_close(&c1);
	rc_close(&c2);
	rc_close(&p);
}

/*
 * Consumers given the keys but not yet accepted follow the device as the
 * accepted ones do: one accepts within the grace period and gets the
 * resumed stream; when the producer comes back with other keys, those
 * given the old keys are closed, accepted or not.
 */
BOTH(pending_consumers_follow_the_device)
ParameterizedTest(int *t, relay, pending_consumers_follow_the_device,
    .timeout = 60, .fini = cleanup)
{
	struct rclient p, c, s1, s2;

	start_relay(*t, "grace = 30\nhandshake_timeout = 60\n");
	producer(&p, "follow", "a,b");
	consumer(&c, "follow", 0);
	squatter(&s1, "follow");
	rc_close(&p);
	expect_log("uuid 'follow': producer gone, consumers wait "
	    "(consumers: 1, 1 pending)", 1);
	/* s1 accepts in the grace period: it is in. */
	cr_assert(rc_send_byte(&s1, RELAY_ACCEPT));
	expect_metric("ferry_relay_consumers", 2);
	expect_metric("ferry_relay_consumers_pending", 0);
	producer(&p, "follow", "a,b");
	expect_log("registered uuid 'follow' with 2 keys (consumers: 2)", 1);
	cr_assert(rc_send_frames(&p, 0, 3));
	expect_frames(&c, 0, 3);
	expect_frames(&s1, 0, 3);
	/* s2 gets these keys, then the producer comes back with others. */
	squatter(&s2, "follow");
	expect_metric("ferry_relay_consumers_pending", 1);
	rc_close(&p);
	producer(&p, "follow", "a,b,c");
	cr_assert(rc_closed(&c, RC_TIMEOUT), "an accepted consumer stayed");
	cr_assert(rc_closed(&s1, RC_TIMEOUT), "an accepted consumer stayed");
	cr_assert(rc_closed(&s2, RC_TIMEOUT), "a pending consumer stayed");
	rc_close(&c);
	rc_close(&s1);
	rc_close(&s2);
	expect_metric("ferry_relay_consumers", 0);
	expect_metric("ferry_relay_consumers_pending", 0);
	consumer(&c, "follow", 0);
	cr_assert_str_eq(c.keys, "a,b,c");
	rc_close(&c);
	rc_close(&p);
	expect_metric("ferry_relay_devices", 0);
}
