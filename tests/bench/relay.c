/*
 * relay: P producer/consumer pairs over the device protocol, version 1.
 *
 * Each pair has its own uuid.  Pairs are set up `parallel` at a time: the
 * producer registers (0x0a, uuid, keys), then its consumer (0x0b, uuid,
 * reads the keys back and accepts with 0x00).  When every pair is ready all
 * producers start together; after the warm-up the window opens and
 * consumers count what they receive, by receive time, for `duration`
 * seconds.  Then the producers stop and the consumers drain until every
 * frame sent has arrived, or a deadline passes: what is still on its way
 * then is reported as undelivered (at full speed a slow server can have
 * seconds of frames queued in the socket buffers), not as lost.
 *
 * A frame is K little-endian float slots; slots 0 and 1 carry the send time
 * (CLOCK_MONOTONIC ns, low and high 32 bits, raw), slot 2 the producer's
 * sequence number (raw), the others plain floats.  The consumer's sequence
 * check counts gaps as lost and going backwards as reordered (a late frame
 * is then no longer lost).  It starts at the first frame the consumer sees:
 * the protocol does not acknowledge a consumer's accept byte, so frames the
 * server relayed before it took the consumer in were never the consumer's
 * (the warm-up keeps them out of the figures anyway).
 *
 * Producers write only while the socket is writable, at most one batch in
 * user space: at full speed the kernel's socket buffers are the only queue,
 * so what is measured is the server.  With --rate each producer is paced by
 * a libev timer, the producers spread evenly over one period.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RELAY_IN_CAP	(64 * 1024)
#define RELAY_BATCH	(16 * 1024)	/* bytes a full-speed producer makes */
#define RELAY_RATE_Q	64		/* frames a paced producer may queue */
#define RELAY_RATE_QB	(256 * 1024)	/* ... in at most this many bytes */
#define RELAY_READS	16		/* reads per readiness event */
#define RELAY_BATCHES	4		/* fresh batches per writable event */
#define RELAY_DRAIN	5.0		/* seconds to wait for frames in flight */

struct relay_bench;
struct rpair;

enum rc_state { RC_IDLE, RC_CONNECT, RC_REG, RC_READY, RC_DEAD };

struct rconn {
	struct bconn bc;		/* first: the watcher is the connection */
	struct rpair *pair;
	bool producer;
	enum rc_state state;
	int step;			/* registration step */
	char *tx;			/* registration bytes to send */
	size_t tx_len, tx_off;
	char *in;			/* bytes received */
	size_t in_len, in_cap;
	uint32_t keys_len;		/* consumer: announced keys length */
};

struct rpair {
	struct relay_bench *rb;
	int idx;
	char uuid[64];
	struct rconn prod, cons;
	ev_timer tick;			/* --rate */

	char *out;			/* producer frames not yet written */
	size_t out_len, out_off, out_cap;
	size_t retry;			/* length of a write to repeat (TLS) */
	uint32_t seq;			/* next sequence number to send */
	uint64_t skipped;		/* paced frames not made: queue full */

	bool synced;			/* consumer: a first frame seen */
	uint32_t next;			/* consumer: next sequence expected */
	uint64_t lost, reordered;
	uint64_t received;
};

struct relay_bench {
	const struct bench_opts *o;
	struct ev_loop *loop;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	SSL_CTX *ctx;
	char *keys;			/* "k0,k1,..." */
	size_t keys_len;
	size_t fsize;			/* 4 * K */
	char *templ;			/* a frame's constant slots */
	struct rpair *pairs;
	int npairs;
	int next_pair;			/* next pair to set up */
	int setting_up;
	int ready;
	bool running, measuring, stopping, failed;

	uint64_t t_start, t_window, t_end;
	uint64_t frames;		/* received in the window */
	uint64_t sent_window;
	uint64_t errors;
	struct hist hist;
	uint64_t sec_frames;		/* progress */

	ev_timer phase;			/* setup deadline, warm-up, window, drain */
	ev_timer progress;
	int phase_no;
};

