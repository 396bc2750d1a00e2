/*
 * tcpserver: listening sockets -> streams (Tornado's TCPServer).
 *
 * Three ways to start, as in Tornado:
 *   tcpserver_listen()                  bind and accept at once, one process;
 *   tcpserver_bind() + tcpserver_start() bind, fork workers, then accept;
 *   netutil_bind_sockets() + process_fork() + tcpserver_add_sockets().
 * Every accepted socket gets TCP_NODELAY, is wrapped in a plain stream or,
 * with a TLS context, a TLS stream whose handshake is still to come, and is
 * handed to handle_stream(), which owns it from then on.
 *
 * Connection limits (tcpserver_set_limits) are enforced here, so every
 * listener mode gets them: a connection over a limit is closed right after
 * accept, before any TLS work, counted in the listener's `refused` counter
 * and logged (rate-limited) with the peer and the limit.  A connection
 * counts from its accept until its stream is freed, whatever closed it
 * (the stream's free hook).  Limits are per process: with workers, each
 * worker counts the connections it accepted.
 */
#ifndef FERRY_TCPSERVER_H
#define FERRY_TCPSERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "netutil.h"
#include "stream.h"
#include "tls.h"

typedef void (*tcpserver_handler)(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

#define TCPSERVER_MAX_SOCKETS 32

struct conn_table;		/* live connections, per source (tcpserver.c) */

struct tcpserver {
	struct stream_loop *sl;
	struct tls_ctx *tls;		/* NULL: plain */
	struct stream_opts opts;
	tcpserver_handler handle_stream;
	void *arg;
	char name[64];			/* for logs */

	int pending[TCPSERVER_MAX_SOCKETS];	/* bound, not yet accepting */
	size_t npending;
	struct accept_handler acc[TCPSERVER_MAX_SOCKETS];
	size_t nacc;

	struct metrics_conn *stats;	/* counters for this listener */
	uint64_t accepted;		/* connections handed out */
	uint64_t failed;		/* accepted but could not be set up */
	uint64_t refused;		/* closed at once: over a limit */

	size_t max_conns;		/* 0 = unlimited */
	size_t max_per_source;		/* 0 = unlimited */
	/*
	 * Counts live connections once limits are set.  Its own allocation:
	 * streams still open when the server is destroyed (a drain that ran
	 * out of time) keep it, and the last one to go frees it.
	 */
	struct conn_table *conns;
};

/* `tls` is referenced (not taken over); NULL for plain TCP. */
void tcpserver_init(struct tcpserver *srv, struct stream_loop *sl,
    const char *name, const struct stream_opts *opts, struct tls_ctx *tls,
    tcpserver_handler handle_stream, void *arg);

/* Binds `address:port` and accepts at once.  0, or -1 with err. */
int tcpserver_listen(struct tcpserver *srv, const char *address, int port,
    char *err, size_t errlen);

/* Binds without accepting yet (before tcpserver_start). */
int tcpserver_bind(struct tcpserver *srv, const char *address, int port,
    int family, int backlog, bool reuse_port, char *err, size_t errlen);

/*
 * Forks num_processes workers (<= 0: one per CPU; 1: no fork) supervised
 * with max_restarts (see process.h), then starts accepting on the bound
 * sockets in each worker.  Returns the task id (0 when not forking).
 */
int tcpserver_start(struct tcpserver *srv, int num_processes,
    int max_restarts);

/* Accepts on already bound listening sockets (taken over). 0 or -1. */
int tcpserver_add_sockets(struct tcpserver *srv, const int *fds, size_t n);

/* The port the first socket is bound to (useful with port 0), or -1. */
int tcpserver_port(const struct tcpserver *srv);

/* New connections use `tls` from now on (reload); live ones keep theirs. */
void tcpserver_set_tls(struct tcpserver *srv, struct tls_ctx *tls);

/* Counts this listener's connections (and their streams) into `stats`. */
void tcpserver_set_stats(struct tcpserver *srv, struct metrics_conn *stats);

/*
 * Connection limits, 0 = unlimited: at most `max` connections of this
 * server open at once, and at most `per_source` from one source address
 * (IPv4, IPv6; an IPv4-mapped IPv6 address counts as its IPv4 address).
 * Call before accepting: connections accepted earlier are not counted
 * (and those accepted while no per-source limit was set are not counted
 * per source).  May be called again to change the limits.  0, or -1 when
 * memory cannot be had (the limits are then unchanged).
 */
int tcpserver_set_limits(struct tcpserver *srv, size_t max,
    size_t per_source);
/* Connections counted now (0 until limits are set). */
size_t tcpserver_live(const struct tcpserver *srv);
/* Source addresses with a connection counted now. */
size_t tcpserver_sources(const struct tcpserver *srv);

/* Stops accepting and closes the listening sockets; streams carry on. */
void tcpserver_stop(struct tcpserver *srv);

/*
 * Stop, and drop the TLS reference.  Streams it accepted may outlive it:
 * the connection count goes with the last of them.
 */
void tcpserver_destroy(struct tcpserver *srv);

#endif
