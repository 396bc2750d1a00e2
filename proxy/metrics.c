/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
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

/* Backend labels, per listener (registered before the fork). */
static struct {
	char set[32];
	char label[96];
	bool used;
} backends[METRICS_MAX_LISTENERS][METRICS_MAX_BACKENDS];

static struct metrics_health private_health[METRICS_MAX_LISTENERS]
    [METRICS_MAX_BACKENDS];
static struct metrics_health (*health)[METRICS_MAX_BACKENDS] =
    private_health;

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
	p = mmap(NULL, sizeof(private_health), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	health = p;
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
	for (int i = 0; i < METRICS_MAX_LISTENERS; i++) {
		s->listener[i].closed = s->listener[i].accepted;
		for (int b = 0; b < METRICS_MAX_BACKENDS; b++)
			s->backend[i][b].closed = s->backend[i][b].opened;
	}
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

static bool
backend_valid(int listener, int idx)
{
	return listener >= 0 && listener < METRICS_MAX_LISTENERS &&
	    idx >= 0 && idx < METRICS_MAX_BACKENDS;
}

int
metrics_backend(int listener, int idx, const char *set, const char *label)
{
	if (!backend_valid(listener, idx))
		return -1;
	snprintf(backends[listener][idx].set, sizeof(backends[0][0].set),
	    "%s", set);
	snprintf(backends[listener][idx].label,
	    sizeof(backends[0][0].label), "%s", label);
	backends[listener][idx].used = true;
	return 0;
}

struct metrics_backend *
metrics_backend_counters(int listener, int idx)
{
	if (!backend_valid(listener, idx))
		listener = idx = 0;
	return &slots[my_slot].backend[listener][idx];
}

struct metrics_health *
metrics_backend_health(int listener, int idx)
{
	if (!backend_valid(listener, idx))
		listener = idx = 0;
	return &health[listener][idx];
}

uint64_t
metrics_backend_active(int listener, int idx)
{
	uint64_t o = 0, c = 0;

	if (!backend_valid(listener, idx))
		return 0;
	for (int w = 0; w < nslots; w++) {
		o += __atomic_load_n(&slots[w].backend[listener][idx].opened,
		    __ATOMIC_RELAXED);
		c += __atomic_load_n(&slots[w].backend[listener][idx].closed,
		    __ATOMIC_RELAXED);
	}
	return o > c ? o - c : 0;
}

int64_t
metrics_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* One backend family: value(listener, idx) for each registered one. */
static void
backend_family(struct buffer *out, const char *name, const char *type,
    const char *help, uint64_t (*value)(int, int))
{
	bool any = false;

	for (int i = 0; i < nlisteners; i++) {
		char lname[2 * sizeof(listeners[0].name)];
		metrics_escape(listeners[i].name, lname, sizeof(lname));
		for (int b = 0; b < METRICS_MAX_BACKENDS; b++) {
			char set[2 * sizeof(backends[0][0].set)];
			char label[2 * sizeof(backends[0][0].label)];
			if (!backends[i][b].used)
				continue;
			if (!any)
				metrics_family(out, name, type, help);
			any = true;
			metrics_escape(backends[i][b].set, set, sizeof(set));
			metrics_escape(backends[i][b].label, label,
			    sizeof(label));
			metrics_printf(out, "%s{listener=\"%s\",set=\"%s\","
			    "backend=\"%s\"} %llu\n", name, lname, set, label,
			    (unsigned long long)value(i, b));
		}
	}
}

static uint64_t
backend_sum(int l, int b, size_t offset)
{
	uint64_t total = 0;

	for (int w = 0; w < nslots; w++)
		total += *(const uint64_t *)((const char *)
		    &slots[w].backend[l][b] + offset);
	return total;
}

static uint64_t
backend_up(int l, int b)
{
	int64_t until = __atomic_load_n(&health[l][b].down_until,
	    __ATOMIC_RELAXED);

	return until <= metrics_now_ms() ? 1 : 0;
}

static uint64_t
backend_connects(int l, int b)
{
	return backend_sum(l, b, offsetof(struct metrics_backend, connects));
}

static uint64_t
backend_failures(int l, int b)
{
	return backend_sum(l, b, offsetof(struct metrics_backend, failures));
}

static uint64_t
backend_check_failures(int l, int b)
{
	return backend_sum(l, b, offsetof(struct metrics_backend,
	    check_failures));
}

static uint64_t
backend_active(int l, int b)
{
	return metrics_backend_active(l, b);
}

static void
backend_families(struct buffer *out)
{
	backend_family(out, "ferry_backend_up", "gauge", "1 if the backend "
	    "is up (not marked down by failures or checks), else 0.",
	    backend_up);
	backend_family(out, "ferry_backend_active_connections", "gauge",
	    "Client connections using the backend now (or reaching it).",
	    backend_active);
	backend_family(out, "ferry_backend_connects_total", "counter",
	    "Connections made to the backend for clients.", backend_connects);
	backend_family(out, "ferry_backend_failures_total", "counter",
	    "A client's connection attempts to the backend that failed.",
	    backend_failures);
	backend_family(out, "ferry_backend_check_failures_total", "counter",
	    "Active checks of the backend that failed.",
	    backend_check_failures);
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
	listener_family(out, "ferry_proxy_header_failures_total", "counter",
	    "accept_proxy: connections closed for a PROXY header malformed, "
	    "not whole in time, or missing.", F(proxy_failures));
	listener_family(out, "ferry_backend_connect_failures_total",
	    "counter", "Backend connections that failed or timed out.",
	    F(backend_failures));
	listener_family(out, "ferry_backend_received_bytes_total", "counter",
	    "Bytes received from backends.", F(backend_bytes_in));
	listener_family(out, "ferry_backend_sent_bytes_total", "counter",
	    "Bytes sent to backends.", F(backend_bytes_out));
	backend_families(out);
	for (int i = 0; i < nsources; i++)
		sources[i].fn(out, sources[i].arg);
	process_family(out);
}
