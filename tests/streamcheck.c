/* streamcheck: see streamcheck.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "helpers.h"
#include "streamcheck.h"

static void *
peer_main(void *arg)
{
	struct pair *pr = arg;

	if (pr->transport == T_TLS && !peer_tls_handshake(&pr->peer)) {
		pr->peer_ok = false;
		pr->peer_done = true;
		return NULL;
	}
	pr->fn(pr);
	pr->peer_done = true;
	return NULL;
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct pair *pr = arg;

	pr->closed = true;
	pr->why = why;
	snprintf(pr->error, sizeof(pr->error), "%s", stream_error(s));
	pr->s = NULL;
}

/* A connected pair: pr->s on the loop, the peer running fn in a thread. */
void
pair_open(struct pair *pr, int transport, const struct stream_opts *opts,
    peer_fn fn)
{
	memset(pr, 0, sizeof(*pr));
	pr->transport = transport;
	pr->peer_ok = true;
	tloop_init(&pr->t);
	pr->lfd = listen_loopback(false, &pr->port);
	int cfd = connect_loopback(false, pr->port);
	cr_assert_geq(cfd, 0);
	int sfd = accept_timeout(pr->lfd, 5);
	cr_assert_geq(sfd, 0);
	pr->s = stream_new(&pr->t.sl, sfd, opts);
	cr_assert_not_null(pr->s);
	stream_set_callbacks(pr->s, on_close, pr);
	if (transport == T_TLS) {
		pr->tls = test_server_ctx(TLS_VERIFY_NONE);
		cr_assert_eq(tls_stream_accept(pr->s, pr->tls), 0);
		peer_tls(&pr->peer, cfd, "localhost", NULL, NULL);
	} else {
		peer_plain(&pr->peer, cfd);
	}
	pr->fn = fn;
	cr_assert_eq(pthread_create(&pr->th, NULL, peer_main, pr), 0);
}

static bool
peer_finished(void *arg)
{
	return ((struct pair *)arg)->peer_done;
}

void
pair_close(struct pair *pr)
{
	/* The peer must end by itself: a hung peer fails the test. */
	cr_assert(tloop_run_pred(&pr->t, peer_finished, pr, 20),
	    "peer thread did not finish");
	pthread_join(pr->th, NULL);
	if (pr->s != NULL)
		stream_close(pr->s, STREAM_CLOSE_LOCAL);
	stream_loop_run_pending(&pr->t.sl);
	cr_assert_eq(pr->t.sl.live, 0, "a stream was not freed");
	peer_close(&pr->peer);
	close(pr->lfd);
	tls_ctx_unref(pr->tls);
	tloop_destroy(&pr->t);
	free(pr->buf);
}

struct stream_opts
opts_default(void)
{
	struct stream_opts o;

	stream_opts_default(&o);
	return o;
}


void
never_called(struct stream *s, const char *d, size_t n, void *arg)
{
	struct pair *pr = arg;

	(void)s;
	(void)d;
	(void)n;
	pr->calls++;
}


void
peer_slow_reader(struct pair *pr)
{
	/* Read nothing until the server has seen its limit, then drain. */
	char buf[65536];

	for (int i = 0; i < 2000 && !pr->flag; i++)
		usleep(10 * 1000);
	while (peer_read(&pr->peer, buf, sizeof(buf)) > 0)
		;
}