static void pair_fail(struct rpair *p, struct rconn *rc, const char *what);
static void rconn_cb(struct bconn *c, int revents);
static void prod_pump(struct rpair *p);

static void
put_le32(char *p, uint32_t v)
{
	p[0] = (char)(v & 0xff);
	p[1] = (char)((v >> 8) & 0xff);
	p[2] = (char)((v >> 16) & 0xff);
	p[3] = (char)((v >> 24) & 0xff);
}

static uint32_t
get_le32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
	    (uint32_t)u[3] << 24;
}

static void
put_be32(char *p, uint32_t v)
{
	p[0] = (char)((v >> 24) & 0xff);
	p[1] = (char)((v >> 16) & 0xff);
	p[2] = (char)((v >> 8) & 0xff);
	p[3] = (char)(v & 0xff);
}

static uint32_t
get_be32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
	    (uint32_t)u[2] << 8 | (uint32_t)u[3];
}

/* ---- registration ---- */

static int
tx_set(struct rconn *rc, int role_or_len, const char *body, size_t len)
{
	size_t need = body != NULL ? 4 + len : 1;

	free(rc->tx);
	rc->tx = malloc(need);
	if (rc->tx == NULL)
		return -1;
	if (body != NULL) {
		put_be32(rc->tx, (uint32_t)len);
		memcpy(rc->tx + 4, body, len);
	} else {
		rc->tx[0] = (char)role_or_len;
	}
	rc->tx_len = need;
	rc->tx_off = 0;
	return 0;
}

/* Bytes the current step waits for; 0 when it waits for nothing. */
static size_t
reg_need(const struct rconn *rc)
{
	if (rc->producer)
		return 1;
	switch (rc->step) {
	case 0: case 1: return 1;
	case 2: return 4;
	case 3: return rc->keys_len;
	default: return 0;
	}
}

/* Consumes a step's answer; queues the next step's bytes.  -1: failed. */
static int
reg_answer(struct rconn *rc, const char *a, const char **why)
{
	struct relay_bench *rb = rc->pair->rb;
	struct rpair *p = rc->pair;

	if (rc->producer) {
		if (a[0] != 0) {
			*why = "server refused the registration";
			return -1;
		}
		switch (rc->step++) {
		case 0:
			return tx_set(rc, 0, p->uuid, strlen(p->uuid));
		case 1:
			return tx_set(rc, 0, rb->keys, rb->keys_len);
		default:
			rc->state = RC_READY;
			return 0;
		}
	}
	switch (rc->step) {
	case 0:
		if (a[0] != 0) {
			*why = "server refused the consumer";
			return -1;
		}
		rc->step = 1;
		return tx_set(rc, 0, p->uuid, strlen(p->uuid));
	case 1:
		if (a[0] != 0) {
			*why = "uuid unknown to the server (0x01)";
			return -1;
		}
		rc->step = 2;
		return 0;
	case 2:
		rc->keys_len = get_be32(a);
		if (rc->keys_len != rb->keys_len) {
			*why = "keys announced with another length";
			return -1;
		}
		rc->step = 3;
		return 0;
	case 3:
		if (memcmp(a, rb->keys, rb->keys_len) != 0) {
			*why = "keys announced differ from the producer's";
			return -1;
		}
		rc->step = 4;
		if (tx_set(rc, 0, NULL, 0) < 0)
			return -1;
		return 0;
	}
	return 0;
}

static void
rconn_connect(struct rpair *p, struct rconn *rc)
{
	struct relay_bench *rb = p->rb;
	const struct bench_opts *o = rb->o;

	rc->pair = p;
	rc->step = 0;
	rc->in_len = 0;
	if (bconn_start(&rc->bc, rb->loop, (struct sockaddr *)&rb->addr,
	    rb->addrlen, rb->ctx, o->host, o->sni, rconn_cb, rc) < 0) {
		pair_fail(p, rc, rc->bc.err);
		return;
	}
	rc->state = RC_CONNECT;
	if (tx_set(rc, rc->producer ? 0x0a : 0x0b, NULL, 0) < 0)
		pair_fail(p, rc, "out of memory");
}

