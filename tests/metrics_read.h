/*
 * metrics_read: one reader of the admin page's /metrics for every suite.
 *
 * metric_read() fetches the page and returns one series' value; the
 * ferry_/rc_ forms name the server by its ferry_proc or its admin port.
 * metric_wait() polls until a series has a value (bounded), and
 * metric_expect() does the same and fails the test, with the server's log,
 * when the value never comes.  Values are what the page prints, so the
 * counts the suites compare are exact.
 */
#ifndef FERRY_TEST_METRICS_READ_H
#define FERRY_TEST_METRICS_READ_H

#include <stdbool.h>

struct ferry_proc;

/*
 * The value of one series ("name{labels}", e.g.
 * "ferry_connections_accepted_total{listener=\"web\",mode=\"forward\"}")
 * on the admin page at `admin_port`; -1 when the page or the series is
 * missing.
 */
double metric_read(int admin_port, const char *series);
/* The same on the admin listener of `fp`. */
double ferry_metric(const struct ferry_proc *fp, const char *series);
/* The same as a whole number, for the relay suites' counters. */
long long rc_metric(int admin_port, const char *series);

/*
 * Polls `series` on `fp` every `poll_ms` until it equals `want` or
 * `timeout` seconds pass; returns whether it did.
 */
bool metric_wait(const struct ferry_proc *fp, const char *series,
    double want, double timeout, int poll_ms);
/*
 * metric_wait(), then fails the test (after dumping the server's log) when
 * the series never reached `want`.
 */
void metric_expect(const struct ferry_proc *fp, const char *series,
    double want, double timeout, int poll_ms);

#endif
