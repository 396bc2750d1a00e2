/* relay_metrics: see relay_metrics.h. */
#include "relay_metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

#define C(f) offsetof(struct relay_counters, f)
static const struct {
	const char *name, *type, *help;
	size_t off;
	bool per_device;
} relay_families[] = {
	{ "frames_in_total", "counter", "Frames received from producers.",
	    C(in.frames), true },
	{ "bytes_in_total", "counter", "Frame bytes received from producers.",
	    C(in.bytes), true },
	{ "frames_out_total", "counter", "Frames queued to consumers.",
	    C(out.frames), true },
	{ "bytes_out_total", "counter", "Frame bytes queued to consumers.",
	    C(out.bytes), true },
	{ "frames_dropped_total", "counter",
	    "Frames dropped for slow consumers.", C(dropped.frames), true },
	{ "bytes_dropped_total", "counter",
	    "Frame bytes dropped for slow consumers.", C(dropped.bytes), true },
	{ "refused_total", "counter", "Requests refused: answered with 0x01, "
	    "or a consumer closed at its accept byte (max_consumers).",
	    C(refused), false },
	{ "acl_denied_total", "counter",
	    "Requests the access list refused (answered with 0x01).",
	    C(denied), false },
	{ "producers", "gauge", "Producers connected.", C(producers), true },
	{ "consumers", "gauge",
	    "Consumers that accepted the keys (max_consumers counts them).",
	    C(consumers), true },
	{ "consumers_pending", "gauge",
	    "Consumers sent the keys that have not accepted them yet.",
	    C(pending), true },
};
#undef C

static uint64_t
counter(const struct relay_counters *c, size_t off)
{
	uint64_t v;

	memcpy(&v, (const char *)c + off, sizeof(v));
	return v;
}

static void
render_devices(struct registry *reg, struct buffer *out, size_t f)
{
	char name[96], help[128], uuid[512];
	size_t shown = 0;

	snprintf(name, sizeof(name), "ferry_relay_device_%s",
	    relay_families[f].name);
	snprintf(help, sizeof(help), "%s Per uuid.", relay_families[f].help);
	metrics_family(out, name, relay_families[f].type, help);
	for (struct registry_entry *e = registry_next(reg, NULL);
	    e != NULL && shown < RELAY_METRICS_MAX_DEVICES;
	    e = registry_next(reg, e), shown++) {
		/* uuids hold no NUL (no control characters). */
		metrics_escape(e->uuid, uuid, sizeof(uuid));
		metrics_printf(out, "%s{uuid=\"%s\"} %llu\n", name, uuid,
		    (unsigned long long)counter(&e->c, relay_families[f].off));
	}
}

/* One family with a value per listener. */
static void
render_listeners(struct relay_listener *const *ls, size_t n,
    struct buffer *out, const char *name, const char *type,
    const char *help, uint64_t (*value)(const struct relay_listener *,
    size_t), size_t arg)
{
	char lst[160];

	metrics_family(out, name, type, help);
	for (size_t i = 0; i < n; i++) {
		metrics_escape(relay_listener_origin(ls[i])->name, lst,
		    sizeof(lst));
		metrics_printf(out, "%s{listener=\"%s\"} %llu\n", name, lst,
		    (unsigned long long)value(ls[i], arg));
	}
}

static uint64_t
total_of(const struct relay_listener *l, size_t off)
{
	return counter(&relay_listener_origin(l)->total, off);
}

static uint64_t
protocol_errors_of(const struct relay_listener *l, size_t off)
{
	(void)off;
	return relay_listener_protocol_errors(l);
}

static uint64_t
devices_of(const struct relay_listener *l, size_t off)
{
	(void)off;
	return relay_listener_origin(l)->devices;
}

void
relay_render_metrics(struct registry *reg, struct relay_listener *const *ls,
    size_t n, struct buffer *out)
{
	const size_t nf = sizeof(relay_families) / sizeof(relay_families[0]);
	char name[96];

	if (n == 0)
		return;
	for (size_t f = 0; f < nf; f++) {
		snprintf(name, sizeof(name), "ferry_relay_%s",
		    relay_families[f].name);
		render_listeners(ls, n, out, name, relay_families[f].type,
		    relay_families[f].help, total_of, relay_families[f].off);
	}
	render_listeners(ls, n, out, "ferry_relay_protocol_errors_total",
	    "counter", "Connections closed for a protocol error.",
	    protocol_errors_of, 0);
	render_listeners(ls, n, out, "ferry_relay_devices", "gauge",
	    "UUIDs with a producer or waiting consumers, by the listener "
	    "their producer registered on.", devices_of, 0);
	for (size_t f = 0; f < nf; f++)
		if (relay_families[f].per_device)
			render_devices(reg, out, f);
}
