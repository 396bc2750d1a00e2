"""WebSocket clients on relay listeners, end to end against the real
binary (a ferry of its own, ferryweb.py): ws:// and wss://, consume and
produce, mixed with TCP clients, byte-exact frames in order; every
hostile case of issue 14; a slow WebSocket consumer under each
slow_consumer policy; the admin page's JSON API."""
import os
import socket
import struct
import time
import unittest
import urllib.error
import urllib.request

import ferryweb
from ferryweb import frame
from wsclient import (BINARY, CLOSE, CONT, PING, PONG, TEXT, WS,
                      HandshakeRefused, http_status, open_socket, read_head)

CA = ferryweb.CA
N = 200          # frames per stream
FLOOD = 32000    # 8 MB of 256-byte frames: more than socket buffers hold


def setUpModule():
    global F
    F = ferryweb.Ferry()


def tearDownModule():
    F.stop()


def ws(name, path, **kw):
    tls = name == "tls"
    return WS("127.0.0.1", F.ports[name], path, tls=tls, cafile=CA if tls else None, **kw)


def refused(name, path, **kw):
    try:
        c = ws(name, path, **kw)
    except HandshakeRefused as e:
        return e
    c.shutdown()
    raise AssertionError(f"{path}: upgraded")


def refused_on(name, path, **kw):
    return refused(name, path, **kw).status


class Relay(unittest.TestCase):
    def test_tcp_producer_to_ws_and_wss_consumers(self):
        p = F.producer("plain", "e2e-1", ["a", "b", "c"])
        wc = ws("plain", "/v1/consume/e2e-1")
        wsc = ws("tls", "/v1/consume/e2e-1")
        tc = F.consumer("tls", "e2e-1", tls=True)
        for c in (wc, wsc):
            op, data = c.recv_message()
            self.assertEqual((op, data), (TEXT, b'{"uuid": "e2e-1", "keys": ["a", "b", "c"]}'))
        F.wait_device("e2e-1", lambda d: d["consumers"] == 3)
        for i in range(N):
            p.send(struct.unpack("<3f", frame(i, 3)))
        for c in (wc, wsc):
            for i in range(N):
                self.assertEqual(c.recv_message(), (BINARY, frame(i, 3)), f"frame {i}")
        for i in range(N):
            self.assertEqual(tc.recv(timeout=10), struct.unpack("<3f", frame(i, 3)))
        d = F.device("e2e-1")
        self.assertEqual((d["consumers_tcp"], d["consumers_websocket"]), (1, 2))
        self.assertEqual(d["producer"]["kind"], "tcp")
        for c in (wc, wsc):
            c.close()
            self.assertEqual(c.recv_close(), 1000)
            c.shutdown()
        tc.close()
        p.close()

    def test_wss_producer_to_ws_and_tcp_consumers(self):
        p = ws("tls", "/v1/produce/e2e%2F2?keys=x,y")
        wc = ws("plain", "/v1/consume/e2e%2F2")
        self.assertEqual(wc.recv_message(), (TEXT, b'{"uuid": "e2e/2", "keys": ["x", "y"]}'))
        tc = F.consumer("plain", "e2e/2")
        self.assertEqual(list(tc.keys), ["x", "y"])
        F.wait_device("e2e/2", lambda d: d["consumers"] == 2)
        # One message may hold several whole frames.
        for i in range(0, N, 4):
            p.send_binary(b"".join(frame(j, 2) for j in range(i, i + 4)))
        for i in range(N):
            self.assertEqual(wc.recv_message(), (BINARY, frame(i, 2)))
            self.assertEqual(tc.recv(timeout=10), struct.unpack("<2f", frame(i, 2)))
        self.assertEqual(F.device("e2e/2")["producer"]["kind"], "websocket")
        self.assertEqual(F.device("e2e/2")["frames_in"], N)
        # The producer goes: after the grace period its consumers are told.
        p.close()
        self.assertEqual(p.recv_close(), 1000)
        self.assertEqual(wc.recv_close(), 1001)
        wc.shutdown()
        tc.close()


