/*
 * SIGHUP reloads the whole file: listeners added, changed and removed take
 * effect; one that did not change keeps its socket and its connections; a
 * removed one drains; a bad file changes nothing.  Real binary, loopback,
 * port 0, echo backends that are threads of the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"
#include "relayclient.h"

static struct ferry_proc fp;
static struct backend be, be2;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
	if (be.port > 0)
		backend_stop(&be);
	if (be2.port > 0)
		backend_stop(&be2);
	be.port = be2.port = 0;
}

static void
rewrite(const char *conf)
{
	FILE *f = fopen(fp.conf, "w");

	cr_assert_not_null(f);
	cr_assert_eq(fputs(conf, f) >= 0, true);
	cr_assert_eq(fclose(f), 0);
}

/* The port the log names for listener `name` (the latest line), or -1. */
static int
logged_port(const char *name)
{
	char *log = ferry_log_read(&fp), tag[80];
	int port = -1;

	snprintf(tag, sizeof(tag), ") [%s]", name);
	for (char *p = log; (p = strstr(p, tag)) != NULL; p++) {
		char *c = p;
		while (c > log && *c != ':' && *c != '\n')
			c--;
		if (*c == ':')
			port = atoi(c + 1);
	}
	free(log);
	return port;
}

static void
open_peer(struct peer *p, int port)
{
	int fd = connect_loopback(false, port);

	cr_assert_geq(fd, 0, "connect to %d: %s", port, strerror(errno));
	peer_plain(p, fd);
}

/* Whether a connection to port is refused (nothing listens). */
static bool
refused(int port)
{
	int fd = connect_loopback(false, port);

	if (fd >= 0)
		close(fd);
	return fd < 0;
}

#define FWD(name, port) "[" name "]\nmode = forward\nbind = 127.0.0.1:0\n" \
	"backend = 127.0.0.1:%d\n"

Test(reload, listeners_added_changed_removed, .timeout = 60,
    .fini = cleanup)
{
	struct peer keep, gone, chg;
	char conf[1024];

	backend_start(&be, false, backend_echo, NULL);
	backend_start(&be2, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), FWD("keep", 0) FWD("gone", 0)
	    FWD("chg", 0), be.port, be.port, be.port);
	ferry_start(&fp, conf);
	int pkeep = ferry_port(&fp, "keep"), pgone = ferry_port(&fp, "gone");
	int pchg = ferry_port(&fp, "chg");
	open_peer(&keep, pkeep);
	open_peer(&gone, pgone);
	open_peer(&chg, pchg);
	ping(&keep, "keep before");
	ping(&gone, "gone before");
	ping(&chg, "chg before");
	cr_assert_eq(be2.accepted, 0);

	/*
	 * [gone] removed, [chg] to the second backend on the port it has,
	 * [new] added: before, an added listener was silently ignored.
	 */
	snprintf(conf, sizeof(conf), FWD("keep", 0)
	    "[chg]\nmode = forward\nbind = 127.0.0.1:%d\n"
	    "backend = 127.0.0.1:%d\n" FWD("new", 0), be.port, pchg,
	    be2.port, be2.port);
	rewrite(conf);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "reload: 3 listeners (1 added, 1 "
	    "changed, 1 removed)", 1, 10), "no reload line");
	if (ferry_log_count(&fp, "[gone] removed: draining 1 connections")
	    != 1)
		ferry_log_dump(&fp);
	cr_assert_eq(ferry_log_count(&fp, "[gone] removed: draining 1 "
	    "connections"), 1);

	/* Live connections carry on, on every kind of listener. */
	ping(&keep, "keep after");
	ping(&gone, "gone after: draining");
	ping(&chg, "chg after: old settings");
	/* The added listener serves. */
	int pnew = logged_port("new");
	cr_assert_gt(pnew, 0);
	struct peer p;
	open_peer(&p, pnew);
	ping(&p, "new");
	peer_close(&p);
	/* The changed one kept its port and goes to its new backend. */
	open_peer(&p, pchg);
	ping(&p, "chg new");
	peer_close(&p);
	cr_assert_eq(be2.accepted, 2);
	/* The removed one accepts nothing new. */
	cr_assert(refused(pgone));
	open_peer(&p, pkeep);
	ping(&p, "keep new");
	peer_close(&p);
	peer_close(&keep);
	peer_close(&gone);
	peer_close(&chg);
	/* Drained, the retired listeners are freed (at the next reload). */
	for (int i = 0; i < 100 && ferry_log_count(&fp, "drained: freed") < 2;
	    i++) {
		ferry_signal(&fp, SIGHUP);
		ferry_log_wait(&fp, "reload: 3 listeners", i + 2, 10);
	}
	cr_assert_eq(ferry_log_count(&fp, "[gone] (retired by a reload) "
	    "drained: freed"), 1);
	cr_assert_eq(ferry_log_count(&fp, "[chg] (retired by a reload) "
	    "drained: freed"), 1);
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

