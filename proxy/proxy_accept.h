/*
 * proxy_accept: a listener's accepted sockets while their PROXY protocol
 * header (proxy_in.h) is read, before anything else happens on them (no
 * stream, no TLS, no connection limit yet: those need the address the
 * header gives).
 *
 * Each socket is watched for readability, without blocking the loop; its
 * bytes are peeked, parsed, and consumed exactly up to the end of the
 * header (the TLS ClientHello behind it stays in the socket), so a header
 * sent a byte at a time works as well as one in a segment.  A header that
 * is malformed, or not whole within `timeout` seconds of the accept, or a
 * peer that closes first, closes the socket: logged (rate-limited) with
 * the listener, the peer and the reason.  Once whole, `done` gets the
 * socket and the client's address from the header (for LOCAL, UNKNOWN or
 * UNSPEC headers, the socket's own peer address) and owns the socket.
 */
#ifndef FERRY_PROXY_ACCEPT_H
#define FERRY_PROXY_ACCEPT_H

#include <ev.h>
#include <stddef.h>
#include <sys/socket.h>

#include "metrics.h"

typedef void (*proxy_accept_cb)(int fd, const struct sockaddr *sa,
    socklen_t salen, void *arg);

struct proxy_accept;

/* NULL when memory cannot be had. */
struct proxy_accept *proxy_accept_new(struct ev_loop *loop,
    const char *name, double timeout, proxy_accept_cb done, void *arg);

/* Takes the socket (non-blocking) over; closes it without memory. */
void proxy_accept_add(struct proxy_accept *pa, int fd,
    const struct sockaddr *sa, socklen_t salen);

/* Counts the sockets closed without a valid header there (NULL: none). */
void proxy_accept_set_stats(struct proxy_accept *pa,
    struct metrics_conn *stats);

/* Sockets still waiting for their header. */
size_t proxy_accept_waiting(const struct proxy_accept *pa);

/* Closes every socket still waiting, and frees.  NULL is ignored. */
void proxy_accept_free(struct proxy_accept *pa);

#endif
