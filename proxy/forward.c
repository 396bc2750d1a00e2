/*
 * forward: see forward.h.
 *
 * A connection's steps (enum conn_state), each waiting for one event:
 *
 *   CLIENT_HANDSHAKE     the client's TLS handshake (plain: one loop turn)
 *         |  done: route to a backend set, pick a backend of it
 *         |  (backend.h), connect without blocking
 *         v
 *   PROXY_HEADER         proxy_protocol on: the connect, then the header
 *         |              written in the clear (no such step when off)
 *         v
 *   BACKEND_TLS          backend_tls on: the connect, then the handshake
 *     or BACKEND_CONNECT otherwise: the connect (after a header: one turn)
 *         |  ready
 *         v
 *   PUMP                 bytes flow both ways
 *         |  a side's EOF, or its FIN while its reading is held back
 *         v
 *   HALF_CLOSED          the other direction still flows; fin_timeout may
 *                        apply (forward.h); a second end changes no state.
 *                        The pump starts here if a side ended before it.
 *
 * A backend stream that closes in PROXY_HEADER, BACKEND_TLS or
 * BACKEND_CONNECT is a failed backend: the next one is tried from
 * connect_backend() (each at most once), else the client is closed.  In
 * any step, a close other than a clean EOF closes the other side too, and
 * the connection is freed once both streams' close callbacks have run.
 *
 * Each side's sending has its own state (enum side_end: open, FIN seen
 * while held back, EOF read), kept from any step: a side that ended while
 * the backend was being reached is passed on when the pump starts.
 *
 * Paused reads have one record, the stream's own: a side's next read is
 * armed as soon as its bytes are handed on, and the side is paused when
 * the other's queue passes high_water; the drain of that queue resumes
 * it (stream_resume_reading() does nothing to a stream not paused).
 */
#define _GNU_SOURCE
#include "forward.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "log.h"
#include "metrics.h"

#define CONN_MAGIC 0x66776463u	/* "fwdc" */

/* A reason longer than this is cut (a long backend name, a long error). */
#define REASON_MAX 200

enum { CLIENT = 0, BACKEND = 1 };

enum conn_state {
	ST_CLIENT_HANDSHAKE,
	ST_PROXY_HEADER,
	ST_BACKEND_TLS,
	ST_BACKEND_CONNECT,
	ST_PUMP,
	ST_HALF_CLOSED,
};

/* How far one side's sending has got. */
enum side_end {
	END_OPEN,	/* it may send more */
	END_FIN,	/* its FIN came while we held its reading back: it
			   sends no more, what came before is still to read */
	END_EOF,	/* read to its end, passed on as a half-close */
};

/*
 * An address a TCP listener accepts: a fifth of a sockaddr_storage, and
 * a connection holds two of them for as long as it lives.
 */
union inet_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* One client and its backend: one allocation, freed with the last side. */
struct forward_conn {
	uint32_t magic;
	struct forward_listener *fl;
	LIST_ENTRY(forward_conn) link;	/* the listener's connections */
	struct stream *s[2];		/* NULL once closed */
	struct metrics_conn *stats;	/* the listener's, or NULL */
	enum conn_state state;
	/* the client, and the address it reached (PROXY headers; 0: unknown) */
	union inet_addr src, dst;
	socklen_t srclen, dstlen;
	uint16_t header_len;		/* the PROXY header's, if one went */
	int set;			/* the backend set; -1: not routed */
	int backend;			/* index being tried / used, or -1 */
	bool holding;			/* an attempt open on the pool */
	uint32_t tried;			/* backends tried (bit i: index i) */
	size_t tries;
	unsigned char end[2];		/* enum side_end */
	int first_eof;			/* CLIENT, BACKEND, or -1: none yet */
	ev_timer idle;			/* idle_timeout / fin_timeout */
	ev_tstamp started;		/* accepted */
	char peer[64];			/* the client, for logs */
	uint64_t up, down;		/* bytes forwarded, kept at close */
	uint64_t counted_in;		/* backend bytes in the metrics */
	uint64_t counted_out;
	char *reason;			/* the first thing that ended it */
};

