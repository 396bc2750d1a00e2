/* tcpserver: see tcpserver.h. */
#define _GNU_SOURCE
#include "tcpserver.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"
#include "metrics.h"
#include "proxy_accept.h"

/* ---- live connections, per source address ---- */

#define TABLE_MIN_BUCKETS 16

struct source_key {
	uint8_t len;			/* 4, 16, or 0: no address (counted
					 * globally only) */
	uint8_t addr[16];
};

/* One source address and its live connections; freed at 0. */
struct conn_source {
	struct conn_source *next;	/* hash chain */
	struct conn_table *tab;
	size_t count;
	struct source_key key;
};

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
	size_t max_conns;		/* 0 = unlimited */
	const char *max_key;		/* its configuration key, for logs */
	size_t max_per_source;		/* 0 = unlimited */
	/*
	 * Counts live connections once limits are set.  Its own allocation:
	 * streams still open when the server is freed (a drain that ran out
	 * of time) keep it, and the last one to go frees it.
	 */
	struct conn_table *conns;
	struct accesslog *access;	/* NULL: no access log */
	struct proxy_accept *proxy;	/* accept_proxy: headers being read */
};

/*
 * A connection with an access log line to write when it goes: the count
 * hook it would have had, and what the line needs.
 */
struct conn_rec {
	stream_cb counted;		/* NULL: not counted */
	void *counted_arg;
	struct accesslog *log;
	struct ev_loop *loop;
	ev_tstamp start;
};

struct conn_table {
	size_t live;
	bool orphaned;			/* its server was freed */
	uint64_t seed;
	struct conn_source **buckets;
	size_t nbuckets;		/* a power of two */
	size_t nsources;
};

/* IPv4-mapped IPv6 is the IPv4 address: one host, one count. */
static void
source_key(const struct sockaddr *sa, socklen_t salen, struct source_key *k)
{
	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET &&
	    salen >= (socklen_t)sizeof(struct sockaddr_in)) {
		memcpy(k->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		k->len = 4;
	} else if (sa->sa_family == AF_INET6 &&
	    salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			memcpy(k->addr, a->s6_addr + 12, 4);
			k->len = 4;
		} else {
			memcpy(k->addr, a->s6_addr, 16);
			k->len = 16;
		}
	}
}

/* FNV-1a from a per-table seed: addresses cannot be picked to collide. */
static size_t
source_bucket(const struct conn_table *t, const struct source_key *k)
{
	uint64_t h = 1469598103934665603ull ^ t->seed;

	h ^= k->len;
	h *= 1099511628211ull;
	for (size_t i = 0; i < k->len; i++) {
		h ^= k->addr[i];
		h *= 1099511628211ull;
	}
	return (size_t)(h ^ h >> 32) & (t->nbuckets - 1);
}

