#!/usr/bin/env python3
"""Ferry side by side with its peers, in one run (make bench).

Runs, with the server pinned to core 0 and the load generator (and the sink
backend) to core 1, the median of --runs runs per cell:

  relay     Ferry against the Tornado reference (tests/bench/reference_relay.py)
            for P = 1, 10, 100 pairs at full speed and 100 and 1000 pairs at
            60 Hz, plain and TLS, and against the floor (floor-relay, built
            from tests/bench/floor_relay.c: epoll, one read and one write
            per frame) on plain connections; in the paced cells (60 Hz)
            Ferry again with WebSocket consumers (ferry-bench --ws, the
            producers still TCP), against its TCP consumers in the same run;
  tls       Ferry's forward listener, hitch and HAProxy (one worker each, in
            front of the same sink): TLS 1.3 and 1.2 handshakes/s and server
            CPU per handshake, bulk TLS->plain MB/s and server CPU per GB;
  limits    openssl speed (AES-128-GCM, ECDSA P-256 signatures) and loopback
            TCP (ferry-bench bulk straight into the sink);
  memory    RSS per idle connection at up to 10,000 connections, plain and TLS,
            Ferry against hitch;
  cluster   two Ferry nodes of a cluster over a 3-server NATS cluster
            (JetStream on): producers on node 1 and consumers on node 2
            against the same load on node 1 alone, at 100 and 1000 pairs
            x 60 Hz and 10 pairs at full speed: latency, and the CPU per
            frame of each node and of the NATS servers (all pinned to
            core 0 with the nodes).

Then prints the results as a Markdown table (also saved to
BUILD/bench/results.md, and every run to BUILD/bench/results.json).

Every process it starts is stopped by its PID (and dies with the runner);
every port is on 127.0.0.1, either port 0 announced by the program or a
free port picked here; every client run has a time limit.  Python 3
standard library only; the Tornado reference runs under a python3 that has
Debian's python3-tornado.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from procharness import (Harness, Proc, child_setup,  # noqa: E402
                         cpu_seconds, free_port, rss_kb, wait_file)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CERTS = os.path.join(REPO, "certs")

RELAY_SCENARIOS = [
    # (label, pairs, rate Hz; 0 = full speed)
    ("P=1, full speed", 1, 0),
    ("P=10, full speed", 10, 0),
    ("P=100, full speed", 100, 0),
    ("100 pairs x 60 Hz", 100, 60),
    ("1000 pairs x 60 Hz", 1000, 60),
]

NA_FORWARD = "n/a (forward listener unavailable)"

# The memory cells, in the order run_memory runs them: (kind, server).
MEMORY_CELLS = [("tls", "ferry-forward"), ("tls", "hitch"),
                ("tls", "ferry-relay"), ("plain", "ferry-forward"),
                ("plain", "ferry-relay")]

# The relay servers, in the order each cell runs them: Ferry, the Ferry of
# --baseline-ferry, the floor (plain only), the Tornado reference.
RELAY_SERVERS = ("ferry", "ferry-ws", "base", "floor", "tornado")
RELAY_NAMES = {"ferry": "Ferry", "ferry-ws": "Ferry, WebSocket consumers",
               "base": "Ferry (baseline)", "floor": "floor",
               "tornado": "Tornado"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def parse_result(text):
    """The key=value pairs of the last RESULT line (numbers as floats)."""
    res = None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            res = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                try:
                    res[k] = float(v)
                except ValueError:
                    res[k] = v
    return res


# ---- the runner ------------------------------------------------------------

class Runner(Harness):
    def __init__(self, args):
        super().__init__("ferry-bench-", pin=(os.cpu_count() or 1) >= 2
                         and shutil.which("taskset"))
        self.args = args
        self.build = os.path.abspath(args.build)
        self.ferry = os.path.join(self.build, "ferry")
        self.bench = os.path.join(self.build, "ferry-bench")
        self.floor_relay = os.path.join(self.build, "floor-relay")
        self.results = {"runs": []}
        self.notes = []
        atexit.register(self.cleanup)

    def cleanup(self):
        self.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    # -- clients --

    def quiesce(self, limit=60.0):
        """Waits until every server started here is idle.

        A server that fell behind (the Tornado reference at full speed
        holds seconds of frames in its buffers) goes on working after its
        client has gone; the next cell must not share core 0 with that.
        """
        end = time.monotonic() + limit
        while time.monotonic() < end:
            live = [p for p in self.procs if p.alive()]
            before = sum(cpu_seconds(p.pid) for p in live)
            time.sleep(0.25)
            busy = sum(cpu_seconds(p.pid) for p in live) - before
            if busy <= 0.01:
                return
        log("  servers still busy after %.0f s; going on" % limit)

    def client(self, mode, *opts, timeout=120.0):
        """Runs ferry-bench on the load core; returns its RESULT or None."""
        self.quiesce()
        argv = [self.bench, mode, "--quiet"] + [str(o) for o in opts]
        if self.pin:
            argv = ["taskset", "-c", "1"] + argv
        try:
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=timeout, preexec_fn=child_setup)
        except subprocess.TimeoutExpired:
            log("  ferry-bench %s: no result within %.0f s" % (mode, timeout))
            return None
        res = parse_result(r.stdout)
        if res is None:
            log("  ferry-bench %s failed (%d): %s" % (mode, r.returncode,
                r.stderr.strip()[-300:]))
        elif r.stderr.strip():
            log("  ferry-bench %s: %s" % (mode, r.stderr.strip()[-300:]))
        return res

    # -- servers --

    def sink(self, cpu=1):
        p = Proc(self, "sink", [self.bench, "sink", "--port", "0"], cpu=cpu)
        m = p.wait_line(r"LISTEN port=(\d+)")
        if m is None:
            raise RuntimeError("sink did not start: " + p.why())
        p.port = int(m.group(1))
        return p

    def ferry_proc(self, name, conf, ports, exe=None):
        """Ferry on conf; ports: listener name -> port.  (proc, reason)."""
        exe = exe or self.ferry
        path = self.write(name + ".conf", conf)
        chk = subprocess.run([exe, "--check", "-c", path],
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            return None, (chk.stderr.strip() or chk.stdout.strip())[:200]
        p = Proc(self, name, [exe, "-c", path], cpu=0)
        for port in ports.values():
            if not p.wait_port(port):
                return None, p.why()
        p.ports = ports
        return p, None

    def ferry_relay(self, exe=None, name="ferry-relay"):
        ports = {"devices": free_port(), "devices-tls": free_port()}
        # block: lossless like the seed (its producer waits for each
        # consumer write); at 60 Hz nothing queues, so it changes nothing.
        # warn: the per-connection info lines stay out of the figures.
        conf = """[ferry]
workers = 1
log_level = warn

