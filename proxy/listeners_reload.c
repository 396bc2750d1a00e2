/* listeners: SIGHUP reload (see listeners.h, listeners_impl.h). */
#define _GNU_SOURCE
#include "listeners.h"
#include "listeners_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "accesslog.h"
#include "acl.h"
#include "admin.h"
#include "cluster.h"
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "netutil.h"
#include "registry.h"
#include "sockpool.h"
#include "relay.h"
#include "relay_metrics.h"
#include "tcpserver.h"
#include "tls.h"
#include "tls_ocsp.h"
#include "tls_tickets.h"

/* ---- reloading ---- */

/* Generated keys stay as they are; a file is read again. */
static void
listener_reload_tickets(struct listener *ln, const char *who)
{
	char why[512];

	if (ln->tickets != NULL && tls_tickets_reload(ln->tickets, why,
	    sizeof(why)) < 0)
		LOGE("%sreload: [%s] %s; keeping the current ticket keys", who,
		    ln->cfg.name, why);
}

/*
 * New TLS contexts and access list for a listener that stays; its ticket
 * keys and OCSP staples read again, once the new contexts are built (a
 * bad certificate keeps the old staple).
 */
static void
listener_refresh(struct listener *ln, struct tls_set *t, size_t i,
    const char *who)
{
	/*
	 * The new contexts staple through the same objects: each follows its
	 * certificate file (a handshake on an older context gets no staple
	 * for a certificate that changed).
	 */
	for (size_t j = 0; j < CONFIG_MAX_CERTS; j++) {
		char why[768];
		if (ln->ocsp[j] != NULL && tls_ocsp_reload(ln->ocsp[j], why,
		    sizeof(why)) < 0)
			LOGE("%sreload: [%s] ocsp: %s; keeping the current "
			    "response", who, ln->cfg.name, why);
	}
	listener_reload_tickets(ln, who);
	if (t->server[i] != NULL)
		tcpserver_set_tls(ln->srv, t->server[i]);
	if (t->backend[i] != NULL)
		forward_listener_set_backend_tls(ln->fwd, t->backend[i]);
	if (t->acl[i] != NULL) {
		LOGI("%sreload: [%s] access list %s: %zu rules", who,
		    ln->cfg.name, acl_path(t->acl[i]), acl_rules(t->acl[i]));
		relay_listener_set_acl(ln->relay, t->acl[i]);
		t->acl[i] = NULL;
	}
}

/* The same section, but for where its lines are. */
bool
listeners_same_listener(const struct config_listener *a,
    const struct config_listener *b)
{
	return memcmp(a->name, b->name, sizeof(a->name)) == 0 &&
	    memcmp(&a->mode, &b->mode, sizeof(*a) -
	    offsetof(struct config_listener, mode)) == 0;
}

static const struct config_listener *
find_listener_in(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		if (!strcmp(c->listeners[i].name, name))
			return &c->listeners[i];
	return NULL;
}

struct listener *
listeners_find_listener(const struct listeners *ls, const char *name)
{
	for (size_t i = 0; i < ls->n; i++)
		if (!strcmp(ls->l[i]->cfg.name, name))
			return ls->l[i];
	return NULL;
}

bool
listeners_same_set(const struct listeners *ls, const struct config *next)
{
	if (next->nlisteners != ls->n)
		return false;
	for (size_t i = 0; i < next->nlisteners; i++) {
		const struct listener *ln = listeners_find_listener(ls,
		    next->listeners[i].name);
		if (ln == NULL || !listeners_same_listener(&ln->cfg, &next->listeners[i]))
			return false;
	}
	return true;
}

/*
 * Retired listeners whose connections are all gone (and, for a relay
 * one, whose registry entries are) are freed: reloads do not pile them
 * up.
 */
void
listeners_tidy(struct listeners *ls)
{
	size_t kept = 0;

	for (size_t i = 0; i < ls->nretired; i++) {
		struct listener *ln = ls->retired[i];
		if ((ln->fwd == NULL || forward_listener_conns(ln->fwd) == 0) &&
		    (ln->relay == NULL || relay_listener_idle(ln->relay))) {
			LOGI("[%s] (retired by a reload) drained: freed",
			    ln->cfg.name);
			listeners_listener_free(ln);
		} else {
			ls->retired[kept++] = ln;
		}
	}
	ls->nretired = kept;
}

static int
retire(struct listeners *ls, struct listener *ln)
{
	struct listener **r = realloc(ls->retired, (ls->nretired + 1) *
	    sizeof(*r));

	if (r == NULL)
		return -1;
	ls->retired = r;
	/* Stops accepting: a new listener holds its sockets if it took them. */
	tcpserver_stop(ln->srv);
	r[ls->nretired++] = ln;
	return 0;
}

/*
 * The listeners of `next` that are not the current ones, built and bound:
 * the sockets of the listeners that go are pooled (copies: until the
 * commit they still accept), so an address that stays keeps its socket.
 */
