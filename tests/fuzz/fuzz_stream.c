/*
 * libFuzzer target: the stream's framing (stream.h) on a plain stream over
 * a real socketpair and the real libev loop.
 *
 * Input: a 7-byte header, the reads (4 bytes each), the write sizes (1
 * byte each), then the payload.
 *   h[0..1]  max_buffer_size = 1 + BE16 % 8192
 *   h[2..3]  read_chunk_size = 1 + BE16 % 4096
 *   h[4]     number of reads (% 32)
 *   h[5]     number of write sizes (% 32); none: one write
 *   h[6]     bit 0: the writer stays open at the end (no EOF)
 * A read is [k][a][b][c]: k & 3 is exact (0), partial (1) or until (2, 3);
 * n = 1 + BE16(a, b) % 16384 for the first two; for until, 1 + (k >> 2) % 3
 * delimiter bytes from a, b, c and max_bytes 0 (the buffer limit) or
 * 8 << ((k >> 4) & 7); k & 0x80 arms the read from outside the previous
 * read's callback.  A write size byte b is b + 1 below 128, else
 * (b - 127) * 64 bytes.
 *
 * The writer writes the payload in those pieces, letting the loop run
 * between them; the reads are armed in order, each (by default) from the
 * callback of the one before, as protocols do.  Checked:
 *   - the bytes delivered are the bytes written, in order, none skipped;
 *   - exact reads get n bytes, partial ones 1..n, until reads end at the
 *     first occurrence of the delimiter, within max_bytes;
 *   - a second read armed while one is pending is refused, harmlessly;
 *   - the stream closes only with EOF (a read the remaining bytes cannot
 *     satisfy, after the writer closed) or LIMIT (exact n over the buffer
 *     limit; until without a delimiter within its limit), each only when
 *     the bytes say so; never ERROR, RESET or worse;
 *   - a stream still open at the end has no read it could satisfy;
 *   - every stream is freed (the loop's live count returns to 0).
 *
 * The end is a state, not a count of quiet loop passes: the stream has
 * closed, or the loop has no work left (stream_loop_pending) and the
 * stream has taken all the kernel holds for it, the writer's FIN
 * included, or cannot take more (its buffer is full).  Counting passes
 * assumed the FIN is in the stream's socket when close() returns, which
 * it is not while another task holds the file (anything reading
 * /proc/PID/fd takes a reference for a moment): the last reference, and
 * the FIN, go later, and four quiet passes ended the run early.  A check
 * that fails prints what the harness saw (the input, the stream, the
 * socket) before it aborts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"fuzz_stream: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	report(); abort(); } } while (0)

#define HEADER 7
#define MAX_OPS 32
#define MAX_SIZES 32
/*
 * Loop passes to wait for the end (see above); after PUMPS_FAST of them
 * each pass first sleeps 100 us, so a kernel that is late gets about 2 s.
 */
#define PUMPS_FAST 1000
#define PUMPS_MAX 20000

enum op_kind { OP_EXACT, OP_PARTIAL, OP_UNTIL };

struct op {
	enum op_kind kind;
	size_t n;			/* bytes (exact/partial), max_bytes (until) */
	char delim[3];
	size_t dlen;
	bool outside;			/* armed by the driver, not a callback */
};

struct st {
	struct stream *s;
	int fd;				/* the stream's socket (sv[0]) */
	struct stream_opts opts;
	struct op ops[MAX_OPS];
	size_t nops;
	size_t next;			/* the next op to arm */
	int cur;			/* the op pending, or -1 */
	const uint8_t *payload;
	size_t written;			/* payload bytes the writer got out */
	size_t pos;			/* payload bytes delivered */
	bool writer_closed;
	bool closed;
	enum stream_close_reason why;
	int limit_op;			/* op refused at once with LIMIT */
};

static struct ev_loop *loop;
static struct stream_loop sl;
static const struct st *current;	/* the input running, for report() */

static void on_read(struct stream *s, const char *d, size_t len, void *arg);
static void report(void);

