/* tlscheck: see tlscheck.h. */
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

static void
srv_closed(struct stream *s, enum stream_close_reason why, void *arg)
{
	struct srv *sv = arg;

	sv->closes++;
	if (sv->last == s)
		sv->last = NULL;
	if (why == STREAM_CLOSE_TLS) {
		sv->tls_fails++;
		snprintf(sv->tls_error, sizeof(sv->tls_error), "%s",
		    stream_error(s));
	}
	if (why == STREAM_CLOSE_TIMEOUT)
		sv->timeouts++;
	snprintf(sv->last_error, sizeof(sv->last_error), "%s",
	    stream_error(s));
}

static void
srv_echo(struct stream *s, const char *d, size_t n, void *arg)
{
	struct srv *sv = arg;

	stream_write(s, d, n, NULL);
	stream_read_bytes(s, sv->chunk, true, srv_echo);
}

static void
srv_ready(struct stream *s, void *arg)
{
	struct srv *sv = arg;
	unsigned len;
	const unsigned char *p = tls_stream_alpn(s, &len);

	sv->ready++;
	sv->verified = tls_stream_peer_verified(s);
	sv->has_ids = stream_peer_ids(s, &sv->ids);
	if (!tls_stream_peer_subject(s, sv->subject, sizeof(sv->subject)))
		sv->subject[0] = '\0';
	if (p != NULL && len < sizeof(sv->alpn)) {
		memcpy(sv->alpn, p, len);
		sv->alpn[len] = '\0';
	}
	stream_read_bytes(s, sv->chunk, true, srv_echo);
}

static void
srv_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	struct srv *sv = arg;

	(void)sa;
	(void)len;
	sv->handled++;
	sv->last = s;
	stream_set_callbacks(s, srv_closed, sv);
	stream_wait_for_handshake(s, srv_ready);
}

void
srv_start(struct srv *sv, enum tls_verify verify, double hs_timeout,
    const struct stream_opts *opts)
{
	struct stream_opts o;
	char err[256];

	memset(sv, 0, sizeof(*sv));
	sv->chunk = 65536;
	tloop_init(&sv->t);
	if (opts != NULL)
		o = *opts;
	else
		stream_opts_default(&o);
	o.handshake_timeout = hs_timeout;
	sv->tls = test_server_ctx(verify);
	sv->ts = tcpserver_new(&sv->t.sl, "test-tls", &o, sv->tls,
	    srv_handle, sv);
	cr_assert_not_null(sv->ts);
	tcpserver_set_stats(sv->ts, &sv->stats);
	cr_assert_eq(tcpserver_bind(sv->ts, "127.0.0.1", 0, AF_UNSPEC,
	    NETUTIL_DEFAULT_BACKLOG, false, err, sizeof(err)), 0, "%s", err);
	tcpserver_start(sv->ts);
	sv->port = tcpserver_port(sv->ts);
}

void
srv_stop(struct srv *sv)
{
	tcpserver_free(sv->ts);
	tls_ctx_unref(sv->tls);
	/* Close whatever is left and check every stream was freed. */
	tloop_run_for(&sv->t, 0.05);
	tloop_destroy(&sv->t);
}


static void *
client_main(void *arg)
{
	struct client *c = arg;
	struct peer p;
	int fd = connect_loopback(false, c->port);

	if (fd < 0)
		goto out;
	peer_tls(&p, fd, c->sni, c->cert, c->key);
	if (c->max_version)
		SSL_set_max_proto_version(p.ssl, c->max_version);
	if (c->ciphers) {
		SSL_set_max_proto_version(p.ssl, TLS1_2_VERSION);
		SSL_set_cipher_list(p.ssl, c->ciphers);
	}
	if (c->alpn)
		SSL_set_alpn_protos(p.ssl, (const unsigned char *)c->alpn,
		    (unsigned)c->alpn_len);
	c->handshake_ok = peer_tls_handshake(&p);
	/* TLS 1.3 reports a refused client certificate on the first read. */
	if (c->handshake_ok && c->echo_bytes == 0) {
		char b;
		SSL_write(p.ssl, "x", 1);
		c->handshake_ok = peer_read(&p, &b, 1) == 1;
	}
	if (c->handshake_ok) {
		X509 *x = SSL_get1_peer_certificate(p.ssl);
		if (x != NULL) {
			X509_NAME_get_text_by_NID(X509_get_subject_name(x),
			    NID_commonName, c->peer_cn, sizeof(c->peer_cn));
			X509_free(x);
		}
		const unsigned char *a;
		unsigned alen;
		SSL_get0_alpn_selected(p.ssl, &a, &alen);
		if (alen > 0 && alen < sizeof(c->alpn_got)) {
			memcpy(c->alpn_got, a, alen);
			c->alpn_got[alen] = '\0';
		}
	}
	if (c->handshake_ok && c->echo_bytes > 0) {
		uint8_t *out = malloc(c->echo_bytes), *in = malloc(c->echo_bytes);
		fill_pattern(out, c->echo_bytes, 0, 9);
		if (c->burst_records > 0) {
			/* Many records in one burst, then wait for all back. */
			size_t per = c->echo_bytes / c->burst_records;
			for (size_t i = 0; i < c->burst_records; i++)
				peer_write(&p, out + i * per, per);
		} else {
			peer_write(&p, out, c->echo_bytes);
		}
		c->echo_ok = peer_read_exact(&p, in, c->echo_bytes) ==
		    c->echo_bytes && memcmp(in, out, c->echo_bytes) == 0;
		free(out);
		free(in);
	}
	peer_close(&p);
out:
	c->done = true;
	return NULL;
}

void
client_start(struct client *c, int port)
{
	c->port = port;
	cr_assert_eq(pthread_create(&c->th, NULL, client_main, c), 0);
}

static bool
client_finished(void *arg)
{
	return ((struct client *)arg)->done;
}

void
client_wait(struct srv *sv, struct client *c)
{
	cr_assert(tloop_run_pred(&sv->t, client_finished, c, 20),
	    "client did not finish");
	pthread_join(c->th, NULL);
}
