/*
 * bulk: C connections streaming bytes to HOST:PORT (a forward listener or
 * a peer in front of a sink, or the sink itself) as fast as the server
 * takes them.  A connection writes one chunk at a time, only while its
 * socket is writable, so at most one chunk per connection waits in user
 * space.  The window counts the bytes the server accepted (handed to the
 * kernel or to OpenSSL); `total` counts the whole run, for CPU per byte.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bulk_bench;

struct bulk_conn {
	struct bconn bc;
	struct bulk_bench *bb;
	size_t off;			/* into the chunk */
	size_t retry;			/* length of a write to repeat (TLS) */
	bool dead;
};

struct bulk_bench {
	const struct bench_opts *o;
	struct ev_loop *loop;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	SSL_CTX *ctx;
	struct bulk_conn *conns;
	char *chunk;
	bool measuring;
	uint64_t t_start, t_window, t_end;
	uint64_t window, total, sec, errors;
	int established;
	ev_timer phase, progress;
	int phase_no;
};

static void
conn_fail(struct bulk_conn *bc, const char *what)
{
	struct bulk_bench *bb = bc->bb;

	if (bb->errors++ < 5)
		fprintf(stderr, "ferry-bench: bulk: %s\n", what);
	bconn_close(&bc->bc);
	bc->dead = true;
}

static void
conn_pump(struct bulk_conn *bc)
{
	struct bulk_bench *bb = bc->bb;
	size_t n, len, chunk = bb->o->chunk;
	enum bres r;

	/* A bounded number of writes, so one connection cannot starve. */
	for (int i = 0; i < 64; i++) {
		len = bc->retry ? bc->retry : chunk - bc->off;
		r = bconn_write(&bc->bc, bb->chunk + bc->off, len, &n);
		if (r != B_DONE) {
			if (r == B_WANT_READ || r == B_WANT_WRITE) {
				bc->retry = len;
				bconn_want_res(&bc->bc, r);
				return;
			}
			conn_fail(bc, r == B_EOF ? "server closed" : bc->bc.err);
			return;
		}
		bc->retry = 0;
		bc->off = (bc->off + n) % chunk;
		bb->total += n;
		bb->sec += n;
		if (bb->measuring)
			bb->window += n;
	}
	bconn_want(&bc->bc, EV_WRITE);
}

static void
conn_cb(struct bconn *c, int revents)
{
	struct bulk_conn *bc = c->owner;
	enum bres r;

	(void)revents;
	if (!c->established) {
		r = bconn_establish(c);
		if (r == B_WANT_READ || r == B_WANT_WRITE) {
			bconn_want_res(c, r);
			return;
		}
		if (r != B_DONE) {
			conn_fail(bc, r == B_EOF ? "server closed" : c->err);
			return;
		}
		bc->bb->established++;
	}
	conn_pump(bc);
}

static void
progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct bulk_bench *bb = w->data;

	(void)loop;
	(void)revents;
	printf("bulk: %6.1f s  %9.1f MB/s  %d connections  errors %" PRIu64
	    "%s\n", (double)(bench_now_ns() - bb->t_start) / 1e9,
	    (double)bb->sec / 1e6, bb->established, bb->errors,
	    bb->measuring ? "" : "  (warm-up)");
	fflush(stdout);
	bb->sec = 0;
}

static void
phase_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct bulk_bench *bb = w->data;

	(void)revents;
	if (bb->phase_no == 1) {
		bb->measuring = true;
		bb->t_window = bench_now_ns();
		bb->phase_no = 2;
		ev_timer_set(w, bb->o->duration, 0.);
		ev_timer_start(loop, w);
		return;
	}
	bb->measuring = false;
	bb->t_end = bench_now_ns();
	ev_break(loop, EVBREAK_ALL);
}

int
bench_bulk(const struct bench_opts *o)
{
	struct bulk_bench *bb = calloc(1, sizeof(*bb));
	int status = 1;

	if (bb == NULL)
		return 1;
	bb->o = o;
	bb->loop = ev_default_loop(0);
	if (bench_resolve(o, &bb->addr, &bb->addrlen) < 0)
		goto out;
	if (o->tls && (bb->ctx = bench_client_ctx(o)) == NULL)
		goto out;
	bb->conns = calloc((size_t)o->conns, sizeof(*bb->conns));
	bb->chunk = malloc(o->chunk);
	if (bb->conns == NULL || bb->chunk == NULL)
		goto out;
	for (size_t i = 0; i < o->chunk; i++)
		bb->chunk[i] = (char)(i * 131 + 7);
	bb->t_start = bench_now_ns();
	for (int i = 0; i < o->conns; i++) {
		struct bulk_conn *bc = &bb->conns[i];

		bc->bb = bb;
		if (bconn_start(&bc->bc, bb->loop, (struct sockaddr *)&bb->addr,
		    bb->addrlen, bb->ctx, o->host, o->sni, conn_cb, bc) < 0) {
			bc->bc.fd = -1;
			conn_fail(bc, bc->bc.err);
		}
	}
	bb->phase_no = o->warmup > 0 ? 1 : 2;
	if (bb->phase_no == 2) {
		bb->measuring = true;
		bb->t_window = bb->t_start;
	}
	ev_timer_init(&bb->phase, phase_cb,
	    o->warmup > 0 ? o->warmup : o->duration, 0.);
	bb->phase.data = bb;
	ev_timer_start(bb->loop, &bb->phase);
	if (o->progress) {
		ev_timer_init(&bb->progress, progress_cb, 1., 1.);
		bb->progress.data = bb;
		ev_timer_start(bb->loop, &bb->progress);
	}
	ev_run(bb->loop, 0);

	double secs = (double)(bb->t_end - bb->t_window) / 1e9;
	printf("RESULT mode=bulk c=%d tls=%d chunk=%zu duration=%.3f "
	    "bytes=%" PRIu64 " mb_per_s=%.1f total=%" PRIu64
	    " connections=%d errors=%" PRIu64 "\n", o->conns, o->tls ? 1 : 0,
	    o->chunk, secs, bb->window,
	    secs > 0 ? (double)bb->window / secs / 1e6 : 0., bb->total,
	    bb->established, bb->errors);
	fflush(stdout);
	status = bb->errors > 0 || bb->window == 0 ? 2 : 0;
out:
	if (bb->conns != NULL)
		for (int i = 0; i < o->conns; i++)
			bconn_close(&bb->conns[i].bc);
	if (bb->loop != NULL) {
		ev_timer_stop(bb->loop, &bb->phase);
		ev_timer_stop(bb->loop, &bb->progress);
	}
	free(bb->conns);
	free(bb->chunk);
	SSL_CTX_free(bb->ctx);
	free(bb);
	return status;
}
