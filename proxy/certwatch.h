/*
 * certwatch: `cert_watch = on`: the files a reload would read (every
 * cert, key, client_ca, client_crl, backend_ca, backend_cert,
 * backend_key, ticket_keys, ocsp = FILE and acl) watched (libev's ev_stat:
 * inotify where the kernel has it, else a stat every second).  A change
 * calls back once things have settled (CERTWATCH_SETTLE: a renewal
 * writes the certificate and the key one after the other), and the
 * caller reloads them all or nothing, as on SIGHUP.
 */
#ifndef FERRY_CERTWATCH_H
#define FERRY_CERTWATCH_H

#include <ev.h>
#include <time.h>

#include "config.h"

#define CERTWATCH_SETTLE 0.5

struct certwatch;

/*
 * Watches the files of cfg; a file changed after `since` (when they were
 * last loaded: a worker restarted from an old copy) calls back at once.
 * NULL when memory cannot be had.  cfg must outlive the watch (its paths
 * are watched in place).
 */
struct certwatch *certwatch_new(struct ev_loop *loop, const struct config *cfg,
    const struct timespec *since, void (*changed)(void *arg), void *arg);
/* NULL is ignored. */
void certwatch_free(struct certwatch *w);

#endif