/* One per forward listener and process: what its connections share. */
struct forward_listener {
	char name[64];
	struct stream_loop *sl;
	struct backend_pool *pool;
	struct forward_route routes[FORWARD_MAX_ROUTES];
	size_t nroutes;
	bool nomatch_refuse;
	bool proxy_tlvs;
	double connect_timeout;
	double idle_timeout;
	double fin_timeout;
	size_t high_water;
	enum forward_proxy proxy;
	struct tls_ctx *backend_tls;	/* referenced */
	char backend_sni[256];
	LIST_HEAD(, forward_conn) conns;	/* live connections */
	size_t nconns;
	struct log_limit lines;		/* the connection lines */
	ev_timer lines_report;		/* says how many were left out */
};

static void pump_start(struct forward_conn *c);
static void connect_backend(struct forward_conn *c, const char *last,
    const char *err);

/* ---- connection bookkeeping ---- */

static struct forward_conn *
conn_of(void *arg)
{
	struct forward_conn *c = arg;

	/* A stale pointer shows up here in tests, not as silent corruption. */
	if (c == NULL || c->magic != CONN_MAGIC)
		abort();
	return c;
}

static int
side_of(const struct forward_conn *c, const struct stream *s)
{
	return s == c->s[CLIENT] ? CLIENT : BACKEND;
}

/* Keeps the first reason only: what ended a connection, not the echo. */
static void set_reason(struct forward_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
set_reason(struct forward_conn *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->reason != NULL)
		return;
	/*
	 * Allocated: a connection has none until it ends, and an idle one
	 * should not carry REASON_MAX bytes for it.  Without memory the
	 * close is logged with the side that closed first, as when nothing
	 * set one.
	 */
	va_start(ap, fmt);
	n = vasprintf(&c->reason, fmt, ap);
	va_end(ap);
	if (n < 0)
		c->reason = NULL;
	else if (n >= REASON_MAX)
		c->reason[REASON_MAX - 1] = '\0';
}

/* Closing streams stay in s[] until their close callback has run. */
static bool
client_alive(const struct forward_conn *c)
{
	return c->s[CLIENT] != NULL && !stream_closed(c->s[CLIENT]);
}

/* A backend is being reached: its stream closing now is a failure. */
static bool
reaching_backend(const struct forward_conn *c)
{
	return c->state == ST_PROXY_HEADER || c->state == ST_BACKEND_TLS ||
	    c->state == ST_BACKEND_CONNECT;
}

static bool
pumping(const struct forward_conn *c)
{
	return c->state == ST_PUMP || c->state == ST_HALF_CLOSED;
}

static const char *
backend_label(const struct forward_conn *c)
{
	return c->backend < 0 ? "-" :
	    backend_get(c->fl->pool, c->backend)->label;
}

/* Backend bytes into the listener's counters, as they move. */
static void
count_backend(struct forward_conn *c)
{
	struct stream *b = c->s[BACKEND];
	uint64_t in, out;

	if (b == NULL)
		return;
	in = stream_bytes_in(b);
	out = stream_bytes_out(b);
	if (c->stats != NULL) {
		c->stats->backend_bytes_in += in - c->counted_in;
		c->stats->backend_bytes_out += out - c->counted_out;
	}
	c->counted_in = in;
	c->counted_out = out;
}

/* Why it ended: the first failure, else the side that finished first. */
static const char *
conn_reason(const struct forward_conn *c)
{
	if (c->reason != NULL)
		return c->reason;
	if (c->first_eof == CLIENT)
		return "client closed";
	if (c->first_eof == BACKEND)
		return "backend closed";
	return "done";
}