[devices]
mode = relay
bind = 127.0.0.1:{devices}
slow_consumer = block
handshake_timeout = 600

[devices-tls]
mode = relay
bind = 127.0.0.1:{tls}
slow_consumer = block
handshake_timeout = 600
cert = {certs}/server.pem
key = {certs}/server.key
""".format(devices=ports["devices"], tls=ports["devices-tls"], certs=CERTS)
        p, why = self.ferry_proc(name, conf, ports, exe)
        if p is None:
            raise RuntimeError("%s (relay) did not start: %s" % (
                exe or "ferry", why))
        return p

    def ferry_forward(self, sink_port):
        ports = {"fwd": free_port(), "fwd-plain": free_port()}
        conf = """[ferry]
workers = 1
log_level = warn

[fwd]
mode = forward
bind = 127.0.0.1:{fwd}
cert = {certs}/server.pem
key = {certs}/server.key
backend = 127.0.0.1:{sink}

[fwd-plain]
mode = forward
bind = 127.0.0.1:{plain}
backend = 127.0.0.1:{sink}
""".format(fwd=ports["fwd"], plain=ports["fwd-plain"], sink=sink_port,
           certs=CERTS)
        p, why = self.ferry_proc("ferry-forward", conf, ports)
        if p is None:
            log("  ferry forward listener unavailable: %s" % why)
        return p

    def reference(self, tls):
        argv = [self.tornado_python, os.path.join(REPO, "tests", "bench",
                "reference_relay.py"), "--port", "0"]
        if tls:
            argv += ["--tls", "--cert", os.path.join(CERTS, "server.pem"),
                     "--key", os.path.join(CERTS, "server.key")]
        p = Proc(self, "tornado-tls" if tls else "tornado", argv, cpu=0)
        m = p.wait_line(r"LISTEN port=(\d+)")
        if m is None:
            raise RuntimeError("the Tornado reference did not start: " + p.why())
        p.port = int(m.group(1))
        return p

    def floor(self):
        """The minimal epoll relay (plain only): the relay's floor."""
        p = Proc(self, "floor", [self.floor_relay, "--port", "0"], cpu=0)
        m = p.wait_line(r"LISTEN port=(\d+)")
        if m is None:
            raise RuntimeError("floor-relay did not start: " + p.why())
        p.port = int(m.group(1))
        return p

    def combined_pem(self):
        path = self.path("server-combined.pem")
        if not os.path.exists(path):
            with open(path, "w") as out:
                for f in ("server.pem", "server.key"):
                    with open(os.path.join(CERTS, f)) as src:
                        out.write(src.read())
            os.chmod(path, 0o644)
        return path

    def hitch(self, sink_port):
        exe = shutil.which("hitch") or "/usr/sbin/hitch"
        if not os.path.exists(exe):
            return None
        port = free_port()
        conf = ['frontend = "[127.0.0.1]:%d"' % port,
                'backend = "[127.0.0.1]:%d"' % sink_port,
                'pem-file = "%s"' % self.combined_pem(),
                "workers = 1", "daemon = off", "log-level = 1",
                'ocsp-dir = "%s"' % self.tmp,
                "tls-protos = TLSv1.2 TLSv1.3", "backlog = 1024"]
        if os.getuid() == 0:
            # hitch refuses to run its workers as root.
            conf.append('user = "%s"' % ("_hitch" if _user_exists("_hitch")
                                         else "nobody"))
        path = self.write("hitch.conf", "\n".join(conf) + "\n")
        p = Proc(self, "hitch", [exe, "--config=" + path], cpu=0)
        if not p.wait_port(port):
            log("  hitch did not start: " + p.why())
            return None
        p.port = port
        return p

    def haproxy(self, sink_port):
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(exe):
            return None
        port = free_port()
        conf = """global
    nbthread 1
    maxconn 4000

defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s

frontend fe
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend be

backend be
    server sink 127.0.0.1:{sink}
""".format(port=port, pem=self.combined_pem(), sink=sink_port)
        path = self.write("haproxy.cfg", conf)
        p = Proc(self, "haproxy", [exe, "-f", path, "-db"], cpu=0)
        if not p.wait_port(port):
            log("  haproxy did not start: " + p.why())
            return None
        p.port = port
        return p

    # -- sections --

    # -- the cluster --

    def nats_cluster(self, n=3):
        """n nats-servers with routes and JetStream; [procs] once ready."""
        if shutil.which("nats-server") is None:
            raise RuntimeError("no nats-server (scripts/install-deps.sh "
                               "installs it)")
        ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
        routes = ",".join("nats://127.0.0.1:%d" % r for _, _, r in ports)
        procs = []
        for i, (port, mon, route) in enumerate(ports):
            p = Proc(self, "nats-%d" % i, [
                "nats-server", "-a", "127.0.0.1", "-p", str(port), "-m",
                str(mon), "-n", "s%d" % i, "--cluster_name", "bench",
                "--cluster", "nats://127.0.0.1:%d" % route, "--routes",
                routes, "-js", "-sd", self.path("nats-store-%d" % i)], cpu=0)
            p.port, p.mon = port, mon
            procs.append(p)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if all(_http_has(p.mon, "/routez", '"num_routes": %d' % (n - 1))
                   and _http_has(p.mon, "/jsz", '"leader": "')
                   for p in procs):
                return procs
            time.sleep(0.1)
        raise RuntimeError("the NATS cluster did not form")

    def cluster_node(self, name, nats_port):
        port = free_port()
        conf = """[ferry]
workers = 1
log_level = warn

[cluster]
nats = nats://127.0.0.1:{nats}
node = {name}
subject_prefix = bench

[devices]
mode = relay
bind = 127.0.0.1:{port}
slow_consumer = block
handshake_timeout = 600
""".format(nats=nats_port, name=name, port=port)
        p, why = self.ferry_proc(name, conf, {"devices": port})
        if p is None or p.wait_line(r"joined \(NATS", 30, "err") is None:
            raise RuntimeError("node %s did not join: %s" % (
                name, why or p.why()))
        return p

    def run_cluster(self):
        a = self.args
        nats = self.nats_cluster()
        n1 = self.cluster_node("bench-1", nats[0].port)
        n2 = self.cluster_node("bench-2", nats[1].port)
        others = ",".join(str(p.pid) for p in [n1, n2] + nats)
        for run in range(a.runs):
            for label, pairs, rate in self.cluster_cells():
                for where in ("one node", "across nodes"):
                    opts = ["--port", n1.ports["devices"], "--pairs", pairs,
                            "--keys", 52, "--duration", a.duration,
                            "--warmup", a.warmup, "--parallel", 64,
                            "--server-pid", n1.pid, "--other-pids", others]
                    if where != "one node":
                        opts += ["--consumer-port", n2.ports["devices"]]
                    if rate:
                        opts += ["--rate", rate]
                    res = self.client("relay", *opts, timeout=180)
                    self.record("cluster", label, where, res)
                    log("cluster %-20s %-12s run %d: %s" % (
                        label, where, run + 1, _brief(
                            res, "frames_per_s", "p50_us", "p99_us",
                            "p999_us", "lost", "oth_cpu")))
        for p in [n1, n2] + nats:
            p.stop()
        # The nodes' logs, to see what a cell cost (drops, reconnects).
        outdir = os.path.join(self.build, "bench")
        os.makedirs(outdir, exist_ok=True)
        for p in [n1, n2]:
            shutil.copy(p.err, os.path.join(outdir, "cluster-%s.log" % p.name))

    def cluster_cells(self):
        cells = self.args.relay_cells
        return [c for c in CLUSTER_SCENARIOS if cells is None or
                any(x == c[0] or x == _cell_key(c) for x in cells)]

    def report_cluster(self):
        lines = ["### Cluster: one node against two nodes over NATS", "",
                 "Producers on node 1; consumers on node 1 (one node) or on "
                 "node 2 (across nodes, through a 3-server NATS cluster: "
                 "node 1 on server 1, node 2 on server 2).  52 keys (208-byte "
                 "frames), plain.  CPU per frame in µs: each process's CPU "
                 "(every thread) over the window divided by the frames "
                 "delivered.", "",
                 "| cell | where | frames/s | p50 / p99 / p99.9 (µs) | lost "
                 "| CPU/frame node 1 | node 2 | NATS (3) | whole cluster |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for label, pairs, rate in self.cluster_cells():
            for where in ("one node", "across nodes"):
                rows = [r for r in self.results["runs"]
                        if r["section"] == "cluster" and r["cell"] == label
                        and r["server"] == where and r["result"]]
                if not rows:
                    lines.append("| %s | %s | no result | | | | | | |" % (
                        label, where))
                    continue
                med = lambda f: statistics.median(f(r["result"]) for r in rows)
                cpu = lambda i: med(lambda x: _oth(x, i) / x["frames_per_s"]
                                    * 1e6 if x.get("frames_per_s") else 0)
                nats = med(lambda x: sum(_oth(x, i) for i in (2, 3, 4)) /
                           x["frames_per_s"] * 1e6 if x.get("frames_per_s")
                           else 0)
                total = med(lambda x: sum(_oth(x, i) for i in range(5)) /
                            x["frames_per_s"] * 1e6 if x.get("frames_per_s")
                            else 0)
                lines.append("| %s | %s | %s | %s | %s | %.2f | %.2f | %.2f "
                             "| %.2f |" % (
                                 label, where,
                                 "{:,}".format(int(med(lambda x: x["frames_per_s"]))),
                                 "%s / %s / %s" % tuple(
                                     _lat1(med(lambda x, k=k: x[k]))
                                     for k in ("p50_us", "p99_us", "p999_us")),
                                 _int(med(lambda x: x.get("lost", 0))),
                                 cpu(0), cpu(1), nats, total))
        lines.append("")
        return lines

    def record(self, section, cell, server, res, **extra):
        row = {"section": section, "cell": cell, "server": server,
               "result": res}
        row.update(extra)
        self.results["runs"].append(row)

    def plan(self):
        """Every cell to run, in order, and the steps (a cell's run), for
        the progress lines."""
        a = self.args
        sections = {
            "limits": [("limits", "loopback")],
            "relay": [("relay", "%s %s" % (_cell_key(c), "tls" if tls
                                            else "plain"))
                      for c in self.relay_cells() for tls in self.transports()],
            "tls": [("tls", c) for c in ("hs13", "hs13r", "hs12", "bulk")],
            "memory": [("memory", "%s %s" % (name, kind)) for kind, name in
                       MEMORY_CELLS]}
        self.cells = [c for s in ("limits", "relay", "tls", "memory")
                      if s in a.sections for c in sections[s]]
        self.steps = sum(a.mem_runs if s == "memory" else a.runs
                         for s, _ in self.cells)
        self.step = 0
        self.t0 = time.monotonic()

    def progress(self, section, cell, run):
        """'cell 3/14 relay 1000x60 plain: run 2/3 (step 17/42, 4:12)'."""
        self.step += 1
        runs = self.args.mem_runs if section == "memory" else self.args.runs
        t = int(time.monotonic() - self.t0)
        log("cell %d/%d %s %s: run %d/%d (step %d/%d, %d:%02d elapsed)" % (
            self.cells.index((section, cell)) + 1, len(self.cells), section,
            cell, run + 1, runs, self.step, self.steps, t // 60, t % 60))

    def run_relay(self):
        a = self.args
        want = a.relay_servers
        ferries = {}
        if "ferry" in want:
            ferries["ferry"] = self.ferry_relay()
        if a.baseline_ferry:
            ferries["base"] = self.ferry_relay(a.baseline_ferry,
                                               "ferry-baseline")
        refs = {tls: self.reference(tls) for tls in (False, True)} \
            if "tornado" in want else {}
        floor = self.floor() if "floor" in want else None
        targets, pids = {}, {}
        for tls in (False, True):
            for name, p in ferries.items():
                targets[(name, tls)] = p.ports[
                    "devices-tls" if tls else "devices"]
                pids[(name, tls)] = p.pid
            # The same Ferry, its consumers over WebSocket instead.
            if "ferry" in ferries and "ferry-ws" in want:
                targets[("ferry-ws", tls)] = targets[("ferry", tls)]
                pids[("ferry-ws", tls)] = pids[("ferry", tls)]
            if tls in refs:
                targets[("tornado", tls)] = refs[tls].port
                pids[("tornado", tls)] = refs[tls].pid
        if floor is not None:
            targets[("floor", False)] = floor.port
            pids[("floor", False)] = floor.pid
        # Each cell's servers run one after the other, run after run, so a
        # drift of the shared machine touches them all alike.
        for run in range(a.runs):
            for label, pairs, rate in self.relay_cells():
                for tls in self.transports():
                    self.progress("relay", "%s %s" % (
                        _cell_key((label, pairs, rate)),
                        "tls" if tls else "plain"), run)
                    for server in RELAY_SERVERS:
                        if (server, tls) not in targets:
                            continue
                        if server == "ferry-ws" and not rate:
                            continue
                        # The server's CPU and its wait for one, read by
                        # ferry-bench over the window (schedstat): a stall
                        # that is the machine's shows.
                        opts = ["--port", targets[(server, tls)],
                                "--pairs", pairs, "--keys", 52,
                                "--duration", a.duration,
                                "--warmup", a.warmup, "--parallel", 64,
                                "--server-pid", pids[(server, tls)]]
                        if rate:
                            opts += ["--rate", rate]
                        if server == "ferry-ws":
                            opts += ["--ws"]
                        if tls:
                            opts += ["--tls", "--cafile",
                                     os.path.join(CERTS, "ca.pem")]
                        res = self.client("relay", *opts, timeout=180)
                        self.record("relay", (label, tls), server, res)
                        log("relay %-20s %-5s %-7s run %d: %s" % (
                            label, "tls" if tls else "plain", server, run + 1,
                            _brief(res, "frames_per_s", "p50_us", "p99_us",
                                   "lost", "srv_cpu")))
        for p in list(ferries.values()) + [floor] + list(refs.values()):
            if p is not None:
                p.stop()

    def relay_cells(self):
        cells = self.args.relay_cells
        return [c for c in RELAY_SCENARIOS if cells is None or
                any(x == c[0] or x == _cell_key(c) for x in cells)]

    def transports(self):
        return [t for t in (False, True)
                if ("tls" if t else "plain") in self.args.transports]

    def run_tls(self):
        a = self.args
        sink = self.sink(cpu=1)
        servers = {"ferry": self.ferry_forward(sink.port),
                   "hitch": self.hitch(sink.port),
                   "haproxy": self.haproxy(sink.port)}
        if servers["ferry"] is None:
            self.notes.append("Ferry: " + NA_FORWARD + ".")
        ports = {k: (v.ports["fwd"] if k == "ferry" else v.port)
                 for k, v in servers.items() if v is not None}
        # Every server negotiates the same suite (servers pick different
        # ones by default: Ferry AES-128-GCM, hitch and HAProxy AES-256-GCM
        # with SHA-384), so the CPU compared is the servers', not the
        # ciphers'.
        suite13 = ["--ciphersuites", "TLS_AES_128_GCM_SHA256"]
        # hs13r: each client resumes its previous session (the ticket
        # the server sent last); its first handshake, in the warm-up, is
        # a full one.
        cells = [("hs13", ["--tls13"] + suite13),
                 ("hs13r", ["--tls13", "--resume"] + suite13),
                 ("hs12", ["--tls12", "--ciphers",
                           "ECDHE-ECDSA-AES128-GCM-SHA256"]),
                 ("bulk", ["--tls13"] + suite13)]
        for run in range(a.runs):
            for cell, extra in cells:
                self.progress("tls", cell, run)
                for name in ("ferry", "hitch", "haproxy"):
                    p = servers[name]
                    if p is None or not p.alive():
                        continue
                    mode = "bulk" if cell == "bulk" else "handshake"
                    opts = ["--port", ports[name], "--tls",
                            "--duration", a.duration, "--warmup", 0.5,
                            "--conns", a.bulk_conns if cell == "bulk"
                            else a.hs_conns] + extra
                    self.quiesce()
                    cpu0 = cpu_seconds(p.pid)
                    res = self.client(mode, *opts, timeout=60)
                    time.sleep(0.3)     # let the server finish closing
                    cpu = cpu_seconds(p.pid) - cpu0
                    self.record("tls", cell, name, res, server_cpu_s=cpu)
                    log("tls   %-5s %-8s run %d: %s cpu %.2f s" % (
                        cell, name, run + 1,
                        _brief(res, "handshakes_per_s", "mb_per_s",
                               "resumed", "failures", "errors"), cpu))
        for p in servers.values():
            if p is not None:
                p.stop()
        sink.stop()

    def run_limits(self):
        a = self.args
        core = ["taskset", "-c", "0"] if self.pin else []
        try:
            out = subprocess.run(core + ["openssl", "speed", "-elapsed",
                                 "-seconds", "2", "-bytes", "16384", "-evp",
                                 "aes-128-gcm"], capture_output=True,
                                 text=True, timeout=60).stdout
            m = re.search(r"AES-128-GCM\s+([\d.]+)k", out)
            self.results["aes_gcm_mb_s"] = float(m.group(1)) * 1000 / 1e6 \
                if m else None
            out = subprocess.run(core + ["openssl", "speed", "-elapsed",
                                 "-seconds", "2", "ecdsap256"],
                                 capture_output=True, text=True,
                                 timeout=60).stdout
            m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+"
                          r"([\d.]+)\s+([\d.]+)", out)
            self.results["ecdsa_sign_s"] = float(m.group(1)) if m else None
        except (OSError, subprocess.TimeoutExpired) as e:
            log("  openssl speed: %s" % e)
        log("limits: AES-128-GCM %s MB/s, ECDSA P-256 %s signs/s" % (
            _fmt(self.results.get("aes_gcm_mb_s")),
            _fmt(self.results.get("ecdsa_sign_s"))))
        # The sink stands where the server would: core 0.
        sink = self.sink(cpu=0)
        for run in range(a.runs):
            self.progress("limits", "loopback", run)
            res = self.client("bulk", "--port", sink.port, "--duration",
                              a.duration, "--warmup", 0.5, "--conns",
                              a.bulk_conns, timeout=60)
            self.record("limits", "loopback", "sink", res)
            log("limits loopback run %d: %s" % (run + 1,
                _brief(res, "mb_per_s")))
        sink.stop()

    def idle_conns(self, per_conn_fds):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 30
        n = min(self.args.idle, (hard - 200) // per_conn_fds)
        return n, hard

    def memory_one(self, name, start, port_of, tls, per_conn_fds):
        """One run: fresh server, N idle connections, RSS growth / N."""
        n, hard = self.idle_conns(per_conn_fds)
        p = start()
        if p is None:
            return None
        try:
            self.quiesce()
            before = rss_kb(p.pid)
            argv = [self.bench, "idle", "--quiet", "--port",
                    str(port_of(p)), "--conns", str(n), "--parallel", "256",
                    "--timeout", "120"]
            if tls:
                argv.append("--tls")
            if self.pin:
                argv = ["taskset", "-c", "1"] + argv
            out = self.path("idle.out")
            with open(out, "w") as f:
                idle = subprocess.Popen(argv, stdout=f,
                                        stderr=subprocess.DEVNULL,
                                        preexec_fn=child_setup)
            try:
                ready = wait_file(out, r"READY established=(\d+)", 150,
                                  lambda: idle.poll() is None, poll=0.1)
                if ready is None:
                    log("  idle %s: connections not established" % name)
                    return None
                # TLS 1.3 servers finish after the client: let them settle.
                after, last = rss_kb(p.pid), -1
                for _ in range(20):
                    if after == last:
                        break
                    time.sleep(0.5)
                    last, after = after, rss_kb(p.pid)
                est = int(ready.group(1))
            finally:
                idle.send_signal(signal.SIGTERM)
                try:
                    idle.wait(30)
                except subprocess.TimeoutExpired:
                    idle.kill()
                    idle.wait()
            res = parse_result(open(out).read()) or {}
            if est == 0:
                return None
            return {"conns": est, "rss_before_kb": before,
                    "rss_after_kb": after,
                    "kb_per_conn": (after - before) / est,
                    "closed": res.get("closed"), "nofile_hard": hard}
        finally:
            p.stop()

    def run_memory(self):
        a = self.args
        sink = self.sink(cpu=1)
        fwd_ok = True

        def ferry_relay():
            return self.ferry_relay()

        def ferry_fwd():
            return self.ferry_forward(sink.port)

        def hitch():
            return self.hitch(sink.port)

        cells = [
            ("tls", "ferry-forward", ferry_fwd, lambda p: p.ports["fwd"], True, 2),
            ("tls", "hitch", hitch, lambda p: p.port, True, 2),
            ("tls", "ferry-relay", ferry_relay,
             lambda p: p.ports["devices-tls"], True, 1),
            ("plain", "ferry-forward", ferry_fwd,
             lambda p: p.ports["fwd-plain"], False, 2),
            ("plain", "ferry-relay", ferry_relay,
             lambda p: p.ports["devices"], False, 1),
        ]
        for run in range(a.mem_runs):
            for kind, name, start, port_of, tls, fds in cells:
                self.progress("memory", "%s %s" % (name, kind), run)
                if name == "ferry-forward" and not fwd_ok:
                    continue
                res = self.memory_one(name, start, port_of, tls, fds)
                if res is None and name == "ferry-forward":
                    fwd_ok = False
                self.record("memory", kind, name, res)
                log("memory %-5s %-13s run %d: %s" % (kind, name, run + 1,
                    "%.1f KiB/conn over %d connections" % (
                        res["kb_per_conn"], res["conns"]) if res else "n/a"))
        sink.stop()

    # -- report --

    def runs(self, section, cell, server):
        return [r for r in self.results["runs"] if r["section"] == section
                and r["cell"] == cell and r["server"] == server]

    def med(self, section, cell, server, key, fn=None):
        vals = []
        for r in self.runs(section, cell, server):
            res = r["result"]
            if res is None:
                continue
            v = fn(r) if fn else res.get(key)
            if isinstance(v, (int, float)):
                vals.append(v)
        return statistics.median(vals) if vals else None

    def report(self):
        a = self.args
        R = self.results
        lines = []
        cpu_model = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"model name\s*:\s*(.*)", f.read())
                cpu_model = m.group(1).strip() if m else cpu_model
        except OSError:
            pass
        ossl = subprocess.run(["openssl", "version"], capture_output=True,
                              text=True).stdout.strip()
        date = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
        cmd = "make bench" + (" BENCH_ARGS='%s'" % " ".join(a.passed)
                              if a.passed else "")
        lines.append("Measured %s with `%s` on %d cores (%s), Linux %s, %s; "
                     "%s; median of %d runs per cell (memory: %d)." % (
                         date, cmd, os.cpu_count() or 1, cpu_model,
                         platform.release(), ossl,
                         "server pinned to core 0, load generator and sink "
                         "to core 1" if self.pin else "no pinning (one core)",
                         a.runs, a.mem_runs))
        lines.append("")
        if "relay" in a.sections:
            lines += self.report_relay()
        if "tls" in a.sections or "limits" in a.sections:
            lines += self.report_tls()
        if "memory" in a.sections:
            lines += self.report_memory()
        if "cluster" in a.sections:
            lines += self.report_cluster()
        lines += self.report_targets()
        for n in self.notes:
            lines.append("- " + n)
        return "\n".join(lines) + "\n"

    def report_relay(self):
        a = self.args
        cells = [(label, tls) for label, _, _ in self.relay_cells()
                 for tls in self.transports()]
        out = ["**Device relay**: Ferry against the Tornado reference; "
               "K = 52 floats (208-byte frames); frames/s received by the "
               "consumers in a %g s window after %g s of warm-up; latency "
               "from the producer's send to the consumer's receive." % (
                   a.duration, a.warmup), "",
               "| pairs | transport | Ferry frames/s | Tornado frames/s | "
               "Ferry / Tornado | Ferry p50 / p99 / p99.9 (µs) | "
               "Tornado p50 / p99 / p99.9 (µs) | p99 Tornado / Ferry | "
               "lost (Ferry, Tornado) |",
               "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
        for cell in cells:
            label, tls = cell
            f = {k: self.med("relay", cell, "ferry", k) for k in
                 ("frames_per_s", "p50_us", "p99_us", "p999_us", "lost")}
            t = {k: self.med("relay", cell, "tornado", k) for k in
                 ("frames_per_s", "p50_us", "p99_us", "p999_us", "lost")}
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s, %s |" % (
                label, "TLS" if tls else "plain",
                _int(f["frames_per_s"]), _int(t["frames_per_s"]),
                _ratio(f["frames_per_s"], t["frames_per_s"]),
                _lat(f), _lat(t), _ratio(t["p99_us"], f["p99_us"]),
                _int(f["lost"]), _int(t["lost"])))
        plain = [c for c in cells if not c[1]]
        if plain and "floor" in a.relay_servers:
            out += ["", "**Ferry against the floor**, plain connections: "
                    "the floor is `floor-relay` (tests/bench/floor_relay.c), "
                    "an epoll loop doing one read and one write per frame "
                    "and nothing else, run in turn with Ferry in the same "
                    "runs with the same generator%s.  CPU per frame is the "
                    "server's time on a CPU over the window (schedstat) "
                    "divided by the frames received.  The ratios are the "
                    "medians of each run's value over the floor's in the "
                    "same run (measured back to back); below 1.00× is "
                    "better than the floor." % (
                        "; *Ferry (baseline)* is `%s`" % a.baseline_ferry
                        if a.baseline_ferry else ""), "",
                    "| pairs | relay | frames/s | p50 / p99 / p99.9 (µs) | "
                    "p50 / floor | p99 / floor | CPU per frame (µs) | CPU / "
                    "floor | lost |",
                    "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
            for cell in plain:
                for server in ("ferry", "base", "floor"):
                    if not self.runs("relay", cell, server):
                        continue
                    v = {k: self.med("relay", cell, server, k) for k in
                         ("frames_per_s", "p50_us", "p99_us", "p999_us",
                          "lost")}
                    out.append("| %s | %s | %s | %s | %s | %s | %s | %s | "
                               "%s |" % (
                                   cell[0], RELAY_NAMES[server],
                                   _int(v["frames_per_s"]), _lat(v),
                                   _x(self.med_ratio(cell, "p50_us",
                                                     server=server)),
                                   _x(self.med_ratio(cell, "p99_us",
                                                     server=server)),
                                   _f2(self.med("relay", cell, server, None,
                                                _cpu_per_frame)),
                                   _x(self.med_ratio(cell, None,
                                                     _cpu_per_frame,
                                                     server=server)),
                                   _int(v["lost"])))
        ws_cells = [c for c in cells if self.runs("relay", c, "ferry-ws")]
        if ws_cells:
            out += ["", "**WebSocket consumers against TCP consumers**: the "
                    "same Ferry, the same TCP producers; the consumers "
                    "speak WebSocket (GET /v1/consume/<uuid>, one binary "
                    "message per frame) instead of the device protocol, "
                    "run in turn with the TCP consumers in the same runs.  "
                    "CPU per frame is the server's time on a CPU over the "
                    "window divided by the frames delivered; the ratios "
                    "are the medians of each run's WebSocket value over "
                    "its TCP value (target: CPU at most 1.30×).", "",
                    "| pairs | transport | consumers | frames/s | p50 / p99 "
                    "/ p99.9 (µs) | p99 / TCP | CPU per frame (µs) | "
                    "CPU / TCP | lost |",
                    "|---|---|---|--:|--:|--:|--:|--:|--:|"]
            for cell in ws_cells:
                for server, name in (("ferry", "TCP"),
                                     ("ferry-ws", "WebSocket")):
                    v = {k: self.med("relay", cell, server, k) for k in
                         ("frames_per_s", "p50_us", "p99_us", "p999_us",
                          "lost")}
                    ws = server == "ferry-ws"
                    out.append("| %s | %s | %s | %s | %s | %s | %s | %s | "
                               "%s |" % (
                                   cell[0], "TLS" if cell[1] else "plain",
                                   name, _int(v["frames_per_s"]), _lat(v),
                                   _x(self.med_ratio(cell, "p99_us",
                                                     server=server,
                                                     ref="ferry"))
                                   if ws else "", _f2(self.med(
                                       "relay", cell, server, None,
                                       _cpu_per_frame)),
                                   _x(self.med_ratio(cell, None,
                                                     _cpu_per_frame,
                                                     server=server,
                                                     ref="ferry"))
                                   if ws else "", _int(v["lost"])))
        out += ["", "What each side did in the same runs (medians): frames "
                "a second each producer sent (paced: of those due in the "
                "window; the generator skips none, a late one goes late, "
                "so a generator that cannot keep up shows here); the latency to the frame's arrival in "
                "the consumer's socket (the kernel's receive stamp: without "
                "the generator's own delay in reading it; plain only); the "
                "CPU time of the server and of the generator over the "
                "window, and how long each was runnable but not running "
                "(schedstat: other jobs and kernel threads holding the CPU, "
                "and the wake-up of an idle virtual CPU after each sleep: "
                "the machine's share of the tail).", "",
                "| pairs | transport | server | frames/s a pair sent | to the "
                "socket p50 / p99 / p99.9 (µs) | server CPU | server "
                "waited (ms) | generator CPU | generator waited (ms) |",
                "|---|---|---|--:|--:|--:|--:|--:|--:|"]
        for cell in cells:
            label, tls = cell
            for server in RELAY_SERVERS:
                if not self.runs("relay", cell, server):
                    continue
                v = {k: self.med("relay", cell, server, k) for k
                     in ("pair_hz", "srv_p50_us", "srv_p99_us",
                         "srv_p999_us", "srv_cpu", "srv_wait_ms",
                         "gen_cpu", "gen_wait_ms")}
                sock = "n/a" if tls else _lat(
                    {"p50_us": v["srv_p50_us"], "p99_us": v["srv_p99_us"],
                     "p999_us": v["srv_p999_us"]})
                out.append("| %s | %s | %s | %s | %s | %s | %s | %s "
                           "| %s |" % (
                               label, "TLS" if tls else "plain",
                               RELAY_NAMES[server], _lat1(v["pair_hz"])
                               if v["pair_hz"] is not None else "n/a",
                               sock,
                               _pct(v["srv_cpu"]), _f1(v["srv_wait_ms"]),
                               _pct(v["gen_cpu"]),
                               _f1(v["gen_wait_ms"])))
        out.append("")
        return out

    def med_ratio(self, cell, key, fn=None, server="ferry", ref="floor"):
        """Median over runs of server's value / ref's, run by run."""
        def val(r):
            if r["result"] is None:
                return None
            v = fn(r) if fn else r["result"].get(key)
            return v if isinstance(v, (int, float)) else None
        pairs = zip(self.runs("relay", cell, server),
                    self.runs("relay", cell, ref))
        ratios = []
        for f, g in pairs:
            fv, gv = val(f), val(g)
            if fv is not None and gv:
                ratios.append(fv / gv)
        return statistics.median(ratios) if ratios else None

    def tls_med(self, cell, server, what):
        def cpu_per_hs(r):
            tot = r["result"].get("total")
            return r["server_cpu_s"] / tot * 1e6 if tot else None

        def cpu_per_gb(r):
            tot = r["result"].get("total")
            return r["server_cpu_s"] / (tot / 1e9) if tot else None
        fn = {"cpu_hs": cpu_per_hs, "cpu_gb": cpu_per_gb}.get(what)
        return self.med("tls", cell, server, what, fn)

    def report_tls(self):
        R = self.results
        out = []
        if "tls" in self.args.sections:
            fwd = any(r["server"] == "ferry" and r["result"] is not None
                      for r in R["runs"] if r["section"] == "tls")
            out += ["**TLS termination**: one worker each, in front of the "
                    "same sink; ECDSA P-256 certificate; full handshakes "
                    "(no resumption, X25519) from %d clients, each closed "
                    "after its handshake, and resumed ones (each client "
                    "resuming its previous session by its last ticket), "
                    "every server on the same suite "
                    "(TLS 1.3 AES-128-GCM-SHA256, TLS 1.2 "
                    "ECDHE-ECDSA-AES128-GCM-SHA256); bulk: %d connections writing 16 KiB records "
                    "(TLS 1.3, AES-128-GCM) through to the sink.  Server CPU "
                    "is utime+stime of the server's processes over the run "
                    "(/proc), divided by the handshakes or bytes." % (
                        self.args.hs_conns, self.args.bulk_conns), "",
                    "| measure | Ferry | hitch | HAProxy | Ferry / best peer |",
                    "|---|--:|--:|--:|--:|"]
            rows = [
                ("TLS 1.3 handshakes/s", "hs13", "handshakes_per_s", _int, max),
                ("TLS 1.3 server CPU per handshake (µs)", "hs13", "cpu_hs", _int, min),
                ("TLS 1.3 resumed handshakes/s", "hs13r", "handshakes_per_s", _int, max),
                ("TLS 1.3 server CPU per resumed handshake (µs)", "hs13r", "cpu_hs", _int, min),
                ("TLS 1.2 handshakes/s", "hs12", "handshakes_per_s", _int, max),
                ("TLS 1.2 server CPU per handshake (µs)", "hs12", "cpu_hs", _int, min),
                ("bulk TLS→plain (MB/s)", "bulk", "mb_per_s", _int, max),
                ("bulk server CPU per GB (s)", "bulk", "cpu_gb", _f2, min),
            ]
            for label, cell, what, fmt, best in rows:
                v = {s: self.tls_med(cell, s, what)
                     for s in ("ferry", "hitch", "haproxy")}
                peers = [x for x in (v["hitch"], v["haproxy"]) if x]
                out.append("| %s | %s | %s | %s | %s |" % (
                    label, fmt(v["ferry"]) if fwd else NA_FORWARD,
                    fmt(v["hitch"]), fmt(v["haproxy"]),
                    _ratio(v["ferry"], best(peers)) if peers and fwd
                    else "n/a"))
            out.append("")
        if "limits" in self.args.sections:
            loop = self.med("limits", "loopback", "sink", "mb_per_s")
            bulk = self.tls_med("bulk", "ferry", "mb_per_s")
            hs = self.tls_med("hs13", "ferry", "cpu_hs")
            sign = R.get("ecdsa_sign_s")
            out += ["**Machine limits** (same run, core 0): what one core "
                    "can do at best.", "",
                    "| limit | value | Ferry / limit |", "|---|--:|--:|",
                    "| AES-128-GCM, 16 KiB blocks (openssl speed) | %s MB/s "
                    "| bulk %s |" % (_int(R.get("aes_gcm_mb_s")),
                                    _ratio(bulk, R.get("aes_gcm_mb_s"))),
                    "| ECDSA P-256 signatures (openssl speed) | %s /s (%s µs "
                    "each) | TLS 1.3 CPU per handshake = %s signatures |" % (
                        _int(sign), _f1(1e6 / sign) if sign else "n/a",
                        _f1(hs / (1e6 / sign)) if hs and sign else "n/a"),
                    "| loopback TCP (ferry-bench bulk → sink, plain) | %s "
                    "MB/s | bulk %s |" % (_int(loop), _ratio(bulk, loop)),
                    ""]
        return out

    def report_memory(self):
        out = ["**Memory per idle connection**: the growth of the server "
               "processes' RSS (/proc) with N idle connections open "
               "(TLS handshakes completed), divided by N.", "",
               "| connections | listener | N | Ferry KiB/conn | hitch KiB/conn "
               "| Ferry / hitch |", "|---|---|--:|--:|--:|--:|"]

        def n_of(kind, server):
            v = self.med("memory", kind, server, None,
                         lambda r: r["result"]["conns"])
            return _int(v)

        def kb(kind, server):
            return self.med("memory", kind, server, None,
                            lambda r: r["result"]["kb_per_conn"])
        hitch = kb("tls", "hitch")
        for kind, server, label in (("tls", "ferry-forward", "forward"),
                                    ("tls", "ferry-relay", "relay"),
                                    ("plain", "ferry-forward", "forward"),
                                    ("plain", "ferry-relay", "relay")):
            v = kb(kind, server)
            is_tls = kind == "tls"
            na = NA_FORWARD if server == "ferry-forward" and v is None \
                else "n/a"
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                "TLS" if is_tls else "plain", label, n_of(kind, server),
                _f1(v) if v is not None else na,
                _f1(hitch) if is_tls and server == "ferry-forward" else "",
                _ratio(v, hitch) if is_tls and server == "ferry-forward"
                and v else ""))
        out.append("")
        n, hard = self.idle_conns(2)
        if n < self.args.idle:
            out.append("N is %d where each connection costs the server two "
                       "descriptors (client and backend): RLIMIT_NOFILE's "
                       "hard limit here is %d." % (n, hard))
            out.append("")
        return out

    def report_targets(self):
        out = ["**Targets** (from issue 5, as ratios in this run):", "",
               "| target | measured | met |", "|---|--:|:-:|"]

        def row(label, value, ok):
            out.append("| %s | %s | %s |" % (label, value,
                       "n/a" if ok is None else ("yes" if ok else "**no**")))
        if "relay" in self.args.sections:
            f = self.med("relay", ("P=10, full speed", False), "ferry",
                         "frames_per_s")
            t = self.med("relay", ("P=10, full speed", False), "tornado",
                         "frames_per_s")
            r = f / t if f and t else None
            row("relay P=10 throughput ≥ 30× Tornado", _x(r),
                None if r is None else r >= 30)
            f = self.med("relay", ("100 pairs x 60 Hz", False), "ferry",
                         "p99_us")
            t = self.med("relay", ("100 pairs x 60 Hz", False), "tornado",
                         "p99_us")
            r = t / f if f and t else None
            row("relay p99 at 100 × 60 Hz ≥ 10× lower than Tornado",
                _x(r), None if r is None else r >= 10)
            f = self.med("relay", ("1000 pairs x 60 Hz", False), "ferry",
                         "p99_us")
            row("relay p99 at 1000 × 60 Hz < 1 ms",
                "%s µs" % _lat1(f) if f else "n/a",
                None if f is None else f < 1000)
            cell = ("1000 pairs x 60 Hz", False)
            for key, what in (("p50_us", "p50"), ("p99_us", "p99")):
                r = self.med_ratio(cell, key)
                row("relay %s at 1000 × 60 Hz ≤ the floor's" % what, _x(r),
                    None if r is None else r <= 1.0)
        if "tls" in self.args.sections:
            for cell, label in (("hs13", "TLS 1.3"), ("hs12", "TLS 1.2")):
                f = self.tls_med(cell, "ferry", "cpu_hs")
                peers = [x for x in (self.tls_med(cell, "hitch", "cpu_hs"),
                                     self.tls_med(cell, "haproxy", "cpu_hs"))
                         if x]
                r = f / min(peers) if f and peers else None
                row("%s server CPU per handshake ≤ 0.8× best peer" % label,
                    _x(r), None if r is None else r <= 0.8)
            f = self.tls_med("bulk", "ferry", "mb_per_s")
            peers = [x for x in (self.tls_med("bulk", "hitch", "mb_per_s"),
                                 self.tls_med("bulk", "haproxy", "mb_per_s"))
                     if x]
            r = f / max(peers) if f and peers else None
            fc = self.tls_med("bulk", "ferry", "cpu_gb")
            pc = [x for x in (self.tls_med("bulk", "hitch", "cpu_gb"),
                              self.tls_med("bulk", "haproxy", "cpu_gb")) if x]
            rc = fc / min(pc) if fc and pc else None
            row("bulk ≥ 1.2× best peer's MB/s (or ≤ 0.8× its CPU per GB)",
                "%s MB/s, %s CPU/GB" % (_x(r), _x(rc)),
                None if r is None else (r >= 1.2 or
                                        (rc is not None and rc <= 0.8)))
        if "memory" in self.args.sections:
            f = self.med("memory", "tls", "ferry-forward", None,
                         lambda r: r["result"]["kb_per_conn"])
            h = self.med("memory", "tls", "hitch", None,
                         lambda r: r["result"]["kb_per_conn"])
            r = f / h if f is not None and h else None
            row("idle TLS connection memory ≤ ¼ of hitch's", _x(r),
                None if r is None else r <= 0.25)
        out.append("")
        return out


