/* log: see log.h. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;

/* log_limited()'s own limit. */
static struct log_limit limit;

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

bool
log_limit_pass(struct log_limit *l)
{
	time_t now = time(NULL);

	if (now != l->window) {
		l->window = now;
		l->count = 0;
	}
	if (l->count >= LOG_BURST) {
		l->suppressed++;
		return false;
	}
	l->count++;
	return true;
}

unsigned long
log_limit_take(struct log_limit *l)
{
	unsigned long n = l->suppressed;

	l->suppressed = 0;
	return n;
}

void
log_limited(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	unsigned long left_out;

	if (!log_enabled(level) || !log_limit_pass(&limit))
		return;
	left_out = log_limit_take(&limit);
	if (left_out > 0)
		log_write(level, "(%lu similar messages suppressed)",
		    left_out);
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}
