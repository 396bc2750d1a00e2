/*
 * admin: the admin listener, an HTTP/1.0 responder on a stream (request
 * heads read by http.h), one request per connection:
 *   GET /                   the status page (listeners, devices, live)
 *   GET /devices/<uuid>     a device's live plot and latest frame
 *   GET /assets/<file>      their scripts and styles (assets.h)
 *   GET /api/status         listeners, workers, connections and devices
 *   GET /api/devices        JSON: one object per uuid
 *   GET /api/devices/<uuid> JSON: one device (404 if unknown)
 *   GET /metrics            the Prometheus text page (metrics_render)
 *   GET /v1/consume/<uuid>  a WebSocket consumer, handed to the relay
 *                           layer (relay_take_http) on the admin's own
 *                           relay listener: what the device page plots
 * anything else 404, a method but GET 405.  With a token
 * (admin_set_token), every request must carry it, as
 * "Authorization: Bearer <token>" or "?token=<token>": else 401.
 *
 * Every way a client could stretch a connection is bounded:
 *  - the request head (request line and headers; lines end in CRLF or, as
 *    HTTP parsers accept, a bare LF) is at most ADMIN_MAX_HEAD bytes: a
 *    longer one is answered 431;
 *  - a request line that is not METHOD SP TARGET SP HTTP/x.y, with a
 *    target of visible ASCII, or a head holding a NUL or another control
 *    byte, is answered 400 (http.h);
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

#include "http.h"
#include "registry.h"
#include "relay.h"
#include "tcpserver.h"

#define ADMIN_MAX_HEAD HTTP_MAX_HEAD

struct admin;

/*
 * Appends the members of /api/status's object that the admin cannot know
 * ("listeners": [...], "workers": n, "connections": n, each followed by
 * a comma): the server's (listeners.c).
 */
typedef void (*admin_status_fn)(struct buffer *out, void *arg);

/* `timeout`: seconds from accept to the end of the exchange (> 0). */
struct admin *admin_new(struct ev_loop *loop, double timeout);

/*
 * The devices to show (NULL: none) and the relay listener WebSocket
 * consumers of the device page join (NULL: none, 404).
 */
void admin_set_relay(struct admin *a, struct registry *reg,
    struct relay_listener *rl);
void admin_set_status(struct admin *a, admin_status_fn fn, void *arg);
/* Every request must carry it from now on; NULL or "": none. */
void admin_set_token(struct admin *a, const char *token);

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