class Refusals(unittest.TestCase):
    def test_unknown_uuid_is_404_before_the_upgrade(self):
        e = refused("plain", "/v1/consume/nobody-here")
        self.assertEqual(e.status, 404)
        self.assertIn("no producer", e.body)

    def test_refusals_are_counted(self):
        def metric(name):
            page = urllib.request.urlopen(F.admin_url("/metrics"), timeout=10).read().decode()
            for line in page.splitlines():
                if line.startswith(name + '{listener="origins"}'):
                    return int(line.split()[-1])
            return 0
        errors, refused = (metric("ferry_relay_protocol_errors_total"),
                           metric("ferry_relay_refused_total"))
        self.assertEqual(refused_on("origins", "/v1/consume/x",
                                    headers={"Sec-WebSocket-Version": "7"}), 426)
        self.assertEqual(refused_on("origins", "/v1/consume/nobody"), 404)
        self.assertEqual(metric("ferry_relay_protocol_errors_total"), errors + 1)
        self.assertEqual(metric("ferry_relay_refused_total"), refused + 1)

    def test_unknown_endpoint_is_404(self):
        self.assertEqual(refused("plain", "/v2/nothing").status, 404)

    def test_missing_upgrade_is_426(self):
        e = refused("plain", "/v1/consume/x", headers={"Upgrade": None, "Connection": None})
        self.assertEqual(e.status, 426)
        self.assertIn("Sec-WebSocket-Version: 13", e.head)

    def test_wrong_version_is_426(self):
        self.assertEqual(refused("plain", "/v1/consume/x",
                                 headers={"Sec-WebSocket-Version": "8"}).status, 426)

    def test_bad_key_is_400(self):
        self.assertEqual(refused("plain", "/v1/consume/x",
                                 headers={"Sec-WebSocket-Key": "short"}).status, 400)
        self.assertEqual(refused("plain", "/v1/consume/x",
                                 headers={"Sec-WebSocket-Key": None}).status, 400)

    def test_no_connection_upgrade_is_400(self):
        self.assertEqual(refused("plain", "/v1/consume/x",
                                 headers={"Connection": "keep-alive"}).status, 400)

    def test_bad_producer_requests_are_400(self):
        self.assertEqual(refused("plain", "/v1/produce/p").status, 400)          # no keys
        self.assertEqual(refused("plain", "/v1/produce/p?keys=a,a").status, 400)
        self.assertEqual(refused("plain", "/v1/produce/p?keys=a,,b").status, 400)
        self.assertEqual(refused("plain", "/v1/produce/%zz?keys=a").status, 400)
        self.assertEqual(refused("plain", "/v1/produce/a%00b?keys=a").status, 400)

    def test_origin_list(self):
        p = F.producer("origins", "orig", ["a"])
        e = refused("origins", "/v1/consume/orig", headers={"Origin": "https://evil.example"})
        self.assertEqual(e.status, 403)
        for origin in ("https://good.example", "http://also.example", None):
            c = ws("origins", "/v1/consume/orig", headers={"Origin": origin})
            self.assertEqual(c.recv_message()[0], TEXT)
            c.shutdown()
        p.close()

    def test_taken_uuid_is_409_with_takeover_refuse(self):
        # [tls] keeps the default (replace): a second producer takes over.
        p1 = ws("tls", "/v1/produce/take?keys=a")
        p2 = ws("tls", "/v1/produce/take?keys=a")
        self.assertIsNone(p1.recv_close())     # evicted: its TCP closes
        p2.shutdown()
        p1.shutdown()

    def test_malformed_heads_are_400_and_431(self):
        def status(raw):
            s = open_socket("127.0.0.1", F.ports["plain"])
            s.sendall(raw)
            head, _ = read_head(s)
            s.close()
            return http_status(head)
        self.assertEqual(status(b"GET /v1/consume/x\r\n\r\n"), 400)
        self.assertEqual(status(b"GET /v1/con\x01sume HTTP/1.1\r\n\r\n"), 400)
        self.assertEqual(status(b"GET /x HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"), 431)


