#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/TARGET/).

The seeds are small, meaningful inputs laid out as each target reads them
(see the comment at the top of tests/fuzz/fuzz_TARGET.c): valid producer
and consumer sessions, the limits' edges, the example configuration, and
stream read patterns a protocol uses.  Run from anywhere; it rewrites the
seed directories (committed, so `make fuzz` needs no Python).
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def be32(n):
    return struct.pack(">I", n)


def field(b):
    return be32(len(b)) + b


# ---- relay: 6-byte header, session, chunk sizes ----

def relay(session, sizes=(), stop=0, max_uuid=255, max_keys_bytes=65536,
           max_keys=16384):
    h = bytes([max_uuid - 1]) + struct.pack(">H", max_keys_bytes - 1) + \
        struct.pack(">H", max_keys - 1) + bytes([len(sizes) | stop << 6])
    return h + session + bytes(s - 1 for s in sizes)


def frames(nkeys, n, seed=1):
    return b"".join(struct.pack("<%df" % nkeys, *[(seed + i + k) / 8.0
                    for k in range(nkeys)]) for i in range(n))


ARKIT = ("eyeBlinkLeft,eyeLookDownLeft,eyeLookInLeft,eyeLookOutLeft,"
         "eyeLookUpLeft,eyeSquintLeft,eyeWideLeft,eyeBlinkRight,"
         "eyeLookDownRight,eyeLookInRight,eyeLookOutRight,eyeLookUpRight,"
         "eyeSquintRight,eyeWideRight,jawForward,jawLeft,jawRight,jawOpen,"
         "mouthClose,mouthFunnel,mouthPucker,mouthLeft,mouthRight,"
         "mouthSmileLeft,mouthSmileRight,mouthFrownLeft,mouthFrownRight,"
         "mouthDimpleLeft,mouthDimpleRight,mouthStretchLeft,"
         "mouthStretchRight,mouthRollLower,mouthRollUpper,mouthShrugLower,"
         "mouthShrugUpper,mouthPressLeft,mouthPressRight,mouthLowerDownLeft,"
         "mouthLowerDownRight,mouthUpperUpLeft,mouthUpperUpRight,browDownLeft,"
         "browDownRight,browInnerUp,browOuterUpLeft,browOuterUpRight,"
         "cheekPuff,cheekSquintLeft,cheekSquintRight,noseSneerLeft,"
         "noseSneerRight,tongueOut").encode()
UUID = b"3f2b8c1e-7d4a-4f6e-9b1c-2a5d8e7f9a01"


def names(n):
    """n distinct key names, shortest first (as tests/relayclient.c)."""
    digits = (b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
              b"abcdefghijklmnopqrstuvwxyz")
    out, width, first, room = [], 1, 0, 62
    for i in range(n):
        if i - first == room:
            first, width, room = i, width + 1, room * 62
        v, name = i - first, b""
        for _ in range(width):
            name = digits[v % 62:v % 62 + 1] + name
            v //= 62
        out.append(name)
    return out


def producer(uuid, keys, body):
    return b"\x0a" + field(uuid) + field(keys) + body


def consumer(uuid, answer=b"\x00", rest=b""):
    return b"\x0b" + field(uuid) + answer + rest


RELAY = {
    "producer-3keys": relay(producer(b"phone-1", b"x,y,z",
                                      frames(3, 4) + b"\x01\x02")),
    "producer-3keys-bytewise": relay(producer(b"phone-1", b"x,y,z",
                                               frames(3, 2)), sizes=(1,)),
    "producer-arkit-cuts": relay(producer(UUID, ARKIT, frames(52, 3)),
                                  sizes=(1, 3, 7, 64, 200, 5)),
    "producer-stop-after-uuid": relay(producer(b"u", b"k", frames(1, 3)),
                                       sizes=(2,), stop=2),
    "consumer-accept": relay(consumer(UUID, b"\x00", b"ignored bytes")),
    "consumer-decline": relay(consumer(b"phone-1", b"\x01")),
    "consumer-cut": relay(consumer(UUID), sizes=(1, 2, 3)),
    "bad-first-byte": relay(b"\x0cGET / HTTP/1.1\r\n"),
    "uuid-len-zero": relay(b"\x0a" + be32(0)),
    "uuid-len-4g": relay(b"\x0a" + be32(0xffffffff) + b"abc"),
    "uuid-over-limit": relay(producer(b"toolong", b"k", b""), max_uuid=4),
    "uuid-utf8": relay(producer("café-ü".encode(), b"a", frames(1, 1))),
    "uuid-bad-utf8": relay(producer(b"\xc0\xaf", b"a", b"")),
    "uuid-control-char": relay(producer(b"a\nb", b"a", b"")),
    "keys-empty-name": relay(producer(b"u", b"a,,b", b"")),
    "keys-trailing-comma": relay(producer(b"u", b"a,b,", b"")),
    "keys-too-many": relay(producer(b"u", b"a,b,c,d", b""), max_keys=3),
    "keys-len-over-limit": relay(producer(b"u", b"abcdef", b""),
                                  max_keys_bytes=5),
    "keys-nul": relay(producer(b"u", b"a\0b", b"")),
    "keys-tab": relay(producer(b"u", b"x,y\tz", b"")),
    "keys-del": relay(producer(b"u", b"x,y\x7f", b"")),
    "keys-same-name": relay(producer(b"u", b"a,a", b"")),
    "keys-same-utf8": relay(producer(b"u", "é,e,é".encode(), b"")),
    "keys-same-far-apart": relay(producer(
        b"u", b",".join(names(199) + [b"0"]), b""), sizes=(200, 7)),
    "keys-many-distinct": relay(producer(b"u", b",".join(names(200)),
                                          b"")),
    "keys-alike": relay(producer(b"u", b"a,ab,A, a,a ", frames(5, 2))),
}


