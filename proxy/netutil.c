/* netutil: see netutil.h. */
#define _GNU_SOURCE
#include "netutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static void
set_err(char *err, size_t errlen, const char *what, int e, const char *ctx)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s%s%s: %s", what, ctx ? " " : "",
		    ctx ? ctx : "", strerror(e));
}

int
netutil_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int
netutil_set_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int
netutil_set_keepalive(int fd, int idle, int interval, int count)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle,
	    sizeof(idle)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval,
	    sizeof(interval)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count,
	    sizeof(count)) < 0)
		return -1;
	return setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

void
netutil_format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
	char host[INET6_ADDRSTRLEN];

	if (outlen == 0)
		return;
	switch (sa ? sa->sa_family : AF_UNSPEC) {
	case AF_INET: {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, outlen, "%s:%u", host, ntohs(in->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, outlen, "[%s]:%u", host, ntohs(in6->sin6_port));
		break;
	}
	case AF_UNIX:
		snprintf(out, outlen, "unix");
		break;
	default:
		snprintf(out, outlen, "?");
	}
}

int
netutil_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

static void
set_port(struct sockaddr *sa, int port)
{
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
	else if (sa->sa_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

static int
open_listener(const struct addrinfo *ai, int bound_port, int backlog,
    bool reuse_port, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	char label[80];
	int one = 1;
	int fd;

	memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
	if (bound_port > 0)
		set_port((struct sockaddr *)&ss, bound_port);
	netutil_format_addr((struct sockaddr *)&ss, label, sizeof(label));

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		set_err(err, errlen, "socket", errno, label);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
		set_err(err, errlen, "SO_REUSEADDR", errno, label);
		goto fail;
	}
	if (reuse_port) {
#ifdef SO_REUSEPORT
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
		    sizeof(one)) < 0) {
			set_err(err, errlen, "SO_REUSEPORT", errno, label);
			goto fail;
		}
#else
		snprintf(err, errlen, "SO_REUSEPORT is not supported here");
		goto fail;
#endif
	}
	/* One socket per family, so ":port" binds v4 and v6 alike everywhere. */
	if (ai->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &one, sizeof(one)) < 0) {
		set_err(err, errlen, "IPV6_V6ONLY", errno, label);
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) < 0) {
		set_err(err, errlen, "bind", errno, label);
		goto fail;
	}
	if (listen(fd, backlog) < 0) {
		set_err(err, errlen, "listen", errno, label);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

int
netutil_bind_sockets(const char *address, int port, int family, int backlog,
    bool reuse_port, int *fds, size_t maxfds, char *err, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	char portstr[16];
	size_t n = 0;
	int bound_port = 0;
	int rc;

	if (port < 0 || port > 65535) {
		snprintf(err, errlen, "port %d out of range", port);
		return -1;
	}
	if (address != NULL && address[0] == '\0')
		address = NULL;
	if (backlog <= 0)
		backlog = NETUTIL_DEFAULT_BACKLOG;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(address, portstr, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve '%s': %s",
		    address ? address : "*", gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		bool dup = false;
		/* getaddrinfo may list one address several times. */
		for (struct addrinfo *p = res; p != ai; p = p->ai_next)
			if (p->ai_addrlen == ai->ai_addrlen &&
			    memcmp(p->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0)
				dup = true;
		if (dup || (ai->ai_family != AF_INET &&
		    ai->ai_family != AF_INET6))
			continue;
		if (n == maxfds) {
			snprintf(err, errlen, "'%s' resolves to more than %zu "
			    "addresses", address ? address : "*", maxfds);
			goto fail;
		}
		int fd = open_listener(ai, port == 0 ? bound_port : 0,
		    backlog, reuse_port, err, errlen);
		if (fd < 0) {
			/* A host without IPv6 still serves IPv4 on "*". */
			if (address == NULL && ai->ai_family == AF_INET6 &&
			    errno == EAFNOSUPPORT)
				continue;
			goto fail;
		}
		if (port == 0 && bound_port == 0)
			bound_port = netutil_local_port(fd);
		fds[n++] = fd;
	}
	freeaddrinfo(res);
	if (n == 0) {
		snprintf(err, errlen, "'%s' has no usable address",
		    address ? address : "*");
		return -1;
	}
	return (int)n;
fail:
	freeaddrinfo(res);
	while (n > 0)
		close(fds[--n]);
	return -1;
}

int
netutil_parse_hostport(const char *spec, char *host, size_t hostlen,
    int *port, char *err, size_t errlen)
{
	const char *colon, *hs, *he;
	char *end;
	long p;

	if (spec == NULL || *spec == '\0') {
		snprintf(err, errlen, "empty address");
		return -1;
	}
	if (spec[0] == '[') {
		he = strchr(spec, ']');
		if (he == NULL || he[1] != ':') {
			snprintf(err, errlen, "'%s': expected [ipv6]:port", spec);
			return -1;
		}
		hs = spec + 1;
		colon = he + 1;
	} else {
		colon = strrchr(spec, ':');
		if (colon != NULL && strchr(spec, ':') != colon) {
			snprintf(err, errlen, "'%s': write IPv6 addresses as "
			    "[addr]:port", spec);
			return -1;
		}
		hs = spec;
		he = colon ? colon : spec;
	}
	const char *ps = colon ? colon + 1 : spec;
	errno = 0;
	p = strtol(ps, &end, 10);
	if (*ps == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535) {
		snprintf(err, errlen, "'%s': bad port", spec);
		return -1;
	}
	size_t hl = (size_t)(he - hs);
	if (hl >= hostlen) {
		snprintf(err, errlen, "'%s': host name too long", spec);
		return -1;
	}
	memcpy(host, hs, hl);
	host[hl] = '\0';
	*port = (int)p;
	return 0;
}

int
netutil_resolve(const char *host, int port, struct sockaddr_storage *ss,
    socklen_t *len, char *err, size_t errlen)
{
	struct addrinfo hints, *res;
	char portstr[16];
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host && *host ? host : NULL, portstr, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve '%s': %s", host,
		    gai_strerror(rc));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* ---- the accept handler ---- */

static void
accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct accept_handler *ah = w->data;

	(void)loop;
	(void)revents;
	ev_io_start(ah->loop, &ah->io);
}

static void
accept_starved(struct accept_handler *ah, int e)
{
	ah->starved_count++;
	if (!ah->starved) {
		ah->starved = true;
		LOGW("accept on fd %d: %s; pausing accepts for %.0f ms "
		    "(raise the open-files limit, ulimit -n)", ah->fd,
		    strerror(e), NETUTIL_ACCEPT_PAUSE * 1000);
	}
	ev_io_stop(ah->loop, &ah->io);
	ev_timer_set(&ah->pause, NETUTIL_ACCEPT_PAUSE, 0.);
	ev_timer_start(ah->loop, &ah->pause);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct accept_handler *ah = w->data;

	(void)loop;
	(void)revents;
	for (int i = 0; i < ah->backlog; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(ah->fd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			switch (errno) {
			case EAGAIN:
				return;
			case EINTR:
			case ECONNABORTED:
			/* Linux passes on pending errors of the new socket. */
			case EPROTO: case ENETDOWN: case ENOPROTOOPT:
			case EHOSTDOWN: case ENONET: case EHOSTUNREACH:
			case EOPNOTSUPP: case ENETUNREACH: case EPERM:
				continue;
			case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
				accept_starved(ah, errno);
				return;
			default:
				LOGE("accept on fd %d: %s", ah->fd,
				    strerror(errno));
				accept_starved(ah, errno);
				return;
			}
		}
		if (ah->starved) {
			ah->starved = false;
			LOGI("accepting again on fd %d (%lu refusals while "
			    "out of descriptors)", ah->fd, ah->starved_count);
			ah->starved_count = 0;
		}
		ah->cb(fd, (struct sockaddr *)&ss, len, ah->arg);
	}
}

void
netutil_accept_init(struct accept_handler *ah, struct ev_loop *loop, int fd,
    int backlog, netutil_accept_cb cb, void *arg)
{
	memset(ah, 0, sizeof(*ah));
	ah->loop = loop;
	ah->fd = fd;
	ah->backlog = backlog > 0 ? backlog : NETUTIL_DEFAULT_BACKLOG;
	ah->cb = cb;
	ah->arg = arg;
	ev_io_init(&ah->io, accept_cb, fd, EV_READ);
	ah->io.data = ah;
	ev_timer_init(&ah->pause, accept_resume_cb, NETUTIL_ACCEPT_PAUSE, 0.);
	ah->pause.data = ah;
}

void
netutil_accept_start(struct accept_handler *ah)
{
	ev_io_start(ah->loop, &ah->io);
}

void
netutil_accept_stop(struct accept_handler *ah)
{
	ev_io_stop(ah->loop, &ah->io);
	ev_timer_stop(ah->loop, &ah->pause);
}

int
netutil_unix_addr(const char *path, struct sockaddr_storage *ss,
    socklen_t *len, char *err, size_t errlen)
{
	struct sockaddr_un *un = (struct sockaddr_un *)ss;
	size_t n = strlen(path);

	if (path[0] != '/' || n >= sizeof(un->sun_path)) {
		snprintf(err, errlen, "'%s': not an absolute path of at most "
		    "%zu bytes", path, sizeof(un->sun_path) - 1);
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, n + 1);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

/* Whatever is at `path` may go: nothing, or a socket no one accepts on. */
static int
unix_path_free(const char *path, const struct sockaddr_storage *ss,
    socklen_t len, char *err, size_t errlen)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	rc = connect(fd, (const struct sockaddr *)ss, len);
	close(fd);
	if (rc == 0) {
		snprintf(err, errlen, "%s is in use (a process accepts on it)",
		    path);
		return -1;
	}
	if (errno != ECONNREFUSED) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	/* Stale: its listener is gone. */
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "cannot remove the stale %s: %s", path,
		    strerror(errno));
		return -1;
	}
	return 0;
}

int
netutil_bind_unix(const char *path, int backlog, unsigned mode, uid_t uid,
    gid_t gid, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	if (netutil_unix_addr(path, &ss, &len, err, errlen) < 0 ||
	    unix_path_free(path, &ss, len, err, errlen) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
		snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if ((mode != 0 && chmod(path, (mode_t)mode) < 0) ||
	    ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
	    chown(path, uid, gid) < 0)) {
		snprintf(err, errlen, "%s %s: %s", mode != 0 ? "chmod/chown" :
		    "chown", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	if (listen(fd, backlog) < 0) {
		snprintf(err, errlen, "listen %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}
