/*
 * Unix domain sockets end to end: a forward listener on
 * `bind = unix:PATH` (its mode, a stale socket file replaced, a live one
 * or a file that is not a socket refused) and a backend at
 * `backend = unix:PATH`, with the PROXY header a unix client gets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static char dir[64];

static void
setup(void)
{
	tmpdir_make(dir, sizeof(dir), "ferry-unix");
}

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	tmpdir_remove(dir);
}

static void
path_in_dir(const char *name, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", dir, name);
}

static int
unix_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { 10, 0 };

	cr_assert_geq(fd, 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static int
unix_listen(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind %s: "
	    "%s", path, strerror(errno));
	cr_assert_eq(listen(fd, 16), 0);
	return fd;
}

static bool
echoes(int fd, const char *msg)
{
	struct peer p;
	char buf[64];
	size_t n = strlen(msg);

	peer_plain(&p, fd);
	return peer_write(&p, msg, n) == n && peer_read_exact(&p, buf, n) == n
	    && memcmp(buf, msg, n) == 0;
}

/* accept_timeout() gives a non-blocking socket: blocking, 10 s bound. */
static int
blocking(int fd)
{
	struct timeval tv = { 10, 0 };

	cr_assert_geq(fd, 0, "ferry did not connect to the backend");
	cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Reads one line (a PROXY header) off fd. */
static void
read_line(int fd, char *out, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap && recv(fd, out + n, 1, 0) == 1)
		if (out[n++] == '\n')
			break;
	out[n] = '\0';
}

