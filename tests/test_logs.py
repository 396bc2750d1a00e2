"""The log as the real binary writes it ([ferry] log and log_format).

With log_format = json every line ferry writes on stderr is one JSON
object (Python's json parses it) with time, level, pid and msg, the
message escaped whatever a client sent.  With log = syslog every event is
a datagram on /dev/log and nothing goes to stderr: the test runs ferry in
a mount namespace of its own (unshare) whose /dev/log is the test's
socket, and is skipped where no namespace can be made.  The formatting
itself is tested byte by byte in tests/test_log.c.

`make test` says where ferry is (FERRY_BIN).
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "ferry"))

CONF = """\
[ferry]
log_level = debug
drain_timeout = 2
{extra}

[devices]
mode = relay
bind = 127.0.0.1:0
"""

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return None


class Ferry:
    """ferry -c CONF (optionally under a wrapper), stderr to a file,
    stopped by its PID."""

    def __init__(self, tmp, extra, wrapper=()):
        self.conf = os.path.join(tmp, "ferry.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(extra=extra))
        self.errpath = os.path.join(tmp, "stderr")
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(list(wrapper) + [FERRY, "-c", self.conf],
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def stderr(self):
        with open(self.errpath, "rb") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def produce(port, uuid):
    """Registers a producer of uuid (bytes) with key 'k', sends one frame."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x0a")
        s.recv(1)
        s.sendall(struct.pack(">I", len(uuid)) + uuid)
        if s.recv(1) != b"\x00":
            return
        s.sendall(struct.pack(">I", 1) + b"k")
        s.recv(1)
        s.sendall(struct.pack("<f", 1.0))


def consume_bad(port, uuid):
    """A consumer with a uuid that breaks the rules: refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x0b")
        s.recv(1)
        s.sendall(struct.pack(">I", len(uuid)) + uuid)
        s.recv(1)


@unittest.skipUnless(os.access(FERRY, os.X_OK), "ferry is not built")
class JsonLog(unittest.TestCase):
    def test_every_stderr_line_is_a_json_object(self):
        with tempfile.TemporaryDirectory(prefix="ferry-logs-") as tmp:
            f = Ferry(tmp, "log_format = json")
            try:
                ready = wait_for(lambda: b'"msg":"ready: ' in f.stderr())
                self.assertTrue(ready, f.stderr().decode(errors="replace"))
                m = re.search(rb"relay listening on 127\.0\.0\.1:(\d+) ",
                              f.stderr())
                port = int(m.group(1))
                # A uuid with what JSON must escape, and one that is not
                # UTF-8 (refused, and logged).
                produce(port, 'q"\\ é'.encode())
                consume_bad(port, b"\xff\xfe\"\\")
                wait_for(lambda: f.stderr().count(b"closed") +
                         f.stderr().count(b"left") >= 2)
            finally:
                rc = f.stop()
            self.assertEqual(rc, 0)
            raw = f.stderr()
        self.assertTrue(raw.endswith(b"\n"))
        lines = raw.decode("utf-8").splitlines()   # UTF-8, strictly
        self.assertGreaterEqual(len(lines), 6, raw)
        objs = []
        for line in lines:
            obj = json.loads(line)
            self.assertEqual(list(obj), ["time", "level", "pid", "msg"], line)
            self.assertRegex(obj["time"], TIME_RE)
            self.assertIn(obj["level"], ("error", "warn", "notice", "info",
                                         "debug"))
            self.assertEqual(obj["pid"], f.proc.pid)
            self.assertIsInstance(obj["msg"], str)
            objs.append(obj)
        msgs = [o["msg"] for o in objs]
        self.assertTrue(any(m.startswith("relay listening on 127.0.0.1:")
                            for m in msgs), msgs)
        self.assertIn("stopped", msgs)
        # (the relay writes a uuid's backslash and non-ASCII bytes as \xNN)
        self.assertTrue(any("registered uuid 'q\"\\x5c \\xc3\\xa9'" in m
                            for m in msgs), msgs)
        levels = {o["msg"]: o["level"] for o in objs}
        self.assertEqual(levels["stopped"], "notice")


def namespace_wrapper(sock_path):
    """A command prefix that runs the rest in a mount namespace whose
    /dev/log is sock_path, or None where unshare cannot make one."""
    if shutil.which("unshare") is None:
        return None
    script = ('mount -t tmpfs ferry-test /dev && ln -s "$0" /dev/log '
              '&& exec "$@"')
    for flags in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        argv = ["unshare"] + flags + ["--propagation", "private", "sh", "-c",
                                      script, sock_path]
        try:
            ok = subprocess.run(argv + ["true"], capture_output=True,
                                timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return argv
    return None


@unittest.skipUnless(os.access(FERRY, os.X_OK), "ferry is not built")
class SyslogLog(unittest.TestCase):
    def run_with_syslog(self, fmt):
        """ferry with log = syslog in a namespace; (datagrams, stderr, pid)."""
        with tempfile.TemporaryDirectory(prefix="ferry-syslog-") as tmp:
            path = os.path.join(tmp, "log")
            wrapper = namespace_wrapper(path)
            if wrapper is None:
                self.skipTest("no mount namespace here (unshare)")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.bind(path)
                s.settimeout(10)
                f = Ferry(tmp, "log = syslog\nlog_format = %s" % fmt, wrapper)
                got = []
                try:
                    while not any(b"ready: " in d for d in got):
                        got.append(s.recv(65536))
                finally:
                    rc = f.stop()
                self.assertEqual(rc, 0, f.stderr())
                s.settimeout(0.5)
                try:
                    while True:
                        got.append(s.recv(65536))
                except socket.timeout:
                    pass
                return got, f.stderr(), f.proc.pid

    def test_text_datagrams(self):
        got, err, pid = self.run_with_syslog("text")
        self.assertEqual(err, b"", "nothing on stderr")
        head = re.compile(rb"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d "
                          rb"ferry\[%d\]: (.*)$" % pid, re.S)
        bodies = {}
        for d in got:
            m = head.match(d)
            self.assertIsNotNone(m, d)
            bodies[m.group(2)] = int(m.group(1))
        listening = [b for b in bodies if b.startswith(b"NOTICE relay "
                                                       b"listening on")]
        self.assertTrue(listening, bodies)
        self.assertEqual(bodies[listening[0]], 3 * 8 + 5, "daemon.notice")
        self.assertEqual(bodies[b"NOTICE stopped"], 3 * 8 + 5)

    def test_json_datagrams(self):
        got, err, pid = self.run_with_syslog("json")
        self.assertEqual(err, b"")
        msgs = []
        for d in got:
            body = d.split(b"]: ", 1)[1]
            obj = json.loads(body.decode("utf-8"))
            self.assertEqual(obj["pid"], pid)
            msgs.append(obj["msg"])
        self.assertIn("stopped", msgs)


@unittest.skipUnless(os.access(FERRY, os.X_OK), "ferry is not built")
class SyslogMissing(unittest.TestCase):
    def test_unreachable_syslog_stops_the_start(self):
        with tempfile.TemporaryDirectory(prefix="ferry-syslog-") as tmp:
            path = os.path.join(tmp, "absent")
            wrapper = namespace_wrapper(path)
            if wrapper is None:
                self.skipTest("no mount namespace here (unshare)")
            f = Ferry(tmp, "log = syslog", wrapper)
            rc = f.proc.wait(timeout=15)
            err = f.stderr().decode()
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"ferry\.conf:4: \[ferry\] log: cannot reach "
                              r"syslog at /dev/log: No such file or directory")


if __name__ == "__main__":
    unittest.main()
