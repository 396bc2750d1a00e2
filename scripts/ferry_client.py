#!/usr/bin/env python3
"""Producer and consumer client for Ferry's device relay protocol (version 1).

Ferry relays a stream of frames from one *producer* per uuid to any number
of *consumers*.  A frame is one float32 value per key, little-endian, with
no header.  This file is both a small library and a command line tool; it
needs only the Python 3 standard library.

As a library::

    from ferry_client import Producer, Consumer

    with Producer("127.0.0.1", 8888, "dev-1", ["x", "y"]) as producer:
        producer.send([0.5, -1.0])

    with Consumer("127.0.0.1", 8888, "dev-1") as consumer:
        print(consumer.keys)
        for frame in consumer:          # tuples of floats
            print(frame)

As a command line tool, run it with --help.

The protocol (all lengths are 4-byte unsigned big-endian):

    producer                            server
    0x0a                             -> 0x00
    uuid length, uuid bytes          -> 0x00
    keys length, "k1,k2,..." UTF-8   -> 0x00
    frames of 4N bytes until it closes

    consumer                            server
    0x0b                             -> 0x00
    uuid length, uuid bytes          -> 0x00, or 0x01 if no producer holds it
                                     <- keys length, "k1,k2,..." UTF-8
    0x00 (accept)                    <- frames of 4N bytes

The server answers 0x01 (and closes) to a request it refuses.
"""

import argparse
import csv
import io
import itertools
import json
import math
import os
import socket
import ssl
import struct
import sys
import time

__all__ = [
    "Producer", "Consumer",
    "FerryError", "RefusedError", "ProtocolError", "ConfigError",
    "FerryConnectionError", "ConnectFailedError", "ConnectionLostError",
    "FerryTimeoutError",
    "PROTOCOL_VERSION", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_TIMEOUT",
    "main",
]

PROTOCOL_VERSION = 1

ROLE_PRODUCER = 0x0A
ROLE_CONSUMER = 0x0B
REPLY_OK = 0x00
REPLY_REFUSED = 0x01

MAX_UUID_BYTES = 255
MAX_KEYS_BYTES = 65536
MAX_KEYS = 16384

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888
DEFAULT_TIMEOUT = 10.0

RECORD_FORMAT = "ferry-record"
RECORD_VERSION = 1

_LENGTH = struct.Struct(">I")
_FLOAT32 = struct.Struct("<f")
_RECV_SIZE = 65536


# --------------------------------------------------------------------------
# Errors


class FerryError(Exception):
    """Base class of the errors this module raises for a failed exchange.

    Bad arguments (a uuid that is too long, a frame with the wrong number of
    values, ...) raise ValueError instead, before anything is sent.
    ``exit_code`` is the command line tool's exit status for the error.
    """

    exit_code = 1


class ConfigError(FerryError):
    """A local setting cannot be used, e.g. a TLS file cannot be loaded."""

    exit_code = 1


class RefusedError(FerryError):
    """The server answered 0x01 and closed the connection.

    For a consumer this means that no producer holds the uuid; for a
    producer that the uuid is already held (and the server refuses
    takeovers) or that a server limit was broken.  ``role`` is "producer"
    or "consumer", ``step`` names the request that was refused.
    """

    exit_code = 2

    def __init__(self, message, role=None, uuid=None, step=None):
        super().__init__(message)
        self.role = role
        self.uuid = uuid
        self.step = step


class FerryConnectionError(FerryError):
    """The connection could not be made, was lost, or timed out."""

    exit_code = 3


class ConnectFailedError(FerryConnectionError):
    """The TCP connection or the TLS handshake failed."""


class ConnectionLostError(FerryConnectionError):
    """The server closed the connection, or it broke, in the middle of the
    protocol (a clean end of a consumer's stream is not an error)."""


class FerryTimeoutError(FerryConnectionError):
    """Nothing arrived, or nothing could be sent, within the timeout."""


class ProtocolError(FerryError):
    """The server sent something the protocol does not allow."""

    exit_code = 4


# --------------------------------------------------------------------------
# Helpers


def _encode_uuid(uuid):
    if isinstance(uuid, (bytes, bytearray)):
        raw = bytes(uuid)
    elif isinstance(uuid, str):
        raw = uuid.encode("utf-8")
    else:
        raise TypeError("uuid must be str or bytes, not %s" % type(uuid).__name__)
    if not 1 <= len(raw) <= MAX_UUID_BYTES:
        raise ValueError("uuid must be 1 to %d bytes of UTF-8, got %d"
                         % (MAX_UUID_BYTES, len(raw)))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("uuid must be UTF-8: %r" % raw) from None
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise ValueError("uuid must not contain control characters: %r" % raw)
    return raw


