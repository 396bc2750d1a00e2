/*
 * admin: the admin listener, a minimal HTTP/1.0 responder on a stream:
 * GET /metrics answers the Prometheus text page (metrics_render), GET /
 * a short index, anything else 404/405.  One request per connection.
 *
 * Every way a client could stretch a connection is bounded:
 *  - the request head (request line and headers; lines end in CRLF or, as
 *    HTTP parsers accept, a bare LF) is at most ADMIN_MAX_HEAD bytes: a
 *    longer one is answered 431;
 *  - a request line that is not METHOD SP TARGET SP HTTP/x.y, with a
 *    target of visible ASCII, or a head holding a NUL or another control
 *    byte, is answered 400;
 *  - the whole exchange has one deadline, counted from the accept and
 *    never moved by traffic: a client still sending (or not reading) when
 *    it passes is closed, however it trickles;
 *  - the number of connections is the tcpserver's limit (listeners.c sets it).
 * After answering, the server sends its FIN and reads, discarding, until
 * the client closes (within the deadline): closing with the client's
 * bytes unread would send a reset that can destroy the answer.
 *
 * struct admin tracks its connections so that a drain or a teardown can
 * close them at once (admin_close_all); it is freed after the loop has run
 * their close callbacks (after stream_loop_destroy).
 */
#ifndef FERRY_ADMIN_H
#define FERRY_ADMIN_H

#include "tcpserver.h"

#define ADMIN_MAX_HEAD 8192

struct admin;

/* `timeout`: seconds from accept to the end of the exchange (> 0). */
struct admin *admin_new(struct ev_loop *loop, double timeout);

/* A tcpserver_handler; arg is the struct admin. */
void admin_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

/* Closes every connection now (their close callbacks run from the loop). */
void admin_close_all(struct admin *a);

/* Connections open now. */
size_t admin_live(const struct admin *a);

/* NULL is a no-op.  Connections still open are detached first. */
void admin_free(struct admin *a);

#endif
