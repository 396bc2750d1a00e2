/* relayclient: see relayclient.h. */
#define _GNU_SOURCE
#include "relayclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relay_proto.h"

/* Waits for `events` until `deadline`: 1 ready, 0 timed out, -1 error. */
static int
wait_fd(int fd, short events, double deadline)
{
	for (;;) {
		double left = deadline - now_s();
		struct pollfd p = { .fd = fd, .events = events };
		int r;

		if (left <= 0)
			return 0;
		r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r > 0)
			return 1;
		if (r == 0)
			continue;	/* re-check the deadline */
		if (errno != EINTR)
			return -1;
	}
}

static int
tls_handshake(struct rclient *c, double deadline)
{
	for (;;) {
		int r, e;

		ERR_clear_error();
		r = SSL_connect(c->ssl);
		if (r == 1)
			return 0;
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			r = wait_fd(c->fd, POLLIN, deadline);
		else if (e == SSL_ERROR_WANT_WRITE)
			r = wait_fd(c->fd, POLLOUT, deadline);
		else
			return -1;
		if (r <= 0)
			return -1;
	}
}

static int
tls_setup(struct rclient *c, const char *cert, const char *key)
{
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->ctx == NULL)
		return -1;
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_load_verify_locations(c->ctx, CERT("ca.pem"), NULL) != 1)
		return -1;
	if (cert != NULL && (SSL_CTX_use_certificate_chain_file(c->ctx, cert)
	    != 1 || SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM)
	    != 1))
		return -1;
	c->ssl = SSL_new(c->ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_set_tlsext_host_name(c->ssl, "localhost") != 1 ||
	    SSL_set1_host(c->ssl, "localhost") != 1)
		return -1;
	/* Writes may stop half way (timeouts) and resume with the rest. */
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return tls_handshake(c, now_s() + c->timeout);
}

static int
connect_to(struct rclient *c, bool tls, const char *cert, const char *key,
    int port, int rcvbuf)
{
	struct sockaddr_in in;
	int one = 1;

	memset(c, 0, sizeof(*c));
	c->timeout = RC_TIMEOUT;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	if (rcvbuf > 0)
		(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
		    sizeof(rcvbuf));
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons((uint16_t)port);
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&in, sizeof(in)) < 0 ||
	    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0)
		goto fail;
	if (tls && tls_setup(c, cert, key) < 0)
		goto fail;
	return 0;
fail:
	rc_free(c);
	return -1;
}

int
rc_connect(struct rclient *c, bool tls, int port, int rcvbuf)
{
	return connect_to(c, tls, NULL, NULL, port, rcvbuf);
}

int
rc_connect_cert(struct rclient *c, int port, const char *cert,
    const char *key, int rcvbuf)
{
	return connect_to(c, true, cert, key, port, rcvbuf);
}

void
rc_free(struct rclient *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->ctx != NULL)
		SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c->keys);
	c->ssl = NULL;
	c->ctx = NULL;
	c->fd = -1;
	c->keys = NULL;
}

void
rc_close(struct rclient *c)
{
	if (c->ssl != NULL) {
		ERR_clear_error();
		(void)SSL_shutdown(c->ssl);	/* best effort, no wait */
	}
	rc_free(c);
}

void
rc_reset(struct rclient *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (c->fd >= 0)
		(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg,
		    sizeof(lg));
	rc_free(c);
}

size_t
rc_write(struct rclient *c, const void *buf, size_t len, double timeout)
{
	const char *p = buf;
	double deadline = now_s() + timeout;
	size_t done = 0;

	while (done < len && c->fd >= 0) {
		short ev = POLLOUT;

		if (c->ssl != NULL) {
			size_t w = 0;
			ERR_clear_error();
			if (SSL_write_ex(c->ssl, p + done, len - done, &w) == 1) {
				done += w;
				continue;
			}
			int e = SSL_get_error(c->ssl, 0);
			if (e == SSL_ERROR_WANT_READ)
				ev = POLLIN;
			else if (e != SSL_ERROR_WANT_WRITE)
				break;
		} else {
			ssize_t n = send(c->fd, p + done, len - done,
			    MSG_NOSIGNAL);
			if (n > 0) {
				done += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0 || errno != EAGAIN)
				break;
		}
		if (wait_fd(c->fd, ev, deadline) <= 0)
			break;
	}
	return done;
}

