/* forwardcheck: see forwardcheck.h. */
#define _GNU_SOURCE
#include "forwardcheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"

/* Waits (bounded) until *flag is set by a backend thread. */
bool
wait_flag(volatile bool *flag, double timeout)
{
	double end = now_s() + timeout;

	while (!*flag && now_s() < end)
		usleep(5 * 1000);
	return *flag;
}



/*
 * Starts ferry with one forward listener [web] on 127.0.0.1:0 (TLS with
 * the development certificate unless `plain`), an admin listener, and
 * `extra` lines for the listener (backend = ..., etc.).
 */
void
start_web(bool plain, const char *extra)
{
	char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[ferry]\n"
	    "admin = 127.0.0.1:0\n"
	    "[web]\n"
	    "mode = forward\n"
	    "bind = 127.0.0.1:0\n"
	    "%s"
	    "%s",
	    plain ? "" : "cert = " CERT("server.pem") "\n"
	    "key = " CERT("server.key") "\n", extra);
	ferry_start(&fp, conf);
}

/* A TLS client through ferry, handshake done. */
void
tls_client(struct peer *p, bool v6, int port)
{
	int fd = connect_loopback(v6, port);

	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	peer_tls(p, fd, "localhost", NULL, NULL);
	cr_assert(peer_tls_handshake(p), "handshake with ferry failed");
}

/* Reads until EOF (true) or an error/timeout (false), discarding. */
bool
read_to_eof(struct peer *p)
{
	char buf[4096];
	long n;

	while ((n = peer_read(p, buf, sizeof(buf))) > 0)
		;
	return n == 0;
}

/* A port nobody listens on. */
int
dead_port(void)
{
	int port, fd = listen_loopback(false, &port);

	close(fd);
	return port;
}


void
sin4(struct sockaddr_in *a, const char *ip, int port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &a->sin_addr);
}

void
sin6(struct sockaddr_in6 *a, const char *ip, int port)
{
	memset(a, 0, sizeof(*a));
	a->sin6_family = AF_INET6;
	a->sin6_port = htons((uint16_t)port);
	inet_pton(AF_INET6, ip, &a->sin6_addr);
}


/* Reads until the connection ends, however it ends. */
void
serve_watch(int fd, void *arg)
{
	struct watch *w = arg;
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	w->closed = true;
}
