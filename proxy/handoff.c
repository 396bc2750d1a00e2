/* handoff: see handoff.h. */
#include "handoff.h"

#include <stdint.h>
#include <stdlib.h>

static void
wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	(void)loop;
	(void)revents;
	(void)handoff_drain(w->data);
}

int
handoff_init(struct handoff *h, struct ev_loop *loop, size_t capacity,
    handoff_cb cb, void *arg)
{
	if (capacity < 2 || (capacity & (capacity - 1)) != 0)
		return -1;
	h->cells = calloc(capacity, sizeof(*h->cells));
	if (h->cells == NULL)
		return -1;
	for (size_t i = 0; i < capacity; i++)
		atomic_init(&h->cells[i].seq, i);
	h->mask = capacity - 1;
	atomic_init(&h->head, 0);
	h->tail = 0;
	atomic_init(&h->full, 0);
	h->loop = loop;
	h->cb = cb;
	h->arg = arg;
	ev_async_init(&h->wake, wake_cb);
	h->wake.data = h;
	ev_async_start(loop, &h->wake);
	return 0;
}

int
handoff_push(struct handoff *h, void *item)
{
	struct handoff_cell *cell;
	size_t pos, seq;
	intptr_t dif;

	pos = atomic_load_explicit(&h->head, memory_order_relaxed);
	for (;;) {
		cell = &h->cells[pos & h->mask];
		seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
		dif = (intptr_t)seq - (intptr_t)pos;
		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&h->head,
			    &pos, pos + 1, memory_order_relaxed,
			    memory_order_relaxed))
				break;
		} else if (dif < 0) {
			atomic_fetch_add_explicit(&h->full, 1,
			    memory_order_relaxed);
			return -1;
		} else {
			pos = atomic_load_explicit(&h->head,
			    memory_order_relaxed);
		}
	}
	cell->item = item;
	atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
	ev_async_send(h->loop, &h->wake);
	return 0;
}

size_t
handoff_drain(struct handoff *h)
{
	size_t n = 0;

	/* Bounded by the ring: items pushed meanwhile re-arm the async. */
	while (n <= h->mask) {
		size_t pos = h->tail;
		struct handoff_cell *cell = &h->cells[pos & h->mask];
		void *item;

		if (atomic_load_explicit(&cell->seq, memory_order_acquire) !=
		    pos + 1)
			break;
		item = cell->item;
		atomic_store_explicit(&cell->seq, pos + h->mask + 1,
		    memory_order_release);
		h->tail = pos + 1;
		h->cb(item, h->arg);
		n++;
	}
	return n;
}

void
handoff_destroy(struct handoff *h)
{
	if (h->cells == NULL)
		return;
	(void)handoff_drain(h);
	ev_async_stop(h->loop, &h->wake);
	free(h->cells);
	h->cells = NULL;
}