bool
rc_send(struct rclient *c, const void *buf, size_t len)
{
	return rc_write(c, buf, len, c->timeout) == len;
}

bool
rc_send_byte(struct rclient *c, int b)
{
	uint8_t v = (uint8_t)b;

	return rc_send(c, &v, 1);
}

bool
rc_send_u32(struct rclient *c, uint32_t v)
{
	uint8_t b[RELAY_LEN_SIZE];

	relay_len_put(b, v);
	return rc_send(c, b, sizeof(b));
}

bool
rc_send_field(struct rclient *c, const void *p, size_t len)
{
	return rc_send_u32(c, (uint32_t)len) && rc_send(c, p, len);
}

long
rc_read(struct rclient *c, void *buf, size_t len, double timeout)
{
	double deadline = now_s() + timeout;

	if (c->fd < 0)
		return -1;
	for (;;) {
		short ev = POLLIN;
		int r;

		if (c->ssl != NULL) {
			size_t got = 0;
			ERR_clear_error();
			if (SSL_read_ex(c->ssl, buf, len, &got) == 1)
				return (long)got;
			int e = SSL_get_error(c->ssl, 0);
			if (e == SSL_ERROR_ZERO_RETURN)
				return 0;
			if (e == SSL_ERROR_WANT_WRITE)
				ev = POLLOUT;
			else if (e != SSL_ERROR_WANT_READ)
				return -1;
		} else {
			ssize_t n = recv(c->fd, buf, len, 0);
			if (n >= 0)
				return (long)n;
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -1;
		}
		r = wait_fd(c->fd, ev, deadline);
		if (r == 0)
			return RC_TIMEDOUT;
		if (r < 0)
			return -1;
	}
}

bool
rc_read_exact(struct rclient *c, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		long n = rc_read(c, (char *)buf + done, len - done, c->timeout);
		if (n <= 0)
			return false;
		done += (size_t)n;
	}
	return true;
}

int
rc_byte(struct rclient *c, double timeout)
{
	uint8_t b;
	long n = rc_read(c, &b, 1, timeout);

	if (n == 1)
		return b;
	return n == RC_TIMEDOUT ? RC_TIMEDOUT : -1;
}

bool
rc_closed(struct rclient *c, double timeout)
{
	uint8_t b;
	long n = rc_read(c, &b, 1, timeout);

	return n == 0 || n == -1;
}

bool
rc_quiet(struct rclient *c, double timeout)
{
	uint8_t b;

	return rc_read(c, &b, 1, timeout) == RC_TIMEDOUT;
}

/* Sends one step and reads its answer: RC_OK, RC_REFUSED, RC_ERROR. */
static int
answer(struct rclient *c, int step)
{
	int b = rc_byte(c, c->timeout);

	if (b == RELAY_OK)
		return RC_OK;
	if (b == RELAY_REFUSED) {
		c->refused_at = step;
		return RC_REFUSED;
	}
	return RC_ERROR;
}

int
rc_register(struct rclient *c, const char *uuid, size_t ulen,
    const char *keys, size_t klen)
{
	int r;

	c->refused_at = 0;
	if (!rc_send_byte(c, RELAY_PRODUCER))
		return RC_ERROR;
	if ((r = answer(c, 1)) != RC_OK)
		return r;
	if (!rc_send_field(c, uuid, ulen))
		return RC_ERROR;
	if ((r = answer(c, 2)) != RC_OK)
		return r;
	if (!rc_send_field(c, keys, klen))
		return RC_ERROR;
	if ((r = answer(c, 3)) != RC_OK)
		return r;
	c->nkeys = relay_keys_count(keys, klen);
	return RC_OK;
}