Test(reload, bad_file_changes_nothing, .timeout = 60, .fini = cleanup)
{
	struct peer p;
	char conf[1024];

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), FWD("web", 0), be.port);
	ferry_start(&fp, conf);
	int port = ferry_port(&fp, "web");

	/* A new listener, and a mistake further down: neither applies. */
	snprintf(conf, sizeof(conf), FWD("web", 0) FWD("more", 0)
	    "high_water = lots\n", be.port, be.port);
	rewrite(conf);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current", 1, 10));
	cr_assert_eq(ferry_log_count(&fp, "ferry.conf:9: [more] high_water: "
	    "'lots' is not a size"), 1);
	cr_assert_eq(logged_port("more"), -1);
	open_peer(&p, port);
	ping(&p, "still serving");
	peer_close(&p);

	/* A listener on an address it cannot have: nothing applies either. */
	snprintf(conf, sizeof(conf), FWD("web", 0)
	    "[clash]\nmode = forward\nbind = 127.0.0.1:%d\n"
	    "backend = 127.0.0.1:%d\n", be.port, be.port, be.port);
	rewrite(conf);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "keeping the current", 2, 10));
	cr_assert_eq(ferry_log_count(&fp, "[clash] bind:"), 1);
	open_peer(&p, port);
	ping(&p, "still serving");
	peer_close(&p);
}

/*
 * With workers, a reload that changes the listeners starts a new
 * generation on the same sockets (the old one drains): the added
 * listener is served, the old port never stops answering.
 */
Test(reload, workers_follow, .timeout = 60, .fini = cleanup)
{
	struct peer live, p;
	char conf[1024];

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n" FWD("web", 0),
	    be.port);
	ferry_start_args(&fp, conf, 2, NULL);
	int port = ferry_port(&fp, "web");
	open_peer(&live, port);
	ping(&live, "before");

	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n"
	    "drain_timeout = 30\n" FWD("web", 0) FWD("added", 0), be.port,
	    be.port);
	rewrite(conf);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "ready:", 4, 15), "no new workers");
	cr_assert(ferry_log_wait(&fp, "upgrade: the new ferry is ready", 1,
	    10));
	int padded = logged_port("added");
	cr_assert_gt(padded, 0);
	open_peer(&p, padded);
	ping(&p, "added");
	peer_close(&p);
	open_peer(&p, port);
	ping(&p, "same port");
	peer_close(&p);
	/* The old generation drains: the live connection is served. */
	ping(&live, "draining");
	peer_close(&live);
	cr_assert(ferry_wait_exit(&fp, 15), "the old supervisor stayed");
	/* The new supervisor: the one whose workers log now; stop it. */
	char *log = ferry_log_read(&fp), *s = strstr(log, "upgrade: started");
	cr_assert_not_null(s);
	s = strstr(s, "(pid ");
	pid_t npid = (pid_t)atol(s + 5);
	free(log);
	cr_assert_gt(npid, 1);
	cr_assert_eq(kill(npid, SIGTERM), 0);
	for (int i = 0; i < 500 && proc_alive(npid); i++)
		usleep(10 * 1000);
	cr_assert(!proc_alive(npid));
}

/*
 * A [ferry] key a process cannot take in place (here workers = 1 -> 2):
 * a new ferry on the same sockets, as an upgrade of the same binary.
 */