# ---- formatting -----------------------------------------------------------

def _user_exists(name):
    try:
        import pwd
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _fmt(v):
    return "n/a" if v is None else "%.0f" % v


def _int(v):
    return "n/a" if v is None else "{:,}".format(int(round(v)))


def _f1(v):
    return "n/a" if v is None else "%.1f" % v


def _f2(v):
    return "n/a" if v is None else "%.2f" % v


def _pct(v):
    return "n/a" if v is None else "%d%%" % int(round(100 * v))


def _x(r):
    return "n/a" if r is None else "%.2f×" % r


def _ratio(a, b):
    return _x(a / b) if a is not None and b else "n/a"


def _lat(d):
    if d["p50_us"] is None:
        return "n/a"
    return "%s / %s / %s" % (_lat1(d["p50_us"]), _lat1(d["p99_us"]),
                             _lat1(d["p999_us"]))


def _lat1(v):
    return "{:,}".format(int(round(v))) if v >= 100 else "%.1f" % v


def _cpu_per_frame(r):
    """The server's CPU per frame received (µs), from a relay RESULT."""
    res = r["result"]
    if not res or not res.get("frames_per_s") or "srv_cpu" not in res:
        return None
    return res["srv_cpu"] / res["frames_per_s"] * 1e6


CLUSTER_SCENARIOS = [
    ("100 pairs x 60 Hz", 100, 60),
    ("1000 pairs x 60 Hz", 1000, 60),
    ("P=10, full speed", 10, 0),
]


