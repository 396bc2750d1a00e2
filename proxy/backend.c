/*
 * backend: see backend.h.
 *
 * A backend's health is its struct metrics_health, shared by every
 * worker; the transitions are compare-and-swaps on down_until, so the
 * worker that makes one logs it, once:
 *
 *   UP  --max_fails failures in a row within fail_timeout-->  DOWN
 *   DOWN --fail_timeout passed (no checks) / a check passed-->  UP
 *
 * A check in flight is a struct check of its own: the pool may be freed
 * while one is connecting, and its close callback then only frees it.
 */
#define _GNU_SOURCE
#include "backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

#define CHECK_MAGIC 0x62636863u	/* "bchc" */

struct check {
	uint32_t magic;
	struct backend_pool *p;		/* NULL once the pool is gone */
	int i;
	struct stream *s;
	bool passed;
};

struct backend_pool {
	char name[64];
	struct stream_loop *sl;
	struct backend_def defs[BACKEND_MAX];
	size_t n;
	char sets[BACKEND_MAX_SETS][BACKEND_SET_NAME];
	size_t nsets;
	enum backend_balance balance;
	unsigned max_fails;
	int64_t fail_ms;
	double check_interval;
	enum backend_check check_kind;
	double connect_timeout;
	int metrics_id;
	int current[BACKEND_MAX];	/* smooth weighted round robin */
	size_t next;			/* leastconn's tie breaker */
	struct check *checks[BACKEND_MAX];	/* in flight */
	ev_timer check_timer;
	bool checking;
	struct tls_ctx *tls;		/* check = tls (referenced) */
	char sni[256];
};

static struct metrics_health *
health(const struct backend_pool *p, int i)
{
	return metrics_backend_health(p->metrics_id, i);
}

static struct metrics_backend *
counters(const struct backend_pool *p, int i)
{
	return metrics_backend_counters(p->metrics_id, i);
}

