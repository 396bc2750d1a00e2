/*
 * sink: a plaintext backend that reads and discards.  The same sink stands
 * behind every server measured, so the backend costs them all the same.
 *
 * It binds HOST:PORT (port 0: the kernel picks), prints "LISTEN port=N" on
 * stdout once it accepts, and runs until SIGTERM/SIGINT (or --duration),
 * then prints the bytes and connections it saw.  SIGUSR1 prints them at
 * once ("STATS bytes=N connections=N"): a measurement brackets a window
 * with two of them.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netutil.h"

#define SINK_BUF	(256 * 1024)
#define SINK_READS	8		/* reads per readiness event */

struct sink;

struct sink_conn {
	ev_io io;			/* first: the watcher is the connection */
	struct sink *sk;
	struct sink_conn *prev, *next;
};

struct sink {
	struct ev_loop *loop;
	struct accept_handler ah[NETUTIL_MAX_SOCKETS];
	int fds[NETUTIL_MAX_SOCKETS];
	int nfds;
	struct sink_conn *conns;
	char *buf;
	uint64_t bytes, accepted, open;
	uint64_t sec_bytes;		/* progress */
	ev_signal sigterm, sigint, sigusr1;
	ev_timer stop, progress;
};

static void
sink_conn_close(struct sink_conn *sc)
{
	struct sink *sk = sc->sk;

	ev_io_stop(sk->loop, &sc->io);
	close(sc->io.fd);
	if (sc->prev != NULL)
		sc->prev->next = sc->next;
	else
		sk->conns = sc->next;
	if (sc->next != NULL)
		sc->next->prev = sc->prev;
	sk->open--;
	free(sc);
}

static void
sink_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sink_conn *sc = (struct sink_conn *)w;
	struct sink *sk = sc->sk;

	(void)loop;
	(void)revents;
	for (int i = 0; i < SINK_READS; i++) {
		ssize_t n = recv(w->fd, sk->buf, SINK_BUF, 0);

		if (n > 0) {
			sk->bytes += (uint64_t)n;
			/* Short: the socket is empty; no EAGAIN read. */
			if ((size_t)n < SINK_BUF)
				return;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		/* EOF or a reset: the client is gone. */
		sink_conn_close(sc);
		return;
	}
}

static void
sink_accept(int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct sink *sk = arg;
	struct sink_conn *sc = calloc(1, sizeof(*sc));

	(void)sa;
	(void)salen;
	if (sc == NULL) {
		close(fd);
		return;
	}
	sc->sk = sk;
	sc->next = sk->conns;
	if (sk->conns != NULL)
		sk->conns->prev = sc;
	sk->conns = sc;
	sk->accepted++;
	sk->open++;
	ev_io_init(&sc->io, sink_read_cb, fd, EV_READ);
	ev_io_start(sk->loop, &sc->io);
}

static void
sink_progress_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sink *sk = w->data;

	(void)loop;
	(void)revents;
	printf("sink: %9.1f MB/s  %" PRIu64 " connections open\n",
	    (double)(sk->bytes - sk->sec_bytes) / 1e6, sk->open);
	fflush(stdout);
	sk->sec_bytes = sk->bytes;
}

static void
sink_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void
sink_stats_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct sink *sk = w->data;

	(void)loop;
	(void)revents;
	printf("STATS bytes=%" PRIu64 " connections=%" PRIu64 "\n", sk->bytes,
	    sk->accepted);
	fflush(stdout);
}

static void
sink_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

int
bench_sink(const struct bench_opts *o)
{
	struct sink sk;
	char err[256];

	memset(&sk, 0, sizeof(sk));
	sk.loop = ev_default_loop(0);
	sk.buf = malloc(SINK_BUF);
	if (sk.loop == NULL || sk.buf == NULL) {
		free(sk.buf);
		return 1;
	}
	sk.nfds = netutil_bind_sockets(o->host, o->port, AF_UNSPEC, 1024,
	    false, sk.fds, NETUTIL_MAX_SOCKETS, err, sizeof(err));
	if (sk.nfds < 0) {
		fprintf(stderr, "ferry-bench: sink: %s\n", err);
		free(sk.buf);
		return 1;
	}
	for (int i = 0; i < sk.nfds; i++) {
		netutil_accept_init(&sk.ah[i], sk.loop, sk.fds[i], 1024,
		    sink_accept, &sk);
		netutil_accept_start(&sk.ah[i]);
	}
	ev_signal_init(&sk.sigterm, sink_stop_cb, SIGTERM);
	ev_signal_start(sk.loop, &sk.sigterm);
	ev_signal_init(&sk.sigint, sink_stop_cb, SIGINT);
	ev_signal_start(sk.loop, &sk.sigint);
	ev_signal_init(&sk.sigusr1, sink_stats_cb, SIGUSR1);
	sk.sigusr1.data = &sk;
	ev_signal_start(sk.loop, &sk.sigusr1);
	if (o->duration > 0) {
		ev_timer_init(&sk.stop, sink_timer_cb, o->duration, 0.);
		ev_timer_start(sk.loop, &sk.stop);
	}
	printf("LISTEN port=%d\n", netutil_local_port(sk.fds[0]));
	fflush(stdout);
	if (o->progress) {
		ev_timer_init(&sk.progress, sink_progress_cb, 1., 1.);
		sk.progress.data = &sk;
		ev_timer_start(sk.loop, &sk.progress);
	}
	ev_run(sk.loop, 0);

	printf("RESULT mode=sink bytes=%" PRIu64 " connections=%" PRIu64
	    "\n", sk.bytes, sk.accepted);
	fflush(stdout);
	while (sk.conns != NULL)
		sink_conn_close(sk.conns);
	for (int i = 0; i < sk.nfds; i++) {
		netutil_accept_stop(&sk.ah[i]);
		close(sk.fds[i]);
	}
	ev_signal_stop(sk.loop, &sk.sigterm);
	ev_signal_stop(sk.loop, &sk.sigint);
	ev_signal_stop(sk.loop, &sk.sigusr1);
	ev_timer_stop(sk.loop, &sk.stop);
	ev_timer_stop(sk.loop, &sk.progress);
	free(sk.buf);
	return 0;
}
