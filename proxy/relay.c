/* relay: see relay.h. */
#define _GNU_SOURCE
#include "relay.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <ctype.h>

#include "acl.h"
#include "cluster.h"
#include "http.h"
#include "log.h"
#include "obj.h"
#include "relay_impl.h"
#include "ws.h"

/* The client of a callback argument (its relay_conn). */
struct relay_client *
relay_client_of(void *arg)
{
	struct relay_conn *rc;
	struct relay_client *cl;

	CAST_OBJ_NOTNULL(rc, arg, RELAY_CONN_MAGIC);
	cl = container_of(rc, struct relay_client, rc);
	CHECK_OBJ_NOTNULL(cl, RELAY_CLIENT_MAGIC);
	return cl;
}

/* For log lines: "" for a part not allocated. */
const char *
relay_opt_str(const char *s)
{
	return s != NULL ? s : "";
}

static const char ACK = RELAY_OK, NAK = RELAY_REFUSED;

const char *
relay_role_name(const struct relay_client *cl)
{
	if (cl->path == RELAY_PATH_WS || cl->path == RELAY_PATH_HTTP)
		return cl->p.role == RELAY_PRODUCER ? "WebSocket producer" :
		    cl->p.role == RELAY_CONSUMER ? "WebSocket consumer" :
		    "HTTP client";
	return cl->p.role == RELAY_PRODUCER ? "producer" :
	    cl->p.role == RELAY_CONSUMER ? "consumer" : "client";
}

static int send_keys(struct relay_client *cl,
    const struct registry_entry *e);

/* The first reason given is the one logged. */
void
relay_set_reason(struct relay_client *cl, const char *fmt, ...)
{
	va_list ap;

	if (cl->reason != NULL)
		return;
	va_start(ap, fmt);
	/* Without memory the close is logged with the stream's reason. */
	if (vasprintf(&cl->reason, fmt, ap) < 0)
		cl->reason = NULL;
	va_end(ap);
}

static void
arm_timer(struct relay_client *cl, double seconds)
{
	struct ev_loop *loop = cl->lst->reg->loop;

	ev_timer_stop(loop, &cl->timer);
	if (seconds > 0) {
		ev_timer_set(&cl->timer, seconds, 0.);
		ev_timer_start(loop, &cl->timer);
	}
}

/* Queues a reply; a stream that cannot take it is closing already. */
int
relay_reply(struct relay_client *cl, const void *p, size_t len)
{
	if (stream_write(cl->rc.s, p, len, NULL) == 0)
		return 0;
	cl->done = true;
	return 1;
}

static void
linger_eof(struct stream *s, void *arg)
{
	/* Both directions are shut now: the stream closes by itself. */
	(void)s;
	(void)arg;
}

/*
 * Our FIN, then read until the client's: closing with its unread bytes in
 * our socket would send a reset that can overtake what we sent last.  The
 * timer bounds the wait.
 */
int
relay_linger(struct relay_client *cl)
{
	struct stream *s = cl->rc.s;

	cl->lingering = true;
	stream_set_eof_cb(s, linger_eof);
	stream_shutdown_write(s);
	arm_timer(cl, LINGER_SECONDS);
	return 1;
}

/* A refusal the protocol answers: 0x01, then the close. */
static int
refuse(struct relay_client *cl, const char *why)
{
	relay_set_reason(cl, "refused: %s", why);
	cl->lst->o.total.refused++;
	cl->lingering = true;
	if (relay_reply(cl, &NAK, 1) != 0)
		return 1;
	return relay_linger(cl);
}

void
relay_registered(struct relay_client *cl)
{
	const struct relay_opts *o = &cl->lst->o.opts;

	cl->registered = true;
	ev_timer_stop(cl->lst->reg->loop, &cl->timer);
	if (o->idle_timeout > 0)
		stream_set_idle_timeout(cl->rc.s, o->idle_timeout);
}

