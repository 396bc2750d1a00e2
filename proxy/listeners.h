/*
 * listeners: the server's listeners, built from a configuration.
 *
 * struct listeners owns everything the configuration's listeners need:
 * the TLS contexts (towards clients, and a forward listener's towards its
 * backends), what outlives those contexts (each TLS listener's session
 * ticket keys, shared by the workers; each certificate's OCSP staple,
 * fetched by worker 0) and access lists, the relay registry (one uuid namespace for
 * every relay listener) and the relay listeners, the forward listeners
 * with their backends, the admin page, the tcpservers that accept for
 * them (unix: addresses bound with their mode and owner, accept_proxy),
 * and the metrics source of the relay families.
 *
 * Its life follows the process's:
 *   listeners_new()        before the fork: builds everything and binds
 *                          every address (the workers share the sockets);
 *                          nothing accepts yet;
 *   listeners_start()      in each worker: relay listeners and the admin
 *                          page in worker 0 only (pairing by uuid needs
 *                          one registry), forward listeners in every
 *                          worker (the kernel spreads the accepts), the
 *                          backends' active checks in worker 0 only
 *                          (their state is shared: backend.h); with
 *                          [cluster], each worker is a node of the
 *                          cluster (cluster.h) and serves the relay
 *                          listeners too;
 *   listeners_reload()     SIGHUP: the listeners of a new configuration,
 *                          all or nothing: a listener whose section did
 *                          not change stays as it is (new TLS contexts
 *                          and access lists for new connections); one
 *                          added, or changed, is built and bound (taking
 *                          the sockets of the addresses it keeps); one
 *                          removed or changed stops accepting and is
 *                          kept, retired, while its connections drain
 *                          (and a relay one's registry entries go):
 *                          listeners_tidy() frees it then; the ticket
 *                          keys of a listener that stays are kept (their
 *                          files read again), a new listener gets its
 *                          own; OCSP staples are read again; each kept
 *                          when its new file is bad;
 *   listeners_stop()       SIGTERM: no new connections (a drain);
 *   listeners_close_all()  closes every connection left (teardown); their
 *                          close callbacks run with the stream loop's
 *                          pending work (stream_loop_destroy);
 *   listeners_leave()      then the node leaves its cluster: the uuids it
 *                          held are released and the other nodes told,
 *                          NATS drained; it runs the loop for that (3 s
 *                          at most);
 *   listeners_free()       after those callbacks have run.
 * listeners_check() builds and resolves what listeners_new() would, binds
 * nothing and keeps nothing, and loads [cluster]'s files (--check).
 *
 * Errors name the file, line and key they come from (config_error).  The
 * configuration must outlive the listeners.
 */
#ifndef FERRY_LISTENERS_H
#define FERRY_LISTENERS_H

#include <stddef.h>

#include <stdbool.h>

#include "config.h"
#include "stream.h"

struct listeners;
struct sockpool;

/*
 * Builds the listeners of `cfg` on the loop of `sl` and binds their
 * addresses, taking the matching sockets of `pool` (inherited: see
 * sockpool.h; NULL: none) instead of binding anew.  NULL with err when a
 * certificate, key, access list, backend or address is bad, or memory
 * cannot be had; nothing is kept then.
 */
struct listeners *listeners_new(const struct config *cfg,
    struct stream_loop *sl, struct sockpool *pool, char *err,
    size_t errlen);

/*
 * Starts accepting in worker `worker` (0 when not forking) and logs the
 * addresses listened on.  0, or -1 when memory cannot be had (logged).
 */
int listeners_start(struct listeners *ls, int worker);

/*
 * Applies `next` (see above), which must outlive the listeners from now
 * on (the previous configuration may go).  0; or -1 with err naming the
 * file, line and key, and nothing changed.  [ferry] keys are the caller's
 * (app.c): the admin page stays as it is.  `who` prefixes the log lines
 * ("supervisor: " or "").
 */
int listeners_reload(struct listeners *ls, const struct config *next,
    const char *who, char *err, size_t errlen);

/* Whether `next` has exactly the current listeners (certificates aside). */
bool listeners_same_set(const struct listeners *ls,
    const struct config *next);

/*
 * The listening sockets (every listener's and the admin page's) and the
 * name of the listener each serves, at most max: how many.  For an
 * upgrade (the new process inherits them).
 */
size_t listeners_fds(const struct listeners *ls, int *fds,
    char (*names)[CONFIG_NAME_LEN], size_t max);

/*
 * Stops accepting, and closes the admin page's connections: it answers no
 * one while draining, and a client of it must not hold the drain (a
 * half-sent request would, until the deadline).
 */
void listeners_stop(struct listeners *ls);

/*
 * Client connections open in this process (a forwarded one counts once,
 * its backend aside); the admin page's are not counted.
 */
size_t listeners_connections(const struct listeners *ls);

/*
 * Frees the listeners reloads retired whose connections (and registry
 * entries) are all gone; the next reload does it too.
 */
void listeners_tidy(struct listeners *ls);

/* SIGUSR1: every access log reopened (after logrotate moved them). */
void listeners_reopen_logs(struct listeners *ls);

/* Devices (uuids) the relay listeners serve now. */
size_t listeners_devices(const struct listeners *ls);

/* Closes every connection (teardown); listeners_free() follows. */
void listeners_close_all(struct listeners *ls);

/* The node leaves its cluster (see above); nothing without [cluster]. */
void listeners_leave(struct listeners *ls);

/* After the loop ran the close callbacks.  NULL is ignored. */
void listeners_free(struct listeners *ls);

/*
 * --check: every TLS context and access list, the backends and the
 * addresses to bind resolved; nothing bound, nothing kept.  0, or -1
 * with err.
 */
int listeners_check(const struct config *cfg, char *err, size_t errlen);

/*
 * Workers of `workers` that would serve nothing: every listener is a
 * relay listener, which worker 0 alone serves (one registry).
 */
size_t listeners_idle_workers(const struct config *cfg, int workers);

#endif