def _oth(res, i):
    """Process i's CPU seconds a second from a RESULT's oth_cpu=a:b:..."""
    v = res.get("oth_cpu")
    parts = str(v).split(":") if v is not None else []
    try:
        return float(parts[i])
    except (IndexError, ValueError):
        return 0.0


def _http_has(port, path, needle):
    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=2) as r:
            return needle in r.read().decode()
    except OSError:
        return False


def _cell_key(c):
    """A scenario's short name: 1000x60, 100x60, P=10, ..."""
    label, pairs, rate = c
    return "%dx%d" % (pairs, rate) if rate else "P=%d" % pairs


def _brief(res, *keys):
    if res is None:
        return "no result"
    return " ".join("%s=%s" % (k, _fmt(res[k]) if isinstance(res[k], float)
                               else res[k]) for k in keys if k in res)


def find_tornado_python():
    for py in ("/usr/bin/python3", sys.executable, shutil.which("python3")):
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import tornado"], capture_output=True).returncode == 0:
            return py
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="where ferry and "
                    "ferry-bench are (the Makefile's BUILD)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell (3)")
    ap.add_argument("--mem-runs", type=int, default=3,
                    help="runs per memory cell (3)")
    ap.add_argument("--duration", type=float, default=3.0,
                    help="measured seconds per run (3)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="relay warm-up seconds per run (1)")
    ap.add_argument("--hs-conns", type=int, default=32,
                    help="concurrent handshake clients (32)")
    ap.add_argument("--bulk-conns", type=int, default=4,
                    help="bulk connections (4)")
    ap.add_argument("--idle", type=int, default=10000,
                    help="idle connections for the memory cells (10000)")
    ap.add_argument("--only", default="relay,tls,limits,memory,cluster",
                    help="sections to run (relay,tls,limits,memory,cluster)")
    ap.add_argument("--relay-cells", default=None,
                    help="relay cells to run, e.g. 1000x60,100x60,P=10 "
                    "(all)")
    ap.add_argument("--relay-servers", default="ferry,ferry-ws,floor,tornado",
                    help="relay servers (ferry,ferry-ws,floor,tornado; "
                    "ferry-ws: Ferry with WebSocket consumers, paced cells)")
    ap.add_argument("--baseline-ferry", default=None, metavar="PATH",
                    help="another ferry binary (an earlier build) to run "
                    "in the relay cells beside this one, against the floor")
    ap.add_argument("--transports", default="plain,tls",
                    help="relay transports (plain,tls)")
    ap.add_argument("--quick", action="store_true",
                    help="one short run per cell, 1000 idle connections")
    args = ap.parse_args()
    # The command line as make passes it, less the build directory.
    args.passed, skip = [], False
    for x in sys.argv[1:]:
        if skip or x.startswith("--build="):
            skip = False
            continue
        if x == "--build":
            skip = True
            continue
        args.passed.append(x)
    if args.quick:
        args.runs, args.mem_runs = 1, 1
        args.duration, args.warmup, args.idle = 1.0, 0.5, 1000
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    args.relay_cells = None if args.relay_cells is None else [
        c.strip() for c in args.relay_cells.split(",") if c.strip()]
    args.relay_servers = [x.strip() for x in args.relay_servers.split(",")]
    args.transports = [x.strip() for x in args.transports.split(",")]

    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(1))
    r = Runner(args)
    for exe in (r.ferry, r.bench, r.floor_relay) + (
            (args.baseline_ferry,) if args.baseline_ferry else ()):
        if not os.access(exe, os.X_OK):
            sys.exit("run.py: %s is missing: run make first" % exe)
    r.tornado_python = find_tornado_python()
    if "relay" in args.sections and "tornado" in args.relay_servers and \
            r.tornado_python is None:
        sys.exit("run.py: no python3 with tornado (apt-get install "
                 "python3-tornado)")
    if not r.pin:
        r.notes.append("Fewer than two cores (or no taskset): nothing "
                       "was pinned.")
    log("ferry-bench runner: sections %s, %d run(s) per cell, temp %s" % (
        ",".join(args.sections), args.runs, r.tmp))
    started = time.monotonic()
    r.plan()
    try:
        for s in ("limits", "relay", "tls", "memory", "cluster"):
            if s in args.sections:
                getattr(r, "run_" + s)()
    except KeyboardInterrupt:
        sys.exit("run.py: interrupted")
    except RuntimeError as e:
        sys.exit("run.py: %s" % e)
    text = r.report()
    log("ferry-bench runner: done in %.0f s" % (time.monotonic() - started))
    outdir = os.path.join(r.build, "bench")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(r.results, f, indent=1, default=str)
    print(text)
    # The figures (tests/bench/plot.py, gnuplot): SVGs beside the results.
    plot = subprocess.run([sys.executable, os.path.join(REPO, "tests", "bench",
                           "plot.py"), outdir], timeout=300)
    if plot.returncode != 0:
        log("run.py: plot.py failed (%d): no figures" % plot.returncode)


if __name__ == "__main__":
    main()