/* First occurrence of the delimiter in p[0..len), or -1. */
static long
find(const uint8_t *p, size_t len, const char *d, size_t dlen)
{
	if (len < dlen)
		return -1;
	for (size_t i = 0; i + dlen <= len; i++)
		if (memcmp(p + i, d, dlen) == 0)
			return (long)i;
	return -1;
}

static size_t
until_limit(const struct st *t, const struct op *o)
{
	size_t m = o->n ? o->n : t->opts.max_buffer_size;

	return m < t->opts.max_buffer_size ? m : t->opts.max_buffer_size;
}

static void
arm(struct st *t)
{
	const struct op *o;
	int rc;

	if (t->closed || t->next >= t->nops)
		return;
	o = &t->ops[t->next];
	t->cur = (int)t->next++;
	if (o->kind == OP_UNTIL)
		rc = stream_read_until(t->s, o->delim, o->dlen, o->n, on_read);
	else
		rc = stream_read_bytes(t->s, o->n, o->kind == OP_PARTIAL,
		    on_read);
	if (rc < 0) {
		/* Only an exact read larger than the buffer is refused. */
		CHECK(o->kind == OP_EXACT && o->n > t->opts.max_buffer_size);
		CHECK(errno == EMSGSIZE && stream_closed(t->s));
		t->limit_op = t->cur;
		return;
	}
	/* One read at a time: a second is refused and changes nothing. */
	CHECK(stream_read_bytes(t->s, 1, true, on_read) < 0);
	CHECK(stream_reading(t->s));
}

static void
on_read(struct stream *s, const char *d, size_t len, void *arg)
{
	struct st *t = arg;
	const struct op *o;

	CHECK(s == t->s && !t->closed);
	CHECK(t->cur >= 0);
	o = &t->ops[t->cur];
	/* The bytes written, in order. */
	CHECK(len >= 1 && t->pos + len <= t->written);
	CHECK(memcmp(d, t->payload + t->pos, len) == 0);
	switch (o->kind) {
	case OP_EXACT:
		CHECK(len == o->n);
		break;
	case OP_PARTIAL:
		CHECK(len <= o->n && len <= t->opts.max_buffer_size);
		break;
	case OP_UNTIL:
		CHECK(len <= until_limit(t, o));
		CHECK(find((const uint8_t *)d, len, o->delim, o->dlen) ==
		    (long)(len - o->dlen));
		break;
	}
	t->pos += len;
	t->cur = -1;
	if (t->next < t->nops && !t->ops[t->next].outside)
		arm(t);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct st *t = arg;

	CHECK(s == t->s && !t->closed);
	t->closed = true;
	t->why = why;
	t->s = NULL;
}

static void
pump(struct st *t)
{
	stream_loop_run_pending(&sl);
	ev_run(loop, EVRUN_NOWAIT);
	stream_loop_run_pending(&sl);
	if (!t->closed && t->cur < 0 && t->next < t->nops &&
	    t->ops[t->next].outside)
		arm(t);
}

/* Bytes the kernel holds in the stream's socket, unread. */
static int
socket_unread(const struct st *t)
{
	int n = 0;

	CHECK(ioctl(t->fd, FIONREAD, &n) == 0);
	return n;
}

/*
 * Nothing more can happen without the writer: the stream has closed, or
 * the loop has no work left and the stream has taken all the kernel
 * holds for it (the writer's FIN too, once written), or cannot take more
 * (its buffer is full: a read it could serve from the buffer would be
 * loop work), or was never asked to read.
 */
static bool
settled(const struct st *t)
{
	if (t->closed)
		return true;
	if (stream_loop_pending(&sl))
		return false;
	/* pump() arms the next read that waits for the driver. */
	if (t->cur < 0 && t->next < t->nops && t->ops[t->next].outside)
		return false;
	if (t->nops == 0 ||
	    stream_read_pending(t->s) >= t->opts.max_buffer_size)
		return true;
	return socket_unread(t) == 0 &&
	    (!t->writer_closed || stream_peer_eof(t->s));
}

/* Runs the loop until settled(). */
static void
settle(struct st *t)
{
	int i;

	for (i = 0; i < PUMPS_MAX && !settled(t); i++) {
		if (i >= PUMPS_FAST)
			usleep(100);
		pump(t);
	}
	CHECK(i < PUMPS_MAX);
}

