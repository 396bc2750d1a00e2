/*
 * TLS records that carry no data: floods of empty records, warning alerts,
 * renegotiation attempts and key updates against the echo server of
 * tlscheck.h, and key updates paced by data, kept (see test_tls.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>

#include "ferryproc.h"
#include "helpers.h"
#include "tlscheck.h"
#include "metrics.h"
#include "netutil.h"
#include "peer_id.h"
#include "tcpserver.h"

/* ---- records that carry no data ---- */

/*
 * TLS 1.2 records of any type, written under a client's feet with its own
 * keys (AES-128-GCM, RFC 5288): OpenSSL's client has no way to send a
 * second renegotiation attempt, a warning alert or an empty record.  The
 * keys come from the session's master secret (RFC 5246, 6.3).
 */
struct tls12_writer {
	uint8_t key[16];
	uint8_t salt[4];
	uint64_t seq;
};

static bool
tls12_writer_init(struct tls12_writer *w, SSL *ssl)
{
	uint8_t master[48], seed[13 + 2 * SSL3_RANDOM_SIZE], block[40];
	size_t mlen = SSL_SESSION_get_master_key(SSL_get_session(ssl), master,
	    sizeof(master));
	char digest[] = "SHA256";
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
	EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest,
		    0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, master,
		    mlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed,
		    sizeof(seed)),
		OSSL_PARAM_construct_end(),
	};
	bool ok;

	memcpy(seed, "key expansion", 13);
	SSL_get_server_random(ssl, seed + 13, SSL3_RANDOM_SIZE);
	SSL_get_client_random(ssl, seed + 13 + SSL3_RANDOM_SIZE,
	    SSL3_RANDOM_SIZE);
	ok = kctx != NULL && mlen == sizeof(master) &&
	    EVP_KDF_derive(kctx, block, sizeof(block), params) == 1;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	/* No MAC keys with an AEAD: client key, server key, client IV. */
	memcpy(w->key, block, 16);
	memcpy(w->salt, block + 32, 4);
	w->seq = 1;			/* the client's Finished was 0 */
	return ok;
}

/* One record of `type` holding pt[0..len) into out; returns its size. */
static size_t
tls12_record(struct tls12_writer *w, uint8_t type, const void *pt,
    size_t len, uint8_t *out)
{
	uint8_t nonce[12], aad[13];
	size_t clen = 8 + len + 16;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n;

	memcpy(nonce, w->salt, 4);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(w->seq >> (56 - 8 * i));
	memcpy(aad, nonce + 4, 8);
	aad[8] = type;
	aad[9] = 3;
	aad[10] = 3;
	aad[11] = (uint8_t)(len >> 8);
	aad[12] = (uint8_t)len;
	out[0] = type;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(clen >> 8);
	out[4] = (uint8_t)clen;
	memcpy(out + 5, nonce + 4, 8);	/* the explicit nonce: seq */
	if (c == NULL ||
	    EVP_EncryptInit_ex(c, EVP_aes_128_gcm(), NULL, w->key, nonce) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &n, aad, sizeof(aad)) != 1 ||
	    (len > 0 && EVP_EncryptUpdate(c, out + 13, &n, pt, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(c, out + 13 + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + 13 + len) !=
	    1)
		clen = 0;	/* a record the server will refuse */
	EVP_CIPHER_CTX_free(c);
	w->seq++;
	return 5 + clen;
}

enum flood_kind {
	FLOOD_KEY_UPDATES,		/* TLS 1.3 KeyUpdate(update_requested) */
	FLOOD_HELLOS,			/* TLS 1.2 renegotiation attempts */
	FLOOD_ALERTS,			/* TLS 1.2 warning alerts */
	FLOOD_EMPTY,			/* TLS 1.2 empty application data */
	PACED_KEY_UPDATES,		/* a key update per 64 KiB echoed */
};

/* A client in a thread that sends `n` records of a kind, or echoes n bytes. */
struct flood_client {
	pthread_t th;
	int port;
	enum flood_kind kind;
	size_t n;
	volatile bool done;
	bool handshake_ok;
	bool ping_ok;			/* TLS 1.2: a crafted record echoed */
	bool echo_ok;			/* PACED: every byte came back */
	bool closed;			/* the server closed the connection */
	int key_updates_back;		/* KeyUpdates the server sent */
};

static void
count_key_updates(int write_p, int version, int content_type,
    const void *buf, size_t len, SSL *ssl, void *arg)
{
	(void)version;
	(void)ssl;
	if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
	    *(const uint8_t *)buf == SSL3_MT_KEY_UPDATE)
		(*(int *)arg)++;
}

