/*
 * natscluster: a NATS cluster of nats-server processes on loopback, for
 * the cluster tests.
 *
 * nc_start() picks free ports (bound to port 0 and read back), makes a
 * temporary directory for the JetStream stores and logs, starts n servers
 * (n > 1: routes between them, each with its own name, as JetStream
 * clustering needs), and waits until the cluster is ready: every
 * server's /routez shows n - 1 routes, and with JetStream every /jsz
 * knows a meta leader.  Servers get PR_SET_PDEATHSIG, so a test that
 * dies takes them along; every kill is by a PID started here.  Every wait
 * is bounded; a failure prints the tail of the servers' logs.
 */
#ifndef FERRY_TEST_NATSCLUSTER_H
#define FERRY_TEST_NATSCLUSTER_H

#include <stdbool.h>
#include <sys/types.h>

#define NC_MAX 3

struct nats_cluster {
	int n;
	bool js;
	char dir[128];
	pid_t pid[NC_MAX];
	int port[NC_MAX];		/* clients */
	int mon[NC_MAX];		/* monitoring (HTTP) */
	int route[NC_MAX];		/* cluster routes */
	char urls[NC_MAX * 40];		/* "nats://127.0.0.1:P,..." */
};

/* The nats-server binary: $NATS_SERVER, else nats-server on the PATH. */
const char *nc_server_bin(void);

/* Starts n (1..NC_MAX) servers and waits for them (fails the test). */
void nc_start(struct nats_cluster *nc, int n, bool jetstream);
/*
 * The run's shared 3-server cluster with JetStream, started by the first
 * test that asks (a process of its own keeps it, and stops it when the
 * test runner exits).  Tests that share it never kill its servers, and
 * keep apart by their own subjects (a prefix each).
 */
void nc_shared(struct nats_cluster *nc);
/* Waits up to `timeout` s for routes (and a JetStream leader). */
bool nc_ready(const struct nats_cluster *nc, double timeout);
/* SIGKILL server i. */
void nc_kill(struct nats_cluster *nc, int i);
/* Starts server i again (same ports, same store). */
void nc_restart(struct nats_cluster *nc, int i);
/* Stops every server still running and removes the directory. */
void nc_stop(struct nats_cluster *nc);
/* "nats://127.0.0.1:PORT" of server i. */
void nc_url(const struct nats_cluster *nc, int i, char *out, size_t len);
/* A monitoring counter of server i (e.g. "/varz", "\"out_msgs\""), or -1. */
long long nc_stat(const struct nats_cluster *nc, int i, const char *path,
    const char *field);
/* Prints the tail of every server's log (on failures). */
void nc_dump(const struct nats_cluster *nc);

#endif
