/*
 * handshake: C clients, each doing TLS handshakes back to back.
 *
 * A client connects, completes the handshake (no session cache, no
 * tickets: every handshake is a full one; with --resume each client
 * resumes the session of its previous connection, with the ticket the
 * server sent last, and the handshakes that did resume are counted
 * apart), sends close_notify and waits for
 * the server to close, so the server has finished with the connection
 * before the next one starts and its CPU time covers whole handshakes.
 * A failed attempt is counted and retried after a short pause (a refusing
 * server is not hammered in a busy loop); an attempt that takes longer than
 * the timeout is abandoned and counted as failed.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HS_RETRY	0.01	/* seconds before retrying a failed slot */

struct hs_bench;

struct hs_slot {
	struct bconn bc;
	struct hs_bench *hb;
	enum { HS_IDLE, HS_SHAKE, HS_CLOSING } state;
	uint64_t started;
	SSL_SESSION *session;		/* --resume: the last one's */
	ev_timer retry;
};

struct hs_bench {
	const struct bench_opts *o;
	struct ev_loop *loop;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	SSL_CTX *ctx;
	struct hs_slot *slots;
	bool measuring, stopping;
	uint64_t t_start, t_window, t_end;
	uint64_t window, total, failures, sec;
	uint64_t resumed;		/* in the window, with --resume */
	uint64_t lingered;		/* server kept the connection open */
	struct hist hist;		/* connect to handshake done, ns */
	char version[32], cipher[64], group[32];
	ev_timer phase, progress, sweep;
	int phase_no;
};

static void slot_start(struct hs_slot *sl);

static void
slot_fail(struct hs_slot *sl, const char *what)
{
	struct hs_bench *hb = sl->hb;

	if (hb->failures++ < 5)
		fprintf(stderr, "ferry-bench: handshake: %s\n", what);
	bconn_close(&sl->bc);
	sl->state = HS_IDLE;
	if (!hb->stopping) {
		ev_timer_stop(hb->loop, &sl->retry);
		ev_timer_set(&sl->retry, HS_RETRY, 0.);
		ev_timer_start(hb->loop, &sl->retry);
	}
}

static void
slot_done(struct hs_slot *sl)
{
	struct hs_bench *hb = sl->hb;

	/* Its ticket came after the handshake, read while closing. */
	if (hb->o->resume && sl->bc.ssl != NULL) {
		SSL_SESSION *s = SSL_get1_session(sl->bc.ssl);
		if (s != NULL && SSL_SESSION_is_resumable(s)) {
			SSL_SESSION_free(sl->session);
			sl->session = s;
		} else {
			SSL_SESSION_free(s);
		}
	}
	bconn_close(&sl->bc);
	sl->state = HS_IDLE;
	if (!hb->stopping)
		slot_start(sl);
}

static void
note_session(struct hs_bench *hb, SSL *ssl)
{
	int nid = SSL_get_negotiated_group(ssl);
	const char *g = nid > 0 ? SSL_group_to_name(ssl, nid) : NULL;

	snprintf(hb->version, sizeof(hb->version), "%s", SSL_get_version(ssl));
	snprintf(hb->cipher, sizeof(hb->cipher), "%s",
	    SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
	snprintf(hb->group, sizeof(hb->group), "%s", g ? g : "none");
}

/* After close_notify: read (tickets, the server's close) until EOF. */
static void
slot_closing(struct hs_slot *sl)
{
	char buf[4096];
	size_t n;
	enum bres r;

	do
		r = bconn_read(&sl->bc, buf, sizeof(buf), &n);
	while (r == B_DONE);
	if (r == B_WANT_READ || r == B_WANT_WRITE) {
		bconn_want_res(&sl->bc, r);
		return;
	}
	/* EOF or a reset: either way the server let go. */
	slot_done(sl);
}

static void
slot_cb(struct bconn *c, int revents)
{
	struct hs_slot *sl = c->owner;
	struct hs_bench *hb = sl->hb;
	enum bres r;

	(void)revents;
	if (sl->state == HS_CLOSING) {
		slot_closing(sl);
		return;
	}
	r = bconn_establish(c);
	if (r == B_WANT_READ || r == B_WANT_WRITE) {
		bconn_want_res(c, r);
		return;
	}
	if (r != B_DONE) {
		slot_fail(sl, r == B_EOF ? "server closed during the handshake"
		    : c->err);
		return;
	}
	hb->total++;
	hb->sec++;
	if (hb->measuring) {
		hb->window++;
		hb->resumed += SSL_session_reused(c->ssl) == 1;
		hist_add(&hb->hist, bench_now_ns() - sl->started);
	}
	if (hb->version[0] == '\0')
		note_session(hb, c->ssl);
	bconn_notify_close(c);
	sl->state = HS_CLOSING;
	slot_closing(sl);
}

static void
slot_start(struct hs_slot *sl)
{
	struct hs_bench *hb = sl->hb;
	const struct bench_opts *o = hb->o;

	sl->started = bench_now_ns();
	sl->state = HS_SHAKE;
	if (bconn_start(&sl->bc, hb->loop, (struct sockaddr *)&hb->addr,
	    hb->addrlen, hb->ctx, o->host, o->sni, slot_cb, sl) < 0) {
		slot_fail(sl, sl->bc.err);
		return;
	}
	if (sl->session != NULL)
		SSL_set_session(sl->bc.ssl, sl->session);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hs_slot *sl = w->data;

	(void)loop;
	(void)revents;
	if (!sl->hb->stopping)
		slot_start(sl);
}

/* Abandons attempts older than the timeout. */
static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hs_bench *hb = w->data;
	uint64_t now = bench_now_ns();
	uint64_t limit = (uint64_t)(hb->o->timeout * 1e9);

	(void)loop;
	(void)revents;
	for (int i = 0; i < hb->o->conns; i++) {
		struct hs_slot *sl = &hb->slots[i];

		if (sl->state == HS_IDLE || now - sl->started <= limit)
			continue;
		if (sl->state == HS_CLOSING) {
			/* The handshake counted; the server just never closed. */
			hb->lingered++;
			slot_done(sl);
		} else {
			slot_fail(sl, "timed out");
		}
	}
}