static void pair_ready(struct rpair *p);

/* Sends, then collects the answer, until the registration is done. */
static void
reg_io(struct rconn *rc)
{
	struct rpair *p = rc->pair;
	const char *why = NULL;
	enum bres r;
	size_t n;

	for (;;) {
		if (rc->tx_off < rc->tx_len) {
			r = bconn_write(&rc->bc, rc->tx + rc->tx_off,
			    rc->tx_len - rc->tx_off, &n);
			if (r == B_DONE) {
				rc->tx_off += n;
				continue;
			}
			goto io_result;
		}
		if (!rc->producer && rc->step == 4) {
			rc->state = RC_READY;
			break;
		}
		if (rc->state == RC_READY)
			break;
		size_t need = reg_need(rc);
		if (rc->in_len >= need) {
			if (reg_answer(rc, rc->in, &why) < 0) {
				pair_fail(p, rc, why ? why : "out of memory");
				return;
			}
			memmove(rc->in, rc->in + need, rc->in_len - need);
			rc->in_len -= need;
			continue;
		}
		if (need > rc->in_cap) {
			pair_fail(p, rc, "keys longer than the read buffer");
			return;
		}
		r = bconn_read(&rc->bc, rc->in + rc->in_len,
		    rc->in_cap - rc->in_len, &n);
		if (r == B_DONE) {
			rc->in_len += n;
			continue;
		}
		goto io_result;
	}
	free(rc->tx);
	rc->tx = NULL;
	rc->tx_len = rc->tx_off = 0;
	/*
	 * A ready consumer listens (frames, or the server closing).  Reading
	 * goes first when both are due: the generator drains what the server
	 * relayed before it makes more, so its own queues stay short.
	 */
	bconn_set_priority(&rc->bc, rc->producer ? EV_MINPRI : EV_MAXPRI);
	bconn_want(&rc->bc, rc->producer ? 0 : EV_READ);
	if (rc->producer)
		rconn_connect(p, &p->cons);
	else
		pair_ready(p);
	return;
io_result:
	if (r == B_WANT_READ || r == B_WANT_WRITE) {
		bconn_want_res(&rc->bc, r);
		return;
	}
	pair_fail(p, rc, r == B_EOF ? "server closed the connection" :
	    rc->bc.err);
}

/* ---- frames ---- */

static void
frame_make(struct relay_bench *rb, struct rpair *p, char *f, uint64_t now)
{
	memcpy(f, rb->templ, rb->fsize);
	put_le32(f, (uint32_t)now);
	put_le32(f + 4, (uint32_t)(now >> 32));
	put_le32(f + 8, p->seq++);
}

static void
prod_fill_batch(struct relay_bench *rb, struct rpair *p)
{
	uint64_t now = bench_now_ns();
	size_t n = p->out_cap / rb->fsize;

	/* One clock read for the batch: its frames leave in one write. */
	for (size_t i = 0; i < n; i++)
		frame_make(rb, p, p->out + i * rb->fsize, now);
	p->out_off = 0;
	p->out_len = n * rb->fsize;
	if (rb->measuring)
		rb->sent_window += n;
}