/* How many connection lines were left out, if any were. */
static void
report_lines(struct forward_listener *fl)
{
	unsigned long n = log_limit_take(&fl->lines);

	if (n > 0)
		LOGI("%s: %lu connection lines suppressed", fl->name, n);
}

static void
lines_report_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct forward_listener *fl = w->data;

	(void)loop;
	(void)revents;
	report_lines(fl);
}

/*
 * One line per connection, but at most LOG_BURST a second per listener: a
 * crowd (3,000 clients of a dead backend wrote 3,000 lines) must
 * not flood the log.  The count of those left out goes before the next
 * line let through, or a second after the first left out, so a burst that
 * ends is not left unreported until the next one.
 */
static void
log_conn(struct forward_conn *c)
{
	struct forward_listener *fl = c->fl;

	if (!log_enabled(LOG_INFO))
		return;
	if (!log_limit_pass(&fl->lines)) {
		if (!ev_is_active(&fl->lines_report)) {
			ev_timer_set(&fl->lines_report, 1., 0.);
			ev_timer_start(fl->sl->loop, &fl->lines_report);
		}
		return;
	}
	report_lines(fl);
	LOGI("%s: %s -> %s: closed after %.3f s, %llu bytes up, %llu bytes "
	    "down: %s", fl->name, c->peer, backend_label(c),
	    ev_now(fl->sl->loop) - c->started, (unsigned long long)c->up,
	    (unsigned long long)c->down, conn_reason(c));
}

static void
conn_free(struct forward_conn *c)
{
	struct forward_listener *fl = c->fl;

	ev_timer_stop(fl->sl->loop, &c->idle);
	if (c->holding)
		backend_done(fl->pool, c->backend);
	if (c->state != ST_CLIENT_HANDSHAKE) {
		log_conn(c);
	} else {
		/* tls.c has logged the failed handshake (rate-limited). */
		LOGD("%s: %s: closed during the handshake: %s", fl->name,
		    c->peer, conn_reason(c));
	}
	LIST_REMOVE(c, link);
	fl->nconns--;
	c->magic = 0;
	free(c->reason);
	free(c);
}

/* ---- the pump ---- */

static void on_data(struct stream *s, const char *data, size_t len,
    void *arg);

static void
arm_read(struct forward_conn *c, int side)
{
	struct stream *s = c->s[side];

	if (s != NULL && !stream_reading(s))
		(void)stream_read_bytes(s, c->fl->high_water, true, on_data);
}

/* The other side's queue has drained: read on, if it was paused. */
static void
on_drained(struct stream *s, void *arg)
{
	struct forward_conn *c = conn_of(arg);
	struct stream *from = c->s[1 - side_of(c, s)];

	if (from != NULL)
		stream_resume_reading(from);
}

/*
 * Bytes from one side go straight to the other.  The next read is armed
 * at once; a pause holds it (and the socket) until on_drained.
 */
static void
on_data(struct stream *s, const char *data, size_t len, void *arg)
{
	struct forward_conn *c = conn_of(arg);
	int from = side_of(c, s);
	struct stream *to = c->s[1 - from];

	/* A gone or failing peer closes us from its close callback. */
	if (to == NULL || stream_write(to, data, len, on_drained) < 0)
		return;
	count_backend(c);
	arm_read(c, from);
	if (stream_write_pending(to) > c->fl->high_water)
		stream_pause_reading(s);
}

static void
close_both(struct forward_conn *c, enum stream_close_reason why)
{
	for (int i = 0; i < 2; i++)
		if (c->s[i] != NULL)
			stream_close(c->s[i], why);
}

/* The pair's limit now (0: none): fin_timeout once a side has ended. */
static double
pair_timeout(const struct forward_conn *c, bool *fin)
{
	const struct forward_listener *fl = c->fl;

	*fin = c->state == ST_HALF_CLOSED && fl->fin_timeout > 0 &&
	    (fl->idle_timeout <= 0 || fl->fin_timeout < fl->idle_timeout);
	return *fin ? fl->fin_timeout : fl->idle_timeout;
}