/* "kind:value", escaped for a log line. */
static void
id_str(const struct peer_id *id, char *out, size_t len)
{
	int n = snprintf(out, len, "%s:", peer_id_kind_name(id->kind));

	if (n > 0 && (size_t)n < len)
		registry_uuid_str(id->value, id->len, out + n,
		    len - (size_t)n);
}

/* Every identity of a certificate, for the line that denies it. */
static void
ids_str(const struct peer_ids *ids, char *out, size_t len)
{
	size_t o = 0;

	if (ids == NULL) {
		snprintf(out, len, "no verified certificate");
		return;
	}
	if (ids->n == 0)
		snprintf(out, len, "a certificate without names");
	for (size_t i = 0; i < ids->n && o + 1 < len; i++) {
		char one[256];
		id_str(&ids->id[i], one, sizeof(one));
		o += (size_t)snprintf(out + o, len - o, "%s%s", i ? ", " : "",
		    one);
	}
}

/*
 * The access list's word on this client taking its role on uuid, when the
 * listener has one.  A denial is logged here, where it is decided.
 */
bool
relay_acl_allows(struct relay_client *cl, const char *uuid, size_t ulen)
{
	struct relay_listener *lst = cl->lst;
	enum acl_role role = cl->p.role == RELAY_PRODUCER ? ACL_PRODUCE :
	    ACL_CONSUME;
	const struct peer_id *id;
	struct peer_ids ids;
	char who[512], u[REGISTRY_UUID_STR];
	bool cert;
	int line;

	if (lst->acl == NULL)
		return true;
	cert = stream_peer_ids(cl->rc.s, &ids);
	line = acl_check(lst->acl, role, cert ? &ids : NULL, uuid, ulen, &id);
	if (line > 0) {
		char one[128], grant[192];
		if (id != NULL)
			id_str(id, one, sizeof(one));
		else
			snprintf(one, sizeof(one), "any certificate");
		snprintf(grant, sizeof(grant), "; access list line %d for %s",
		    line, one);
		/* Only for the log line: without memory it is left out. */
		free(cl->grant);
		cl->grant = strdup(grant);
		return true;
	}
	lst->o.total.denied++;
	if (log_enabled(LOG_WARN)) {
		ids_str(cert ? &ids : NULL, who, sizeof(who));
		registry_uuid_str(uuid, ulen, u, sizeof(u));
		log_limited(LOG_WARN, "relay %s: access list %s: %s %s (%s) may "
		    "not %s uuid '%s'", lst->o.name, acl_path(lst->acl),
		    relay_role_name(cl), stream_peer(cl->rc.s), who,
		    acl_role_name(role), u);
	}
	return false;
}

static int
on_uuid(struct relay_client *cl, const struct relay_event *ev)
{
	struct registry *reg = cl->lst->reg;
	struct registry_entry *e;
	const char *why = NULL;

	free(cl->uuid);
	cl->ulen = 0;
	if ((cl->uuid = malloc(ev->len)) == NULL) {
		cl->done = true;
		relay_set_reason(cl, "no memory for the uuid");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return 1;
	}
	memcpy(cl->uuid, ev->data, ev->len);
	cl->ulen = ev->len;
	/* As for an unknown uuid: a refusal tells nothing about the uuid. */
	if (!relay_acl_allows(cl, ev->data, ev->len))
		return refuse(cl, "not allowed by the access list");
	if (cl->p.role == RELAY_PRODUCER) {
		/* Refused at the uuid, as soon as it can be known. */
		if (registry_refuses_producer(reg, ev->data, ev->len))
			return refuse(cl, "uuid held by a live producer");
		return relay_reply(cl, &ACK, 1);
	}
	e = registry_add_consumer(reg, &cl->rc, ev->data, ev->len, &why);
	if (e == NULL && cl->lst->cluster != NULL &&
	    registry_find(reg, ev->data, ev->len) == NULL) {
		/* Perhaps a producer on another node: the cluster looks. */
		switch (cluster_lookup(cl->lst->cluster, &cl->rc, ev->data,
		    ev->len, relay_on_cluster, &why)) {
		case 1:
			return relay_wait_cluster(cl);
		default:
			return refuse(cl, why);
		}
	}
	if (e == NULL)
		return refuse(cl, why);
	return send_keys(cl, e);
}