static void
prod_pump(struct rpair *p)
{
	struct relay_bench *rb = p->rb;
	struct rconn *rc = &p->prod;
	enum bres r;
	size_t n, len;
	int batches = 0;

	if (rc->state != RC_READY)
		return;
	for (;;) {
		if (p->out_off == p->out_len) {
			p->out_off = p->out_len = 0;
			if (rb->o->rate > 0 || rb->stopping) {
				bconn_want(&rc->bc, 0);
				return;
			}
			/* Its turn is over; the socket stays armed. */
			if (batches++ == RELAY_BATCHES) {
				bconn_want(&rc->bc, EV_WRITE);
				return;
			}
			prod_fill_batch(rb, p);
		}
		len = p->retry ? p->retry : p->out_len - p->out_off;
		r = bconn_write(&rc->bc, p->out + p->out_off, len, &n);
		if (r == B_DONE) {
			p->retry = 0;
			p->out_off += n;
			continue;
		}
		if (r == B_WANT_READ || r == B_WANT_WRITE) {
			p->retry = len;
			bconn_want_res(&rc->bc, r);
			return;
		}
		pair_fail(p, rc, r == B_EOF ? "server closed the producer" :
		    rc->bc.err);
		return;
	}
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct rpair *p = w->data;
	struct relay_bench *rb = p->rb;

	(void)revents;
	if (rb->stopping || p->prod.state != RC_READY) {
		ev_timer_stop(loop, w);
		return;
	}
	if (p->out_len + rb->fsize > p->out_cap && p->out_off > 0 &&
	    p->retry == 0) {
		memmove(p->out, p->out + p->out_off, p->out_len - p->out_off);
		p->out_len -= p->out_off;
		p->out_off = 0;
	}
	if (p->out_len + rb->fsize > p->out_cap) {
		p->skipped++;
		return;
	}
	frame_make(rb, p, p->out + p->out_len, bench_now_ns());
	p->out_len += rb->fsize;
	if (rb->measuring)
		rb->sent_window++;
	if (p->retry == 0)
		prod_pump(p);
}

static void
cons_frames(struct relay_bench *rb, struct rpair *p, const char *f,
    size_t n, uint64_t now)
{
	for (size_t i = 0; i < n; i++, f += rb->fsize) {
		uint64_t sent = (uint64_t)get_le32(f) |
		    (uint64_t)get_le32(f + 4) << 32;
		uint32_t seq = get_le32(f + 8);

		if (!p->synced) {
			p->synced = true;
			p->next = seq + 1;
		} else if (seq == p->next) {
			p->next++;
		} else if ((int32_t)(seq - p->next) > 0) {
			p->lost += seq - p->next;
			p->next = seq + 1;
		} else {
			p->reordered++;
			if (p->lost > 0)
				p->lost--;
		}
		p->received++;
		if (rb->measuring) {
			rb->frames++;
			hist_add(&rb->hist, now > sent ? now - sent : 0);
		}
	}
	rb->sec_frames += n;
}

static void
cons_read(struct rpair *p)
{
	struct relay_bench *rb = p->rb;
	struct rconn *rc = &p->cons;
	enum bres r = B_DONE;
	size_t n;
	int i;

	for (i = 0; i < RELAY_READS; i++) {
		size_t room = rc->in_cap - rc->in_len;

		r = bconn_read(&rc->bc, rc->in + rc->in_len, room, &n);
		if (r != B_DONE)
			break;
		rc->in_len += n;
		size_t whole = rc->in_len / rb->fsize;
		if (whole > 0) {
			cons_frames(rb, p, rc->in, whole, bench_now_ns());
			size_t used = whole * rb->fsize;
			memmove(rc->in, rc->in + used, rc->in_len - used);
			rc->in_len -= used;
		}
		/*
		 * A short plain read emptied the socket, and a TLS connection
		 * reading ahead with nothing left in OpenSSL took what the
		 * socket had: asking again would only hear EAGAIN, a syscall
		 * per frame at low rates.  epoll says when there is more.
		 */
		if (rc->bc.ssl == NULL ? n < room : !bconn_pending(&rc->bc)) {
			r = B_WANT_READ;
			break;
		}
	}
	if (r == B_WANT_READ || r == B_WANT_WRITE) {
		bconn_want_res(&rc->bc, r);
		return;
	}
	if (r == B_DONE) {
		/* Out of turns: come back for what OpenSSL already holds. */
		if (bconn_pending(&rc->bc))
			ev_feed_event(rb->loop, &rc->bc.io, EV_READ);
		return;
	}
	pair_fail(p, rc, r == B_EOF ? "server closed the consumer" :
	    rc->bc.err);
}

/* ---- connections and pairs ---- */

