/*
 * log: levelled logging to stderr.
 *
 * One line per event: "2026-11-22T10:00:00.123Z ferry[pid] LEVEL message",
 * LEVEL one of ERROR, WARN, NOTICE, INFO, DEBUG.
 * The level check happens before any formatting, so a disabled debug line
 * costs one comparison.  Messages are format strings written by us; runtime
 * data (peer addresses, uuids) always goes through "%s", never into the
 * format itself.
 *
 * The level and the rate limiter of log_limited() are the module's only
 * state; main sets the level once at start-up.
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
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

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *name);

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
