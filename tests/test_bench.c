/*
 * The load generator end to end: ferry-bench's relay mode against the real
 * ferry for a second, plain at full speed and TLS paced.  It proves the
 * instrument works (frames arrive, in order, none lost), not how fast:
 * no thresholds.  `make bench` is where the figures come from.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryproc.h"
#include "helpers.h"

static struct ferry_proc fp;

static void
cleanup(void)
{
	ferry_cleanup(&fp);
}

/* $FERRY_BENCH, else ferry-bench next to the ferry binary under test. */
static void
bench_bin(char *out, size_t len)
{
	const char *b = getenv("FERRY_BENCH");
	char dir[512];

	if (b != NULL && *b) {
		snprintf(out, len, "%s", b);
		return;
	}
	snprintf(dir, sizeof(dir), "%s", ferry_bin());
	snprintf(out, len, "%s/ferry-bench", dirname(dir));
}

/*
 * Runs ferry-bench with `args` (NULL-terminated), at most `timeout`
 * seconds, and returns its exit status; stdout goes into out.
 */
static int
run_bench(const char *const *args, char *out, size_t outlen, double timeout)
{
	char bin[600];
	const char *argv[32];
	int pfd[2], status = -1, n = 0;
	size_t used = 0;
	struct timespec t0, t;

	bench_bin(bin, sizeof(bin));
	cr_assert(access(bin, X_OK) == 0, "%s: %s (built by make)", bin,
	    strerror(errno));
	argv[n++] = bin;
	for (int i = 0; args[i] != NULL && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	cr_assert(pipe2(pfd, O_CLOEXEC) == 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], STDOUT_FILENO);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		clock_gettime(CLOCK_MONOTONIC, &t);
		double left = timeout - (double)(t.tv_sec - t0.tv_sec) -
		    (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
		if (left <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		ssize_t r = read(pfd[0], out + used, outlen - 1 - used);
		if (r <= 0)
			break;
		used += (size_t)r;
		if (used == outlen - 1)
			break;
	}
	out[used] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

/* The value of `key` on the RESULT line; fails the test if absent. */
static double
result(const char *out, const char *key)
{
	const char *line = strstr(out, "RESULT mode=relay");
	char pat[64];

	cr_assert_not_null(line, "no RESULT line in: %s", out);
	snprintf(pat, sizeof(pat), " %s=", key);
	const char *v = strstr(line, pat);
	cr_assert_not_null(v, "no %s in: %s", key, line);
	return strtod(v + strlen(pat), NULL);
}

static const char relay_conf[] =
    "[devices]\n"
    "mode = relay\n"
    "bind = 127.0.0.1:0\n"
    "slow_consumer = block\n"
    "[devices-tls]\n"
    "mode = relay\n"
    "bind = 127.0.0.1:0\n"
    "cert = " CERT("server.pem") "\n"
    "key = " CERT("server.key") "\n";

/*
 * lat_q_us (what plot.py draws): 14 "q:us" pairs, the quantiles rising to
 * 1, the values never falling, the 0.5 one p50_us and the last max_us.
 */
static void
check_quantiles(const char *out)
{
	const char *v = strstr(strstr(out, "RESULT mode=relay"), " lat_q_us=");
	double q, us, lastq = 0, lastus = 0;
	int n = 0, used;

	cr_assert_not_null(v, "no lat_q_us in: %s", out);
	v += strlen(" lat_q_us=");
	while (sscanf(v, "%lf:%lf%n", &q, &us, &used) == 2) {
		cr_assert_gt(q, lastq, "%s", v);
		cr_assert_geq(us, lastus, "%s", v);
		if (q == 0.5)
			cr_assert_float_eq(us, result(out, "p50_us"), 1e-9);
		lastq = q;
		lastus = us;
		n++;
		v += used;
		if (*v != ',')
			break;
		v++;
	}
	cr_assert_eq(n, 14, "%s", out);
	cr_assert_eq(lastq, 1);
	cr_assert_float_eq(lastus, result(out, "max_us"), 1e-9);
}

static void
check_run(const char *out, int status, int pairs)
{
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "ferry-bench status %d: %s", status, out);
	cr_assert_eq((int)result(out, "p"), pairs);
	cr_assert_gt(result(out, "frames"), 0, "%s", out);
	cr_assert_eq(result(out, "lost"), 0, "%s", out);
	cr_assert_eq(result(out, "reordered"), 0, "%s", out);
	cr_assert_eq(result(out, "errors"), 0, "%s", out);
	cr_assert_eq(result(out, "undelivered"), 0, "%s", out);
	/* A latency was measured, in order: p50 <= p99 <= max. */
	cr_assert_leq(result(out, "p50_us"), result(out, "p99_us"));
	cr_assert_leq(result(out, "p99_us"), result(out, "max_us"));
	check_quantiles(out);
}

Test(bench, relay_plain_full_speed, .timeout = 60, .fini = cleanup)
{
	char port[16], out[4096];

	ferry_start(&fp, relay_conf);
	snprintf(port, sizeof(port), "%d", ferry_port(&fp, "devices"));
	const char *args[] = { "relay", "--quiet", "--port", port,
	    "--pairs", "4", "--duration", "1", "--warmup", "0.2", NULL };
	int status = run_bench(args, out, sizeof(out), 40);
	check_run(out, status, 4);
}

Test(bench, relay_tls_paced, .timeout = 60, .fini = cleanup)
{
	char port[16], out[4096];

	ferry_start(&fp, relay_conf);
	snprintf(port, sizeof(port), "%d", ferry_port(&fp, "devices-tls"));
	const char *args[] = { "relay", "--quiet", "--port", port, "--tls",
	    "--cafile", CERT("ca.pem"), "--pairs", "3", "--rate", "200",
	    "--duration", "1", "--warmup", "0.2", NULL };
	int status = run_bench(args, out, sizeof(out), 40);
	check_run(out, status, 3);
	cr_assert_eq(result(out, "rate"), 200);
}

/*
 * --trace against a paced plain run: one line per frame of the window,
 * each in causal order (due <= sent, the frame reached the consumer's
 * socket between its send and its read), every producer's frames due
 * exactly one period apart whatever the loop did, and the server's CPU
 * reported.
 */
Test(bench, relay_paced_trace, .timeout = 60, .fini = cleanup)
{
	char port[16], pid[16], path[256], out[4096], line[256];
	const long long period = 10000000;	/* 100 Hz */
	long long last_due[4] = { 0 }, last_seq[4];
	long long lines = 0;

	ferry_start(&fp, relay_conf);
	snprintf(port, sizeof(port), "%d", ferry_port(&fp, "devices"));
	snprintf(pid, sizeof(pid), "%d", (int)fp.pid);
	snprintf(path, sizeof(path), "%s/trace.txt", fp.dir);
	const char *args[] = { "relay", "--quiet", "--port", port,
	    "--pairs", "4", "--rate", "100", "--duration", "1", "--warmup",
	    "0.2", "--trace", path, "--server-pid", pid, NULL };
	int status = run_bench(args, out, sizeof(out), 40);
	check_run(out, status, 4);
	cr_assert_leq(result(out, "srv_p50_us"), result(out, "p50_us"));
	cr_assert_leq(result(out, "srv_p99_us"), result(out, "p99_us"));
	cr_assert_gt(result(out, "srv_cpu"), 0, "%s", out);
	cr_assert_gt(result(out, "pair_hz"), 0, "%s", out);

	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		long long recv, sent, due, krx, wake, p, seq;
		if (line[0] == '#')
			continue;
		cr_assert_eq(sscanf(line, "%lld %lld %lld %lld %lld %lld %lld",
		    &recv, &sent, &due, &krx, &wake, &p, &seq), 7, "%s", line);
		cr_assert(p >= 0 && p < 4, "%s", line);
		cr_assert_leq(due, sent, "sent before its time: %s", line);
		cr_assert_leq(wake, recv, "%s", line);
		/*
		 * The kernel stamps in CLOCK_REALTIME, converted once: allow
		 * the conversion 100 us of error (clock slew), not more.
		 */
		cr_assert_neq(krx, 0, "no receive stamp: %s", line);
		cr_assert_leq(sent, krx + 100000, "%s", line);
		cr_assert_leq(krx, recv + 100000, "%s", line);
		if (last_due[p] != 0) {
			cr_assert_eq(seq, last_seq[p] + 1, "%s", line);
			long long gap = due - last_due[p];
			cr_assert(gap >= period - 1 && gap <= period + 1,
			    "pair %lld: frames due %lld ns apart", p, gap);
		}
		last_due[p] = due;
		last_seq[p] = seq;
		lines++;
	}
	fclose(f);
	cr_assert_eq(lines, (long long)result(out, "frames"), "%s", out);
}

