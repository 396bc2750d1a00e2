/* cluster_dir: see cluster_dir.h. */
#define _GNU_SOURCE
#include "cluster_dir.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handoff.h"
#include "log.h"

/* JetStream's code for a failed compare-and-swap ("wrong last sequence"). */
#define JS_WRONG_LAST_SEQUENCE 10071
#define DIR_WAIT_MS 1000		/* every call, at most */
#define PROBE_WAIT_MS 250		/* a read while the bucket settles */
#define OPEN_RETRY_MS 500		/* between attempts to open */

struct cluster_dir {
	natsConnection *nc;
	char bucket[80];
	char stream[96];
	struct handoff ring;		/* finished requests, to the loop */
	pthread_t thread;
	bool thread_made;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dir_req *head, *tail;	/* queued, under mu */
	bool stop;			/* under mu */
	atomic_size_t busy;		/* queued or being made */
	atomic_bool open;
	bool stopped;			/* the loop saw the thread's last post */
	jsCtx *js;			/* the thread's */
	int replicas;
	void (*opened)(void *arg, int replicas);
	void *arg;
	/* Marks posted through the ring besides requests. */
	char mark_open, mark_stopped;
};

void
cluster_dir_subject(const char *bucket, const char *key, char *out,
    size_t len)
{
	snprintf(out, len, "$KV.%s.%s", bucket, key);
}

/* Hands r (or a mark) to the loop; the ring holds every request. */
static void
post(struct cluster_dir *d, void *item)
{
	while (handoff_push(&d->ring, item) != 0)
		sched_yield();
}

static void
on_ring(void *item, void *arg)
{
	struct cluster_dir *d = arg;

	if (item == &d->mark_open) {
		d->opened(d->arg, d->replicas);
		return;
	}
	if (item == &d->mark_stopped) {
		d->stopped = true;
		return;
	}
	struct dir_req *r = item;
	atomic_fetch_sub(&d->busy, 1);
	r->done(r);
}

/* The library's reason for the last failure on this thread. */
static void
reason(struct dir_req *r, natsStatus s)
{
	snprintf(r->error, sizeof(r->error), "%s (%s)", natsStatus_GetText(s),
	    nats_GetLastError(NULL));
}

/* Sorts a failed write: did it land, or could it have? */
static enum dir_result
write_failure(natsStatus s, jsErrCode je)
{
	if (je == JS_WRONG_LAST_SEQUENCE)
		return DIR_CONFLICT;
	switch (s) {
	case NATS_TIMEOUT:
	case NATS_CONNECTION_DISCONNECTED:
	case NATS_CONNECTION_CLOSED:
		return DIR_AMBIGUOUS;
	default:
		return DIR_FAILED;
	}
}

static void
do_get(struct cluster_dir *d, struct dir_req *r)
{
	char subject[DIR_KEY_MAX + 96];
	const char *op = NULL;
	natsMsg *m = NULL;
	jsErrCode je = 0;
	natsStatus s;

	cluster_dir_subject(d->bucket, r->key, subject, sizeof(subject));
	free(r->value);
	r->value = NULL;
	r->len = 0;
	r->rev = 0;
	r->deleted = false;
	s = js_GetLastMsg(&m, d->js, d->stream, subject, NULL, &je);
	if (s == NATS_NOT_FOUND) {
		r->result = DIR_NOT_FOUND;
		return;
	}
	if (s != NATS_OK) {
		reason(r, s);
		r->result = s == NATS_TIMEOUT ||
		    s == NATS_CONNECTION_DISCONNECTED ? DIR_AMBIGUOUS :
		    DIR_FAILED;
		return;
	}
	r->rev = natsMsg_GetSequence(m);
	if (natsMsgHeader_Get(m, "KV-Operation", &op) == NATS_OK &&
	    op != NULL && (!strcmp(op, "DEL") || !strcmp(op, "PURGE"))) {
		r->deleted = true;
	} else if (natsMsg_GetDataLength(m) > 0) {
		r->len = (size_t)natsMsg_GetDataLength(m);
		if ((r->value = malloc(r->len)) == NULL) {
			r->len = 0;
			snprintf(r->error, sizeof(r->error), "out of memory");
			r->result = DIR_FAILED;
			natsMsg_Destroy(m);
			return;
		}
		memcpy(r->value, natsMsg_GetData(m), r->len);
	}
	natsMsg_Destroy(m);
	r->result = DIR_OK;
}