class Hostile(unittest.TestCase):
    def setUp(self):
        self.uuid = f"hostile-{self._testMethodName}"
        self.p = F.producer("plain", self.uuid, ["a", "b"])
        self.c = ws("plain", f"/v1/consume/{self.uuid}")
        self.assertEqual(self.c.recv_message()[0], TEXT)

    def tearDown(self):
        self.c.shutdown()
        self.p.close()

    def assert_still_relaying(self):
        other = ws("plain", f"/v1/consume/{self.uuid}")
        other.recv_message()
        F.wait_device(self.uuid, lambda d: d["consumers_websocket"] >= 1)
        self.p.send((1.0, 2.0))
        self.assertEqual(other.recv_message(), (BINARY, struct.pack("<2f", 1, 2)))
        other.shutdown()

    def test_unmasked_frame_is_a_protocol_error(self):
        self.c.send_frame(TEXT, b"hi", mask=False)
        self.assertEqual(self.c.recv_close(), 1002)
        self.assert_still_relaying()

    def test_reserved_opcode_and_bits(self):
        self.c.send_frame(3, b"x")
        self.assertEqual(self.c.recv_close(), 1002)
        other = ws("plain", f"/v1/consume/{self.uuid}")
        other.recv_message()
        other.send_frame(TEXT, b"x", rsv=4)
        self.assertEqual(other.recv_close(), 1002)
        other.shutdown()

    def test_fragmented_control_frame(self):
        self.c.send_frame(PING, b"ab", fin=False)
        # wslay fails it with a close frame without a code (1005).
        self.assertIn(self.c.recv_close(), (1002, 1005))
        self.assert_still_relaying()

    def test_control_frame_interleaved_in_a_fragmented_message(self):
        self.c.send_frame(TEXT, b"hel", fin=False)
        self.c.send_frame(PING, b"p1")
        self.c.send_frame(CONT, b"lo", fin=True)
        self.assertEqual(self.c.recv_message(), (PONG, b"p1"))
        self.p.send((3.0, 4.0))
        self.assertEqual(self.c.recv_message(), (BINARY, struct.pack("<2f", 3, 4)))

    def test_continuation_without_a_start(self):
        self.c.send_frame(CONT, b"x")
        self.assertEqual(self.c.recv_close(), 1002)

    def test_bad_utf8_text(self):
        self.c.send_frame(TEXT, b"\xff\xfe")
        self.assertEqual(self.c.recv_close(), 1007)

    def test_oversized_message(self):
        # [plain] has max_message_bytes = 64k.
        self.c.send_frame(BINARY, b"x" * (64 * 1024 + 1))
        self.assertEqual(self.c.recv_close(), 1009)
        self.assert_still_relaying()

    def test_ping_flood(self):
        for i in range(200):
            try:
                self.c.send_frame(PING, b"%d" % i)
            except OSError:
                break
        self.assertEqual(self.c.recv_close(), 1008)
        self.assert_still_relaying()

    def test_close_from_the_client_is_answered(self):
        self.c.close(1000, b"bye")
        self.assertEqual(self.c.recv_close(), 1000)
        # And then the server closes the TCP connection.
        self.assertEqual(self.c.sock.recv(10), b"")

    def test_frames_after_the_close_are_ignored(self):
        self.c.close(1000)
        try:
            self.c.send_frame(TEXT, b"late")
        except OSError:
            pass
        self.assertEqual(self.c.recv_close(), 1000)

    def test_close_with_a_bad_code(self):
        self.c.send_frame(CLOSE, struct.pack("!H", 999))
        self.assertEqual(self.c.recv_close(), 1002)

    def test_producer_text_and_partial_frames(self):
        p = ws("plain", "/v1/produce/hp?keys=a,b")
        p.send_text("1,2")
        self.assertEqual(p.recv_close(), 1003)
        p.shutdown()
        p = ws("plain", "/v1/produce/hp2?keys=a,b")
        p.send_binary(b"\0" * 12)     # a frame and a half
        self.assertEqual(p.recv_close(), 1007)
        p.shutdown()

    def test_slowloris_head_is_cut_at_the_deadline(self):
        # [plain] has handshake_timeout = 2: the head must be whole by then.
        s = open_socket("127.0.0.1", F.ports["plain"])
        req = b"GET /v1/consume/x HTTP/1.1\r\nHost: a\r\n"
        closed = False
        for i in range(200):
            try:
                s.sendall(req[i % len(req):i % len(req) + 1] if i < len(req) else b"X")
                s.settimeout(0.1)
                if s.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
        s.close()
        self.assertTrue(closed, "a trickled head was never cut")