/* Could the pending op be satisfied by the bytes left? */
static bool
satisfiable(const struct st *t, const struct op *o)
{
	const uint8_t *rest = t->payload + t->pos;
	size_t left = t->written - t->pos;

	switch (o->kind) {
	case OP_EXACT:
		return o->n <= t->opts.max_buffer_size && left >= o->n;
	case OP_PARTIAL:
		return left > 0;
	case OP_UNTIL: {
		long at = find(rest, left, o->delim, o->dlen);
		return at >= 0 && (size_t)at + o->dlen <= until_limit(t, o);
	}
	}
	return false;
}

/* Does the pending op break a limit with the bytes left? */
static bool
breaks_limit(const struct st *t, const struct op *o)
{
	const uint8_t *rest = t->payload + t->pos;
	size_t left = t->written - t->pos, lim;
	long at;

	if (o->kind == OP_EXACT)
		return o->n > t->opts.max_buffer_size;
	if (o->kind != OP_UNTIL)
		return false;
	lim = until_limit(t, o);
	at = find(rest, left, o->delim, o->dlen);
	return at >= 0 ? (size_t)at + o->dlen > lim : left >= lim;
}

static void
check_end(struct st *t)
{
	const struct op *o = t->cur >= 0 ? &t->ops[t->cur] : NULL;

	if (t->closed) {
		switch (t->why) {
		case STREAM_CLOSE_LIMIT:
			CHECK(o != NULL && breaks_limit(t, o));
			break;
		case STREAM_CLOSE_EOF:
			CHECK(t->writer_closed);
			if (o != NULL)
				CHECK(!satisfiable(t, o) && !breaks_limit(t, o));
			else
				CHECK(t->pos == t->written);
			break;
		default:
			CHECK(!"closed for a reason the bytes do not give");
		}
		return;
	}
	/* Open and idle: nothing it could do. */
	if (o != NULL) {
		CHECK(!t->writer_closed);
		CHECK(!satisfiable(t, o) && !breaks_limit(t, o));
	} else {
		CHECK(t->next == t->nops);
		/* Unread bytes keep it open; a stream never asked to read
		 * does not read (nor see the EOF). */
		if (t->writer_closed && t->nops > 0)
			CHECK(t->pos < t->written);
	}
}

/* What the harness saw, for a failed check (the CI log keeps little). */
static void
report(void)
{
	const struct st *t = current;
	const struct op *o;
	static const char *kinds[] = { "exact", "partial", "until" };

	if (t == NULL)
		return;
	fprintf(stderr, "fuzz_stream: input: max_buffer_size %zu, "
	    "read_chunk_size %zu, %zu reads, writer %s; %zu of %zu reads "
	    "armed", t->opts.max_buffer_size, t->opts.read_chunk_size,
	    t->nops, t->writer_closed ? "closed" : "open", t->next, t->nops);
	if (t->cur >= 0) {
		o = &t->ops[t->cur];
		fprintf(stderr, ", read %d pending (%s, n %zu", t->cur,
		    kinds[o->kind], o->n);
		if (o->kind == OP_UNTIL)
			fprintf(stderr, ", delimiter of %zu bytes", o->dlen);
		fprintf(stderr, ")");
	}
	fprintf(stderr, "; %zu of %zu bytes written delivered\n", t->pos,
	    t->written);
	if (t->closed) {
		fprintf(stderr, "fuzz_stream: stream closed: %s\n",
		    stream_close_reason_str(t->why));
	} else if (t->s != NULL && !stream_closed(t->s)) {
		int unread = -1;

		(void)ioctl(t->fd, FIONREAD, &unread);
		fprintf(stderr, "fuzz_stream: stream open: %llu bytes read, "
		    "%zu buffered, peer eof %s, socket holds %d bytes; loop "
		    "work pending: %s\n",
		    (unsigned long long)stream_bytes_in(t->s),
		    stream_read_pending(t->s),
		    stream_peer_eof(t->s) ? "yes" : "no", unread,
		    stream_loop_pending(&sl) ? "yes" : "no");
	} else {
		fprintf(stderr, "fuzz_stream: stream closed, close callback "
		    "not yet run\n");
	}
}

