/* metrics_read: see metrics_read.h. */
#define _GNU_SOURCE
#include "metrics_read.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

double
metric_read(int admin_port, const char *series)
{
	int status;
	char *body = http_get(admin_port, "/metrics", &status);
	size_t n = strlen(series);
	double v = -1;

	if (body == NULL)
		return -1;
	for (const char *p = body; p != NULL && *p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			v = strtod(p + n + 1, NULL);
			break;
		}
	}
	free(body);
	return status == 200 ? v : -1;
}

double
ferry_metric(const struct ferry_proc *fp, const char *series)
{
	return metric_read(ferry_port(fp, "admin"), series);
}

long long
rc_metric(int admin_port, const char *series)
{
	return (long long)metric_read(admin_port, series);
}

bool
metric_wait(const struct ferry_proc *fp, const char *series, double want,
    double timeout, int poll_ms)
{
	double end = now_s() + timeout;

	while (ferry_metric(fp, series) != want && now_s() < end)
		usleep((useconds_t)poll_ms * 1000);
	return ferry_metric(fp, series) == want;
}

void
metric_expect(const struct ferry_proc *fp, const char *series, double want,
    double timeout, int poll_ms)
{
	double end = now_s() + timeout, v;

	while ((v = ferry_metric(fp, series)) != want && now_s() < end)
		usleep((useconds_t)poll_ms * 1000);
	if (v != want)
		ferry_log_dump(fp);
	cr_assert_eq(v, want, "%s is %g, expected %g", series, v, want);
}