class SlowConsumer(unittest.TestCase):
    """A WebSocket consumer that does not read, under each policy."""

    def flood(self, name, uuid, count=FLOOD):
        p = F.producer(name, uuid, [f"k{i}" for i in range(64)])
        c = ws(name, f"/v1/consume/{uuid}", rcvbuf=4096)
        c.recv_message()
        F.wait_device(uuid, lambda d: d["consumers"] == 1)
        p._sock.settimeout(2)
        sent = 0
        try:
            for i in range(count):
                p.send(struct.unpack("<64f", frame(i, 64)))
                sent += 1
        except Exception:
            pass
        return p, c, sent

    def test_drop(self):
        p, c, sent = self.flood("drop", "slow-drop")
        self.assertEqual(sent, FLOOD)
        d = F.wait_device("slow-drop", lambda d: d["frames_in"] == FLOOD)
        self.assertGreater(d["dropped"], 0)
        self.assertEqual(d["consumers"], 1)
        # What it gets is whole frames, in order, with a gap.
        last = -1
        c.sock.settimeout(5)
        got = 0
        while got < FLOOD - d["dropped"]:
            op, data = c.recv_message()
            self.assertEqual(op, BINARY)
            i = int(struct.unpack("<f", data[:4])[0]) // 10
            self.assertEqual(data, frame(i, 64))
            self.assertGreater(i, last)
            last = i
            got += 1
        c.shutdown()
        p.close()

    def test_disconnect(self):
        p, c, sent = self.flood("disconnect", "slow-disc")
        self.assertEqual(sent, FLOOD)
        F.wait_device("slow-disc", lambda d: d["consumers"] == 0)
        # It is cut off: whatever it reads ends without a close frame.
        c.sock.settimeout(5)
        self.assertIsNone(c.recv_close())
        c.shutdown()
        p.close()

    def test_block(self):
        p, c, sent = self.flood("block", "slow-block", 4 * FLOOD)
        self.assertLess(sent, 4 * FLOOD, "the producer was never held")
        # Reading releases it: every frame sent arrives, in order.
        c.sock.settimeout(10)
        for i in range(sent):
            self.assertEqual(c.recv_message(), (BINARY, frame(i, 64)))
        self.assertEqual(F.device("slow-block")["dropped"], 0)
        c.shutdown()
        p.close()


    def test_block_holds_a_websocket_producer(self):
        p = ws("block", "/v1/produce/slow-wsprod?keys=" + ",".join(f"k{i}" for i in range(64)))
        c = ws("block", "/v1/consume/slow-wsprod", rcvbuf=4096)
        c.recv_message()
        F.wait_device("slow-wsprod", lambda d: d["consumers"] == 1)
        p.sock.settimeout(2)
        sent = 0
        try:
            for i in range(0, FLOOD, 16):
                p.send_binary(b"".join(frame(j, 64) for j in range(i, i + 16)))
                sent = i + 16
        except (socket.timeout, OSError):
            pass
        self.assertLess(sent, FLOOD, "the WebSocket producer was never held")
        c.sock.settimeout(10)
        for i in range(sent):
            self.assertEqual(c.recv_message(), (BINARY, frame(i, 64)))
        self.assertEqual(F.device("slow-wsprod")["dropped"], 0)
        c.shutdown()
        p.shutdown()

    def test_block_consumer_may_ping_behind_its_frames(self):
        # [blockbig]: a queue of 1 MiB, more than the replies' 256 KiB.
        # The queue (1 MiB) and the socket buffers on the way (several MB
        # once the kernel has grown them) must not hold the whole flood,
        # whatever the kernel chose: 4x the usual 8 MB.
        p, c, sent = self.flood("blockbig", "slow-block-ping", 4 * FLOOD)
        self.assertLess(sent, 4 * FLOOD)
        # Its queue is full of frames: a ping's pong waits behind them,
        # which is no flood.
        c.send_frame(PING, b"still here")
        c.sock.settimeout(10)
        for _ in range(sent + 1):
            op, data = c.recv_message()
            self.assertNotEqual(op, CLOSE)
            if op == PONG:
                self.assertEqual(data, b"still here")
                break
        else:
            self.fail("no pong")
        c.shutdown()
        p.close()


ACL_CONFIG = """\
[ferry]
admin = 127.0.0.1:0

[secure]
mode = relay
bind = 127.0.0.1:0
cert = {root}/certs/server.pem
key = {root}/certs/server.key
client_ca = {root}/certs/ca.pem
verify_client = optional
acl = {dir}/devices.acl
"""
ACL = """\
produce   dns:ferry-client   cam-*
consume   dns:ferry-client   cam-*
"""