/* Sends what it can: the server may close before all of it is taken. */
static void
send_until_closed(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, (const char *)buf + done, len - done,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		done += (size_t)n;
	}
}

/* Reads to the end: whether the server closed (not a 10 s timeout). */
static bool
read_to_close(struct peer *p)
{
	char buf[4096];

	if (p->ssl != NULL) {
		size_t got;
		while (SSL_read_ex(p->ssl, buf, sizeof(buf), &got) == 1)
			;
		ERR_clear_error();
	}
	for (;;) {
		ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
		if (n > 0)
			continue;
		return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR);
	}
}

static void
flood_key_updates(struct flood_client *c, struct peer *p)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *data;
	long len;

	if (mem == NULL)
		return;
	SSL_set0_wbio(p->ssl, mem);
	for (size_t i = 0; i < c->n; i++)
		if (SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) != 1 ||
		    SSL_do_handshake(p->ssl) != 1)
			return;
	len = BIO_get_mem_data(mem, &data);
	send_until_closed(p->fd, data, (size_t)len);
	c->closed = read_to_close(p);
}

static void
flood_tls12(struct flood_client *c, struct peer *p)
{
	static const uint8_t hello[4] = { SSL3_MT_CLIENT_HELLO, 0, 0, 0 };
	static const uint8_t alert[2] = { SSL3_AL_WARNING,
	    SSL_AD_USER_CANCELLED };
	struct tls12_writer w;
	uint8_t rec[64], back[4];
	uint8_t *out = malloc(c->n * sizeof(rec));
	size_t len = 0;

	if (out == NULL || !tls12_writer_init(&w, p->ssl))
		goto out;
	/* Our records must pass: one of data first, echoed back. */
	len = tls12_record(&w, SSL3_RT_APPLICATION_DATA, "ping", 4, rec);
	send_until_closed(p->fd, rec, len);
	c->ping_ok = peer_read_exact(p, back, 4) == 4 &&
	    memcmp(back, "ping", 4) == 0;
	len = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (c->kind == FLOOD_HELLOS)
			len += tls12_record(&w, SSL3_RT_HANDSHAKE, hello,
			    sizeof(hello), out + len);
		else if (c->kind == FLOOD_ALERTS)
			len += tls12_record(&w, SSL3_RT_ALERT, alert,
			    sizeof(alert), out + len);
		else
			len += tls12_record(&w, SSL3_RT_APPLICATION_DATA, NULL,
			    0, out + len);
	}
	send_until_closed(p->fd, out, len);
	/* The server's answers (no_renegotiation alerts) are not for
	 * OpenSSL's client, which would take them as fatal: read them raw. */
	SSL_free(p->ssl);
	p->ssl = NULL;
	c->closed = read_to_close(p);
out:
	free(out);
}

static void
paced_key_updates(struct flood_client *c, struct peer *p)
{
	enum { CHUNK = 64 * 1024 };
	uint8_t *out = malloc(CHUNK), *in = malloc(CHUNK);

	c->echo_ok = out != NULL && in != NULL;
	for (size_t off = 0; c->echo_ok && off < c->n; off += CHUNK) {
		fill_pattern(out, CHUNK, off, 5);
		c->echo_ok = SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) ==
		    1 && peer_write(p, out, CHUNK) == CHUNK &&
		    peer_read_exact(p, in, CHUNK) == CHUNK &&
		    check_pattern(in, CHUNK, off, 5);
	}
	free(out);
	free(in);
}

static void *
flood_main(void *arg)
{
	struct flood_client *c = arg;
	struct peer p;
	int fd = connect_loopback(false, c->port);

	if (fd < 0)
		goto out;
	peer_tls(&p, fd, "localhost", NULL, NULL);
	if (c->kind == FLOOD_KEY_UPDATES || c->kind == PACED_KEY_UPDATES) {
		SSL_set_min_proto_version(p.ssl, TLS1_3_VERSION);
		SSL_set_msg_callback(p.ssl, count_key_updates);
		SSL_set_msg_callback_arg(p.ssl, &c->key_updates_back);
	} else {
		SSL_set_max_proto_version(p.ssl, TLS1_2_VERSION);
		SSL_set_cipher_list(p.ssl, "ECDHE-ECDSA-AES128-GCM-SHA256:"
		    "ECDHE-RSA-AES128-GCM-SHA256");
	}
	c->handshake_ok = peer_tls_handshake(&p);
	if (c->handshake_ok) {
		if (c->kind == FLOOD_KEY_UPDATES)
			flood_key_updates(c, &p);
		else if (c->kind == PACED_KEY_UPDATES)
			paced_key_updates(c, &p);
		else
			flood_tls12(c, &p);
	}
	peer_close(&p);
out:
	c->done = true;
	return NULL;
}

