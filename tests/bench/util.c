/* util: clocks, limits, addresses, the client TLS context, the histogram. */
#define _GNU_SOURCE
#include "bench.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/err.h>

#include "netutil.h"

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

long
bench_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? 1L << 30 : (long)rl.rlim_cur;
}

int
bench_resolve(const struct bench_opts *o, struct sockaddr_storage *ss,
    socklen_t *len)
{
	char err[256];

	if (netutil_resolve(o->host, o->port, ss, len, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry-bench: %s\n", err);
		return -1;
	}
	return 0;
}

SSL_CTX *
bench_client_ctx(const struct bench_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char err[256];

	if (ctx == NULL)
		goto fail;
	/*
	 * Every handshake is a full one: nothing is cached or resumed; with
	 * --resume, each client keeps its own session (handshake.c) and
	 * asks for tickets.
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, (o->resume ? 0 : SSL_OP_NO_TICKET) |
	    SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/*
	 * Whole socket reads rather than a header and a body per record: the
	 * generator spends its core on the load, not on syscalls.
	 */
	SSL_CTX_set_read_ahead(ctx, 1);
	if (SSL_CTX_set_min_proto_version(ctx, o->tls_version ?
	    o->tls_version : TLS1_2_VERSION) != 1)
		goto fail;
	if (o->tls_version != 0 &&
	    SSL_CTX_set_max_proto_version(ctx, o->tls_version) != 1)
		goto fail;
	if (o->groups != NULL && SSL_CTX_set1_groups_list(ctx, o->groups) != 1)
		goto fail;
	if (o->ciphersuites != NULL &&
	    SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1)
		goto fail;
	if (o->ciphers != NULL &&
	    SSL_CTX_set_cipher_list(ctx, o->ciphers) != 1)
		goto fail;
	if (o->cafile != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1)
			goto fail;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	bench_ssl_error(err, sizeof(err));
	fprintf(stderr, "ferry-bench: TLS client context: %s\n", err);
	SSL_CTX_free(ctx);
	return NULL;
}

void
hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

static size_t
hist_index(uint64_t v)
{
	if (v < HIST_SUB)
		return (size_t)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS;
	return (size_t)(shift + 1) * HIST_SUB +
	    (size_t)((v >> shift) - HIST_SUB);
}

/* The smallest value and the width of bucket i. */
static void
hist_bucket(size_t i, uint64_t *low, uint64_t *width)
{
	if (i < HIST_SUB) {
		*low = i;
		*width = 1;
		return;
	}
	unsigned shift = (unsigned)(i / HIST_SUB) - 1;
	*low = ((uint64_t)HIST_SUB + i % HIST_SUB) << shift;
	*width = (uint64_t)1 << shift;
}

void
hist_add(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

uint64_t
hist_quantile(const struct hist *h, double q)
{
	uint64_t want, seen = 0, low, width;

	if (h->count == 0)
		return 0;
	want = (uint64_t)(q * (double)h->count + 0.5);
	if (want < 1)
		want = 1;
	if (want > h->count)
		want = h->count;
	for (size_t i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			hist_bucket(i, &low, &width);
			uint64_t mid = low + width / 2;
			return mid > h->max ? h->max : mid;
		}
	}
	return h->max;
}