/* The answer to a consumer's uuid: 0x00 and the keys. */
static int
send_keys(struct relay_client *cl, const struct registry_entry *e)
{
	uint8_t hdr[1 + RELAY_LEN_SIZE] = { RELAY_OK };

	relay_len_put(hdr + 1, (uint32_t)e->keys_len);
	cl->nkeys = e->nkeys;
	if (relay_reply(cl, hdr, sizeof(hdr)) != 0)
		return 1;
	return relay_reply(cl, e->keys, e->keys_len);
}

/* The producer holds its uuid: 0x00, and the line that says so. */
static int
producer_in(struct relay_client *cl)
{
	char u[REGISTRY_UUID_STR], node[200] = "";

	if (relay_reply(cl, &ACK, 1) != 0)
		return 1;
	relay_registered(cl);
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	if (cl->lst->cluster != NULL)
		snprintf(node, sizeof(node), " on node %s",
		    cluster_node(cl->lst->cluster));
	LOGI("relay %s: producer %s registered uuid '%s' with %zu keys "
	    "(consumers: %zu)%s%s", cl->lst->o.name, stream_peer(cl->rc.s),
	    u, cl->nkeys, cl->rc.entry->nconsumers, node,
	    relay_opt_str(cl->grant));
	return 0;
}

static int
on_keys(struct relay_client *cl, const struct relay_event *ev)
{
	struct registry *reg = cl->lst->reg;
	const char *why = NULL;

	cl->nkeys = ev->count;
	if (cl->lst->cluster != NULL) {
		/* Visible cluster-wide before its 0x00. */
		switch (cluster_claim(cl->lst->cluster, &cl->rc, cl->uuid,
		    cl->ulen, ev->data, ev->len, ev->count, relay_on_cluster,
		    &why)) {
		case 1:
			return relay_wait_cluster(cl);
		default:
			return why != NULL ? refuse(cl, why) : producer_in(cl);
		}
	}
	if (registry_add_producer(reg, &cl->rc, cl->uuid, cl->ulen, ev->data,
	    ev->len, ev->count, &why) < 0)
		return refuse(cl, why);
	return producer_in(cl);
}

static int
on_accept(struct relay_client *cl, const struct relay_event *ev)
{
	char u[REGISTRY_UUID_STR], node[200] = "";
	const char *why = NULL;

	if (ev->role != RELAY_ACCEPT) {
		relay_set_reason(cl, "declined the keys (0x%02x)",
		    (unsigned)ev->role);
		cl->done = true;
		stream_end(cl->rc.s);
		return 1;
	}
	if (cl->rc.entry == NULL) {
		/* Detached meanwhile (other keys): its stream is closing. */
		cl->done = true;
		return 1;
	}
	if (registry_accept(&cl->rc, &why) < 0) {
		/*
		 * max_consumers were accepted since its uuid step.  Nothing
		 * answers an accept byte: the close (no frame, no byte after
		 * the keys) is the refusal, counted with the 0x01 ones.
		 */
		relay_set_reason(cl, "refused at its accept byte: %s", why);
		cl->lst->o.total.refused++;
		return relay_linger(cl);
	}
	relay_registered(cl);
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	if (cl->lst->cluster != NULL)
		snprintf(node, sizeof(node), ", producer on node %s",
		    cluster_holder(cl->lst->cluster, cl->rc.entry));
	LOGI("relay %s: consumer %s joined uuid '%s' (%zu keys)%s%s",
	    cl->lst->o.name, stream_peer(cl->rc.s), u, cl->nkeys, node,
	    relay_opt_str(cl->grant));
	return 0;
}

