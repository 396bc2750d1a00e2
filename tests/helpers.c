/* Test helpers: see helpers.h. */
#define _GNU_SOURCE
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <stdlib.h>

#include "netutil.h"

const char *
transport_name(int t)
{
	return t == T_TLS ? "tls" : "plain";
}

void
tloop_init(struct tloop *t)
{
	/* As in ferry itself: OpenSSL writes with write(), not MSG_NOSIGNAL. */
	signal(SIGPIPE, SIG_IGN);
	t->loop = ev_loop_new(EVFLAG_AUTO);
	cr_assert_not_null(t->loop);
	stream_loop_init(&t->sl, t->loop);
}

void
tloop_destroy(struct tloop *t)
{
	stream_loop_destroy(&t->sl);
	ev_loop_destroy(t->loop);
}

static void
timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	*(bool *)w->data = true;
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

bool
tloop_run_pred(struct tloop *t, bool (*pred)(void *), void *arg,
    double timeout)
{
	bool expired = false;
	ev_timer timer, tick;

	ev_timer_init(&timer, timeout_cb, timeout, 0.);
	timer.data = &expired;
	ev_timer_start(t->loop, &timer);
	/* Peers in other threads set flags without waking the loop. */
	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(t->loop, &tick);
	for (;;) {
		/* What the prepare watcher would do before the next poll. */
		stream_loop_run_pending(&t->sl);
		if (pred(arg) || expired)
			break;
		ev_run(t->loop, EVRUN_ONCE);
	}
	ev_timer_stop(t->loop, &timer);
	ev_timer_stop(t->loop, &tick);
	stream_loop_run_pending(&t->sl);
	return pred(arg);
}

static bool
flag_pred(void *arg)
{
	return *(volatile bool *)arg;
}

bool
tloop_run_until(struct tloop *t, volatile bool *flag, double timeout)
{
	return tloop_run_pred(t, flag_pred, (void *)flag, timeout);
}

static bool
never(void *arg)
{
	(void)arg;
	return false;
}

void
tloop_run_for(struct tloop *t, double seconds)
{
	tloop_run_pred(t, never, NULL, seconds);
}

int
listen_loopback(bool v6, int *port)
{
	int fds[2];
	char err[256];
	int n = netutil_bind_sockets(v6 ? "::1" : "127.0.0.1", 0,
	    v6 ? AF_INET6 : AF_INET, 128, false, fds, 2, err, sizeof(err));

	cr_assert_eq(n, 1, "bind: %s", err);
	*port = netutil_local_port(fds[0]);
	return fds[0];
}

