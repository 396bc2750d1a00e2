/*
 * idle: opens N connections (`parallel` at a time), completes each TLS
 * handshake, prints "READY established=N failed=M" and holds them, silent,
 * until --hold seconds pass or SIGTERM/SIGINT: the load for measuring what
 * an idle connection costs a server.  Anything the server sends (TLS 1.3
 * session tickets) is read and dropped; OpenSSL's buffers are released
 * while a connection is idle, so the generator itself stays small.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct idle_bench;

struct idle_conn {
	struct bconn bc;
	struct idle_bench *ib;
	bool done;			/* established or failed */
};

struct idle_bench {
	const struct bench_opts *o;
	struct ev_loop *loop;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	SSL_CTX *ctx;
	struct idle_conn *conns;
	int next, inflight;
	uint64_t established, failed, closed;
	bool holding;
	uint64_t t_start;
	ev_timer deadline, progress;
	ev_signal sigterm, sigint;
};

static void idle_more(struct idle_bench *ib);

static void
idle_fail(struct idle_conn *ic, const char *what)
{
	struct idle_bench *ib = ic->ib;

	if (ib->failed + ib->closed < 5)
		fprintf(stderr, "ferry-bench: idle: %s\n", what);
	bconn_close(&ic->bc);
	if (ic->done) {
		ib->closed++;
		return;
	}
	ic->done = true;
	ib->failed++;
	ib->inflight--;
	idle_more(ib);
}

static void
idle_cb(struct bconn *c, int revents)
{
	struct idle_conn *ic = c->owner;
	struct idle_bench *ib = ic->ib;
	enum bres r;
	char buf[1024];
	size_t n;

	(void)revents;
	if (!ic->done) {
		r = bconn_establish(c);
		if (r == B_WANT_READ || r == B_WANT_WRITE) {
			bconn_want_res(c, r);
			return;
		}
		if (r != B_DONE) {
			idle_fail(ic, r == B_EOF ? "server closed" : c->err);
			return;
		}
		ic->done = true;
		ib->established++;
		ib->inflight--;
		idle_more(ib);
	}
	do
		r = bconn_read(c, buf, sizeof(buf), &n);
	while (r == B_DONE);
	if (r == B_WANT_READ || r == B_WANT_WRITE)
		bconn_want_res(c, r);
	else
		idle_fail(ic, r == B_EOF ? "server closed an idle connection" :
		    c->err);
}

static void
idle_more(struct idle_bench *ib)
{
	const struct bench_opts *o = ib->o;

	while (ib->next < o->conns && ib->inflight < o->parallel) {
		struct idle_conn *ic = &ib->conns[ib->next++];

		ic->ib = ib;
		ib->inflight++;
		if (bconn_start(&ic->bc, ib->loop, (struct sockaddr *)&ib->addr,
		    ib->addrlen, ib->ctx, o->host, o->sni, idle_cb, ic) < 0) {
			/* Counted here, not in idle_fail: no recursion. */
			if (ib->failed++ < 5)
				fprintf(stderr, "ferry-bench: idle: %s\n",
				    ic->bc.err);
			ic->done = true;
			ib->inflight--;
		}
	}
	if (ib->next == o->conns && ib->inflight == 0 && !ib->holding) {
		ib->holding = true;
		printf("READY established=%" PRIu64 " failed=%" PRIu64 "\n",
		    ib->established, ib->failed);
		fflush(stdout);
		ev_timer_stop(ib->loop, &ib->deadline);
		if (o->hold > 0) {
			ev_timer_set(&ib->deadline, o->hold, 0.);
			ev_timer_start(ib->loop, &ib->deadline);
		}
	}
}

static void
idle_progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct idle_bench *ib = w->data;

	(void)loop;
	(void)revents;
	printf("idle: %6.1f s  %" PRIu64 " established  %" PRIu64
	    " failed  %" PRIu64 " closed%s\n",
	    (double)(bench_now_ns() - ib->t_start) / 1e9, ib->established,
	    ib->failed, ib->closed, ib->holding ? "  (holding)" : "");
	fflush(stdout);
}

static void
idle_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

/* Setup deadline, then the hold. */
static void
idle_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct idle_bench *ib = w->data;

	(void)revents;
	if (!ib->holding)
		fprintf(stderr, "ferry-bench: idle: setup deadline passed with "
		    "%d connections pending\n", ib->inflight);
	ev_break(loop, EVBREAK_ALL);
}

int
bench_idle(const struct bench_opts *o)
{
	struct idle_bench *ib = calloc(1, sizeof(*ib));
	int status = 1;

	if (ib == NULL)
		return 1;
	ib->o = o;
	ib->loop = ev_default_loop(0);
	if (bench_resolve(o, &ib->addr, &ib->addrlen) < 0)
		goto out;
	if (o->tls) {
		if ((ib->ctx = bench_client_ctx(o)) == NULL)
			goto out;
		SSL_CTX_set_mode(ib->ctx, SSL_MODE_RELEASE_BUFFERS);
	}
	ib->conns = calloc((size_t)o->conns, sizeof(*ib->conns));
	if (ib->conns == NULL)
		goto out;
	for (int i = 0; i < o->conns; i++)
		ib->conns[i].bc.fd = -1;
	ev_timer_init(&ib->deadline, idle_deadline_cb, o->timeout, 0.);
	ib->deadline.data = ib;
	ev_timer_start(ib->loop, &ib->deadline);
	ev_signal_init(&ib->sigterm, idle_stop_cb, SIGTERM);
	ev_signal_start(ib->loop, &ib->sigterm);
	ev_signal_init(&ib->sigint, idle_stop_cb, SIGINT);
	ev_signal_start(ib->loop, &ib->sigint);
	ib->t_start = bench_now_ns();
	if (o->progress) {
		ev_timer_init(&ib->progress, idle_progress_cb, 1., 1.);
		ib->progress.data = ib;
		ev_timer_start(ib->loop, &ib->progress);
	}
	idle_more(ib);
	ev_run(ib->loop, 0);

	printf("RESULT mode=idle conns=%d tls=%d established=%" PRIu64
	    " failed=%" PRIu64 " closed=%" PRIu64 "\n", o->conns,
	    o->tls ? 1 : 0, ib->established, ib->failed, ib->closed);
	fflush(stdout);
	status = ib->holding && ib->failed == 0 && ib->closed == 0 ? 0 : 2;
out:
	if (ib->conns != NULL)
		for (int i = 0; i < o->conns; i++)
			bconn_close(&ib->conns[i].bc);
	if (ib->loop != NULL) {
		ev_timer_stop(ib->loop, &ib->deadline);
		ev_timer_stop(ib->loop, &ib->progress);
		ev_signal_stop(ib->loop, &ib->sigterm);
		ev_signal_stop(ib->loop, &ib->sigint);
	}
	free(ib->conns);
	SSL_CTX_free(ib->ctx);
	free(ib);
	return status;
}
