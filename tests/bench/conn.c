/* conn: client connections for the load generator; see bench.h. */
#define _GNU_SOURCE
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "netutil.h"

void
bench_ssl_error(char *out, size_t len)
{
	unsigned long e;
	size_t used = 0;

	out[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		if (used + 2 >= len)
			continue;
		if (used > 0) {
			out[used++] = ';';
			out[used++] = ' ';
			out[used] = '\0';
		}
		ERR_error_string_n(e, out + used, len - used);
		used += strlen(out + used);
	}
	if (out[0] == '\0')
		snprintf(out, len, "unknown TLS error");
}

static void
bconn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct bconn *c = (struct bconn *)w;

	(void)loop;
	c->cb(c, revents);
}

bool
bconn_open(const struct bconn *c)
{
	return c->fd >= 0;
}

int
bconn_start(struct bconn *c, struct ev_loop *loop, const struct sockaddr *sa,
    socklen_t salen, SSL_CTX *ctx, const char *host, const char *sni,
    bconn_cb cb, void *owner)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->loop = loop;
	c->cb = cb;
	c->owner = owner;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(c->err, sizeof(c->err), "socket: %s", strerror(errno));
		return -1;
	}
	/* Frames are small and latency is measured: no Nagle delay. */
	if (netutil_set_nodelay(fd) < 0) {
		snprintf(c->err, sizeof(c->err), "TCP_NODELAY: %s",
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
		snprintf(c->err, sizeof(c->err), "connect: %s",
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (ctx != NULL) {
		c->ssl = SSL_new(ctx);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
			bench_ssl_error(c->err, sizeof(c->err));
			SSL_free(c->ssl);
			c->ssl = NULL;
			close(fd);
			return -1;
		}
		SSL_set_connect_state(c->ssl);
		if (sni != NULL)
			SSL_set_tlsext_host_name(c->ssl, sni);
		if (SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE &&
		    host != NULL) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
			unsigned char ip[16];
			int ok;

			if (inet_pton(AF_INET, host, ip) == 1 ||
			    inet_pton(AF_INET6, host, ip) == 1)
				ok = X509_VERIFY_PARAM_set1_ip_asc(vp, host);
			else
				ok = X509_VERIFY_PARAM_set1_host(vp, host, 0);
			if (ok != 1) {
				bench_ssl_error(c->err, sizeof(c->err));
				SSL_free(c->ssl);
				c->ssl = NULL;
				close(fd);
				return -1;
			}
		}
	}
	c->fd = fd;
	c->connecting = true;
	ev_io_init(&c->io, bconn_io_cb, fd, EV_WRITE);
	ev_io_start(loop, &c->io);
	c->armed = EV_WRITE;
	return 0;
}

/*
 * SSL_get_error() needs the error queue empty before the call it judges;
 * ERR_clear_error() walks every slot whatever they hold (in OpenSSL 3.0 a
 * tenth of what a relayed TLS frame cost ferry, see proxy/tls.c), so an
 * empty queue, the usual case, is left alone.
 */
static inline void
clear_errors(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* One place sorts OpenSSL's answers into the connection's results. */
static enum bres
ssl_result(struct bconn *c, int ret, const char *what)
{
	int saved = errno;
	int e = SSL_get_error(c->ssl, ret);
	char detail[128];

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return B_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return B_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return B_EOF;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (saved == 0)
			return B_EOF;
		snprintf(c->err, sizeof(c->err), "%s: %s", what,
		    strerror(saved));
		return B_ERR;
	default:
		bench_ssl_error(detail, sizeof(detail));
		snprintf(c->err, sizeof(c->err), "%s: %s", what, detail);
		return B_ERR;
	}
}

enum bres
bconn_establish(struct bconn *c)
{
	if (c->established)
		return B_DONE;
	if (c->connecting) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
			soerr = errno;
		if (soerr != 0) {
			snprintf(c->err, sizeof(c->err), "connect: %s",
			    strerror(soerr));
			return B_ERR;
		}
		if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) < 0) {
			if (errno == ENOTCONN)
				return B_WANT_WRITE;
			snprintf(c->err, sizeof(c->err), "connect: %s",
			    strerror(errno));
			return B_ERR;
		}
		c->connecting = false;
	}
	if (c->ssl != NULL) {
		clear_errors();
		errno = 0;
		int r = SSL_do_handshake(c->ssl);
		if (r != 1)
			return ssl_result(c, r, "TLS handshake");
	}
	c->established = true;
	return B_DONE;
}