/* Traffic either way keeps the pair open, whichever limit applies. */
static void
idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct forward_conn *c = conn_of(w->data);
	ev_tstamp last = 0, now = ev_now(loop);
	bool fin;
	double limit = pair_timeout(c, &fin);

	(void)revents;
	for (int i = 0; i < 2; i++)
		if (c->s[i] != NULL && stream_last_io(c->s[i]) > last)
			last = stream_last_io(c->s[i]);
	if (now - last >= limit) {
		ev_timer_stop(loop, w);
		/* Nothing is cut mid-flight: a clean close_notify and FIN. */
		if (fin)
			set_reason(c, "idle for %g s after the %s closed",
			    limit, c->first_eof == CLIENT ? "client" :
			    "backend");
		else
			set_reason(c, "idle for %g s", limit);
		close_both(c, STREAM_CLOSE_LOCAL);
		return;
	}
	w->repeat = last + limit - now;
	ev_timer_again(loop, w);
}

/*
 * (Re)starts the pair's timer for the limit that applies now, counted from
 * now: the pump's start, or a side's end.
 */
static void
timer_restart(struct forward_conn *c)
{
	struct ev_loop *loop = c->fl->sl->loop;
	bool fin;
	double limit = pair_timeout(c, &fin);

	if (!pumping(c))
		return;		/* pump_start() starts it */
	/* A repeat of 0 stops it. */
	c->idle.repeat = limit > 0 ? limit : 0.;
	ev_timer_again(loop, &c->idle);
}

static void
side_ended(struct forward_conn *c, int side, enum side_end how)
{
	c->end[side] = (unsigned char)how;
	if (c->first_eof < 0)
		c->first_eof = side;
	/* A second end moves nothing the timer would not see. */
	if (c->state == ST_PUMP) {
		c->state = ST_HALF_CLOSED;
		timer_restart(c);
	}
}

/* One direction has ended: pass the half-close on. */
static void
on_eof(struct stream *s, void *arg)
{
	struct forward_conn *c = conn_of(arg);
	int from = side_of(c, s);

	side_ended(c, from, END_EOF);
	if (pumping(c) && c->s[1 - from] != NULL)
		stream_shutdown_write(c->s[1 - from]);
}

/*
 * A side sent its FIN while we held its reading back (the other side takes
 * nothing): its bytes still wait to be passed on, and may never be, so
 * from now on fin_timeout counts.  A client that closed while its backend
 * stopped reading lived until shutdown otherwise.
 */
static void
on_fin(struct stream *s, void *arg)
{
	struct forward_conn *c = conn_of(arg);
	int side = side_of(c, s);

	if (c->end[side] == END_OPEN)
		side_ended(c, side, END_FIN);
}

static void
pump_start(struct forward_conn *c)
{
	struct forward_listener *fl = c->fl;

	c->state = c->end[CLIENT] != END_OPEN || c->end[BACKEND] != END_OPEN ?
	    ST_HALF_CLOSED : ST_PUMP;
	LOGD("%s: %s -> %s: connected", fl->name, c->peer,
	    backend_label(c));
	timer_restart(c);
	/* A side that ended while the backend was being reached. */
	for (int i = 0; i < 2; i++)
		if (c->end[i] == END_EOF && c->s[1 - i] != NULL)
			stream_shutdown_write(c->s[1 - i]);
	arm_read(c, CLIENT);
	arm_read(c, BACKEND);
}

/* ---- the backend ---- */

static void
on_backend_ready(struct stream *s, void *arg)
{
	struct forward_conn *c = conn_of(arg);

	(void)s;
	backend_connected(c->fl->pool, c->backend);
	pump_start(c);
}

/*
 * The PROXY header, if one was sent, is on the wire in the clear: now TLS,
 * if any, else wait for the stream to be ready (connected).
 */
