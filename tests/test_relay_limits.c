/*
 * The device relay's protocol limits, bad key names, configured limits and
 * last_value, over plain TCP and TLS (see test_relay.c).
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

/* ---- limits ---- */

struct bad_client {
	const char *name;
	uint8_t msg[80];
	size_t len;
	const char *answer;		/* bytes expected before the close */
	size_t alen;
};



static void
try_bad(const struct bad_client *b, const uint8_t *tail, size_t tlen)
{
	struct rclient x;
	uint8_t got[8];

	cr_assert_eq(rc_connect(&x, tls(), ferry_port(&fp, lname()), 0), 0);
	cr_assert(rc_send(&x, b->msg, b->len), "%s", b->name);
	if (tail != NULL)
		(void)rc_write(&x, tail, tlen, RC_TIMEOUT);
	cr_assert(rc_read_exact(&x, got, b->alen), "%s: no answer", b->name);
	cr_assert_eq(memcmp(got, b->answer, b->alen), 0, "%s: answer",
	    b->name);
	cr_assert_eq(rc_read(&x, got, 1, RC_TIMEOUT), 0,
	    "%s: no clean close after the answer", b->name);
	rc_close(&x);
}

static size_t
put_u32(uint8_t *m, uint32_t v)
{
	m[0] = (uint8_t)(v >> 24);
	m[1] = (uint8_t)(v >> 16);
	m[2] = (uint8_t)(v >> 8);
	m[3] = (uint8_t)v;
	return 4;
}

/* role 0x0a, uuid "u", then a keys length of klen (the keys follow). */
static void
keys_claim(struct bad_client *b, const char *name, uint32_t klen)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
	b->msg[0] = RELAY_PRODUCER;
	b->len = 1 + field(b->msg + 1, "u", 1);
	b->len += put_u32(b->msg + b->len, klen);
	b->answer = "\x00\x00\x01";
	b->alen = 3;
}

BOTH(each_limit)
ParameterizedTest(int *t, relay, each_limit, .timeout = 120,
    .fini = cleanup)
{
	struct rclient wp, wc, x;
	struct bad_client b;
	uint32_t seq = 0;
	uint8_t *big = calloc(1, 70000);
	char *k16385 = rc_key_names(16385), *k16384 = rc_key_names(16384);
	int refused = 0;

	cr_assert_not_null(big);
	cr_assert(k16385 != NULL && k16384 != NULL);
	start_relay(*t, "");
	producer(&wp, "witness", "a,b");
	consumer(&wc, "witness", 0);
	pair_ok(&wp, &wc, &seq);

	/* The uuid, producer and consumer: empty, 256 bytes, 4 GB. */
	const uint32_t ulens[] = { 0, 256, 0xffffffffu };
	for (int role = RELAY_PRODUCER; role <= RELAY_CONSUMER; role++)
		for (size_t i = 0; i < 3; i++) {
			memset(&b, 0, sizeof(b));
			b.name = "uuid length";
			b.msg[0] = (uint8_t)role;
			b.len = 1 + put_u32(b.msg + 1, ulens[i]);
			b.answer = "\x00\x01";
			b.alen = 2;
			try_bad(&b, big, ulens[i] == 256 ? 256 : 100);
			pair_ok(&wp, &wc, &seq);
			refused++;
		}
	memset(&b, 0, sizeof(b));
	b.name = "uuid not UTF-8";
	b.msg[0] = RELAY_PRODUCER;
	b.len = 1 + field(b.msg + 1, "\xc0\xaf", 2);
	b.answer = "\x00\x01";
	b.alen = 2;
	try_bad(&b, NULL, 0);
	refused++;
	/* The keys: empty, 65537 bytes, a 4 GB claim. */
	keys_claim(&b, "keys length 0", 0);
	try_bad(&b, big, 100);
	keys_claim(&b, "keys of 65537 bytes", 65537);
	try_bad(&b, big, 65537);
	keys_claim(&b, "keys claiming 4 GB", 0xffffffffu);
	try_bad(&b, big, 100);
	refused += 3;
	pair_ok(&wp, &wc, &seq);
	/* Empty names. */
	const char *names[] = { ",a", "a,,b", "a," };
	for (size_t i = 0; i < 3; i++) {
		memset(&b, 0, sizeof(b));
		b.name = names[i];
		b.msg[0] = RELAY_PRODUCER;
		b.len = 1 + field(b.msg + 1, "u", 1);
		b.len += field(b.msg + b.len, names[i], strlen(names[i]));
		b.answer = "\x00\x00\x01";
		b.alen = 3;
		try_bad(&b, NULL, 0);
		refused++;
	}
	/* 16385 keys (61,571 bytes): one too many. */
	keys_claim(&b, "16385 keys", (uint32_t)strlen(k16385));
	try_bad(&b, (const uint8_t *)k16385, strlen(k16385));
	refused++;
	pair_ok(&wp, &wc, &seq);
	expect_metric("ferry_relay_refused_total", refused);

	/* Right at the limits: accepted. */
	char u255[256];
	memset(u255, 'u', 255);
	u255[255] = '\0';
	producer(&x, u255, "a");
	rc_close(&x);
	producer(&x, "many", k16384);
	struct rclient xc;
	consumer(&xc, "many", 0);
	cr_assert_eq(xc.nkeys, 16384);
	cr_assert_str_eq(xc.keys, k16384);
	cr_assert(rc_send_frames(&x, 3, 2));
	expect_frames(&xc, 3, 2);
	rc_close(&xc);
	rc_close(&x);
	/* A consumer that declines the keys is closed. */
	cr_assert_eq(rc_connect(&x, tls(), ferry_port(&fp, lname()), 0), 0);
	uint8_t m[32], got[16];
	m[0] = RELAY_CONSUMER;
	size_t n = 1 + field(m + 1, "witness", 7);
	m[n++] = 0x02;
	cr_assert(rc_send(&x, m, n));
	cr_assert(rc_read_exact(&x, got, 2 + 4 + 3));
	cr_assert_eq(memcmp(got, "\x00\x00\x00\x00\x00\x03" "a,b", 9), 0);
	cr_assert(rc_closed(&x, RC_TIMEOUT));
	rc_close(&x);
	expect_log("declined the keys (0x02)", 1);
	pair_ok(&wp, &wc, &seq);
	rc_close(&wp);
	rc_close(&wc);
	free(big);
	free(k16385);
	free(k16384);
}