/* A plain recv's outcome; false when it was interrupted (try again). */
static bool
recv_result(struct bconn *c, ssize_t n, size_t *got, enum bres *out)
{
	if (n > 0) {
		*got = (size_t)n;
		*out = B_DONE;
	} else if (n == 0) {
		*out = B_EOF;
	} else if (errno == EINTR) {
		return false;
	} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
		*out = B_WANT_READ;
	} else {
		snprintf(c->err, sizeof(c->err), "read: %s", strerror(errno));
		*out = B_ERR;
	}
	return true;
}

enum bres
bconn_read(struct bconn *c, void *buf, size_t len, size_t *got)
{
	*got = 0;
	if (c->ssl != NULL) {
		clear_errors();
		errno = 0;
		int r = SSL_read_ex(c->ssl, buf, len, got) == 1 ? 1 : 0;
		return r == 1 ? B_DONE : ssl_result(c, r, "TLS read");
	}
	for (;;) {
		ssize_t n = recv(c->fd, buf, len, 0);
		enum bres r;

		if (recv_result(c, n, got, &r))
			return r;
	}
}

int
bconn_enable_rx_stamps(struct bconn *c)
{
	int on = 1;

	if (c->ssl != NULL) {
		snprintf(c->err, sizeof(c->err), "receive stamps: plain only");
		return -1;
	}
	if (setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &on,
	    sizeof(on)) < 0) {
		snprintf(c->err, sizeof(c->err), "SO_TIMESTAMPNS: %s",
		    strerror(errno));
		return -1;
	}
	return 0;
}

enum bres
bconn_read_stamped(struct bconn *c, void *buf, size_t len, size_t *got,
    uint64_t *rx_realtime_ns)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct timespec))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };

	*got = 0;
	*rx_realtime_ns = 0;
	if (c->ssl != NULL)
		return bconn_read(c, buf, len, got);
	for (;;) {
		ssize_t n = recvmsg(c->fd, &msg, 0);
		enum bres r;

		if (n > 0) {
			struct cmsghdr *cm;

			for (cm = CMSG_FIRSTHDR(&msg); cm != NULL;
			    cm = CMSG_NXTHDR(&msg, cm)) {
				struct timespec ts;

				if (cm->cmsg_level != SOL_SOCKET ||
				    cm->cmsg_type != SCM_TIMESTAMPNS)
					continue;
				memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
				*rx_realtime_ns = (uint64_t)ts.tv_sec *
				    1000000000u + (uint64_t)ts.tv_nsec;
			}
		}
		if (recv_result(c, n, got, &r))
			return r;
	}
}

enum bres
bconn_write(struct bconn *c, const void *buf, size_t len, size_t *put)
{
	*put = 0;
	if (c->ssl != NULL) {
		clear_errors();
		errno = 0;
		int r = SSL_write_ex(c->ssl, buf, len, put) == 1 ? 1 : 0;
		return r == 1 ? B_DONE : ssl_result(c, r, "TLS write");
	}
	for (;;) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0) {
			*put = (size_t)n;
			return B_DONE;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return B_WANT_WRITE;
		snprintf(c->err, sizeof(c->err), "write: %s", strerror(errno));
		return B_ERR;
	}
}

bool
bconn_pending(const struct bconn *c)
{
	return c->ssl != NULL && SSL_has_pending(c->ssl) == 1;
}

void
bconn_notify_close(struct bconn *c)
{
	if (c->ssl == NULL || !c->established)
		return;
	ERR_clear_error();
	/* 0 means "sent, the peer's has not come": all we want. */
	if (SSL_shutdown(c->ssl) < 0)
		ERR_clear_error();
}

void
bconn_set_priority(struct bconn *c, int pri)
{
	bool active = ev_is_active(&c->io);

	if (active)
		ev_io_stop(c->loop, &c->io);
	ev_set_priority(&c->io, pri);
	if (active)
		ev_io_start(c->loop, &c->io);
}

void
bconn_want(struct bconn *c, int events)
{
	if (c->fd < 0 || events == c->armed)
		return;
	ev_io_stop(c->loop, &c->io);
	if (events != 0) {
		ev_io_set(&c->io, c->fd, events);
		ev_io_start(c->loop, &c->io);
	}
	c->armed = events;
}

void
bconn_want_res(struct bconn *c, enum bres r)
{
	bconn_want(c, r == B_WANT_WRITE ? EV_WRITE : EV_READ);
}

void
bconn_close(struct bconn *c)
{
	if (c->fd < 0)
		return;
	ev_io_stop(c->loop, &c->io);
	c->armed = 0;
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->fd);
	c->fd = -1;
	c->established = false;
	c->connecting = false;
}