static size_t
write_size(uint8_t b)
{
	return b < 128 ? (size_t)b + 1 : (size_t)(b - 127) * 64;
}

static void
parse(struct st *t, const uint8_t *data, size_t size, const uint8_t **sizes,
    size_t *nsizes, size_t *plen)
{
	size_t nops = data[4] % MAX_OPS, ns = data[5] % MAX_SIZES;
	const uint8_t *p = data + HEADER;
	size_t left = size - HEADER;

	stream_opts_default(&t->opts);
	t->opts.max_buffer_size = 1 + ((size_t)data[0] << 8 | data[1]) % 8192;
	t->opts.read_chunk_size = 1 + ((size_t)data[2] << 8 | data[3]) % 4096;
	t->opts.handshake_timeout = 0;
	if (nops > left / 4)
		nops = left / 4;
	for (size_t i = 0; i < nops; i++, p += 4, left -= 4) {
		struct op *o = &t->ops[i];
		o->outside = p[0] & 0x80;
		switch (p[0] & 3) {
		case 0:
			o->kind = OP_EXACT;
			break;
		case 1:
			o->kind = OP_PARTIAL;
			break;
		default:
			o->kind = OP_UNTIL;
			break;
		}
		if (o->kind == OP_UNTIL) {
			o->dlen = 1 + (p[0] >> 2) % 3;
			memcpy(o->delim, p + 1, o->dlen);
			o->n = (p[0] >> 4) & 7 ? (size_t)8 << ((p[0] >> 4) & 7) :
			    0;
		} else {
			o->n = 1 + ((size_t)p[1] << 8 | p[2]) % 16384;
		}
	}
	t->nops = nops;
	if (ns > left)
		ns = left;
	*sizes = p;
	*nsizes = ns;
	t->payload = p + ns;
	*plen = left - ns;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct st t;
	const uint8_t *sizes;
	size_t nsizes, plen, off = 0, k = 0;
	bool full = false;
	int sv[2];

	if (size < HEADER)
		return 0;
	if (loop == NULL) {
		signal(SIGPIPE, SIG_IGN);
		loop = ev_loop_new(EVFLAG_AUTO);
		CHECK(loop != NULL);
		stream_loop_init(&sl, loop);
	}
	memset(&t, 0, sizeof(t));
	t.cur = t.limit_op = -1;
	current = &t;
	parse(&t, data, size, &sizes, &nsizes, &plen);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0, sv) == 0);
	t.fd = sv[0];
	t.s = stream_new(&sl, sv[0], &t.opts);
	CHECK(t.s != NULL);
	stream_set_callbacks(t.s, on_close, &t);
	arm(&t);

	/* The writer: each piece, then the loop gets a turn or two. */
	while (off < plen) {
		size_t len = nsizes ? write_size(sizes[k++ % nsizes]) : plen;
		ssize_t n;
		if (len > plen - off)
			len = plen - off;
		n = write(sv[1], t.payload + off, len);
		if (n < 0) {
			CHECK(errno == EAGAIN || errno == EPIPE ||
			    errno == ECONNRESET);
			/* Closed, or still full once the stream has taken
			 * what it will: nobody reads, stop writing. */
			if (errno != EAGAIN || full)
				break;
			settle(&t);
			full = true;
			continue;
		}
		off += (size_t)n;
		t.written = off;
		full = false;
		pump(&t);
		pump(&t);
	}
	if (!(data[6] & 1)) {
		close(sv[1]);
		sv[1] = -1;
		t.writer_closed = true;
	}
	settle(&t);
	if (getenv("FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "  %zu/%zu bytes delivered, %zu/%zu reads, %s\n",
		    t.pos, t.written, t.next, t.nops, t.closed ?
		    stream_close_reason_str(t.why) : "open");
	check_end(&t);
	if (!t.closed)
		stream_close(t.s, STREAM_CLOSE_LOCAL);
	stream_loop_run_pending(&sl);
	CHECK(t.closed);
	CHECK(sl.live == 0);
	if (sv[1] >= 0)
		close(sv[1]);
	current = NULL;
	return 0;
}