def _normalize_keys(keys):
    """Return (tuple of key names, their comma-joined UTF-8 bytes)."""
    if isinstance(keys, str):
        keys = keys.split(",")
    keys = tuple(keys)
    if not 1 <= len(keys) <= MAX_KEYS:
        raise ValueError("need 1 to %d keys, got %d" % (MAX_KEYS, len(keys)))
    seen = set()
    for name in keys:
        if not isinstance(name, str):
            raise TypeError("key names must be str, not %s" % type(name).__name__)
        if not name:
            raise ValueError("key names must not be empty")
        if "," in name:
            raise ValueError("key name %r contains a comma" % name)
        if any(ord(c) < 0x20 or c == "\x7f" for c in name):
            raise ValueError("key name %r contains a control character" % name)
        if name in seen:
            raise ValueError("key name %r is given twice" % name)
        seen.add(name)
    raw = ",".join(keys).encode("utf-8")
    if len(raw) > MAX_KEYS_BYTES:
        raise ValueError("the key names take %d bytes joined; the limit is %d"
                         % (len(raw), MAX_KEYS_BYTES))
    return keys, raw


def _decode_keys(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("the key names sent by the server are not UTF-8: %s" % e)
    keys = tuple(text.split(","))
    if len(keys) > MAX_KEYS or not all(keys):
        raise ProtocolError("the server sent invalid key names: %r"
                            % (text if len(text) <= 80 else text[:77] + "..."))
    return keys


def _format_address(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _describe(exc):
    """A short human description of a socket or TLS error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate verify failed: %s" % (exc.verify_message or exc.reason)
    if isinstance(exc, ssl.SSLError):
        if exc.reason:
            return "TLS error: %s" % exc.reason.lower().replace("_", " ")
        return "TLS error: %s" % exc
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def shortest_float32(x):
    """Return the float with the shortest decimal form that still packs to
    the same float32 as ``x`` (0.30000001192092896 -> 0.3).  Used to print
    received values the way they were most likely written."""
    if not math.isfinite(x):
        return x
    packed = _FLOAT32.pack(x)
    for digits in (6, 7, 8):
        y = float("%.*g" % (digits, x))
        if _FLOAT32.pack(y) == packed:
            return y
    return float("%.9g" % x)


# --------------------------------------------------------------------------
# The connection classes


class _Endpoint:
    """What producers and consumers share: connecting, TLS, exact reads."""

    role = None

    def __init__(self, host, port, uuid, tls=False, cafile=None, cert=None,
                 key=None, timeout=DEFAULT_TIMEOUT):
        self.host = host
        self.port = int(port)
        self._uuid_bytes = _encode_uuid(uuid)
        self.uuid = uuid if isinstance(uuid, str) else self._uuid_bytes.decode(
            "utf-8", "replace")
        if (cafile or cert or key) and not tls:
            raise ValueError("cafile, cert and key need tls=True")
        if key and not cert:
            raise ValueError("a private key needs its certificate (cert)")
        self.tls = bool(tls)
        self.cafile = cafile
        self.cert = cert
        self.key = key
        self.timeout = timeout
        self._sock = None
        self._rbuf = bytearray()

    @property
    def address(self):
        """The server as "host:port", for messages."""
        return _format_address(self.host, self.port)

    @property
    def connected(self):
        return self._sock is not None

    def connect(self):
        """Connect and run the handshake; returns self.

        Raises ConnectFailedError, RefusedError, ProtocolError,
        ConnectionLostError, FerryTimeoutError or ConfigError.
        """
        if self._sock is not None:
            raise FerryError("%s is already connected" % self.role)
        context = self._tls_context() if self.tls else None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            raise ConnectFailedError("cannot connect to %s: %s" % (self.address, _describe(e)))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_hostname=self.host)
                except OSError as e:
                    raise ConnectFailedError("TLS handshake with %s failed: %s"
                                             % (self.address, _describe(e)))
            self._sock = sock
            self._rbuf.clear()
            self._handshake()
        except BaseException:
            self._sock = None
            sock.close()
            raise
        return self

    def close(self):
        """Close the connection (safe to call more than once)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self):
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return "<%s uuid=%r %s%s%s>" % (
            type(self).__name__, self.uuid, self.address,
            " tls" if self.tls else "",
            " connected" if self._sock is not None else "")

    # -- internals ---------------------------------------------------------

    def _handshake(self):
        raise NotImplementedError

    def _tls_context(self):
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ValueError) as e:
            raise ConfigError("cannot load CA file %r: %s" % (self.cafile, _describe(e)))
        if self.cert:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ValueError) as e:
                if self.key:
                    what = "client certificate %r / key %r" % (self.cert, self.key)
                else:
                    what = ("client certificate %r (no key given, so the file must "
                            "also hold the private key)" % self.cert)
                raise ConfigError("cannot load %s: %s" % (what, _describe(e)))
        return context

    def _require_socket(self):
        if self._sock is None:
            raise FerryError("%s for uuid %r is not connected" % (self.role, self.uuid))
        return self._sock

    def _send(self, data, what):
        sock = self._require_socket()
        try:
            sock.sendall(data)
        except socket.timeout:
            # Part of the data may be gone: the stream cannot be resumed.
            self.close()
            raise FerryTimeoutError("timed out sending %s to %s" % (what, self.address))
        except OSError as e:
            self.close()
            raise ConnectionLostError("connection to %s lost while sending %s: %s"
                                      % (self.address, what, _describe(e)))

    def _recv_exact(self, n, what, eof_ok=False):
        """Return exactly n bytes.

        Bytes that arrive before a timeout are kept for the next call, so a
        FerryTimeoutError leaves the stream intact.  If the server closes
        the connection before the first byte and eof_ok is true, returns
        None; any other end of stream raises ConnectionLostError.
        """
        sock = self._require_socket()
        buf = self._rbuf
        while len(buf) < n:
            try:
                chunk = sock.recv(max(n - len(buf), _RECV_SIZE))
            except socket.timeout:
                raise FerryTimeoutError("timed out waiting for %s from %s"
                                        % (what, self.address))
            except OSError as e:
                self.close()
                raise ConnectionLostError("connection to %s lost while waiting for %s: %s"
                                          % (self.address, what, _describe(e)))
            if not chunk:
                self.close()
                if not buf and eof_ok:
                    return None
                if not buf:
                    raise ConnectionLostError("%s closed the connection while we waited for %s"
                                              % (self.address, what))
                raise ConnectionLostError("%s closed the connection in the middle of %s "
                                          "(%d of %d bytes)" % (self.address, what, len(buf), n))
            buf += chunk
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _expect_ok(self, what, refused_message):
        reply = self._recv_exact(1, "the reply to %s" % what)[0]
        if reply == REPLY_OK:
            return
        self.close()
        if reply == REPLY_REFUSED:
            raise RefusedError(refused_message, role=self.role, uuid=self.uuid, step=what)
        raise ProtocolError("%s replied 0x%02x to %s (expected 0x00 or 0x01)"
                            % (self.address, reply, what))


