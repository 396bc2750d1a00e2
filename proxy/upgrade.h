/*
 * upgrade: a new ferry takes over the listening sockets of a running one
 * (nginx's binary upgrade; also how a multi-worker ferry applies a reload
 * that changes its listeners).
 *
 *   old: upgrade_spawn()   forks and execs the new binary with the
 *                          listening sockets (fd 3 on, LISTEN_FDS and
 *                          LISTEN_FDNAMES: the socket activation protocol,
 *                          sockpool.h) and the write end of a pipe
 *                          (FERRY_UPGRADE_FD); both keep accepting;
 *   new: upgrade_ready()   once it serves (every worker ready) writes one
 *                          byte to that pipe;
 *   old:                   on that byte, drains and exits; if the pipe
 *                          closes first (the new one failed), or nothing
 *                          comes within UPGRADE_TIMEOUT, carries on as if
 *                          nothing happened.
 * No connection is refused: the sockets (and their accept queues) are the
 * same in both processes, and the old one stops accepting only once the
 * new one does.
 *
 * `ferry --upgrade` sends SIGUSR2 to the pid in [ferry] pid_file and waits
 * for the file to name the new process (upgrade_signal).
 */
#ifndef FERRY_UPGRADE_H
#define FERRY_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

#define UPGRADE_TIMEOUT 60.0

/*
 * Starts `exe` with `argv` and the n sockets (names: their listeners).
 * 0 with *pid and *ready_fd (the read end, close-on-exec), or -1 with err.
 */
int upgrade_spawn(const char *exe, char *const argv[], const int *fds,
    char (*names)[CONFIG_NAME_LEN], size_t n, pid_t *pid, int *ready_fd,
    char *err, size_t errlen);

/*
 * After reading from ready_fd: 1 the new process is ready, 0 it failed
 * (reaped, `why` says how), -1 try again later.
 */
int upgrade_result(int ready_fd, pid_t pid, char *why, size_t whylen);

/* Waits (blocking, up to UPGRADE_TIMEOUT) for upgrade_result != -1. */
int upgrade_wait(int ready_fd, pid_t pid, char *why, size_t whylen);

/*
 * In the new process: the pipe to report on (taken from the environment,
 * made close-on-exec), or -1 when not started by an upgrade.
 */
int upgrade_inherited_fd(void);

/* Reports readiness on fd (from upgrade_inherited_fd) and closes it. */
void upgrade_ready(int fd);

/* Writes our pid into path.  0, or -1 with err. */
int upgrade_write_pidfile(const char *path, char *err, size_t errlen);

/* Removes path if it still names us. */
void upgrade_remove_pidfile(const char *path);

/*
 * ferry --upgrade: SIGUSR2 to the process named by path, then waits until
 * the file names another (the new one, ready).  0 with the new pid in
 * *npid, or -1 with err.
 */
int upgrade_signal(const char *path, pid_t *opid, pid_t *npid, char *err,
    size_t errlen);

#endif
