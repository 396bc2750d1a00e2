/* log: see log.h. */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
static enum log_dest current_dest = LOG_TO_STDERR;
static enum log_format current_format = LOG_FORMAT_TEXT;

/*
 * The syslog socket while the destination is syslog (-1 between a failed
 * send and the next connect), where it connects, and the lines it could
 * not take since the last one it did.
 */
static int syslog_fd = -1;
static struct sockaddr_un syslog_addr;
static unsigned long syslog_lost;

/* log_limited()'s own limit. */
static struct log_limit limit;

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG",
    "NOTICE" };
static const char *const json_levels[] = { "error", "warn", "info", "debug",
    "notice" };
/*
 * syslog severities (RFC 5424: err, warning, info, debug, notice), by
 * number: <syslog.h> would define LOG_INFO and others over our own names.
 */
static const int severities[] = { 3, 4, 6, 7, 5 };
#define SYSLOG_DAEMON (3 << 3)

/* Longest JSON form of a message: every byte a six-byte \uXXXX. */
#define LINE_MAX_BYTES (6 * LOG_MAX_MSG + 256)

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

/* ---- formatting ---- */

/* A bounded writer: a piece goes in whole or not at all. */
struct out {
	char *buf;
	size_t lim;		/* bytes it may hold (the '\0' is kept apart) */
	size_t n;
};

static bool
put(struct out *o, const char *s, size_t len)
{
	if (len > o->lim - o->n)
		return false;
	memcpy(o->buf + o->n, s, len);
	o->n += len;
	return true;
}

/* The length of the well-formed UTF-8 sequence at s (n bytes), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned cp, min;
	size_t len;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, min = 0x80;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, min = 0x800;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, min = 0x10000;
	else
		return 0;
	if (n < len)
		return 0;
	cp = s[0] & (0x3fu >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * s as the inside of a JSON string: what JSON requires escaped is, control
 * characters and DEL as \uXXXX (or their short forms), and a byte that
 * does not start a well-formed UTF-8 sequence as U+FFFD, so that the line
 * is valid JSON whatever a peer put in the message.  Stops at the first
 * piece that does not fit.
 */
static void
json_escape(struct out *o, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);

	while (left > 0) {
		char esc[8];
		const char *piece = esc;
		size_t n = 2, used = 1;

		switch (*p) {
		case '"': memcpy(esc, "\\\"", 2); break;
		case '\\': memcpy(esc, "\\\\", 2); break;
		case '\n': memcpy(esc, "\\n", 2); break;
		case '\r': memcpy(esc, "\\r", 2); break;
		case '\t': memcpy(esc, "\\t", 2); break;
		case '\b': memcpy(esc, "\\b", 2); break;
		case '\f': memcpy(esc, "\\f", 2); break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x",
				    *p);
			} else if (*p < 0x80) {
				piece = (const char *)p;
				n = 1;
			} else if ((used = utf8_len(p, left)) > 0) {
				piece = (const char *)p;
				n = used;
			} else {
				piece = "\\ufffd";
				n = 6;
				used = 1;
			}
		}
		if (!put(o, piece, n))
			return;
		p += used;
		left -= used;
	}
}

size_t
log_format_line(char *buf, size_t len, enum log_format format,
    enum log_level level, const struct timespec *ts, long pid,
    const char *msg)
{
	struct out o = { buf, len > 0 ? len - 1 : 0, 0 };
	char head[128];
	struct tm tm;
	int n;

	if (len == 0)
		return 0;
	gmtime_r(&ts->tv_sec, &tm);
	if (format == LOG_FORMAT_JSON)
		n = snprintf(head, sizeof(head), "{\"time\":\"%04d-%02d-%02dT"
		    "%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"pid\":%ld,"
		    "\"msg\":\"", tm.tm_year + 1900, tm.tm_mon + 1,
		    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		    ts->tv_nsec / 1000000L, json_levels[level], pid);
	else
		n = snprintf(head, sizeof(head), "%04d-%02d-%02dT%02d:%02d:"
		    "%02d.%03ldZ ferry[%ld] %s ", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		    tm.tm_sec, ts->tv_nsec / 1000000L, pid,
		    level_names[level]);
	if (n > 0 && put(&o, head, (size_t)n)) {
		if (format == LOG_FORMAT_JSON) {
			/* Room kept for the closing quote and brace. */
			if (o.lim - o.n >= 2) {
				o.lim -= 2;
				json_escape(&o, msg);
				o.lim += 2;
				put(&o, "\"}", 2);
			}
		} else {
			size_t m = strlen(msg);
			put(&o, msg, m < o.lim - o.n ? m : o.lim - o.n);
		}
	}
	buf[o.n] = '\0';
	return o.n;
}