static bool
flood_finished(void *arg)
{
	return ((struct flood_client *)arg)->done;
}

static void
flood_run(struct srv *sv, struct flood_client *c)
{
	c->port = sv->port;
	cr_assert_eq(pthread_create(&c->th, NULL, flood_main, c), 0);
	cr_assert(tloop_run_pred(&sv->t, flood_finished, c, 25),
	    "the flooding client did not finish");
	pthread_join(c->th, NULL);
	cr_assert(c->handshake_ok);
}

/*
 * 1,000 KeyUpdate(update_requested) records back to back: the server
 * handles the allowance (32, answering each with its own key update),
 * then closes the connection with a flood error, counted for its
 * listener, and goes on serving others.
 */
Test(tls, key_update_flood_closed_at_allowance, .timeout = 30)
{
	struct srv sv;
	struct flood_client f = { .kind = FLOOD_KEY_UPDATES, .n = 1000 };
	struct client good = { .sni = "localhost", .echo_bytes = 100000 };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	flood_run(&sv, &f);
	cr_assert(f.closed, "the flooder was not closed");
	cr_assert_eq(sv.tls_fails, 1);
	cr_assert(strstr(sv.tls_error, "flood") != NULL, "%s", sv.tls_error);
	cr_assert_eq(sv.stats.tls_floods, 1);
	/*
	 * It handled no more than the allowance (and a refill or two, if a
	 * second passed).  Fewer may arrive: closing on the unread flood
	 * resets the connection, and the kernel drops what it had not sent.
	 */
	cr_assert_leq(f.key_updates_back, 34, "the server answered %d key "
	    "updates", f.key_updates_back);
	client_start(&good, sv.port);
	client_wait(&sv, &good);
	cr_assert(good.echo_ok);
	cr_assert_eq(sv.stats.tls_floods, 1);
	srv_stop(&sv);
}

/*
 * TLS 1.2: renegotiation attempts (each answered with a no_renegotiation
 * alert, and the connection went on), warning alerts and empty records,
 * each a flood closed and counted.  OpenSSL itself ends the last two
 * after 5 and 32 in a row; they count as floods all the same.
 */
Test(tls, tls12_floods_closed, .timeout = 60)
{
	static const struct {
		enum flood_kind kind;
		size_t n;
		const char *name;
	} kinds[] = {
		{ FLOOD_HELLOS, 1000, "renegotiation attempts" },
		{ FLOOD_ALERTS, 50, "warning alerts" },
		{ FLOOD_EMPTY, 200, "empty records" },
	};
	struct srv sv;

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		struct flood_client f = { .kind = kinds[i].kind,
		    .n = kinds[i].n };
		flood_run(&sv, &f);
		cr_assert(f.ping_ok, "%s: the crafted record was refused (%s)",
		    kinds[i].name, sv.tls_error);
		cr_assert(f.closed, "%s: the flooder was not closed",
		    kinds[i].name);
		cr_assert(strstr(sv.tls_error, "flood") != NULL, "%s: %s",
		    kinds[i].name, sv.tls_error);
		cr_assert_eq(sv.stats.tls_floods, i + 1, "%s: %llu floods "
		    "counted", kinds[i].name,
		    (unsigned long long)sv.stats.tls_floods);
	}
	srv_stop(&sv);
}

/*
 * A peer that asks for a key update every 64 KiB of an 8 MB echo (128
 * of them, four times the allowance) pays for each with data: it is
 * served to the end and never taken for a flood.
 */
Test(tls, key_updates_paced_by_data_kept, .timeout = 60)
{
	struct srv sv;
	struct flood_client c = { .kind = PACED_KEY_UPDATES, .n = 8 << 20 };

	srv_start(&sv, TLS_VERIFY_NONE, 5, NULL);
	flood_run(&sv, &c);
	cr_assert(c.echo_ok, "the echo broke off (%s)", sv.last_error);
	cr_assert_eq(c.key_updates_back, 128);
	cr_assert_eq(sv.tls_fails, 0, "%s", sv.tls_error);
	cr_assert_eq(sv.stats.tls_floods, 0);
	srv_stop(&sv);
}
