/*
 * backend: a forward listener's backends, in one process: the sets they
 * are in, which of them are up, and which one a new client gets.
 *
 * Sets: every backend belongs to one named set (`backend` lines fill the
 * set "default", `backend_set = NAME: ...` lines the others); a client is
 * routed to one set (forward.c) and served by a backend of that set.
 *
 * Choice, among the backends of the set that are up and that this client
 * has not tried yet: the primaries first; the backups (`backup`) only
 * when no primary is left.  `balance = roundrobin`: smooth weighted round
 * robin (nginx's: with weights 3 and 1, four clients go a, a, b, a),
 * per process.  `balance = leastconn`: the fewest attempts open now
 * relative to the weight, counted over every worker (ties: round robin).
 * Every pick is one attempt, ended by exactly one backend_failed() or
 * backend_done(), with backend_connected() in between when it was made.
 *
 * Health, shared by the workers (struct metrics_health, in the mapping
 * every worker shares, updated with atomic operations: one worker marking
 * a backend down is seen by the others at their next pick):
 *   passive   with max_fails > 0, a backend that fails max_fails times in
 *             a row (a connection made resets the count), the failures
 *             within fail_timeout of the first, is marked down: for
 *             fail_timeout when there are no active checks, else until
 *             a check passes.  A failure is a refused, reset or timed-out
 *             connect, or a failed backend TLS handshake.
 *   active    with check_interval > 0, one process (worker 0: the caller
 *             of backend_pool_start_checks) connects to every backend each
 *             interval (check = tcp: the TCP connect; tls: the TLS
 *             handshake too, verified as the forward listener's own), with
 *             connect_timeout; max(max_fails, 1) failures in a row mark it
 *             down, one success marks it up.
 * A down backend is skipped; when every backend of a set is down the
 * client is refused at once (no connect attempt).  State changes are
 * logged once (the worker that made the change).
 *
 * Metrics (metrics.h): per backend, whether up, attempts open now,
 * connections made, failures, check failures.
 */
#ifndef FERRY_BACKEND_H
#define FERRY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stream.h"
#include "tls.h"

#define BACKEND_MAX 32		/* per listener, every set */
#define BACKEND_MAX_SETS 8
#define BACKEND_SET_NAME 32

struct backend_def {
	char label[320];		/* "host:port" or "unix:PATH", for logs */
	char host[300];			/* for SNI and the name check */
	struct sockaddr_storage addr;	/* resolved once, at start */
	socklen_t addrlen;
	int set;			/* index into the set names */
	unsigned weight;		/* 1..256 */
	bool backup;
};

enum backend_balance { BACKEND_ROUNDROBIN = 0, BACKEND_LEASTCONN };
enum backend_check { BACKEND_CHECK_TCP = 0, BACKEND_CHECK_TLS };

struct backend_opts {
	const struct backend_def *defs;
	size_t n;
	const char (*set_names)[BACKEND_SET_NAME];	/* [0] is "default" */
	size_t nsets;
	enum backend_balance balance;
	unsigned max_fails;		/* 0: passive health off */
	double fail_timeout;		/* seconds */
	double check_interval;		/* seconds; 0: no active checks */
	enum backend_check check;
	double connect_timeout;		/* a check's connect (+ TLS) */
	int metrics_id;			/* the listener's (metrics_listener) */
};

struct backend_pool;

/* The options are copied; NULL with err when they make no sense. */
struct backend_pool *backend_pool_new(const char *name,
    struct stream_loop *sl, const struct backend_opts *o, char *err,
    size_t errlen);

/*
 * Starts the active checks in this process (one process of all: worker
 * 0).  `tls`: the context for check = tls (referenced), `sni` the name
 * to send (NULL/"": the backend's host).
 */
void backend_pool_start_checks(struct backend_pool *p, struct tls_ctx *tls,
    const char *sni);
/* Checks from now on use `tls` (reload). */
void backend_pool_set_tls(struct backend_pool *p, struct tls_ctx *tls);

/* Stops the checks (checks in flight are closed); NULL is ignored. */
void backend_pool_free(struct backend_pool *p);

/* The set of that name, or -1. */
int backend_pool_set(const struct backend_pool *p, const char *name);

/*
 * A backend of `set` for a client that has tried the backends in the bit
 * mask `tried` (bit i: backend i): its index, counted as an open attempt;
 * -1 when none is left up.
 */
int backend_pick(struct backend_pool *p, int set, uint32_t tried);
const struct backend_def *backend_get(const struct backend_pool *p, int i);

void backend_connected(struct backend_pool *p, int i);
void backend_failed(struct backend_pool *p, int i, const char *why);
void backend_done(struct backend_pool *p, int i);

/* Whether backend i is up now (tests, --check). */
bool backend_up(const struct backend_pool *p, int i);

#endif