class AccessList(unittest.TestCase):
    """wss:// with client certificates: the access list decides, as for TCP."""

    @classmethod
    def setUpClass(cls):
        cls.f = ferryweb.Ferry(config=ACL_CONFIG, names=("secure", "admin"),
                               files={"devices.acl": ACL})

    @classmethod
    def tearDownClass(cls):
        cls.f.stop()

    def ws(self, path, cert=True):
        import ssl
        ctx = ssl.create_default_context(cafile=CA)
        if cert:
            root = ferryweb.ROOT
            ctx.load_cert_chain(os.path.join(root, "certs/client.pem"),
                                os.path.join(root, "certs/client.key"))
        raw = socket.create_connection(("127.0.0.1", self.f.ports["secure"]), timeout=10)
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        c = WS.__new__(WS)
        c.sock, c.buf = sock, b""
        # The handshake on an already open socket: reuse WS's by hand.
        import base64
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head, c.buf = read_head(sock)
        return http_status(head), c

    def test_certificate_decides(self):
        st, p = self.ws("/v1/produce/cam-1?keys=a")
        self.assertEqual(st, 101)
        st, c = self.ws("/v1/consume/cam-1")
        self.assertEqual(st, 101)
        self.assertEqual(c.recv_message()[0], TEXT)
        p.send_binary(struct.pack("<f", 7))
        self.assertEqual(c.recv_message(), (BINARY, struct.pack("<f", 7)))
        # No certificate, or a uuid the list does not give: 403.
        st, x = self.ws("/v1/consume/cam-1", cert=False)
        self.assertEqual(st, 403)
        x.shutdown()
        st, x = self.ws("/v1/produce/other?keys=a")
        self.assertEqual(st, 403)
        x.shutdown()
        metrics = urllib.request.urlopen(self.f.admin_url("/metrics"), timeout=10).read()
        self.assertIn(b'ferry_relay_acl_denied_total{listener="secure"} 2', metrics)
        for w in (p, c):
            w.shutdown()


class Api(unittest.TestCase):
    def test_devices_json(self):
        p = F.producer("plain", "api-1", ["jawOpen", "eyeBlink_L"])
        c = ws("plain", "/v1/consume/api-1")
        c.recv_message()
        for i in range(5):
            p.send((1.0, 2.0))
        d = F.wait_device("api-1", lambda d: d["frames_in"] == 5)
        self.assertEqual(d["keys"], ["jawOpen", "eyeBlink_L"])
        self.assertEqual(d["producer"]["listener"], "plain")
        for key in ("uuid", "keys", "consumers", "frames_in", "rate_hz", "producer"):
            self.assertIn(key, d)
        one = F.api("/api/devices/api-1")
        self.assertEqual(one["uuid"], "api-1")
        with self.assertRaises(urllib.error.HTTPError) as e:
            F.api("/api/devices/nope")
        self.assertEqual(e.exception.code, 404)
        st = F.api("/api/status")
        self.assertEqual({l["name"] for l in st["listeners"]},
                         {"plain", "tls", "origins", "drop", "disconnect", "block",
                          "blockbig"})
        self.assertTrue([l for l in st["listeners"] if l["name"] == "tls"][0]["tls"])
        c.shutdown()
        p.close()

    def test_admin_websocket_consumer(self):
        p = F.producer("tls", "api-ws", ["a"], tls=True)
        c = WS("127.0.0.1", F.ports["admin"], "/v1/consume/api-ws")
        self.assertEqual(c.recv_message(), (TEXT, b'{"uuid": "api-ws", "keys": ["a"]}'))
        F.wait_device("api-ws", lambda d: d["consumers_websocket"] == 1)
        p.send((5.0,))
        self.assertEqual(c.recv_message(), (BINARY, struct.pack("<f", 5)))
        # Its half-close ends it like any relay client's.
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.sock.recv(10), b"")
        F.wait_device("api-ws", lambda d: d["consumers"] == 0)
        c.shutdown()
        p.close()

    def test_pages_are_served_from_the_binary(self):
        for path, needle in (("/", b"ferryStatusPage"), ("/devices/x", b"ferryDevicePage"),
                             ("/assets/uPlot.iife.min.js", b"uPlot"),
                             ("/assets/uPlot.LICENSE.txt", b"MIT")):
            with urllib.request.urlopen(F.admin_url(path), timeout=10) as r:
                self.assertIn(needle, r.read())

    def test_admin_token(self):
        g = ferryweb.Ferry('admin_token = 0123456789abcdef0123')
        try:
            with self.assertRaises(urllib.error.HTTPError) as e:
                g.api("/api/devices")
            self.assertEqual(e.exception.code, 401)
            self.assertEqual(g.api("/api/devices?token=0123456789abcdef0123"), [])
            self.assertEqual(g.api("/api/devices", {"Authorization":
                                                     "Bearer 0123456789abcdef0123"}), [])
        finally:
            g.stop()


if __name__ == "__main__":
    unittest.main()
