/* cluster_conn: see cluster_conn.h. */
#define _GNU_SOURCE
#include "cluster_conn.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handoff.h"
#include "log.h"
#include "natsev.h"

#define CONNECT_TIMEOUT_MS 500
#define RECONNECT_WAIT_MS 250
#define PING_INTERVAL_MS 2000
#define MAX_PINGS_OUT 2
#define IO_BUF_SIZE (256 * 1024)
#define RECONNECT_BUF_SIZE (1024 * 1024)
#define DRAIN_TIMEOUT_MS 2000

/* What the library's threads tell the loop (ring items are these + 1). */
enum conn_event {
	EV_MADE,		/* the connector thread is done (see made_status) */
	EV_CONNECTED,		/* connected after retrying */
	EV_DISCONNECTED,
	EV_RECONNECTED,
	EV_CLOSED,
};

struct cluster_conn {
	struct ev_loop *loop;
	struct natsev_loop el;
	struct handoff events;
	natsOptions *opts;
	char hb_subject[128], my_subject[160];
	struct cluster_conn_cb cb;
	/* Written by the connector thread before EV_MADE, read after. */
	natsConnection *nc;
	natsSubscription *sub_hb, *sub_me;
	natsStatus made_status;
	char made_error[256];
	pthread_t connector, closer;
	bool connector_made, closer_made;
	/* The loop's. */
	bool made;			/* EV_MADE seen: nc and subs usable */
	bool closing, closed;
	bool freeing;			/* events report nothing any more */
	/*
	 * The library's closed callback has run (its last one: the
	 * callbacks come in order on its thread), under `lock`: the
	 * connection's memory may go only after it.
	 */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool lib_closed;
};

static void
post(struct cluster_conn *cc, enum conn_event ev)
{
	/* The ring is large; events are few. */
	while (handoff_push(&cc->events, (void *)(uintptr_t)(ev + 1)) != 0)
		sched_yield();
}

static void
on_disconnected(natsConnection *nc, void *arg)
{
	(void)nc;
	post(arg, EV_DISCONNECTED);
}

static void
on_reconnected(natsConnection *nc, void *arg)
{
	(void)nc;
	post(arg, EV_RECONNECTED);
}

static void
on_closed(natsConnection *nc, void *arg)
{
	struct cluster_conn *cc = arg;

	(void)nc;
	post(cc, EV_CLOSED);
	pthread_mutex_lock(&cc->lock);
	cc->lib_closed = true;
	pthread_cond_broadcast(&cc->cond);
	pthread_mutex_unlock(&cc->lock);
}

/* Waits (2 s at most) for the library's closed callback to have run. */
static void
wait_lib_closed(struct cluster_conn *cc)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	pthread_mutex_lock(&cc->lock);
	while (!cc->lib_closed && pthread_cond_timedwait(&cc->cond, &cc->lock,
	    &until) == 0)
		;
	if (!cc->lib_closed)
		LOGW("cluster: the NATS library did not report its connection "
		    "closed within 2 s");
	pthread_mutex_unlock(&cc->lock);
}

static void
on_connected(natsConnection *nc, void *arg)
{
	(void)nc;
	post(arg, EV_CONNECTED);
}

/* Runs one message of a subscription to the owner, then frees it. */
static void
drain_sub(struct cluster_conn *cc, natsSubscription *sub, bool hb)
{
	int msgs = 0, bytes = 0;
	natsMsg *m = NULL;

	/* Asked first: an empty NextMsg writes an error text every time. */
	if (natsSubscription_GetPending(sub, &msgs, &bytes) != NATS_OK ||
	    msgs <= 0)
		return;
	while (msgs-- > 0 && natsSubscription_NextMsg(&m, sub, 0) == NATS_OK) {
		cc->cb.message(cc->cb.arg, hb,
		    (const uint8_t *)natsMsg_GetData(m),
		    (size_t)natsMsg_GetDataLength(m));
		natsMsg_Destroy(m);
		m = NULL;
	}
}

