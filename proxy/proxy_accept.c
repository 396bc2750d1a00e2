/* proxy_accept: see proxy_accept.h. */
#define _GNU_SOURCE
#include "proxy_accept.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include "log.h"
#include "netutil.h"
#include "proxy_in.h"

/* One socket whose header is being read: the bytes consumed so far. */
struct waiter {
	LIST_ENTRY(waiter) link;
	struct proxy_accept *pa;
	int fd;
	ev_io io;
	ev_timer timer;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	size_t have;
	unsigned char buf[PROXY_IN_MAX];
};

struct proxy_accept {
	struct ev_loop *loop;
	char name[64];
	double timeout;
	proxy_accept_cb done;
	void *arg;
	struct metrics_conn *stats;	/* or NULL */
	LIST_HEAD(, waiter) waiting;
	size_t n;
};

static void
waiter_end(struct waiter *w, bool close_fd)
{
	struct proxy_accept *pa = w->pa;

	ev_io_stop(pa->loop, &w->io);
	ev_timer_stop(pa->loop, &w->timer);
	LIST_REMOVE(w, link);
	pa->n--;
	if (close_fd)
		close(w->fd);
	free(w);
}

static void
refuse(struct waiter *w, const char *why)
{
	char peer[80];

	if (w->pa->stats != NULL)
		w->pa->stats->proxy_failures++;
	netutil_format_addr((struct sockaddr *)&w->peer, peer, sizeof(peer));
	log_limited(LOG_WARN, "%s: %s: closed: %s", w->pa->name, peer, why);
	waiter_end(w, true);
}

/* The header is whole: consume it and hand the socket on. */
static void
complete(struct waiter *w, const struct proxy_in *h)
{
	struct proxy_accept *pa = w->pa;
	size_t take = h->len - w->have;
	struct sockaddr_storage sa;
	socklen_t salen;
	int fd = w->fd;

	/* Peeked already: the bytes are there. */
	if (take > 0 && recv(fd, w->buf + w->have, take, 0) != (ssize_t)take) {
		refuse(w, "cannot consume the PROXY header");
		return;
	}
	if (h->kind == PROXY_IN_ADDR) {
		memcpy(&sa, &h->src, h->addrlen);
		salen = h->addrlen;
	} else {
		memcpy(&sa, &w->peer, w->peerlen);
		salen = w->peerlen;
	}
	waiter_end(w, false);
	pa->done(fd, (struct sockaddr *)&sa, salen, pa->arg);
}

static void
on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
	struct waiter *w = io->data;
	struct proxy_in h;
	ssize_t n;

	(void)loop;
	(void)revents;
	n = recv(w->fd, w->buf + w->have, sizeof(w->buf) - w->have, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n < 0) {
		refuse(w, strerror(errno));
		return;
	}
	if (n == 0) {
		refuse(w, w->have ? "closed within its PROXY header" :
		    "closed before its PROXY header");
		return;
	}
	switch (proxy_in_parse(w->buf, w->have + (size_t)n, &h)) {
	case PROXY_IN_DONE:
		complete(w, &h);
		return;
	case PROXY_IN_ERROR:
		refuse(w, h.error);
		return;
	case PROXY_IN_MORE:
		break;
	}
	/* Every byte so far is header: take them, wait for the rest. */
	if (recv(w->fd, w->buf + w->have, (size_t)n, 0) != n) {
		refuse(w, "cannot read the PROXY header");
		return;
	}
	w->have += (size_t)n;
}

static void
on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct waiter *w = t->data;
	char why[80];

	(void)loop;
	(void)revents;
	snprintf(why, sizeof(why), "no whole PROXY header within %g s",
	    w->pa->timeout);
	refuse(w, why);
}

struct proxy_accept *
proxy_accept_new(struct ev_loop *loop, const char *name, double timeout,
    proxy_accept_cb done, void *arg)
{
	struct proxy_accept *pa = calloc(1, sizeof(*pa));

	if (pa == NULL)
		return NULL;
	pa->loop = loop;
	snprintf(pa->name, sizeof(pa->name), "%s", name);
	pa->timeout = timeout;
	pa->done = done;
	pa->arg = arg;
	LIST_INIT(&pa->waiting);
	return pa;
}

void
proxy_accept_add(struct proxy_accept *pa, int fd, const struct sockaddr *sa,
    socklen_t salen)
{
	struct waiter *w = malloc(sizeof(*w));

	if (w == NULL || salen > sizeof(w->peer)) {
		LOGW("%s: no memory for a connection", pa->name);
		free(w);
		close(fd);
		return;
	}
	w->pa = pa;
	w->fd = fd;
	w->have = 0;
	memcpy(&w->peer, sa, salen);
	w->peerlen = salen;
	ev_io_init(&w->io, on_readable, fd, EV_READ);
	w->io.data = w;
	ev_timer_init(&w->timer, on_timeout, pa->timeout, 0.);
	w->timer.data = w;
	LIST_INSERT_HEAD(&pa->waiting, w, link);
	pa->n++;
	ev_io_start(pa->loop, &w->io);
	ev_timer_start(pa->loop, &w->timer);
}

void
proxy_accept_set_stats(struct proxy_accept *pa, struct metrics_conn *stats)
{
	pa->stats = stats;
}

size_t
proxy_accept_waiting(const struct proxy_accept *pa)
{
	return pa != NULL ? pa->n : 0;
}

void
proxy_accept_free(struct proxy_accept *pa)
{
	if (pa == NULL)
		return;
	while (!LIST_EMPTY(&pa->waiting))
		waiter_end(LIST_FIRST(&pa->waiting), true);
	free(pa);
}