static int
on_event(void *arg, const struct relay_event *ev)
{
	struct relay_client *cl = relay_client_of(arg);
	struct stream *s = cl->rc.s;

	if (cl->done || cl->lingering || stream_closed(s))
		return 1;
	switch (ev->type) {
	case RELAY_EV_ROLE:
		return relay_reply(cl, &ACK, 1);
	case RELAY_EV_UUID:
		return on_uuid(cl, ev);
	case RELAY_EV_KEYS:
		return on_keys(cl, ev);
	case RELAY_EV_ACCEPT:
		return on_accept(cl, ev);
	case RELAY_EV_FRAMES:
		registry_publish(&cl->rc, ev->data, ev->count);
		return 0;
	case RELAY_EV_ERROR:
		if (ev->limit)
			return refuse(cl, ev->error);
		cl->done = true;
		if (ev->nomem) {
			relay_set_reason(cl, "%s", ev->error);
			stream_close(s, STREAM_CLOSE_NOMEM);
			return 1;
		}
		cl->lst->protocol_errors++;
		relay_set_reason(cl, "protocol error: %s", ev->error);
		stream_close(s, STREAM_CLOSE_LOCAL);
		return 1;
	}
	return 0;
}

/* Keeps bytes read while the cluster decides (at most one read). */
void
relay_hold(struct relay_client *cl, const char *data, size_t len)
{
	char *p;

	if (len == 0)
		return;
	if ((p = realloc(cl->held, cl->held_len + len)) == NULL) {
		cl->done = true;
		relay_set_reason(cl, "no memory for the bytes after its step");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return;
	}
	memcpy(p + cl->held_len, data, len);
	cl->held = p;
	cl->held_len += len;
}

static void
feed(struct relay_client *cl, const char *data, size_t len)
{
	size_t used;

	if (cl->waiting) {
		relay_hold(cl, data, len);
		return;
	}
	used = relay_parser_feed(&cl->p, data, len, on_event, &cl->rc);
	/* Stopped to wait for the cluster: the rest goes on afterwards. */
	if (cl->waiting)
		relay_hold(cl, data + used, len - used);
}

/* The first byte says the protocol: a device's role, or an HTTP method. */
static void
sniff(struct relay_client *cl, char first)
{
	if (!isalpha((unsigned char)first)) {
		cl->path = RELAY_PATH_DEVICE;
		return;
	}
	cl->path = RELAY_PATH_HTTP;
	if ((cl->head = malloc(sizeof(*cl->head))) == NULL) {
		cl->done = true;
		relay_set_reason(cl, "no memory for an HTTP request");
		stream_close(cl->rc.s, STREAM_CLOSE_NOMEM);
		return;
	}
	http_head_init(cl->head, HTTP_MAX_HEAD);
}

static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct relay_client *cl = relay_client_of(arg);

	if (cl->path == RELAY_PATH_UNKNOWN && len > 0)
		sniff(cl, data[0]);
	/* Once refused, bytes are read only to see the client close. */
	if (!cl->lingering && !cl->done) {
		switch (cl->path) {
		case RELAY_PATH_DEVICE:
			feed(cl, data, len);
			break;
		case RELAY_PATH_HTTP:
			relay_http_feed(cl, data, len);
			break;
		case RELAY_PATH_WS:
			ws_feed(cl->ws, data, len);
			break;
		case RELAY_PATH_UNKNOWN:
			break;
		}
	}
	if (!cl->done && !stream_closed(s))
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

/* Stops the feed until the cluster answers (relay_on_cluster). */
int
relay_wait_cluster(struct relay_client *cl)
{
	cl->waiting = true;
	stream_pause_reading(cl->rc.s);
	return 1;
}

/*
 * The cluster's answer: the claim or lookup is done (a connection that
 * closed meanwhile was forgotten by cluster_cancel, never answered).
 */