Test(reload, process_keys_start_a_new_ferry, .timeout = 60,
    .fini = cleanup)
{
	struct peer live, p;
	char conf[1024];

	backend_start(&be, false, backend_echo, NULL);
	snprintf(conf, sizeof(conf), FWD("web", 0), be.port);
	ferry_start(&fp, conf);
	int port = ferry_port(&fp, "web");
	open_peer(&live, port);
	ping(&live, "before");

	snprintf(conf, sizeof(conf), "[ferry]\nworkers = 2\n" FWD("web", 0),
	    be.port);
	rewrite(conf);
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "reload: [ferry] workers changed", 1,
	    10));
	cr_assert(ferry_log_wait(&fp, "ready: worker 1", 1, 15));
	cr_assert(ferry_log_wait(&fp, "upgrade: the new ferry is ready", 1,
	    10));
	open_peer(&p, port);
	ping(&p, "same port, new ferry");
	peer_close(&p);
	ping(&live, "draining in the old one");
	peer_close(&live);
	cr_assert(ferry_wait_exit(&fp, 15), "the old ferry stayed");
	char *log = ferry_log_read(&fp), *s = strstr(log, "upgrade: started");
	cr_assert_not_null(s);
	s = strstr(s, "(pid ");
	pid_t npid = (pid_t)atol(s + 5);
	free(log);
	cr_assert_gt(npid, 1);
	cr_assert_eq(kill(npid, SIGTERM), 0);
	for (int i = 0; i < 500 && proc_alive(npid); i++)
		usleep(10 * 1000);
	cr_assert(!proc_alive(npid));
}

/*
 * Relay listeners: a pair on an unchanged listener keeps flowing through
 * a reload that adds another relay listener, and a consumer of the new
 * one meets the producer of the old one (one uuid namespace).
 */
Test(reload, relay_pair_flows_and_an_added_listener_shares_uuids,
    .timeout = 60, .fini = cleanup)
{
	struct rclient p, c, c2;
	bool torn = false;

	ferry_start(&fp, "[devices]\nmode = relay\nbind = 127.0.0.1:0\n");
	int port = ferry_port(&fp, "devices");
	cr_assert_eq(rc_producer(&p, false, port, "reload-1", "a,b"), RC_OK);
	cr_assert_eq(rc_consumer(&c, false, port, "reload-1", 0), RC_OK);
	cr_assert(rc_send_frames(&p, 0, 10));
	cr_assert_eq(rc_read_frames(&c, 10, NULL, &torn), 10);

	rewrite("[devices]\nmode = relay\nbind = 127.0.0.1:0\n"
	    "[more]\nmode = relay\nbind = 127.0.0.1:0\n");
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "reload: 2 listeners (1 added, 0 "
	    "changed, 0 removed)", 1, 10));
	cr_assert_eq(ferry_port(&fp, "devices"), port);
	int more = logged_port("more");
	cr_assert_gt(more, 0);
	cr_assert_eq(rc_consumer(&c2, false, more, "reload-1", 0), RC_OK);
	cr_assert(rc_send_frames(&p, 10, 10));
	cr_assert_eq(rc_read_frames(&c, 10, NULL, &torn), 10);
	cr_assert_eq(rc_read_frames(&c2, 10, NULL, &torn), 10);
	cr_assert(!torn);

	/* [more] removed: its consumer drains, still served. */
	rewrite("[devices]\nmode = relay\nbind = 127.0.0.1:0\n");
	ferry_signal(&fp, SIGHUP);
	cr_assert(ferry_log_wait(&fp, "[more] removed: draining 1 "
	    "connections", 1, 10));
	cr_assert(rc_send_frames(&p, 20, 10));
	cr_assert_eq(rc_read_frames(&c, 10, NULL, &torn), 10);
	cr_assert_eq(rc_read_frames(&c2, 10, NULL, &torn), 10);
	cr_assert(!torn);
	rc_free(&c2);
	/* Its last consumer gone, the removed listener is freed. */
	for (int i = 0; i < 100 && ferry_log_count(&fp, "[more] (retired by "
	    "a reload) drained: freed") == 0; i++) {
		ferry_signal(&fp, SIGHUP);
		ferry_log_wait(&fp, "reload: 1 listeners", i + 2, 10);
	}
	cr_assert_eq(ferry_log_count(&fp, "[more] (retired by a reload) "
	    "drained: freed"), 1);
	/* The pair on [devices] flows on. */
	cr_assert(rc_send_frames(&p, 30, 10));
	cr_assert_eq(rc_read_frames(&c, 10, NULL, &torn), 10);
	rc_free(&c);
	rc_free(&p);
	int status = ferry_stop(&fp);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
