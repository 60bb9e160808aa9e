#!/usr/bin/env python3
"""The bare peer of bench/http_bench.py: uvloop + httptools and nothing else.

One `asyncio.Protocol` answers every request with the benchmark's fixed body
(content-type application/json, content-length, Server and a cached Date, as bizzyd
and nginx send), keep-alive and pipelining included, one write per read: the least
work a Python server on this stack can do per request, and so the floor bizzyd is
compared with.  `--workers N` forks N processes after binding one listening socket.

    bench/bare_server.py --port 8080 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from email.utils import formatdate

import httptools
import uvloop

BODY = os.environ.get("BENCH_BODY", '{"ok":true,"test":"27byte"}').encode()


class Clock:
    """The Date header, formatted once a second (as nginx and bizzyd cache it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.head = b""
        self.tick()

    def tick(self) -> None:
        date = formatdate(usegmt=True).encode()
        self.head = (b"HTTP/1.1 200 OK\r\nServer: bare\r\nDate: " + date
                     + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        self.loop.call_later(1.0, self.tick)


class Bare(asyncio.Protocol):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()
            return
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out.clear()

    def on_message_complete(self) -> None:
        self.out.append(self.clock.head)


def serve(sock: socket.socket) -> None:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    clock = Clock(loop)
    server = loop.run_until_complete(loop.create_server(lambda: Bare(clock), sock=sock,
                                                        backlog=4096))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.run_forever()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    sock = socket.create_server((args.host, args.port), backlog=4096)
    if args.workers == 1:
        serve(sock)
        return
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            serve(sock)
            os._exit(0)
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(c, signal.SIGTERM) for c in children])
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