/* ---- syslog ---- */

static int
syslog_connect(const struct sockaddr_un *addr)
{
	/*
	 * Non-blocking: a syslog daemon that is behind costs lines, counted,
	 * never the event loop's time.
	 */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static bool
syslog_send(const char *dgram, size_t len)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (syslog_fd < 0)
			syslog_fd = syslog_connect(&syslog_addr);
		if (syslog_fd < 0)
			return false;
		if (send(syslog_fd, dgram, len, MSG_NOSIGNAL) >= 0)
			return true;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
			return false;
		/*
		 * The daemon went, or was restarted with a socket of its own
		 * (ECONNREFUSED): connect to the path again, once.
		 */
		close(syslog_fd);
		syslog_fd = -1;
	}
	return false;
}

/* "<PRI>Mmm dd hh:mm:ss ferry[pid]: " and the body, as syslog(3) sends. */
static bool
syslog_line(enum log_level level, const char *msg)
{
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char dgram[LINE_MAX_BYTES];
	struct timespec ts;
	struct tm tm;
	long pid = (long)getpid();
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	n = snprintf(dgram, sizeof(dgram), "<%d>%s %2d %02d:%02d:%02d "
	    "ferry[%ld]: ", SYSLOG_DAEMON | severities[level],
	    months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    pid);
	if (n < 0)
		return false;
	if (current_format == LOG_FORMAT_JSON)
		n += (int)log_format_line(dgram + n, sizeof(dgram) - (size_t)n,
		    LOG_FORMAT_JSON, level, &ts, pid, msg);
	else
		n += snprintf(dgram + n, sizeof(dgram) - (size_t)n, "%s %s",
		    level_names[level], msg);
	if ((size_t)n >= sizeof(dgram))
		n = (int)sizeof(dgram) - 1;
	return syslog_send(dgram, (size_t)n);
}

static void
syslog_write(enum log_level level, const char *msg)
{
	if (syslog_lost > 0) {
		char note[96];

		snprintf(note, sizeof(note), "(%lu log lines lost: the syslog "
		    "socket was full or gone)", syslog_lost);
		if (!syslog_line(LOG_WARN, note)) {
			syslog_lost++;
			return;
		}
		syslog_lost = 0;
	}
	if (!syslog_line(level, msg))
		syslog_lost++;
}

int
log_open(enum log_dest dest, enum log_format format,
    const char *syslog_path)
{
	if (dest == LOG_TO_SYSLOG) {
		struct sockaddr_un addr = { .sun_family = AF_UNIX };
		const char *path = syslog_path != NULL ? syslog_path :
		    "/dev/log";
		int fd;

		if (strlen(path) >= sizeof(addr.sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(addr.sun_path, path, strlen(path) + 1);
		fd = syslog_connect(&addr);
		if (fd < 0)
			return -1;
		log_close();
		syslog_fd = fd;
		syslog_addr = addr;
	} else {
		log_close();
	}
	current_dest = dest;
	current_format = format;
	return 0;
}

void
log_close(void)
{
	if (syslog_fd >= 0)
		close(syslog_fd);
	syslog_fd = -1;
	syslog_lost = 0;
	current_dest = LOG_TO_STDERR;
	current_format = LOG_FORMAT_TEXT;
}

/* ---- writing ---- */

static void
stderr_write(enum log_level level, const char *msg)
{
	char line[LINE_MAX_BYTES];
	struct timespec ts;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = log_format_line(line, sizeof(line) - 1, current_format, level, &ts,
	    (long)getpid(), msg);
	line[n++] = '\n';
	/* One write() per line so lines from several workers do not interleave. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void
log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	char msg[LOG_MAX_MSG + 1];

	if (!log_enabled(level))
		return;
	if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
		return;
	if (current_dest == LOG_TO_SYSLOG)
		syslog_write(level, msg);
	else
		stderr_write(level, msg);
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
