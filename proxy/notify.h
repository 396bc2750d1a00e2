/*
 * notify: systemd's service notification protocol (sd_notify(3)), spoken
 * directly: one datagram of "KEY=value" lines to the AF_UNIX socket named
 * by $NOTIFY_SOCKET (a path, or '@' for the abstract namespace).  Without
 * the variable (not started by systemd with Type=notify) every call does
 * nothing.  The variables are left in the environment: a new ferry
 * started by an upgrade reports to the same socket (as MAINPID).
 *
 * What ferry sends (main.c): READY=1 once every listener is bound and every
 * worker is ready, RELOADING=1 then READY=1 around a reload, STOPPING=1
 * when a drain begins, STATUS= lines, and WATCHDOG=1 every half of
 * WatchdogSec.
 */
#ifndef FERRY_NOTIFY_H
#define FERRY_NOTIFY_H

/* 1 sent, 0 no socket to send to, -1 the send failed (errno). */
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Seconds between two WATCHDOG=1 (half of WatchdogSec), or 0 when systemd
 * watches no process, or another one ($WATCHDOG_PID).
 */
double notify_watchdog_interval(void);

#endif
