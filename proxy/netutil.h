/*
 * netutil: socket helpers (the only place that does the socket option
 * dance) and the accept handler.
 *
 * Functions that can fail return -1 and describe the failure in a caller
 * provided `err` buffer; they never log.  The caller knows the context
 * (listener name, config line) and logs once.
 */
#ifndef FERRY_NETUTIL_H
#define FERRY_NETUTIL_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/*
 * The listen queue, as nginx and Redis size it (the kernel caps it at
 * net.core.somaxconn): a burst of clients (devices reconnecting together
 * after a network change) waits there, not in SYN retransmits of 1 s,
 * then 3 s, that a full queue of 128 costs.
 */
#define NETUTIL_DEFAULT_BACKLOG 511
#define NETUTIL_MAX_SOCKETS 16

/*
 * Creates listening sockets for `address` (NULL or "" = every interface;
 * a host name = every address it resolves to) and `port`, one per resolved
 * address, as Tornado's bind_sockets: SO_REUSEADDR, SO_REUSEPORT when
 * `reuse_port` (an error where unsupported), IPV6_V6ONLY on IPv6 sockets,
 * close-on-exec and non-blocking.  With port 0 every socket gets the port the
 * first one was given.  `family` is AF_UNSPEC, AF_INET or AF_INET6.
 * Returns the number of sockets stored in fds (at most maxfds), or -1 with
 * nothing left open.
 */
int netutil_bind_sockets(const char *address, int port, int family,
    int backlog, bool reuse_port, int *fds, size_t maxfds,
    char *err, size_t errlen);

/*
 * Splits "host:port", "[v6]:port", ":port" or "port" into host (empty for
 * every interface) and port.  Returns 0 or -1 (err says why).
 */
int netutil_parse_hostport(const char *spec, char *host, size_t hostlen,
    int *port, char *err, size_t errlen);

/* Resolves host:port for connecting (first address).  0 or -1. */
int netutil_resolve(const char *host, int port, struct sockaddr_storage *ss,
    socklen_t *len, char *err, size_t errlen);

/*
 * A unix socket's address for `path` (absolute, at most 107 bytes).  0,
 * or -1 with err.
 */
int netutil_unix_addr(const char *path, struct sockaddr_storage *ss,
    socklen_t *len, char *err, size_t errlen);

/*
 * A listening unix socket at `path` (non-blocking, close-on-exec), made
 * safely over what is there: a socket file nobody accepts on (a stale
 * one, left by a ferry that died) is removed; one a process still accepts
 * on, or a file that is not a socket, is an error and is left alone.
 * Then `mode` (chmod; 0: as the umask made it) and the owner (chown; -1:
 * unchanged).  The fd, or -1 with err.
 */
int netutil_bind_unix(const char *path, int backlog, unsigned mode,
    uid_t uid, gid_t gid, char *err, size_t errlen);

int netutil_set_nonblock(int fd);
int netutil_set_nodelay(int fd);
/*
 * TCP keepalive: the first probe after `idle` seconds without a segment
 * from the peer, then `count` more `interval` seconds apart before the
 * connection is dropped (ETIMEDOUT).  0, or -1 with errno.
 */
int netutil_set_keepalive(int fd, int idle, int interval, int count);

/* "1.2.3.4:80" or "[::1]:80"; always NUL-terminated. */
void netutil_format_addr(const struct sockaddr *sa, char *out, size_t outlen);

/* The local port a socket is bound to, or -1. */
int netutil_local_port(int fd);

/*
 * The accept handler: on each readiness event accepts up to `backlog`
 * connections (accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC) and hands each to
 * `cb`.  EAGAIN ends the batch; ECONNABORTED and the errors Linux passes on
 * from the new socket are skipped.  EMFILE/ENFILE/ENOBUFS/ENOMEM are logged
 * once per episode and accepting pauses for NETUTIL_ACCEPT_PAUSE seconds,
 * then resumes: never a busy loop.  The callback owns the fd.
 */
#define NETUTIL_ACCEPT_PAUSE 0.1

typedef void (*netutil_accept_cb)(int fd, const struct sockaddr *sa,
    socklen_t salen, void *arg);

struct accept_handler {
	struct ev_loop *loop;
	int fd;
	int backlog;
	ev_io io;
	ev_timer pause;
	netutil_accept_cb cb;
	void *arg;
	bool starved;		/* in an fd-exhaustion episode */
	unsigned long starved_count;
};

void netutil_accept_init(struct accept_handler *ah, struct ev_loop *loop,
    int fd, int backlog, netutil_accept_cb cb, void *arg);
void netutil_accept_start(struct accept_handler *ah);
/* Stops accepting (the socket stays open: the caller owns it). */
void netutil_accept_stop(struct accept_handler *ah);

#endif