static struct conn_table *
table_new(void)
{
	struct conn_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->nbuckets = TABLE_MIN_BUCKETS;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (t->buckets == NULL) {
		free(t);
		return NULL;
	}
	if (getrandom(&t->seed, sizeof(t->seed), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(t->seed))
		t->seed = (uint64_t)time(NULL) * 2654435761u ^
		    (uint64_t)(uintptr_t)t;
	return t;
}

/* Only once nothing counts in it: sources are freed as they reach 0. */
static void
table_free(struct conn_table *t)
{
	free(t->buckets);
	free(t);
}

static struct conn_source *
source_find(const struct conn_table *t, const struct source_key *k)
{
	struct conn_source *src = t->buckets[source_bucket(t, k)];

	while (src != NULL && (src->key.len != k->len ||
	    memcmp(src->key.addr, k->addr, k->len) != 0))
		src = src->next;
	return src;
}

/* Doubles the buckets; without memory the chains just grow longer. */
static void
table_grow(struct conn_table *t)
{
	struct conn_source **old = t->buckets;
	size_t n = t->nbuckets;

	t->buckets = calloc(n * 2, sizeof(*t->buckets));
	if (t->buckets == NULL) {
		t->buckets = old;
		return;
	}
	t->nbuckets = n * 2;
	for (size_t i = 0; i < n; i++) {
		while (old[i] != NULL) {
			struct conn_source *src = old[i];
			size_t b = source_bucket(t, &src->key);
			old[i] = src->next;
			src->next = t->buckets[b];
			t->buckets[b] = src;
		}
	}
	free(old);
}

static struct conn_source *
source_add(struct conn_table *t, const struct source_key *k)
{
	struct conn_source *src = calloc(1, sizeof(*src));
	size_t b;

	if (src == NULL)
		return NULL;
	src->tab = t;
	src->key = *k;
	if (t->nsources >= t->nbuckets)
		table_grow(t);
	b = source_bucket(t, k);
	src->next = t->buckets[b];
	t->buckets[b] = src;
	t->nsources++;
	return src;
}

static void
source_remove(struct conn_table *t, struct conn_source *src)
{
	struct conn_source **pp = &t->buckets[source_bucket(t, &src->key)];

	while (*pp != src)
		pp = &(*pp)->next;
	*pp = src->next;
	t->nsources--;
	free(src);
}

static void
table_release(struct conn_table *t)
{
	t->live--;
	if (t->live == 0 && t->orphaned)
		table_free(t);
}

/* Free hooks: a counted connection's stream is gone. */
static void
conn_freed(struct stream *s, void *arg)
{
	(void)s;
	table_release(arg);
}

static void
source_conn_freed(struct stream *s, void *arg)
{
	struct conn_source *src = arg;
	struct conn_table *t = src->tab;

	(void)s;
	if (--src->count == 0)
		source_remove(t, src);
	table_release(t);
}

static void
rec_freed(struct stream *s, void *arg)
{
	struct conn_rec *r = arg;

	if (r->counted != NULL)
		r->counted(s, r->counted_arg);
	accesslog_write(r->log, stream_peer(s), stream_bytes_in(s),
	    stream_bytes_out(s), ev_now(r->loop) - r->start,
	    stream_close_reason_str(stream_close_why(s)));
	accesslog_unref(r->log);
	free(r);
}

/*
 * With an access log, the count hook moves into a record whose hook also
 * writes the line.  0 or -1 (memory: the connection is then not logged).
 */
static int
log_conn(struct tcpserver *srv, struct stream *s)
{
	struct conn_rec *r = malloc(sizeof(*r));

	if (r == NULL)
		return -1;
	r->counted = stream_free_hook(s, &r->counted_arg);
	r->log = accesslog_ref(srv->access);
	r->loop = srv->sl->loop;
	r->start = ev_now(r->loop);
	stream_set_free_hook(s, rec_freed, r);
	return 0;
}

/* The limit a new connection would break (its config key), or NULL. */
static const char *
limit_broken(const struct tcpserver *srv, const struct source_key *k,
    struct conn_source **src, size_t *limit)
{
	const struct conn_table *t = srv->conns;

	*src = NULL;
	if (srv->max_conns > 0 && t->live >= srv->max_conns) {
		*limit = srv->max_conns;
		return srv->max_key;
	}
	if (srv->max_per_source > 0 && k->len > 0) {
		*src = source_find(t, k);
		if (*src != NULL && (*src)->count >= srv->max_per_source) {
			*limit = srv->max_per_source;
			return "max_connections_per_source";
		}
	}
	return NULL;
}

/* Counts a new connection until its stream is freed.  0 or -1 (memory). */
static int
count_conn(struct tcpserver *srv, struct stream *s,
    const struct source_key *k, struct conn_source *src)
{
	struct conn_table *t = srv->conns;

	if (srv->max_per_source > 0 && k->len > 0) {
		if (src == NULL && (src = source_add(t, k)) == NULL)
			return -1;
		src->count++;
		t->live++;
		stream_set_free_hook(s, source_conn_freed, src);
		return 0;
	}
	t->live++;
	stream_set_free_hook(s, conn_freed, t);
	return 0;
}

int
tcpserver_set_limits(struct tcpserver *srv, size_t max, size_t per_source)
{
	if (srv->conns == NULL && (max > 0 || per_source > 0) &&
	    (srv->conns = table_new()) == NULL)
		return -1;
	srv->max_conns = max;
	srv->max_per_source = per_source;
	return 0;
}

size_t
tcpserver_live(const struct tcpserver *srv)
{
	return srv->conns != NULL ? srv->conns->live : 0;
}

size_t
tcpserver_sources(const struct tcpserver *srv)
{
	return srv->conns != NULL ? srv->conns->nsources : 0;
}

/* ---- accepting ---- */

struct tcpserver *
tcpserver_new(struct stream_loop *sl, const char *name,
    const struct stream_opts *opts, struct tls_ctx *tls,
    tcpserver_handler handle_stream, void *arg)
{
	struct tcpserver *srv = calloc(1, sizeof(*srv));

	if (srv == NULL)
		return NULL;
	srv->sl = sl;
	snprintf(srv->name, sizeof(srv->name), "%s", name ? name : "server");
	tcpserver_set_opts(srv, opts);
	srv->tls = tls ? tls_ctx_ref(tls) : NULL;
	srv->handle_stream = handle_stream;
	srv->arg = arg;
	srv->max_key = "max_connections";
	return srv;
}

static void
on_accept(int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct tcpserver *srv = arg;
	struct conn_source *src = NULL;
	struct source_key key;
	struct stream *s;
	char peer[64];

	if (srv->conns != NULL) {
		size_t limit = 0;
		const char *which;
		source_key(sa, salen, &key);
		which = limit_broken(srv, &key, &src, &limit);
		if (which != NULL) {
			/* Before any work: a flood costs an accept and a close. */
			close(fd);
			if (srv->stats != NULL)
				srv->stats->refused++;
			netutil_format_addr(sa, peer, sizeof(peer));
			log_limited(LOG_WARN, "%s: refused a connection from "
			    "%s: %s (%zu) reached", srv->name, peer, which,
			    limit);
			return;
		}
	}
	/* Frames are small and latency matters more than packet count. */
	(void)netutil_set_nodelay(fd);
	s = stream_new(srv->sl, fd, &srv->opts);
	if (s == NULL)
		goto fail;
	stream_set_peer(s, sa);
	if (srv->conns != NULL && count_conn(srv, s, &key, src) < 0) {
		stream_close(s, STREAM_CLOSE_NOMEM);
		LOGW("%s: no memory to count a connection from %s", srv->name,
		    stream_peer(s));
		return;
	}
	if (srv->access != NULL && log_conn(srv, s) < 0)
		LOGW("%s: no memory to log a connection from %s", srv->name,
		    stream_peer(s));
	if (srv->tls != NULL && tls_stream_accept(s, srv->tls) < 0) {
		stream_close(s, STREAM_CLOSE_NOMEM);
		LOGW("%s: cannot set up TLS for %s", srv->name,
		    stream_peer(s));
		return;
	}
	stream_set_stats(s, srv->stats);
	if (srv->stats != NULL)
		srv->stats->accepted++;
	srv->handle_stream(s, sa, salen, srv->arg);
	return;
fail:
	netutil_format_addr(sa, peer, sizeof(peer));
	LOGW("%s: no memory for a connection from %s", srv->name, peer);
	close(fd);
}

/*
 * accept_proxy: the socket waits for its PROXY header first; on_accept
 * then sees the client's address from it, for everything (limits, logs).
 */
static void
on_socket(int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct tcpserver *srv = arg;
	char peer[64];

	if (srv->proxy == NULL) {
		on_accept(fd, sa, salen, srv);
		return;
	}
	/*
	 * Sockets waiting for their header count against max_connections
	 * (not per source: their source is still unknown), or silent ones
	 * would get around it.
	 */
	if (srv->conns != NULL && srv->max_conns > 0 && srv->conns->live +
	    proxy_accept_waiting(srv->proxy) >= srv->max_conns) {
		close(fd);
		if (srv->stats != NULL)
			srv->stats->refused++;
		netutil_format_addr(sa, peer, sizeof(peer));
		log_limited(LOG_WARN, "%s: refused a connection from %s: "
		    "max_connections (%zu) reached", srv->name, peer,
		    srv->max_conns);
		return;
	}
	proxy_accept_add(srv->proxy, fd, sa, salen);
}

int
tcpserver_set_accept_proxy(struct tcpserver *srv, bool on)
{
	if (!on || srv->proxy != NULL)
		return 0;
	srv->proxy = proxy_accept_new(srv->sl->loop, srv->name,
	    srv->opts.handshake_timeout, on_accept, srv);
	if (srv->proxy == NULL)
		return -1;
	proxy_accept_set_stats(srv->proxy, srv->stats);
	return 0;
}

int
tcpserver_add_sockets(struct tcpserver *srv, const int *fds, size_t n)
{
	if (srv->nacc + n > TCPSERVER_MAX_SOCKETS)
		return -1;
	for (size_t i = 0; i < n; i++) {
		struct accept_handler *ah = &srv->acc[srv->nacc++];
		netutil_accept_init(ah, srv->sl->loop, fds[i],
		    NETUTIL_DEFAULT_BACKLOG, on_socket, srv);
		netutil_accept_start(ah);
	}
	return 0;
}

int
tcpserver_bind(struct tcpserver *srv, const char *address, int port,
    int family, int backlog, bool reuse_port, char *err, size_t errlen)
{
	size_t room = TCPSERVER_MAX_SOCKETS - srv->npending - srv->nacc;
	int n = netutil_bind_sockets(address, port, family, backlog,
	    reuse_port, srv->pending + srv->npending, room, err, errlen);

	if (n < 0)
		return -1;
	srv->npending += (size_t)n;
	return 0;
}

int
tcpserver_adopt(struct tcpserver *srv, const int *fds, size_t n)
{
	if (srv->npending + srv->nacc + n > TCPSERVER_MAX_SOCKETS)
		return -1;
	memcpy(srv->pending + srv->npending, fds, n * sizeof(*fds));
	srv->npending += n;
	return 0;
}

size_t
tcpserver_fds(const struct tcpserver *srv, int *fds, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < srv->nacc && n < max; i++)
		fds[n++] = srv->acc[i].fd;
	for (size_t i = 0; i < srv->npending && n < max; i++)
		fds[n++] = srv->pending[i];
	return n;
}

