/*
 * libFuzzer target: the PROXY protocol parser (proxy_in.h), linked with
 * proxy_in.o alone (libc only).
 *
 * The input is the connection's first bytes.  Every prefix of it is
 * parsed (each copied into a buffer of its own size, so ASan sees any
 * read past it), and the answers must tell one story, the one a reader
 * that peeks and consumes relies on:
 *   - MORE for every prefix up to some length, then either ERROR for
 *     every longer prefix, or DONE with one header length L (the same for
 *     every prefix of L bytes or more, and L is that first prefix);
 *   - DONE: L within the limits of its version, addresses of the family
 *     they claim (IPv4 or IPv6) with the length of that family;
 *   - ERROR: a reason is given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_in.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, \
	"check failed: %s (line %d)\n", #cond, __LINE__); abort(); } } while (0)

static void
check_done(const struct proxy_in *p)
{
	CHECK(p->version == 1 || p->version == 2);
	CHECK(p->len > 0 && p->len <= PROXY_IN_MAX);
	if (p->version == 1)
		CHECK(p->len <= PROXY_IN_V1_MAX);
	if (p->kind == PROXY_IN_ADDR) {
		int af = p->src.sa.sa_family;
		CHECK(af == AF_INET || af == AF_INET6);
		CHECK(p->dst.sa.sa_family == af);
		CHECK(p->addrlen == (af == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)));
	} else {
		CHECK(p->kind == PROXY_IN_LOCAL);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum proxy_in_result last = PROXY_IN_MORE;
	size_t done_len = 0;

	if (size > PROXY_IN_MAX + 64)
		size = PROXY_IN_MAX + 64;
	for (size_t k = 0; k <= size; k++) {
		unsigned char *copy = malloc(k ? k : 1);
		struct proxy_in p;
		enum proxy_in_result r;

		CHECK(copy != NULL);
		memcpy(copy, data, k);
		r = proxy_in_parse(copy, k, &p);
		free(copy);
		switch (last) {
		case PROXY_IN_MORE:
			if (r == PROXY_IN_DONE) {
				check_done(&p);
				CHECK(p.len == k);
				done_len = p.len;
			} else if (r == PROXY_IN_ERROR) {
				CHECK(p.error != NULL && p.error[0] != '\0');
			}
			break;
		case PROXY_IN_DONE:
			CHECK(r == PROXY_IN_DONE);
			check_done(&p);
			CHECK(p.len == done_len);
			break;
		case PROXY_IN_ERROR:
			CHECK(r == PROXY_IN_ERROR);
			break;
		}
		last = r;
	}
	return 0;
}