static void
after_read(void *arg)
{
	struct cluster_conn *cc = arg;

	if (!cc->made || cc->closed)
		return;
	/* Heartbeats first: a node heard of is alive before its messages. */
	drain_sub(cc, cc->sub_hb, true);
	drain_sub(cc, cc->sub_me, false);
}

static const char *
current_url(struct cluster_conn *cc, char *buf, size_t len)
{
	buf[0] = '\0';
	if (cc->made && natsev_up(&cc->el))
		(void)natsConnection_GetConnectedUrl(cc->nc, buf, len);
	return buf;
}

/*
 * The connector thread is done.  Until then the library's events are not
 * reported (the connection is not the loop's yet); its state now is.
 */
static void
made(struct cluster_conn *cc)
{
	char url[256];

	if (cc->connector_made) {
		pthread_join(cc->connector, NULL);
		cc->connector_made = false;
	}
	if (cc->nc == NULL) {
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_FAILED, "",
		    cc->made_error);
		return;
	}
	cc->made = true;
	if (natsev_up(&cc->el))
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_CONNECTED,
		    current_url(cc, url, sizeof(url)), "");
	else
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_DISCONNECTED, "",
		    cc->made_error[0] ? cc->made_error : "connecting");
	after_read(cc);
}

static void
on_event(void *item, void *arg)
{
	struct cluster_conn *cc = arg;
	enum conn_event ev = (enum conn_event)((uintptr_t)item - 1);
	char url[256];

	if (cc->freeing)
		return;
	if (ev == EV_MADE) {
		made(cc);
		return;
	}
	if (!cc->made || (cc->closing && ev != EV_CLOSED))
		return;
	switch (ev) {
	case EV_MADE:
		return;
	case EV_CONNECTED:
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_CONNECTED,
		    current_url(cc, url, sizeof(url)), "");
		return;
	case EV_DISCONNECTED:
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_DISCONNECTED, "", "");
		return;
	case EV_RECONNECTED:
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_RECONNECTED,
		    current_url(cc, url, sizeof(url)), "");
		return;
	case EV_CLOSED:
		cc->closed = true;
		cc->cb.state(cc->cb.arg, CLUSTER_CONN_CLOSED, "", "");
		return;
	}
}

/*
 * The connect: it blocks for each unreachable server (the connect
 * timeout), then goes on in the library's reconnect thread.  The
 * subscriptions are made here too: a call into the connection from the
 * loop could wait for that thread's lock.
 */
static void *
connector(void *arg)
{
	struct cluster_conn *cc = arg;
	natsConnection *nc = NULL;
	natsStatus s = natsConnection_Connect(&nc, cc->opts);

	cc->made_status = s;
	if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
		snprintf(cc->made_error, sizeof(cc->made_error), "%s (%s)",
		    natsStatus_GetText(s), nats_GetLastError(NULL));
		nc = NULL;
	} else {
		if (s == NATS_NOT_YET_CONNECTED)
			snprintf(cc->made_error, sizeof(cc->made_error),
			    "no server answers yet; retrying");
		s = natsConnection_SubscribeSync(&cc->sub_hb, nc,
		    cc->hb_subject);
		if (s == NATS_OK)
			s = natsConnection_SubscribeSync(&cc->sub_me, nc,
			    cc->my_subject);
		/* Never drop a message for being slow: drained per read. */
		if (s == NATS_OK)
			s = natsSubscription_SetPendingLimits(cc->sub_me, -1,
			    -1);
		if (s != NATS_OK) {
			snprintf(cc->made_error, sizeof(cc->made_error),
			    "subscribe: %s (%s)", natsStatus_GetText(s),
			    nats_GetLastError(NULL));
			natsSubscription_Destroy(cc->sub_hb);
			natsSubscription_Destroy(cc->sub_me);
			cc->sub_hb = cc->sub_me = NULL;
			natsConnection_Destroy(nc);
			nc = NULL;
		}
	}
	cc->nc = nc;
	post(cc, EV_MADE);
	nats_ReleaseThreadMemory();
	return NULL;
}

/* Options from [cluster]; NULL with err, and *key the key to blame. */
static natsOptions *
make_options(const struct config_cluster *cfg, const char *node,
    struct cluster_conn *cc, const char **key, char *err, size_t errlen)
{
	const char *urls[CONFIG_MAX_NATS];
	bool tls = cfg->nats_ca[0] || cfg->nats_cert[0];
	natsOptions *o = NULL;
	natsStatus s;
	const char *what = "options";

