#!/usr/bin/env python3
"""Soak: the relay under a steady load for minutes (make soak).

Runs ferry with one relay listener on 127.0.0.1 (port 0, slow_consumer =
block, so nothing may be dropped) and ferry-bench's relay mode against it:
PAIRS producer/consumer pairs, each producer at RATE frames a second, for
SECONDS.  The consumers check every frame's sequence number.  Every
INTERVAL seconds ferry's resident memory (/proc/PID/status) and its relay
counters (the admin page) are sampled and printed.

It passes (exit 0) when ferry-bench reports no frame lost, reordered or
undelivered and no error, ferry counted no dropped frame, the last
memory sample is at most MAX_GROWTH above the first one taken after the
warm-up, and the generator sent at least MIN_RATE of the rate asked for
(it owes no frame, so one that cannot keep up shows as a lower rate: the
load was then lighter than the soak says).  Otherwise it exits 1 and prints the end of ferry's log.

Bounded: ferry-bench stops by itself after setup + warm-up + SECONDS (+ 5 s
of draining); the runner kills it past twice that.  Every process is
started here and stopped by its PID, and dies with the runner.  Python 3
standard library only.

Environment (or the options below): SOAK_SECONDS (300), SOAK_PAIRS (1000),
SOAK_RATE (60), SOAK_TLS=1 for the TLS listener.
"""

