/*
 * Routing by SNI and ALPN end to end (forward.h): routes to backend sets,
 * route_nomatch = refuse, and alpn_fallback for a client with no
 * protocol in common.  TLS clients of this process with the name and
 * protocols each test needs, echo backends in threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/ssl.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

static void
start(const char *extra)
{
	char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n"
	    "%s", extra);
	ferry_start(&fp, conf);
}

/*
 * A TLS client sending `sni` (NULL: none) and offering `alpn` (wire
 * format, NULL: none); the chain is verified, the name is not (the
 * development certificate is for localhost).  False if the handshake
 * fails.
 */
static bool
tls_client(struct peer *p, const char *sni, const char *alpn)
{
	int fd = connect_loopback(false, ferry_port(&fp, "web"));

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_tls(p, fd, NULL, NULL, NULL);
	if (sni != NULL)
		SSL_set_tlsext_host_name(p->ssl, sni);
	if (alpn != NULL)
		cr_assert_eq(SSL_set_alpn_protos(p->ssl,
		    (const unsigned char *)alpn, (unsigned)strlen(alpn)), 0);
	return SSL_connect(p->ssl) == 1;
}

static bool
echoes(struct peer *p, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg);

	return peer_write(p, msg, n) == n && peer_read_exact(p, buf, n) == n &&
	    memcmp(buf, msg, n) == 0;
}

/* One client through: handshake, echo, close. */
static bool
served(const char *sni, const char *alpn)
{
	struct peer p;
	bool ok = tls_client(&p, sni, alpn) && echoes(&p, "routed");

	peer_close(&p);
	return ok;
}

static bool
read_to_eof(struct peer *p)
{
	char buf[256];
	long n;

	while ((n = peer_read(p, buf, sizeof(buf))) > 0)
		;
	return n == 0;
}

Test(routing, sni_to_backend_sets, .timeout = 30, .fini = cleanup)
{
	struct backend web, api;
	char extra[1024];

	backend_start(&web, false, backend_echo, NULL);
	backend_start(&api, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra),
	    "backend = 127.0.0.1:%d\n"
	    "backend_set = api: 127.0.0.1:%d\n"
	    "route = sni:api.example.com -> api\n"
	    "route = sni:*.api.test -> api\n", web.port, api.port);
	start(extra);
	cr_assert(served("api.example.com", NULL));
	cr_assert(served("API.Example.COM", NULL));
	cr_assert(served("eu.api.test", NULL));
	cr_assert_eq(api.accepted, 3);
	cr_assert_eq(web.accepted, 0);
	cr_assert(served("www.example.com", NULL));
	cr_assert(served("a.eu.api.test", NULL));	/* one label only */
	cr_assert(served(NULL, NULL));
	cr_assert_eq(web.accepted, 3);
	cr_assert_eq(api.accepted, 3);
	cr_assert(ferry_log_wait(&fp, "closed after", 6, 10));
	char series[200];
	snprintf(series, sizeof(series), "ferry_backend_connects_total{"
	    "listener=\"web\",set=\"api\",backend=\"127.0.0.1:%d\"}",
	    api.port);
	cr_assert_eq(ferry_metric(&fp, series), 3);
	backend_stop(&web);
	backend_stop(&api);
}

Test(routing, unknown_name_refused, .timeout = 30, .fini = cleanup)
{
	struct backend api;
	struct peer p;
	char extra[1024];

	backend_start(&api, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra),
	    "backend_set = api: 127.0.0.1:%d\n"
	    "route = sni:api.example.com -> api\n"
	    "route_nomatch = refuse\n", api.port);
	start(extra);
	cr_assert(served("api.example.com", NULL));
	/* Handshake, then closed: no backend is reached. */
	cr_assert(tls_client(&p, "nobody.example.com", NULL));
	peer_write(&p, "x", 1);
	cr_assert(read_to_eof(&p), "the unknown name was not closed");
	peer_close(&p);
	cr_assert(tls_client(&p, NULL, NULL));
	cr_assert(read_to_eof(&p), "the client without SNI was not closed");
	peer_close(&p);
	cr_assert(ferry_log_wait(&fp, "no route for name "
	    "'nobody.example.com', protocol '': refused", 1, 10));
	cr_assert_eq(api.accepted, 1);
	backend_stop(&api);
}

Test(routing, alpn_picks_the_set, .timeout = 30, .fini = cleanup)
{
	struct backend h1, h2;
	struct peer p;
	char extra[1024];
	const unsigned char *sel;
	unsigned len;

	backend_start(&h1, false, backend_echo, NULL);
	backend_start(&h2, false, backend_echo, NULL);
	snprintf(extra, sizeof(extra),
	    "alpn = h2,http/1.1\n"
	    "backend = 127.0.0.1:%d\n"
	    "backend_set = h2: 127.0.0.1:%d\n"
	    "route = alpn:h2 -> h2\n", h1.port, h2.port);
	start(extra);
	cr_assert(tls_client(&p, NULL, "\x02h2\x08http/1.1"));
	SSL_get0_alpn_selected(p.ssl, &sel, &len);
	cr_assert_eq(len, 2);
	cr_assert(echoes(&p, "h2"));
	peer_close(&p);
	cr_assert(served(NULL, "\x08http/1.1"));
	cr_assert(served(NULL, NULL));
	cr_assert_eq(h2.accepted, 1);
	cr_assert_eq(h1.accepted, 2);
	backend_stop(&h1);
	backend_stop(&h2);
}

Test(routing, alpn_fallback, .timeout = 30, .fini = cleanup)
{
	struct backend be;
	struct peer p;
	char extra[1024];
	const unsigned char *sel;
	unsigned len;

	backend_start(&be, false, backend_echo, NULL);
	/* Without it: no protocol in common fails the handshake. */
	snprintf(extra, sizeof(extra), "alpn = h2\nbackend = 127.0.0.1:%d\n",
	    be.port);
	start(extra);
	cr_assert_not(tls_client(&p, NULL, "\x06spdy/3"),
	    "no common protocol, yet a handshake");
	peer_close(&p);
	ferry_stop(&fp);
	ferry_cleanup(&fp);

	snprintf(extra, sizeof(extra), "alpn = h2\nalpn_fallback = on\n"
	    "backend = 127.0.0.1:%d\n", be.port);
	start(extra);
	cr_assert(tls_client(&p, NULL, "\x06spdy/3"), "alpn_fallback: the "
	    "handshake failed");
	SSL_get0_alpn_selected(p.ssl, &sel, &len);
	cr_assert_eq(len, 0, "a protocol was agreed");
	cr_assert(echoes(&p, "no alpn"));
	peer_close(&p);
	cr_assert(served(NULL, "\x02h2"));
	cr_assert_eq(be.accepted, 2);
	backend_stop(&be);
}