class Producer(_Endpoint):
    """Publishes frames under a uuid.

    ``keys`` is a sequence of key names (or one comma-separated string);
    every frame carries one float32 per key.  Call ``connect()`` (or use
    the producer as a context manager), then ``send(values)`` for each
    frame and ``close()`` at the end::

        with Producer("127.0.0.1", 8888, "dev-1", "x,y,z") as p:
            p.send([1.0, 2.0, 3.0])

    With ``tls=True`` the server certificate is checked against ``cafile``
    (the system's CAs if None) and the name ``host``; ``cert``/``key`` give
    a client certificate.  ``timeout`` (seconds, None = no limit) bounds
    connecting, each handshake step and each send.
    """

    role = "producer"

    def __init__(self, host, port, uuid, keys, tls=False, cafile=None, cert=None,
                 key=None, timeout=DEFAULT_TIMEOUT):
        super().__init__(host, port, uuid, tls, cafile, cert, key, timeout)
        self.keys, self._keys_bytes = _normalize_keys(keys)
        self._frame = struct.Struct("<%df" % len(self.keys))
        self.frames_sent = 0

    @property
    def frame_size(self):
        """Bytes per frame (4 per key)."""
        return self._frame.size

    def _handshake(self):
        self._send(bytes([ROLE_PRODUCER]), "the producer greeting")
        self._expect_ok("the producer greeting",
                        "producer refused: %s refused the producer greeting" % self.address)
        self._send(_LENGTH.pack(len(self._uuid_bytes)) + self._uuid_bytes, "the uuid")
        self._expect_ok("the uuid",
                        "producer refused: uuid %r is already held by another producer "
                        "(or the server does not accept it)" % self.uuid)
        self._send(_LENGTH.pack(len(self._keys_bytes)) + self._keys_bytes, "the key names")
        self._expect_ok("the key names",
                        "producer refused: the server does not accept the %d key names "
                        "for uuid %r" % (len(self.keys), self.uuid))

    def pack(self, values):
        """Return the bytes of one frame (ValueError if it cannot be packed)."""
        if len(values) != len(self.keys):
            raise ValueError("a frame needs %d values (one per key), got %d"
                             % (len(self.keys), len(values)))
        try:
            return self._frame.pack(*values)
        except (struct.error, OverflowError, TypeError) as e:
            raise ValueError("cannot pack the frame as float32: %s" % e) from None

    def send(self, values):
        """Send one frame: a sequence of numbers, one per key."""
        data = self.pack(values)
        self._send(data, "a frame")
        self.frames_sent += 1


