/*
 * sockpool: listening sockets waiting for a listener to take them.
 *
 * Sockets come in from systemd's socket activation or from the ferry being
 * upgraded (both by the same protocol: LISTEN_PID, LISTEN_FDS,
 * LISTEN_FDNAMES, the sockets from fd 3 on), or from the listeners of the
 * previous configuration during a reload.  A listener about to bind an
 * address takes the pooled sockets that match it instead, so the socket,
 * its accept queue and its port survive: no connection is refused.
 *
 * A socket matches a `bind` address when its family and host match (an
 * empty host: a wildcard address of either family) and its port is the
 * address's, or the address's port is 0 and the socket carries the
 * listener's name (an upgrade keeps a port the kernel picked).  A unix:
 * address matches the unix socket bound to its path (not bound again: a
 * new bind would replace the socket file the running ferry accepts on).
 *
 * The pool owns its sockets; sockpool_close() closes those nobody took.
 */
#ifndef FERRY_SOCKPOOL_H
#define FERRY_SOCKPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define SOCKPOOL_MAX 64
#define SOCKPOOL_NAME_LEN 64

struct sockpool {
	int fd[SOCKPOOL_MAX];
	char name[SOCKPOOL_MAX][SOCKPOOL_NAME_LEN];
	struct sockaddr_storage addr[SOCKPOOL_MAX];
	size_t n;
};

void sockpool_init(struct sockpool *p);

/*
 * Takes the sockets this process was handed (LISTEN_PID is ours), makes
 * them close-on-exec and non-blocking, and clears the variables.  Returns
 * how many, or -1 with err when one is not a listening stream
 * socket (TCP, or unix).
 */
int sockpool_from_env(struct sockpool *p, char *err, size_t errlen);

/* Adds a socket (owned from now on) under `name`.  0, or -1 when full. */
int sockpool_add(struct sockpool *p, int fd, const char *name);

/*
 * Moves the sockets matching host:port (see above) into fds (at most max)
 * and out of the pool; how many.
 */
size_t sockpool_take(struct sockpool *p, const char *name, const char *host,
    int port, int *fds, size_t max);

/* Closes what is left, logging each one unless quiet. */
void sockpool_close(struct sockpool *p, bool quiet);

#endif
