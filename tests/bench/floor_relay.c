/*
 * floor-relay: the least a device relay can do, as the benchmark's floor.
 *
 * One process, one epoll set (level-triggered), no library (of Ferry, the
 * protocol's bytes from relay_proto.h alone): it speaks the relay
 * protocol (version 1) just far enough for ferry-bench's relay
 * pairs, and then relays each producer's bytes to its one consumer with
 * one read() and one write() per readiness event: no parsing of frames,
 * no queue, no fan-out, no limits, no TLS, no timers.  Whatever a relay
 * does beyond that (Ferry's streams, parser, registry, counters, loop) is
 * what Ferry costs above this floor, in CPU and in latency, measured with
 * the same generator in the same run (tests/bench/run.py).
 *
 * A producer registers (0x0a, uuid, keys; each answered 0x00) and a
 * consumer of the same uuid gets 0x00, the keys, and is relayed to once it
 * has sent its accept byte.  One consumer per producer: a second one is
 * answered 0x01, as is a consumer of an unknown uuid.  A write that the
 * consumer's socket does not take whole keeps the rest and stops reading
 * the producer until it is written (lossless, as Ferry's slow_consumer =
 * block that the benchmark runs).  Closing either side closes the pair.
 *
 *     floor-relay [--host 127.0.0.1] [--port 0]
 *
 * prints "LISTEN port=N" once it accepts and runs until SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay_proto.h"

#define FLOOR_BUF	(64 * 1024)	/* one read's worth */
#define FLOOR_EVENTS	256
#define FLOOR_HDR_MAX	(64 * 1024 + 8)	/* uuid or keys step, with length */
#define FLOOR_BUCKETS	4096

enum role { R_NEW, R_PRODUCER, R_CONSUMER };
/* The step a connection is in: what it waits for. */
enum step { S_ROLE, S_UUID, S_KEYS, S_ACCEPT, S_RELAY };

struct conn {
	int fd;
	enum role role;
	enum step step;
	char *hdr;			/* registration bytes received */
	size_t hdr_len;
	char *uuid;
	size_t ulen;
	char *keys;			/* producer: its keys, length-prefixed */
	size_t keys_len;
	struct conn *peer;		/* producer <-> its accepted consumer */
	struct conn *waiting;		/* producer: a consumer not yet accepted */
	char *pend;			/* consumer: bytes its socket refused */
	size_t pend_len, pend_off;
	struct conn *hnext;		/* producers by uuid */
	struct conn *dnext;		/* closed in this round */
	struct conn *anext, *aprev;	/* every open connection */
	bool registered;		/* producer: in the table */
};

static int ep;
static struct conn *table[FLOOR_BUCKETS];
/* Closed in this round: freed after it, since later events name them. */
static struct conn *dead;
/* Every open connection, closed at exit. */
static struct conn *all;
static char relay_buf[FLOOR_BUF];
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static size_t
bucket(const char *u, size_t len)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)u[i];
		h *= 1099511628211ull;
	}
	return (size_t)(h % FLOOR_BUCKETS);
}

static struct conn *
find(const char *u, size_t len)
{
	for (struct conn *c = table[bucket(u, len)]; c != NULL; c = c->hnext)
		if (c->ulen == len && memcmp(c->uuid, u, len) == 0)
			return c;
	return NULL;
}