class Consumer(_Endpoint):
    """Receives the frames published under a uuid.

    After ``connect()`` (or entering the context manager), ``keys`` holds
    the producer's key names.  ``recv()`` returns the next frame as a tuple
    of floats, or None once the server has ended the stream; iterating
    over the consumer yields frames until the end::

        with Consumer("127.0.0.1", 8888, "dev-1") as c:
            for frame in c:
                print(dict(zip(c.keys, frame)))

    ``timeout`` bounds connecting and the handshake; ``idle_timeout``
    (None = wait forever) bounds the wait for each frame, and raises
    FerryTimeoutError without losing the stream.  TLS options are those
    of Producer.
    """

    role = "consumer"

    def __init__(self, host, port, uuid, tls=False, cafile=None, cert=None,
                 key=None, timeout=DEFAULT_TIMEOUT, idle_timeout=None):
        super().__init__(host, port, uuid, tls, cafile, cert, key, timeout)
        self.idle_timeout = idle_timeout
        self.keys = None
        self._frame = None
        self.frames_received = 0

    @property
    def frame_size(self):
        """Bytes per frame (4 per key); None before connect()."""
        return self._frame.size if self._frame else None

    def _handshake(self):
        self._send(bytes([ROLE_CONSUMER]), "the consumer greeting")
        self._expect_ok("the consumer greeting",
                        "consumer refused: %s refused the consumer greeting" % self.address)
        self._send(_LENGTH.pack(len(self._uuid_bytes)) + self._uuid_bytes, "the uuid")
        self._expect_ok("the uuid", "consumer refused: no producer holds uuid %r" % self.uuid)
        (length,) = _LENGTH.unpack(self._recv_exact(_LENGTH.size, "the key names length"))
        if not 1 <= length <= MAX_KEYS_BYTES:
            raise ProtocolError("%s announced %d bytes of key names (expected 1 to %d)"
                                % (self.address, length, MAX_KEYS_BYTES))
        keys = _decode_keys(self._recv_exact(length, "the key names"))
        self._send(bytes([REPLY_OK]), "the acceptance of the key names")
        self.keys = keys
        self._frame = struct.Struct("<%df" % len(keys))
        self._sock.settimeout(self.idle_timeout)

    _DEFAULT = object()

    def recv(self, timeout=_DEFAULT):
        """Return the next frame as a tuple of floats, or None at the end.

        ``timeout`` overrides ``idle_timeout`` for this call.  Raises
        FerryTimeoutError if no complete frame arrives in time (the stream
        stays usable) and ConnectionLostError if the connection breaks.
        """
        if self._sock is None:
            if self._frame is not None:
                return None          # the stream has ended (or was closed)
            self._require_socket()
        if timeout is not Consumer._DEFAULT:
            self._sock.settimeout(timeout)
        try:
            data = self._recv_exact(self._frame.size, "a frame", eof_ok=True)
        finally:
            if timeout is not Consumer._DEFAULT and self._sock is not None:
                self._sock.settimeout(self.idle_timeout)
        if data is None:
            return None
        self.frames_received += 1
        return self._frame.unpack(data)

    def __iter__(self):
        while True:
            frame = self.recv()
            if frame is None:
                return
            yield frame


# --------------------------------------------------------------------------
# Command line


class UsageError(Exception):
    """A bad command line or bad input data (exit status 1)."""


class _StdoutClosed(Exception):
    """The reader of our standard output went away (e.g. `| head`)."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # argparse exits 2, which here means "refused by the server".
        self.print_usage(sys.stderr)
        self.exit(1, "%s: error: %s\n" % (self.prog, message))


def _emit(text):
    """Write to stdout and flush at once (output is often piped)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise _StdoutClosed from None