/* floor-relay next to ferry-bench; its port, or fails.  *pid set. */
static int
floor_start(pid_t *pid)
{
	char bin[600], dir[512], buf[128] = "";
	int pfd[2], port = 0;
	size_t used = 0;

	bench_bin(dir, sizeof(dir));
	snprintf(bin, sizeof(bin), "%s/floor-relay", dirname(dir));
	cr_assert(access(bin, X_OK) == 0, "%s: %s (built by make)", bin,
	    strerror(errno));
	cr_assert(pipe2(pfd, O_CLOEXEC) == 0);
	*pid = fork();
	cr_assert(*pid >= 0);
	if (*pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], STDOUT_FILENO);
		execl(bin, bin, "--port", "0", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while (used < sizeof(buf) - 1 && strchr(buf, '\n') == NULL) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		cr_assert(poll(&p, 1, 10000) > 0, "floor-relay did not start");
		ssize_t r = read(pfd[0], buf + used, sizeof(buf) - 1 - used);
		cr_assert(r > 0, "floor-relay exited");
		used += (size_t)r;
		buf[used] = '\0';
	}
	close(pfd[0]);
	cr_assert_eq(sscanf(buf, "LISTEN port=%d", &port), 1, "%s", buf);
	return port;
}

/*
 * The benchmark's floor relays ferry-bench's pairs as Ferry does, at
 * full speed and paced: every frame arrives, in order.
 */
Test(bench, floor_relay_relays, .timeout = 60)
{
	char port[16], out[4096];
	pid_t pid;
	int status;

	snprintf(port, sizeof(port), "%d", floor_start(&pid));
	const char *full[] = { "relay", "--quiet", "--port", port,
	    "--pairs", "4", "--duration", "1", "--warmup", "0.2", NULL };
	status = run_bench(full, out, sizeof(out), 40);
	check_run(out, status, 4);
	const char *paced[] = { "relay", "--quiet", "--port", port,
	    "--pairs", "8", "--rate", "200", "--duration", "1", "--warmup",
	    "0.2", NULL };
	status = run_bench(paced, out, sizeof(out), 40);
	check_run(out, status, 8);
	kill(pid, SIGTERM);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "floor-relay status %d", status);
}
