"""WebSocket clients across the nodes of a Ferry cluster: one nats-server
(JetStream) and two ferry nodes of its own, on ports the kernel picks.
A WebSocket producer on one node reaches TCP and WebSocket consumers on
the other, and a TCP producer there reaches a WebSocket consumer on the
first, byte-exact and in order from the first frame the link carries; a
uuid no node holds is a 404.  Skipped
without nats-server (scripts/install-deps.sh installs it)."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import ferryweb
from ferryweb import frame
from wsclient import BINARY, TEXT, WS, HandshakeRefused

NODE = """\
[ferry]
admin = 127.0.0.1:0

[cluster]
nats = nats://127.0.0.1:{nats}
node = {node}

[devices]
mode = relay
bind = 127.0.0.1:0
"""
N = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipIf(shutil.which("nats-server") is None, "needs nats-server")
class Cluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="ferry-wsc-")
        cls.nats_port = free_port()
        cls.nats = subprocess.Popen(
            ["nats-server", "-a", "127.0.0.1", "-p", str(cls.nats_port),
             "-js", "-sd", os.path.join(cls.tmp.name, "js")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cls.nats_port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        cls.nodes = {}
        try:
            for name in ("a", "b"):
                cls.nodes[name] = ferryweb.Ferry(
                    config=NODE.replace("{nats}", str(cls.nats_port))
                    .replace("{node}", name), names=("devices", "admin"))
            for f in cls.nodes.values():
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and \
                        not any("joined" in line for line in f.log):
                    time.sleep(0.1)
                if not any("joined" in line for line in f.log):
                    raise RuntimeError("a node did not join:\n" + "".join(f.log[-10:]))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for f in cls.nodes.values():
            f.stop()
        cls.nats.terminate()
        cls.nats.wait(timeout=10)
        cls.tmp.cleanup()

    def ws(self, node, path):
        return WS("127.0.0.1", self.nodes[node].ports["devices"], path)

    @staticmethod
    def stream(send):
        """Sends frame i = 0, 1, ... every 5 ms from a thread until stopped
        (the link between the nodes forms meanwhile)."""
        stop = threading.Event()

        def run():
            i = 0
            while not stop.is_set() and i < 100000:
                send(i)
                i += 1
                time.sleep(0.005)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return stop, t

    def test_websocket_producer_to_consumers_on_another_node(self):
        p = self.ws("a", "/v1/produce/wsc-1?keys=x,y")
        wc = self.ws("b", "/v1/consume/wsc-1")
        self.assertEqual(wc.recv_message(), (TEXT, b'{"uuid": "wsc-1", "keys": ["x", "y"]}'))
        tc = self.nodes["b"].consumer("devices", "wsc-1")
        self.assertEqual(list(tc.keys), ["x", "y"])
        stop, t = self.stream(lambda i: p.send_binary(frame(i, 2)))
        try:
            # From the first frame each gets, N in a row, byte-exact.
            op, data = wc.recv_message()
            i0 = int(struct.unpack("<f", data[:4])[0]) // 10
            for i in range(i0 + 1, i0 + N):
                self.assertEqual(wc.recv_message(), (BINARY, frame(i, 2)))
            j0 = int(tc.recv(timeout=10)[0]) // 10
            for j in range(j0 + 1, j0 + N):
                self.assertEqual(tc.recv(timeout=10), struct.unpack("<2f", frame(j, 2)))
        finally:
            stop.set()
            t.join(5)
        for c in (p, wc):
            c.shutdown()
        tc.close()

    def test_tcp_producer_to_a_websocket_consumer_on_another_node(self):
        p = self.nodes["b"].producer("devices", "wsc-2", ["k"])
        c = self.ws("a", "/v1/consume/wsc-2")
        self.assertEqual(c.recv_message()[0], TEXT)
        stop, t = self.stream(lambda i: p.send((float(i),)))
        try:
            op, data = c.recv_message()
            i0 = int(struct.unpack("<f", data)[0])
            for i in range(i0 + 1, i0 + N):
                self.assertEqual(c.recv_message(), (BINARY, struct.pack("<f", i)))
        finally:
            stop.set()
            t.join(5)
        c.shutdown()
        p.close()

    def test_a_uuid_no_node_holds_is_404(self):
        with self.assertRaises(HandshakeRefused) as e:
            self.ws("a", "/v1/consume/wsc-nobody")
        self.assertEqual(e.exception.status, 404)


if __name__ == "__main__":
    unittest.main()