static void
rconn_cb(struct bconn *c, int revents)
{
	struct rconn *rc = c->owner;
	struct rpair *p = rc->pair;
	enum bres r;

	(void)revents;
	switch (rc->state) {
	case RC_CONNECT:
		r = bconn_establish(c);
		if (r == B_WANT_READ || r == B_WANT_WRITE) {
			bconn_want_res(c, r);
			return;
		}
		if (r != B_DONE) {
			pair_fail(p, rc, c->err);
			return;
		}
		rc->state = RC_REG;
		reg_io(rc);
		return;
	case RC_REG:
		reg_io(rc);
		return;
	case RC_READY:
		if (rc->producer)
			prod_pump(p);
		else
			cons_read(p);
		return;
	default:
		bconn_want(c, 0);
		return;
	}
}

static void setup_more(struct relay_bench *rb);
static void run_start(struct relay_bench *rb);

static void
pair_ready(struct rpair *p)
{
	struct relay_bench *rb = p->rb;

	rb->setting_up--;
	rb->ready++;
	if (rb->ready == rb->npairs)
		run_start(rb);
	else
		setup_more(rb);
}

static void
pair_fail(struct rpair *p, struct rconn *rc, const char *what)
{
	struct relay_bench *rb = p->rb;
	bool was_setup = p->prod.state != RC_READY || p->cons.state != RC_READY;

	if (rc->state == RC_DEAD)
		return;
	if (rb->errors++ < 10)
		fprintf(stderr, "ferry-bench: pair %d %s: %s\n", p->idx,
		    rc->producer ? "producer" : "consumer", what);
	rc->state = RC_DEAD;
	bconn_close(&rc->bc);
	if (ev_is_active(&p->tick))
		ev_timer_stop(rb->loop, &p->tick);
	if (!rb->running && was_setup) {
		/* A pair that cannot register spoils the whole run. */
		rb->failed = true;
		ev_break(rb->loop, EVBREAK_ALL);
	}
}

static void
setup_more(struct relay_bench *rb)
{
	while (rb->next_pair < rb->npairs &&
	    rb->setting_up < rb->o->parallel && !rb->failed) {
		struct rpair *p = &rb->pairs[rb->next_pair++];

		rb->setting_up++;
		rconn_connect(p, &p->prod);
	}
}

static void
progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct relay_bench *rb = w->data;
	uint64_t lost = 0;

	(void)loop;
	(void)revents;
	for (int i = 0; i < rb->npairs; i++)
		lost += rb->pairs[i].lost;
	printf("relay: %6.1f s  %9" PRIu64 " frames/s  p99 %8.1f us  "
	    "lost %" PRIu64 "%s\n",
	    (double)(bench_now_ns() - rb->t_start) / 1e9, rb->sec_frames,
	    (double)hist_quantile(&rb->hist, 0.99) / 1e3, lost,
	    rb->measuring ? "" : rb->stopping ? "  (draining)" :
	    "  (warm-up)");
	fflush(stdout);
	rb->sec_frames = 0;
}

static bool
drained(struct relay_bench *rb)
{
	for (int i = 0; i < rb->npairs; i++) {
		struct rpair *p = &rb->pairs[i];

		if (p->prod.state != RC_READY || p->cons.state != RC_READY)
			continue;
		if (p->out_off < p->out_len || p->next != p->seq)
			return false;
	}
	return true;
}

/* Phases: 0 setup deadline, 1 warm-up over, 2 window over, 3 draining. */
static void
phase_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct relay_bench *rb = w->data;
	const struct bench_opts *o = rb->o;

	(void)revents;
	switch (rb->phase_no) {
	case 0:
		fprintf(stderr, "ferry-bench: setup: %d of %d pairs ready "
		    "after %.0f s\n", rb->ready, rb->npairs, o->timeout);
		rb->failed = true;
		ev_break(loop, EVBREAK_ALL);
		return;
	case 1:
		rb->measuring = true;
		rb->t_window = bench_now_ns();
		rb->phase_no = 2;
		ev_timer_set(w, o->duration, 0.);
		ev_timer_start(loop, w);
		return;
	case 2:
		rb->measuring = false;
		rb->stopping = true;
		rb->t_end = bench_now_ns();
		rb->phase_no = 3;
		for (int i = 0; i < rb->npairs; i++)
			if (ev_is_active(&rb->pairs[i].tick))
				ev_timer_stop(loop, &rb->pairs[i].tick);
		ev_timer_set(w, 0.01, 0.01);
		ev_timer_start(loop, w);
		return;
	default:
		if (drained(rb) || (double)(bench_now_ns() - rb->t_end) / 1e9 >
		    RELAY_DRAIN)
			ev_break(loop, EVBREAK_ALL);
		return;
	}
}

