/*
 * admin: the admin listener, a minimal HTTP/1.0 responder on a stream:
 * GET /metrics answers the Prometheus text page (metrics_render), GET /
 * a short index, anything else 404/405.  One request per connection; a
 * request head over 8 KiB or slower than the listener's timeout is closed.
 */
#ifndef FERRY_ADMIN_H
#define FERRY_ADMIN_H

#include "tcpserver.h"

/* A tcpserver_handler; arg is unused. */
void admin_handle_stream(struct stream *s, const struct sockaddr *sa,
    socklen_t salen, void *arg);

#endif
