"""Tests of scripts/ferry_client.py, the Python client of the device relay.

Most tests run against FakeRelay, a small relay in this file that speaks
the device protocol (version 1) in threads on 127.0.0.1.  If FERRY_RELAY is
set to "host:port" of a real Ferry relay (and FERRY_RELAY_TLS /
FERRY_CAFILE for its TLS listener), end-to-end tests run against it too.

Run from the repository root:
    python3 -m unittest discover -s tests -p 'test_*.py'
"""

import json
import math
import os
import queue
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(ROOT, "scripts", "ferry_client.py")
CERTS = os.path.join(ROOT, "certs")

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ferry_client as fc  # noqa: E402

IO_TIMEOUT = 5.0      # every socket operation of a test
CLI_TIMEOUT = 20.0    # every command line run
LENGTH = struct.Struct(">I")


def f32(*values):
    """The values as the float32s they become on the wire."""
    return struct.unpack("<%df" % len(values), struct.pack("<%df" % len(values), *values))


def frame_bytes(*values):
    return struct.pack("<%df" % len(values), *values)


def unique(prefix):
    return "%s-%s" % (prefix, uuidlib.uuid4().hex[:12])


def distinct_names(n):
    """n distinct short key names ("0".."z", "00", ...): 16384 fit in 64 KiB."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    names, width, first, room = [], 1, 0, 62
    for i in range(n):
        if i - first == room:
            first, width, room = i, width + 1, room * 62
        v, name = i - first, ""
        for _ in range(width):
            name = digits[v % 62] + name
            v //= 62
        names.append(name)
    return names


def wait_until(predicate, timeout=IO_TIMEOUT, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --------------------------------------------------------------------------
# A fake relay


class _Connection:
    """One accepted connection; keeps every byte the client sent."""

    def __init__(self, sock):
        self.sock = sock
        self.data = bytearray()
        self.role = None
        self.uuid = None
        self.done = threading.Event()

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            self.data += chunk
            buf += chunk
        return bytes(buf)

    def recv_blob(self, low, high):
        """A length-prefixed blob; returns None at EOF, False if the length
        breaks the limits."""
        head = self.recv_exact(4)
        if head is None:
            return None
        (n,) = LENGTH.unpack(head)
        if not low <= n <= high:
            return False
        return self.recv_exact(n)

    def abort(self):
        # socket.socket.shutdown even on an SSLSocket: wakes up the thread
        # blocked in recv without touching the TLS state it is using.
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Stream:
    def __init__(self, producer):
        self.producer = producer
        self.keys = None          # bytes, once the producer sent them
        self.consumers = []       # queues of frames, None = end


class FakeRelay:
    """The device relay protocol v1, one thread per connection.

    One producer per uuid (a second one is refused), any number of
    consumers, fan-out of every frame; consumers are closed as soon as
    their producer goes.  Records what producers sent for the tests.
    """

    def __init__(self, tls_context=None):
        self.tls_context = tls_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.cond = threading.Condition()
        self.streams = {}         # uuid bytes -> _Stream
        self.frames = {}          # uuid bytes -> [frame bytes] from producers
        self.connections = []
        self.threads = []
        self.stopping = threading.Event()
        self.accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self.accepter.start()

    # -- what the tests use -------------------------------------------------

    def stop(self):
        self.stopping.set()
        self.accepter.join(IO_TIMEOUT)
        self.listener.close()
        with self.cond:
            connections = list(self.connections)
        for c in connections:
            c.abort()
        for t in list(self.threads):
            t.join(IO_TIMEOUT)

    def received(self, uuid):
        """The frames producers sent under uuid, as bytes."""
        with self.cond:
            return list(self.frames.get(uuid.encode(), []))

    def wait_frames(self, uuid, n, timeout=IO_TIMEOUT):
        key = uuid.encode()
        with self.cond:
            return self.cond.wait_for(lambda: len(self.frames.get(key, [])) >= n, timeout)

    def wait_consumers(self, uuid, n, timeout=IO_TIMEOUT):
        key = uuid.encode()

        def enough():
            s = self.streams.get(key)
            return s is not None and len(s.consumers) >= n
        with self.cond:
            return self.cond.wait_for(enough, timeout)

    def wait_held(self, uuid, timeout=IO_TIMEOUT):
        key = uuid.encode()
        with self.cond:
            return self.cond.wait_for(
                lambda: key in self.streams and self.streams[key].keys is not None, timeout)

    def connection(self, role, uuid, timeout=IO_TIMEOUT):
        """The (first) finished connection of role for uuid."""
        key = uuid.encode()

        def find():
            for c in self.connections:
                if c.role == role and c.uuid == key:
                    return c
            return None
        with self.cond:
            self.cond.wait_for(find, timeout)
            c = find()
        assert c is not None, "no %s connection for %r" % (role, uuid)
        assert c.done.wait(timeout), "the %s connection did not end" % role
        return c

    # -- the server -----------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(IO_TIMEOUT * 4)
            c = _Connection(sock)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            with self.cond:
                self.connections.append(c)
                self.threads.append(t)
            t.start()

    def _serve(self, c):
        try:
            if self.tls_context is not None:
                c.sock = self.tls_context.wrap_socket(c.sock, server_side=True)
            first = c.recv_exact(1)
            if first == b"\x0a":
                c.role = "producer"
                self._producer(c)
            elif first == b"\x0b":
                c.role = "consumer"
                self._consumer(c)
        except (OSError, ValueError):
            pass
        finally:
            try:
                c.sock.close()
            except OSError:
                pass
            with self.cond:
                c.done.set()
                self.cond.notify_all()

    def _producer(self, c):
        c.sock.sendall(b"\x00")
        uuid = c.recv_blob(1, fc.MAX_UUID_BYTES)
        if not uuid:
            if uuid is False:
                c.sock.sendall(b"\x01")
            return
        c.uuid = uuid
        stream = _Stream(c)
        with self.cond:
            if uuid in self.streams:
                refused = True
            else:
                refused = False
                self.streams[uuid] = stream
        if refused:
            c.sock.sendall(b"\x01")
            return
        try:
            c.sock.sendall(b"\x00")
            keys = c.recv_blob(1, fc.MAX_KEYS_BYTES)
            if not keys:
                if keys is False:
                    c.sock.sendall(b"\x01")
                return
            names = keys.decode("utf-8").split(",")
            if len(names) > fc.MAX_KEYS or not all(names):
                c.sock.sendall(b"\x01")
                return
            with self.cond:
                stream.keys = keys
                self.frames.setdefault(uuid, [])
                self.cond.notify_all()
            c.sock.sendall(b"\x00")
            size = 4 * len(names)
            while True:
                frame = c.recv_exact(size)
                if frame is None:
                    return
                with self.cond:
                    self.frames[uuid].append(frame)
                    for q in stream.consumers:
                        q.put(frame)
                    self.cond.notify_all()
        finally:
            with self.cond:
                if self.streams.get(uuid) is stream:
                    del self.streams[uuid]
                for q in stream.consumers:
                    q.put(None)
                self.cond.notify_all()

    def _consumer(self, c):
        c.sock.sendall(b"\x00")
        uuid = c.recv_blob(1, fc.MAX_UUID_BYTES)
        if not uuid:
            if uuid is False:
                c.sock.sendall(b"\x01")
            return
        c.uuid = uuid
        with self.cond:
            stream = self.streams.get(uuid)
            keys = stream.keys if stream is not None else None
        if keys is None:
            c.sock.sendall(b"\x01")
            return
        c.sock.sendall(b"\x00" + LENGTH.pack(len(keys)) + keys)
        if c.recv_exact(1) != b"\x00":
            return
        frames = queue.Queue()
        with self.cond:
            if self.streams.get(uuid) is not stream:
                return                      # the producer left meanwhile
            stream.consumers.append(frames)
            self.cond.notify_all()
        try:
            while not self.stopping.is_set():
                try:
                    frame = frames.get(timeout=0.02)
                except queue.Empty:
                    frame = b""
                if frame is None:
                    return                  # the producer is gone
                if frame:
                    c.sock.sendall(frame)
                if self._peer_closed(c.sock):
                    return
        finally:
            with self.cond:
                if frames in stream.consumers:
                    stream.consumers.remove(frames)
                self.cond.notify_all()

    @staticmethod
    def _peer_closed(sock):
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        sock.settimeout(0.2)
        try:
            return sock.recv(4096) == b""
        except socket.timeout:
            return False
        finally:
            sock.settimeout(IO_TIMEOUT * 4)


class ScriptedServer:
    """Accepts one connection on 127.0.0.1 and runs script(sock) on it."""

    def __init__(self, script):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(IO_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        with sock:
            sock.settimeout(IO_TIMEOUT)
            try:
                self.script(sock)
            except OSError:
                pass

    def stop(self):
        self.listener.close()
        self.thread.join(IO_TIMEOUT)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def consumer_prologue(sock, keys=b"a,b"):
    """A server's side of a consumer handshake up to the keys."""
    recv_exact(sock, 1)
    sock.sendall(b"\x00")
    (n,) = LENGTH.unpack(recv_exact(sock, 4))
    recv_exact(sock, n)
    sock.sendall(b"\x00" + LENGTH.pack(len(keys)) + keys)