int
rc_producer(struct rclient *c, bool tls, int port, const char *uuid,
    const char *keys)
{
	if (rc_connect(c, tls, port, 0) < 0)
		return RC_ERROR;
	return rc_register(c, uuid, strlen(uuid), keys, strlen(keys));
}

int
rc_consumer(struct rclient *c, bool tls, int port, const char *uuid,
    int rcvbuf)
{
	if (rc_connect(c, tls, port, rcvbuf) < 0)
		return RC_ERROR;
	return rc_subscribe(c, uuid);
}

int
rc_subscribe(struct rclient *c, const char *uuid)
{
	int r = rc_ask_keys(c, uuid);

	if (r != RC_OK)
		return r;
	return rc_send_byte(c, RELAY_ACCEPT) ? RC_OK : RC_ERROR;
}

int
rc_ask_keys(struct rclient *c, const char *uuid)
{
	uint8_t len[RELAY_LEN_SIZE];
	uint32_t n;
	int r;

	c->refused_at = 0;
	if (!rc_send_byte(c, RELAY_CONSUMER))
		return RC_ERROR;
	if ((r = answer(c, 1)) != RC_OK)
		return r;
	if (!rc_send_field(c, uuid, strlen(uuid)))
		return RC_ERROR;
	if ((r = answer(c, 2)) != RC_OK)
		return r;
	if (!rc_read_exact(c, len, sizeof(len)))
		return RC_ERROR;
	n = relay_len_get(len);
	if (n == 0 || n > RELAY_MAX_KEYS_BYTES ||
	    (c->keys = malloc(n + 1)) == NULL ||
	    !rc_read_exact(c, c->keys, n))
		return RC_ERROR;
	c->keys[n] = '\0';
	c->keys_len = n;
	c->nkeys = relay_keys_count(c->keys, n);
	return RC_OK;
}

static void
put_f32(uint8_t *out, float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	out[0] = (uint8_t)u;
	out[1] = (uint8_t)(u >> 8);
	out[2] = (uint8_t)(u >> 16);
	out[3] = (uint8_t)(u >> 24);
}

