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
 *   listeners_reload()     SIGHUP: new TLS contexts and access lists for
 *                          new connections, all or nothing; then the
 *                          ticket key files and OCSP staples, each kept
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

#include "config.h"
#include "stream.h"

struct listeners;

/*
 * Builds the listeners of `cfg` on the loop of `sl` and binds their
 * addresses.  NULL with err when a certificate, key, access list, backend
 * or address is bad, or memory cannot be had; nothing is kept then.
 */
struct listeners *listeners_new(const struct config *cfg,
    struct stream_loop *sl, char *err, size_t errlen);

/*
 * Starts accepting in worker `worker` (0 when not forking) and logs the
 * addresses listened on.  0, or -1 when memory cannot be had (logged).
 */
int listeners_start(struct listeners *ls, int worker);

/*
 * Rebuilds every TLS context and access list from the files the
 * configuration names, for new connections; live connections keep the
 * contexts they hold.  A bad file keeps the current ones (logged, `who`
 * first: "supervisor: " or "").
 */
void listeners_reload(struct listeners *ls, const char *who);

/*
 * Stops accepting, and closes the admin page's connections: it answers no
 * one while draining, and a client of it must not hold the drain (a
 * half-sent request would, until the deadline).
 */
void listeners_stop(struct listeners *ls);

/* The streams a drain waits for: every open one but the admin page's. */
size_t listeners_streams(const struct listeners *ls);

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

#endif