def refused_port():
    """A port on 127.0.0.1 that refuses connections: bound, not listening.
    The caller keeps the socket open so that nobody else takes the port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


# --------------------------------------------------------------------------
# Library tests


class FakeRelayCase(unittest.TestCase):
    tls_context = None

    def setUp(self):
        self.relay = FakeRelay(self.tls_context)
        self.addCleanup(self.relay.stop)

    def options(self):
        return {}

    def producer(self, uuid, keys, **kw):
        kw = {**self.options(), "timeout": IO_TIMEOUT, **kw}
        p = fc.Producer("127.0.0.1", self.relay.port, uuid, keys, **kw).connect()
        self.addCleanup(p.close)
        return p

    def consumer(self, uuid, **kw):
        kw = {**self.options(), "timeout": IO_TIMEOUT, "idle_timeout": IO_TIMEOUT, **kw}
        c = fc.Consumer("127.0.0.1", self.relay.port, uuid, **kw).connect()
        self.addCleanup(c.close)
        return c


class LibraryTests(FakeRelayCase):

    def test_round_trip_is_byte_exact(self):
        p = self.producer("dev-1", ["a", "b", "ç"])
        c = self.consumer("dev-1")
        self.assertEqual(c.keys, ("a", "b", "ç"))
        self.assertEqual(c.frame_size, 12)
        self.assertTrue(self.relay.wait_consumers("dev-1", 1))
        p.send([1.5, -2.0, 0.25])
        p.send((0.1, 1e30, -7))
        self.assertEqual(c.recv(), (1.5, -2.0, 0.25))
        self.assertEqual(c.recv(), f32(0.1, 1e30, -7.0))
        p.close()
        self.assertIsNone(c.recv())          # clean end of stream
        self.assertIsNone(c.recv())

        keys = "a,b,ç".encode()
        raw = self.relay.connection("producer", "dev-1").data
        self.assertEqual(bytes(raw),
                         b"\x0a" + b"\x00\x00\x00\x05dev-1"
                         + LENGTH.pack(len(keys)) + keys
                         + b"\x00\x00\xc0\x3f" + b"\x00\x00\x00\xc0" + b"\x00\x00\x80\x3e"
                         + frame_bytes(0.1, 1e30, -7.0))
        raw = self.relay.connection("consumer", "dev-1").data
        self.assertEqual(bytes(raw), b"\x0b\x00\x00\x00\x05dev-1\x00")

    def test_keys_as_a_string(self):
        p = self.producer("dev-s", "x,y")
        self.assertEqual(p.keys, ("x", "y"))
        self.assertEqual(p.frame_size, 8)

    def test_iteration_ends_with_the_stream(self):
        p = self.producer("dev-it", "x")
        c = self.consumer("dev-it")
        self.assertTrue(self.relay.wait_consumers("dev-it", 1))
        for i in range(5):
            p.send([i])
        p.close()
        self.assertEqual(list(c), [(float(i),) for i in range(5)])
        self.assertEqual(c.frames_received, 5)

    def test_fan_out_to_two_consumers(self):
        p = self.producer("dev-fan", "x,y")
        c1, c2 = self.consumer("dev-fan"), self.consumer("dev-fan")
        self.assertTrue(self.relay.wait_consumers("dev-fan", 2))
        p.send([1, 2])
        self.assertEqual(c1.recv(), (1.0, 2.0))
        self.assertEqual(c2.recv(), (1.0, 2.0))

    def test_context_managers(self):
        with fc.Producer("127.0.0.1", self.relay.port, "dev-cm", ["v"],
                         timeout=IO_TIMEOUT) as p:
            self.assertTrue(p.connected)
            with fc.Consumer("127.0.0.1", self.relay.port, "dev-cm",
                             timeout=IO_TIMEOUT, idle_timeout=IO_TIMEOUT) as c:
                self.assertTrue(self.relay.wait_consumers("dev-cm", 1))
                p.send([3.25])
                self.assertEqual(c.recv(), (3.25,))
            self.assertFalse(c.connected)
        self.assertFalse(p.connected)

    def test_unknown_uuid_is_refused(self):
        with self.assertRaises(fc.RefusedError) as cm:
            self.consumer("nope")
        self.assertEqual(str(cm.exception), "consumer refused: no producer holds uuid 'nope'")
        self.assertEqual(cm.exception.role, "consumer")
        self.assertEqual(cm.exception.exit_code, 2)

    def test_second_producer_is_refused(self):
        self.producer("dev-dup", "x")
        with self.assertRaises(fc.RefusedError) as cm:
            self.producer("dev-dup", "x")
        self.assertEqual(cm.exception.role, "producer")
        self.assertIn("'dev-dup'", str(cm.exception))

    def test_wrong_number_of_values(self):
        p = self.producer("dev-n", "a,b")
        with self.assertRaisesRegex(ValueError, "needs 2 values"):
            p.send([1.0])
        with self.assertRaisesRegex(ValueError, "needs 2 values"):
            p.send([1.0, 2.0, 3.0])
        with self.assertRaises(ValueError):
            p.send([1.0, "x"])
        with self.assertRaises(ValueError):
            p.send([1.0, 1e300])             # beyond float32
        p.send([4.0, 5.0])                   # nothing was sent before
        p.close()
        self.relay.connection("producer", "dev-n")
        self.assertEqual(self.relay.received("dev-n"), [frame_bytes(4.0, 5.0)])

    def test_arguments_are_checked_before_connecting(self):
        bad = [("", "a"), ("u" * 256, "a"), ("a\nb", "a"), (b"\xff", "a"),
               ("u", ""), ("u", "a,,b"), ("u", []),
               ("u", ["a,b"]), ("u", distinct_names(fc.MAX_KEYS + 1)),
               ("u", ["k%04d" % i + "k" * 1000 for i in range(66)])]
        for uuid, keys in bad:
            with self.subTest(uuid=uuid[:10], keys=str(keys)[:20]):
                with self.assertRaises(ValueError):
                    fc.Producer("127.0.0.1", 1, uuid, keys)
        fc.Producer("127.0.0.1", 1, "u" * 255, distinct_names(fc.MAX_KEYS))  # the limits
        fc.Producer("127.0.0.1", 1, "u", "a,ab,A, a,\u00e9,e")   # alike, not the same
        with self.assertRaises(ValueError):
            fc.Consumer("127.0.0.1", 1, "u", cafile="ca.pem")          # needs tls
        self.assertEqual(len(self.relay.connections), 0)

    def test_key_names_the_server_refuses_are_refused_locally(self):
        bad = {"a\0b": "control character", "x,y\tz": "control character",
               "x\x7f": "control character", "\x1b[1m": "control character",
               "a,a": "'a' is given twice", ("x", "y", "x"): "'x' is given twice",
               ",".join(distinct_names(fc.MAX_KEYS - 1) + ["0"]): "'0' is given twice"}
        for keys, message in bad.items():
            with self.subTest(keys=str(keys)[:20]):
                with self.assertRaisesRegex(ValueError, message):
                    fc.Producer("127.0.0.1", 1, "u", keys)
        self.assertEqual(len(self.relay.connections), 0)

    def test_connection_refused(self):
        holder, port = refused_port()
        with holder:
            with self.assertRaises(fc.ConnectFailedError) as cm:
                fc.Consumer("127.0.0.1", port, "x", timeout=IO_TIMEOUT).connect()
        self.assertIn("127.0.0.1:%d" % port, str(cm.exception))
        self.assertEqual(cm.exception.exit_code, 3)

    def test_idle_timeout_keeps_the_stream(self):
        p = self.producer("dev-idle", "x,y")
        c = self.consumer("dev-idle", idle_timeout=0.2)
        self.assertTrue(self.relay.wait_consumers("dev-idle", 1))
        with self.assertRaises(fc.FerryTimeoutError):
            c.recv()
        p.send([1, 2])
        self.assertEqual(c.recv(timeout=IO_TIMEOUT), (1.0, 2.0))

    def test_not_connected(self):
        c = fc.Consumer("127.0.0.1", self.relay.port, "x")
        with self.assertRaises(fc.FerryError):
            c.recv()
        p = fc.Producer("127.0.0.1", self.relay.port, "x", "a")
        with self.assertRaises(fc.FerryError):
            p.send([1])


class ScriptedServerTests(unittest.TestCase):
    """Servers that misbehave."""

    def serve(self, script):
        server = ScriptedServer(script)
        self.addCleanup(server.stop)
        return server.port

    def test_unexpected_reply_is_a_protocol_error(self):
        def script(sock):
            recv_exact(sock, 1)
            sock.sendall(b"\x07")
        port = self.serve(script)
        with self.assertRaises(fc.ProtocolError) as cm:
            fc.Producer("127.0.0.1", port, "u", "a", timeout=IO_TIMEOUT).connect()
        self.assertIn("0x07", str(cm.exception))
        self.assertEqual(cm.exception.exit_code, 4)

    def test_invalid_keys_are_a_protocol_error(self):
        port = self.serve(lambda sock: consumer_prologue(sock, b"a,,b"))
        with self.assertRaises(fc.ProtocolError):
            fc.Consumer("127.0.0.1", port, "u", timeout=IO_TIMEOUT).connect()

    def test_close_during_handshake(self):
        port = self.serve(lambda sock: recv_exact(sock, 1))
        with self.assertRaises(fc.ConnectionLostError):
            fc.Consumer("127.0.0.1", port, "u", timeout=IO_TIMEOUT).connect()

    def test_silent_server_times_out(self):
        done = threading.Event()
        self.addCleanup(done.set)
        port = self.serve(lambda sock: done.wait(IO_TIMEOUT))
        start = time.monotonic()
        with self.assertRaises(fc.FerryTimeoutError):
            fc.Consumer("127.0.0.1", port, "u", timeout=0.3).connect()
        self.assertLess(time.monotonic() - start, IO_TIMEOUT)

    def test_partial_frame_is_a_lost_connection(self):
        def script(sock):
            consumer_prologue(sock, b"a,b")
            recv_exact(sock, 1)
            sock.sendall(frame_bytes(1.0, 2.0) + b"\x00\x00\x80")
        port = self.serve(script)
        c = fc.Consumer("127.0.0.1", port, "u", timeout=IO_TIMEOUT,
                        idle_timeout=IO_TIMEOUT).connect()
        self.assertEqual(c.recv(), (1.0, 2.0))
        with self.assertRaisesRegex(fc.ConnectionLostError, "middle of a frame"):
            c.recv()


def _certs_available():
    return all(os.path.exists(os.path.join(CERTS, f)) for f in
               ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                "rogue-ca.pem"))


@unittest.skipUnless(_certs_available(), "no development certificates in certs/ "
                     "(make them with scripts/gen-certs.sh)")
class TLSTests(FakeRelayCase):
    """The fake relay over TLS, requiring a client certificate."""

    @classmethod
    def setUpClass(cls):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key"))
        ctx.load_verify_locations(os.path.join(CERTS, "ca.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        cls.tls_context = ctx

    def options(self):
        return dict(tls=True, cafile=os.path.join(CERTS, "ca.pem"),
                    cert=os.path.join(CERTS, "client.pem"),
                    key=os.path.join(CERTS, "client.key"))

    def test_round_trip(self):
        p = self.producer("tls-1", "a,b")
        c = self.consumer("tls-1")
        self.assertEqual(c.keys, ("a", "b"))
        self.assertTrue(self.relay.wait_consumers("tls-1", 1))
        p.send([1, 2])
        self.assertEqual(c.recv(), (1.0, 2.0))
        p.close()
        self.assertIsNone(c.recv())

    def test_unknown_ca_fails(self):
        with self.assertRaisesRegex(fc.ConnectFailedError, "certificate verify failed"):
            self.consumer("x", cafile=os.path.join(CERTS, "rogue-ca.pem"))

    def test_missing_client_certificate_fails(self):
        with self.assertRaises(fc.FerryConnectionError):
            fc.Consumer("127.0.0.1", self.relay.port, "x", tls=True,
                        cafile=os.path.join(CERTS, "ca.pem"), timeout=IO_TIMEOUT).connect()

    def test_missing_ca_file_is_a_config_error(self):
        with self.assertRaises(fc.ConfigError):
            self.consumer("x", cafile=os.path.join(CERTS, "no-such-file.pem"))

    def test_cli(self):
        p = self.producer("tls-cli", "a")
        proc = start_cli(["consume", "--uuid", "tls-cli", "--count", "1", "--port",
                          str(self.relay.port), "--tls", "--cafile", os.path.join(CERTS, "ca.pem"),
                          "--cert", os.path.join(CERTS, "client.pem"),
                          "--key", os.path.join(CERTS, "client.key")])
        self.assertTrue(self.relay.wait_consumers("tls-cli", 1))
        p.send([0.5])
        out, err = finish(proc)
        self.assertEqual((proc.returncode, out, err), (0, "a\n0.5\n", ""))


# --------------------------------------------------------------------------
# Command line tests


def run_cli(args, stdin=None, timeout=CLI_TIMEOUT):
    return subprocess.run([sys.executable, SCRIPT] + args, input=stdin, text=True,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def start_cli(args, **kw):
    return subprocess.Popen([sys.executable, SCRIPT] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw)


def read_first_line(proc, timeout=CLI_TIMEOUT):
    """The first line the process writes to stdout, read from the pipe
    itself (no buffering layer keeps bytes from a later communicate());
    what came so far if none came in time."""
    fd = proc.stdout.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in got:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        got += chunk
    return got.decode()


def finish(proc, timeout=CLI_TIMEOUT):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


class CLITests(FakeRelayCase):

    def cli(self, args, **kw):
        return run_cli(args + ["--port", str(self.relay.port)], **kw)

    def start(self, args, **kw):
        proc = start_cli(args + ["--port", str(self.relay.port)], **kw)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.communicate()))
        return proc

    def test_help(self):
        r = run_cli(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("examples:", r.stdout)
        for command in ("produce", "consume", "record", "replay"):
            r = run_cli([command, "--help"])
            self.assertEqual(r.returncode, 0, command)
            self.assertIn("examples:", r.stdout)

    def test_usage_errors_exit_1(self):
        for args in (["consume"], ["consume", "--uuid", "x", "--cafile", "ca.pem"],
                     ["produce", "--uuid", "x", "--keys", "a,,b"],
                     ["produce", "--uuid", "x", "--keys", "a,b,a"],
                     ["produce", "--uuid", "x", "--keys", "a\tb"],
                     ["produce", "--uuid", "x", "--keys", "a", "--rate", "-1"], []):
            with self.subTest(args=args):
                r = self.cli(args)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertTrue(r.stderr)

    def test_unknown_uuid_exits_2(self):
        r = self.cli(["consume", "--uuid", "abc"])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "ferry: consumer refused: no producer holds uuid 'abc'\n")
        self.assertEqual(r.stdout, "")

    def test_refused_producer_exits_2(self):
        self.producer("held", "a")
        r = self.cli(["produce", "--uuid", "held", "--keys", "a", "--count", "1"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("producer refused", r.stderr)

    def test_connection_refused_exits_3(self):
        holder, port = refused_port()
        with holder:
            r = run_cli(["consume", "--uuid", "x", "--port", str(port)])
        self.assertEqual(r.returncode, 3)
        self.assertIn("127.0.0.1:%d" % port, r.stderr)
        self.assertIn("refused", r.stderr.lower())

    def test_protocol_error_exits_4(self):
        server = ScriptedServer(lambda sock: (recv_exact(sock, 1), sock.sendall(b"\x42")))
        self.addCleanup(server.stop)
        r = run_cli(["consume", "--uuid", "x", "--port", str(server.port)])
        self.assertEqual(r.returncode, 4)
        self.assertIn("0x42", r.stderr)

    def test_options_before_the_subcommand(self):
        r = run_cli(["--port", str(self.relay.port), "consume", "--uuid", "abc"])
        self.assertEqual(r.returncode, 2, r.stderr)

    def consume(self, fmt, keys, frames):
        uuid = unique("cons")
        p = self.producer(uuid, keys)
        proc = self.start(["consume", "--uuid", uuid, "--format", fmt,
                           "--count", str(len(frames))])
        self.assertTrue(self.relay.wait_consumers(uuid, 1))
        for values in frames:
            p.send(values)
        out, err = finish(proc)
        self.assertEqual((proc.returncode, err), (0, ""))
        return out

    def test_consume_csv(self):
        out = self.consume("csv", ["a", "b", "c"], [[1.5, -2, 0.1], [0, 1e-3, 123456.789]])
        self.assertEqual(out, "a,b,c\n1.5,-2.0,0.1\n0.0,0.001,123456.79\n")

    def test_consume_json(self):
        out = self.consume("json", ["x", "ü"], [[1.5, -2], [0.1, 3]])
        lines = out.splitlines()
        self.assertEqual([json.loads(line) for line in lines],
                         [{"x": 1.5, "ü": -2.0}, {"x": 0.1, "ü": 3.0}])

    def test_consume_stream_ending_early_exits_3(self):
        uuid = unique("early")
        p = self.producer(uuid, "a")
        proc = self.start(["consume", "--uuid", uuid, "--count", "3"])
        self.assertTrue(self.relay.wait_consumers(uuid, 1))
        p.send([1])
        p.close()
        out, err = finish(proc)
        self.assertEqual(proc.returncode, 3)
        self.assertEqual(out, "a\n1.0\n")
        self.assertIn("after 1 of 3 frames", err)

    def test_consume_until_the_stream_ends(self):
        uuid = unique("end")
        p = self.producer(uuid, "a")
        proc = self.start(["consume", "--uuid", uuid, "--format", "json"])
        self.assertTrue(self.relay.wait_consumers(uuid, 1))
        p.send([1])
        p.send([2])
        p.close()
        out, err = finish(proc)
        self.assertEqual((proc.returncode, out, err), (0, '{"a": 1.0}\n{"a": 2.0}\n', ""))

    def test_produce_csv_from_stdin(self):
        r = self.cli(["produce", "--uuid", "csv-in", "--keys", "a,b", "--input", "csv"],
                     stdin="a,b\n1.5,2\n\n# a comment\n 3 , -4.25\n")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.relay.connection("producer", "csv-in")
        self.assertEqual(self.relay.received("csv-in"),
                         [frame_bytes(1.5, 2), frame_bytes(3, -4.25)])

    def test_produce_json_from_stdin(self):
        r = self.cli(["produce", "--uuid", "json-in", "--keys", "a,b,c", "--input", "json"],
                     stdin='[1, 2.5, -3]\n{"b": 7}\n\n{"c": 0.5, "a": -1}\n')
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.relay.connection("producer", "json-in")
        self.assertEqual(self.relay.received("json-in"),
                         [frame_bytes(1, 2.5, -3), frame_bytes(0, 7, 0),
                          frame_bytes(-1, 0, 0.5)])

    def test_produce_bad_input_exits_1(self):
        cases = [("csv", "1,2\n1,2,3\n", "line 2: expected 2 values"),
                 ("csv", "1,x\n", "line 1: 'x' is not a number"),
                 ("json", '{"a": 1, "zz": 2}\n', "unknown key 'zz'"),
                 ("json", "[1]\n", "expected 2 values"),
                 ("json", '["1", 2]\n', "is not a number"),
                 ("json", "{oops\n", "invalid JSON")]
        for fmt, text, message in cases:
            with self.subTest(fmt=fmt, text=text):
                r = self.cli(["produce", "--uuid", unique("bad"), "--keys", "a,b",
                              "--input", fmt], stdin=text)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(message, r.stderr)

    def test_produce_synthetic(self):
        start = time.monotonic()
        r = self.cli(["produce", "--uuid", "syn", "--keys", "a,b,c", "--count", "5",
                      "--rate", "50"])
        elapsed = time.monotonic() - start
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.relay.connection("producer", "syn")
        frames = self.relay.received("syn")
        self.assertEqual(len(frames), 5)
        for k, frame in enumerate(frames):
            expected = [math.sin(2 * math.pi * 0.5 * k / 50 + i) for i in range(3)]
            self.assertEqual(frame, frame_bytes(*expected))
        self.assertGreaterEqual(elapsed, 4 / 50)        # paced at 50 Hz

    def test_record_then_replay(self):
        keys = ["x", "y"]
        sent = [[i, -i * 0.5] for i in range(6)]
        p = self.producer("rec-src", keys)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rec.jsonl")
            proc = self.start(["record", "--uuid", "rec-src", "--output", path,
                               "--count", str(len(sent))])
            self.assertTrue(self.relay.wait_consumers("rec-src", 1))
            for values in sent:
                p.send(values)
                time.sleep(0.04)
            out, err = finish(proc)
            self.assertEqual((proc.returncode, out, err), (0, "", ""))
            with open(path, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f]
            self.assertEqual(lines[0], {"format": "ferry-record", "version": 1,
                                        "uuid": "rec-src", "keys": keys})
            self.assertEqual([line["v"] for line in lines[1:]], sent)
            times = [line["t"] for line in lines[1:]]
            self.assertEqual(times, sorted(times))
            span = times[-1] - times[0]
            self.assertGreater(span, 0.1)

            start = time.monotonic()
            r = self.cli(["replay", "--input", path, "--uuid", "rec-copy", "--speed", "2"])
            elapsed = time.monotonic() - start
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            self.relay.connection("producer", "rec-copy")
            self.assertEqual(self.relay.received("rec-copy"),
                             [frame_bytes(*v) for v in sent])
            self.assertGreaterEqual(elapsed, span / 2 * 0.9)

            # By default under the recorded uuid, once its producer is gone.
            p.close()
            self.relay.connection("producer", "rec-src")
            r = self.cli(["replay", "--input", path, "--speed", "0", "--loop",
                          "--count", "14"])
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            self.assertTrue(self.relay.wait_frames("rec-src", 20))
            looped = self.relay.received("rec-src")[len(sent):]
            self.assertEqual(looped, [frame_bytes(*sent[i % len(sent)]) for i in range(14)])

    def test_record_duration_without_frames(self):
        self.producer("quiet", "a")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rec.jsonl")
            r = self.cli(["record", "--uuid", "quiet", "--output", path, "--duration", "0.3"])
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            with open(path, encoding="utf-8") as f:
                self.assertEqual(len(f.readlines()), 1)

    def test_replay_rejects_other_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.jsonl")
            with open(path, "w") as f:
                f.write('{"hello": 1}\n')
            r = self.cli(["replay", "--input", path])
            self.assertEqual(r.returncode, 1)
            self.assertIn("not a ferry recording", r.stderr)
            r = self.cli(["replay", "--input", os.path.join(tmp, "missing")])
            self.assertEqual(r.returncode, 1)

    def test_broken_pipe_is_quiet(self):
        p = self.producer("pipe", "a")
        proc = self.start(["consume", "--uuid", "pipe"])
        self.assertTrue(self.relay.wait_consumers("pipe", 1))
        self.assertEqual(proc.stdout.readline(), "a\n")
        proc.stdout.close()
        deadline = time.monotonic() + IO_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            p.send([1])
            time.sleep(0.02)
        self.assertEqual(proc.wait(IO_TIMEOUT), 0)
        self.assertEqual(proc.stderr.read(), "")
        proc.stderr.close()

    @unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "POSIX only")
    def test_ctrl_c_exits_130_quietly(self):
        self.producer("intr", "a")
        # SIGINT may be ignored if the tests run in the background.
        proc = self.start(["consume", "--uuid", "intr"],
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # The header line is the sign that the client is connected and in
        # its receive loop: a SIGINT before it (during start-up or the
        # handshake) would find it elsewhere, however long one waits.
        first = read_first_line(proc)
        self.assertEqual(first, "a\n")
        self.assertTrue(self.relay.wait_consumers("intr", 1, CLI_TIMEOUT))
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
        self.assertEqual((proc.returncode, first + out, err), (130, "a\n", ""))


# --------------------------------------------------------------------------
# End to end against a real Ferry relay


def _relay_address(variable):
    value = os.environ.get(variable, "")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class _CountingProducer:
    """Sends frames (k, 2k, -k), k = 0, 1, ... at about 200 Hz in a thread."""

    def __init__(self, producer):
        self.producer = producer
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        k = 0
        try:
            while not self.stop.is_set():
                self.producer.send([k, 2 * k, -k])
                k += 1
                self.stop.wait(0.005)
        except fc.FerryError as e:
            self.error = e

    def close(self):
        self.stop.set()
        self.thread.join(IO_TIMEOUT)
        self.producer.close()


class RealRelayMixin:
    address = None
    options = {}

    def setUp(self):
        if self.address is None:
            self.skipTest("the relay is not configured")
        self.host, self.port = self.address

    def producer(self, uuid):
        p = fc.Producer(self.host, self.port, uuid, ["k", "twice", "minus"],
                        timeout=IO_TIMEOUT, **self.options).connect()
        counting = _CountingProducer(p)
        self.addCleanup(counting.close)
        return counting

    def consumer(self, uuid):
        c = fc.Consumer(self.host, self.port, uuid, timeout=IO_TIMEOUT,
                        idle_timeout=IO_TIMEOUT, **self.options).connect()
        self.addCleanup(c.close)
        return c

    def check_frames(self, frames):
        self.assertTrue(frames)
        for k, twice, minus in frames:
            self.assertEqual((twice, minus), (2 * k, -k))
        counters = [f[0] for f in frames]
        self.assertEqual(counters, sorted(set(counters)), "frames out of order")

    def test_produce_and_consume(self):
        uuid = unique("e2e")
        counting = self.producer(uuid)
        c = self.consumer(uuid)
        self.assertEqual(c.keys, ("k", "twice", "minus"))
        frames = [c.recv() for _ in range(20)]
        self.check_frames(frames)
        self.assertIsNone(counting.error)

    def test_unknown_uuid_is_refused(self):
        uuid = unique("nobody")
        with self.assertRaises(fc.RefusedError):
            self.consumer(uuid)

    def test_cli_consume(self):
        uuid = unique("e2e-cli")
        self.producer(uuid)
        args = ["consume", "--uuid", uuid, "--format", "json", "--count", "5"]
        r = run_cli(args + self.cli_options())
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.check_frames([(d["k"], d["twice"], d["minus"])
                           for d in map(json.loads, r.stdout.splitlines())])
        r = run_cli(args[:2] + [unique("nobody")] + args[3:] + self.cli_options())
        self.assertEqual(r.returncode, 2)
        self.assertIn("no producer holds uuid", r.stderr)

    def cli_options(self):
        args = ["--host", self.host, "--port", str(self.port)]
        if self.options.get("tls"):
            args += ["--tls", "--cafile", self.options["cafile"]]
        return args

    def consumer_when_live(self, uuid):
        """A consumer of uuid, once a producer (started elsewhere) holds it."""
        deadline = time.monotonic() + CLI_TIMEOUT
        while True:
            try:
                return self.consumer(uuid)
            except fc.RefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def test_cli_produce_from_stdin(self):
        uuid = unique("e2e-produce")
        proc = start_cli(["produce", "--uuid", uuid, "--keys", "x,y", "--input", "csv"]
                         + self.cli_options(), stdin=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        proc.stdin.write("x,y\n")
        proc.stdin.flush()
        c = self.consumer_when_live(uuid)
        self.assertEqual(c.keys, ("x", "y"))
        # Lines written from now on reach the consumer as written (the
        # protocol does not acknowledge its accept byte, so the first may
        # go before the relay has read it).
        stop = threading.Event()

        def feed():
            try:
                for i in range(4000):
                    if stop.is_set():
                        break
                    proc.stdin.write("%d.5,%d\n" % (i, -i))
                    proc.stdin.flush()
                    time.sleep(0.002)
            except (BrokenPipeError, ValueError):
                pass
            finally:
                proc.stdin.close()

        writer = threading.Thread(target=feed)
        writer.start()
        try:
            frames = [c.recv() for _ in range(5)]
        finally:
            stop.set()
            writer.join(IO_TIMEOUT)
        for x, y in frames:
            self.assertEqual(y, -math.floor(x))
        for a, b in zip(frames, frames[1:]):
            self.assertEqual(b[0], a[0] + 1, "lines lost or reordered")
        proc.wait(CLI_TIMEOUT)
        self.assertEqual((proc.returncode, proc.stderr.read()), (0, ""))
        proc.stdout.close()
        proc.stderr.close()

    def test_cli_record_then_replay(self):
        uuid, copy = unique("e2e-rec"), unique("e2e-replay")
        self.producer(uuid)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rec.jsonl")
            r = run_cli(["record", "--uuid", uuid, "--output", path, "--count", "20"]
                        + self.cli_options())
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            with open(path) as f:
                header = json.loads(f.readline())
                recorded = [tuple(json.loads(line)["v"]) for line in f]
            self.assertEqual(header["keys"], ["k", "twice", "minus"])
            self.assertEqual(len(recorded), 20)
            self.check_frames(recorded)
            # Played back at its pace, looped, under another uuid.
            proc = start_cli(["replay", "--input", path, "--uuid", copy, "--loop",
                              "--count", "400"] + self.cli_options())
            self.addCleanup(lambda: proc.poll() is None and proc.kill())
            c = self.consumer_when_live(copy)
            frames = [c.recv() for _ in range(10)]
            for a, b in zip(frames, frames[1:]):
                i = recorded.index(a)
                self.assertEqual(b, recorded[(i + 1) % len(recorded)], "not in order")
            out, err = finish(proc)
            self.assertEqual((proc.returncode, err), (0, ""))

    def test_cli_refused_producer_exits_2(self):
        if os.environ.get("FERRY_RELAY_TAKEOVER") != "refuse":
            self.skipTest("the relay takes over live uuids (takeover = replace)")
        uuid = unique("e2e-taken")
        self.producer(uuid)
        r = run_cli(["produce", "--uuid", uuid, "--keys", "a", "--count", "1"]
                    + self.cli_options())
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("producer refused", r.stderr)

    def test_cli_connection_lost_exits_3(self):
        grace = os.environ.get("FERRY_RELAY_GRACE")
        if grace is None or float(grace) > 5:
            self.skipTest("FERRY_RELAY_GRACE (a short grace period) is not set")
        uuid = unique("e2e-lost")
        counting = self.producer(uuid)
        proc = start_cli(["consume", "--uuid", uuid, "--count", "100000"]
                         + self.cli_options())
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.assertTrue(wait_until(lambda: proc.stdout.readline() != "", CLI_TIMEOUT))
        # The producer goes; after the grace period the relay ends the stream.
        counting.close()
        out, err = finish(proc)
        self.assertEqual(proc.returncode, 3, err)
        self.assertIn("ended the stream of uuid", err)


@unittest.skipUnless(_relay_address("FERRY_RELAY"),
                     "FERRY_RELAY (host:port of a running Ferry relay) is not set")
class RealRelayTests(RealRelayMixin, unittest.TestCase):
    address = _relay_address("FERRY_RELAY")


@unittest.skipUnless(_relay_address("FERRY_RELAY_TLS") and os.environ.get("FERRY_CAFILE"),
                     "FERRY_RELAY_TLS and FERRY_CAFILE (a Ferry relay over TLS) are not set")
class RealRelayTLSTests(RealRelayMixin, unittest.TestCase):
    address = _relay_address("FERRY_RELAY_TLS")
    options = {"tls": True, "cafile": os.environ.get("FERRY_CAFILE")}


@unittest.skipUnless(_relay_address("FERRY_CLUSTER_A") and _relay_address("FERRY_CLUSTER_B"),
                     "FERRY_CLUSTER_A and FERRY_CLUSTER_B (two nodes of a cluster) are not set")
class ClusterTests(unittest.TestCase):
    """The library against two nodes of a Ferry cluster (run_py_tests.py)."""

    def setUp(self):
        self.a = _relay_address("FERRY_CLUSTER_A")
        self.b = _relay_address("FERRY_CLUSTER_B")

    def test_producer_on_one_node_consumer_on_the_other(self):
        uuid = unique("cluster")
        p = fc.Producer(*self.a, uuid, ["k", "twice", "minus"],
                        timeout=IO_TIMEOUT).connect()
        counting = _CountingProducer(p)
        self.addCleanup(counting.close)
        c = fc.Consumer(*self.b, uuid, timeout=IO_TIMEOUT,
                        idle_timeout=IO_TIMEOUT).connect()
        self.addCleanup(c.close)
        self.assertEqual(c.keys, ("k", "twice", "minus"))
        frames = [c.recv() for _ in range(20)]
        counters = [int(f[0]) for f in frames]
        self.assertEqual(counters, list(range(counters[0], counters[0] + 20)))
        for k, twice, minus in frames:
            self.assertEqual((twice, minus), (2 * k, -k))
        self.assertIsNone(counting.error)

    def test_unknown_uuid_refused_on_both(self):
        for address in (self.a, self.b):
            with self.assertRaises(fc.RefusedError):
                fc.Consumer(*address, unique("nobody"),
                            timeout=IO_TIMEOUT).connect()


if __name__ == "__main__":
    unittest.main()
