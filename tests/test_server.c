/*
 * The TCP server: stop keeps live connections, supervised worker
 * processes.  bind_sockets and the accept handler are in test_netutil.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"
#include "log.h"
#include "process.h"
#include "netutil.h"
#include "tcpserver.h"

/* ---- tcpserver ---- */

struct echo {
	int handled;
	bool done_before_handshake;
};

static void
echo_read(struct stream *s, const char *d, size_t n, void *arg)
{
	(void)arg;
	stream_write(s, d, n, NULL);
	stream_read_bytes(s, 4096, true, echo_read);
}

static void
echo_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	struct echo *e = arg;

	(void)len;
	cr_assert_eq(sa->sa_family, AF_INET);
	e->handled++;
	stream_read_bytes(s, 4096, true, echo_read);
}

struct roundtrip {
	int port;
	volatile bool done;
	bool ok;
};

static void *
roundtrip_main(void *arg)
{
	struct roundtrip *r = arg;
	char buf[6] = { 0 };
	int fd = connect_loopback(false, r->port);

	if (fd >= 0) {
		send(fd, "hello", 5, 0);
		r->ok = recv(fd, buf, 5, MSG_WAITALL) == 5 &&
		    strcmp(buf, "hello") == 0;
		close(fd);
	}
	r->done = true;
	return NULL;
}

static bool
rt_done(void *arg)
{
	return ((struct roundtrip *)arg)->done;
}

static bool
roundtrip(struct tloop *t, int port)
{
	struct roundtrip r = { .port = port };
	pthread_t th;

	pthread_create(&th, NULL, roundtrip_main, &r);
	cr_assert(tloop_run_pred(t, rt_done, &r, 10));
	pthread_join(th, NULL);
	return r.ok;
}

Test(tcpserver, stop_keeps_live_connections, .timeout = 30)
{
	struct tloop t;
	struct tcpserver *srv;
	struct echo e = { 0 };
	char err[256], buf[8];

	tloop_init(&t);
	srv = tcpserver_new(&t.sl, "echo", NULL, NULL, echo_handle, &e);
	cr_assert_not_null(srv);
	cr_assert_eq(tcpserver_bind(srv, "127.0.0.1", 0, AF_UNSPEC,
	    NETUTIL_DEFAULT_BACKLOG, false, err, sizeof(err)), 0, "%s", err);
	tcpserver_start(srv);
	int port = tcpserver_port(srv);
	cr_assert(roundtrip(&t, port));
	int live = connect_loopback(false, port);
	cr_assert_geq(live, 0);
	tloop_run_for(&t, 0.1);
	cr_assert_eq(e.handled, 2);
	tcpserver_stop(srv);
	/* New connections are refused... */
	cr_assert_eq(connect_loopback(false, port), -1);
	cr_assert_eq(errno, ECONNREFUSED);
	/* ...the live one carries on. */
	send(live, "abc", 3, 0);
	tloop_run_for(&t, 0.1);
	cr_assert_eq(recv(live, buf, 3, MSG_WAITALL), 3);
	cr_assert_eq(memcmp(buf, "abc", 3), 0);
	close(live);
	tloop_run_for(&t, 0.1);
	tcpserver_free(srv);
	cr_assert_eq(t.sl.live, 0);
	tloop_destroy(&t);
}

/* ---- bind, fork(2, max_restarts), start: supervised workers ---- */

static void
pid_handle(struct stream *s, const struct sockaddr *sa, socklen_t len,
    void *arg)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	(void)sa;
	(void)len;
	(void)arg;
	stream_write(s, buf, (size_t)n, NULL);
	stream_end(s);
}

/* The supervisor process: bind, report the port, fork 2 workers. */
static void
supervisor(int portpipe, int max_restarts)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct stream_loop sl;
	struct tcpserver *srv;
	char err[256];

	log_set_level(LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	stream_loop_init(&sl, loop);
	srv = tcpserver_new(&sl, "pids", NULL, NULL, pid_handle, NULL);
	if (srv == NULL || tcpserver_bind(srv, "127.0.0.1", 0, AF_INET, 128,
	    false, err, sizeof(err)) < 0)
		_exit(3);
	int port = tcpserver_port(srv);
	if (write(portpipe, &port, sizeof(port)) != sizeof(port))
		_exit(3);
	close(portpipe);
	/* As main does: bind, fork the workers, accept in each. */
	process_fork(2, max_restarts);
	ev_loop_fork(loop);
	tcpserver_start(srv);
	ev_run(loop, 0);
	_exit(0);
}

