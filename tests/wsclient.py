"""A small WebSocket client (RFC 6455) for the tests, on the standard
library only, that can also misbehave on purpose (unmasked frames, bad
opcodes, fragmented control frames...).  Not a test module itself."""
import base64
import hashlib
import os
import socket
import ssl
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0


class HandshakeRefused(Exception):
    def __init__(self, status, head, body):
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.head = head
        self.body = body


def open_socket(host, port, tls=False, cafile=None, timeout=10, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if rcvbuf:
        # Before the connect: the window is agreed then.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, port))
    if tls:
        ctx = ssl.create_default_context(cafile=cafile)
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    return sock


def read_head(sock):
    """The HTTP answer's head (bytes up to the blank line) and the rest."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def http_status(head):
    try:
        return int(head.split(" ", 2)[1])
    except (IndexError, ValueError):
        return 0


class WS:
    def __init__(self, host, port, path, tls=False, cafile=None,
                 headers=None, timeout=10, key=None, rcvbuf=None):
        self.sock = open_socket(host, port, tls, cafile, timeout, rcvbuf)
        self.buf = b""
        key = key or base64.b64encode(os.urandom(16)).decode()
        hdrs = {"Host": f"{host}:{port}", "Upgrade": "websocket",
                "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                "Sec-WebSocket-Version": "13"}
        hdrs.update(headers or {})
        req = f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None)
        self.sock.sendall((req + "\r\n").encode())
        head, rest = read_head(self.sock)
        status = http_status(head)
        if status != 101:
            body = rest
            try:
                while True:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        break
                    body += chunk
            except OSError:
                pass
            self.sock.close()
            raise HandshakeRefused(status, head, body.decode("latin-1"))
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest())
        if f"Sec-WebSocket-Accept: {want.decode()}" not in head:
            raise AssertionError(f"bad accept in {head!r}")
        self.buf = rest

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            m = os.urandom(4)
            payload = bytes(c ^ m[i % 4] for i, c in enumerate(payload))
            hdr += m
        self.sock.sendall(hdr + payload)

    def send_binary(self, data):
        self.send_frame(BINARY, data)

    def send_text(self, text):
        self.send_frame(TEXT, text.encode())

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        """(fin, opcode, payload) of the next frame; EOFError at the end."""
        b0, b1 = self._need(2)
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self._need(n)

    def recv_message(self):
        """(opcode, payload) of the next data or control message."""
        fin, op, data = self.recv_frame()
        while not fin:
            fin, _, more = self.recv_frame()
            data += more
        return op, data

    def recv_close(self):
        """Reads until a close frame: its code (None if the TCP closed)."""
        try:
            while True:
                op, data = self.recv_message()
                if op == CLOSE:
                    return struct.unpack("!H", data[:2])[0] if data else 1005
        except (EOFError, OSError):
            return None

    def close(self, code=1000, reason=b""):
        try:
            self.send_frame(CLOSE, struct.pack("!H", code) + reason)
        except OSError:
            pass

    def shutdown(self):
        try:
            self.sock.close()
        except OSError:
            pass
