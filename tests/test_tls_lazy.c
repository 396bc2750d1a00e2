/*
 * A TLS server stream makes its SSL object when the client's first byte
 * arrives, not when the connection is accepted: a client that stays
 * silent (a port scan, a slowloris client) costs the stream alone, not
 * OpenSSL's handshake state (73 KB a client here when the SSL object was
 * made at accept and its handshake started).  Counted with glibc's own
 * accounting in this process; under AddressSanitizer, whose allocator
 * glibc does not see, the bound is not checked.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

#define SILENT 64

static void
on_handshake(struct stream *s, void *arg)
{
	(void)s;
	*(bool *)arg = true;
}

static void
on_close(struct stream *s, enum stream_close_reason why, void *arg)
{
	(void)s;
	(void)why;
	(void)arg;
}

static bool
all_freed(void *arg)
{
	return ((struct tloop *)arg)->sl.live == 0;
}

Test(tls_lazy, silent_clients_hold_no_tls_state, .timeout = 60)
{
	struct tloop t;
	struct tls_ctx *ctx = test_server_ctx(TLS_VERIFY_NONE);
	int cfd[SILENT], port, lfd;
	bool done[SILENT] = { false };
	size_t before, after;

	tloop_init(&t);
	lfd = listen_loopback(false, &port);
	cr_assert_geq(lfd, 0);
	before = mallinfo2().uordblks;
	for (int i = 0; i < SILENT; i++) {
		cfd[i] = connect_loopback(false, port);
		cr_assert_geq(cfd[i], 0);
		int sfd = accept_timeout(lfd, 5);
		cr_assert_geq(sfd, 0);
		struct stream *s = stream_new(&t.sl, sfd, NULL);
		cr_assert_not_null(s);
		cr_assert_eq(tls_stream_accept(s, ctx), 0);
		cr_assert(tls_stream_is_tls(s));
		/* The handshake is under way: it waits for the client. */
		stream_set_callbacks(s, on_close, &done[i]);
		stream_wait_for_handshake(s, on_handshake);
	}
	tloop_run_for(&t, 0.2);
	after = mallinfo2().uordblks;
	for (int i = 0; i < SILENT; i++)
		cr_assert(!done[i], "a silent client completed a handshake");
#ifndef __SANITIZE_ADDRESS__
	size_t per = after > before ? (after - before) / SILENT : 0;
	cr_assert_lt(per, 4096, "a silent TLS client holds %zu bytes", per);
#else
	(void)before;
	(void)after;
#endif
	for (int i = 0; i < SILENT; i++)
		close(cfd[i]);
	/* Their EOF ends each handshake: every stream is freed. */
	cr_assert(tloop_run_pred(&t, all_freed, &t, 20),
	    "%zu streams still live", t.sl.live);
	close(lfd);
	tloop_destroy(&t);
	tls_ctx_unref(ctx);
}
