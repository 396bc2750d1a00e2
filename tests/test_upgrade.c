/*
 * Binary upgrade: SIGUSR2 (or `ferry --upgrade`) starts the binary anew on
 * the same listening sockets, and the old process drains once the new one
 * is ready.  Under load, no connection is refused or reset.  Real binary,
 * loopback, port 0, an echo backend that is a thread of the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;
static struct backend be;
static char pidfile[256];

static pid_t
read_pidfile(void)
{
	FILE *f = fopen(pidfile, "r");
	long pid = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t)pid;
}

/* The ferry the upgrade started is ours to stop (by its pid). */
static void
cleanup(void)
{
	pid_t pid = read_pidfile();

	if (pid > 1 && pid != fp.pid && proc_alive(pid)) {
		kill(pid, SIGTERM);
		for (int i = 0; i < 500 && proc_alive(pid); i++)
			usleep(10 * 1000);
	}
	ferry_cleanup(&fp);
	if (pidfile[0] != '\0') {
		char *slash = strrchr(pidfile, '/');
		unlink(pidfile);
		*slash = '\0';
		rmdir(pidfile);
		pidfile[0] = '\0';
	}
	if (be.port > 0)
		backend_stop(&be);
	be.port = 0;
}

static void
start(int workers)
{
	char conf[1024];
	char dir[] = "/tmp/ferry-upgrade-XXXXXX";

	cr_assert_not_null(mkdtemp(dir));
	snprintf(pidfile, sizeof(pidfile), "%s/ferry.pid", dir);
	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = %d\npid_file = %s\n"
	    "[web]\nmode = forward\nbind = 127.0.0.1:0\n"
	    "backend = 127.0.0.1:%d\n", workers, pidfile, be.port);
	ferry_start_args(&fp, conf, workers, NULL);
	for (int i = 0; i < 500 && read_pidfile() != fp.pid; i++)
		usleep(10 * 1000);
	cr_assert_eq(read_pidfile(), fp.pid, "pid_file not written");
}

/* ---- load: connect, echo, close, again ---- */

struct load {
	int port;
	atomic_bool stop;
	atomic_int done, refused, reset, other;
};

static void *
load_thread(void *arg)
{
	struct load *l = arg;
	char msg[64], buf[64];

	while (!atomic_load(&l->stop)) {
		int fd = connect_loopback(false, l->port);
		size_t n;

		if (fd < 0) {
			if (errno == ECONNREFUSED)
				atomic_fetch_add(&l->refused, 1);
			else
				atomic_fetch_add(&l->other, 1);
			continue;
		}
		n = (size_t)snprintf(msg, sizeof(msg), "hello %d",
		    atomic_load(&l->done));
		size_t got = 0;
		bool ok = send(fd, msg, n, MSG_NOSIGNAL) == (ssize_t)n;
		while (ok && got < n) {
			ssize_t r = recv(fd, buf + got, n - got, 0);
			if (r <= 0) {
				if (r < 0 && errno == ECONNRESET)
					atomic_fetch_add(&l->reset, 1);
				else
					atomic_fetch_add(&l->other, 1);
				ok = false;
				break;
			}
			got += (size_t)r;
		}
		if (ok && memcmp(buf, msg, n) != 0) {
			atomic_fetch_add(&l->other, 1);
			ok = false;
		}
		if (ok)
			atomic_fetch_add(&l->done, 1);
		close(fd);
	}
	return NULL;
}

static void
wait_done(struct load *l, int n)
{
	for (int i = 0; i < 3000 && atomic_load(&l->done) < n; i++)
		usleep(10 * 1000);
	cr_assert_geq(atomic_load(&l->done), n, "load stalled at %d",
	    atomic_load(&l->done));
}