static int
build_changed(struct listeners *ls, const struct config *next,
    struct tls_set *t, struct listener **out, char *err, size_t errlen)
{
	struct sockpool pool;
	int rc = 0;

	sockpool_init(&pool);
	for (size_t i = 0; i < ls->n; i++) {
		struct listener *ln = ls->l[i];
		int fds[TCPSERVER_MAX_SOCKETS];
		size_t n = tcpserver_fds(ln->srv, fds, TCPSERVER_MAX_SOCKETS);
		const struct config_listener *nl = NULL;

		for (size_t j = 0; j < next->nlisteners; j++)
			if (!strcmp(next->listeners[j].name, ln->cfg.name))
				nl = &next->listeners[j];
		if (nl != NULL && listeners_same_listener(&ln->cfg, nl))
			continue;
		for (size_t k = 0; k < n; k++) {
			int fd = fcntl(fds[k], F_DUPFD_CLOEXEC, 3);
			if (fd >= 0 && sockpool_add(&pool, fd,
			    ln->cfg.name) < 0)
				close(fd);
		}
	}
	for (size_t i = 0; i < next->nlisteners && rc == 0; i++) {
		const struct config_listener *nl = &next->listeners[i];
		struct listener *old = listeners_find_listener(ls, nl->name);

		out[i] = NULL;
		if (old != NULL && listeners_same_listener(&old->cfg, nl))
			continue;
		if ((out[i] = listeners_listener_new(nl)) == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
			break;
		}
		rc = listeners_listener_build(ls, out[i], t, i, &pool, err, errlen);
	}
	/* Sockets nobody took close with the listeners they came from. */
	sockpool_close(&pool, true);
	return rc;
}

int
listeners_reload(struct listeners *ls, const struct config *next,
    const char *who, char *err, size_t errlen)
{
	struct listener *built[CONFIG_MAX_LISTENERS] = { NULL };
	struct listener *now[CONFIG_MAX_LISTENERS];
	const struct config *prev = ls->cfg;
	size_t added = 0, changed = 0, removed = 0;
	struct tls_keep *keep;
	struct tls_set t;

	listeners_tidy(ls);
	if (listeners_check_clashes(next, err, errlen) < 0 ||
	    (keep = listeners_tls_keep_build(next, ls, err, errlen)) == NULL)
		return -1;
	if (listeners_tls_set_build(next, &t, keep, err, errlen) < 0) {
		listeners_tls_keep_free(keep);
		return -1;
	}
	ls->cfg = next;		/* errors name the new file's lines */
	if (build_changed(ls, next, &t, built, err, errlen) < 0) {
		for (size_t i = 0; i < next->nlisteners; i++)
			listeners_listener_free(built[i]);
		listeners_tls_set_free(&t, next->nlisteners);
		listeners_tls_keep_free(keep);
		ls->cfg = prev;
		return -1;
	}
	for (size_t i = 0; i < next->nlisteners; i++)
		if (built[i] != NULL)
			listeners_tls_keep_give(keep, i, built[i]);
	listeners_tls_keep_free(keep);
	for (size_t i = 0; i < next->nlisteners; i++) {
		struct listener *old = listeners_find_listener(ls,
		    next->listeners[i].name);
		if (built[i] == NULL) {
			listener_refresh(old, &t, i, who);
			now[i] = old;
			continue;
		}
		/* Keys it shares with the one it replaces: the file anew. */
		listener_reload_tickets(built[i], who);
		now[i] = built[i];
		if (old != NULL)
			changed++;
		else
			added++;
	}
	for (size_t i = 0; i < ls->n; i++) {
		bool kept = false;
		for (size_t j = 0; j < next->nlisteners; j++)
			kept = kept || now[j] == ls->l[i];
		if (kept)
			continue;
		if (find_listener_in(next, ls->l[i]->cfg.name) == NULL) {
			LOGN("%sreload: [%s] removed: draining %llu "
			    "connections", who, ls->l[i]->cfg.name,
			    (unsigned long long)listeners_listener_conns(ls->l[i]));
			removed++;
		}
		if (retire(ls, ls->l[i]) < 0)
			listeners_listener_free(ls->l[i]);	/* no memory: closes */
	}
	memcpy(ls->l, now, next->nlisteners * sizeof(now[0]));
	ls->n = next->nlisteners;
	listeners_tls_set_free(&t, next->nlisteners);
	for (size_t i = 0; i < next->nlisteners; i++) {
		if (built[i] == NULL || ls->worker < 0)
			continue;
		/* A node of the cluster serves its new relay listeners too. */
		if (built[i]->relay != NULL && ls->cluster != NULL)
			relay_listener_set_cluster(built[i]->relay,
			    ls->cluster);
		(void)listeners_listener_start(ls, built[i], ls->worker,
		    ls->cfg->cluster.set);
	}
	LOGI("%sreload: %zu listeners (%zu added, %zu changed, %zu removed); "
	    "certificates reloaded for new connections", who, ls->n, added,
	    changed, removed);
	return 0;
}
