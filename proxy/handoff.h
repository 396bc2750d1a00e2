/*
 * handoff: pointers from any thread to a libev loop's thread, without a
 * lock.
 *
 * A bounded multi-producer, single-consumer ring (Dmitry Vyukov's bounded
 * queue: one compare-and-swap per push, none per pop) and an ev_async
 * that wakes the loop.  Producers are other threads (the cluster's
 * directory thread); the consumer is the loop's thread, which runs the
 * callback for each item, in push order per producer, from the ev_async
 * (libev coalesces the wake-ups, and sends no syscall while the loop is
 * busy).
 *
 * A full ring is the pusher's decision: handoff_push() returns -1 and the
 * item stays the pusher's.  handoff_init() and handoff_destroy() run on
 * the loop's thread; destroy only once no thread can push any more (it
 * runs the callback for what is left first).
 */
#ifndef FERRY_HANDOFF_H
#define FERRY_HANDOFF_H

#include <ev.h>
#include <stdatomic.h>
#include <stddef.h>

typedef void (*handoff_cb)(void *item, void *arg);

struct handoff_cell {
	atomic_size_t seq;
	void *item;
};

struct handoff {
	struct handoff_cell *cells;
	size_t mask;
	_Alignas(64) atomic_size_t head;	/* pushers: next slot to fill */
	_Alignas(64) size_t tail;		/* the loop: next slot to read */
	struct ev_loop *loop;
	ev_async wake;
	handoff_cb cb;
	void *arg;
	atomic_ulong full;			/* pushes refused: ring full */
};

/* capacity: a power of two, at least 2.  0, or -1 (no memory, bad size). */
int handoff_init(struct handoff *h, struct ev_loop *loop, size_t capacity,
    handoff_cb cb, void *arg);
/* Any thread.  0, or -1 when the ring is full (the item is not taken). */
int handoff_push(struct handoff *h, void *item);
/* The loop's thread: runs the callback for what is queued now. */
size_t handoff_drain(struct handoff *h);
/* The loop's thread, once nobody pushes: drains, then frees the ring. */
void handoff_destroy(struct handoff *h);

#endif