def _values_text(values):
    return ",".join(repr(shortest_float32(v)) for v in values)


def _csv_line(fields):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError("%s: %r is not a number" % (where, value))
    return float(value)


class _Pacer:
    """Spaces out sends to a rate in Hz (0 or None: no waiting)."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = None

    def wait(self):
        if not self.interval:
            return
        now = time.monotonic()
        if self.next is None or now - self.next > 1.0:
            self.next = now          # first frame, or far behind: no burst
        elif self.next > now:
            time.sleep(self.next - now)
        self.next += self.interval


def _synthetic_frames(nkeys, rate):
    """Key i follows sin(2*pi*0.5*t + i): a 0.5 Hz sine, phase-shifted."""
    start = time.monotonic()
    for k in itertools.count():
        t = k / rate if rate else time.monotonic() - start
        yield [math.sin(2 * math.pi * 0.5 * t + i) for i in range(nkeys)]


def _csv_frames(stream, keys):
    """Frames from CSV lines; a first line equal to the key names is skipped."""
    reader = csv.reader(stream)
    first = True
    for row in reader:
        where = "stdin line %d" % reader.line_num
        fields = [f.strip() for f in row]
        if not any(fields) or fields[0].startswith("#"):
            continue
        if first and fields == [k.strip() for k in keys]:
            first = False
            continue
        first = False
        if len(fields) != len(keys):
            raise UsageError("%s: expected %d values (%s), got %d"
                             % (where, len(keys), ",".join(keys), len(fields)))
        try:
            yield [float(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise UsageError("%s: %r is not a number" % (where, bad)) from None


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _json_frames(stream, keys):
    """Frames from JSON lines: a list of numbers, or {key: number} with
    missing keys sent as 0.0."""
    index = {k: i for i, k in reversed(list(enumerate(keys)))}
    for lineno, line in enumerate(stream, 1):
        where = "stdin line %d" % lineno
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UsageError("%s: invalid JSON: %s" % (where, e)) from None
        if isinstance(obj, list):
            if len(obj) != len(keys):
                raise UsageError("%s: expected %d values (%s), got %d"
                                 % (where, len(keys), ",".join(keys), len(obj)))
            yield [_number(v, where) for v in obj]
        elif isinstance(obj, dict):
            values = [0.0] * len(keys)
            for name, v in obj.items():
                if name not in index:
                    raise UsageError("%s: unknown key %r (the keys are %s)"
                                     % (where, name, ",".join(keys)))
                values[index[name]] = _number(v, where)
            yield values
        else:
            raise UsageError("%s: expected a list of numbers or an object, got %s"
                             % (where, type(obj).__name__))


def _connection_options(args):
    if (args.cafile or args.cert or args.key) and not args.tls:
        raise UsageError("--cafile, --cert and --key need --tls")
    if args.key and not args.cert:
        raise UsageError("--key needs --cert")
    return dict(tls=args.tls, cafile=args.cafile, cert=args.cert, key=args.key,
                timeout=args.timeout)


def _open_consumer(args):
    return Consumer(args.host, args.port, args.uuid, idle_timeout=args.idle_timeout,
                    **_connection_options(args)).connect()


def _check_count(consumer, wanted, got):
    if wanted is not None and got < wanted:
        raise ConnectionLostError("%s ended the stream of uuid %r after %d of %d frames"
                                  % (consumer.address, consumer.uuid, got, wanted))


def cmd_produce(args):
    keys, _ = _normalize_keys(args.keys)
    if args.input == "synthetic":
        rate = 60.0 if args.rate is None else args.rate
        frames = _synthetic_frames(len(keys), rate)
    else:
        rate = args.rate or 0.0
        reader = _csv_frames if args.input == "csv" else _json_frames
        frames = reader(sys.stdin, keys)
    if args.count is not None:
        frames = itertools.islice(frames, args.count)
    pacer = _Pacer(rate)
    with Producer(args.host, args.port, args.uuid, keys,
                  **_connection_options(args)) as producer:
        for values in frames:
            pacer.wait()
            producer.send(values)
    return 0


def cmd_consume(args):
    with _open_consumer(args) as consumer:
        keys = consumer.keys
        if args.format == "csv":
            _emit(_csv_line(keys))
        got = 0
        while args.count is None or got < args.count:
            frame = consumer.recv()
            if frame is None:
                break
            if args.format == "csv":
                _emit(_values_text(frame) + "\n")
            else:
                _emit(json.dumps(dict(zip(keys, map(shortest_float32, frame))),
                                 ensure_ascii=False) + "\n")
            got += 1
        _check_count(consumer, args.count, got)
    return 0


def cmd_record(args):
    with _open_consumer(args) as consumer:
        start = time.monotonic()
        deadline = None if args.duration is None else start + args.duration
        try:
            out = (sys.stdout if args.output == "-"
                   else open(args.output, "w", encoding="utf-8"))
        except OSError as e:
            raise UsageError("cannot write %s: %s" % (args.output, _describe(e))) from None
        write = _emit if out is sys.stdout else (lambda text: (out.write(text), out.flush()))
        try:
            write(json.dumps({"format": RECORD_FORMAT, "version": RECORD_VERSION,
                              "uuid": consumer.uuid, "keys": list(consumer.keys)},
                             ensure_ascii=False) + "\n")
            got = 0
            while args.count is None or got < args.count:
                timeout = Consumer._DEFAULT
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    timeout = (remaining if args.idle_timeout is None
                               else min(remaining, args.idle_timeout))
                try:
                    frame = consumer.recv(timeout)
                except FerryTimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    raise
                if frame is None:
                    break
                t = round(time.monotonic() - start, 6)
                write(json.dumps({"t": t, "v": [shortest_float32(v) for v in frame]}) + "\n")
                got += 1
        finally:
            if out is not sys.stdout:
                out.close()
        _check_count(consumer, args.count, got)
    return 0


class _Recording:
    """A ferry-record file: a header line, then {"t": s, "v": [...]} lines."""

    def __init__(self, path):
        self.path = path
        self.name = "stdin" if path == "-" else path
        try:
            self.file = sys.stdin if path == "-" else open(path, encoding="utf-8")
        except OSError as e:
            raise UsageError("cannot read %s: %s" % (path, _describe(e))) from None
        header = self._parse(self.file.readline(), 1)
        if not isinstance(header, dict) or header.get("format") != RECORD_FORMAT:
            raise UsageError("%s is not a ferry recording (no ferry-record header)" % self.name)
        if header.get("version") != RECORD_VERSION:
            raise UsageError("%s: unsupported recording version %r"
                             % (self.name, header.get("version")))
        keys, uuid = header.get("keys"), header.get("uuid")
        if not isinstance(uuid, str) or not isinstance(keys, list) or \
                not all(isinstance(k, str) for k in keys):
            raise UsageError("%s: the header needs a uuid string and a list of keys"
                             % self.name)
        self.uuid = uuid
        try:
            self.keys, _ = _normalize_keys(keys)
        except ValueError as e:
            raise UsageError("%s: %s" % (self.name, e)) from None
        self.start = self.file.tell() if self.file.seekable() else None

    def _parse(self, line, lineno):
        try:
            return json.loads(line)
        except ValueError as e:
            raise UsageError("%s line %d: invalid JSON: %s" % (self.name, lineno, e)) from None

    def frames(self):
        """Yield (t, values) for each frame line, from the start."""
        if self.start is not None:
            self.file.seek(self.start)
        for lineno, line in enumerate(self.file, 2):
            if not line.strip():
                continue
            where = "%s line %d" % (self.name, lineno)
            try:
                obj = json.loads(line)
            except ValueError as e:
                if not line.endswith("\n"):
                    # A recording cut short (e.g. by kill -9) ends mid-line.
                    print("ferry: warning: %s: ignoring a truncated last line" % where,
                          file=sys.stderr)
                    return
                raise UsageError("%s: invalid JSON: %s" % (where, e)) from None
            if not isinstance(obj, dict) or "t" not in obj or not isinstance(obj.get("v"), list):
                raise UsageError('%s: expected {"t": seconds, "v": [values]}' % where)
            values = obj["v"]
            if len(values) != len(self.keys):
                raise UsageError("%s: expected %d values, got %d"
                                 % (where, len(self.keys), len(values)))
            yield _number(obj["t"], where), [_number(v, where) for v in values]

    def close(self):
        if self.file is not sys.stdin:
            self.file.close()


def cmd_replay(args):
    if args.loop and args.input == "-":
        raise UsageError("--loop needs a file, not stdin")
    recording = _Recording(args.input)
    try:
        uuid = args.uuid if args.uuid is not None else recording.uuid
        with Producer(args.host, args.port, uuid, recording.keys,
                      **_connection_options(args)) as producer:
            _replay(producer, recording, args.speed, args.loop, args.count)
    finally:
        recording.close()
    return 0


def _replay(producer, recording, speed, loop, count):
    began = time.monotonic()
    offset = 0.0                      # recording time at which this pass starts
    sent = 0
    while True:
        first = last = None
        n = 0
        for t, values in recording.frames():
            if count is not None and sent >= count:
                return
            if first is None:
                first = t
            if speed:
                delay = began + (offset + t - first) / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(values)
            sent += 1
            n += 1
            last = t
        if not loop:
            return
        if n == 0:
            raise UsageError("%s has no frames to loop over" % recording.name)
        # The next pass starts one average frame interval after this one.
        span = max(last - first, 0.0)
        offset += span + (span / (n - 1) if n > 1 else 1.0)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1: %r" % text)
    return value


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be a finite number >= 0: %r" % text)
    return value


def _positive(text):
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0: %r" % text)
    return value


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("port out of range: %r" % text)
    return value


def _add_connection_options(parser, suppress):
    """The options every subcommand takes.  They are accepted both before
    and after the subcommand: the subcommand's copies have no default, so
    they only override what was given before."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection options")
    group.add_argument("--host", default=default(DEFAULT_HOST),
                       help="relay host name or address (default %s)" % DEFAULT_HOST)
    group.add_argument("--port", type=_port, default=default(DEFAULT_PORT),
                       help="relay port (default %d)" % DEFAULT_PORT)
    group.add_argument("--tls", action="store_true", default=default(False),
                       help="use TLS; the server certificate must match --host")
    group.add_argument("--cafile", metavar="PEM", default=default(None),
                       help="CA certificates to check the server with "
                            "(default: the system's)")
    group.add_argument("--cert", metavar="PEM", default=default(None),
                       help="client certificate (may also hold the key)")
    group.add_argument("--key", metavar="PEM", default=default(None),
                       help="private key of --cert")
    group.add_argument("--timeout", type=_positive, metavar="SECONDS",
                       default=default(DEFAULT_TIMEOUT),
                       help="limit for connecting, each handshake step and each "
                            "send (default %g)" % DEFAULT_TIMEOUT)


