/* hostilecheck: see hostilecheck.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"
#include "hostilecheck.h"
#include "netutil.h"
#include "relayclient.h"

struct backend be;

struct flooder *flooding;	/* freed by the fixture */


/* The crowd of bad connections a test holds (closed by the fixture). */
int *crowd;
size_t ncrowd;

void
crowd_close(void)
{
	for (size_t i = 0; i < ncrowd; i++)
		if (crowd[i] >= 0)
			close(crowd[i]);
	free(crowd);
	crowd = NULL;
	ncrowd = 0;
}

void
hostile_cleanup(void)
{
	crowd_close();
	if (flooding != NULL)
		flooder_free(flooding);
	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
}

/* "name{listener="L",mode="M"}" */
double
mode_metric(const char *name, const char *listener, const char *mode)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\",mode=\"%s\"}",
	    name, listener, mode);
	return ferry_metric(&fp, series);
}

/* Waits (15 s at most) for a series to read `want`. */
void
expect_mode_metric(const char *name, const char *listener,
    const char *mode, double want)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\",mode=\"%s\"}",
	    name, listener, mode);
	metric_expect(&fp, series, want, 15, 20);
}

/* A relay gauge or counter ("ferry_relay_*{listener="L"}"). */
void
expect_relay(const char *name, const char *listener, long long want)
{
	char series[256];

	snprintf(series, sizeof(series), "%s{listener=\"%s\"}", name,
	    listener);
	metric_expect(&fp, series, (double)want, 15, 20);
}

/* ---- clients ---- */

/* Deterministic noise (xorshift32): the same garbage on every run. */
uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * Connections waiting in the accept queue of the listener on `port`
 * (/proc/net/tcp: the rx_queue of a LISTEN socket), or -1.
 */
long
accept_queue(int port)
{
	char line[512];
	long queued = -1;
	FILE *f = fopen("/proc/net/tcp", "r");

	if (f == NULL)
		return -1;
	while (queued < 0 && fgets(line, sizeof(line), f) != NULL) {
		unsigned lport, state;
		unsigned long rx;
		if (sscanf(line, " %*d: %*8x:%x %*8x:%*x %x %*x:%lx", &lport,
		    &state, &rx) == 3 && state == 0x0a && (int)lport == port)
			queued = (long)rx;
	}
	fclose(f);
	return queued;
}

/*
 * n non-blocking connections to 127.0.0.1:port, made BATCH at a time,
 * each batch once the server's accept queue has room for it: a full
 * queue drops SYNs, and a dropped SYN costs a second.
 * fds[i] is -1 where a connect failed; returns how many connected.
 */
size_t
open_many(int port, int *fds, size_t n)
{
	enum { BATCH = 64 };
	struct sockaddr_in in;
	size_t ok = 0;

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons((uint16_t)port);
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (size_t base = 0; base < n; base += BATCH) {
		size_t k = n - base < BATCH ? n - base : BATCH;
		struct pollfd pf[BATCH];
		/* Room for a batch even in a queue of 128. */
		double wait_end = now_s() + 10;
		while (accept_queue(port) > 128 - BATCH && now_s() < wait_end)
			usleep(1000);
		for (size_t i = 0; i < k; i++) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
			    SOCK_CLOEXEC, 0);
			cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
			if (connect(fd, (struct sockaddr *)&in, sizeof(in)) < 0
			    && errno != EINPROGRESS) {
				close(fd);
				fd = -1;
			}
			fds[base + i] = fd;
			pf[i].fd = fd;
			pf[i].events = POLLOUT;
		}
		double end = now_s() + 15;
		size_t pending = k;
		while (pending > 0 && now_s() < end) {
			if (poll(pf, k, 100) <= 0)
				continue;
			for (size_t i = 0; i < k; i++) {
				if (pf[i].fd < 0 || pf[i].revents == 0)
					continue;
				int err = 0;
				socklen_t len = sizeof(err);
				getsockopt(pf[i].fd, SOL_SOCKET, SO_ERROR, &err,
				    &len);
				if (err != 0) {
					close(pf[i].fd);
					fds[base + i] = -1;
				} else {
					ok++;
				}
				pf[i].fd = -1;
				pending--;
			}
		}
	}
	return ok;
}