/* A value (WRITE) or a delete marker (DELETE) if the revision holds. */
static void
do_put(struct cluster_dir *d, struct dir_req *r)
{
	char subject[DIR_KEY_MAX + 96];
	jsPubOptions po;
	jsPubAck *pa = NULL;
	jsErrCode je = 0;
	natsMsg *m = NULL;
	natsStatus s;

	cluster_dir_subject(d->bucket, r->key, subject, sizeof(subject));
	s = natsMsg_Create(&m, subject, NULL, r->op == DIR_WRITE ?
	    (const char *)r->value : NULL, r->op == DIR_WRITE ? (int)r->len :
	    0);
	if (s == NATS_OK && r->op == DIR_DELETE)
		s = natsMsgHeader_Set(m, "KV-Operation", "DEL");
	jsPubOptions_Init(&po);
	if (r->rev == 0)
		po.ExpectNoMessage = true;
	else
		po.ExpectLastSubjectSeq = r->rev;
	if (s == NATS_OK)
		s = js_PublishMsg(&pa, d->js, m, &po, &je);
	if (s == NATS_OK) {
		r->rev = pa->Sequence;
		r->result = DIR_OK;
	} else {
		reason(r, s);
		r->result = write_failure(s, je);
	}
	jsPubAck_Destroy(pa);
	natsMsg_Destroy(m);
}

static void
serve(struct cluster_dir *d, struct dir_req *r)
{
	r->error[0] = '\0';
	if (!atomic_load(&d->open)) {
		snprintf(r->error, sizeof(r->error), "directory not open");
		r->result = DIR_FAILED;
	} else if (r->op == DIR_GET) {
		do_get(d, r);
	} else {
		do_put(d, r);
	}
	post(d, r);
}

/* Binds to the bucket, or creates it: 0, or -1 (retry later). */
static int
bind_or_create(struct cluster_dir *d)
{
	kvStore *kv = NULL;
	kvConfig cfg;
	natsStatus s = js_KeyValue(&kv, d->js, d->bucket);

	if (s == NATS_OK) {
		kvStore_Destroy(kv);
		return 0;
	}
	if (s != NATS_NOT_FOUND)
		return -1;
	kvConfig_Init(&cfg);
	cfg.Bucket = d->bucket;
	cfg.History = 1;
	cfg.Replicas = 3;
	s = js_CreateKeyValue(&kv, d->js, &cfg);
	if (s != NATS_OK && s != NATS_TIMEOUT && s != NATS_NO_RESPONDERS &&
	    s != NATS_CONNECTION_DISCONNECTED) {
		/* Fewer than 3 JetStream servers (or a race: bound next). */
		LOGW("cluster: directory bucket %s with 3 replicas: %s; "
		    "trying 1 replica (it will not survive the loss of its "
		    "server)", d->bucket, nats_GetLastError(NULL));
		cfg.Replicas = 1;
		s = js_CreateKeyValue(&kv, d->js, &cfg);
	}
	kvStore_Destroy(kv);
	return s == NATS_OK ? 0 : -1;
}

/* Reads until the bucket's stream answers: then it takes writes too. */
static int
probe(struct cluster_dir *d)
{
	char subject[DIR_KEY_MAX + 96];
	jsStreamInfo *si = NULL;
	jsOptions jo;
	natsMsg *m = NULL;
	jsErrCode je = 0;
	natsStatus s;

	jsOptions_Init(&jo);
	jo.Wait = PROBE_WAIT_MS;
	cluster_dir_subject(d->bucket, "open-probe", subject, sizeof(subject));
	s = js_GetLastMsg(&m, d->js, d->stream, subject, &jo, &je);
	natsMsg_Destroy(m);
	if (s != NATS_OK && s != NATS_NOT_FOUND)
		return -1;
	if (js_GetStreamInfo(&si, d->js, d->stream, NULL, &je) == NATS_OK) {
		d->replicas = si->Config->Replicas;
		jsStreamInfo_Destroy(si);
	}
	return 0;
}