# ---- config: the text itself ----

def example():
    with open(os.path.join(ROOT, "ferry.conf.example"), "rb") as f:
        return f.read()


def example_forward():
    """The example with its commented forward section switched on."""
    out = []
    for line in example().split(b"\n"):
        if line.startswith(b";[web]") or line.startswith(b";mode") or \
                line.startswith(b";bind") or line.startswith(b";backend") or \
                line.startswith(b";connect_timeout") or \
                line.startswith(b";proxy_protocol") or \
                line.startswith(b";high_water") or \
                line.startswith(b";idle_timeout") or \
                (line.startswith(b";cert") and b"server" in line) or \
                (line.startswith(b";key") and b"server" in line):
            line = line[1:]
        out.append(line)
    return b"\n".join(out)


CONFIG = {
    "example": example(),
    "example-forward": example_forward(),
    "minimal-relay": b"[devices]\nmode = relay\nbind = 127.0.0.1:0\n",
    "design": b"""[ferry]
workers = 1
admin = 127.0.0.1:9100
log_level = info

[devices]
mode = relay
bind = :8888
slow_consumer = drop

[devices-tls]
mode = relay
bind = :8443
cert = certs/server.pem
key = certs/server.key

[web]
mode = forward
bind = 127.0.0.1:9443
cert = certs/server.pem
key = certs/server.key
backend = 127.0.0.1:8080
backend_tls = off
proxy_protocol = off
""",
    "forward-full": b"""[ferry]
drain_timeout = 250ms
[api.v1]
mode = forward
bind = [::1]:0, 127.0.0.1:0
cert = a.pem
key = a.key
cert = b.pem
key = b.key
client_ca = ca.pem
verify_client = required
tls_min_version = 1.3
alpn = h2,http/1.1
backend = localhost:8080, [::1]:8081
backend_tls = on
backend_ca = ca.pem
backend_sni = api.example
proxy_protocol = v2
high_water = 64k
connect_timeout = 1.5s
max_connections = 1000
max_connections_per_source = 10
""",
    "relay-limits": b"""[r]
mode = relay
bind = 0
queue_bytes = 1m
max_consumers = 100000
grace = 0
takeover = refuse
last_value = yes
max_uuid_bytes = 1
max_keys_bytes = 65536
max_keys = 16384
idle_timeout = 86400
""",
    "bad-missing-mode": b"[x]\nbind = :1\n",
    "bad-unknown-key": b"[x]\nmode = relay\nbind = :1\ncolour = blue\n",
    "bad-scope": b"[x]\nmode = relay\nbind = :1\nbackend = a:1\n",
    "bad-size": b"[x]\nmode = relay\nbind = :1\nqueue_bytes = 2g\n",
    "bad-syntax": b"[x\nmode relay\n",
}


# ---- stream: 7-byte header, reads, write sizes, payload ----

def stream(reads, sizes, payload, max_buffer=4096, chunk=4096,
           keep_open=False):
    h = struct.pack(">HH", max_buffer - 1, chunk - 1) + \
        bytes([len(reads), len(sizes), 1 if keep_open else 0])
    return h + b"".join(reads) + bytes(sizes) + payload


def exact(n, outside=False):
    return bytes([0 | (0x80 if outside else 0)]) + struct.pack(">H", n - 1) \
        + b"\0"


def partial(n, outside=False):
    return bytes([1 | (0x80 if outside else 0)]) + struct.pack(">H", n - 1) \
        + b"\0"


def until(delim, maxsel=0, outside=False):
    assert 1 <= len(delim) <= 3
    k = 2 | (len(delim) - 1) << 2 | maxsel << 4 | (0x80 if outside else 0)
    return bytes([k]) + (delim + b"\0\0")[:3]


def size(n):
    """The write size byte for n bytes (1..128, or a multiple of 64)."""
    return n - 1 if n <= 128 else 127 + n // 64