import argparse
import os
import resource
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from procharness import (Harness, Proc, metrics, rss_kb,  # noqa: E402
                         tail, wait_file)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CERTS = os.path.join(REPO, "certs")


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build",
                    help="where ferry and ferry-bench are (build)")
    ap.add_argument("--seconds", type=float,
                    default=float(env("SOAK_SECONDS", "300")))
    ap.add_argument("--pairs", type=int, default=int(env("SOAK_PAIRS", "1000")))
    ap.add_argument("--rate", type=float, default=float(env("SOAK_RATE", "60")))
    ap.add_argument("--tls", action="store_true", default=env("SOAK_TLS") == "1")
    ap.add_argument("--interval", type=float, default=10.0,
                    help="seconds between memory samples (10)")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds before the memory baseline (10)")
    ap.add_argument("--max-growth", type=float, default=0.20,
                    help="allowed RSS growth after the warm-up (0.20)")
    ap.add_argument("--min-rate", type=float, default=0.99,
                    help="least fraction of the rate the generator must "
                    "send (0.99)")
    a = ap.parse_args()

    build = os.path.join(REPO, a.build) if not os.path.isabs(a.build) else a.build
    ferry = os.path.join(build, "ferry")
    bench = os.path.join(build, "ferry-bench")
    for b in (ferry, bench):
        if not os.access(b, os.X_OK):
            sys.exit("soak: %s is missing (make %s)" % (b, b))

    # Two sockets a pair, and the server's: raise the soft limit for both.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * a.pairs + 1024
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            sys.exit("soak: RLIMIT_NOFILE %d is too low for %d pairs"
                     % (hard, a.pairs))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    h = Harness("ferry-soak-")
    conf = h.path("ferry.conf")
    listener = "[soak]\nmode = relay\nbind = 127.0.0.1:0\nslow_consumer = block\n"
    if a.tls:
        listener += "cert = %s/server.pem\nkey = %s/server.key\n" % (CERTS, CERTS)
    with open(conf, "w") as f:
        f.write("[ferry]\nadmin = 127.0.0.1:0\n" + listener)

    ok = False
    log = None
    try:
        fp = Proc(h, "ferry", [ferry, "-c", conf], merge=True)
        log = fp.out
        if not wait_file(log, r" ready: ", 15):
            sys.exit("soak: ferry did not start:\n" + tail(log))
        port = int(wait_file(log, r":(\d+) \((?:tcp|tls)\) \[soak\]", 1).group(1))
        admin = int(wait_file(log, r":(\d+) \(http\) \[admin\]", 1).group(1))

        args = [bench, "relay", "-p", str(port), "--pairs", str(a.pairs),
                "--rate", "%g" % a.rate, "--duration", "%g" % a.seconds,
                "--warmup", "%g" % a.warmup, "--timeout", "120", "--quiet",
                "--server-pid", str(fp.pid)]
        if a.tls:
            args += ["--tls", "--cafile", os.path.join(CERTS, "ca.pem"),
                     "--sni", "localhost"]
        print("soak: ferry pid %d, %s relay on 127.0.0.1:%d; %d pairs at "
              "%g Hz for %g s (slow_consumer = block)"
              % (fp.pid, "TLS" if a.tls else "plain", port, a.pairs, a.rate,
                 a.seconds), flush=True)
        bp = Proc(h, "ferry-bench", args)

        series = lambda fam: '%s{listener="soak"}' % fam
        t0 = time.monotonic()
        limit = 2 * (a.seconds + a.warmup) + 300
        samples = []        # (t, rss kB, consumers, frames in, dropped)
        baseline = None
        next_t = t0
        while bp.alive():
            if time.monotonic() - t0 > limit:
                bp.stop(0)
                sys.exit("soak: ferry-bench ran past %.0f s; killed" % limit)
            time.sleep(max(0.0, min(1.0, next_t - time.monotonic())))
            if time.monotonic() < next_t:
                continue
            next_t += a.interval
            m = metrics(admin)
            s = (time.monotonic() - t0, rss_kb(fp.pid, tree=False),
                 int(m.get(series("ferry_relay_consumers"), -1)),
                 int(m.get(series("ferry_relay_frames_in_total"), -1)),
                 int(m.get(series("ferry_relay_frames_dropped_total"), -1)))
            if s[1] < 0:
                sys.exit("soak: ferry is gone:\n" + tail(log))
            samples.append(s)
            # The baseline: all pairs up, frames flowing, warm-up over.
            note = ""
            if (baseline is None and s[2] == a.pairs and s[0] >= a.warmup
                    and len(samples) > 1 and s[3] > samples[-2][3]):
                baseline = s
                note = "  <- baseline"
            print("soak: %6.0f s  rss %7.1f MB  consumers %5d  frames in "
                  "%10d  dropped %d%s" % (s[0], s[1] / 1024.0, s[2], s[3],
                                          s[4], note), flush=True)
        bp.stop()
        out = bp.text().splitlines(True)
        final = metrics(admin)
        result = next((l for l in reversed(out) if l.startswith("RESULT")), None)
        if result is None or bp.p.returncode != 0:
            sys.exit("soak: ferry-bench failed (status %s):\n%s"
                     % (bp.p.returncode,
                        "".join(out[-10:]) + tail(bp.err, 10)))
        r = dict(kv.split("=", 1) for kv in result.split()[1:])
        # The last sample with every pair still up, and the baseline.
        full = [s for s in samples if s[2] == a.pairs]
        if baseline is None or not full:
            sys.exit("soak: no sample with all %d pairs up after the warm-up "
                     "(run longer than %g s)" % (a.pairs, a.warmup))
        last = full[-1]
        growth = (last[1] - baseline[1]) / baseline[1]
        dropped = int(final.get(series("ferry_relay_frames_dropped_total"), -1))
        hz = float(r["pair_hz"])
        print("soak: ferry-bench: %s frames sent and %s received in %s s "
              "(%s frames/s, %.1f Hz a pair), p99 %s us, max %s us; lost %s, "
              "reordered %s, undelivered %s, skipped %s, errors %s"
              % (r["sent"], r["frames"], r["duration"], r["frames_per_s"],
                 hz, r["p99_us"], r["max_us"], r["lost"], r["reordered"],
                 r["undelivered"], r["skipped"], r["errors"]))
        print("soak: CPU over the window: ferry %.0f%% (waited %.0f ms for "
              "one), ferry-bench %.0f%% (waited %.0f ms); frames went out "
              "up to %s ms after their time"
              % (100 * float(r["srv_cpu"]), float(r["srv_wait_ms"]),
                 100 * float(r["gen_cpu"]), float(r["gen_wait_ms"]),
                 r["behind_max_ms"]))
        print("soak: ferry: %d frames dropped; RSS %.1f MB after the warm-up "
              "(%.0f s), %.1f MB at %.0f s: %+.1f%%"
              % (dropped, baseline[1] / 1024.0, baseline[0], last[1] / 1024.0,
                 last[0], 100 * growth))
        failures = []
        for k in ("lost", "reordered", "undelivered", "errors"):
            if int(r[k]) != 0:
                failures.append("%s %s" % (k, r[k]))
        if dropped != 0:
            failures.append("ferry dropped %d frames" % dropped)
        # The load asked for, or the soak did not test what it says.
        if hz < a.min_rate * a.rate:
            failures.append("the generator sent %.1f of the %g frames/s a "
                            "pair asked for: it could not keep up (CPU %.0f%%,"
                            " %.0f ms waiting for one), so ferry was not "
                            "under the load asked for; try fewer pairs or a "
                            "quieter machine"
                            % (hz, a.rate, 100 * float(r["gen_cpu"]),
                               float(r["gen_wait_ms"])))
        if growth > a.max_growth:
            failures.append("memory grew %.1f%% (more than %.0f%%)"
                            % (100 * growth, 100 * a.max_growth))
        if failures:
            print("soak: FAILED: " + "; ".join(failures))
            print(tail(log))
        else:
            print("soak: OK")
            ok = True
    finally:
        h.stop_all()
        if ok and not os.environ.get("FERRY_KEEP_LOGS"):
            shutil.rmtree(h.tmp, ignore_errors=True)
        elif os.path.isdir(h.tmp):
            print("soak: log kept in %s" % (log or h.tmp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
