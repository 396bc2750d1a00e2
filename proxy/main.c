/*
 * ferry: entry point.  Until the program issue lands this runs an echo
 * server on the core layers: plain TCP on :8888 and TLS on :8443 with the
 * development certificate.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "stream.h"
#include "tcpserver.h"
#include "tls.h"

static void
echo_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	(void)arg;
	LOGI("connection %s closed: %s%s%s (%llu bytes in, %llu out)",
	    stream_peer(s), stream_close_reason_str(why),
	    stream_error(s)[0] ? ": " : "", stream_error(s),
	    (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out);
}

static void
echo_read(struct stream *s, const char *data, size_t len, void *arg)
{
	(void)arg;
	if (stream_write(s, data, len, NULL) < 0)
		return;
	stream_read_bytes(s, 65536, true, echo_read);
}

static void
echo_handle(struct stream *s, const struct sockaddr *sa, socklen_t salen,
    void *arg)
{
	(void)sa;
	(void)salen;
	(void)arg;
	LOGI("connection from %s", stream_peer(s));
	stream_set_callbacks(s, echo_closed, NULL);
	stream_read_bytes(s, 65536, true, echo_read);
}

int
main(void)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct stream_loop sl;
	struct tcpserver plain, secure;
	struct tls_cert_pair pair = { "certs/server.pem", "certs/server.key" };
	struct tls_server_opts to = { .certs = &pair, .ncerts = 1 };
	struct tls_ctx *tls;
	char err[256];

	signal(SIGPIPE, SIG_IGN);
	stream_loop_init(&sl, loop);
	tls = tls_ctx_new_server(&to, err, sizeof(err));
	if (tls == NULL) {
		LOGE("TLS: %s", err);
		return 1;
	}
	tcpserver_init(&plain, &sl, "echo", NULL, NULL, echo_handle, NULL);
	tcpserver_init(&secure, &sl, "echo-tls", NULL, tls, echo_handle, NULL);
	tls_ctx_unref(tls);
	if (tcpserver_listen(&plain, NULL, 8888, err, sizeof(err)) < 0 ||
	    tcpserver_listen(&secure, NULL, 8443, err, sizeof(err)) < 0) {
		LOGE("listen: %s", err);
		return 1;
	}
	LOGI("echo server on :8888 (tcp) and :8443 (tls)");
	ev_run(loop, 0);
	return 0;
}