static void
run_start(struct relay_bench *rb)
{
	const struct bench_opts *o = rb->o;

	ev_timer_stop(rb->loop, &rb->phase);
	rb->running = true;
	rb->t_start = bench_now_ns();
	for (int i = 0; i < rb->npairs; i++) {
		struct rpair *p = &rb->pairs[i];

		if (o->rate > 0) {
			double period = 1.0 / o->rate;
			/* Spread over one period, not all at once. */
			double first = period * (double)i / (double)rb->npairs;
			ev_timer_init(&p->tick, tick_cb, first, period);
			p->tick.data = p;
			ev_timer_start(rb->loop, &p->tick);
		} else {
			prod_pump(p);
		}
	}
	if (o->warmup > 0) {
		rb->phase_no = 1;
		ev_timer_set(&rb->phase, o->warmup, 0.);
	} else {
		rb->measuring = true;
		rb->t_window = rb->t_start;
		rb->phase_no = 2;
		ev_timer_set(&rb->phase, o->duration, 0.);
	}
	ev_timer_start(rb->loop, &rb->phase);
	if (o->progress) {
		ev_timer_init(&rb->progress, progress_cb, 1., 1.);
		rb->progress.data = rb;
		ev_timer_start(rb->loop, &rb->progress);
	}
}

/* A producer's user-space queue: one batch, or a few paced frames. */
static size_t
out_capacity(const struct bench_opts *o, size_t fsize)
{
	size_t frames;

	if (o->rate <= 0)
		return (RELAY_BATCH / fsize + 1) * fsize;
	frames = RELAY_RATE_QB / fsize;
	if (frames > RELAY_RATE_Q)
		frames = RELAY_RATE_Q;
	return (frames > 0 ? frames : 1) * fsize;
}

static int
relay_init(struct relay_bench *rb, const struct bench_opts *o)
{
	size_t cap;

	memset(rb, 0, sizeof(*rb));
	rb->o = o;
	rb->loop = ev_default_loop(0);
	if (rb->loop == NULL) {
		fprintf(stderr, "ferry-bench: no event loop\n");
		return -1;
	}
	if (bench_resolve(o, &rb->addr, &rb->addrlen) < 0)
		return -1;
	if (o->tls && (rb->ctx = bench_client_ctx(o)) == NULL)
		return -1;
	rb->fsize = 4 * (size_t)o->keys;
	rb->keys = malloc((size_t)o->keys * 8 + 1);
	rb->templ = malloc(rb->fsize);
	rb->pairs = calloc((size_t)o->pairs, sizeof(*rb->pairs));
	if (rb->keys == NULL || rb->templ == NULL || rb->pairs == NULL)
		return -1;
	for (int k = 0; k < o->keys; k++) {
		rb->keys_len += (size_t)sprintf(rb->keys + rb->keys_len,
		    "%sk%d", k ? "," : "", k);
		float v = (float)k / (float)o->keys;
		uint32_t bits;
		memcpy(&bits, &v, sizeof(bits));
		put_le32(rb->templ + 4 * k, bits);
	}
	rb->npairs = o->pairs;
	cap = out_capacity(o, rb->fsize);
	for (int i = 0; i < rb->npairs; i++) {
		struct rpair *p = &rb->pairs[i];

		p->rb = rb;
		p->idx = i;
		snprintf(p->uuid, sizeof(p->uuid), "bench-%ld-%d",
		    (long)getpid(), i);
		p->prod.producer = true;
		p->prod.bc.fd = p->cons.bc.fd = -1;
		p->out_cap = cap;
		p->out = malloc(cap);
		p->prod.in_cap = 64;
		p->prod.in = malloc(p->prod.in_cap);
		p->cons.in_cap = (RELAY_IN_CAP / rb->fsize + 1) * rb->fsize;
		if (p->cons.in_cap < rb->keys_len + 8)
			p->cons.in_cap = rb->keys_len + 8;
		p->cons.in = malloc(p->cons.in_cap);
		if (p->out == NULL || p->prod.in == NULL || p->cons.in == NULL)
			return -1;
	}
	ev_timer_init(&rb->phase, phase_cb, o->timeout, 0.);
	rb->phase.data = rb;
	return 0;
}

