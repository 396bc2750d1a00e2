/*
 * tcpserver: listening sockets -> streams (Tornado's TCPServer).
 *
 * Its life: tcpserver_new(), tcpserver_bind() each address (before the
 * process forks its workers: the sockets are then shared, the kernel
 * spreads the accepts), tcpserver_start() in each process that serves
 * them, tcpserver_stop() to stop accepting (a drain), tcpserver_free().
 * tcpserver_add_sockets() accepts on sockets bound elsewhere.
 * Every accepted socket gets TCP_NODELAY, is wrapped in a plain stream or,
 * with a TLS context, a TLS stream whose handshake is still to come, and is
 * handed to handle_stream(), which owns it from then on.
 *
 * Connection limits (tcpserver_set_limits) are enforced here, so every
 * listener mode gets them: a connection over a limit is closed right after
 * accept, before any TLS work, counted in the listener's `refused` counter
 * (tcpserver_set_stats; the server keeps no counts of its own) and logged
 * (rate-limited) with the peer and the limit.  A connection
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

/* At most this many sockets per server (every address of every bind). */
#define TCPSERVER_MAX_SOCKETS 32

struct tcpserver;

/*
 * `tls` is referenced (not taken over); NULL for plain TCP.  `opts` (NULL:
 * the defaults) are copied.  NULL when memory cannot be had.
 */
struct tcpserver *tcpserver_new(struct stream_loop *sl, const char *name,
    const struct stream_opts *opts, struct tls_ctx *tls,
    tcpserver_handler handle_stream, void *arg);

/* Binds without accepting yet (until tcpserver_start).  0, or -1 with err. */
int tcpserver_bind(struct tcpserver *srv, const char *address, int port,
    int family, int backlog, bool reuse_port, char *err, size_t errlen);

/*
 * Adds listening sockets bound elsewhere (inherited, or kept from the
 * previous configuration), taken over, not accepting yet: as if bound here.
 * 0, or -1 when there is no room (nothing taken).
 */
int tcpserver_adopt(struct tcpserver *srv, const int *fds, size_t n);

/* Its listening sockets (bound or accepting), at most max: how many. */
size_t tcpserver_fds(const struct tcpserver *srv, int *fds, size_t max);

/*
 * Binds a unix socket (netutil_bind_unix: a stale socket file replaced,
 * mode and owner set), not accepting yet.  0, or -1 with err.
 */
int tcpserver_bind_unix(struct tcpserver *srv, const char *path,
    unsigned mode, uid_t uid, gid_t gid, char *err, size_t errlen);

/* Accepts on every socket bound so far, in this process. */
void tcpserver_start(struct tcpserver *srv);

/* Accepts on already bound listening sockets (taken over). 0 or -1. */
int tcpserver_add_sockets(struct tcpserver *srv, const int *fds, size_t n);

/* The port the first socket is bound to (useful with port 0), or -1. */
int tcpserver_port(const struct tcpserver *srv);

/*
 * The local addresses of its sockets (port 0 resolved), at most `max`:
 * how many were written.  A socket whose address cannot be read is left
 * out.
 */
size_t tcpserver_addresses(const struct tcpserver *srv,
    struct sockaddr_storage *out, size_t max);

/* New connections use `tls` from now on (reload); live ones keep theirs. */
void tcpserver_set_tls(struct tcpserver *srv, struct tls_ctx *tls);

/* Connections accepted from now on get these stream options. */
void tcpserver_set_opts(struct tcpserver *srv, const struct stream_opts *opts);

/*
 * Connections accepted from now on get a line in `log` when they close
 * (referenced; NULL: none).  See accesslog.h.
 */
struct accesslog;
void tcpserver_set_access_log(struct tcpserver *srv, struct accesslog *log);

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
/*
 * The configuration key of `max` in the refusal's log line (a static
 * string; default "max_connections").
 */
void tcpserver_set_limit_key(struct tcpserver *srv, const char *key);
/* Connections counted now (0 until limits are set). */
size_t tcpserver_live(const struct tcpserver *srv);
/* Source addresses with a connection counted now. */
size_t tcpserver_sources(const struct tcpserver *srv);

/*
 * accept_proxy: every accepted socket first gives a PROXY protocol header
 * (v1 or v2, proxy_accept.h), within the handshake timeout of the stream
 * options; the address in it is the client's from then on: connection
 * limits, the stream's peer (logs), and handle_stream()'s `sa`.  The
 * sockets still waiting for their header count against the server's
 * max_connections (not per source: theirs is not known yet).  Call
 * before accepting.  0, or -1 when memory cannot be had.
 */
int tcpserver_set_accept_proxy(struct tcpserver *srv, bool on);

/* Stops accepting and closes the listening sockets; streams carry on. */
void tcpserver_stop(struct tcpserver *srv);

/*
 * Stops, drops the TLS reference and frees the server.  Streams it
 * accepted may outlive it: the connection count goes with the last of
 * them.  NULL is ignored.
 */
void tcpserver_free(struct tcpserver *srv);

#endif
