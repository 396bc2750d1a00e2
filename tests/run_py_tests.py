#!/usr/bin/env python3
"""Runs the Python test suites (tests/test_*.py) from `make test`.

If the ferry binary given on the command line can run a relay, it is
started on loopback ports chosen by the kernel (port 0; the ports are read
from its "relay listening on" log lines) and FERRY_RELAY / FERRY_RELAY_TLS
tell the end-to-end tests where it is; FERRY_RELAY_GRACE and
FERRY_RELAY_TAKEOVER say how it is configured (a short grace period and
refused takeovers, so that "connection lost" and "refused" can be seen).
The server is stopped by its PID.

With nats-server on the PATH, two more ferry processes run as the two
nodes of a cluster over one NATS server with JetStream (its own port and
store): FERRY_CLUSTER_A and FERRY_CLUSTER_B are their relay listeners.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LISTEN_RE = re.compile(r"relay listening on (\S+):(\d+) \((tcp|tls)\)")
GRACE = "1"
CONFIG = """\
[ferry]
drain_timeout = 2

[py-relay]
mode = relay
bind = 127.0.0.1:0
grace = {grace}
takeover = refuse

[py-relay-tls]
mode = relay
bind = 127.0.0.1:0
grace = {grace}
takeover = refuse
cert = {root}/certs/server.pem
key = {root}/certs/server.key
"""


def start_relay(binary, confdir):
    """Starts ferry with two relay listeners; returns (proc, env) or None."""
    conf = os.path.join(confdir, "ferry.conf")
    with open(conf, "w") as f:
        f.write(CONFIG.format(grace=GRACE, root=ROOT))
    cmd = [binary, "-c", conf]
    try:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        print(f"run_py_tests: cannot start {binary}: {e}")
        return None
    found = {}
    log = []

    def pump():
        for line in proc.stderr:
            log.append(line)
            m = LISTEN_RE.search(line)
            if m:
                found[m.group(3)] = f"{m.group(1)}:{m.group(2)}"

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(found) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if len(found) < 2:
        proc.kill()
        proc.wait()
        print("run_py_tests: ferry did not start a relay; end-to-end "
              "tests will be skipped\n" + "".join(log[-5:]))
        return None
    proc.log = log
    return proc, {"FERRY_RELAY": found["tcp"], "FERRY_RELAY_TLS": found["tls"],
                  "FERRY_CAFILE": os.path.join(ROOT, "certs/ca.pem"),
                  "FERRY_RELAY_GRACE": GRACE, "FERRY_RELAY_TAKEOVER": "refuse"}


CLUSTER_CONFIG = """\
[ferry]
drain_timeout = 2

[cluster]
nats = nats://127.0.0.1:{nats}
node = {node}
subject_prefix = py{pid}

[py-relay]
mode = relay
bind = 127.0.0.1:0
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(binary, confdir, nats, node):
    """A ferry node of the cluster; (proc, "host:port") once it joined."""
    conf = os.path.join(confdir, node + ".conf")
    with open(conf, "w") as f:
        f.write(CLUSTER_CONFIG.format(nats=nats, node=node, pid=os.getpid()))
    proc = subprocess.Popen([binary, "-c", conf], stderr=subprocess.PIPE,
                            text=True)
    proc.log = []
    found = {}

    def pump():
        for line in proc.stderr:
            proc.log.append(line)
            m = LISTEN_RE.search(line)
            if m:
                found["tcp"] = f"{m.group(1)}:{m.group(2)}"
            if " joined (NATS" in line:
                found["joined"] = True

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(found) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if len(found) < 2:
        stop(proc)
        print(f"run_py_tests: node {node} did not join:\n" +
              "".join(proc.log[-5:]))
        return None
    return proc, found["tcp"]


def start_cluster(binary, confdir):
    """nats-server and two nodes; ([procs], env) or None."""
    nats = free_port()
    try:
        server = subprocess.Popen(
            ["nats-server", "-a", "127.0.0.1", "-p", str(nats), "-js",
             "-sd", os.path.join(confdir, "nats")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        print("run_py_tests: no nats-server; the cluster tests will be skipped")
        return None
    server.log = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", nats), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    procs, env = [server], {}
    for node, var in (("py-a", "FERRY_CLUSTER_A"), ("py-b", "FERRY_CLUSTER_B")):
        started = start_node(binary, confdir, nats, node)
        if started is None:
            for p in procs:
                stop(p)
            return None
        procs.append(started[0])
        env[var] = started[1]
    return procs, env


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build/ferry")
    confdir = tempfile.TemporaryDirectory(prefix="ferry-py-")
    started = start_relay(binary, confdir.name) if os.path.exists(binary) else None
    proc = None
    if started:
        proc, env = started
        os.environ.update(env)
    cluster = None
    if os.path.exists(binary):
        cluster = start_cluster(binary, confdir.name)
    if cluster:
        os.environ.update(cluster[1])
    result = None
    try:
        suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py",
                                                    top_level_dir=HERE)
        result = unittest.TextTestRunner(verbosity=1).run(suite)
    finally:
        if proc is not None:
            stop(proc)
        for p in reversed(cluster[0] if cluster else []):
            stop(p)
            if result is not None and not result.wasSuccessful() and p.log:
                print("run_py_tests: a node's log (tail):\n" + "".join(p.log[-15:]))
        confdir.cleanup()
        if proc is not None and (result is None or not result.wasSuccessful()):
            print("run_py_tests: the relay's log (tail):\n" + "".join(proc.log[-30:]))
    failed = len(result.failures) + len(result.errors)
    print(f"python: {result.testsRun - failed} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
