/* certwatch: see certwatch.h. */
#define _GNU_SOURCE
#include "certwatch.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The paths are the configuration's: it outlives the watch (certwatch.h). */
struct certwatch {
	struct ev_loop *loop;
	ev_stat *st;
	size_t n, max;
	ev_timer settle;
	void (*changed)(void *arg);
	void *arg;
};

static void
on_settled(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct certwatch *w = t->data;

	(void)loop;
	(void)revents;
	w->changed(w->arg);
}

static void
on_stat(struct ev_loop *loop, ev_stat *st, int revents)
{
	struct certwatch *w = st->data;

	(void)revents;
	/* Each change restarts the wait: one reload per renewal. */
	ev_timer_stop(loop, &w->settle);
	ev_timer_set(&w->settle, CERTWATCH_SETTLE, 0.);
	ev_timer_start(loop, &w->settle);
}

static bool
newer(const struct stat *sb, const struct timespec *since)
{
	return sb->st_mtim.tv_sec > since->tv_sec ||
	    (sb->st_mtim.tv_sec == since->tv_sec &&
	    sb->st_mtim.tv_nsec > since->tv_nsec);
}

static void
add(struct certwatch *w, const char *path, const struct timespec *since)
{
	struct stat sb;

	if (path[0] == '\0' || w->n >= w->max)
		return;
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->st[i].path, path))
			return;
	ev_stat_init(&w->st[w->n], on_stat, path, 1.);
	w->st[w->n].data = w;
	ev_stat_start(w->loop, &w->st[w->n]);
	if (since != NULL && stat(path, &sb) == 0 && newer(&sb, since))
		on_stat(w->loop, &w->st[w->n], 0);
	w->n++;
}

struct certwatch *
certwatch_new(struct ev_loop *loop, const struct config *cfg,
    const struct timespec *since, void (*changed)(void *arg), void *arg)
{
	struct certwatch *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		w->max += 2 * cfg->listeners[i].ncert + 7 +
		    cfg->listeners[i].nocsp;
	w->st = calloc(w->max ? w->max : 1, sizeof(*w->st));
	if (w->st == NULL) {
		free(w);
		return NULL;
	}
	w->loop = loop;
	w->changed = changed;
	w->arg = arg;
	ev_timer_init(&w->settle, on_settled, CERTWATCH_SETTLE, 0.);
	w->settle.data = w;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		for (size_t j = 0; j < l->ncert; j++) {
			add(w, l->cert[j], since);
			add(w, l->key[j], since);
		}
		add(w, l->client_ca, since);
		add(w, l->client_crl, since);
		add(w, l->backend_ca, since);
		add(w, l->backend_cert, since);
		add(w, l->backend_key, since);
		add(w, l->ticket_keys, since);
		add(w, l->acl, since);
		/* ocsp = FILE; auto follows its certificate and ocsp_dir. */
		for (size_t j = 0; j < l->nocsp; j++)
			if (strcmp(l->ocsp[j], "auto") && strcmp(l->ocsp[j],
			    "off"))
				add(w, l->ocsp[j], since);
	}
	return w;
}

void
certwatch_free(struct certwatch *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n; i++)
		ev_stat_stop(w->loop, &w->st[i]);
	ev_timer_stop(w->loop, &w->settle);
	free(w->st);
	free(w);
}