	for (size_t i = 0; i < cfg->nnats; i++) {
		urls[i] = cfg->nats[i];
		if (strncmp(urls[i], "tls://", 6) == 0)
			tls = true;
	}
	s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetServers(o, urls, (int)cfg->nnats);
	if (s == NATS_OK && node != NULL)
		s = natsOptions_SetName(o, node);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, RECONNECT_WAIT_MS);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetPingInterval(o, PING_INTERVAL_MS);
	if (s == NATS_OK)
		s = natsOptions_SetMaxPingsOut(o, MAX_PINGS_OUT);
	if (s == NATS_OK)
		s = natsOptions_SetIOBufSize(o, IO_BUF_SIZE);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(o, RECONNECT_BUF_SIZE);
	if (s == NATS_OK)
		s = natsOptions_SetFailRequestsOnDisconnect(o, true);
	if (s == NATS_OK)
		s = natsOptions_SetNoEcho(o, true);
	if (s == NATS_OK && tls)
		s = natsOptions_SetSecure(o, true);
	if (s == NATS_OK && cfg->nats_ca[0]) {
		what = "nats_ca";
		s = natsOptions_LoadCATrustedCertificates(o, cfg->nats_ca);
	}
	if (s == NATS_OK && cfg->nats_cert[0]) {
		what = "nats_cert";
		s = natsOptions_LoadCertificatesChain(o, cfg->nats_cert,
		    cfg->nats_key);
	}
	what = "options";
	if (s == NATS_OK && cfg->nats_user[0])
		s = natsOptions_SetUserInfo(o, cfg->nats_user,
		    cfg->nats_password);
	if (s == NATS_OK && cfg->nats_token[0])
		s = natsOptions_SetToken(o, cfg->nats_token);
	if (s == NATS_OK && cfg->nats_creds[0]) {
		what = "nats_creds";
		s = natsOptions_SetUserCredentialsFromFiles(o, cfg->nats_creds,
		    NULL);
	}
	if (s == NATS_OK && cc != NULL) {
		s = natsev_set_options(o, &cc->el);
		if (s == NATS_OK)
			s = natsOptions_SetDisconnectedCB(o, on_disconnected,
			    cc);
		if (s == NATS_OK)
			s = natsOptions_SetReconnectedCB(o, on_reconnected, cc);
		if (s == NATS_OK)
			s = natsOptions_SetClosedCB(o, on_closed, cc);
		if (s == NATS_OK)
			s = natsOptions_SetRetryOnFailedConnect(o, true,
			    on_connected, cc);
	}
	if (s != NATS_OK) {
		char why[320];
		snprintf(why, sizeof(why), "%s (%s)", natsStatus_GetText(s),
		    nats_GetLastError(NULL));
		snprintf(err, errlen, "%s", why);
		*key = what;
		natsOptions_Destroy(o);
		return NULL;
	}
	return o;
}

struct cluster_conn *
cluster_conn_new(struct ev_loop *loop, const struct config_cluster *cfg,
    const char *node, const char *hb_subject, const char *my_subject,
    const struct cluster_conn_cb *cb, char *err, size_t errlen)
{
	struct cluster_conn *cc = calloc(1, sizeof(*cc));
	const char *key = "nats";
	char why[384];

	if (cc == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	cc->loop = loop;
	cc->cb = *cb;
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->cond, NULL);
	snprintf(cc->hb_subject, sizeof(cc->hb_subject), "%s", hb_subject);
	snprintf(cc->my_subject, sizeof(cc->my_subject), "%s", my_subject);
	if (natsev_loop_init(&cc->el, loop) < 0 ||
	    handoff_init(&cc->events, loop, 1024, on_event, cc) < 0) {
		snprintf(err, errlen, "out of memory");
		cluster_conn_free(cc);
		return NULL;
	}
	cc->el.after_read = after_read;
	cc->el.after_read_arg = cc;
	if ((cc->opts = make_options(cfg, node, cc, &key, why,
	    sizeof(why))) == NULL) {
		snprintf(err, errlen, "%s: %s", key, why);
		cluster_conn_free(cc);
		return NULL;
	}
	errno = pthread_create(&cc->connector, NULL, connector, cc);
	if (errno != 0) {
		snprintf(err, errlen, "connector thread: %s", strerror(errno));
		cluster_conn_free(cc);
		return NULL;
	}
	cc->connector_made = true;
	return cc;
}

