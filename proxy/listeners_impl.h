/*
 * listeners_impl: the listeners module's own header, shared by its files
 * and included by no other module (the public contract is listeners.h).
 *
 *   listeners.c         building the listeners (relay, forward, admin
 *                       page, binding), starting them per worker, the
 *                       status page and metrics sources, stop, close_all,
 *                       leave, free
 *   listeners_tls.c     TLS contexts and access lists (the tls_set), the
 *                       ticket keys and OCSP sources they use (tls_keep)
 *   listeners_reload.c  SIGHUP: diffing the sections, refreshing the
 *                       listeners that stay, retiring the others, tidy
 *   listeners_check.c   --check: addresses, access logs, clashes
 *
 * listeners_* functions declared here are shared between these files and
 * nothing else.
 */
#ifndef FERRY_LISTENERS_IMPL_H
#define FERRY_LISTENERS_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "accesslog.h"
#include "acl.h"
#include "admin.h"
#include "cluster.h"
#include "config.h"
#include "forward.h"
#include "listeners.h"
#include "registry.h"
#include "relay.h"
#include "sockpool.h"
#include "tcpserver.h"
#include "tls.h"
#include "tls_ocsp.h"
#include "tls_tickets.h"

/*
 * One configured listener and what serves it.  Its own copy of its
 * section: a reload replaces the configuration, and a listener it removes
 * or changes lives on (retired) while its connections drain.
 */
struct listener {
	struct config_listener cfg;
	struct tcpserver *srv;
	int metrics_id;
	struct relay_listener *relay;	/* mode = relay */
	struct forward_listener *fwd;	/* mode = forward */
	struct accesslog *access;	/* access_log, or NULL */
	/*
	 * What its TLS contexts use and outlive: its ticket keys (made
	 * before the fork; a reload keeps them while ticket_keys and
	 * ticket_rotate stay) and a staple source per certificate with ocsp.
	 */
	struct tls_tickets *tickets;
	struct tls_ocsp *ocsp[CONFIG_MAX_CERTS];
};

struct listeners {
	const struct config *cfg;
	struct stream_loop *sl;
	struct listener *l[CONFIG_MAX_LISTENERS];
	size_t n;
	/* Removed or replaced by reloads: their connections drain. */
	struct listener **retired;
	size_t nretired;
	int worker;			/* listeners_start's, or -1 before */
	struct registry *reg;		/* every relay listener's uuids */
	struct cluster *cluster;	/* this worker as a node, or NULL */
	struct tcpserver *admin;	/* NULL: no admin page here */
	struct admin *admin_conns;	/* its connections */
	struct relay_listener *admin_relay;	/* the device page's consumers */
};

/*
 * What the TLS contexts of a configuration are built with and that lives
 * as long as its listeners, one slot per listener of the configuration:
 * a listener's own (one that stays), or made for it (`made`: freed if
 * the build fails, else handed to the new listener).
 */
struct tls_keep {
	struct tls_tickets *tickets[CONFIG_MAX_LISTENERS];
	struct tls_ocsp *ocsp[CONFIG_MAX_LISTENERS][CONFIG_MAX_CERTS];
	bool made[CONFIG_MAX_LISTENERS];
};

/*
 * What SIGHUP reloads: every listener's TLS contexts and access lists,
 * built together so that a reload is all or nothing.  The servers and
 * listeners they go to take their own references (an access list is
 * taken over: its slot is then NULL).
 */
struct tls_set {
	struct tls_ctx *server[CONFIG_MAX_LISTENERS];
	struct tls_ctx *backend[CONFIG_MAX_LISTENERS];
	struct acl *acl[CONFIG_MAX_LISTENERS];
};

/* ---- listeners_tls.c ---- */

struct tls_ctx *
listeners_backend_tls(const struct config *cfg,
    const struct config_listener *l, char *err, size_t errlen);
void listeners_tls_set_free(struct tls_set *t, size_t n);
int listeners_tls_set_build(const struct config *cfg, struct tls_set *t,
    const struct tls_keep *keep, char *err, size_t errlen);
void listeners_ocsp_free(struct tls_ocsp **ocsp);
void listeners_tls_keep_free(struct tls_keep *k);
struct tls_keep *listeners_tls_keep_build(const struct config *cfg,
    const struct listeners *cur, char *err, size_t errlen);
void listeners_tls_keep_give(struct tls_keep *k, size_t i,
    struct listener *ln);

/* ---- listeners.c ---- */

int listeners_resolve_backends(const struct config *cfg,
    const struct config_listener *l, struct backend_def *out, char *err,
    size_t errlen);
int listeners_unix_owner(const struct config_listener *l, uid_t *uid,
    gid_t *gid, char *why, size_t whylen);
int listeners_listener_build(struct listeners *ls, struct listener *ln,
    struct tls_set *t, size_t i, struct sockpool *pool, char *err,
    size_t errlen);
void listeners_listener_free(struct listener *ln);
struct listener *listeners_listener_new(const struct config_listener *l);
int listeners_listener_start(struct listeners *ls, struct listener *ln,
    int worker, bool cluster_set);
uint64_t listeners_listener_conns(const struct listener *ln);

/* ---- listeners_reload.c ---- */

bool listeners_same_listener(const struct config_listener *a,
    const struct config_listener *b);
struct listener *listeners_find_listener(const struct listeners *ls,
    const char *name);

/* ---- listeners_check.c ---- */

int listeners_check_clashes(const struct config *cfg, char *err,
    size_t errlen);

#endif
