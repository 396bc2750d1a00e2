/* tls_tickets: see tls_tickets.h. */
#define _GNU_SOURCE
#include "tls_tickets.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#define GENS 4			/* ring of generations */
#define STALE_CLAIM 5		/* seconds: a writer that died mid-copy */

struct ticket_key {
	unsigned char name[16];
	unsigned char hmac[32];
	unsigned char aes[32];
};

struct ticket_gen {
	int64_t created;		/* CLOCK_REALTIME seconds */
	uint32_t n;
	struct ticket_key k[TLS_TICKETS_MAX];
};

/* In the shared mapping. */
struct tickets_shm {
	uint64_t head;			/* the published generation */
	uint64_t claim;			/* head + 1 while a writer fills it */
	int64_t claimed_at;
	struct ticket_gen gen[GENS];
};

struct tls_tickets {
	struct tickets_shm *shm;
	double rotate;			/* generated keys; 0 = never */
	char *path;			/* NULL: generated */
	unsigned refs;			/* tls_tickets_ref'd, in this process */
};

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

static const struct ticket_gen *
current(const struct tls_tickets *t)
{
	uint64_t h = __atomic_load_n(&t->shm->head, __ATOMIC_ACQUIRE);

	return &t->shm->gen[h % GENS];
}

/* Publishes g as the next generation; false if another writer holds it. */
static bool
publish(struct tls_tickets *t, const struct ticket_gen *g)
{
	struct tickets_shm *s = t->shm;
	uint64_t h = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
	uint64_t expect = h;

	if (!__atomic_compare_exchange_n(&s->claim, &expect, h + 1, false,
	    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		int64_t at = __atomic_load_n(&s->claimed_at, __ATOMIC_ACQUIRE);
		/* Claimed, not published, for long: its writer died. */
		if (expect != h + 1 || now_s() - at < STALE_CLAIM ||
		    !__atomic_compare_exchange_n(&s->claimed_at, &at, now_s(),
		    false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return false;
	}
	__atomic_store_n(&s->claimed_at, now_s(), __ATOMIC_RELEASE);
	memcpy(&s->gen[(h + 1) % GENS], g, sizeof(*g));
	__atomic_store_n(&s->head, h + 1, __ATOMIC_RELEASE);
	return true;
}

static int
random_key(struct ticket_key *k)
{
	return RAND_bytes((unsigned char *)k, sizeof(*k)) == 1 ? 0 : -1;
}

/* A new random key first, then the newest of the current ones. */
static void
rotate(struct tls_tickets *t, const struct ticket_gen *cur)
{
	struct ticket_gen g;

	memset(&g, 0, sizeof(g));
	if (random_key(&g.k[0]) < 0)
		return;		/* no randomness: keep sealing with the old */
	g.n = 1;
	for (uint32_t i = 0; i < cur->n && g.n < TLS_TICKETS_KEEP; i++)
		g.k[g.n++] = cur->k[i];
	g.created = now_s();
	publish(t, &g);
	OPENSSL_cleanse(&g, sizeof(g));
}

/* The keys of a file: a whole number of 80-byte keys, 1 to MAX. */
static int
read_file(const char *path, struct ticket_gen *g, char *err, size_t errlen)
{
	unsigned char buf[TLS_TICKETS_MAX * TLS_TICKETS_KEYLEN + 1];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "ticket keys %s: %s", path,
		    strerror(errno));
		return -1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	if (ferror(f)) {
		snprintf(err, errlen, "ticket keys %s: %s", path,
		    strerror(errno));
		fclose(f);
		return -1;
	}
	fclose(f);
	if (n == 0 || n % TLS_TICKETS_KEYLEN != 0 || n > TLS_TICKETS_MAX *
	    TLS_TICKETS_KEYLEN) {
		snprintf(err, errlen, "ticket keys %s: %zu bytes; expected 1 "
		    "to %d keys of %d bytes (openssl rand 80 > FILE)", path,
		    n, TLS_TICKETS_MAX, TLS_TICKETS_KEYLEN);
		OPENSSL_cleanse(buf, sizeof(buf));
		return -1;
	}
	memset(g, 0, sizeof(*g));
	g->n = (uint32_t)(n / TLS_TICKETS_KEYLEN);
	for (uint32_t i = 0; i < g->n; i++) {
		const unsigned char *p = buf + i * TLS_TICKETS_KEYLEN;
		memcpy(g->k[i].name, p, 16);
		memcpy(g->k[i].hmac, p + 16, 32);
		memcpy(g->k[i].aes, p + 48, 32);
	}
	g->created = now_s();
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

static bool
same_keys(const struct ticket_gen *a, const struct ticket_gen *b)
{
	return a->n == b->n && CRYPTO_memcmp(a->k, b->k, a->n *
	    sizeof(a->k[0])) == 0;
}

struct tls_tickets *
tls_tickets_new(const char *file, double rotate_s, char *err, size_t errlen)
{
	struct tls_tickets *t = calloc(1, sizeof(*t));
	struct ticket_gen g;
	void *m;

	if (t == NULL || (file != NULL && (t->path = strdup(file)) == NULL)) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->rotate = rotate_s;
	t->refs = 1;
	if (file != NULL) {
		if (read_file(file, &g, err, errlen) < 0)
			goto fail;
	} else {
		memset(&g, 0, sizeof(g));
		if (random_key(&g.k[0]) < 0) {
			snprintf(err, errlen, "ticket keys: no randomness");
			goto fail;
		}
		g.n = 1;
		g.created = now_s();
	}
	/* Shared with the workers forked later, and their restarts. */
	m = mmap(NULL, sizeof(struct tickets_shm), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		snprintf(err, errlen, "ticket keys: mmap: %s",
		    strerror(errno));
		goto fail;
	}
	t->shm = m;
	memcpy(&t->shm->gen[0], &g, sizeof(g));
	OPENSSL_cleanse(&g, sizeof(g));
	return t;
fail:
	OPENSSL_cleanse(&g, sizeof(g));
	free(t->path);
	free(t);
	return NULL;
}

int
tls_tickets_reload(struct tls_tickets *t, char *err, size_t errlen)
{
	struct ticket_gen g;
	int rc = 0;

	if (t->path == NULL)
		return 0;
	if (read_file(t->path, &g, err, errlen) < 0)
		return -1;
	if (!same_keys(&g, current(t)) && !publish(t, &g)) {
		snprintf(err, errlen, "ticket keys %s: another process is "
		    "publishing keys; try again", t->path);
		rc = -1;
	}
	OPENSSL_cleanse(&g, sizeof(g));
	return rc;
}

struct tls_tickets *
tls_tickets_ref(struct tls_tickets *t)
{
	t->refs++;
	return t;
}

void
tls_tickets_free(struct tls_tickets *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	if (t->shm != NULL)
		munmap(t->shm, sizeof(*t->shm));
	free(t->path);
	free(t);
}

size_t
tls_tickets_count(const struct tls_tickets *t)
{
	return current(t)->n;
}

void
tls_tickets_current_name(const struct tls_tickets *t, unsigned char name[16])
{
	memcpy(name, current(t)->k[0].name, 16);
}

/* ---- OpenSSL's callback ---- */

static int
set_hmac(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/*
 * Seal (enc = 1): the current generation's first key, rotating first if
 * its time is up.  Open: any key of the current generation.  Answering 2
 * makes OpenSSL send the client a fresh ticket: with TLS 1.2 when the key
 * is not the sealing one any more (as nginx does); with TLS 1.3 always,
 * since OpenSSL sends none after a resumption otherwise, and a TLS 1.3
 * client should use a ticket once (RFC 8446, C.4): one that does would
 * get a full handshake every second connection.
 */
static int
ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_tickets *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const struct ticket_gen *g;

	if (t == NULL)
		return -1;
	g = current(t);
	if (enc) {
		if (t->path == NULL && t->rotate > 0 &&
		    (double)(now_s() - g->created) >= t->rotate) {
			rotate(t, g);
			g = current(t);
		}
		const struct ticket_key *k = &g->k[0];
		memcpy(name, k->name, 16);
		if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1 ||
		    EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes,
		    iv) != 1 || set_hmac(hctx, k) < 0)
			return -1;
		return 1;
	}
	for (uint32_t i = 0; i < g->n; i++) {
		const struct ticket_key *k = &g->k[i];
		if (CRYPTO_memcmp(name, k->name, 16) != 0)
			continue;
		if (set_hmac(hctx, k) < 0 || EVP_DecryptInit_ex(ectx,
		    EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			return -1;
		return i == 0 && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
	}
	return 0;	/* unknown key: a full handshake */
}

int
tls_tickets_install(struct tls_tickets *t, struct ssl_ctx_st *ctx)
{
	if (SSL_CTX_set_app_data(ctx, t) != 1 ||
	    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1)
		return -1;
	return 0;
}
