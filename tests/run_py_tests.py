#!/usr/bin/env python3
"""Runs the Python test suites (tests/test_*.py) from `make test`.

If the ferry binary given on the command line can run a relay, it is
started on loopback ports chosen by the kernel (port 0; the ports are read
from its "relay listening on" log lines) and FERRY_RELAY / FERRY_RELAY_TLS
tell the end-to-end tests where it is.  The server is stopped by its PID.
"""
import os
import re
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LISTEN_RE = re.compile(r"relay listening on (\S+):(\d+) \((tcp|tls)\)")


def start_relay(binary):
    """Starts ferry with two relay listeners; returns (proc, env) or None."""
    cmd = [binary, "--relay", "127.0.0.1:0", "--relay-tls", "127.0.0.1:0",
           "--cert", os.path.join(ROOT, "certs/server.pem"),
           "--key", os.path.join(ROOT, "certs/server.key")]
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
    return proc, {"FERRY_RELAY": found["tcp"], "FERRY_RELAY_TLS": found["tls"],
                  "FERRY_CAFILE": os.path.join(ROOT, "certs/ca.pem")}


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build/ferry")
    started = start_relay(binary) if os.path.exists(binary) else None
    proc = None
    if started:
        proc, env = started
        os.environ.update(env)
    try:
        suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py",
                                                    top_level_dir=HERE)
        result = unittest.TextTestRunner(verbosity=1).run(suite)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    failed = len(result.failures) + len(result.errors)
    print(f"python: {result.testsRun - failed} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
