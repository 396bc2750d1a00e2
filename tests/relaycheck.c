/* relaycheck: see relaycheck.h. */
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

int transport;


const char *
lname(void)
{
	return transport == T_TLS ? "relay-tls" : "relay";
}

bool
tls(void)
{
	return transport == T_TLS;
}

/*
 * Runs ferry with a plain and a TLS relay listener, both with the options
 * in `extra`, and an admin listener; returns the port for the transport.
 */
int
start_relay(int t, const char *extra)
{
	char conf[4096];

	transport = t;
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n%s"
	    "[relay-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\n%s", extra, CERT("server.pem"),
	    CERT("server.key"), extra);
	ferry_start(&fp, conf);
	return ferry_port(&fp, lname());
}

/* Whether listener `l` of the running ferry speaks TLS. */
bool
tls_at(const char *l)
{
	for (size_t i = 0; i < fp.nports; i++)
		if (strcmp(fp.ports[i].name, l) == 0)
			return strcmp(fp.ports[i].transport, "tls") == 0;
	cr_assert_fail("no listener %s", l);
	return false;
}

long long
metric_at(const char *family, const char *l)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\"}", family, l);
	return rc_metric(ferry_port(&fp, "admin"), series);
}

long long
metric(const char *family)
{
	return metric_at(family, lname());
}

/* Waits (10 s at most) for a counter of listener l to read `want`. */
void
expect_metric_at(const char *family, const char *l, long long want)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\"}", family, l);
	metric_expect(&fp, series, (double)want, 10, 10);
}

void
expect_metric(const char *family, long long want)
{
	expect_metric_at(family, lname(), want);
}

void
expect_log(const char *needle, int n)
{
	ferry_log_expect(&fp, needle, n);
}

/* "k0,k1,...": n key names. */
char *
keys_n(size_t n)
{
	char *k = malloc(n * 8 + 1);
	size_t o = 0;

	cr_assert_not_null(k);
	for (size_t i = 0; i < n; i++)
		o += (size_t)sprintf(k + o, "%sk%zu", i ? "," : "", i);
	return k;
}

void
producer_at(struct rclient *p, const char *l, const char *uuid,
    const char *keys)
{
	int r = rc_producer(p, tls_at(l), ferry_port(&fp, l), uuid, keys);

	cr_assert_eq(r, RC_OK, "producer '%s' on %s: %d (refused at %d)", uuid,
	    l, r, p->refused_at);
}

void
producer(struct rclient *p, const char *uuid, const char *keys)
{
	producer_at(p, lname(), uuid, keys);
}

/*
 * A consumer, once the server has read its accept byte: frames published
 * before that are not its frames (the protocol does not acknowledge the
 * accept byte, so the log says when).
 */
void
consumer_at(struct rclient *c, const char *l, const char *uuid, int rcvbuf)
{
	char needle[320];
	int before, r;

	size_t o = (size_t)snprintf(needle, sizeof(needle), " joined uuid '");
	/* As the log writes a uuid: printable ASCII, the rest as \xNN. */
	for (const unsigned char *u = (const unsigned char *)uuid; *u; u++)
		o += (size_t)snprintf(needle + o, sizeof(needle) - o,
		    *u >= 0x20 && *u < 0x7f && *u != '\\' && *u != '\'' ?
		    "%c" : "\\x%02x", *u);
	snprintf(needle + o, sizeof(needle) - o, "'");
	before = ferry_log_count(&fp, needle);
	r = rc_consumer(c, tls_at(l), ferry_port(&fp, l), uuid, rcvbuf);
	cr_assert_eq(r, RC_OK, "consumer '%s' on %s: %d (refused at %d)", uuid,
	    l, r, c->refused_at);
	expect_log(needle, before + 1);
}

void
consumer(struct rclient *c, const char *uuid, int rcvbuf)
{
	consumer_at(c, lname(), uuid, rcvbuf);
}

/* Reads n frames and checks they are first, first + 1, ... */
void
expect_frames(struct rclient *c, uint32_t first, size_t n)
{
	uint32_t *seqs = calloc(n, sizeof(*seqs));
	bool torn;
	size_t got;

	cr_assert_not_null(seqs);
	got = rc_read_frames(c, n, seqs, &torn);
	cr_assert_not(torn, "a torn frame after %zu", got);
	cr_assert_eq(got, n, "%zu of %zu frames", got, n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(seqs[i], first + i, "frame %zu is %u, not %zu",
		    i, seqs[i], first + i);
	free(seqs);
}

/* A BE32 length and the bytes, into out; returns the size. */
size_t
field(uint8_t *out, const void *p, size_t len)
{
	out[0] = (uint8_t)(len >> 24);
	out[1] = (uint8_t)(len >> 16);
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
	memcpy(out + 4, p, len);
	return len + 4;
}

void
send_bytewise(struct rclient *c, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_assert(rc_send(c, p + i, 1), "send byte %zu", i);
}

/* Consumers reading in threads (relayclient.h), checked here. */
void
reader_start(struct rc_reader *r, struct rclient *c, size_t want)
{
	cr_assert_eq(rc_reader_start(r, c, want), 0);
}

size_t
reader_got(struct rc_reader *r)
{
	return rc_reader_got(r);
}

void
reader_join(struct rc_reader *r)
{
	rc_reader_join(r);
	cr_assert_not(r->torn, "a torn frame after %zu", r->got);
}

/* Waits until every reader has `n` frames (their queues stay short). */
void
readers_reach(struct rc_reader *rs, size_t nr, size_t n)
{
	double end = now_s() + 20;

	for (size_t i = 0; i < nr; i++)
		while (reader_got(&rs[i]) < n) {
			cr_assert_lt(now_s(), end, "reader %zu stuck at %zu of "
			    "%zu", i, reader_got(&rs[i]), n);
			usleep(200);
		}
}


/* A witness pair must keep working while bad clients come and go. */
void
pair_ok(struct rclient *p, struct rclient *c, uint32_t *seq)
{
	cr_assert(rc_send_frames(p, *seq, 1));
	expect_frames(c, *seq, 1);
	(*seq)++;
}

uint8_t *
frames_make(size_t nkeys, size_t n, size_t *len)
{
	size_t fs = nkeys * RELAY_VALUE_SIZE;
	uint8_t *f = malloc(n * fs);

	cr_assert_not_null(f);
	for (size_t k = 0; k < n; k++)
		rc_frame(f + k * fs, nkeys, (uint32_t)k);
	*len = n * fs;
	return f;
}

size_t
write_until_held(struct rclient *p, const uint8_t *stream, size_t total)
{
	size_t off = 0;

	while (off < total) {
		size_t w = rc_write(p, stream + off, total - off > 65536 ?
		    65536 : total - off, 1.0);
		off += w;
		if (w < 65536)
			break;
	}
	return off;
}

void
write_rest(struct rclient *p, const uint8_t *stream, size_t off,
    size_t total, const char *why)
{
	while (off < total) {
		size_t w = rc_write(p, stream + off, total - off, RC_TIMEOUT);
		cr_assert_gt(w, 0, "still held at %zu%s", off, why);
		off += w;
	}
}

void
readers_check(struct rc_reader *rd, size_t nr, size_t n)
{
	for (size_t i = 0; i < nr; i++) {
		reader_join(&rd[i]);
		cr_assert_eq(rd[i].got, n, "reader %zu: %zu", i, rd[i].got);
		for (size_t k = 0; k < n; k += 997)
			cr_assert_eq(rd[i].seqs[k], k);
		free(rd[i].seqs);
	}
}
