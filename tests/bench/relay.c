/*
 * relay: P producer/consumer pairs over the relay protocol, version 1
 * (relay_proto.h names every byte of it).
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
 * so what is measured is the server.  With --rate the producers are paced
 * on one schedule, spread evenly over the period (see pace_run), and each
 * frame is stamped as it is written.
 *
 * What the instrument itself costs is reported with the result: how busy
 * its loop was, how long it waited for a CPU (schedstat), the rate it
 * actually sent and how late it ran; and, for plain connections, the
 * latency to the frame's arrival in the consumer's socket (the kernel's
 * receive stamp), which leaves out the time this process took to read it.
 * --trace writes every frame's times for a closer look.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "relay_proto.h"

#define OTHER_MAX 8

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RELAY_IN_CAP	(64 * 1024)
#define RELAY_BATCH	(16 * 1024)	/* bytes a full-speed producer makes */
#define RELAY_RATE_Q	64		/* frames a paced producer may queue */
#define RELAY_RATE_QB	(256 * 1024)	/* ... in at most this many bytes */
#define RELAY_READS	16		/* reads per readiness event */
#define RELAY_BATCHES	4		/* fresh batches per writable event */
#define RELAY_DRAIN	5.0		/* seconds to wait for frames in flight */
#define RELAY_TRACE_MAX	(4u << 20)	/* frames --trace keeps at most */
#define PACE_BATCH	16		/* paced frames written per iteration */
#define PACE_QUANTUM	100000		/* ns: least time between wake-ups */

/* One frame received in the window, for --trace. */
struct trec {
	uint64_t recv;			/* the consumer read it (monotonic ns) */
	uint64_t sent;			/* the producer stamped it */
	uint64_t due;			/* the pacing schedule wanted it; 0 */
	uint64_t krx;			/* it reached the consumer's socket; 0 */
	uint64_t wake;			/* the loop woke for the read */
	uint32_t pair, seq;
};

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
	struct sockaddr_storage caddr;	/* consumers' (--consumer-port) */
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
	struct hist hist;		/* send to the consumer's read */
	struct hist hist_srv;		/* send to the consumer's socket */
	uint64_t sec_frames;		/* progress */

	ev_timer phase;			/* setup deadline, warm-up, window, drain */
	ev_timer progress;
	int phase_no;

	/* The generator's own loop: is the instrument keeping up? */
	ev_check woke;
	ev_prepare sleeps;
	uint64_t wake_ns;		/* this iteration's wake-up */
	uint64_t busy_ns;		/* window time spent in callbacks */
	uint64_t iters;			/* loop iterations in the window */
	uint64_t sched_self[2][2];	/* window start, end: on CPU, waiting */
	uint64_t sched_srv[2][2];	/* the same for --server-pid */
	uint64_t cpu_other[2][OTHER_MAX];	/* --other-pids, every thread */

	/* --rate: the pacer */
	int pace_fd;			/* timerfd */
	ev_io pace_io;
	ev_idle pace_idle;		/* frames still due after a batch */
	int pace_pair;			/* next frame due: this pair's */
	uint64_t pace_round;		/* ... of this round */
	uint64_t behind_max;		/* most a frame went out after its time */

	/* --trace */
	struct trec *trace;
	size_t ntrace;
	uint64_t trace_over;		/* frames past RELAY_TRACE_MAX */
	int64_t rt_off;			/* CLOCK_REALTIME - CLOCK_MONOTONIC */
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

/* ---- registration ---- */

