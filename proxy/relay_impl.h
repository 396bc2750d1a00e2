/*
 * relay_impl: the relay module's own header, shared by its files and
 * included by no other module (the public contract is relay.h).
 *
 *   relay.c     the listeners, a client's life (made, timed, closed), the
 *               first-byte sniff, the device protocol (0x0a / 0x0b) and
 *               the cluster's answers
 *   relay_ws.c  the WebSocket clients: the HTTP head, /v1/consume and
 *               /v1/produce, the upgrade, and their relay_wire
 *
 * relay_* functions declared here are shared between these files and
 * nothing else.
 */
#ifndef FERRY_RELAY_IMPL_H
#define FERRY_RELAY_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "http.h"
#include "relay.h"
#include "ws.h"

/* Bytes handed to the parser per callback; bounds a blocked overshoot. */
#define READ_CHUNK (64 * 1024)
/* How long a refused client has to read its 0x01 and close. */
#define LINGER_SECONDS 2.0

#define RELAY_LISTENER_MAGIC 0x726c7374u	/* "rlst" */
#define RELAY_CLIENT_MAGIC 0x72636c69u	/* "rcli" */

LIST_HEAD(relay_clients, relay_client);

struct relay_listener {
	uint32_t magic;			/* RELAY_LISTENER_MAGIC */
	struct relay_origin o;		/* name, options, totals */
	struct registry *reg;		/* every relay listener's */
	struct acl *acl;		/* NULL: none */
	struct cluster *cluster;	/* NULL: this process alone */
	uint64_t protocol_errors;	/* unknown first byte, bad accept */
	struct relay_clients conns;	/* open connections (shutdown) */
	struct relay_web web;		/* WebSocket clients */
};

/* What a connection speaks, known from its first byte. */
enum relay_path {
	RELAY_PATH_UNKNOWN,		/* nothing read yet */
	RELAY_PATH_DEVICE,		/* 0x0a / 0x0b: the device protocol */
	RELAY_PATH_HTTP,		/* a letter: an HTTP request head */
	RELAY_PATH_WS,			/* upgraded: WebSocket messages */
};

/* One client connection: the protocol's side of it. */
struct relay_client {
	uint32_t magic;			/* RELAY_CLIENT_MAGIC while it lives */
	struct relay_listener *lst;
	LIST_ENTRY(relay_client) link;	/* the listener's open ones */
	struct relay_parser p;
	ev_timer timer;			/* registration deadline, then linger */
	ev_tstamp since;		/* connected at */
	bool registered;		/* producer registered / consumer in */
	bool lingering;			/* refused: reading until the close */
	bool done;			/* closing: read no more */
	enum relay_path path;
	struct http_head *head;		/* RELAY_PATH_HTTP only */
	struct ws *ws;			/* RELAY_PATH_WS only */
	size_t frame_size;		/* WebSocket producer */
	/*
	 * Waiting for the cluster (a claim or a lookup): reading is paused,
	 * and the bytes read after the step wait in `held`.
	 */
	bool waiting;
	char *held;
	size_t held_len;
	/*
	 * Allocated when needed, to their length: fixed arrays made every
	 * connection carry 600 bytes that most never fill (no access list,
	 * no reason until it closes, a uuid far shorter than 256 bytes).
	 */
	char *uuid;
	size_t ulen;
	size_t nkeys;
	char *reason;			/* why it ended, when we decided */
	char *grant;			/* what the access list allowed, if any */
	/*
	 * The registry's part.  &rc is the argument of every callback of
	 * the client (stream, timer, parser), checked by relay_client_of().
	 */
	struct relay_conn rc;
};

/* relay.c */
struct relay_client *relay_client_of(void *arg);
const char *relay_opt_str(const char *s);
const char *relay_role_name(const struct relay_client *cl);
void relay_set_reason(struct relay_client *cl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int relay_reply(struct relay_client *cl, const void *p, size_t len);
int relay_linger(struct relay_client *cl);
void relay_registered(struct relay_client *cl);
bool relay_acl_allows(struct relay_client *cl, const char *uuid,
    size_t ulen);
void relay_hold(struct relay_client *cl, const char *data, size_t len);
int relay_wait_cluster(struct relay_client *cl);
void relay_on_cluster(struct relay_conn *rc, bool ok, const char *why);

/* relay_ws.c */
void relay_http_feed(struct relay_client *cl, const char *data, size_t len);
int relay_web_route(struct relay_client *cl, const char *rest,
    size_t restlen);
int relay_web_resume(struct relay_client *cl, bool ok, const char *why,
    const char *rest, size_t restlen);

#endif /* FERRY_RELAY_IMPL_H */