static void
unregister(struct conn *p)
{
	struct conn **pp;

	if (!p->registered)
		return;
	for (pp = &table[bucket(p->uuid, p->ulen)]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if (*pp == p) {
			*pp = p->hnext;
			break;
		}
	p->registered = false;
}

static void
watch(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		perror("floor-relay: epoll_ctl");
}

/* Closes c and its peer; the events of this round for them are skipped. */
static void
conn_close(struct conn *c)
{
	struct conn *peer = c->peer;

	if (c->fd < 0)
		return;
	if (c->role == R_PRODUCER) {
		unregister(c);
		if (c->waiting != NULL)
			c->waiting->peer = NULL;
	} else if (c->role == R_CONSUMER && peer != NULL &&
	    peer->waiting == c) {
		peer->waiting = NULL;
		peer = NULL;
	}
	c->peer = NULL;
	(void)epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (c->aprev != NULL)
		c->aprev->anext = c->anext;
	else
		all = c->anext;
	if (c->anext != NULL)
		c->anext->aprev = c->aprev;
	c->dnext = dead;
	dead = c;
	if (peer != NULL && peer->fd >= 0) {
		peer->peer = NULL;
		conn_close(peer);
	}
}

static void
free_dead(void)
{
	while (dead != NULL) {
		struct conn *c = dead;

		dead = c->dnext;
		free(c->hdr);
		free(c->uuid);
		free(c->keys);
		free(c->pend);
		free(c);
	}
}

static bool
send_all(struct conn *c, const void *p, size_t len)
{
	/* Registration answers are a few bytes on a fresh socket. */
	return send(c->fd, p, len, MSG_NOSIGNAL) == (ssize_t)len;
}

/* The consumer's socket took everything: read the producer again. */
static void
resume(struct conn *cons)
{
	free(cons->pend);
	cons->pend = NULL;
	cons->pend_len = cons->pend_off = 0;
	watch(cons, EPOLLIN);
	if (cons->peer != NULL)
		watch(cons->peer, EPOLLIN);
}

/* One read, one write: the whole hot path. */
static void
relay(struct conn *p)
{
	struct conn *cons = p->peer;
	ssize_t n, w;

	n = read(p->fd, relay_buf, sizeof(relay_buf));
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(p);
		return;
	}
	if (cons == NULL)
		return;			/* nobody listens: discarded */
	w = send(cons->fd, relay_buf, (size_t)n, MSG_NOSIGNAL);
	if (w < 0) {
		if (errno != EAGAIN) {
			conn_close(cons);
			return;
		}
		w = 0;
	}
	if (w == n)
		return;
	/* Keep the rest; the producer waits until it is written. */
	cons->pend = malloc((size_t)(n - w));
	if (cons->pend == NULL) {
		conn_close(cons);
		return;
	}
	memcpy(cons->pend, relay_buf + w, (size_t)(n - w));
	cons->pend_len = (size_t)(n - w);
	cons->pend_off = 0;
	watch(p, 0);
	watch(cons, EPOLLIN | EPOLLOUT);
}

static void
flush_pending(struct conn *cons)
{
	while (cons->pend_off < cons->pend_len) {
		ssize_t w = send(cons->fd, cons->pend + cons->pend_off,
		    cons->pend_len - cons->pend_off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN)
				return;
			conn_close(cons);
			return;
		}
		cons->pend_off += (size_t)w;
	}
	resume(cons);
}

/* Registration steps; false when the connection was closed. */
static bool
step(struct conn *c)
{
	static const char ok = RELAY_OK, no = RELAY_REFUSED;
	size_t need;

	for (;;) {
		if (c->step == S_ROLE) {
			if (c->hdr_len < 1)
				return true;
			if (c->hdr[0] != RELAY_PRODUCER &&
			    c->hdr[0] != RELAY_CONSUMER) {
				conn_close(c);
				return false;
			}
			c->role = c->hdr[0] == RELAY_PRODUCER ? R_PRODUCER :
			    R_CONSUMER;
			need = 1;
			if (!send_all(c, &ok, 1)) {
				conn_close(c);
				return false;
			}
			c->step = S_UUID;
		} else if (c->step == S_UUID || c->step == S_KEYS) {
			if (c->hdr_len < RELAY_LEN_SIZE)
				return true;
			need = RELAY_LEN_SIZE +
			    (size_t)relay_len_get((const uint8_t *)c->hdr);
			if (need > FLOOR_HDR_MAX) {
				conn_close(c);
				return false;
			}
			if (c->hdr_len < need)
				return true;
			if (c->step == S_KEYS) {
				c->keys = malloc(need);
				if (c->keys == NULL) {
					conn_close(c);
					return false;
				}
				memcpy(c->keys, c->hdr, need);
				c->keys_len = need;
				if (!send_all(c, &ok, 1)) {
					conn_close(c);
					return false;
				}
				c->step = S_RELAY;
			} else if (c->role == R_PRODUCER) {
				struct conn *old;

				c->ulen = need - RELAY_LEN_SIZE;
				c->uuid = malloc(c->ulen + 1);
				if (c->uuid == NULL) {
					conn_close(c);
					return false;
				}
				memcpy(c->uuid, c->hdr + RELAY_LEN_SIZE, c->ulen);
				/* A newcomer replaces the producer of its uuid. */
				if ((old = find(c->uuid, c->ulen)) != NULL)
					conn_close(old);
				c->hnext = table[bucket(c->uuid, c->ulen)];
				table[bucket(c->uuid, c->ulen)] = c;
				c->registered = true;
				if (!send_all(c, &ok, 1)) {
					conn_close(c);
					return false;
				}
				c->step = S_KEYS;
			} else {
				struct conn *p = find(c->hdr + RELAY_LEN_SIZE,
				    need - RELAY_LEN_SIZE);

				if (p == NULL || p->keys == NULL ||
				    p->peer != NULL || p->waiting != NULL) {
					(void)send_all(c, &no, 1);
					conn_close(c);
					return false;
				}
				if (!send_all(c, &ok, 1) ||
				    !send_all(c, p->keys, p->keys_len)) {
					conn_close(c);
					return false;
				}
				p->waiting = c;
				c->peer = p;
				c->step = S_ACCEPT;
			}
		} else if (c->step == S_ACCEPT) {
			struct conn *p = c->peer;

			if (c->hdr_len < 1)
				return true;
			need = 1;
			if (c->hdr[0] != RELAY_ACCEPT || p == NULL) {
				conn_close(c);
				return false;
			}
			p->waiting = NULL;
			p->peer = c;
			c->step = S_RELAY;
		} else {
			/*
			 * Bytes after the registration: a producer's first
			 * frames go to its consumer if it has one; a consumer's
			 * are ignored.
			 */
			if (c->role == R_PRODUCER && c->peer != NULL &&
			    c->hdr_len > 0 && c->peer->pend == NULL &&
			    send(c->peer->fd, c->hdr, c->hdr_len,
			    MSG_NOSIGNAL) != (ssize_t)c->hdr_len) {
				conn_close(c->peer);
			}
			free(c->hdr);
			c->hdr = NULL;
			c->hdr_len = 0;
			return true;
		}
		memmove(c->hdr, c->hdr + need, c->hdr_len - need);
		c->hdr_len -= need;
	}
}

