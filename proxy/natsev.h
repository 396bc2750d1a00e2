/*
 * natsev: the NATS C client (nats.c 3.4, libnats) on a libev loop.
 *
 * nats.c ships event-loop adapters for libevent and libuv, not libev.
 * This one plugs a natsConnection into Ferry's loop through
 * natsOptions_SetEventLoop(): the library then has no reader thread, and
 * only the loop's thread reads and writes the connection's socket
 * (natsConnection_ProcessReadEvent / ProcessWriteEvent from an ev_io).
 * natsev_set_options() also sets SendAsap, which removes the flusher
 * thread: a publish on the loop arms the write watcher and the bytes
 * leave on the next poll.
 *
 * Threads.  The library calls the adapter with the connection's lock
 * held, from whichever thread caused the event: attach from the thread
 * that connects (the first time: it must be the loop's, see below) or
 * from its reconnect thread; read(remove) from whoever saw the
 * connection fail (the loop, the library's timer thread, a closer);
 * write(add) from any thread that publishes (the loop, the directory
 * thread's requests, the timer thread's PING, the reconnect thread
 * resending subscriptions); detach from the thread that closed it.
 * libev is not thread-safe, so a call from another thread only records
 * the wanted state (socket, generation, read/write, detached) under a
 * mutex and wakes the loop with an ev_async; the loop makes its ev_io
 * match.  A call on the loop's thread applies it at once.  "Last write
 * wins" is exact because the library serialises the calls.
 *
 * `up`: counts attached, polling connections, lock-free.  While the
 * library's reconnect thread tries a server it holds the connection's
 * lock for up to the connect timeout, and any call into the connection
 * from the loop (a publish) waits that long: read natsev_up() before
 * publishing from the loop, and drop what cannot go while it is false.
 *
 * One connection per natsev_loop.  Its watchers are made by
 * natsev_loop_init() on the loop's thread, so the connection may be made
 * from any thread, the very first attach included: natsConnection_Connect
 * blocks for a connect timeout per unreachable server, and with
 * natsOptions_SetRetryOnFailedConnect the library's reconnect thread
 * attaches later; neither ever runs on the loop.
 *
 * Rules for the owner: do no blocking call on the loop's thread (Flush,
 * Request, every JetStream call: only the loop reads the socket, so such a
 * call waits out its whole timeout and its request leaves only
 * afterwards); destroy the connection on the loop's thread once it is
 * closed (after a Drain), then natsev_loop_destroy().
 */
#ifndef FERRY_NATSEV_H
#define FERRY_NATSEV_H

#include <ev.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct natsev_conn;

struct natsev_loop {
	struct ev_loop *loop;
	struct natsev_conn *conn;	/* the connection's watchers */
	pthread_t thread;		/* the one that runs ev_run(loop) */
	/*
	 * Called on the loop's thread after each ProcessReadEvent, when the
	 * messages just parsed wait in their subscriptions' queues: drain
	 * synchronous subscriptions here (NextMsg with a timeout of 0), so
	 * that no library thread touches them.  NULL: none.
	 */
	void (*after_read)(void *arg);
	void *after_read_arg;
	atomic_int up;			/* connections attached and polling */
	atomic_ulong remote_calls;	/* adapter calls from other threads */
};

/* On the thread that will run ev_run(loop).  0, or -1 without memory. */
int natsev_loop_init(struct natsev_loop *el, struct ev_loop *loop);
/* On the loop's thread, once the connection is closed (or never made). */
void natsev_loop_destroy(struct natsev_loop *el);

/* natsOptions_SetEventLoop with this adapter, and SendAsap. */
natsStatus natsev_set_options(natsOptions *opts, struct natsev_loop *el);

/* Whether the caller runs on the loop's thread. */
bool natsev_on_loop(const struct natsev_loop *el);

/* Whether a publish from the loop may go now (see above). */
static inline bool
natsev_up(struct natsev_loop *el)
{
	return atomic_load_explicit(&el->up, memory_order_acquire) > 0;
}

#endif