EXIT_STATUS_TEXT = """\
exit status:
  0    success (also when the reader of the output goes away)
  1    usage or input error
  2    refused by the server (0x01)
  3    connection failed, lost or timed out
  4    protocol error
  130  interrupted (Ctrl-C)
"""

MAIN_EPILOG = """\
examples:
  # a synthetic producer (sine waves) with three keys, 60 frames per second
  %(prog)s produce --uuid dev-1 --keys x,y,z

  # print its frames as CSV, or as JSON lines
  %(prog)s consume --uuid dev-1 --format csv
  %(prog)s consume --uuid dev-1 --format json --count 10

  # publish CSV lines written by another program
  my-sensor | %(prog)s produce --uuid dev-2 --keys temp,pressure --input csv

  # record 30 seconds, then play it back twice as fast under another uuid
  %(prog)s record --uuid dev-1 --output dev-1.jsonl --duration 30
  %(prog)s replay --input dev-1.jsonl --uuid dev-1-copy --speed 2

  # over TLS, with a client certificate
  %(prog)s consume --uuid dev-1 --port 8443 --tls --cafile certs/ca.pem \\
      --cert certs/client.pem --key certs/client.key

""" + EXIT_STATUS_TEXT


def build_parser():
    """The argparse parser of the command line tool."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _ArgumentParser(
        description="Producer and consumer for Ferry's device relay protocol "
                    "(version %d)." % PROTOCOL_VERSION,
        epilog=MAIN_EPILOG, formatter_class=formatter)
    _add_connection_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "produce", help="publish frames under a uuid", formatter_class=formatter,
        description="Connect as the producer of UUID and send frames: a synthetic\n"
                    "signal (key i follows sin(2*pi*0.5*t + i)), or lines read from stdin.",
        epilog="input formats:\n"
               "  csv   one frame per line: comma-separated numbers, one per key;\n"
               "        a first line equal to the key names is skipped\n"
               "  json  one JSON value per line: [1.5, 2, ...], or {\"key\": number}\n"
               "        with missing keys sent as 0.0\n\n"
               "examples:\n"
               "  %(prog)s --uuid dev-1 --keys x,y,z --rate 100 --count 1000\n"
               "  printf '1,2\\n3,4\\n' | %(prog)s --uuid dev-2 --keys a,b --input csv\n"
               "  echo '{\"a\": 1.5}' | %(prog)s --uuid dev-2 --keys a,b --input json\n")
    p.add_argument("--uuid", required=True, help="the stream's uuid (1 to 255 bytes)")
    p.add_argument("--keys", required=True, metavar="K1,K2,...",
                   help="comma-separated key names, one float per key per frame")
    p.add_argument("--input", choices=("synthetic", "csv", "json"), default="synthetic",
                   help="where frames come from (default synthetic)")
    p.add_argument("--rate", type=_non_negative, metavar="HZ",
                   help="frames per second, 0 = as fast as possible (default 60 for "
                        "synthetic; stdin input is sent as it comes)")
    p.add_argument("--count", type=_positive_int, metavar="N",
                   help="stop after N frames (default: until stopped / end of input)")
    _add_connection_options(p, suppress=True)
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser(
        "consume", help="print the frames of a uuid", formatter_class=formatter,
        description="Connect as a consumer of UUID and print each frame with its key\n"
                    "names, one line per frame.",
        epilog="examples:\n"
               "  %(prog)s --uuid dev-1\n"
               "  %(prog)s --uuid dev-1 --format json --count 5\n")
    p.add_argument("--uuid", required=True, help="the stream's uuid")
    p.add_argument("--format", choices=("csv", "json"), default="csv",
                   help="csv: a header line of key names, then values; json: one "
                        "{key: value} object per line (default csv)")
    p.add_argument("--count", type=_positive_int, metavar="N",
                   help="stop after N frames; exit 3 if the stream ends sooner")
    p.add_argument("--idle-timeout", type=_positive, metavar="SECONDS",
                   help="give up (exit 3) if no frame arrives for this long "
                        "(default: wait forever)")
    _add_connection_options(p, suppress=True)
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser(
        "record", help="save the frames of a uuid to a file", formatter_class=formatter,
        description="Connect as a consumer of UUID and write the stream to a JSON-lines\n"
                    "file: first a header line\n"
                    "  {\"format\": \"ferry-record\", \"version\": 1, \"uuid\": ..., "
                    "\"keys\": [...]}\n"
                    "then one line per frame\n"
                    "  {\"t\": seconds since the start, \"v\": [values]}",
        epilog="examples:\n"
               "  %(prog)s --uuid dev-1 --output dev-1.jsonl --duration 60\n"
               "  %(prog)s --uuid dev-1 --output - --count 100 | gzip > dev-1.jsonl.gz\n")
    p.add_argument("--uuid", required=True, help="the stream's uuid")
    p.add_argument("--output", required=True, metavar="FILE", help="file to write, - = stdout")
    p.add_argument("--count", type=_positive_int, metavar="N",
                   help="stop after N frames; exit 3 if the stream ends sooner")
    p.add_argument("--duration", type=_positive, metavar="SECONDS",
                   help="stop after this many seconds")
    p.add_argument("--idle-timeout", type=_positive, metavar="SECONDS",
                   help="give up (exit 3) if no frame arrives for this long "
                        "(default: wait forever)")
    _add_connection_options(p, suppress=True)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "replay", help="play a recording back as a producer", formatter_class=formatter,
        description="Connect as a producer and send the frames of a recording made by\n"
                    "'record', at the recorded pace.",
        epilog="examples:\n"
               "  %(prog)s --input dev-1.jsonl\n"
               "  %(prog)s --input dev-1.jsonl --uuid test-1 --speed 10 --loop\n")
    p.add_argument("--input", required=True, metavar="FILE", help="recording, - = stdin")
    p.add_argument("--uuid", help="publish under this uuid (default: the recorded one)")
    p.add_argument("--speed", type=_non_negative, default=1.0, metavar="X",
                   help="play X times as fast, 0 = as fast as possible (default 1)")
    p.add_argument("--loop", action="store_true", help="start again at the end, forever")
    p.add_argument("--count", type=_positive_int, metavar="N",
                   help="stop after N frames in all")
    _add_connection_options(p, suppress=True)
    p.set_defaults(func=cmd_replay)
    return parser


def _quiet_stdout():
    # Point stdout at /dev/null so the flush at exit does not complain.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv=None):
    """Run the command line tool; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except _StdoutClosed:
        _quiet_stdout()
        return 0
    except FerryError as e:
        print("ferry: %s" % e, file=sys.stderr)
        return e.exit_code
    except (UsageError, ValueError) as e:
        print("ferry: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
