/*
 * forwardcheck: what the forward-mode suites (test_forward*.c) share.
 *
 * start_web() runs the real ferry with one forward listener [web] and an
 * admin listener; clients are peers (helpers.h) and backends are threads
 * (struct backend).  Every helper fails the test (cr_assert) rather than
 * returning an error, and every wait is bounded.  The ferry under test is
 * `fp` and the fixture `cleanup` (suite.h).
 */
#ifndef FERRY_TEST_FORWARDCHECK_H
#define FERRY_TEST_FORWARDCHECK_H

#include <netinet/in.h>

#include <stdbool.h>


#include "helpers.h"
#include "suite.h"

/* A forward listener's series: "name{listener="L",mode="forward"}". */
#define SERIES(name, listener) \
	name "{listener=\"" listener "\",mode=\"forward\"}"

/* Waits (bounded) until *flag is set by a backend thread. */
bool wait_flag(volatile bool *flag, double timeout);
/*
 * Starts ferry with one forward listener [web] on 127.0.0.1:0 (TLS with
 * the development certificate unless `plain`), an admin listener, and
 * `extra` lines for the listener (backend = ..., etc.).
 */
void start_web(bool plain, const char *extra);
/* A TLS client through ferry, handshake done. */
void tls_client(struct peer *p, bool v6, int port);
/* Reads until EOF (true) or an error/timeout (false), discarding. */
bool read_to_eof(struct peer *p);
/* A port nobody listens on. */
int dead_port(void);

/* A backend's view of one connection, for serve_watch(). */
struct watch {
	volatile bool closed;
};

/* Reads until the connection ends, however it ends. */
void serve_watch(int fd, void *arg);

/* A socket address of `ip` (text) and `port`. */
void sin4(struct sockaddr_in *a, const char *ip, int port);
void sin6(struct sockaddr_in6 *a, const char *ip, int port);

#endif
