"""Starts a ferry of its own for the WebSocket and browser tests (a relay
listener per slow-consumer policy, plain and TLS, and the admin page),
on ports the kernel picks, read back from its log; stops it by its PID.
Not a test module itself."""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import ferry_client  # noqa: E402

LISTEN_RE = re.compile(r"(relay|admin) listening on (\S+):(\d+) \((\w+)\) \[([\w.-]+)\]")
CA = os.path.join(ROOT, "certs/ca.pem")

CONFIG = """\
[ferry]
admin = 127.0.0.1:0
drain_timeout = 2
{ferry_extra}

[plain]
mode = relay
bind = 127.0.0.1:0
grace = 1
handshake_timeout = 2
max_message_bytes = 64k

[tls]
mode = relay
bind = 127.0.0.1:0
grace = 1
cert = {root}/certs/server.pem
key = {root}/certs/server.key

[origins]
mode = relay
bind = 127.0.0.1:0
origins = https://good.example, http://also.example

[drop]
mode = relay
bind = 127.0.0.1:0
slow_consumer = drop
queue_bytes = 4k

[disconnect]
mode = relay
bind = 127.0.0.1:0
slow_consumer = disconnect
queue_bytes = 4k

[block]
mode = relay
bind = 127.0.0.1:0
slow_consumer = block
queue_bytes = 4k

[blockbig]
mode = relay
bind = 127.0.0.1:0
slow_consumer = block
queue_bytes = 1m
"""

NAMES = ("plain", "tls", "origins", "drop", "disconnect", "block", "blockbig",
         "admin")


class Ferry:
    def __init__(self, ferry_extra="", config=None, names=NAMES, files=None):
        binary = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build/ferry"))
        self.dir = tempfile.TemporaryDirectory(prefix="ferry-ws-")
        conf = os.path.join(self.dir.name, "ferry.conf")
        for name, text in (files or {}).items():
            with open(os.path.join(self.dir.name, name), "w") as f:
                f.write(text)
        with open(conf, "w") as f:
            f.write((config or CONFIG).format(root=ROOT, ferry_extra=ferry_extra,
                                              dir=self.dir.name))
        self.proc = subprocess.Popen([binary, "-c", conf],
                                     stderr=subprocess.PIPE, text=True)
        self.ports = {}
        self.log = []
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(self.ports) < len(names):
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if len(self.ports) < len(names):
            self.stop()
            raise RuntimeError("ferry did not start:\n" + "".join(self.log[-10:]))

    def _pump(self):
        for line in self.proc.stderr:
            self.log.append(line)
            m = LISTEN_RE.search(line)
            if m:
                self.ports.setdefault(m.group(5), int(m.group(3)))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()

    def admin_url(self, path):
        return f"http://127.0.0.1:{self.ports['admin']}{path}"

    def api(self, path, headers=None):
        req = urllib.request.Request(self.admin_url(path), headers=headers or {})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def device(self, uuid):
        for d in self.api("/api/devices"):
            if d["uuid"] == uuid:
                return d
        return None

    def wait_device(self, uuid, pred, timeout=10):
        deadline = time.monotonic() + timeout
        d = None
        while time.monotonic() < deadline:
            d = self.device(uuid)
            if d is not None and pred(d):
                return d
            time.sleep(0.05)
        raise AssertionError(f"device {uuid}: never as wanted: {d}")

    def producer(self, name, uuid, keys, tls=False):
        p = ferry_client.Producer("127.0.0.1", self.ports[name], uuid, keys,
                                  tls=tls, cafile=CA if tls else None)
        p.connect()
        return p

    def consumer(self, name, uuid, tls=False):
        c = ferry_client.Consumer("127.0.0.1", self.ports[name], uuid,
                                  tls=tls, cafile=CA if tls else None)
        c.connect()
        return c


def frame(i, n):
    """Frame i of a stream of n-key frames: distinct, checkable values."""
    return struct.pack(f"<{n}f", *[float(i * 10 + k) for k in range(n)])