int
tcpserver_bind_unix(struct tcpserver *srv, const char *path, unsigned mode,
    uid_t uid, gid_t gid, char *err, size_t errlen)
{
	int fd;

	if (srv->npending + srv->nacc >= TCPSERVER_MAX_SOCKETS) {
		snprintf(err, errlen, "more than %d sockets",
		    TCPSERVER_MAX_SOCKETS);
		return -1;
	}
	fd = netutil_bind_unix(path, NETUTIL_DEFAULT_BACKLOG, mode, uid, gid,
	    err, errlen);
	if (fd < 0)
		return -1;
	srv->pending[srv->npending++] = fd;
	return 0;
}

void
tcpserver_start(struct tcpserver *srv)
{
	/* tcpserver_bind() left room for them. */
	(void)tcpserver_add_sockets(srv, srv->pending, srv->npending);
	srv->npending = 0;
}

int
tcpserver_port(const struct tcpserver *srv)
{
	if (srv->nacc > 0)
		return netutil_local_port(srv->acc[0].fd);
	if (srv->npending > 0)
		return netutil_local_port(srv->pending[0]);
	return -1;
}

size_t
tcpserver_addresses(const struct tcpserver *srv,
    struct sockaddr_storage *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < srv->nacc + srv->npending && n < max; i++) {
		int fd = i < srv->nacc ? srv->acc[i].fd :
		    srv->pending[i - srv->nacc];
		socklen_t len = sizeof(out[n]);
		if (getsockname(fd, (struct sockaddr *)&out[n], &len) == 0)
			n++;
	}
	return n;
}