/* Waits up to ms, or until stop (mu held). */
static void
nap(struct cluster_dir *d, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	(void)pthread_cond_timedwait(&d->cv, &d->mu, &ts);
}

/* Tries until the bucket is open or the directory stops. */
static void
open_bucket(struct cluster_dir *d)
{
	jsOptions jo;

	jsOptions_Init(&jo);
	jo.Wait = DIR_WAIT_MS;
	if (natsConnection_JetStream(&d->js, d->nc, &jo) != NATS_OK) {
		LOGE("cluster: no JetStream context: %s",
		    nats_GetLastError(NULL));
		return;
	}
	for (;;) {
		pthread_mutex_lock(&d->mu);
		bool stop = d->stop;
		pthread_mutex_unlock(&d->mu);
		if (stop)
			return;
		if (bind_or_create(d) == 0 && probe(d) == 0)
			break;
		pthread_mutex_lock(&d->mu);
		if (!d->stop)
			nap(d, OPEN_RETRY_MS);
		pthread_mutex_unlock(&d->mu);
	}
	atomic_store(&d->open, true);
	post(d, &d->mark_open);
}

static void *
run(void *arg)
{
	struct cluster_dir *d = arg;
	struct dir_req *r;

	open_bucket(d);
	for (;;) {
		pthread_mutex_lock(&d->mu);
		while (d->head == NULL && !d->stop)
			pthread_cond_wait(&d->cv, &d->mu);
		r = d->head;
		if (r != NULL && (d->head = r->next) == NULL)
			d->tail = NULL;
		pthread_mutex_unlock(&d->mu);
		if (r == NULL)
			break;		/* stopping, and nothing queued */
		r->next = NULL;
		serve(d, r);
	}
	jsCtx_Destroy(d->js);
	d->js = NULL;
	post(d, &d->mark_stopped);
	/* What the library keeps per thread. */
	nats_ReleaseThreadMemory();
	return NULL;
}

struct cluster_dir *
cluster_dir_start(natsConnection *nc, struct ev_loop *loop,
    const char *bucket, void (*opened)(void *arg, int replicas), void *arg)
{
	struct cluster_dir *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	d->nc = nc;
	snprintf(d->bucket, sizeof(d->bucket), "%s", bucket);
	snprintf(d->stream, sizeof(d->stream), "KV_%s", bucket);
	d->opened = opened;
	d->arg = arg;
	atomic_init(&d->busy, 0);
	atomic_init(&d->open, false);
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	if (handoff_init(&d->ring, loop, 4096, on_ring, d) < 0) {
		cluster_dir_free(d);
		return NULL;
	}
	errno = pthread_create(&d->thread, NULL, run, d);
	if (errno != 0) {
		LOGE("cluster: directory thread: %s", strerror(errno));
		cluster_dir_free(d);
		return NULL;
	}
	d->thread_made = true;
	return d;
}

void
cluster_dir_submit(struct cluster_dir *d, struct dir_req *r)
{
	r->next = NULL;
	atomic_fetch_add(&d->busy, 1);
	pthread_mutex_lock(&d->mu);
	if (d->tail != NULL)
		d->tail->next = r;
	else
		d->head = r;
	d->tail = r;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

bool
cluster_dir_open(const struct cluster_dir *d)
{
	return d != NULL && atomic_load(&d->open);
}

size_t
cluster_dir_busy(const struct cluster_dir *d)
{
	return d != NULL ? atomic_load(&d->busy) : 0;
}

void
cluster_dir_stop(struct cluster_dir *d)
{
	if (d == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

bool
cluster_dir_stopped(struct cluster_dir *d)
{
	return d == NULL || !d->thread_made || d->stopped;
}

void
cluster_dir_free(struct cluster_dir *d)
{
	if (d == NULL)
		return;
	if (d->thread_made) {
		cluster_dir_stop(d);
		pthread_join(d->thread, NULL);
	}
	/* Requests finished after the loop last looked: their callbacks. */
	if (d->ring.cells != NULL)
		handoff_destroy(&d->ring);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	free(d);
}
