#!/usr/bin/env python3
"""The original design of the device relay, as the benchmarks' reference.

This is the seed's Tornado ProxyServer (a coroutine per connection, one
read_bytes() per frame, a yielded write per consumer), made correct so
that ferry-bench speaks to it exactly as to Ferry:

- the seed's byte literals are what they meant (b"\\x0a", not b"x0a");
- fan-out: every accepted consumer of a uuid gets every frame (the seed
  kept one), a closed consumer is dropped, and a producer that leaves
  releases its uuid and closes its consumers (the seed kept stale entries);
- the consumer is told the keys' length in bytes, not in characters;
- TLS through Tornado's ssl_options, as the seed's TCPServer documents;
- no print() per frame (the seed unpacked and printed each one while
  debugging; that would measure the terminal, not the design).

What stays the seed's: a producer reads one frame at a time and waits for
each consumer's write to complete before reading the next, so a slow
consumer slows its producer (the "block" policy of Ferry).

Run with Debian's python3-tornado:
    python3 reference_relay.py --port 0 [--tls --cert C --key K]
It prints "LISTEN port=N" once it accepts and stops on SIGTERM/SIGINT.
"""

import argparse
import signal
import ssl
import struct
import sys

from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer

PRODUCER = b"\x0a"
CONSUMER = b"\x0b"
OK = b"\x00"
REFUSED = b"\x01"


class ProxyServer(TCPServer):
    def __init__(self, *args, verbose=False, **kwargs):
        super(ProxyServer, self).__init__(*args, **kwargs)
        self.devices = dict()
        self.verbose = verbose

    def log(self, *args):
        if self.verbose:
            print(*args, file=sys.stderr)

    @gen.coroutine
    def handle_stream(self, stream, address):
        try:
            device = yield stream.read_bytes(1)
        except StreamClosedError:
            return
        if device == PRODUCER:
            yield self.handle_iphonex_stream(stream, address)
        elif device == CONSUMER:
            yield self.handle_ue4_stream(stream, address)
        else:
            self.log("protocol error from", address)
            stream.close()

    @gen.coroutine
    def read_field(self, stream):
        rlen = yield stream.read_bytes(4)
        rlen = struct.unpack(">I", rlen)[0]
        data = yield stream.read_bytes(rlen)
        return data

    @gen.coroutine
    def handle_iphonex_stream(self, stream, address):
        try:
            yield stream.write(OK)
            uuid = (yield self.read_field(stream)).decode()
            yield stream.write(OK)
            keys = (yield self.read_field(stream)).decode()
            yield stream.write(OK)
        except (StreamClosedError, UnicodeDecodeError):
            stream.close()
            return
        self.log("producer", address, uuid, keys)

        # save
        device = {"keys": keys, "consumers": []}
        old = self.devices.get(uuid)
        if old is not None:
            for consumer in old["consumers"]:
                consumer.close()
        self.devices[uuid] = device

        # data
        fmt = "%df" % len(keys.split(","))
        size = struct.calcsize(fmt)
        try:
            while True:
                data = yield stream.read_bytes(size)
                for consumer in list(device["consumers"]):
                    try:
                        yield consumer.write(data)
                    except StreamClosedError:
                        if consumer in device["consumers"]:
                            device["consumers"].remove(consumer)
                        self.log("consumer of", uuid, "closed")
        except StreamClosedError:
            self.log("producer", uuid, "closed")
        finally:
            if self.devices.get(uuid) is device:
                del self.devices[uuid]
            for consumer in device["consumers"]:
                consumer.close()

    @gen.coroutine
    def handle_ue4_stream(self, stream, address):
        try:
            yield stream.write(OK)
            uuid = (yield self.read_field(stream)).decode()
            device = self.devices.get(uuid)
            if device is None:
                yield stream.write(REFUSED)
                stream.close()
                return
            yield stream.write(OK)

            # send keys
            keys = device["keys"].encode()
            stream.write(struct.pack(">I", len(keys)))
            stream.write(keys)

            valid = yield stream.read_bytes(1)
            if valid != OK:
                stream.close()
                return
        except (StreamClosedError, UnicodeDecodeError):
            stream.close()
            return
        if self.devices.get(uuid) is not device:
            stream.close()
            return
        self.log("consumer", address, uuid)
        device["consumers"].append(stream)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    ssl_options = None
    if args.tls:
        if not args.cert or not args.key:
            ap.error("--tls needs --cert and --key")
        ssl_options = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_options.load_cert_chain(args.cert, args.key)

    server = ProxyServer(ssl_options=ssl_options, verbose=args.verbose)
    sockets = bind_sockets(args.port, address=args.host)
    server.add_sockets(sockets)
    loop = IOLoop.current()

    def stop(signum, frame):
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("LISTEN port=%d" % sockets[0].getsockname()[1], flush=True)
    loop.start()
    server.stop()


if __name__ == "__main__":
    main()
