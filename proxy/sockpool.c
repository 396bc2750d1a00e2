/* sockpool: see sockpool.h. */
#define _GNU_SOURCE
#include "sockpool.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "netutil.h"

#define LISTEN_FDS_START 3

void
sockpool_init(struct sockpool *p)
{
	memset(p, 0, sizeof(*p));
}

int
sockpool_add(struct sockpool *p, int fd, const char *name)
{
	socklen_t len = sizeof(p->addr[0]);

	if (p->n >= SOCKPOOL_MAX)
		return -1;
	memset(&p->addr[p->n], 0, sizeof(p->addr[0]));
	if (getsockname(fd, (struct sockaddr *)&p->addr[p->n], &len) < 0)
		return -1;
	p->fd[p->n] = fd;
	snprintf(p->name[p->n], SOCKPOOL_NAME_LEN, "%s", name ? name : "");
	p->n++;
	return 0;
}

/* The i-th name of LISTEN_FDNAMES ("a:b:c"), or "". */
static void
nth_name(const char *names, size_t i, char *out, size_t outlen)
{
	const char *s = names;

	out[0] = '\0';
	for (; s != NULL && i > 0; i--) {
		s = strchr(s, ':');
		if (s != NULL)
			s++;
	}
	if (s != NULL)
		snprintf(out, outlen, "%.*s", (int)strcspn(s, ":"), s);
}

static bool
listening_stream(int fd)
{
	int v = 0, type = 0;
	socklen_t len = sizeof(v), tlen = sizeof(type);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 &&
	    v != 0 && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
	    type == SOCK_STREAM;
}

int
sockpool_from_env(struct sockpool *p, char *err, size_t errlen)
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	long n;
	int rc = 0;

	if (pid == NULL || nfds == NULL || atol(pid) != (long)getpid())
		goto out;
	n = atol(nfds);
	if (n < 0 || n > SOCKPOOL_MAX) {
		snprintf(err, errlen, "LISTEN_FDS=%s: not 0..%d", nfds,
		    SOCKPOOL_MAX);
		rc = -1;
		goto out;
	}
	for (long i = 0; i < n; i++) {
		int fd = LISTEN_FDS_START + (int)i;
		char name[SOCKPOOL_NAME_LEN];
		int fl = fcntl(fd, F_GETFD);

		if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0 ||
		    !listening_stream(fd) || netutil_set_nonblock(fd) < 0) {
			snprintf(err, errlen, "inherited fd %d (LISTEN_FDS): "
			    "not a listening stream socket (TCP or unix)",
			    fd);
			rc = -1;
			goto out;
		}
		nth_name(names, (size_t)i, name, sizeof(name));
		if (sockpool_add(p, fd, name) < 0) {
			snprintf(err, errlen, "inherited fd %d: %s", fd,
			    strerror(errno));
			rc = -1;
			goto out;
		}
	}
	rc = (int)p->n;
out:
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return rc;
}

static int
addr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return -1;
}

static bool
wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
		    htonl(INADDR_ANY);
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
		    &((const struct sockaddr_in6 *)ss)->sin6_addr);
	return false;
}

static bool
same_host(const struct sockaddr_storage *ss, const struct sockaddr *sa)
{
	if (ss->ss_family != sa->sa_family)
		return false;
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
	if (sa->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)ss)->sin6_addr,
		    &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0;
	return false;
}

/* Whether pooled socket i serves host (every address it resolves to). */
static bool
host_matches(const struct sockpool *p, size_t i, const char *host)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_PASSIVE }, *res;
	bool found = false;

	if (host == NULL || host[0] == '\0')
		return wildcard(&p->addr[i]);
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false;
	for (struct addrinfo *ai = res; ai != NULL && !found; ai = ai->ai_next)
		found = same_host(&p->addr[i], ai->ai_addr);
	freeaddrinfo(res);
	return found;
}

/* A unix: address's socket: the one bound to its path. */
static bool
path_matches(const struct sockaddr_storage *ss, const char *path)
{
	const struct sockaddr_un *un = (const struct sockaddr_un *)ss;

	return ss->ss_family == AF_UNIX &&
	    strncmp(un->sun_path, path, sizeof(un->sun_path)) == 0;
}

size_t
sockpool_take(struct sockpool *p, const char *name, const char *host,
    int port, int *fds, size_t max)
{
	size_t got = 0;
	bool is_unix = host != NULL && strncmp(host, "unix:", 5) == 0;

	for (size_t i = 0; i < p->n && got < max; ) {
		int sport = addr_port(&p->addr[i]);
		bool match = is_unix ? path_matches(&p->addr[i], host + 5) :
		    (port == 0 ? strcmp(p->name[i], name) == 0 :
		    sport == port) && host_matches(p, i, host);
		if (!match) {
			i++;
			continue;
		}
		fds[got++] = p->fd[i];
		p->n--;
		p->fd[i] = p->fd[p->n];
		memcpy(p->name[i], p->name[p->n], SOCKPOOL_NAME_LEN);
		p->addr[i] = p->addr[p->n];
	}
	return got;
}

void
sockpool_close(struct sockpool *p, bool quiet)
{
	for (size_t i = 0; i < p->n; i++) {
		char addr[80];
		if (!quiet) {
			netutil_format_addr((struct sockaddr *)&p->addr[i],
			    addr, sizeof(addr));
			LOGW("inherited socket %s (%s) matches no listener: "
			    "closed", addr, p->name[i][0] ? p->name[i] :
			    "no name");
		}
		close(p->fd[i]);
	}
	p->n = 0;
}
