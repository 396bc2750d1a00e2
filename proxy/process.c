/* process: see process.h. */
#define _GNU_SOURCE
#include "process.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define MAX_CHILDREN 1024
/* A worker's word that it serves: queued, so none is lost. */
#define PROCESS_READY_SIGNAL SIGRTMIN

int
process_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (int)n : 1;
}

static void
supervised_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
	sigaddset(set, PROCESS_READY_SIGNAL);
}

void
process_ready(void)
{
	kill(getppid(), PROCESS_READY_SIGNAL);
}

/* Returns 0 in the child (after restoring its signal mask), else the pid. */
static pid_t
spawn(const sigset_t *oldmask)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid == 0) {
		/* A worker outliving its supervisor would hold the ports. */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
			_exit(1);
		sigprocmask(SIG_SETMASK, oldmask, NULL);
	}
	return pid;
}

static void
signal_all(const pid_t *pids, int n, int sig)
{
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], sig);
}

static void
describe_exit(int status, char *out, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(out, len, "killed by signal %d (%s)",
		    WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(out, len, "exited with status %d",
		    WEXITSTATUS(status));
}

int
process_fork(int num_processes, int max_restarts)
{
	return process_fork_hooks(num_processes, max_restarts, NULL);
}

int
process_fork_hooks(int num_processes, int max_restarts,
    const struct process_hooks *hooks)
{
	pid_t pids[MAX_CHILDREN];
	bool ready[MAX_CHILDREN] = { false };
	sigset_t set, oldmask;
	int live = 0, restarts = 0, nready = 0;
	bool stopping = false, gave_up = false;

	if (num_processes <= 0)
		num_processes = process_cpu_count();
	if (num_processes > MAX_CHILDREN)
		num_processes = MAX_CHILDREN;
	supervised_signals(&set);
	/* Blocked before forking: no signal can slip past sigwaitinfo. */
	sigprocmask(SIG_BLOCK, &set, &oldmask);
	LOGI("starting %d worker processes", num_processes);
	for (int id = 0; id < num_processes; id++) {
		pid_t pid = spawn(&oldmask);
		if (pid == 0)
			return id;
		if (pid < 0) {
			LOGE("fork: %s", strerror(errno));
			signal_all(pids, id, SIGTERM);
			exit(1);
		}
		pids[id] = pid;
		live++;
		LOGI("worker %d started (pid %ld)", id, (long)pid);
	}

	while (live > 0) {
		siginfo_t si;
		int sig;

		if (hooks != NULL && hooks->tick > 0) {
			struct timespec ts = { (time_t)hooks->tick,
			    (long)((hooks->tick - (double)(time_t)hooks->tick) *
			    1e9) };
			sig = sigtimedwait(&set, &si, &ts);
			if (sig < 0 && errno == EAGAIN) {
				if (hooks->on_tick != NULL)
					hooks->on_tick(hooks->arg);
				continue;
			}
		} else {
			sig = sigwaitinfo(&set, &si);
		}
		if (sig < 0)
			continue;	/* EINTR */
		if (sig == PROCESS_READY_SIGNAL) {
			for (int i = 0; i < num_processes; i++)
				if (pids[i] == si.si_pid && !ready[i]) {
					ready[i] = true;
					if (++nready == num_processes &&
					    hooks != NULL &&
					    hooks->on_ready != NULL)
						hooks->on_ready(hooks->arg);
				}
			continue;
		}
		if (sig != SIGCHLD) {
			if (hooks != NULL && hooks->on_signal != NULL)
				sig = hooks->on_signal(sig, hooks->arg);
			if (sig == SIGTERM || sig == SIGINT)
				stopping = true;
			if (sig != 0)
				signal_all(pids, num_processes, sig);
			continue;
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			if (pid <= 0)
				break;
			int id = -1;
			for (int i = 0; i < num_processes; i++)
				if (pids[i] == pid)
					id = i;
			if (id < 0)
				continue;
			pids[id] = 0;
			live--;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
				LOGI("worker %d (pid %ld) exited", id,
				    (long)pid);
				continue;
			}
			char why[96];
			describe_exit(status, why, sizeof(why));
			if (stopping) {
				LOGI("worker %d (pid %ld) %s", id, (long)pid,
				    why);
				continue;
			}
			if (++restarts > max_restarts) {
				LOGE("worker %d (pid %ld) %s; too many "
				    "restarts (%d), giving up", id, (long)pid,
				    why, max_restarts);
				/*
				 * As if told SIGTERM, then wait for the others
				 * to drain and exit: gone now, we would leave
				 * them orphaned, serving their clients for up
				 * to drain_timeout.
				 */
				gave_up = stopping = true;
				if (hooks != NULL && hooks->on_signal != NULL)
					(void)hooks->on_signal(SIGTERM,
					    hooks->arg);
				signal_all(pids, num_processes, SIGTERM);
				continue;
			}
			LOGW("worker %d (pid %ld) %s; restarting (%d of %d)",
			    id, (long)pid, why, restarts, max_restarts);
			pid_t npid = spawn(&oldmask);
			if (npid == 0)
				return id;
			if (npid < 0) {
				LOGE("fork: %s", strerror(errno));
				signal_all(pids, num_processes, SIGTERM);
				exit(1);
			}
			pids[id] = npid;
			live++;
			LOGI("worker %d restarted (pid %ld)", id, (long)npid);
		}
	}
	exit(gave_up ? 1 : 0);
}