void
relay_on_cluster(struct relay_conn *rc, bool ok, const char *why)
{
	struct relay_client *cl = relay_client_of(rc);
	struct registry_entry *e;
	char *held = cl->held;
	size_t held_len = cl->held_len;
	int stop;

	cl->waiting = false;
	cl->held = NULL;
	cl->held_len = 0;
	if (cl->done || cl->lingering || stream_closed(rc->s)) {
		free(held);
		return;
	}
	if (cl->path == RELAY_PATH_HTTP) {
		(void)relay_web_resume(cl, ok, why, held, held_len);
		free(held);
		if (!cl->done && !stream_closed(rc->s))
			stream_resume_reading(rc->s);
		return;
	}
	if (!ok) {
		stop = refuse(cl, why);
	} else if (cl->p.role == RELAY_PRODUCER) {
		stop = producer_in(cl);
	} else {
		/* A producer holds it now: attached like any consumer. */
		e = registry_add_consumer(cl->lst->reg, rc, cl->uuid, cl->ulen,
		    &why);
		stop = e == NULL ? refuse(cl, why) : send_keys(cl, e);
	}
	if (!stop && !cl->done && held_len > 0)
		feed(cl, held, held_len);
	free(held);
	if (!cl->done && !stream_closed(rc->s))
		stream_resume_reading(rc->s);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct relay_client *cl = relay_client_of(w->data);

	(void)loop;
	(void)revents;
	cl->done = true;
	if (cl->lingering) {
		stream_close(cl->rc.s, STREAM_CLOSE_LOCAL);
		return;
	}
	relay_set_reason(cl, "no registration within %.1f s",
	    cl->lst->o.opts.header_timeout);
	stream_close(cl->rc.s, STREAM_CLOSE_TIMEOUT);
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct relay_client *cl = relay_client_of(arg);
	struct registry *reg = cl->lst->reg;
	double secs = ev_now(reg->loop) - cl->since;
	char u[REGISTRY_UUID_STR], reason[320];

	if (cl->reason != NULL)
		snprintf(reason, sizeof(reason), "%s", cl->reason);
	else if (stream_error(s)[0] != '\0')
		snprintf(reason, sizeof(reason), "%s: %s",
		    stream_close_reason_str(why), stream_error(s));
	else
		snprintf(reason, sizeof(reason), "%s",
		    stream_close_reason_str(why));
	registry_uuid_str(cl->uuid, cl->ulen, u, sizeof(u));
	if (cl->registered)
		LOGI("relay %s: %s %s left uuid '%s' (%zu keys) after %.1f s: "
		    "%llu frames, %llu dropped, %llu bytes in, %llu bytes out: "
		    "%s", cl->lst->o.name, relay_role_name(cl), stream_peer(s),
		    u, cl->nkeys, secs, (unsigned long long)cl->rc.frames,
		    (unsigned long long)cl->rc.dropped,
		    (unsigned long long)stream_bytes_in(s),
		    (unsigned long long)stream_bytes_out(s), reason);
	else
		log_limited(LOG_INFO, "relay %s: %s %s%s%s%s closed after "
		    "%.1f s, %llu bytes in, %llu bytes out: %s", cl->lst->o.name,
		    relay_role_name(cl), stream_peer(s),
		    cl->ulen ? " (uuid '" : "", u, cl->ulen ? "')" : "", secs,
		    (unsigned long long)stream_bytes_in(s),
		    (unsigned long long)stream_bytes_out(s), reason);
	if (cl->waiting)
		cluster_cancel(cl->lst->cluster, &cl->rc, cl->uuid, cl->ulen);
	registry_remove(&cl->rc);
	ev_timer_stop(reg->loop, &cl->timer);
	relay_parser_free(&cl->p);
	ws_free(cl->ws);
	free(cl->head);
	free(cl->held);
	LIST_REMOVE(cl, link);
	free(cl->uuid);
	free(cl->reason);
	free(cl->grant);
	cl->rc.magic = 0;
	cl->magic = 0;
	free(cl);
}

