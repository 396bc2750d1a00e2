/* natsev: see natsev.h. */
#include "natsev.h"

#include <stdlib.h>

#define NATSEV_CONN_MAGIC 0x6e657663u	/* "nevc" */

/* The connection's side of the loop: made by natsev_loop_init(). */
struct natsev_conn {
	uint32_t magic;
	struct natsev_loop *el;
	natsConnection *nc;		/* set by the first attach */
	ev_io io;			/* the connection's socket */
	ev_async wake;			/* another thread changed the wish */

	pthread_mutex_t mu;		/* guards the wanted state */
	int want_fd;
	unsigned want_gen;		/* bumped by each attach: a new socket */
	int want_events;		/* EV_READ | EV_WRITE */
	bool want_detach;
	bool counted_up;		/* counted in el->up */

	/* The loop's thread only. */
	unsigned have_gen;
	int have_events;
	bool detached;
};

bool
natsev_on_loop(const struct natsev_loop *el)
{
	return pthread_equal(pthread_self(), el->thread) != 0;
}

/*
 * Makes the ev_io match the wanted state (the loop's thread).  A new
 * generation is a new socket, perhaps with the old number: libev must be
 * told with stop, set, start even then (the old one was closed while
 * watched: libev's "special problem of disappearing file descriptors").
 */
static void
reconcile(struct natsev_conn *c)
{
	struct ev_loop *loop = c->el->loop;
	int fd, events;
	unsigned gen;
	bool detach;

	pthread_mutex_lock(&c->mu);
	fd = c->want_fd;
	gen = c->want_gen;
	events = c->want_events;
	detach = c->want_detach;
	pthread_mutex_unlock(&c->mu);
	if (detach) {
		ev_io_stop(loop, &c->io);
		c->detached = true;
		return;
	}
	if (gen != c->have_gen || events != c->have_events) {
		ev_io_stop(loop, &c->io);
		ev_io_set(&c->io, fd, events);
		if (events != 0)
			ev_io_start(loop, &c->io);
		c->have_gen = gen;
		c->have_events = events;
	}
}

/* Counts the connection in el->up, or not (c->mu held). */
static void
set_up(struct natsev_conn *c, bool up)
{
	if (up && !c->counted_up)
		atomic_fetch_add(&c->el->up, 1);
	else if (!up && c->counted_up)
		atomic_fetch_sub(&c->el->up, 1);
	c->counted_up = up;
}

/* The wish changed (c->mu held, released here): applied, or the loop woken. */
static natsStatus
apply_or_wake(struct natsev_conn *c)
{
	pthread_mutex_unlock(&c->mu);
	if (natsev_on_loop(c->el)) {
		reconcile(c);
		return NATS_OK;
	}
	atomic_fetch_add_explicit(&c->el->remote_calls, 1,
	    memory_order_relaxed);
	ev_async_send(c->el->loop, &c->wake);
	return NATS_OK;
}

static natsStatus
want(struct natsev_conn *c, int set, int clear)
{
	pthread_mutex_lock(&c->mu);
	c->want_events = (c->want_events | set) & ~clear;
	/* The library stops reading only when the connection went down. */
	if (clear & EV_READ)
		set_up(c, false);
	return apply_or_wake(c);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct natsev_conn *c = w->data;
	bool detached;

	(void)loop;
	/*
	 * Detached by another thread, the loop not told yet: the connection
	 * is closed (and may be destroyed once its "closed" event is seen).
	 */
	pthread_mutex_lock(&c->mu);
	detached = c->want_detach;
	pthread_mutex_unlock(&c->mu);
	if (detached) {
		reconcile(c);
		return;
	}
	if (revents & (EV_READ | EV_ERROR)) {
		natsConnection_ProcessReadEvent(c->nc);
		if (c->el->after_read != NULL)
			c->el->after_read(c->el->after_read_arg);
	}
	/* The read may have failed the connection and detached it. */
	pthread_mutex_lock(&c->mu);
	detached = c->want_detach;
	pthread_mutex_unlock(&c->mu);
	if ((revents & EV_WRITE) && !detached)
		natsConnection_ProcessWriteEvent(c->nc);
}

static void
wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop;
	(void)revents;
	reconcile(w->data);
}

static struct natsev_conn *
conn_of(void *user)
{
	struct natsev_conn *c = user;

	return c != NULL && c->magic == NATSEV_CONN_MAGIC ? c : NULL;
}

int
natsev_loop_init(struct natsev_loop *el, struct ev_loop *loop)
{
	struct natsev_conn *c = calloc(1, sizeof(*c));

	el->loop = loop;
	el->thread = pthread_self();
	el->after_read = NULL;
	el->after_read_arg = NULL;
	atomic_init(&el->up, 0);
	atomic_init(&el->remote_calls, 0);
	el->conn = c;
	if (c == NULL)
		return -1;
	c->magic = NATSEV_CONN_MAGIC;
	c->el = el;
	pthread_mutex_init(&c->mu, NULL);
	ev_io_init(&c->io, io_cb, -1, 0);
	c->io.data = c;
	ev_async_init(&c->wake, wake_cb);
	c->wake.data = c;
	ev_async_start(loop, &c->wake);
	return 0;
}

void
natsev_loop_destroy(struct natsev_loop *el)
{
	struct natsev_conn *c = el->conn;

	if (c == NULL)
		return;
	ev_io_stop(el->loop, &c->io);
	ev_async_stop(el->loop, &c->wake);
	c->magic = 0;
	pthread_mutex_destroy(&c->mu);
	free(c);
	el->conn = NULL;
}

static natsStatus
on_attach(void **user, void *loop_arg, natsConnection *nc, natsSock fd)
{
	struct natsev_loop *el = loop_arg;
	struct natsev_conn *c = el->conn;

	pthread_mutex_lock(&c->mu);
	c->nc = nc;
	c->want_fd = (int)fd;
	c->want_gen++;
	/* The library never asks for reads: polling starts here. */
	c->want_events = EV_READ;
	set_up(c, true);
	*user = c;
	return apply_or_wake(c);
}

static natsStatus
on_read(void *user, bool add)
{
	struct natsev_conn *c = conn_of(user);

	if (c == NULL)
		return NATS_ILLEGAL_STATE;
	return add ? want(c, EV_READ, 0) : want(c, 0, EV_READ);
}

static natsStatus
on_write(void *user, bool add)
{
	struct natsev_conn *c = conn_of(user);

	if (c == NULL)
		return NATS_ILLEGAL_STATE;
	return add ? want(c, EV_WRITE, 0) : want(c, 0, EV_WRITE);
}

static natsStatus
on_detach(void *user)
{
	struct natsev_conn *c = conn_of(user);

	if (c == NULL)
		return NATS_ILLEGAL_STATE;
	pthread_mutex_lock(&c->mu);
	c->want_detach = true;
	c->want_events = 0;
	set_up(c, false);
	return apply_or_wake(c);
}

natsStatus
natsev_set_options(natsOptions *opts, struct natsev_loop *el)
{
	natsStatus s = natsOptions_SetEventLoop(opts, el, on_attach, on_read,
	    on_write, on_detach);

	if (s == NATS_OK)
		s = natsOptions_SetSendAsap(opts, true);
	return s;
}