static void
registration(struct conn *c)
{
	ssize_t n;

	if (c->hdr == NULL && (c->hdr = malloc(FLOOR_HDR_MAX)) == NULL) {
		conn_close(c);
		return;
	}
	n = read(c->fd, c->hdr + c->hdr_len, FLOOR_HDR_MAX - c->hdr_len);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);
		return;
	}
	c->hdr_len += (size_t)n;
	(void)step(c);
}

static void
on_event(struct conn *c, uint32_t events)
{
	if (c->fd < 0)
		return;
	if (c->role == R_CONSUMER && c->step == S_RELAY) {
		if ((events & EPOLLOUT) && c->pend != NULL)
			flush_pending(c);
		if (c->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
			ssize_t n = read(c->fd, relay_buf, sizeof(relay_buf));
			if (n == 0 || (n < 0 && errno != EAGAIN &&
			    errno != EINTR))
				conn_close(c);
		}
		return;
	}
	if (c->step == S_RELAY)
		relay(c);
	else
		registration(c);
}

static void
accept_all(int lfd)
{
	for (int i = 0; i < 64; i++) {
		int one = 1, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK |
		    SOCK_CLOEXEC);
		struct conn *c;
		struct epoll_event ev;

		if (fd < 0)
			return;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			close(fd);
			return;
		}
		c->fd = fd;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->anext = all;
		if (all != NULL)
			all->aprev = c;
		all = c;
	}
}

int
main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 0, lfd, one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t salen = sizeof(sa);
	struct epoll_event evs[FLOOR_EVENTS], lev;
	struct conn listener = { .fd = -1 };

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
			host = argv[++i];
		else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
			port = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: floor-relay [--host H] "
			    "[--port P]\n");
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "floor-relay: bad IPv4 address %s\n", host);
		return 2;
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one)) < 0 || bind(lfd, (struct sockaddr *)&sa,
	    sizeof(sa)) < 0 || listen(lfd, 511) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
		perror("floor-relay: listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("floor-relay: epoll_create1");
		return 1;
	}
	listener.fd = lfd;
	lev.events = EPOLLIN;
	lev.data.ptr = &listener;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
		perror("floor-relay: epoll_ctl");
		return 1;
	}
	printf("LISTEN port=%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	while (!stop) {
		int n = epoll_wait(ep, evs, FLOOR_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("floor-relay: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c == &listener)
				accept_all(lfd);
			else
				on_event(c, evs[i].events);
		}
		free_dead();
	}
	while (all != NULL)
		conn_close(all);
	free_dead();
	close(lfd);
	close(ep);
	return 0;
}