static void
on_header_sent(struct stream *s, void *arg)
{
	struct forward_conn *c = conn_of(arg);
	struct forward_listener *fl = c->fl;
	const char *host = backend_get(fl->pool, c->backend)->host;
	/* A unix socket has no host: no SNI, no name check. */
	const char *sni = fl->backend_sni[0] ? fl->backend_sni :
	    host[0] ? host : NULL;

	if (fl->backend_tls == NULL) {
		c->state = ST_BACKEND_CONNECT;
		stream_wait_for_handshake(s, on_backend_ready);
		return;
	}
	c->state = ST_BACKEND_TLS;
	if (tls_stream_connect(s, fl->backend_tls, sni) < 0) {
		stream_set_error(s, "cannot set up TLS");
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	stream_wait_for_handshake(s, on_backend_ready);
}

static void on_close(struct stream *s, enum stream_close_reason why,
    void *arg);

/* What the client's TLS tells the backend, in v2 TLVs. */
static const struct forward_proxy_tlvs *
proxy_tlvs(struct forward_conn *c, struct forward_proxy_tlvs *t,
    struct tls_stream_info *info)
{
	struct stream *cs = c->s[CLIENT];
	unsigned alen = 0;

	if (!c->fl->proxy_tlvs || cs == NULL)
		return NULL;
	memset(t, 0, sizeof(*t));
	if (!tls_stream_info(cs, info))
		return t;
	t->alpn = tls_stream_alpn(cs, &alen);
	t->alpn_len = alen;
	t->authority = info->sni;
	t->ssl = true;
	t->cert = info->cert;
	t->verify = (uint32_t)info->verify;
	t->version = info->version;
	t->cipher = info->cipher;
	t->cn = info->cn;
	return t;
}

static bool
write_proxy_header(struct forward_conn *c, struct stream *b)
{
	unsigned char hdr[FORWARD_PROXY_MAX];
	struct sockaddr_storage none;
	const struct sockaddr *dst = &c->dst.sa;
	struct forward_proxy_tlvs t;
	struct tls_stream_info info;
	int n;

	memset(&none, 0, sizeof(none));
	if (c->srclen == 0) {
		/* Not an IP client (a unix socket): UNKNOWN / UNSPEC. */
		dst = (const struct sockaddr *)&none;
	} else if (c->dstlen == 0) {
		/*
		 * The client's address is known but not, in its family, the
		 * one it reached (a PROXY client of another family, or on a
		 * unix socket): the unspecified address, port 0, rather than
		 * losing the client's to UNKNOWN.
		 */
		none.ss_family = c->src.sa.sa_family;
		dst = (const struct sockaddr *)&none;
	}
	n = forward_proxy_header_tlv(c->fl->proxy, c->srclen ? &c->src.sa :
	    dst, dst, proxy_tlvs(c, &t, &info), hdr, sizeof(hdr));
	if (n <= 0 || stream_write(b, hdr, (size_t)n, on_header_sent) < 0)
		return false;
	/* Not the client's bytes: "bytes up" leaves it out. */
	c->header_len = (uint16_t)n;
	return true;
}

/* ---- routing ---- */

/* "*.example.com" covers exactly one label, as certificates do. */
static bool
name_matches(const char *pattern, const char *name)
{
	const char *dot;

	if (strcasecmp(pattern, name) == 0)
		return true;
	if (pattern[0] != '*' || pattern[1] != '.')
		return false;
	dot = strchr(name, '.');
	return dot != NULL && dot != name && strcasecmp(pattern + 1, dot) == 0;
}

static bool
route_matches(const struct forward_route *r, const char *sni,
    const unsigned char *alpn, unsigned alen)
{
	if (r->kind == FORWARD_ROUTE_SNI)
		return sni != NULL && name_matches(r->match, sni);
	return alpn != NULL && strlen(r->match) == alen &&
	    memcmp(r->match, alpn, alen) == 0;
}

/* The client's backend set (c->set), or false: it was refused (closed). */
static bool
route(struct forward_conn *c)
{
	struct forward_listener *fl = c->fl;
	struct tls_stream_info info;
	const unsigned char *alpn;
	unsigned alen = 0;

	c->set = 0;
	if (fl->nroutes == 0)
		return true;
	(void)tls_stream_info(c->s[CLIENT], &info);
	alpn = tls_stream_alpn(c->s[CLIENT], &alen);
	for (size_t i = 0; i < fl->nroutes; i++)
		if (route_matches(&fl->routes[i], info.sni, alpn, alen)) {
			c->set = fl->routes[i].set;
			return true;
		}
	if (!fl->nomatch_refuse)
		return true;
	set_reason(c, "no route for name '%s', protocol '%.*s': refused",
	    info.sni ? info.sni : "", (int)alen, alpn ? (const char *)alpn :
	    "");
	stream_close(c->s[CLIENT], STREAM_CLOSE_LOCAL);
	return false;
}

/* ---- the backend's connection ---- */

/*
 * No backend of the set is left (none up, or every one tried): the client
 * is closed at once.  `last`: the last one tried and its error, or NULL.
 */
static void
no_backend(struct forward_conn *c, const char *last, const char *err)
{
	if (c->tries == 0)
		set_reason(c, "no backend up");
	else
		set_reason(c, "no backend answered (%zu tried; last %s: %s)",
		    c->tries, last, err);
	stream_close(c->s[CLIENT], STREAM_CLOSE_LOCAL);
}

static void
connect_backend(struct forward_conn *c, const char *last, const char *err)
{
	struct forward_listener *fl = c->fl;
	const struct backend_def *be;
	struct stream_opts so;
	struct stream *b;
	int i;

	/* Past the handshake: whatever happens now gets its log line. */
	c->state = ST_BACKEND_CONNECT;
	if (c->set < 0 && !route(c))
		return;
	if ((i = backend_pick(fl->pool, c->set, c->tried)) < 0) {
		no_backend(c, last, err);
		return;
	}
	c->backend = i;
	c->holding = true;
	c->tried |= UINT32_C(1) << i;
	c->tries++;
	be = backend_get(fl->pool, i);
	stream_opts_default(&so);
	so.handshake_timeout = fl->connect_timeout;
	so.max_buffer_size = fl->high_water;
	b = stream_connect(fl->sl, (const struct sockaddr *)&be->addr,
	    be->addrlen, &so);
	if (b == NULL) {
		/* No socket (EMFILE): no other backend would do better. */
		if (c->stats != NULL)
			c->stats->backend_failures++;
		c->holding = false;
		backend_done(fl->pool, i);
		log_limited(LOG_WARN, "%s: %s -> %s: cannot connect: %s",
		    fl->name, c->peer, be->label, strerror(errno));
		set_reason(c, "backend %s: socket: %s", be->label,
		    strerror(errno));
		stream_close(c->s[CLIENT], STREAM_CLOSE_LOCAL);
		return;
	}
	c->s[BACKEND] = b;
	c->counted_in = c->counted_out = 0;
	c->header_len = 0;
	stream_set_callbacks(b, on_close, c);
	stream_set_eof_cb(b, on_eof);
	stream_set_fin_cb(b, on_fin);
	/* Refused at once: on_close tries the next. */
	if (stream_closed(b))
		return;
	if (fl->proxy != FORWARD_PROXY_OFF) {
		c->state = ST_PROXY_HEADER;
		if (!write_proxy_header(c, b)) {
			stream_set_error(b, "cannot queue the PROXY header");
			stream_close(b, STREAM_CLOSE_NOMEM);
		}
		return;
	}
	on_header_sent(b, c);
}

/* A backend connection ended before it was ready: try the next one. */
static void
attempt_failed(struct forward_conn *c, struct stream *b,
    enum stream_close_reason why)
{
	struct forward_listener *fl = c->fl;
	const char *label = backend_get(fl->pool, c->backend)->label;
	char err[200];

	/* The client is gone: nothing to retry for, nothing to count. */
	if (!client_alive(c))
		return;
	if (c->stats != NULL)
		c->stats->backend_failures++;
	snprintf(err, sizeof(err), "%s%s%s", stream_close_reason_str(why),
	    stream_error(b)[0] ? ": " : "", stream_error(b));
	c->holding = false;
	backend_failed(fl->pool, c->backend, err);
	log_limited(LOG_WARN, "%s: %s -> %s: backend failed: %s: %s",
	    fl->name, c->peer, label, stream_close_reason_str(why),
	    stream_error(b));
	/* The next one, if one is left up. */
	connect_backend(c, label, stream_error(b));
}

/* ---- closing ---- */

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct forward_conn *c = conn_of(arg);
	int side = side_of(c, s);
	struct stream *other = c->s[1 - side];

	/* Forwarded: handed to the other side's connection, not read. */
	if (side == CLIENT) {
		c->down = stream_bytes_out(s);
	} else {
		count_backend(c);
		if (pumping(c))
			c->up = stream_bytes_out(s) - c->header_len;
	}
	c->s[side] = NULL;
	/* tls.c logs the handshakes that fail, not the clients that stall. */
	if (side == CLIENT && why == STREAM_CLOSE_TIMEOUT &&
	    c->state == ST_CLIENT_HANDSHAKE)
		log_limited(LOG_INFO, "%s: %s: closed during the handshake: "
		    "%s", c->fl->name, c->peer, stream_error(s)[0] ?
		    stream_error(s) : "handshake timed out");
	if (side == BACKEND && reaching_backend(c)) {
		attempt_failed(c, s, why);
	} else if (why != STREAM_CLOSE_EOF) {
		/*
		 * EOF means this side is done both ways; anything else
		 * (error, reset, timeout, us) ends the other side too.
		 */
		set_reason(c, "%s %s%s%s", side == CLIENT ? "client" :
		    "backend", stream_close_reason_str(why),
		    stream_error(s)[0] ? ": " : "", stream_error(s));
		if (other != NULL)
			stream_close(other, STREAM_CLOSE_ERROR);
	}
	if (c->s[CLIENT] == NULL && c->s[BACKEND] == NULL)
		conn_free(c);
}

