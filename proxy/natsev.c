/* natsev: see natsev.h. */
#include "natsev.h"

#include <stdlib.h>

#define NATSEV_CONN_MAGIC 0x6e657663u	/* "nevc" */

/* One per connection: made by the first attach, freed after detach. */
struct natsev_conn {
	uint32_t magic;
	struct natsev_loop *el;
	natsConnection *nc;
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
	bool in_callback;		/* inside io_cb: free at its end */
	bool free_pending;
};

static void
conn_free(struct natsev_conn *c)
{
	c->magic = 0;
	pthread_mutex_destroy(&c->mu);
	free(c);
}

bool
natsev_on_loop(const struct natsev_loop *el)
{
	return pthread_equal(pthread_self(), el->thread) != 0;
}

void
natsev_loop_init(struct natsev_loop *el, struct ev_loop *loop)
{
	el->loop = loop;
	el->thread = pthread_self();
	el->after_read = NULL;
	el->after_read_arg = NULL;
	atomic_init(&el->up, 0);
	atomic_init(&el->remote_calls, 0);
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
		ev_async_stop(loop, &c->wake);
		if (c->in_callback)
			c->free_pending = true;
		else
			conn_free(c);
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

/*
 * The wish changed (c->mu held, released here): applied now on the
 * loop's thread, else the loop is woken.  The wake is sent before the
 * unlock: once unlocked after a detach, the loop may free c.
 */
static natsStatus
apply_or_wake(struct natsev_conn *c)
{
	if (natsev_on_loop(c->el)) {
		pthread_mutex_unlock(&c->mu);
		reconcile(c);
		return NATS_OK;
	}
	atomic_fetch_add_explicit(&c->el->remote_calls, 1,
	    memory_order_relaxed);
	ev_async_send(c->el->loop, &c->wake);
	pthread_mutex_unlock(&c->mu);
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
	c->in_callback = true;
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
	c->in_callback = false;
	if (c->free_pending)
		conn_free(c);
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

static natsStatus
on_attach(void **user, void *loop_arg, natsConnection *nc, natsSock fd)
{
	struct natsev_loop *el = loop_arg;
	struct natsev_conn *c = *user;

	if (c == NULL) {
		/*
		 * The first attach comes from natsConnection_Connect: starting
		 * the ev_async from another thread would race libev.
		 */
		if (!natsev_on_loop(el))
			return NATS_ILLEGAL_STATE;
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return NATS_NO_MEMORY;
		c->magic = NATSEV_CONN_MAGIC;
		c->el = el;
		c->nc = nc;
		pthread_mutex_init(&c->mu, NULL);
		ev_io_init(&c->io, io_cb, -1, 0);
		c->io.data = c;
		ev_async_init(&c->wake, wake_cb);
		c->wake.data = c;
		ev_async_start(el->loop, &c->wake);
		*user = c;
	}
	pthread_mutex_lock(&c->mu);
	c->want_fd = (int)fd;
	c->want_gen++;
	/* The library never asks for reads: polling starts here. */
	c->want_events = EV_READ;
	set_up(c, true);
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
