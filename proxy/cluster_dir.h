/*
 * cluster_dir: the cluster's directory -- which node holds which uuid --
 * in a JetStream key-value bucket, made on a thread of its own.
 *
 * Every JetStream call of nats.c blocks its caller until the answer comes,
 * and with the event-loop adapter only the loop's thread reads the
 * socket: made on the loop, such a call would freeze it for the whole
 * JetStream wait and its request would leave only afterwards.  So the
 * loop submits requests (a mutex and a condition: a few a second, not the
 * hot path), this thread makes the calls one at a time, in order, and
 * each finished request comes back to the loop through a lock-free ring
 * (handoff.h), where its callback runs.
 *
 * The bucket: R3 (it survives a server), History 1, no TTL (in 2.9 an
 * expiry is silent to watchers, and per bucket).  The thread binds to it,
 * or creates it (one replica if the NATS cluster has fewer than three
 * JetStream servers, with a warning), then reads from it until its
 * stream answers: a bucket another node created a moment ago answers
 * "OK" to the create before it takes writes, and a write then waits out
 * the whole JetStream wait (5 s measured; the notes' "bucket-creation
 * race").  Until it is open, requests wait; `opened` runs on the loop
 * once it is.  Every call waits 1 s at most, and the connection fails
 * requests at once when it is lost, so a dead server costs little.
 *
 * The operations, on one key (a uuid's token), each a single JetStream
 * request with the answer sorted:
 *   DIR_GET     the last entry, read from the stream's leader (the
 *               stream's MSG.GET, not the KV's direct get, which any
 *               replica may answer, stale): consistent with every write
 *               acknowledged before it.  A delete marker reads as
 *               `deleted`, with its revision;
 *   DIR_WRITE   a value, if the key's last revision is still `rev` (0:
 *               the key never had one): compare-and-swap, which is also
 *               the atomic create;
 *   DIR_DELETE  a delete marker, if the last revision is still `rev`
 *               (kvStore_Delete has no revision: a stale node would
 *               delete a fresh claim).
 * Results: DIR_OK, DIR_CONFLICT (the revision moved: someone else wrote),
 * DIR_NOT_FOUND (GET), DIR_AMBIGUOUS (timeout or lost connection: the
 * write may have landed; read before deciding), DIR_FAILED (it did not
 * land: no responder, JetStream error, not open).
 */
#ifndef FERRY_CLUSTER_DIR_H
#define FERRY_CLUSTER_DIR_H

#include <ev.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dir_op { DIR_GET, DIR_WRITE, DIR_DELETE };
enum dir_result { DIR_OK, DIR_CONFLICT, DIR_NOT_FOUND, DIR_AMBIGUOUS,
    DIR_FAILED };

#define DIR_KEY_MAX 64

struct dir_req;
typedef void (*dir_done_cb)(struct dir_req *r);

struct dir_req {
	enum dir_op op;
	char key[DIR_KEY_MAX];
	/* WRITE: the value (the caller's until done); GET: the value read
	 * (malloc'd, the caller frees it), NULL when none or deleted. */
	uint8_t *value;
	size_t len;
	/* WRITE/DELETE: the revision expected; then the new one.  GET: the
	 * last entry's, 0 when none. */
	uint64_t rev;
	bool deleted;			/* GET: the last entry is a marker */
	enum dir_result result;
	char error[160];		/* the library's reason, if not OK */
	dir_done_cb done;		/* on the loop's thread */
	void *arg;
	struct dir_req *next;		/* the queue's */
};

struct cluster_dir;

/*
 * Starts the thread on connection `nc` (connected or not: it waits), for
 * the bucket `bucket`; `opened(arg)` runs on `loop` once the bucket takes
 * requests.  NULL when no thread or memory could be had.
 */
struct cluster_dir *cluster_dir_start(natsConnection *nc,
    struct ev_loop *loop, const char *bucket,
    void (*opened)(void *arg, int replicas), void *arg);
/* From the loop's thread: r comes back through r->done. */
void cluster_dir_submit(struct cluster_dir *d, struct dir_req *r);
/* Whether the bucket is open. */
bool cluster_dir_open(const struct cluster_dir *d);
/* Requests queued or being made. */
size_t cluster_dir_busy(const struct cluster_dir *d);
/*
 * Stops the thread once the queued requests are made (their callbacks
 * run); the loop must keep running until cluster_dir_stopped().
 */
void cluster_dir_stop(struct cluster_dir *d);
bool cluster_dir_stopped(struct cluster_dir *d);
/* Joins the thread and frees everything (after it stopped, or at exit). */
void cluster_dir_free(struct cluster_dir *d);

/* The stream and subject behind a bucket's key (for tests and tools). */
void cluster_dir_subject(const char *bucket, const char *key, char *out,
    size_t len);

#endif