static void
progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hs_bench *hb = w->data;

	(void)loop;
	(void)revents;
	printf("handshake: %6.1f s  %7" PRIu64 " handshakes/s  failures %"
	    PRIu64 "%s\n", (double)(bench_now_ns() - hb->t_start) / 1e9,
	    hb->sec, hb->failures, hb->measuring ? "" : "  (warm-up)");
	fflush(stdout);
	hb->sec = 0;
}

static void
phase_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hs_bench *hb = w->data;

	(void)revents;
	if (hb->phase_no == 1) {
		hb->measuring = true;
		hb->t_window = bench_now_ns();
		hb->phase_no = 2;
		ev_timer_set(w, hb->o->duration, 0.);
		ev_timer_start(loop, w);
		return;
	}
	hb->measuring = false;
	hb->stopping = true;
	hb->t_end = bench_now_ns();
	ev_break(loop, EVBREAK_ALL);
}

int
bench_handshake(const struct bench_opts *o)
{
	struct hs_bench *hb = calloc(1, sizeof(*hb));
	int status = 1;

	if (hb == NULL)
		return 1;
	hb->o = o;
	hb->loop = ev_default_loop(0);
	if (!o->tls) {
		fprintf(stderr, "ferry-bench: handshake needs TLS\n");
		goto out;
	}
	if (bench_resolve(o, &hb->addr, &hb->addrlen) < 0 ||
	    (hb->ctx = bench_client_ctx(o)) == NULL)
		goto out;
	hb->slots = calloc((size_t)o->conns, sizeof(*hb->slots));
	if (hb->slots == NULL)
		goto out;
	hb->t_start = bench_now_ns();
	for (int i = 0; i < o->conns; i++) {
		struct hs_slot *sl = &hb->slots[i];

		sl->hb = hb;
		sl->bc.fd = -1;
		ev_timer_init(&sl->retry, retry_cb, HS_RETRY, 0.);
		sl->retry.data = sl;
		slot_start(sl);
	}
	hb->phase_no = o->warmup > 0 ? 1 : 2;
	if (hb->phase_no == 2) {
		hb->measuring = true;
		hb->t_window = hb->t_start;
	}
	ev_timer_init(&hb->phase, phase_cb,
	    o->warmup > 0 ? o->warmup : o->duration, 0.);
	hb->phase.data = hb;
	ev_timer_start(hb->loop, &hb->phase);
	ev_timer_init(&hb->sweep, sweep_cb, 1., 1.);
	hb->sweep.data = hb;
	ev_timer_start(hb->loop, &hb->sweep);
	if (o->progress) {
		ev_timer_init(&hb->progress, progress_cb, 1., 1.);
		hb->progress.data = hb;
		ev_timer_start(hb->loop, &hb->progress);
	}
	ev_run(hb->loop, 0);

	double secs = (double)(hb->t_end - hb->t_window) / 1e9;
	printf("RESULT mode=handshake c=%d tls=%s duration=%.3f "
	    "handshakes=%" PRIu64 " handshakes_per_s=%.1f total=%" PRIu64
	    " failures=%" PRIu64 " lingered=%" PRIu64 " p50_ms=%.3f p99_ms=%.3f version=%s "
	    "cipher=%s group=%s resume=%s resumed=%" PRIu64 "\n",
	    o->conns, o->tls_version == TLS1_2_VERSION ? "1.2" :
	    o->tls_version == TLS1_3_VERSION ? "1.3" : "any", secs,
	    hb->window, secs > 0 ? (double)hb->window / secs : 0., hb->total,
	    hb->failures, hb->lingered,
	    (double)hist_quantile(&hb->hist, 0.5) / 1e6,
	    (double)hist_quantile(&hb->hist, 0.99) / 1e6,
	    hb->version[0] ? hb->version : "none",
	    hb->cipher[0] ? hb->cipher : "none",
	    hb->group[0] ? hb->group : "none", o->resume ? "on" : "off",
	    hb->resumed);
	fflush(stdout);
	status = hb->window > 0 ? 0 : 2;
out:
	if (hb->slots != NULL) {
		for (int i = 0; i < o->conns; i++) {
			ev_timer_stop(hb->loop, &hb->slots[i].retry);
			bconn_close(&hb->slots[i].bc);
			SSL_SESSION_free(hb->slots[i].session);
		}
	}
	if (hb->loop != NULL) {
		ev_timer_stop(hb->loop, &hb->phase);
		ev_timer_stop(hb->loop, &hb->sweep);
		ev_timer_stop(hb->loop, &hb->progress);
	}
	free(hb->slots);
	SSL_CTX_free(hb->ctx);
	free(hb);
	return status;
}