void
tcpserver_set_tls(struct tcpserver *srv, struct tls_ctx *tls)
{
	struct tls_ctx *old = srv->tls;

	srv->tls = tls ? tls_ctx_ref(tls) : NULL;
	tls_ctx_unref(old);
}

void
tcpserver_set_opts(struct tcpserver *srv, const struct stream_opts *opts)
{
	if (opts != NULL)
		srv->opts = *opts;
	else
		stream_opts_default(&srv->opts);
}

void
tcpserver_set_limit_key(struct tcpserver *srv, const char *key)
{
	srv->max_key = key;
}

void
tcpserver_set_access_log(struct tcpserver *srv, struct accesslog *log)
{
	struct accesslog *old = srv->access;

	srv->access = log != NULL ? accesslog_ref(log) : NULL;
	accesslog_unref(old);
}

void
tcpserver_set_stats(struct tcpserver *srv, struct metrics_conn *stats)
{
	srv->stats = stats;
	if (srv->proxy != NULL)
		proxy_accept_set_stats(srv->proxy, stats);
}

void
tcpserver_stop(struct tcpserver *srv)
{
	for (size_t i = 0; i < srv->nacc; i++) {
		netutil_accept_stop(&srv->acc[i]);
		close(srv->acc[i].fd);
	}
	srv->nacc = 0;
	for (size_t i = 0; i < srv->npending; i++)
		close(srv->pending[i]);
	srv->npending = 0;
}

void
tcpserver_free(struct tcpserver *srv)
{
	if (srv == NULL)
		return;
	tcpserver_stop(srv);
	proxy_accept_free(srv->proxy);
	tls_ctx_unref(srv->tls);
	accesslog_unref(srv->access);
	if (srv->conns != NULL) {
		if (srv->conns->live == 0)
			table_free(srv->conns);
		else
			srv->conns->orphaned = true;
	}
	free(srv);
}
