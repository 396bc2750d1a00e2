/*
 * log: levelled logging, to stderr or to syslog, as text or JSON.
 *
 * One line per event.  As text on stderr:
 *   "2026-11-22T10:00:00.123Z ferry[pid] LEVEL message",
 * LEVEL one of ERROR, WARN, NOTICE, INFO, DEBUG.  As JSON, one object per
 * line: {"time":"2026-11-22T10:00:00.123Z","level":"info","pid":123,
 * "msg":"..."}, the message escaped (control characters as \uXXXX, bytes
 * that are not well-formed UTF-8 as U+FFFD), so that every line parses.
 * To syslog, one datagram per line on the local socket (/dev/log), facility
 * daemon, tag "ferry", the level as its severity; the body is "LEVEL
 * message" or the JSON object.
 *
 * The level check happens before any formatting, so a disabled debug line
 * costs one comparison.  Messages are format strings written by us; runtime
 * data (peer addresses, uuids) always goes through "%s", never into the
 * format itself.  A message is cut at LOG_MAX_MSG bytes.
 *
 * The level, where lines go and the rate limiter of log_limited() are the
 * module's only state; main sets them once at start-up, before it forks
 * (the workers share the syslog socket).
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
	/*
	 * Not a setting: the few normal events an operator must see whatever
	 * the level short of error (the addresses listened on, ready,
	 * stopped), labelled NOTICE so that they do not read as warnings.
	 */
	LOG_NOTICE = 4,
};

/* [ferry] log: in the order of its values' names ("stderr", "syslog"). */
enum log_dest {
	LOG_TO_STDERR = 0,
	LOG_TO_SYSLOG = 1,
};

/* [ferry] log_format: in the order of "text", "json". */
enum log_format {
	LOG_FORMAT_TEXT = 0,
	LOG_FORMAT_JSON = 1,
};

#define LOG_MAX_MSG 2047

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *name);

/*
 * Where lines go from now on, and in what form.  For syslog, a datagram
 * socket is connected to `syslog_path` (NULL: /dev/log) now, so that a
 * missing syslog is an error at start rather than lines lost without a
 * word: -1 with errno then, and nothing changes.  Lines the socket cannot
 * take at once (a syslog daemon that is behind) are dropped, never waited
 * for, and the next line that goes says how many; a daemon restarted is
 * reconnected to.  Returns 0 on success.
 */
int log_open(enum log_dest dest, enum log_format format,
    const char *syslog_path);
/* Back to text on stderr; closes the syslog socket. */
void log_close(void);

/*
 * The line as it goes to stderr, without its newline: text or JSON, for a
 * message of any bytes.  Writes at most len - 1 bytes and a '\0' (a line
 * too long is cut, never inside an escape or a UTF-8 sequence); returns
 * the length written.
 */
size_t log_format_line(char *buf, size_t len, enum log_format format,
    enum log_level level, const struct timespec *ts, long pid,
    const char *msg);

void log_write(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/*
 * Like log_write, for events a remote peer can cause at will (failed
 * handshakes, protocol errors): at most LOG_BURST lines a second get through,
 * and the next line that does says how many were suppressed.  A port scan
 * therefore cannot flood the log.
 */
#define LOG_BURST 20
void log_limited(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * The same limit, kept by its owner, for a kind of line that must not use
 * up the others' budget nor be crowded out by them (forward's lines, one
 * per connection, have one per listener).  Zero-initialised.
 */
struct log_limit {
	time_t window;			/* the second being counted */
	unsigned count;			/* lines let through in it */
	unsigned long suppressed;	/* left out since last taken */
};
/* Whether a line may go out now; if not, it is counted as left out. */
bool log_limit_pass(struct log_limit *l);
/* The lines left out since the last call; the count starts again. */
unsigned long log_limit_take(struct log_limit *l);

/* NOTICE shows whenever warnings do; the others by their order. */
#define log_rank(lvl) ((lvl) == LOG_NOTICE ? LOG_WARN : (lvl))
#define log_enabled(lvl) (log_rank(lvl) <= log_get_level())

#define LOGE(...) do { if (log_enabled(LOG_ERROR)) log_write(LOG_ERROR, __VA_ARGS__); } while (0)
#define LOGW(...) do { if (log_enabled(LOG_WARN)) log_write(LOG_WARN, __VA_ARGS__); } while (0)
#define LOGN(...) do { if (log_enabled(LOG_NOTICE)) log_write(LOG_NOTICE, __VA_ARGS__); } while (0)
#define LOGI(...) do { if (log_enabled(LOG_INFO)) log_write(LOG_INFO, __VA_ARGS__); } while (0)
#define LOGD(...) do { if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