/* ---- the client ---- */

static void
on_client_ready(struct stream *s, void *arg)
{
	struct forward_conn *c = conn_of(arg);

	(void)s;
	connect_backend(c, NULL, NULL);
}

/* A connection for a client just accepted; NULL without memory. */
static struct forward_conn *
conn_new(struct forward_listener *fl, struct stream *s,
    const struct sockaddr *sa, socklen_t salen)
{
	struct forward_conn *c;
	struct sockaddr_storage ss;
	socklen_t len;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->magic = CONN_MAGIC;
	c->fl = fl;
	c->first_eof = -1;
	c->set = -1;
	c->backend = -1;
	c->s[CLIENT] = s;
	c->stats = stream_stats(s);
	c->started = ev_now(fl->sl->loop);
	/* A unix socket's client has no address a PROXY header can carry. */
	if ((sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
	    salen <= sizeof(c->src)) {
		memcpy(&c->src, sa, salen);
		c->srclen = salen;
	}
	snprintf(c->peer, sizeof(c->peer), "%s", stream_peer(s));
	ev_init(&c->idle, idle_cb);
	c->idle.data = c;
	/* Where the client connected to, while the fd is known open. */
	if (fl->proxy != FORWARD_PROXY_OFF &&
	    stream_local_address(s, &ss, &len) == 0 &&
	    ss.ss_family == sa->sa_family && len <= sizeof(c->dst)) {
		memcpy(&c->dst, &ss, len);
		c->dstlen = len;
	}
	return c;
}

void
forward_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg)
{
	struct forward_listener *fl = arg;
	struct forward_conn *c = conn_new(fl, s, sa, salen);

	if (c == NULL) {
		LOGW("%s: no memory for a connection from %s", fl->name,
		    stream_peer(s));
		stream_close(s, STREAM_CLOSE_NOMEM);
		return;
	}
	LIST_INSERT_HEAD(&fl->conns, c, link);
	fl->nconns++;
	stream_set_callbacks(s, on_close, c);
	stream_set_eof_cb(s, on_eof);
	stream_set_fin_cb(s, on_fin);
	stream_wait_for_handshake(s, on_client_ready);
}

