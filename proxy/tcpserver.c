/* tcpserver: see tcpserver.h. */
#define _GNU_SOURCE
#include "tcpserver.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "process.h"

void
tcpserver_init(struct tcpserver *srv, struct stream_loop *sl,
    const char *name, const struct stream_opts *opts, struct tls_ctx *tls,
    tcpserver_handler handle_stream, void *arg)
{
	memset(srv, 0, sizeof(*srv));
	srv->sl = sl;
	snprintf(srv->name, sizeof(srv->name), "%s", name ? name : "server");
	if (opts != NULL)
		srv->opts = *opts;
	else
		stream_opts_default(&srv->opts);
	srv->tls = tls ? tls_ctx_ref(tls) : NULL;
	srv->handle_stream = handle_stream;
	srv->arg = arg;
}

static void
on_accept(int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct tcpserver *srv = arg;
	struct stream *s;
	char peer[64];

	/* Frames are small and latency matters more than packet count. */
	(void)netutil_set_nodelay(fd);
	s = stream_new(srv->sl, fd, NULL, &srv->opts);
	if (s == NULL)
		goto fail;
	stream_set_peer(s, sa);
	if (srv->tls != NULL && tls_stream_accept(s, srv->tls) < 0) {
		stream_close(s, STREAM_CLOSE_NOMEM);
		srv->failed++;
		LOGW("%s: cannot set up TLS for %s", srv->name,
		    stream_peer(s));
		return;
	}
	srv->accepted++;
	s->stats = srv->stats;
	if (srv->stats != NULL)
		srv->stats->accepted++;
	srv->handle_stream(s, sa, salen, srv->arg);
	return;
fail:
	netutil_format_addr(sa, peer, sizeof(peer));
	LOGW("%s: no memory for a connection from %s", srv->name, peer);
	srv->failed++;
	close(fd);
}

int
tcpserver_add_sockets(struct tcpserver *srv, const int *fds, size_t n)
{
	if (srv->nacc + n > TCPSERVER_MAX_SOCKETS)
		return -1;
	for (size_t i = 0; i < n; i++) {
		struct accept_handler *ah = &srv->acc[srv->nacc++];
		netutil_accept_init(ah, srv->sl->loop, fds[i],
		    NETUTIL_DEFAULT_BACKLOG, on_accept, srv);
		netutil_accept_start(ah);
	}
	return 0;
}

int
tcpserver_bind(struct tcpserver *srv, const char *address, int port,
    int family, int backlog, bool reuse_port, char *err, size_t errlen)
{
	size_t room = TCPSERVER_MAX_SOCKETS - srv->npending - srv->nacc;
	int n = netutil_bind_sockets(address, port, family, backlog,
	    reuse_port, srv->pending + srv->npending, room, err, errlen);

	if (n < 0)
		return -1;
	srv->npending += (size_t)n;
	return 0;
}

int
tcpserver_listen(struct tcpserver *srv, const char *address, int port,
    char *err, size_t errlen)
{
	if (tcpserver_bind(srv, address, port, AF_UNSPEC,
	    NETUTIL_DEFAULT_BACKLOG, false, err, errlen) < 0)
		return -1;
	tcpserver_add_sockets(srv, srv->pending, srv->npending);
	srv->npending = 0;
	return 0;
}

int
tcpserver_start(struct tcpserver *srv, int num_processes, int max_restarts)
{
	int id = 0;

	if (num_processes != 1) {
		id = process_fork(num_processes, max_restarts);
		/* libev's kernel state (epoll) must not be shared. */
		ev_loop_fork(srv->sl->loop);
	}
	tcpserver_add_sockets(srv, srv->pending, srv->npending);
	srv->npending = 0;
	return id;
}

int
tcpserver_port(const struct tcpserver *srv)
{
	if (srv->nacc > 0)
		return netutil_local_port(srv->acc[0].fd);
	if (srv->npending > 0)
		return netutil_local_port(srv->pending[0]);
	return -1;
}

void
tcpserver_set_tls(struct tcpserver *srv, struct tls_ctx *tls)
{
	struct tls_ctx *old = srv->tls;

	srv->tls = tls ? tls_ctx_ref(tls) : NULL;
	tls_ctx_unref(old);
}

void
tcpserver_set_stats(struct tcpserver *srv, struct metrics_conn *stats)
{
	srv->stats = stats;
}

void
tcpserver_stop(struct tcpserver *srv)
{
	for (size_t i = 0; i < srv->nacc; i++) {
		netutil_accept_stop(&srv->acc[i]);
		close(srv->acc[i].fd);
	}
	srv->nacc = 0;
	for (size_t i = 0; i < srv->npending; i++)
		close(srv->pending[i]);
	srv->npending = 0;
}

void
tcpserver_destroy(struct tcpserver *srv)
{
	tcpserver_stop(srv);
	tls_ctx_unref(srv->tls);
	srv->tls = NULL;
}