static void
set_timeouts(int fd, double secs)
{
	struct timeval tv = { (time_t)secs, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int
connect_loopback(bool v6, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (v6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		in6->sin6_addr = in6addr_loopback;
		len = sizeof(*in6);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
	set_timeouts(fd, 10);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int
accept_timeout(int lfd, double timeout)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };

	if (poll(&pfd, 1, (int)(timeout * 1000)) <= 0)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

struct tls_ctx *
test_server_ctx(enum tls_verify verify)
{
	struct tls_cert_pair pairs[2] = {
		{ CERT("server.pem"), CERT("server.key"), NULL },
		{ CERT("other.pem"), CERT("other.key"), NULL },
	};
	struct tls_server_opts o = {
		.certs = pairs, .ncerts = 2,
		.client_ca = CERT("ca.pem"), .verify = verify,
		.alpn = "ferry/1,http/1.1",
	};
	char err[256];
	struct tls_ctx *c = tls_ctx_new_server(&o, err, sizeof(err));

	cr_assert_not_null(c, "server TLS context: %s", err);
	return c;
}

void
peer_plain(struct peer *p, int fd)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
}

void
peer_tls(struct peer *p, int fd, const char *sni, const char *cert,
    const char *key)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->ctx = SSL_CTX_new(TLS_client_method());
	cr_assert_not_null(p->ctx);
	SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
	cr_assert_eq(SSL_CTX_load_verify_locations(p->ctx, CERT("ca.pem"),
	    NULL), 1);
	if (cert != NULL) {
		cr_assert_eq(SSL_CTX_use_certificate_chain_file(p->ctx, cert),
		    1);
		cr_assert_eq(SSL_CTX_use_PrivateKey_file(p->ctx, key,
		    SSL_FILETYPE_PEM), 1);
	}
	p->ssl = SSL_new(p->ctx);
	SSL_set_fd(p->ssl, fd);
	if (sni != NULL) {
		SSL_set_tlsext_host_name(p->ssl, sni);
		SSL_set1_host(p->ssl, sni);
	}
}

int
peer_tls_handshake(struct peer *p)
{
	int rc = SSL_connect(p->ssl);

	if (rc != 1) {
		unsigned long e = ERR_peek_last_error();
		char buf[256];
		ERR_error_string_n(e, buf, sizeof(buf));
		cr_log_info("peer handshake failed: %s", buf);
		ERR_clear_error();
		return 0;
	}
	return 1;
}

size_t
peer_write(struct peer *p, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		if (p->ssl != NULL) {
			size_t w = 0;
			if (SSL_write_ex(p->ssl, (const char *)buf + done,
			    len - done, &w) != 1)
				break;
			done += w;
		} else {
			ssize_t w = send(p->fd, (const char *)buf + done,
			    len - done, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			done += (size_t)w;
		}
	}
	return done;
}

long
peer_read(struct peer *p, void *buf, size_t len)
{
	if (p->ssl != NULL) {
		size_t got = 0;
		if (SSL_read_ex(p->ssl, buf, len, &got) == 1)
			return (long)got;
		int e = SSL_get_error(p->ssl, 0);
		ERR_clear_error();
		return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
	ssize_t n;
	do
		n = recv(p->fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	return (long)n;
}

size_t
peer_read_exact(struct peer *p, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		long n = peer_read(p, (char *)buf + done, len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	return done;
}

void
peer_close(struct peer *p)
{
	if (p->ssl != NULL) {
		SSL_shutdown(p->ssl);
		SSL_free(p->ssl);
		p->ssl = NULL;
	}
	if (p->ctx != NULL) {
		SSL_CTX_free(p->ctx);
		p->ctx = NULL;
	}
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
}

struct backend_conn {
	struct backend *b;
	int fd;
};

static void *
backend_conn_main(void *arg)
{
	struct backend_conn *bc = arg;
	struct backend *b = bc->b;

	bc->b->serve(bc->fd, b->arg);
	close(bc->fd);
	free(bc);
	__atomic_sub_fetch(&b->active, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *
backend_main(void *arg)
{
	struct backend *b = arg;

	while (!b->stop) {
		struct pollfd pfd = { .fd = b->lfd, .events = POLLIN };
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int fd = accept4(b->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		struct backend_conn *bc = malloc(sizeof(*bc));
		pthread_t t;
		if (bc == NULL) {
			close(fd);
			continue;
		}
		set_timeouts(fd, 10);
		bc->b = b;
		bc->fd = fd;
		__atomic_add_fetch(&b->active, 1, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&b->accepted, 1, __ATOMIC_SEQ_CST);
		if (pthread_create(&t, NULL, backend_conn_main, bc) != 0) {
			__atomic_sub_fetch(&b->active, 1, __ATOMIC_SEQ_CST);
			close(fd);
			free(bc);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

void
backend_start(struct backend *b, bool v6, backend_serve serve, void *arg)
{
	memset(b, 0, sizeof(*b));
	b->lfd = listen_loopback(v6, &b->port);
	/* The listener is non-blocking (netutil); accepted fds are not. */
	b->serve = serve;
	b->arg = arg;
	cr_assert_eq(pthread_create(&b->thread, NULL, backend_main, b), 0);
}

void
backend_stop(struct backend *b)
{
	b->stop = true;
	pthread_join(b->thread, NULL);
	close(b->lfd);
	/* Connections end by themselves (their peers close, or timeouts). */
	for (int i = 0; i < 1000 && b->active > 0; i++)
		usleep(10 * 1000);
}

void
backend_echo(int fd, void *arg)
{
	char buf[65536];
	ssize_t n;

	(void)arg;
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
			return;
	shutdown(fd, SHUT_WR);
}

void
fill_pattern(uint8_t *buf, size_t len, size_t offset, unsigned seed)
{
	for (size_t i = 0; i < len; i++) {
		size_t k = offset + i;
		buf[i] = (uint8_t)((k * 2654435761u) >> 13 ^ seed ^ (k >> 8));
	}
}

bool
check_pattern(const uint8_t *buf, size_t len, size_t offset, unsigned seed)
{
	for (size_t i = 0; i < len; i++) {
		size_t k = offset + i;
		if (buf[i] != (uint8_t)((k * 2654435761u) >> 13 ^ seed ^
		    (k >> 8)))
			return false;
	}
	return true;
}

double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
ping(struct peer *p, const char *msg)
{
	char buf[1024];
	size_t n = strlen(msg);
	cr_assert_lt(n, sizeof(buf));
	cr_assert_eq(peer_write(p, msg, n), n);
	cr_assert_eq(peer_read_exact(p, buf, n), n, "no echo");
	cr_assert_eq(memcmp(buf, msg, n), 0);
}

void
tmpdir_make(char *dir, size_t size, const char *prefix)
{
	snprintf(dir, size, "/tmp/%s-XXXXXX", prefix);
	cr_assert_not_null(mkdtemp(dir));
}

void
tmpdir_remove(char *dir)
{
	char cmd[160];

	if (dir[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		cr_assert_eq(system(cmd), 0);
		dir[0] = '\0';
	}
}

void
write_file_atomic(const char *path, const void *text, size_t len)
{
	char tmp[256];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	cr_assert_not_null(f, "%s", tmp);
	cr_assert_eq(fwrite(text, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(rename(tmp, path), 0);
}
