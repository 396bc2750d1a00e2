/*
 * relay_metrics: the relay's metric families, as Prometheus text.
 *
 * Totals per listener (ferry_relay_*{listener}; ferry_relay_devices
 * counts the uuids whose settings come from that listener, so the sum is
 * the registry's entry count), and per uuid (ferry_relay_device_*{uuid})
 * for the uuids an entry exists for now, at most
 * RELAY_METRICS_MAX_DEVICES.  Each family's header is written once, with
 * every listener's series under it.  Reads the registry and the
 * listeners' totals only; main.c registers this as a metrics source.
 */
#ifndef FERRY_RELAY_METRICS_H
#define FERRY_RELAY_METRICS_H

#include <stddef.h>

#include "buffer.h"
#include "registry.h"
#include "relay.h"

/* At most this many uuids get their own series. */
#define RELAY_METRICS_MAX_DEVICES 1000

void relay_render_metrics(struct registry *reg,
    struct relay_listener *const *ls, size_t n, struct buffer *out);

#endif