static struct relay_client *
client_new(struct relay_listener *lst, struct stream *s)
{
	struct relay_client *cl = calloc(1, sizeof(*cl));

	if (cl == NULL) {
		LOGW("relay %s: no memory for a connection from %s",
		    lst->o.name, stream_peer(s));
		stream_close(s, STREAM_CLOSE_NOMEM);
		return NULL;
	}
	cl->magic = RELAY_CLIENT_MAGIC;
	cl->lst = lst;
	LIST_INSERT_HEAD(&lst->conns, cl, link);
	registry_conn_init(&cl->rc, s, &lst->o);
	cl->since = ev_now(lst->reg->loop);
	relay_parser_init(&cl->p, &lst->o.opts.limits);
	stream_set_callbacks(s, on_close, &cl->rc);
	ev_timer_init(&cl->timer, on_timer, 0., 0.);
	cl->timer.data = &cl->rc;
	arm_timer(cl, lst->o.opts.header_timeout);
	return cl;
}

void
relay_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct relay_listener *lst;

	(void)sa;
	(void)salen;
	CAST_OBJ_NOTNULL(lst, arg, RELAY_LISTENER_MAGIC);
	if (client_new(lst, s) != NULL)
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

void
relay_take_http(struct relay_listener *lst, struct stream *s,
    struct http_head *head, const char *rest, size_t restlen)
{
	struct relay_client *cl;

	CHECK_OBJ_NOTNULL(lst, RELAY_LISTENER_MAGIC);
	if ((cl = client_new(lst, s)) == NULL) {
		free(head);
		return;
	}
	cl->path = RELAY_PATH_HTTP;
	cl->head = head;
	(void)relay_web_route(cl, rest, restlen);
	if (!cl->done && !stream_closed(s))
		(void)stream_read_bytes(s, READ_CHUNK, true, on_data);
}

void
relay_web_default(struct relay_web *w)
{
	memset(w, 0, sizeof(*w));
	ws_opts_default(&w->ws);
}

void
relay_listener_set_web(struct relay_listener *rl, const struct relay_web *w)
{
	rl->web = *w;
}

/* ---- listeners ---- */

struct relay_listener *
relay_listener_new(const char *name, struct registry *reg,
    const struct relay_opts *opts)
{
	struct relay_listener *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return NULL;
	rl->magic = RELAY_LISTENER_MAGIC;
	snprintf(rl->o.name, sizeof(rl->o.name), "%s", name);
	if (opts != NULL)
		rl->o.opts = *opts;
	else
		relay_opts_default(&rl->o.opts);
	rl->reg = reg;
	relay_web_default(&rl->web);
	LIST_INIT(&rl->conns);
	return rl;
}

void
relay_listener_free(struct relay_listener *rl)
{
	if (rl == NULL)
		return;
	acl_free(rl->acl);
	rl->magic = 0;
	free(rl);
}

bool
relay_listener_idle(const struct relay_listener *rl)
{
	return LIST_EMPTY(&rl->conns) && rl->o.devices == 0;
}

void
relay_listener_close_all(struct relay_listener *rl)
{
	struct relay_client *cl;

	if (rl == NULL)
		return;
	/* stream_close() defers the close callback: the list holds still. */
	LIST_FOREACH(cl, &rl->conns, link) {
		relay_set_reason(cl, "shutting down");
		stream_close(cl->rc.s, STREAM_CLOSE_LOCAL);
	}
}

void
relay_listener_set_cluster(struct relay_listener *rl, struct cluster *cl)
{
	rl->cluster = cl;
}

void
relay_listener_set_acl(struct relay_listener *rl, struct acl *acl)
{
	/* Only uuid steps read it, within one callback: no one holds it. */
	acl_free(rl->acl);
	rl->acl = acl;
}

const struct relay_origin *
relay_listener_origin(const struct relay_listener *rl)
{
	return &rl->o;
}

uint64_t
relay_listener_protocol_errors(const struct relay_listener *rl)
{
	return rl->protocol_errors;
}
