/*
 * Test helpers: an event loop driven until a condition holds, blocking
 * peers (plain or TLS) on loopback, and certificate paths.
 *
 * Every helper fails the test (cr_assert) rather than returning an error,
 * and every blocking call has a timeout, so a broken server makes a test
 * fail, never hang.
 */
#ifndef FERRY_TEST_HELPERS_H
#define FERRY_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include <openssl/ssl.h>

#include "stream.h"
#include "tls.h"

#define CERT(name) FERRY_SRCDIR "/certs/" name

/* Seconds on the monotonic clock, for the suites' bounded waits. */
double now_s(void);

/* Transports the shared stream suite runs over. */
enum transport { T_PLAIN = 0, T_TLS = 1 };
const char *transport_name(int t);

struct tloop {
	struct ev_loop *loop;
	struct stream_loop sl;
};

void tloop_init(struct tloop *t);
void tloop_destroy(struct tloop *t);
/*
 * Runs the loop until *flag becomes true (or `pred(arg)` when flag is
 * NULL) or `timeout` seconds pass; returns whether the condition held.
 */
bool tloop_run_until(struct tloop *t, volatile bool *flag, double timeout);
bool tloop_run_pred(struct tloop *t, bool (*pred)(void *), void *arg,
    double timeout);
/* Runs the loop for `seconds`. */
void tloop_run_for(struct tloop *t, double seconds);

/* A listening socket on 127.0.0.1 (or ::1 with v6), port 0. */
int listen_loopback(bool v6, int *port);
/* Blocking connect with 10 s send/receive timeouts. */
int connect_loopback(bool v6, int port);
/* accept() with a poll() timeout; -1 on timeout. */
int accept_timeout(int lfd, double timeout);

/* Server TLS context from certs/ (server.pem), optional client CA. */
struct tls_ctx *test_server_ctx(enum tls_verify verify);

/*
 * A blocking peer: a plain socket or a TLS client over it, usable from a
 * thread.  For TLS the handshake runs in peer_tls_handshake().
 */
struct peer {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

void peer_plain(struct peer *p, int fd);
/* TLS client verifying the server against ca.pem for `sni` (may be NULL);
 * cert/key: client certificate or NULL. */
void peer_tls(struct peer *p, int fd, const char *sni, const char *cert,
    const char *key);
/* Returns 1 on success, 0 on failure (with the OpenSSL reason printed). */
int peer_tls_handshake(struct peer *p);
/* Full write; returns bytes written (short on error). */
size_t peer_write(struct peer *p, const void *buf, size_t len);
/* Reads up to len; 0 on EOF, -1 on error. */
long peer_read(struct peer *p, void *buf, size_t len);
/* Reads exactly len (or until EOF/error); returns bytes read. */
size_t peer_read_exact(struct peer *p, void *buf, size_t len);
void peer_close(struct peer *p);
/*
 * Sends `msg` (under 1 KB) and fails the test unless the same bytes come
 * back: one round trip through an echoing backend.
 */
void ping(struct peer *p, const char *msg);

/*
 * A backend on loopback for end-to-end tests: a thread accepts, and each
 * connection is served by `serve(fd, arg)` in a thread of its own (the fd
 * is blocking, with 10 s timeouts, and is closed when serve returns).
 * backend_stop() stops accepting and waits (bounded) for the connections
 * still being served.
 */
typedef void (*backend_serve)(int fd, void *arg);

struct backend {
	int lfd;
	int port;
	pthread_t thread;
	backend_serve serve;
	void *arg;
	volatile int active;		/* connections being served */
	volatile int accepted;
	volatile bool stop;
};

void backend_start(struct backend *b, bool v6, backend_serve serve,
    void *arg);
void backend_stop(struct backend *b);
/* serve functions: echo until EOF, then FIN. */
void backend_echo(int fd, void *arg);

/*
 * A fresh directory "/tmp/PREFIX-XXXXXX" into dir (size bytes), and its
 * removal with everything in it (nothing when dir is empty; dir is
 * emptied).
 */
void tmpdir_make(char *dir, size_t size, const char *prefix);
void tmpdir_remove(char *dir);
/* Writes `len` bytes to PATH.tmp, renamed into place: a reader (a reload)
 * never sees half a file. */
void write_file_atomic(const char *path, const void *text, size_t len);

/* Deterministic test data: byte i of a stream seeded with `seed`. */
void fill_pattern(uint8_t *buf, size_t len, size_t offset, unsigned seed);
bool check_pattern(const uint8_t *buf, size_t len, size_t offset,
    unsigned seed);

#endif
