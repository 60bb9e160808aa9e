"""The internal bus between processes: pyzmq sockets on `ipc://` endpoints in the
run directory, and the message types that travel on it, defined once.

Patterns (see ARCHITECTURE "Internal bus"):

    ingest ──PUSH──▶ PULL cache manager      occupancy updates (fan-in, queued)
    workers ─PUSH──▶ PULL cache manager      corrections, capacity refreshes (same socket)
    cache manager ──PUB──▶ SUB workers       occupancy changes, topic `hive.<id>`

Every process makes its own `Bus` (one zmq context per process, none global) and
closes it on exit.  The receiving end of a fan-in and the publisher bind; the
others connect, so processes may start in any order.  A sender that must not start
before its receiver is ready (ingest waits for the cache manager, see
docs/operations.md "Start-up order") watches its socket and awaits
`wait_connected`: the receiver binds only once it is ready.  High-water marks come from
config (`bus_hwm`): a full PUSH queue blocks the sender only when it asked to; a
full PUB queue drops for the slow subscriber (workers re-read the zone anyway).

A message is one frame: a 2-byte header (type code, version) and a fixed struct
(`MessageType`), or for publications two frames: topic and message.  A receiver
rejects an unknown type or version with `BusError` rather than misreading it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

HEADER = struct.Struct("=BB")


class BusError(ValueError):
    """A frame that is not a known message of a known version."""


@dataclass(frozen=True)
class MessageType:
    """A bus message as data: a code, a version and its fields (name, struct code)."""

    name: str
    code: int
    version: int
    fields: tuple[tuple[str, str], ...]

    @property
    def body(self) -> struct.Struct:
        return struct.Struct("=" + "".join(c for _, c in self.fields))

    def encode(self, *values: Any) -> bytes:
        return HEADER.pack(self.code, self.version) + self.body.pack(*values)

    def decode(self, frame: bytes) -> tuple:
        code, version = HEADER.unpack_from(frame)
        if code != self.code or version != self.version:
            raise BusError(f"expected {self.name} v{self.version}, got type {code} v{version}")
        if len(frame) != HEADER.size + self.body.size:
            raise BusError(f"{self.name}: frame of {len(frame)} bytes")
        return self.body.unpack_from(frame, HEADER.size)

    def field_names(self) -> list[str]:
        return [name for name, _ in self.fields]


# -- the messages -------------------------------------------------------------------

OCCUPANCY_UPDATE = MessageType(
    "occupancy.update", 1, 1,
    (("hive_id", "q"), ("occupancy", "i"), ("total_in", "q"), ("total_out", "q"),
     ("delta_in", "i"), ("delta_out", "i"), ("updated_at", "d")))
"""ingest → cache manager: a hive's state after a commit, with the delta that led to it
(absolute values make applying it idempotent; the delta is for stats and streams)."""

OCCUPANCY_CHANGE = MessageType(
    "occupancy.change", 2, 1,
    (("hive_id", "q"), ("occupancy", "i"), ("capacity", "i"), ("total_in", "q"),
     ("total_out", "q"), ("updated_at", "d"), ("sequence", "Q")))
"""cache manager → workers (topic `hive.<id>`): a hive's occupancy changed in the zone."""

OCCUPANCY_SET = MessageType("occupancy.set", 3, 1, OCCUPANCY_UPDATE.fields)
"""worker → cache manager: a hive's state set outside ingest (a correction).  Applied like
an update; in a cluster the manager also sends it to the other nodes (as an update)."""

HIVE_REFRESH = MessageType("hive.refresh", 4, 1, (("hive_id", "q"),))
"""worker → cache manager: a hive's capacity or capacity schedule changed; the manager
re-reads the capacity in force (and, in a cluster, tells the other nodes)."""

MESSAGES = {m.code: m for m in (OCCUPANCY_UPDATE, OCCUPANCY_CHANGE, OCCUPANCY_SET,
                                 HIVE_REFRESH)}

ENDPOINTS = {"occupancy.updates": "occ-in", "occupancy.changes": "occ-out"}


def message_type(frame: bytes) -> MessageType:
    """The type of a frame, by its header."""
    if len(frame) < HEADER.size:
        raise BusError("short frame")
    code, _ = HEADER.unpack_from(frame)
    if code not in MESSAGES:
        raise BusError(f"unknown message type {code}")
    return MESSAGES[code]


def topic(hive_id: int) -> bytes:
    return b"hive.%d" % hive_id


class Bus:
    """One process's view of the bus."""

    def __init__(self, run_dir: str | Path, hwm: int = 10000, asyncio: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.hwm = hwm
        self.context: zmq.Context = zmq.asyncio.Context() if asyncio else zmq.Context()
        self.sockets: list[zmq.Socket] = []
        self.monitors: dict[zmq.Socket, zmq.Socket] = {}  # watched socket → its monitor

    def endpoint(self, name: str) -> str:
        path = self.run_dir / f"bus.{ENDPOINTS[name]}"
        if len(str(path)) > 100:
            raise ValueError(f"bus endpoint path too long for a unix socket: {path}")
        return f"ipc://{path}"

    def _socket(self, kind: int, name: str, bind: bool, watch: bool = False) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        if bind:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            sock.bind(self.endpoint(name))
        else:
            if watch:  # before the connect, so that its event cannot be missed
                monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED)
                monitor.setsockopt(zmq.LINGER, 0)
                self.monitors[sock] = monitor
            sock.connect(self.endpoint(name))
        self.sockets.append(sock)
        return sock

    def pusher(self, name: str, linger_ms: int = 2000, watch: bool = False) -> zmq.Socket:
        """A PUSH socket; on close it keeps trying to deliver for `linger_ms`.
        `watch`: `wait_connected` can tell when it first reached its receiver."""
        sock = self._socket(zmq.PUSH, name, bind=False, watch=watch)
        sock.setsockopt(zmq.LINGER, linger_ms)
        return sock

    def puller(self, name: str) -> zmq.Socket:
        return self._socket(zmq.PULL, name, bind=True)

    def publisher(self, name: str) -> zmq.Socket:
        return self._socket(zmq.PUB, name, bind=True)

    def subscriber(self, name: str, topics: Sequence[bytes] = (b"",)) -> zmq.Socket:
        sock = self._socket(zmq.SUB, name, bind=False)
        for t in topics:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        return sock

    async def wait_connected(self, sock: zmq.Socket, timeout: float,
                             poll: float = 0.02) -> bool:
        """Wait until a watched socket (synchronous) has connected to its receiver,
        at most `timeout` seconds; True if it did.  Polls its monitor every `poll` s
        (a sync socket has no awaitable receive), then stops watching."""
        monitor = self.monitors.pop(sock)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    monitor.recv_multipart(zmq.NOBLOCK)
                    return True
                except zmq.Again:
                    pass
                if loop.time() >= deadline:
                    return False
                await asyncio.sleep(poll)
        finally:
            sock.disable_monitor()
            monitor.close()

    def close(self) -> None:
        for sock, monitor in self.monitors.items():
            sock.disable_monitor()
            monitor.close()
        self.monitors = {}
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        self.context.term()


def drain(sock: zmq.Socket, limit: int = 1000) -> Iterator[bytes]:
    """Frames already queued on a (sync) socket, without waiting: natural batching."""
    for _ in range(limit):
        try:
            yield sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