/*
 * Key names a consumer could not tell apart or show: with a NUL or
 * another control character, or the same name twice (next to each other
 * or 16,383 names apart).  Each producer is answered 0x01 at its keys and
 * closed; the witness pair never notices.
 */
BOTH(bad_key_names)
ParameterizedTest(int *t, relay, bad_key_names, .timeout = 120,
    .fini = cleanup)
{
	struct rclient wp, wc, x;
	struct bad_client b;
	uint32_t seq = 0;
	char *far = rc_key_names(16384);
	int refused = 0;

	cr_assert_not_null(far);
	/* The last of 16,384 names is the first's: a duplicate far apart. */
	strcpy(strrchr(far, ',') + 1, "0");
	start_relay(*t, "");
	producer(&wp, "witness", "a,b");
	consumer(&wc, "witness", 0);
	pair_ok(&wp, &wc, &seq);
	/* Names with a NUL or a control character, or twice the same. */
	static const struct { const char *k; size_t len; } bad_names[] = {
		{ "a\0b", 3 }, { "x,\0", 3 }, { "x,y\tz", 5 }, { "x\x7f", 2 },
		{ "a,a", 3 }, { "jawOpen,eyeBlink,jawOpen", 24 },
	};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]);
	    i++) {
		keys_claim(&b, "bad key names", (uint32_t)bad_names[i].len);
		try_bad(&b, (const uint8_t *)bad_names[i].k, bad_names[i].len);
		refused++;
		pair_ok(&wp, &wc, &seq);
	}
	keys_claim(&b, "16384 names, the first again last",
	    (uint32_t)strlen(far));
	try_bad(&b, (const uint8_t *)far, strlen(far));
	refused++;
	pair_ok(&wp, &wc, &seq);
	expect_metric("ferry_relay_refused_total", refused);
	/* Seven close lines: within the log's 20 a second. */
	expect_log("refused: key 1 has a control character (0x00)", 1);
	expect_log("refused: key 2 has a control character (0x00)", 1);
	expect_log("refused: key 2 has a control character (0x09)", 1);
	expect_log("refused: key 1 has a control character (0x7f)", 1);
	expect_log("refused: keys 1 and 2 have the same name", 1);
	expect_log("refused: keys 1 and 3 have the same name", 1);
	expect_log("refused: keys 1 and 16384 have the same name", 1);
	expect_metric("ferry_relay_producers", 1);
	/* Alike is not the same: prefixes, case and blanks make names. */
	producer(&x, "alike", "a,ab,A, a");
	struct rclient xc;
	consumer(&xc, "alike", 0);
	cr_assert_str_eq(xc.keys, "a,ab,A, a");
	cr_assert(rc_send_frames(&x, 0, 2));
	expect_frames(&xc, 0, 2);
	pair_ok(&wp, &wc, &seq);
	rc_close(&xc);
	rc_close(&x);
	rc_close(&wc);
	rc_close(&wp);
	free(far);
}

BOTH(configured_limits)
ParameterizedTest(int *t, relay, configured_limits, .timeout = 60,
    .fini = cleanup)
{
	struct rclient x;
	int port = start_relay(*t, "max_uuid_bytes = 8\nmax_keys = 2\n"
	    "max_keys_bytes = 8\n");

	cr_assert_eq(rc_producer(&x, tls(), port, "123456789", "a"),
	    RC_REFUSED);
	cr_assert_eq(x.refused_at, 2);
	rc_close(&x);
	cr_assert_eq(rc_producer(&x, tls(), port, "u", "a,b,c"), RC_REFUSED);
	cr_assert_eq(x.refused_at, 3);
	rc_close(&x);
	cr_assert_eq(rc_producer(&x, tls(), port, "u", "abcd,efgh"),
	    RC_REFUSED);
	cr_assert_eq(x.refused_at, 3);
	rc_close(&x);
	cr_assert_eq(rc_producer(&x, tls(), port, "12345678", "abc,efgh"),
	    RC_OK);
	rc_close(&x);
	expect_log("refused: 3 keys, more than 2", 1);
	expect_log("refused: keys length 9 out of range 1..8", 1);
}

/* ---- last_value ---- */

BOTH(last_value)
ParameterizedTest(int *t, relay, last_value, .timeout = 60, .fini = cleanup)
{
	struct rclient p, c;

	start_relay(*t, "last_value = on\n");
	producer(&p, "slow-sensor", "temp,pressure");
	cr_assert(rc_send_frames(&p, 0, 10));
	expect_metric("ferry_relay_frames_in_total", 10);
	/* A late consumer gets the latest frame at once ... */
	consumer(&c, "slow-sensor", 0);
	expect_frames(&c, 9, 1);
	/* ... then the stream as it goes on. */
	cr_assert(rc_send_frames(&p, 10, 2));
	expect_frames(&c, 10, 2);
	rc_close(&p);
	rc_close(&c);
}