Test(unix_socket, listener_mode_and_proxy_header, .init = setup, .fini = cleanup,
    .timeout = 30)
{
	struct backend be;
	char sock[128], conf[1024];
	struct stat st;
	int fd;

	backend_start(&be, false, backend_echo, NULL);
	path_in_dir("web.sock", sock, sizeof(sock));
	/* Our own user, and a group we may give it to: our own as well
	   (chown to another needs root; as root, any would do). */
	struct passwd *pw = getuid() == 0 && getpwnam("nobody") ?
	    getpwnam("nobody") : getpwuid(getuid());
	cr_assert_not_null(pw);
	uid_t owner_uid = pw->pw_uid;
	struct group *gr = getuid() == 0 && getgrnam("nogroup") ?
	    getgrnam("nogroup") : getgrgid(getgid());
	cr_assert_not_null(gr);
	gid_t owner_gid = gr->gr_gid;
	snprintf(conf, sizeof(conf),
	    "[web]\nmode = forward\nbind = unix:%s\nunix_mode = 0600\n"
	    "unix_owner = %s:%s\nbackend = 127.0.0.1:%d\n", sock,
	    pw->pw_name, gr->gr_name, be.port);
	ferry_start(&fp, conf);
	cr_assert_eq(stat(sock, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	cr_assert_eq(st.st_uid, owner_uid);
	cr_assert_eq(st.st_gid, owner_gid);
	char line[256];
	snprintf(line, sizeof(line), "listening on unix:%s (tcp) [web]", sock);
	cr_assert_eq(ferry_log_count(&fp, line), 1);
	fd = unix_connect(sock);
	cr_assert_geq(fd, 0, "connect %s: %s", sock, strerror(errno));
	cr_assert(echoes(fd, "over a unix socket"));
	close(fd);
	cr_assert(ferry_log_wait(&fp, "web: unix -> 127.0.0.1:", 1, 10));
	backend_stop(&be);
}

Test(unix_socket, stale_socket_replaced_live_one_and_file_refused, .init = setup,
    .fini = cleanup, .timeout = 30)
{
	struct backend be;
	char sock[128], conf[1024], out[4096];
	const char *argv[] = { "-c", NULL, NULL };
	char confpath[160];
	int lfd, fd;
	FILE *f;

	backend_start(&be, false, backend_echo, NULL);
	path_in_dir("web.sock", sock, sizeof(sock));
	path_in_dir("ferry.conf", confpath, sizeof(confpath));
	snprintf(conf, sizeof(conf),
	    "[web]\nmode = forward\nbind = unix:%s\nbackend = 127.0.0.1:%d\n",
	    sock, be.port);
	f = fopen(confpath, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	fclose(f);
	argv[1] = confpath;

	/* A file that is not a socket: refused, and left as it was. */
	f = fopen(sock, "w");
	fputs("keep me", f);
	fclose(f);
	cr_assert_neq(ferry_run(argv, out, sizeof(out)), 0);
	cr_assert_not_null(strstr(out, "exists and is not a socket"), "%s",
	    out);
	cr_assert_eq(unlink(sock), 0, "the file was removed");

	/* A socket a process accepts on: refused, still accepting. */
	lfd = unix_listen(sock);
	cr_assert_neq(ferry_run(argv, out, sizeof(out)), 0);
	cr_assert_not_null(strstr(out, "is in use"), "%s", out);
	fd = unix_connect(sock);
	cr_assert_geq(fd, 0, "the live socket was taken away");
	close(fd);

	/* The same, stale (its listener gone): replaced. */
	close(lfd);
	ferry_start(&fp, conf);
	fd = unix_connect(sock);
	cr_assert_geq(fd, 0);
	cr_assert(echoes(fd, "replaced"));
	close(fd);
	backend_stop(&be);
}

Test(unix_socket, backend_on_a_unix_socket, .init = setup, .fini = cleanup,
    .timeout = 30)
{
	char sock[128], conf[1024], line[128];
	struct peer p;
	int lfd, bfd, cfd;
	char buf[16];

	path_in_dir("be.sock", sock, sizeof(sock));
	lfd = unix_listen(sock);
	snprintf(conf, sizeof(conf),
	    "[ferry]\nadmin = 127.0.0.1:0\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = unix:%s\nproxy_protocol = v1\n", sock);
	ferry_start(&fp, conf);
	cfd = connect_loopback(false, ferry_port(&fp, "web"));
	cr_assert_geq(cfd, 0);
	peer_plain(&p, cfd);
	cr_assert_eq(peer_write(&p, "ping", 4), 4);
	bfd = blocking(accept_timeout(lfd, 10));
	read_line(bfd, line, sizeof(line));
	cr_assert_eq(strncmp(line, "PROXY TCP4 127.0.0.1 127.0.0.1 ", 31), 0,
	    "[%s]", line);
	cr_assert_eq(recv(bfd, buf, 4, MSG_WAITALL), 4);
	cr_assert_eq(memcmp(buf, "ping", 4), 0);
	cr_assert_eq(send(bfd, "pong", 4, 0), 4);
	cr_assert_eq(peer_read_exact(&p, buf, 4), 4);
	cr_assert_eq(memcmp(buf, "pong", 4), 0);
	close(bfd);
	peer_close(&p);
	char series[256];
	snprintf(series, sizeof(series), "ferry_backend_connects_total{"
	    "listener=\"web\",set=\"default\",backend=\"unix:%s\"}", sock);
	cr_assert(ferry_log_wait(&fp, "closed after", 1, 10));
	cr_assert_eq(ferry_metric(&fp, series), 1);
	close(lfd);
}

Test(unix_socket, unix_client_sends_proxy_unknown, .init = setup, .fini = cleanup,
    .timeout = 30)
{
	char sock[128], conf[1024], line[128];
	int lfd, bfd, cfd, port;

	lfd = listen_loopback(false, &port);
	path_in_dir("web.sock", sock, sizeof(sock));
	snprintf(conf, sizeof(conf),
	    "[web]\nmode = forward\nbind = unix:%s\n"
	    "backend = 127.0.0.1:%d\nproxy_protocol = v1\n", sock, port);
	ferry_start(&fp, conf);
	cfd = unix_connect(sock);
	cr_assert_geq(cfd, 0);
	cr_assert_eq(send(cfd, "x", 1, 0), 1);
	bfd = blocking(accept_timeout(lfd, 10));
	read_line(bfd, line, sizeof(line));
	cr_assert_str_eq(line, "PROXY UNKNOWN\r\n");
	close(bfd);
	close(cfd);
	close(lfd);
}

Test(unix_socket, proxy_client_on_a_unix_listener_keeps_its_address,
    .init = setup, .fini = cleanup, .timeout = 30)
{
	char sock[128], conf[1024], line[128];
	const char *hdr = "PROXY TCP4 192.0.2.44 198.51.100.1 4242 443\r\n";
	int lfd, bfd, cfd, port;

	lfd = listen_loopback(false, &port);
	path_in_dir("web.sock", sock, sizeof(sock));
	snprintf(conf, sizeof(conf),
	    "[web]\nmode = forward\nbind = unix:%s\naccept_proxy = on\n"
	    "backend = 127.0.0.1:%d\nproxy_protocol = v1\n", sock, port);
	ferry_start(&fp, conf);
	cfd = unix_connect(sock);
	cr_assert_geq(cfd, 0);
	cr_assert_eq(send(cfd, hdr, strlen(hdr), 0), (ssize_t)strlen(hdr));
	cr_assert_eq(send(cfd, "x", 1, 0), 1);
	bfd = blocking(accept_timeout(lfd, 10));
	read_line(bfd, line, sizeof(line));
	/* Where it connected is not an IPv4 address: 0.0.0.0 port 0. */
	cr_assert_str_eq(line, "PROXY TCP4 192.0.2.44 0.0.0.0 4242 0\r\n");
	close(bfd);
	close(cfd);
	close(lfd);
	cr_assert(ferry_log_wait(&fp, "web: 192.0.2.44:4242 -> ", 1, 10));
}

/*
 * A reload that changes a unix listener hands its socket to the new one
 * (the old one still accepts until then: binding the path again would
 * find it in use and refuse the reload); the socket file stays the same.
 */
Test(unix_socket, reload_keeps_the_socket_of_a_changed_listener,
    .init = setup, .fini = cleanup, .timeout = 30)
{
	struct backend be;
	char sock[128], conf[1024];
	struct stat before, after;
	FILE *f;
	int fd;

	backend_start(&be, false, backend_echo, NULL);
	path_in_dir("web.sock", sock, sizeof(sock));
	snprintf(conf, sizeof(conf), "[web]\nmode = forward\nbind = unix:%s\n"
	    "backend = 127.0.0.1:%d\n", sock, be.port);
	ferry_start(&fp, conf);
	cr_assert_eq(stat(sock, &before), 0);
	fd = unix_connect(sock);
	cr_assert_geq(fd, 0);
	cr_assert(echoes(fd, "before"));

	snprintf(conf, sizeof(conf), "[web]\nmode = forward\nbind = unix:%s\n"
	    "idle_timeout = 120\nbackend = 127.0.0.1:%d\n", sock, be.port);
	f = fopen(fp.conf, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	cr_assert_eq(fclose(f), 0);
	ferry_signal(&fp, SIGHUP);
	if (!ferry_log_wait(&fp, "reload: 1 listeners (0 added, 1 changed, "
	    "0 removed)", 1, 10))
		ferry_log_dump(&fp);
	cr_assert_eq(ferry_log_count(&fp, "reload: 1 listeners (0 added, 1 "
	    "changed, 0 removed)"), 1);
	cr_assert_eq(stat(sock, &after), 0);
	cr_assert_eq(before.st_ino, after.st_ino, "the socket was bound again");
	cr_assert(echoes(fd, "live one carries on"));
	close(fd);
	fd = unix_connect(sock);
	cr_assert_geq(fd, 0);
	cr_assert(echoes(fd, "after"));
	close(fd);
	backend_stop(&be);
}