/* Sends all of a small message on a non-blocking socket. */
void
send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			cr_assert_gt(poll(&pf, 1, 10000), 0, "send stalled");
			continue;
		}
		cr_assert_gt(n, 0, "send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/*
 * Whether the server has closed each connection (EOF or reset; whatever
 * it sent before is read and dropped).  Polls until all of them are
 * closed or `timeout` passes; closed[i] says which; returns how many.
 */
size_t
wait_closed(const int *fds, bool *closed, size_t n, double timeout)
{
	struct pollfd *pf = calloc(n, sizeof(*pf));
	double end = now_s() + timeout;
	size_t done = 0;
	char buf[4096];

	cr_assert_not_null(pf);
	for (size_t i = 0; i < n; i++) {
		if (closed[i] || fds[i] < 0) {
			if (!closed[i])
				closed[i] = true;
			done++;
		}
	}
	for (;;) {
		for (size_t i = 0; i < n; i++) {
			pf[i].fd = closed[i] ? -1 : fds[i];
			pf[i].events = POLLIN | POLLRDHUP;
			pf[i].revents = 0;
		}
		if (done == n)
			break;
		double left = end - now_s();
		if (left <= 0)
			break;
		if (poll(pf, n, (int)(left * 1000) + 1) <= 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (pf[i].fd < 0 || pf[i].revents == 0)
				continue;
			ssize_t r;
			while ((r = recv(fds[i], buf, sizeof(buf),
			    MSG_DONTWAIT)) > 0)
				;
			if (r == 0 || (r < 0 && errno != EAGAIN &&
			    errno != EINTR)) {
				closed[i] = true;
				done++;
			}
		}
	}
	free(pf);
	return done;
}

/* How many are already closed, without waiting. */
size_t
count_closed_now(const int *fds, size_t n)
{
	bool *closed = calloc(n, sizeof(*closed));
	size_t c;

	cr_assert_not_null(closed);
	c = wait_closed(fds, closed, n, 0);
	free(closed);
	return c;
}

/*
 * A real ClientHello (what OpenSSL would send to "localhost"), made
 * without a socket: the bytes a stalled TLS client sends half of.
 */
size_t
client_hello(uint8_t *out, size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	SSL *ssl;
	int n;

	cr_assert(ctx != NULL && rb != NULL && wb != NULL);
	ssl = SSL_new(ctx);
	cr_assert_not_null(ssl);
	SSL_set_bio(ssl, rb, wb);
	SSL_set_tlsext_host_name(ssl, "localhost");
	cr_assert_neq(SSL_connect(ssl), 1);
	n = BIO_read(wb, out, (int)cap);
	cr_assert_gt(n, 100, "no ClientHello");
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return (size_t)n;
}

void
witness_start(struct witness *w, bool tls, int port, const char *uuid)
{
	char needle[128];

	memset(w, 0, sizeof(*w));
	w->tls = tls;
	w->port = port;
	snprintf(w->uuid, sizeof(w->uuid), "%s", uuid);
	snprintf(needle, sizeof(needle), " joined uuid '%s'", uuid);
	int before = ferry_log_count(&fp, needle);
	cr_assert_eq(rc_producer(&w->p, tls, port, uuid, "a,b,c"), RC_OK,
	    "witness producer %s refused", uuid);
	cr_assert_eq(rc_consumer(&w->c, tls, port, uuid, 0), RC_OK,
	    "witness consumer %s refused", uuid);
	/* Its accept byte is not acknowledged: the log says when it is in,
	 * and the frames sent from then on are its own. */
	cr_assert(ferry_log_wait(&fp, needle, before + 1, 15), "the good "
	    "consumer of %s never joined", uuid);
}

/*
 * n more frames through the pair; the consumer reads everything sent so
 * far, every frame, in order.
 */
void
witness_ok(struct witness *w, size_t n)
{
	uint32_t seqs[64];
	bool torn = false;

	cr_assert(rc_send_frames(&w->p, w->seq, n));
	w->seq += (uint32_t)n;
	while (w->next != w->seq) {
		size_t k = w->seq - w->next < 64 ? w->seq - w->next : 64;
		size_t got = rc_read_frames(&w->c, k, seqs, &torn);
		cr_assert_not(torn, "a torn frame");
		cr_assert_eq(got, k, "the good consumer got %zu of %zu frames",
		    got, k);
		for (size_t i = 0; i < k; i++)
			cr_assert_eq(seqs[i], w->next + i, "frame %u, not %u",
			    seqs[i], w->next + (uint32_t)i);
		w->next += (uint32_t)k;
	}
}

void
witness_close(struct witness *w)
{
	rc_close(&w->p);
	rc_close(&w->c);
}

/* A forward client through [web]: TLS, one message echoed. */
void
echo_ok(int port, const char *msg)
{
	struct peer p;
	char buf[256];
	size_t n = strlen(msg);
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_tls(&p, fd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(&p), "the good client's handshake "
	    "failed");
	cr_assert_eq(peer_write(&p, msg, n), n);
	cr_assert_eq(peer_read_exact(&p, buf, n), n, "no echo for the good "
	    "client");
	cr_assert_eq(memcmp(buf, msg, n), 0);
	peer_close(&p);
}

/*
 * [relay] plain, [relay-tls] and [web] (forward, TLS, to an echo
 * backend), all with `timeout` seconds to register or shake hands.
 */
void
start_three(double timeout, long nofile)
{
	char conf[2048];
	struct ferry_opts o = { .nofile = nofile };

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[relay]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "handshake_timeout = %g\n"
	    "[relay-tls]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nhandshake_timeout = %g\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "cert = %s\nkey = %s\nbackend = 127.0.0.1:%d\n"
	    "handshake_timeout = %g\n",
	    timeout, CERT("server.pem"), CERT("server.key"), timeout,
	    CERT("server.pem"), CERT("server.key"), be.port, timeout);
	ferry_start_opts(&fp, conf, &o);
}

