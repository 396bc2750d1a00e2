/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_SOURCES 8

static struct metrics_slot private_slot;
static struct metrics_slot *slots = &private_slot;
static int nslots = 1;
static int my_slot;

static struct {
	char name[64];
	char mode[16];
} listeners[METRICS_MAX_LISTENERS];
static int nlisteners;

static struct {
	metrics_source_fn fn;
	void *arg;
} sources[MAX_SOURCES];
static int nsources;

int
metrics_init(int workers)
{
	void *p;

	if (workers < 1)
		workers = 1;
	if (workers > METRICS_MAX_WORKERS)
		workers = METRICS_MAX_WORKERS;
	p = mmap(NULL, sizeof(struct metrics_slot) * (size_t)workers,
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	slots = p;
	nslots = workers;
	my_slot = 0;
	return 0;
}

/*
 * A slot still naming another process was its predecessor's: that worker
 * died (the supervisor restarts one only after reaping it) with its
 * connections open, and nobody will ever count their closes.  They are
 * closed now, so the gauge derived from accepted - closed drops; the
 * totals stay as they were.
 */
static void
slot_take_over(struct metrics_slot *s)
{
	if (s->pid == 0 || s->pid == (int64_t)getpid())
		return;
	for (int i = 0; i < METRICS_MAX_LISTENERS; i++)
		s->listener[i].closed = s->listener[i].accepted;
	/* Its node died with it: what it held, it holds no more. */
	s->cluster.connected = s->cluster.joined = s->cluster.peers = 0;
	s->cluster.owned = s->cluster.local_only = s->cluster.imports = 0;
	s->cluster.remote_nodes = 0;
}

void
metrics_set_worker(int id)
{
	if (id >= 0 && id < nslots)
		my_slot = id;
	slot_take_over(&slots[my_slot]);
	slots[my_slot].pid = (int64_t)getpid();
}

uint64_t
metrics_open_connections(void)
{
	uint64_t n = 0;

	for (int w = 0; w < nslots; w++)
		for (int i = 0; i < METRICS_MAX_LISTENERS; i++)
			n += slots[w].listener[i].accepted -
			    slots[w].listener[i].closed;
	return n;
}

int
metrics_listener(const char *name, const char *mode)
{
	for (int i = 0; i < nlisteners; i++)
		if (strcmp(listeners[i].name, name) == 0)
			return i;
	if (nlisteners >= METRICS_MAX_LISTENERS)
		return -1;
	snprintf(listeners[nlisteners].name, sizeof(listeners[0].name), "%s",
	    name);
	snprintf(listeners[nlisteners].mode, sizeof(listeners[0].mode), "%s",
	    mode);
	return nlisteners++;
}

struct metrics_conn *
metrics_conn(int id)
{
	if (id < 0 || id >= METRICS_MAX_LISTENERS)
		id = METRICS_MAX_LISTENERS - 1;
	return &slots[my_slot].listener[id];
}

struct metrics_cluster *
metrics_cluster(void)
{
	return &slots[my_slot].cluster;
}

const struct metrics_cluster *
metrics_cluster_of(int worker)
{
	return worker >= 0 && worker < nslots ? &slots[worker].cluster : NULL;
}

int
metrics_workers(void)
{
	return nslots;
}

int
metrics_add_source(metrics_source_fn fn, void *arg)
{
	if (nsources >= MAX_SOURCES)
		return -1;
	sources[nsources].fn = fn;
	sources[nsources].arg = arg;
	nsources++;
	return 0;
}

void
metrics_printf(struct buffer *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (buffer_reserve(out, 256) < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buffer_tail(out), buffer_tail_room(out), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= buffer_tail_room(out)) {
		if (buffer_reserve(out, (size_t)n + 1) < 0)
			return;
		va_start(ap, fmt);
		vsnprintf(buffer_tail(out), buffer_tail_room(out), fmt, ap);
		va_end(ap);
	}
	buffer_commit(out, (size_t)n);
}

void
metrics_family(struct buffer *out, const char *name, const char *type,
    const char *help)
{
	metrics_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

void
metrics_escape(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	if (outlen == 0)
		return;
	for (; *in != '\0'; in++) {
		const char *rep = *in == '\\' ? "\\\\" : *in == '"' ? "\\\"" :
		    *in == '\n' ? "\\n" : NULL;
		size_t need = rep ? 2 : 1;
		if (n + need >= outlen)
			break;
		if (rep != NULL)
			memcpy(out + n, rep, 2);
		else
			out[n] = *in;
		n += need;
	}
	out[n] = '\0';
}

/* Label values for listener i: name and mode, escaped. */
static void
listener_labels(int i, char *out, size_t outlen)
{
	char name[2 * sizeof(listeners[0].name)];
	char mode[2 * sizeof(listeners[0].mode)];

	metrics_escape(listeners[i].name, name, sizeof(name));
	metrics_escape(listeners[i].mode, mode, sizeof(mode));
	snprintf(out, outlen, "listener=\"%s\",mode=\"%s\"", name, mode);
}

/* Sum of one field over every worker's slot. */
static uint64_t
sum(int id, size_t offset)
{
	uint64_t total = 0;

	for (int w = 0; w < nslots; w++)
		total += *(const uint64_t *)((const char *)
		    &slots[w].listener[id] + offset);
	return total;
}

static void
listener_family(struct buffer *out, const char *name, const char *type,
    const char *help, size_t offset)
{
	char labels[300];

	metrics_family(out, name, type, help);
	for (int i = 0; i < nlisteners; i++) {
		listener_labels(i, labels, sizeof(labels));
		metrics_printf(out, "%s{%s} %llu\n", name, labels,
		    (unsigned long long)sum(i, offset));
	}
}

static void
active_family(struct buffer *out)
{
	metrics_family(out, "ferry_connections_active", "gauge",
	    "Connections open now.");
	for (int i = 0; i < nlisteners; i++) {
		uint64_t a = sum(i, offsetof(struct metrics_conn, accepted));
		uint64_t c = sum(i, offsetof(struct metrics_conn, closed));
		char labels[300];
		listener_labels(i, labels, sizeof(labels));
		metrics_printf(out, "ferry_connections_active{%s} %llu\n",
		    labels, (unsigned long long)(a > c ? a - c : 0));
	}
}

/* Resident bytes of a process (/proc/PID/statm), or -1. */
static long
rss_of(const char *statm)
{
	long pages = 0, rss = -1;
	FILE *f = fopen(statm, "r");

	if (f != NULL) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = -1;
		fclose(f);
	}
	return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

static void
process_family(struct buffer *out)
{
	long rss = rss_of("/proc/self/statm");
	struct rusage ru;

	metrics_family(out, "ferry_process_resident_memory_bytes", "gauge",
	    "Resident memory of the process serving this page.");
	metrics_printf(out, "ferry_process_resident_memory_bytes %ld\n",
	    rss < 0 ? 0 : rss);
	/* Every worker writes its pid into its slot: its memory is readable. */
	metrics_family(out, "ferry_worker_resident_memory_bytes", "gauge",
	    "Resident memory of each worker process.");
	for (int w = 0; w < nslots; w++) {
		char path[64];
		if (slots[w].pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%lld/statm",
		    (long long)slots[w].pid);
		rss = rss_of(path);
		if (rss >= 0)
			metrics_printf(out, "ferry_worker_resident_memory_bytes"
			    "{worker=\"%d\"} %ld\n", w, rss);
	}
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		metrics_family(out, "ferry_process_cpu_seconds_total",
		    "counter", "CPU time of the process serving this page.");
		metrics_printf(out, "ferry_process_cpu_seconds_total %.3f\n",
		    (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	}
	metrics_family(out, "ferry_workers", "gauge",
	    "Worker processes sharing these counters.");
	metrics_printf(out, "ferry_workers %d\n", nslots);
}

#define F(field) offsetof(struct metrics_conn, field)

void
metrics_render(struct buffer *out)
{
	listener_family(out, "ferry_connections_accepted_total", "counter",
	    "Connections accepted.", F(accepted));
	active_family(out);
	listener_family(out, "ferry_connections_refused_total", "counter",
	    "Connections refused by a connection limit.", F(refused));
	listener_family(out, "ferry_tls_handshakes_total", "counter",
	    "TLS handshakes completed.", F(handshakes_ok));
	listener_family(out, "ferry_tls_handshake_failures_total", "counter",
	    "TLS handshakes that failed or timed out.", F(handshakes_failed));
	listener_family(out, "ferry_tls_flood_closed_total", "counter",
	    "TLS connections closed for sending too many records that carry "
	    "no data (key updates, renegotiation attempts, alerts, empty "
	    "records).", F(tls_floods));
	listener_family(out, "ferry_client_received_bytes_total", "counter",
	    "Bytes received from clients.", F(bytes_in));
	listener_family(out, "ferry_client_sent_bytes_total", "counter",
	    "Bytes sent to clients.", F(bytes_out));
	listener_family(out, "ferry_backend_connect_failures_total",
	    "counter", "Backend connections that failed or timed out.",
	    F(backend_failures));
	listener_family(out, "ferry_backend_received_bytes_total", "counter",
	    "Bytes received from backends.", F(backend_bytes_in));
	listener_family(out, "ferry_backend_sent_bytes_total", "counter",
	    "Bytes sent to backends.", F(backend_bytes_out));
	for (int i = 0; i < nsources; i++)
		sources[i].fn(out, sources[i].arg);
	process_family(out);
}