HTTP = (b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
LENPREFIXED = b"".join(be32(len(m)) + m for m in
                       (b"hello", b"", b"x" * 40, b"frames"))

STREAM = {
    "http-lines": stream([until(b"\r\n")] * 4 + [until(b"\r\n", outside=True)],
                         [size(3), size(10), size(1)], HTTP),
    "http-header-block": stream([until(b"\n\r\n", maxsel=6)],
                                [size(7)], HTTP),
    "length-prefixed": stream([exact(4), exact(5), exact(4), exact(4),
                               exact(40), exact(4), exact(6)],
                              [size(2), size(9)], LENPREFIXED),
    "partial-chunks": stream([partial(7), partial(100), partial(3),
                              partial(64, outside=True)],
                             [size(5), size(64)], bytes(range(256))),
    "exact-over-buffer": stream([exact(4), exact(200)], [],
                                b"abcd" + b"z" * 50, max_buffer=100),
    "until-no-delimiter": stream([until(b"\n", maxsel=1)], [size(4)],
                                 b"a" * 40),
    "until-long-delimiter": stream([until(b"END"), partial(10)],
                                   [size(1)], b"xxENxENDyy"),
    "eof-mid-read": stream([exact(10)], [], b"short"),
    "writer-open": stream([exact(3), exact(10)], [], b"abcdef",
                          keep_open=True),
    "tiny-buffer": stream([until(b";"), until(b";"), exact(2)],
                          [size(1)], b"ab;cd;ef", max_buffer=4, chunk=1),
}


# ---- proxy_in: the connection's first bytes ----

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(vc, fam, block):
    return V2_SIG + bytes([vc, fam]) + struct.pack(">H", len(block)) + block


def tlv(t, v):
    return bytes([t]) + struct.pack(">H", len(v)) + v


V4_BLOCK = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 56324,
                                                                 443)
PROXY_IN = {
    "v1_tcp4": b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n\x16\x03\x01",
    "v1_tcp6": b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
    "v1_unknown": b"PROXY UNKNOWN\r\n",
    "v1_unknown_addrs": b"PROXY UNKNOWN ::1 1.2.3.4 1 2\r\n",
    "v2_tcp4": v2(0x21, 0x11, V4_BLOCK) + b"\x16",
    "v2_tcp6": v2(0x21, 0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" +
                  struct.pack(">HH", 80, 443)),
    "v2_local": v2(0x20, 0x00, b""),
    "v2_unix": v2(0x21, 0x31, bytes(216)),
    "v2_tlv": v2(0x21, 0x11, V4_BLOCK + tlv(0x01, b"h2") +
                 tlv(0x02, b"example.com") +
                 tlv(0x20, b"\x07\x00\x00\x00\x00" +
                     tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client"))),
}


# ---- cluster: one byte (even: a NATS message, odd: a directory value) ----

def u8(n):
    return bytes([n])


def be64(n):
    return struct.pack(">Q", n)


def str8(b):
    return u8(len(b)) + b


def hdr(kind):
    return b"Fc\x01" + u8(kind)


TOKEN = bytes(range(16))


def record(node=b"node-a:41", uuid=b"dev-1", keys=b"x,y", grace=10000,
           maxc=64, takeover=0, last=1):
    return (u8(1) + str8(node) + be64(7) + be64(99) + str8(b"devices") +
            be32(grace) + be32(maxc) + u8(takeover) + u8(last) + str8(uuid) +
            be32(len(keys)) + keys)


def chunk(epoch, seq, nkeys, n):
    return (TOKEN + be64(epoch) + be64(seq) + be32(4 * nkeys) + be32(n) +
            frames(nkeys, n))


CLUSTER = {
    "heartbeat": u8(0) + hdr(1) + str8(b"node-a:41") + be64(7) + be32(250) +
    u8(0) + be32(3),
    "heartbeat-stopping": u8(0) + hdr(1) + str8(b"b") + be64(1) + be32(250) +
    u8(1) + be32(0),
    "claim": u8(0) + hdr(2) + TOKEN + be64(12) + record(),
    "claim-arkit": u8(0) + hdr(2) + TOKEN + be64(3) +
    record(keys=ARKIT, takeover=1, last=0),
    "gone": u8(0) + hdr(3) + TOKEN + be64(12) + u8(1),
    "frames-one": u8(0) + hdr(4) + chunk(12, 0, 2, 1),
    "frames-batch": u8(0) + hdr(4) + chunk(12, 5, 2, 3) + chunk(4, 1, 52, 2),
    "frames-cut": u8(0) + hdr(4) + chunk(12, 5, 2, 3)[:-3],
    "last": u8(0) + hdr(5) + chunk(12, 9, 3, 1),
    "interest": u8(0) + hdr(6) + TOKEN + str8(b"node-b:7") + be64(5) +
    be64(12) + u8(1),
    "withdraw": u8(0) + hdr(6) + TOKEN + str8(b"node-b:7") + be64(5) +
    be64(12) + u8(2),
    "hello": u8(0) + hdr(6) + TOKEN + str8(b"node-b:7") + be64(5) +
    be64(12) + u8(0x04 | 0x08 | 0x01),
    "other-version": u8(0) + b"Fc\x02\x04" + chunk(1, 0, 1, 1),
    "record": u8(1) + record(),
    "record-bad-keys": u8(1) + record(keys=b"a,,b"),
    "record-refuse": u8(1) + record(uuid="caf\u00e9".encode(), takeover=1),
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    write("relay", RELAY)
    write("config", CONFIG)
    write("stream", STREAM)
    write("proxy_in", PROXY_IN)
    write("cluster", CLUSTER)
