/*
 * process: fork worker processes and supervise them (Tornado's
 * fork_processes).
 *
 * process_fork() returns only in the children, with their task id
 * (0..n-1).  The parent stays inside it as a supervisor:
 *  - a child that dies by a signal or exits non-zero is restarted with the
 *    same task id, until more than `max_restarts` restarts have been needed;
 *    then the parent stops as if sent SIGTERM (below: the hook sees one,
 *    the children get one) and exits 1 once every child has exited (a
 *    worker drains first: none is left orphaned);
 *  - a child that exits 0 is not restarted; when all have, the parent
 *    exits 0;
 *  - SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 sent to the parent are
 *    passed on to every child; after SIGTERM/SIGINT nothing is restarted.
 *    A hook may act on them in the parent first, and change what is
 *    passed on: a worker restarted later is a copy of the parent, so the
 *    parent must reload what the workers reload on SIGHUP (certificates),
 *    or a restart would bring back the old ones; an upgrade that succeeded
 *    turns into a SIGTERM (the old workers drain).
 *  - each child calls process_ready() once it serves; when every first
 *    child has, the parent's on_ready hook runs (once).
 *  - a child whose supervisor dies gets SIGTERM (PR_SET_PDEATHSIG), so no
 *    orphaned worker keeps serving the ports.
 * The supervisor waits with sigwaitinfo(), so it needs no handlers and no
 * global state.  Listening sockets bound before the call are shared by
 * the children (the kernel spreads the accepts).
 */
#ifndef FERRY_PROCESS_H
#define FERRY_PROCESS_H

/* Online CPUs (at least 1). */
int process_cpu_count(void);

/* num_processes <= 0: one per CPU.  Never returns in the parent. */
int process_fork(int num_processes, int max_restarts);

struct process_hooks {
	/*
	 * In the parent, for each signal above: returns the signal to act on
	 * and pass on (sig itself, SIGTERM, or 0 for none).
	 */
	int (*on_signal)(int sig, void *arg);
	/* In the parent, once every worker has called process_ready(). */
	void (*on_ready)(void *arg);
	/* In the parent, every `tick` seconds when tick > 0. */
	void (*on_tick)(void *arg);
	double tick;
	void *arg;
};

/* In a worker: tells the parent it serves. */
void process_ready(void);

/* process_fork with hooks (NULL: none). */
int process_fork_hooks(int num_processes, int max_restarts,
    const struct process_hooks *hooks);

#endif
