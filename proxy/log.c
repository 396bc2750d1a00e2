/* log: see log.h. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;

/* Rate limiter for log_limited(): a one-second window. */
static time_t limit_window;
static unsigned limit_count;
static unsigned long limit_suppressed;

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG",
    "NOTICE" };

void
log_set_level(enum log_level level)
{
	/* A threshold, not a label: NOTICE as a setting means warn. */
	current_level = level == LOG_NOTICE ? LOG_WARN : level;
}

enum log_level
log_get_level(void)
{
	return current_level;
}

int
log_level_parse(const char *name)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return (int)i;
	if (strcmp(name, "warning") == 0)
		return LOG_WARN;
	return -1;
}

void
log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	int n;

	if (!log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ferry[%ld] %s ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, (long)getpid(),
	    level_names[level]);
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write() per line so lines from several workers do not interleave. */
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

void
log_write(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void
log_limited(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	time_t now;

	if (!log_enabled(level))
		return;
	now = time(NULL);
	if (now != limit_window) {
		limit_window = now;
		limit_count = 0;
	}
	if (limit_count >= LOG_BURST) {
		limit_suppressed++;
		return;
	}
	limit_count++;
	if (limit_suppressed > 0) {
		log_write(level, "(%lu similar messages suppressed)",
		    limit_suppressed);
		limit_suppressed = 0;
	}
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}