/* The supervisor's children, from /proc. */
static int
children_of(pid_t parent, pid_t *out, int max)
{
	char path[64], buf[256];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", parent,
	    parent);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	if (fgets(buf, sizeof(buf), f) != NULL) {
		char *save = NULL;
		for (char *t = strtok_r(buf, " \n", &save); t && n < max;
		    t = strtok_r(NULL, " \n", &save))
			out[n++] = (pid_t)atol(t);
	}
	fclose(f);
	return n;
}

static long
ask_pid(int port)
{
	char buf[32] = { 0 };
	int fd = connect_loopback(false, port);

	if (fd < 0)
		return -1;
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_WAITALL);
	close(fd);
	return n > 0 ? atol(buf) : -1;
}

static bool
wait_children(pid_t sup, int want, pid_t *kids, const pid_t *not_this)
{
	for (int i = 0; i < 200; i++) {
		int n = children_of(sup, kids, 4);
		bool fresh = n == want;
		for (int k = 0; k < n && not_this; k++)
			if (kids[k] == *not_this)
				fresh = false;
		if (fresh)
			return true;
		usleep(50 * 1000);
	}
	return false;
}

Test(tcpserver, workers_restarted_until_limit, .timeout = 60)
{
	int pp[2];
	int port;
	pid_t kids[4];

	cr_assert_eq(pipe(pp), 0);
	pid_t sup = fork();
	cr_assert_geq(sup, 0);
	if (sup == 0) {
		close(pp[0]);
		supervisor(pp[1], 2);
	}
	close(pp[1]);
	cr_assert_eq(read(pp[0], &port, sizeof(port)), (ssize_t)sizeof(port));
	close(pp[0]);
	cr_assert(wait_children(sup, 2, kids, NULL), "2 workers not seen");
	/* Both workers serve. */
	long pid = ask_pid(port);
	cr_assert(pid == kids[0] || pid == kids[1], "answer from %ld", pid);

	/* Two kills are restarted (max_restarts = 2)... */
	for (int round = 0; round < 2; round++) {
		pid_t victim = kids[0];
		cr_assert_eq(kill(victim, SIGKILL), 0);
		cr_assert(wait_children(sup, 2, kids, &victim),
		    "worker %d not replaced (round %d)", victim, round);
		cr_assert_gt(ask_pid(port), 0, "no service after restart");
	}
	/* ...the third exceeds the limit: the supervisor gives up. */
	pid_t left[4];
	int nleft = children_of(sup, left, 4);
	cr_assert_eq(kill(kids[0], SIGKILL), 0);
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = waitpid(sup, &status, WNOHANG);
		if (r == 0)
			usleep(50 * 1000);
	}
	cr_assert_eq(r, sup, "supervisor still running");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0,
	    "supervisor exit status %d", status);
	/* It took the remaining worker down with it. */
	for (int k = 0; k < nleft; k++) {
		if (left[k] == kids[0])
			continue;
		bool gone = false;
		for (int i = 0; i < 100 && !gone; i++) {
			gone = kill(left[k], 0) < 0 && errno == ESRCH;
			if (!gone)
				usleep(50 * 1000);
		}
		cr_assert(gone, "worker %d survived the supervisor", left[k]);
	}
}

/* Workers that exit 0 are not restarted; the supervisor then exits 0. */
Test(tcpserver, clean_worker_exit_not_restarted, .timeout = 30)
{
	pid_t sup = fork();

	cr_assert_geq(sup, 0);
	if (sup == 0) {
		log_set_level(LOG_ERROR);
		int id = process_fork(2, 5);
		(void)id;
		_exit(0);
	}
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = waitpid(sup, &status, WNOHANG);
		if (r == 0)
			usleep(50 * 1000);
	}
	cr_assert_eq(r, sup);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "status %d", status);
}