static int
tx_set(struct rconn *rc, int role_or_len, const char *body, size_t len)
{
	size_t need = body != NULL ? RELAY_LEN_SIZE + len : 1;

	free(rc->tx);
	rc->tx = malloc(need);
	if (rc->tx == NULL)
		return -1;
	if (body != NULL) {
		relay_len_put((uint8_t *)rc->tx, (uint32_t)len);
		memcpy(rc->tx + RELAY_LEN_SIZE, body, len);
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
	case 2: return RELAY_LEN_SIZE;
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
		if (a[0] != RELAY_OK) {
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
		if (a[0] != RELAY_OK) {
			*why = "server refused the consumer";
			return -1;
		}
		rc->step = 1;
		return tx_set(rc, 0, p->uuid, strlen(p->uuid));
	case 1:
		if (a[0] != RELAY_OK) {
			*why = "uuid unknown to the server (0x01)";
			return -1;
		}
		rc->step = 2;
		return 0;
	case 2:
		rc->keys_len = relay_len_get((const uint8_t *)a);
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
		if (tx_set(rc, RELAY_ACCEPT, NULL, 0) < 0)
			return -1;
		return 0;
	}
	return 0;
}

/*
 * --ws: a consumer is a WebSocket client.  Its request (a fixed key: the
 * server's answer is not checked beyond its status), then the 101's head;
 * what follows it (the keys as JSON, then frames) is read as messages.
 */
static int
ws_request(struct rconn *rc)
{
	char req[512];
	int n = snprintf(req, sizeof(req), "GET /v1/consume/%s HTTP/1.1\r\n"
	    "Host: ferry\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	    "Sec-WebSocket-Version: 13\r\n\r\n", rc->pair->uuid);

	free(rc->tx);
	if ((rc->tx = malloc((size_t)n)) == NULL)
		return -1;
	memcpy(rc->tx, req, (size_t)n);
	rc->tx_len = (size_t)n;
	rc->tx_off = 0;
	rc->step = 10;
	return 0;
}

/* The 101's head, once whole: consumed; 1 when done, -1 when refused. */
static int
ws_answer(struct rconn *rc, const char **why)
{
	const char *end = memmem(rc->in, rc->in_len, "\r\n\r\n", 4);
	size_t used;

	if (end == NULL)
		return 0;
	if (rc->in_len < 12 || memcmp(rc->in + 9, "101", 3) != 0) {
		*why = "WebSocket upgrade refused";
		return -1;
	}
	used = (size_t)(end + 4 - rc->in);
	memmove(rc->in, rc->in + used, rc->in_len - used);
	rc->in_len -= used;
	rc->step = 4;
	return 1;
}

static void
rconn_connect(struct rpair *p, struct rconn *rc)
{
	struct relay_bench *rb = p->rb;
	const struct bench_opts *o = rb->o;

	rc->pair = p;
	rc->step = 0;
	rc->in_len = 0;
	if (bconn_start(&rc->bc, rb->loop, (struct sockaddr *)(rc->producer ?
	    &rb->addr : &rb->caddr), rb->addrlen, rb->ctx, o->host, o->sni, rconn_cb, rc) < 0) {
		pair_fail(p, rc, rc->bc.err);
		return;
	}
	rc->state = RC_CONNECT;
	if (!rc->producer && o->ws) {
		if (ws_request(rc) < 0)
			pair_fail(p, rc, "out of memory");
		return;
	}
	if (tx_set(rc, rc->producer ? RELAY_PRODUCER : RELAY_CONSUMER, NULL,
	    0) < 0)
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
		if (rc->step == 10) {
			int a = ws_answer(rc, &why);
			if (a < 0) {
				pair_fail(p, rc, why);
				return;
			}
			if (a > 0)
				continue;
			if (rc->in_len == rc->in_cap) {
				pair_fail(p, rc, "101 head too long");
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
	if (!rc->producer && rc->bc.ssl == NULL &&
	    bconn_enable_rx_stamps(&rc->bc) < 0) {
		pair_fail(p, rc, rc->bc.err);
		return;
	}
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

/* Slots 3 and 4 (when K > 4) carry the time the schedule wanted. */
static void
frame_make(struct relay_bench *rb, struct rpair *p, char *f, uint64_t now,
    uint64_t due)
{
	memcpy(f, rb->templ, rb->fsize);
	put_le32(f, (uint32_t)now);
	put_le32(f + 4, (uint32_t)(now >> 32));
	put_le32(f + 8, p->seq++);
	if (rb->fsize >= 20) {
		put_le32(f + 12, (uint32_t)due);
		put_le32(f + 16, (uint32_t)(due >> 32));
	}
}

static void
prod_fill_batch(struct relay_bench *rb, struct rpair *p)
{
	uint64_t now = bench_now_ns();
	size_t n = p->out_cap / rb->fsize;

	/* One clock read for the batch: its frames leave in one write. */
	for (size_t i = 0; i < n; i++)
		frame_make(rb, p, p->out + i * rb->fsize, now, 0);
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

/* --rate: queues one frame due at `due` and writes it if it can. */
static void
pair_tick(struct relay_bench *rb, struct rpair *p, uint64_t due)
{
	uint64_t now;

	if (p->prod.state != RC_READY)
		return;
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
	/* Stamped as it is written, not when it fell due. */
	now = bench_now_ns();
	frame_make(rb, p, p->out + p->out_len, now, due);
	p->out_len += rb->fsize;
	/*
	 * Counted by when it fell due: frames owed from before the window
	 * and sent in it do not make up for the window's, so a generator
	 * that falls behind shows as a rate below the one asked for.
	 */
	if (rb->measuring && due >= rb->t_window) {
		rb->sent_window++;
		if (now - due > rb->behind_max)
			rb->behind_max = now - due;
	}
	if (p->retry == 0)
		prod_pump(p);
}

/* When the next frame of the schedule is due: pair `pace_pair`, round k. */
static uint64_t
pace_due(const struct relay_bench *rb)
{
	double k = (double)rb->pace_round +
	    (double)rb->pace_pair / (double)rb->npairs;

	return rb->t_start + (uint64_t)(k * 1e9 / rb->o->rate);
}

/*
 * The pacer: every producer's frames fall due on one schedule, pair i of
 * P at t0 + (k + i/P) / rate, and one periodic timerfd (nanosecond
 * resolution) wakes the loop for them, at each due time or every
 * PACE_QUANTUM, whichever is longer.  libev's own timers wake the loop
 * through epoll_wait's whole milliseconds: every frame due within a
 * millisecond went out in one burst at its end (60 at once at 1000 pairs
 * x 60 Hz), and the last of a burst waited in the server for the others,
 * which is the generator's doing, not the server's.  One periodic timer
 * also costs no syscall to re-arm (timerfd_settime cost ~10 us here).
 *
 * At most PACE_BATCH frames are written per loop iteration; what is still
 * due waits for an idle turn, so the consumers (at a higher priority) are
 * read first.  A late loop writes every frame it owes, late, rather than
 * skip any as libev's repeating timers do: the rate asked for is the rate
 * sent, or the report says by how much it was not.
 */
static void
pace_run(struct relay_bench *rb)
{
	uint64_t now = bench_now_ns(), due;
	int n;

	for (n = 0; n < PACE_BATCH && (due = pace_due(rb)) <= now; n++) {
		pair_tick(rb, &rb->pairs[rb->pace_pair], due);
		if (++rb->pace_pair == rb->npairs) {
			rb->pace_pair = 0;
			rb->pace_round++;
		}
	}
	if (n == PACE_BATCH && pace_due(rb) <= now)
		ev_idle_start(rb->loop, &rb->pace_idle);
	else
		ev_idle_stop(rb->loop, &rb->pace_idle);
}

static void
pace_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct relay_bench *rb = w->data;
	uint64_t expirations;

	(void)loop;
	(void)revents;
	if (read(rb->pace_fd, &expirations, sizeof(expirations)) < 0 &&
	    errno != EAGAIN) {
		fprintf(stderr, "ferry-bench: timerfd: %s\n", strerror(errno));
		rb->failed = true;
		ev_break(rb->loop, EVBREAK_ALL);
		return;
	}
	if (!rb->stopping)
		pace_run(rb);
}

static void
pace_idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	(void)loop;
	(void)revents;
	pace_run(w->data);
}

/* 0, or -1 with a message. */
static int
pace_start(struct relay_bench *rb)
{
	uint64_t every = (uint64_t)ceil(1e9 / rb->o->rate /
	    (double)rb->npairs);
	struct itimerspec its;

	if (every < PACE_QUANTUM)
		every = PACE_QUANTUM;
	its.it_value.tv_sec = (time_t)(rb->t_start / 1000000000u);
	its.it_value.tv_nsec = (long)(rb->t_start % 1000000000u);
	its.it_interval.tv_sec = (time_t)(every / 1000000000u);
	its.it_interval.tv_nsec = (long)(every % 1000000000u);
	if (timerfd_settime(rb->pace_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		fprintf(stderr, "ferry-bench: timerfd_settime: %s\n",
		    strerror(errno));
		return -1;
	}
	ev_io_start(rb->loop, &rb->pace_io);
	return 0;
}

static void
pace_stop(struct relay_bench *rb)
{
	if (rb->loop == NULL || rb->pace_fd < 0)
		return;
	ev_io_stop(rb->loop, &rb->pace_io);
	ev_idle_stop(rb->loop, &rb->pace_idle);
}

static void
trace_add(struct relay_bench *rb, struct rpair *p, const char *f,
    uint64_t now, uint64_t sent, uint64_t krx)
{
	struct trec *t;

	if (rb->ntrace == RELAY_TRACE_MAX) {
		rb->trace_over++;
		return;
	}
	t = &rb->trace[rb->ntrace++];
	t->recv = now;
	t->sent = sent;
	t->due = rb->fsize >= 20 ? ((uint64_t)get_le32(f + 12) |
	    (uint64_t)get_le32(f + 16) << 32) : 0;
	t->krx = krx;
	t->wake = rb->wake_ns;
	t->pair = (uint32_t)p->idx;
	t->seq = get_le32(f + 8);
}

/* krx: when the last of these bytes reached the socket (monotonic); 0. */
static void
cons_frames(struct relay_bench *rb, struct rpair *p, const char *f,
    size_t n, uint64_t now, uint64_t krx)
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
			if (krx != 0)
				hist_add(&rb->hist_srv, krx > sent ?
				    krx - sent : 0);
			if (rb->trace != NULL)
				trace_add(rb, p, f, now, sent, krx);
		}
	}
	rb->sec_frames += n;
}

/* Bare frames: the whole ones; the bytes used. */
static size_t
cons_whole(struct relay_bench *rb, struct rpair *p, const char *in,
    size_t len, uint64_t krx)
{
	size_t whole = len / rb->fsize;

	if (whole > 0)
		cons_frames(rb, p, in, whole, bench_now_ns(), krx);
	return whole * rb->fsize;
}

/*
 * WebSocket messages (server frames: unmasked, unfragmented): binary ones
 * are frames, the text one (the keys) is skipped.  The bytes used.
 */
static size_t
ws_frames(struct relay_bench *rb, struct rpair *p, const char *in,
    size_t len, uint64_t krx)
{
	const unsigned char *u = (const unsigned char *)in;
	uint64_t now = bench_now_ns();
	size_t off = 0;

	while (len - off >= 2) {
		size_t hl = 2, plen = u[off + 1] & 0x7f;
		if (plen == 126) {
			if (len - off < 4)
				break;
			plen = (size_t)u[off + 2] << 8 | u[off + 3];
			hl = 4;
		} else if (plen == 127) {
			if (len - off < 10)
				break;
			plen = 0;
			for (int i = 0; i < 8; i++)
				plen = plen << 8 | u[off + 2 + i];
			hl = 10;
		}
		if (len - off < hl + plen)
			break;
		if ((u[off] & 0x0f) == 2 && plen == rb->fsize)
			cons_frames(rb, p, in + off + hl, 1, now, krx);
		off += hl + plen;
	}
	return off;
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
		uint64_t krx = 0;

		r = bconn_read_stamped(&rc->bc, rc->in + rc->in_len, room, &n,
		    &krx);
		if (krx != 0)
			krx = (uint64_t)((int64_t)krx - rb->rt_off);
		if (r != B_DONE)
			break;
		rc->in_len += n;
		size_t used = rb->o->ws ? ws_frames(rb, p, rc->in, rc->in_len,
		    krx) : cons_whole(rb, p, rc->in, rc->in_len, krx);
		if (used > 0) {
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

/*
 * From schedstat (ns): time on a CPU and time runnable but waiting for
 * one, of this process (pid 0) or another; zeros when unreadable.
 */
static void
sched_times(int pid, uint64_t t[2])
{
	char path[64];
	unsigned long long run, wait;
	FILE *f;
	int n;

	if (pid > 0)
		snprintf(path, sizeof(path), "/proc/%d/schedstat", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/schedstat");
	t[0] = t[1] = 0;
	if ((f = fopen(path, "r")) == NULL)
		return;
	n = fscanf(f, "%llu %llu", &run, &wait);
	fclose(f);
	if (n == 2) {
		t[0] = (uint64_t)run;
		t[1] = (uint64_t)wait;
	}
}

/* CPU time (ns) of every thread of one process. */
static uint64_t
cpu_of_pid(long pid)
{
	char path[96], tp[400];
	unsigned long long run;
	uint64_t sum = 0;
	struct dirent *de;
	FILE *f;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(tp, sizeof(tp), "%s/%s/schedstat", path, de->d_name);
		if ((f = fopen(tp, "r")) == NULL)
			continue;
		if (fscanf(f, "%llu", &run) == 1)
			sum += run;
		fclose(f);
	}
	closedir(d);
	return sum;
}

/* Each process of a "pid,pid" list (OTHER_MAX at most). */
static void
cpu_of_pids(const char *list, uint64_t *out)
{
	const char *p = list;

	for (int i = 0; i < OTHER_MAX && p != NULL && *p; i++) {
		out[i] = cpu_of_pid(strtol(p, NULL, 10));
		if ((p = strchr(p, ',')) != NULL)
			p++;
	}
}

static void
sample_sched(struct relay_bench *rb, int at)
{
	sched_times(0, rb->sched_self[at]);
	if (rb->o->other_pids != NULL)
		cpu_of_pids(rb->o->other_pids, rb->cpu_other[at]);
	if (rb->o->server_pid > 0)
		sched_times(rb->o->server_pid, rb->sched_srv[at]);
}

/* First of an iteration's callbacks (checks are queued last, run first). */
static void
woke_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	struct relay_bench *rb = w->data;

	(void)loop;
	(void)revents;
	rb->wake_ns = bench_now_ns();
}

/* Last thing before the loop sleeps: the iteration's work is done. */
static void
sleeps_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct relay_bench *rb = w->data;

	(void)loop;
	(void)revents;
	if (rb->measuring && rb->wake_ns != 0) {
		rb->busy_ns += bench_now_ns() - rb->wake_ns;
		rb->iters++;
	}
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
		sample_sched(rb, 0);
		rb->phase_no = 2;
		ev_timer_set(w, o->duration, 0.);
		ev_timer_start(loop, w);
		return;
	case 2:
		rb->measuring = false;
		rb->stopping = true;
		rb->t_end = bench_now_ns();
		sample_sched(rb, 1);
		rb->phase_no = 3;
		pace_stop(rb);
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
	if (o->rate > 0) {
		/* Spread over one period, not all at once. */
		if (pace_start(rb) < 0) {
			rb->failed = true;
			ev_break(rb->loop, EVBREAK_ALL);
			return;
		}
	} else {
		for (int i = 0; i < rb->npairs; i++)
			prod_pump(&rb->pairs[i]);
	}
	if (o->warmup > 0) {
		rb->phase_no = 1;
		ev_timer_set(&rb->phase, o->warmup, 0.);
	} else {
		rb->measuring = true;
		rb->t_window = rb->t_start;
		sample_sched(rb, 0);
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

/* CLOCK_REALTIME - CLOCK_MONOTONIC (ns), for the kernel's receive stamps. */
static int64_t
realtime_offset(void)
{
	struct timespec rt;
	uint64_t m0 = bench_now_ns(), m1;

	clock_gettime(CLOCK_REALTIME, &rt);
	m1 = bench_now_ns();
	return (int64_t)((uint64_t)rt.tv_sec * 1000000000u +
	    (uint64_t)rt.tv_nsec) - (int64_t)(m0 + (m1 - m0) / 2);
}

static int
relay_init(struct relay_bench *rb, const struct bench_opts *o)
{
	size_t cap;

	memset(rb, 0, sizeof(*rb));
	rb->o = o;
	rb->pace_fd = -1;
	rb->loop = ev_default_loop(0);
	if (rb->loop == NULL) {
		fprintf(stderr, "ferry-bench: no event loop\n");
		return -1;
	}
	if (bench_resolve(o, &rb->addr, &rb->addrlen) < 0)
		return -1;
	rb->caddr = rb->addr;
	if (o->consumer_port > 0)
		((struct sockaddr_in *)&rb->caddr)->sin_port =
		    htons((uint16_t)o->consumer_port);
	if (o->tls && (rb->ctx = bench_client_ctx(o)) == NULL)
		return -1;
	rb->fsize = relay_frame_size((size_t)o->keys);
	rb->keys = malloc((size_t)o->keys * 8 + 1);
	rb->templ = malloc(rb->fsize);
	rb->pairs = calloc((size_t)o->pairs, sizeof(*rb->pairs));
	if (rb->keys == NULL || rb->templ == NULL || rb->pairs == NULL)
		return -1;
	for (int k = 0; k < o->keys; k++) {
		if (k > 0)
			rb->keys[rb->keys_len++] = RELAY_KEY_SEP;
		rb->keys_len += (size_t)sprintf(rb->keys + rb->keys_len,
		    "k%d", k);
		float v = (float)k / (float)o->keys;
		uint32_t bits;
		memcpy(&bits, &v, sizeof(bits));
		put_le32(rb->templ + RELAY_VALUE_SIZE * k, bits);
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
	if (o->rate > 0) {
		rb->pace_fd = timerfd_create(CLOCK_MONOTONIC,
		    TFD_NONBLOCK | TFD_CLOEXEC);
		if (rb->pace_fd < 0)
			return -1;
		ev_io_init(&rb->pace_io, pace_cb, rb->pace_fd, EV_READ);
		ev_set_priority(&rb->pace_io, EV_MINPRI);
		rb->pace_io.data = rb;
		ev_idle_init(&rb->pace_idle, pace_idle_cb);
		ev_set_priority(&rb->pace_idle, EV_MINPRI);
		rb->pace_idle.data = rb;
	}
	ev_check_init(&rb->woke, woke_cb);
	ev_set_priority(&rb->woke, EV_MAXPRI);
	rb->woke.data = rb;
	ev_check_start(rb->loop, &rb->woke);
	ev_prepare_init(&rb->sleeps, sleeps_cb);
	rb->sleeps.data = rb;
	ev_prepare_start(rb->loop, &rb->sleeps);
	/* Neither keeps ev_run() alive. */
	ev_unref(rb->loop);
	ev_unref(rb->loop);
	rb->rt_off = realtime_offset();
	if (o->trace != NULL) {
		rb->trace = malloc(RELAY_TRACE_MAX * sizeof(*rb->trace));
		if (rb->trace == NULL)
			return -1;
	}
	return 0;
}

static void
relay_free(struct relay_bench *rb)
{
	if (rb->pairs != NULL) {
		for (int i = 0; i < rb->npairs; i++) {
			struct rpair *p = &rb->pairs[i];

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
		if (ev_is_active(&rb->woke)) {
			ev_ref(rb->loop);
			ev_ref(rb->loop);
			ev_check_stop(rb->loop, &rb->woke);
			ev_prepare_stop(rb->loop, &rb->sleeps);
		}
	}
	free(rb->trace);
	pace_stop(rb);
	if (rb->pace_fd >= 0)
		close(rb->pace_fd);
	free(rb->pairs);
	free(rb->keys);
	free(rb->templ);
	SSL_CTX_free(rb->ctx);
}

/* --trace: one line per frame of the window, absolute monotonic ns. */
static int
trace_write(struct relay_bench *rb)
{
	FILE *f = fopen(rb->o->trace, "w");

	if (f == NULL) {
		fprintf(stderr, "ferry-bench: %s: %s\n", rb->o->trace,
		    strerror(errno));
		return -1;
	}
	fprintf(f, "# recv sent due krx wake pair seq (CLOCK_MONOTONIC ns; "
	    "0 = unknown); window %" PRIu64 " %" PRIu64 "; %" PRIu64
	    " frames not kept\n", rb->t_window, rb->t_end, rb->trace_over);
	for (size_t i = 0; i < rb->ntrace; i++) {
		const struct trec *t = &rb->trace[i];

		fprintf(f, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		    " %" PRIu64 " %" PRIu32 " %" PRIu32 "\n", t->recv, t->sent,
		    t->due, t->krx, t->wake, t->pair, t->seq);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "ferry-bench: %s: %s\n", rb->o->trace,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * The latency distribution, for plots: "q:us,..." at fixed quantiles, the
 * last (q = 1) the maximum.
 */
static void
quantiles(const struct hist *h, char *out, size_t len)
{
	static const double qs[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9,
	    0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999 };
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]) && n < len; i++)
		n += (size_t)snprintf(out + n, len - n, "%g:%.1f,", qs[i],
		    (double)hist_quantile(h, qs[i]) / 1e3);
	if (n < len)
		snprintf(out + n, len - n, "1:%.1f", (double)h->max / 1e3);
}

static void
relay_report(struct relay_bench *rb)
{
	const struct bench_opts *o = rb->o;
	uint64_t lost = 0, reordered = 0, skipped = 0, undelivered = 0;
	double secs = (double)(rb->t_end - rb->t_window) / 1e9, hz;
	char srv[256] = "", lat[512];

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
	quantiles(&rb->hist, lat, sizeof(lat));
	if (o->server_pid > 0)
		snprintf(srv, sizeof(srv), " srv_cpu=%.4f srv_wait_ms=%.1f",
		    (double)(rb->sched_srv[1][0] - rb->sched_srv[0][0]) / 1e9 /
		    secs, (double)(rb->sched_srv[1][1] - rb->sched_srv[0][1]) /
		    1e6);
	if (o->other_pids != NULL) {
		/* CPU seconds a second of each, ':' between them. */
		snprintf(srv + strlen(srv), sizeof(srv) - strlen(srv),
		    " oth_cpu=");
		int n = 1;
		for (const char *c = o->other_pids; *c; c++)
			n += *c == ',';
		for (int i = 0; i < n && i < OTHER_MAX; i++) {
			snprintf(srv + strlen(srv), sizeof(srv) - strlen(srv),
			    "%s%.4f", i ? ":" : "", (double)(rb->cpu_other[1][i] -
			    rb->cpu_other[0][i]) / 1e9 / secs);
		}
	}
	printf("RESULT mode=relay p=%d k=%d tls=%d ws=%d rate=%g duration=%.3f "
	    "frames=%" PRIu64 " frames_per_s=%.0f mb_per_s=%.2f "
	    "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
	    "sent=%" PRIu64 " lost=%" PRIu64 " reordered=%" PRIu64
	    " undelivered=%" PRIu64 " skipped=%" PRIu64 " errors=%" PRIu64
	    " srv_p50_us=%.1f srv_p99_us=%.1f srv_p999_us=%.1f"
	    " pair_hz=%.1f behind_max_ms=%.1f gen_busy=%.2f gen_cpu=%.2f"
	    " gen_iters=%" PRIu64 " gen_wait_ms=%.1f%s lat_q_us=%s\n",
	    o->pairs, o->keys, o->tls ? 1 : 0, o->ws ? 1 : 0, o->rate, secs,
	    rb->frames,
	    (double)rb->frames / secs,
	    (double)rb->frames * (double)rb->fsize / secs / 1e6,
	    (double)hist_quantile(&rb->hist, 0.50) / 1e3,
	    (double)hist_quantile(&rb->hist, 0.99) / 1e3,
	    (double)hist_quantile(&rb->hist, 0.999) / 1e3,
	    (double)rb->hist.max / 1e3, rb->sent_window, lost, reordered,
	    undelivered, skipped, rb->errors,
	    (double)hist_quantile(&rb->hist_srv, 0.50) / 1e3,
	    (double)hist_quantile(&rb->hist_srv, 0.99) / 1e3,
	    (double)hist_quantile(&rb->hist_srv, 0.999) / 1e3,
	    (double)rb->sent_window / secs / (double)o->pairs,
	    (double)rb->behind_max / 1e6,
	    (double)rb->busy_ns / 1e9 / secs,
	    (double)(rb->sched_self[1][0] - rb->sched_self[0][0]) / 1e9 / secs,
	    rb->iters,
	    (double)(rb->sched_self[1][1] - rb->sched_self[0][1]) / 1e6, srv,
	    lat);
	fflush(stdout);
	hz = (double)rb->sent_window / secs / (double)o->pairs;
	if (o->rate > 0 && hz < 0.99 * o->rate)
		fprintf(stderr, "ferry-bench: sent %.1f of the %g frames/s a "
		    "pair asked for (%.0f%%): the generator could not keep up "
		    "(busy %.0f%% of the window, %.0f ms waiting for a CPU, "
		    "frames up to %.0f ms late)\n", hz, o->rate,
		    100.0 * hz / o->rate, 100.0 * (double)rb->busy_ns / 1e9 /
		    secs, (double)(rb->sched_self[1][1] - rb->sched_self[0][1]) / 1e6,
		    (double)rb->behind_max / 1e6);
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
	if (rb->trace != NULL && trace_write(rb) < 0)
		status = 1;
out:
	if (rb != NULL)
		relay_free(rb);
	free(rb);
	return status;
}
