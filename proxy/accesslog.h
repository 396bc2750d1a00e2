/*
 * accesslog: a listener's access log (`access_log = PATH`): one line per
 * connection, written when it closes, with the time, the listener, the
 * peer, the bytes each way (plaintext for TLS), how long it lasted and
 * how it ended (the stream's close reason: eof, reset, timeout, tls...).
 * As text:
 *   2026-12-03T10:00:00.123Z web 127.0.0.1:51234 in=12 out=34 duration=1.500 result=eof
 * or as one JSON object per line (log_format = json):
 *   {"time":"...","listener":"web","peer":"127.0.0.1:51234","bytes_in":12,
 *    "bytes_out":34,"duration":1.500,"result":"eof"}
 * Every value is ours or an address: nothing to escape.
 *
 * The file is opened O_APPEND (workers share it; each line is one write),
 * and reopened by accesslog_reopen() (SIGUSR1, after logrotate moved it).
 * Reference counted: a connection that outlives its listener (a drain, a
 * reload) keeps the log it writes to.
 */
#ifndef FERRY_ACCESSLOG_H
#define FERRY_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct accesslog;

/* NULL with err ("PATH: reason") when the file cannot be opened. */
struct accesslog *accesslog_open(const char *path, const char *listener,
    enum log_format format, char *err, size_t errlen);
struct accesslog *accesslog_ref(struct accesslog *a);
/* NULL is ignored. */
void accesslog_unref(struct accesslog *a);

/* The file at its path anew (logged when it cannot be: the old one stays). */
void accesslog_reopen(struct accesslog *a);

void accesslog_write(struct accesslog *a, const char *peer,
    uint64_t bytes_in, uint64_t bytes_out, double duration,
    const char *result);

#endif