/* The test process needs room for its crowd too. */
void
need_fds(size_t n)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < n + 256) {
		if (rl.rlim_max < n + 256)
			cr_skip_test("RLIMIT_NOFILE %lu is too low for %zu "
			    "connections", (unsigned long)rl.rlim_max, n);
		rl.rlim_cur = n + 256;
		cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
}


void
flooder_make(struct flooder *f, int port, size_t n)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *data;

	memset(f, 0, sizeof(*f));
	flooding = f;
	peer_tls(&f->p, connect_loopback(false, port), "localhost", NULL,
	    NULL);
	cr_assert_geq(f->p.fd, 0);
	SSL_set_min_proto_version(f->p.ssl, TLS1_3_VERSION);
	cr_assert(peer_tls_handshake(&f->p));
	cr_assert_not_null(mem);
	SSL_set0_wbio(f->p.ssl, mem);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(SSL_key_update(f->p.ssl, SSL_KEY_UPDATE_REQUESTED),
		    1);
		cr_assert_eq(SSL_do_handshake(f->p.ssl), 1);
	}
	long len = BIO_get_mem_data(mem, &data);
	cr_assert_gt(len, 0);
	f->recs = malloc((size_t)len);
	cr_assert_not_null(f->recs);
	memcpy(f->recs, data, (size_t)len);
	f->len = (size_t)len;
}

/* Sends until everything is out or the server closes the connection. */
void *
flooder_send(void *arg)
{
	struct flooder *f = arg;

	while (f->sent < f->len) {
		ssize_t n = send(f->p.fd, f->recs + f->sent, f->len - f->sent,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		f->sent += (size_t)n;
	}
	f->done = true;
	return NULL;
}

void
flooder_free(struct flooder *f)
{
	/* A failed test leaves the thread sending: stop it first. */
	if (f->sending) {
		shutdown(f->p.fd, SHUT_RDWR);
		pthread_join(f->thread, NULL);
	}
	free(f->recs);
	SSL_free(f->p.ssl);
	SSL_CTX_free(f->p.ctx);
	if (f->p.fd >= 0)
		close(f->p.fd);
	flooding = NULL;
}