static void
upgrade_under_load(int workers)
{
	struct load l = { .port = 0 };
	pthread_t t[4];
	pid_t old, npid;

	start(workers);
	old = fp.pid;
	l.port = ferry_port(&fp, "web");
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, load_thread, &l), 0);
	wait_done(&l, 200);
	ferry_signal(&fp, SIGUSR2);
	/* The old one exits once the new one serves and it has drained. */
	cr_assert(ferry_wait_exit(&fp, 30), "the old ferry did not exit");
	int base = atomic_load(&l.done);
	wait_done(&l, base + 200);
	atomic_store(&l.stop, true);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	npid = read_pidfile();
	cr_assert(npid > 1 && npid != old, "pid_file names %ld", (long)npid);
	cr_assert(proc_alive(npid));
	cr_assert(WIFEXITED(fp.status) && WEXITSTATUS(fp.status) == 0,
	    "old ferry: status %d", fp.status);
	cr_assert_eq(ferry_log_count(&fp, "upgrade: the new ferry is ready"),
	    1);
	cr_assert_eq(atomic_load(&l.refused), 0, "refused");
	cr_assert_eq(atomic_load(&l.reset), 0, "reset");
	cr_assert_eq(atomic_load(&l.other), 0, "other failures");
	cr_log_info("%d connections, none refused or reset",
	    atomic_load(&l.done));
}

Test(upgrade, sigusr2_under_load_refuses_nothing, .timeout = 120,
    .fini = cleanup)
{
	upgrade_under_load(1);
}

Test(upgrade, sigusr2_with_workers_under_load, .timeout = 120,
    .fini = cleanup)
{
	upgrade_under_load(2);
}

Test(upgrade, command_and_failed_upgrade, .timeout = 120, .fini = cleanup)
{
	char out[4096], conf[1024];
	const char *argv[] = { "--upgrade", "-c", NULL, NULL };
	struct peer p;

	start(1);
	int port = ferry_port(&fp, "web");
	argv[2] = fp.conf;

	/* A new binary that cannot start (here: a broken file): carry on. */
	snprintf(conf, sizeof(conf), "[ferry]\npid_file = %s\n[web]\n"
	    "mode = forward\nbind = 127.0.0.1:0\nbackend = nowhere\n",
	    pidfile);
	FILE *f = fopen(fp.conf, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	fclose(f);
	ferry_signal(&fp, SIGUSR2);
	cr_assert(ferry_log_wait(&fp, "upgrade: the new ferry exited with "
	    "status 2", 1, 20));
	cr_assert(ferry_log_wait(&fp, "carrying on", 1, 5));
	peer_plain(&p, connect_loopback(false, port));
	cr_assert_eq(peer_write(&p, "x", 1), 1);
	char c;
	cr_assert_eq(peer_read_exact(&p, &c, 1), 1);
	peer_close(&p);
	cr_assert_eq(read_pidfile(), fp.pid);

	/* ferry --upgrade, the file good again. */
	snprintf(conf, sizeof(conf), "[ferry]\npid_file = %s\n[web]\n"
	    "mode = forward\nbind = 127.0.0.1:0\nbackend = 127.0.0.1:%d\n",
	    pidfile, be.port);
	f = fopen(fp.conf, "w");
	cr_assert_not_null(f);
	fputs(conf, f);
	fclose(f);
	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 0, "%s", out);
	cr_assert_not_null(strstr(out, "upgraded: pid"), "%s", out);
	cr_assert(ferry_wait_exit(&fp, 30));
	cr_assert_neq(read_pidfile(), fp.pid);
	/* The same port, served by the new ferry. */
	peer_plain(&p, connect_loopback(false, port));
	cr_assert_eq(peer_write(&p, "y", 1), 1);
	cr_assert_eq(peer_read_exact(&p, &c, 1), 1);
	cr_assert_eq(c, 'y');
	peer_close(&p);
}

Test(upgrade, without_pid_file, .timeout = 30)
{
	char out[4096];
	const char *argv[] = { "--upgrade", NULL };

	cr_assert_eq(ferry_run(argv, out, sizeof(out)), 2, "%s", out);
	cr_assert_not_null(strstr(out, "no pid_file"), "%s", out);
}
