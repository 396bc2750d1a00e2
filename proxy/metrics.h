/*
 * metrics: the process's counters, and their rendering in the Prometheus
 * text format for the admin listener.
 *
 * Counters live in a shared anonymous mapping made before workers fork: one
 * slot per worker, so the admin page (served by one process) shows the sum
 * over all workers, and a restarted worker's counts are not lost.  Each
 * process writes only its own slot; a reader may see a value a few
 * increments old, which is what counters allow.
 *
 * These counters, like the log level, are the module's global state: every
 * layer may count into them without being handed a pointer.
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buffer.h"

#define METRICS_MAX_LISTENERS 32
#define METRICS_MAX_WORKERS 64
#define METRICS_MAX_BACKENDS 32	/* per listener, every set */

/* Per listener, per worker.  Connections: accepted = active + closed. */
struct metrics_conn {
	uint64_t accepted;
	uint64_t closed;
	uint64_t refused;		/* over a connection limit */
	uint64_t handshakes_ok;
	uint64_t handshakes_failed;
	uint64_t tls_floods;		/* closed for records without data */
	uint64_t bytes_in;		/* from clients */
	uint64_t bytes_out;		/* to clients */
	uint64_t backend_failures;	/* forward: could not reach a backend */
	uint64_t proxy_failures;	/* accept_proxy: no valid header */
	uint64_t backend_bytes_in;
	uint64_t backend_bytes_out;
};

/* Per listener and backend, per worker.  Active = opened - closed. */
struct metrics_backend {
	uint64_t connects;		/* connections made (and TLS, if on) */
	uint64_t failures;		/* a client's attempts that failed */
	uint64_t check_failures;	/* active checks that failed */
	uint64_t opened;		/* a client's attempts begun */
	uint64_t closed;		/* ... and ended */
};

/*
 * A backend's health, one copy shared by every worker (backend.c says
 * what the fields mean and updates them with atomic operations): the
 * workers agree on a backend's state as soon as one of them changes it.
 * Times are CLOCK_MONOTONIC milliseconds, which every process of the host
 * shares.
 */
struct metrics_health {
	int64_t down_until;		/* 0 or past: up; INT64_MAX: until a
					   check passes */
	int64_t window_start;		/* the first failure counted */
	uint32_t fails;			/* failures counted since */
	uint32_t pad;
};

/*
 * Per worker, a node of the cluster (cluster.h): its NATS connection, the
 * uuids it holds and follows, what crossed to and from other nodes, its
 * directory's work.  Gauges are marked; a worker that takes a dead one's
 * slot zeroes them.
 */
struct metrics_cluster {
	char node[136];			/* "" for a worker that is no node */
	uint64_t connected;		/* gauge: 1 while NATS is up */
	uint64_t joined;		/* gauge: 1 while in the cluster */
	uint64_t disconnects, reconnects;
	uint64_t peers;			/* gauge: other nodes heard */
	uint64_t peer_deaths;		/* nodes found gone */
	uint64_t owned;			/* gauge: uuids held in the directory */
	uint64_t local_only;		/* gauge: held here, not (yet) in it */
	uint64_t imports;		/* gauge: uuids fed from another node */
	uint64_t remote_nodes;		/* gauge: (uuid, node) fed from here */
	uint64_t frames_out, bytes_out, msgs_out;
	uint64_t frames_out_dropped;	/* could not go: NATS down or full */
	uint64_t frames_in, bytes_in, msgs_in;
	uint64_t frames_in_lost;	/* gaps in a producer's sequence */
	uint64_t frames_in_stale;	/* of a producer no longer followed */
	uint64_t msgs_bad;		/* malformed, other version or type */
	uint64_t dir_ops, dir_conflicts, dir_errors;
	uint64_t takeovers;		/* local producers replaced remotely */
};

struct metrics_slot {
	struct metrics_conn listener[METRICS_MAX_LISTENERS];
	struct metrics_backend backend[METRICS_MAX_LISTENERS]
	    [METRICS_MAX_BACKENDS];
	struct metrics_cluster cluster;
	int64_t pid;			/* the worker writing it (for its RSS) */
};

/*
 * Maps the shared counters for `workers` processes (call before forking;
 * without it one private slot is used).  0 or -1.
 */
int metrics_init(int workers);
/*
 * The slot this process writes (its worker id), from now on.  Taking over
 * a dead worker's slot counts the connections that died with it as
 * closed.
 */
void metrics_set_worker(int id);

/*
 * Client connections open now, every worker and listener together (what
 * the supervisor tells systemd: it serves none itself).
 */
uint64_t metrics_open_connections(void);

/* Registers a listener name; returns its id (or -1 when full). */
int metrics_listener(const char *name, const char *mode);
/* This process's counters for a listener id (never NULL for a valid id). */
struct metrics_conn *metrics_conn(int id);

/* This process's cluster counters. */
struct metrics_cluster *metrics_cluster(void);
/* Every worker's, for the page: n slots (read only). */
const struct metrics_cluster *metrics_cluster_of(int worker);
int metrics_workers(void);

/*
 * Registers backend `idx` (0..METRICS_MAX_BACKENDS-1) of listener id
 * `listener` with its labels (the set it is in, its label); before the
 * fork, as metrics_listener.  0, or -1 for an index out of range.
 */
int metrics_backend(int listener, int idx, const char *set,
    const char *label);
/* This process's counters for it (never NULL for a registered one). */
struct metrics_backend *metrics_backend_counters(int listener, int idx);
/* Its health, shared by every worker. */
struct metrics_health *metrics_backend_health(int listener, int idx);
/* Attempts open now on it, summed over every worker. */
uint64_t metrics_backend_active(int listener, int idx);
/* CLOCK_MONOTONIC in milliseconds (the health's clock). */
int64_t metrics_now_ms(void);

/*
 * A source adds whole metric families (with # HELP / # TYPE) to the page:
 * the relay registry and the forward listeners register theirs.
 */
typedef void (*metrics_source_fn)(struct buffer *out, void *arg);
int metrics_add_source(metrics_source_fn fn, void *arg);

/* The whole page. */
void metrics_render(struct buffer *out);

/* Helpers for sources. */
void metrics_printf(struct buffer *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void metrics_family(struct buffer *out, const char *name, const char *type,
    const char *help);
/*
 * A label value escaped for the text format (backslash, double quote and
 * newline); always NUL-terminated, cut short rather than overflowing.
 */
void metrics_escape(const char *in, char *out, size_t outlen);

#endif