static void
relay_free(struct relay_bench *rb)
{
	if (rb->pairs != NULL) {
		for (int i = 0; i < rb->npairs; i++) {
			struct rpair *p = &rb->pairs[i];

			if (ev_is_active(&p->tick))
				ev_timer_stop(rb->loop, &p->tick);
			bconn_close(&p->prod.bc);
			bconn_close(&p->cons.bc);
			free(p->out);
			free(p->prod.in);
			free(p->cons.in);
			free(p->prod.tx);
			free(p->cons.tx);
		}
	}
	if (rb->loop != NULL) {
		ev_timer_stop(rb->loop, &rb->phase);
		ev_timer_stop(rb->loop, &rb->progress);
	}
	free(rb->pairs);
	free(rb->keys);
	free(rb->templ);
	SSL_CTX_free(rb->ctx);
}

static void
relay_report(struct relay_bench *rb)
{
	const struct bench_opts *o = rb->o;
	uint64_t lost = 0, reordered = 0, skipped = 0, undelivered = 0;
	double secs = (double)(rb->t_end - rb->t_window) / 1e9;

	for (int i = 0; i < rb->npairs; i++) {
		struct rpair *p = &rb->pairs[i];

		int32_t tail = (int32_t)(p->seq - p->next);

		lost += p->lost;
		if (tail > 0)
			undelivered += (uint64_t)tail;
		reordered += p->reordered;
		skipped += p->skipped;
	}
	if (secs <= 0)
		secs = 1e-9;
	printf("RESULT mode=relay p=%d k=%d tls=%d rate=%g duration=%.3f "
	    "frames=%" PRIu64 " frames_per_s=%.0f mb_per_s=%.2f "
	    "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
	    "sent=%" PRIu64 " lost=%" PRIu64 " reordered=%" PRIu64
	    " undelivered=%" PRIu64 " skipped=%" PRIu64 " errors=%" PRIu64
	    "\n",
	    o->pairs, o->keys, o->tls ? 1 : 0, o->rate, secs, rb->frames,
	    (double)rb->frames / secs,
	    (double)rb->frames * (double)rb->fsize / secs / 1e6,
	    (double)hist_quantile(&rb->hist, 0.50) / 1e3,
	    (double)hist_quantile(&rb->hist, 0.99) / 1e3,
	    (double)hist_quantile(&rb->hist, 0.999) / 1e3,
	    (double)rb->hist.max / 1e3, rb->sent_window, lost, reordered,
	    undelivered, skipped, rb->errors);
	fflush(stdout);
}

int
bench_relay(const struct bench_opts *o)
{
	struct relay_bench *rb = malloc(sizeof(*rb));
	int status = 1;

	if (rb == NULL || relay_init(rb, o) < 0) {
		fprintf(stderr, "ferry-bench: relay: cannot start (%s)\n",
		    errno ? strerror(errno) : "bad arguments");
		goto out;
	}
	ev_timer_start(rb->loop, &rb->phase);
	setup_more(rb);
	if (!rb->failed)
		ev_run(rb->loop, 0);
	if (rb->failed) {
		fprintf(stderr, "ferry-bench: relay: setup failed\n");
		goto out;
	}
	relay_report(rb);
	status = rb->errors > 0 ? 2 : 0;
out:
	if (rb != NULL)
		relay_free(rb);
	free(rb);
	return status;
}