natsConnection *
cluster_conn_nats(const struct cluster_conn *cc)
{
	return cc->made ? cc->nc : NULL;
}

bool
cluster_conn_up(const struct cluster_conn *cc)
{
	return cc->made && !cc->closing &&
	    natsev_up((struct natsev_loop *)&cc->el);
}

void
cluster_conn_server(const struct cluster_conn *cc, char *out, size_t len)
{
	out[0] = '\0';
	if (cluster_conn_up(cc))
		(void)natsConnection_GetConnectedUrl(cc->nc, out, len);
}

int
cluster_conn_publish(struct cluster_conn *cc, const char *subject,
    const void *data, size_t len)
{
	if (!cluster_conn_up(cc) ||
	    natsConnection_Buffered(cc->nc) > CLUSTER_CONN_MAX_BUFFERED)
		return -1;
	return natsConnection_Publish(cc->nc, subject, data, (int)len) ==
	    NATS_OK ? 0 : -1;
}

/* Drains, or closes when it cannot (never connected): may block. */
static void *
closer(void *arg)
{
	struct cluster_conn *cc = arg;

	if (natsConnection_DrainTimeout(cc->nc, DRAIN_TIMEOUT_MS) != NATS_OK)
		natsConnection_Close(cc->nc);
	nats_ReleaseThreadMemory();
	return NULL;
}

void
cluster_conn_close(struct cluster_conn *cc)
{
	if (cc->closing)
		return;
	cc->closing = true;
	if (!cc->made) {
		/* Still connecting: nothing to drain; free waits for it. */
		cc->closed = true;
		return;
	}
	errno = pthread_create(&cc->closer, NULL, closer, cc);
	if (errno != 0) {
		LOGW("cluster: closer thread: %s; closing from the loop",
		    strerror(errno));
		natsConnection_Close(cc->nc);
		return;
	}
	cc->closer_made = true;
}

bool
cluster_conn_closed(const struct cluster_conn *cc)
{
	return cc->closed;
}

void
cluster_conn_free(struct cluster_conn *cc)
{
	if (cc == NULL)
		return;
	if (cc->connector_made) {
		/* Still connecting (at exit): let it finish, then close. */
		pthread_join(cc->connector, NULL);
		cc->connector_made = false;
	}
	if (cc->closer_made)
		pthread_join(cc->closer, NULL);
	natsSubscription_Destroy(cc->sub_hb);
	natsSubscription_Destroy(cc->sub_me);
	if (cc->nc != NULL) {
		natsConnection_Close(cc->nc);
		/* Its callbacks run on a thread of the library, later. */
		wait_lib_closed(cc);
		natsConnection_Destroy(cc->nc);
	}
	natsOptions_Destroy(cc->opts);
	/* Events posted meanwhile are reported no more. */
	cc->freeing = true;
	handoff_destroy(&cc->events);
	natsev_loop_destroy(&cc->el);
	pthread_cond_destroy(&cc->cond);
	pthread_mutex_destroy(&cc->lock);
	free(cc);
}

int
cluster_conn_check(const struct config_cluster *cfg, const char **key,
    char *err, size_t errlen)
{
	natsOptions *o;
	FILE *f;

	if (cfg->nats_creds[0] != '\0') {
		if ((f = fopen(cfg->nats_creds, "r")) == NULL) {
			*key = "nats_creds";
			snprintf(err, errlen, "%s: %s", cfg->nats_creds,
			    strerror(errno));
			return -1;
		}
		fclose(f);
	}
	if ((o = make_options(cfg, NULL, NULL, key, err, errlen)) == NULL)
		return -1;
	natsOptions_Destroy(o);
	return 0;
}