static float
get_f32(const uint8_t *in)
{
	uint32_t u = (uint32_t)in[0] | (uint32_t)in[1] << 8 |
	    (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
	float f;

	memcpy(&f, &u, 4);
	return f;
}

char *
rc_key_names(size_t n)
{
	static const char digits[] = "0123456789"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	size_t o = 0, width = 1, room = 62, first = 0;
	char *k = malloc(5 * n + 1);

	if (k == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (i - first == room) {
			/* Every name of this width is taken: one digit more. */
			first = i;
			width++;
			room *= 62;
		}
		if (i > 0)
			k[o++] = RELAY_KEY_SEP;
		for (size_t d = width, v = i - first; d-- > 0; v /= 62)
			k[o + d] = digits[v % 62];
		o += width;
	}
	k[o] = '\0';
	return k;
}

void
rc_frame(uint8_t *out, size_t nkeys, uint32_t seq)
{
	for (size_t j = 0; j < nkeys; j++)
		put_f32(out + RELAY_VALUE_SIZE * j, (float)(seq * 8u + (uint32_t)(j % 8)));
}

bool
rc_frame_seq(const uint8_t *f, size_t nkeys, uint32_t *seq)
{
	float v0 = get_f32(f);
	uint32_t base;

	if (!(v0 >= 0 && v0 < 16777216.0f))
		return false;
	base = (uint32_t)v0;
	if ((float)base != v0 || base % 8 != 0)
		return false;
	for (size_t j = 1; j < nkeys; j++)
		if (get_f32(f + RELAY_VALUE_SIZE * j) != (float)(base + (uint32_t)(j % 8)))
			return false;
	*seq = base / 8;
	return true;
}

bool
rc_send_frames(struct rclient *c, uint32_t first, size_t n)
{
	size_t fs = relay_frame_size(c->nkeys);
	size_t per = fs > 65536 ? 1 : 65536 / fs;
	uint8_t *buf = malloc(per * fs);
	bool ok = buf != NULL;

	for (size_t i = 0; ok && i < n; i += per) {
		size_t k = n - i < per ? n - i : per;
		for (size_t j = 0; j < k; j++)
			rc_frame(buf + j * fs, c->nkeys, first + (uint32_t)(i + j));
		ok = rc_send(c, buf, k * fs);
	}
	free(buf);
	return ok;
}

size_t
rc_read_frames(struct rclient *c, size_t n, uint32_t *seqs, bool *torn)
{
	size_t fs = relay_frame_size(c->nkeys);
	size_t cap = fs > 65536 ? fs : 65536 / fs * fs;
	uint8_t *buf = malloc(cap);
	size_t got = 0, have = 0;

	*torn = false;
	while (buf != NULL && got < n) {
		/* Never read past the n-th frame: later bytes stay queued. */
		size_t want = (n - got) * fs - have;
		if (want > cap - have)
			want = cap - have;
		long r = rc_read(c, buf + have, want, c->timeout);
		if (r <= 0)
			break;
		have += (size_t)r;
		size_t off = 0;
		for (; have - off >= fs; off += fs, got++) {
			uint32_t seq;
			if (!rc_frame_seq(buf + off, c->nkeys, &seq)) {
				*torn = true;
				free(buf);
				return got;
			}
			if (seqs != NULL)
				seqs[got] = seq;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	free(buf);
	return got;
}

/*
 * Reads whatever has arrived, up to 256 KB at a time, never past the
 * want-th frame, and publishes the count after each read.
 */
static void *
reader_main(void *arg)
{
	struct rc_reader *r = arg;
	size_t fs = relay_frame_size(r->c->nkeys);
	size_t cap = fs > 256 * 1024 ? fs : 256 * 1024 / fs * fs;
	uint8_t *buf = malloc(cap);
	size_t got = 0, have = 0;

	while (buf != NULL && got < r->want) {
		size_t want = (r->want - got) * fs - have, off = 0;
		if (want > cap - have)
			want = cap - have;
		long n = rc_read(r->c, buf + have, want, r->c->timeout);
		if (n <= 0)
			break;
		have += (size_t)n;
		for (; have - off >= fs; off += fs, got++)
			if (!rc_frame_seq(buf + off, r->c->nkeys,
			    &r->seqs[got])) {
				r->torn = true;
				have = off = 0;
				break;
			}
		__atomic_store_n(&r->got, got, __ATOMIC_RELEASE);
		if (r->torn)
			break;
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	free(buf);
	return NULL;
}

int
rc_reader_start(struct rc_reader *r, struct rclient *c, size_t want)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->want = want;
	r->seqs = calloc(want > 0 ? want : 1, sizeof(*r->seqs));
	if (r->seqs == NULL)
		return -1;
	if (pthread_create(&r->th, NULL, reader_main, r) != 0) {
		free(r->seqs);
		r->seqs = NULL;
		return -1;
	}
	return 0;
}

size_t
rc_reader_got(struct rc_reader *r)
{
	return __atomic_load_n(&r->got, __ATOMIC_ACQUIRE);
}

void
rc_reader_join(struct rc_reader *r)
{
	pthread_join(r->th, NULL);
}

void
rc_reader_free(struct rc_reader *r)
{
	free(r->seqs);
	r->seqs = NULL;
}

int
rc_readers_take(struct rc_reader *rs, size_t nr, size_t n, double timeout,
    size_t *which)
{
	double end = now_s() + timeout;

	for (size_t i = 0; i < nr; i++) {
		*which = i;
		for (;;) {
			size_t g = rc_reader_got(&rs[i]);
			if (g > 0 && rs[i].seqs[g - 1] != g - 1)
				return RC_ERROR;
			if (g >= n)
				break;
			if (rs[i].torn)
				return RC_ERROR;
			if (now_s() > end)
				return RC_TIMEDOUT;
			usleep(200);
		}
	}
	return RC_OK;
}