static int64_t
load64(const int64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

bool
backend_up(const struct backend_pool *p, int i)
{
	return load64(&health(p, i)->down_until) <= metrics_now_ms();
}

/* ---- health ---- */

static void
mark_down(struct backend_pool *p, int i, int64_t until, const char *why)
{
	struct metrics_health *h = health(p, i);
	int64_t old = load64(&h->down_until), now = metrics_now_ms();

	if (old > now)
		return;		/* down already */
	if (!__atomic_compare_exchange_n(&h->down_until, &old, until, false,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;		/* another worker did it */
	__atomic_store_n(&h->fails, 0, __ATOMIC_RELAXED);
	if (until == INT64_MAX)
		LOGW("%s: backend %s marked down until a check passes: %s",
		    p->name, p->defs[i].label, why);
	else
		LOGW("%s: backend %s marked down for %g s: %s", p->name,
		    p->defs[i].label, (double)p->fail_ms / 1000, why);
}

static void
mark_up(struct backend_pool *p, int i)
{
	struct metrics_health *h = health(p, i);
	int64_t old = load64(&h->down_until);

	__atomic_store_n(&h->fails, 0, __ATOMIC_RELAXED);
	if (old == 0 || !__atomic_compare_exchange_n(&h->down_until, &old, 0,
	    false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	if (old > metrics_now_ms())
		LOGN("%s: backend %s up: a check passed", p->name,
		    p->defs[i].label);
}

/* One failure; `limit` failures in a row (within fail_timeout) mark it. */
static void
count_failure(struct backend_pool *p, int i, unsigned limit,
    const char *why)
{
	struct metrics_health *h = health(p, i);
	int64_t now = metrics_now_ms(), start = load64(&h->window_start);
	uint32_t fails;

	if (limit == 0 || !backend_up(p, i))
		return;
	if (now - start > p->fail_ms) {
		/* A new window: this failure is its first. */
		__atomic_store_n(&h->window_start, now, __ATOMIC_RELAXED);
		__atomic_store_n(&h->fails, 1, __ATOMIC_RELAXED);
		fails = 1;
	} else {
		fails = __atomic_add_fetch(&h->fails, 1, __ATOMIC_RELAXED);
	}
	if (fails >= limit)
		mark_down(p, i, p->check_interval > 0 ? INT64_MAX :
		    now + p->fail_ms, why);
}

/* ---- attempts ---- */

void
backend_connected(struct backend_pool *p, int i)
{
	counters(p, i)->connects++;
	__atomic_store_n(&health(p, i)->fails, 0, __ATOMIC_RELAXED);
}

void
backend_failed(struct backend_pool *p, int i, const char *why)
{
	struct metrics_backend *m = counters(p, i);

	m->failures++;
	__atomic_add_fetch(&m->closed, 1, __ATOMIC_RELAXED);
	count_failure(p, i, p->max_fails, why);
}

void
backend_done(struct backend_pool *p, int i)
{
	__atomic_add_fetch(&counters(p, i)->closed, 1, __ATOMIC_RELAXED);
}

/* ---- choice ---- */

static bool
candidate(const struct backend_pool *p, int i, int set, bool backup,
    uint32_t tried)
{
	const struct backend_def *d = &p->defs[i];

	return d->set == set && d->backup == backup &&
	    (tried & (UINT32_C(1) << i)) == 0 && backend_up(p, i);
}

/*
 * nginx's smooth weighted round robin.  Every attempt is a turn of the
 * sequence, a retry too: the backends up in the tier all move on, and the
 * best this client has not tried is taken (so, with equal weights, a
 * retry goes to the next in turn, as a plain rotation does).
 */
static int
pick_rr(struct backend_pool *p, int set, bool backup, uint32_t tried)
{
	int best = -1, total = 0;

	for (int i = 0; i < (int)p->n; i++) {
		if (!candidate(p, i, set, backup, 0))
			continue;
		p->current[i] += (int)p->defs[i].weight;
		total += (int)p->defs[i].weight;
		if ((tried & (UINT32_C(1) << i)) == 0 &&
		    (best < 0 || p->current[i] > p->current[best]))
			best = i;
	}
	if (best >= 0)
		p->current[best] -= total;
	return best;
}

/* Fewest open attempts per weight; ties go round. */
static int
pick_lc(struct backend_pool *p, int set, bool backup, uint32_t tried)
{
	int best = -1;
	uint64_t best_active = 0;

	for (size_t k = 0; k < p->n; k++) {
		int i = (int)((p->next + k) % p->n);
		uint64_t a;
		if (!candidate(p, i, set, backup, tried))
			continue;
		a = metrics_backend_active(p->metrics_id, i);
		/* a / w < best_active / best_w, without division */
		if (best < 0 || a * p->defs[best].weight <
		    best_active * p->defs[i].weight) {
			best = i;
			best_active = a;
		}
	}
	if (best >= 0)
		p->next = (size_t)best + 1;
	return best;
}

int
backend_pick(struct backend_pool *p, int set, uint32_t tried)
{
	int i = -1;

	for (int backup = 0; backup < 2 && i < 0; backup++)
		i = p->balance == BACKEND_LEASTCONN ?
		    pick_lc(p, set, backup, tried) :
		    pick_rr(p, set, backup, tried);
	if (i >= 0)
		__atomic_add_fetch(&counters(p, i)->opened, 1,
		    __ATOMIC_RELAXED);
	return i;
}

const struct backend_def *
backend_get(const struct backend_pool *p, int i)
{
	return &p->defs[i];
}

int
backend_pool_set(const struct backend_pool *p, const char *name)
{
	for (size_t i = 0; i < p->nsets; i++)
		if (strcmp(p->sets[i], name) == 0)
			return (int)i;
	return -1;
}

/* ---- active checks ---- */

static void
check_end(struct check *c)
{
	struct backend_pool *p = c->p;

	if (p != NULL) {
		p->checks[c->i] = NULL;
		if (c->passed) {
			mark_up(p, c->i);
		} else {
			char why[200];
			counters(p, c->i)->check_failures++;
			snprintf(why, sizeof(why), "check failed: %s",
			    stream_error(c->s)[0] ? stream_error(c->s) :
			    "closed");
			LOGD("%s: backend %s: %s", p->name,
			    p->defs[c->i].label, why);
			count_failure(p, c->i, p->max_fails > 0 ?
			    p->max_fails : 1, why);
		}
	}
	c->magic = 0;
	free(c);
}

static void
check_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct check *c = arg;

	(void)s;
	(void)why;
	if (c == NULL || c->magic != CHECK_MAGIC)
		abort();
	check_end(c);
}

static void
check_ready(struct stream *s, void *arg)
{
	struct check *c = arg;

	c->passed = true;
	stream_close(s, STREAM_CLOSE_LOCAL);
}

static void
check_one(struct backend_pool *p, int i)
{
	const struct backend_def *d = &p->defs[i];
	struct stream_opts so;
	struct check *c;

	if (p->checks[i] != NULL || (c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->magic = CHECK_MAGIC;
	c->p = p;
	c->i = i;
	stream_opts_default(&so);
	so.handshake_timeout = p->connect_timeout;
	c->s = stream_connect(p->sl, (const struct sockaddr *)&d->addr,
	    d->addrlen, &so);
	if (c->s == NULL) {
		LOGW("%s: backend %s: cannot check: %s", p->name, d->label,
		    strerror(errno));
		free(c);
		return;
	}
	p->checks[i] = c;
	stream_set_callbacks(c->s, check_closed, c);
	if (stream_closed(c->s))
		return;		/* refused at once: check_closed follows */
	if (p->check_kind == BACKEND_CHECK_TLS && p->tls != NULL &&
	    tls_stream_connect(c->s, p->tls, p->sni[0] ? p->sni :
	    d->host[0] ? d->host : NULL) < 0) {
		stream_set_error(c->s, "cannot set up TLS");
		stream_close(c->s, STREAM_CLOSE_NOMEM);
		return;
	}
	stream_wait_for_handshake(c->s, check_ready);
}

static void
check_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct backend_pool *p = w->data;

	(void)loop;
	(void)revents;
	for (size_t i = 0; i < p->n; i++)
		check_one(p, (int)i);
}

void
backend_pool_start_checks(struct backend_pool *p, struct tls_ctx *tls,
    const char *sni)
{
	if (p->check_interval <= 0 || p->checking)
		return;
	backend_pool_set_tls(p, tls);
	snprintf(p->sni, sizeof(p->sni), "%s", sni ? sni : "");
	p->checking = true;
	/* The first round at once: a backend down at start is known soon. */
	ev_timer_set(&p->check_timer, 0., p->check_interval);
	ev_timer_start(p->sl->loop, &p->check_timer);
}

void
backend_pool_set_tls(struct backend_pool *p, struct tls_ctx *tls)
{
	struct tls_ctx *old = p->tls;

	p->tls = tls ? tls_ctx_ref(tls) : NULL;
	tls_ctx_unref(old);
}

/* ---- the pool ---- */

struct backend_pool *
backend_pool_new(const char *name, struct stream_loop *sl,
    const struct backend_opts *o, char *err, size_t errlen)
{
	struct backend_pool *p;

	if (o->n == 0 || o->n > BACKEND_MAX || o->nsets == 0 ||
	    o->nsets > BACKEND_MAX_SETS) {
		snprintf(err, errlen, "a forward listener needs 1 to %d "
		    "backends in 1 to %d sets", BACKEND_MAX, BACKEND_MAX_SETS);
		return NULL;
	}
	for (size_t i = 0; i < o->n; i++)
		if (o->defs[i].set < 0 || (size_t)o->defs[i].set >= o->nsets ||
		    o->defs[i].weight == 0) {
			snprintf(err, errlen, "backend %s: bad set or weight",
			    o->defs[i].label);
			return NULL;
		}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->sl = sl;
	memcpy(p->defs, o->defs, o->n * sizeof(*o->defs));
	p->n = o->n;
	for (size_t i = 0; i < o->nsets; i++)
		snprintf(p->sets[i], sizeof(p->sets[i]), "%s", o->set_names[i]);
	p->nsets = o->nsets;
	p->balance = o->balance;
	p->max_fails = o->max_fails;
	p->fail_ms = (int64_t)(o->fail_timeout * 1000);
	p->check_interval = o->check_interval;
	p->check_kind = o->check;
	p->connect_timeout = o->connect_timeout;
	p->metrics_id = o->metrics_id;
	ev_init(&p->check_timer, check_tick);
	p->check_timer.data = p;
	for (size_t i = 0; i < p->n; i++)
		(void)metrics_backend(p->metrics_id, (int)i,
		    p->sets[p->defs[i].set], p->defs[i].label);
	return p;
}

void
backend_pool_free(struct backend_pool *p)
{
	if (p == NULL)
		return;
	ev_timer_stop(p->sl->loop, &p->check_timer);
	for (size_t i = 0; i < p->n; i++) {
		struct check *c = p->checks[i];
		if (c == NULL)
			continue;
		c->p = NULL;
		stream_close(c->s, STREAM_CLOSE_LOCAL);
	}
	tls_ctx_unref(p->tls);
	free(p);
}