/* ---- the listener ---- */

struct forward_listener *
forward_listener_new(const char *name, struct stream_loop *sl,
    const struct forward_opts *o, char *err, size_t errlen)
{
	struct forward_listener *fl;

	if (o->nroutes > FORWARD_MAX_ROUTES) {
		snprintf(err, errlen, "more than %d routes",
		    FORWARD_MAX_ROUTES);
		return NULL;
	}
	if (o->high_water == 0 || o->connect_timeout <= 0) {
		snprintf(err, errlen, "high_water and connect_timeout must "
		    "be positive");
		return NULL;
	}
	fl = calloc(1, sizeof(*fl));
	if (fl == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fl->pool = backend_pool_new(name, sl, &o->backends, err, errlen);
	if (fl->pool == NULL) {
		free(fl);
		return NULL;
	}
	snprintf(fl->name, sizeof(fl->name), "%s", name);
	fl->sl = sl;
	LIST_INIT(&fl->conns);
	if (o->nroutes > 0)
		memcpy(fl->routes, o->routes, o->nroutes * sizeof(*o->routes));
	fl->nroutes = o->nroutes;
	fl->nomatch_refuse = o->nomatch_refuse;
	fl->proxy_tlvs = o->proxy_tlvs;
	fl->connect_timeout = o->connect_timeout;
	fl->idle_timeout = o->idle_timeout;
	fl->fin_timeout = o->fin_timeout;
	fl->high_water = o->high_water;
	ev_init(&fl->lines_report, lines_report_cb);
	fl->lines_report.data = fl;
	fl->proxy = o->proxy;
	fl->backend_tls = o->backend_tls ? tls_ctx_ref(o->backend_tls) : NULL;
	snprintf(fl->backend_sni, sizeof(fl->backend_sni), "%s",
	    o->backend_sni ? o->backend_sni : "");
	return fl;
}

void
forward_listener_start_checks(struct forward_listener *fl)
{
	backend_pool_start_checks(fl->pool, fl->backend_tls,
	    fl->backend_sni);
}

void
forward_listener_set_backend_tls(struct forward_listener *fl,
    struct tls_ctx *tls)
{
	struct tls_ctx *old = fl->backend_tls;

	fl->backend_tls = tls ? tls_ctx_ref(tls) : NULL;
	tls_ctx_unref(old);
	backend_pool_set_tls(fl->pool, fl->backend_tls);
}

void
forward_listener_close_all(struct forward_listener *fl)
{
	struct forward_conn *c;

	LIST_FOREACH(c, &fl->conns, link) {
		set_reason(c, "shutting down");
		close_both(c, STREAM_CLOSE_LOCAL);
	}
}

size_t
forward_listener_conns(const struct forward_listener *fl)
{
	return fl->nconns;
}

void
forward_listener_free(struct forward_listener *fl)
{
	if (fl == NULL)
		return;
	if (fl->nconns > 0)
		LOGW("%s: freed with %zu connections open", fl->name,
		    fl->nconns);
	ev_timer_stop(fl->sl->loop, &fl->lines_report);
	report_lines(fl);
	backend_pool_free(fl->pool);
	tls_ctx_unref(fl->backend_tls);
	free(fl);
}
