"""Live occupancy as Server-Sent Events: `GET /v1/hives/{id}/occupancy/stream`.

Each worker has one `Fanout`: a SUB socket on the bus (`occupancy.changes`) and the
streams open in this worker, by hive.  The worker subscribes to `hive.<id>` when
the first stream of a hive opens and unsubscribes when the last one closes, so it
only receives the changes someone is watching.  A change is decoded once and handed
to every stream of its hive.

A stream sends (docs/api.md):

    : worker <pid>                  who serves it (also the X-Bizzyd-Worker header)
    retry: <ms>                     how soon to reconnect
    id: <sequence>                  one event per change; the sequence is the
    event: occupancy                hive's slot sequence in the zone, so it only grows
    data: {...}                     the same JSON as GET .../occupancy

and `: heartbeat` comments every `occupancy.sse_heartbeat`.  On connect the
current state is sent at once unless the client's `Last-Event-ID` is exactly the
current sequence (it has seen it already).  A subscription takes a moment to reach
the publisher, and a slow subscriber may drop messages (PUB high-water mark), so a
stream also re-reads the zone shortly after it starts and at each heartbeat, and
sends the state if the zone is ahead of what it sent.

When the worker retires (QUIT, or HUP: the old generation retires), every stream
ends with a `: reconnect` comment and the chunked body's last chunk, so clients
reconnect (with Last-Event-ID) to a worker of the new generation.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import zmq

from bizzyd.bus import OCCUPANCY_CHANGE, Bus, BusError, topic
from bizzyd.http.phases import Request
from bizzyd.http.response import HTTPError, Response

from .api import NAME, Api, item, parse_id

EARLY_CHECKS = (0.2, 1.0)  # seconds after the start of a stream: re-read the zone
BACKLOG = 64  # changes kept per stream while it is writing (older ones are dropped)


class Listener:
    """One open stream's inbox (of one hive, or of several: `hive_ids`)."""

    __slots__ = ("hive_id", "hive_ids", "changes", "wake")

    def __init__(self, hive_id: int, hive_ids: tuple[int, ...] = (), backlog: int = BACKLOG
                 ) -> None:
        self.hive_id = hive_id
        self.hive_ids = hive_ids or (hive_id,)
        self.changes: collections.deque[tuple] = collections.deque(maxlen=backlog)
        self.wake = asyncio.Event()

    def push(self, values: tuple) -> None:
        self.changes.append(values)
        self.wake.set()


class Fanout:
    """A worker's bus subscription, fanned out to its streams."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.pid = os.getpid()
        self.bus = Bus(ctx.config["run_dir"], ctx.config["bus_hwm"], asyncio=True)
        self.sub = self.bus.subscriber("occupancy.changes", topics=())
        self.listeners: dict[int, set[Listener]] = {}
        self.retiring = False
        self.received = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._receive())
        self.ctx.on_retire.append(self.retire)

    def add(self, hive_id: int, listener: Listener | None = None) -> Listener:
        """Register `listener` (a new one of `hive_id` by default) for its hives."""
        listener = listener or Listener(hive_id)
        for hive in listener.hive_ids:
            group = self.listeners.get(hive)
            if group is None:
                group = self.listeners[hive] = set()
                self.sub.setsockopt(zmq.SUBSCRIBE, topic(hive))
            group.add(listener)
        return listener

    def remove(self, listener: Listener) -> None:
        for hive in listener.hive_ids:
            group = self.listeners.get(hive)
            if group is None:
                continue
            group.discard(listener)
            if not group:
                del self.listeners[hive]
                with contextlib.suppress(zmq.ZMQError):
                    self.sub.setsockopt(zmq.UNSUBSCRIBE, topic(hive))

    async def _receive(self) -> None:
        while True:
            try:
                frames = await self.sub.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    return
                self.log.error("occupancy: bus receive failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            try:
                values = OCCUPANCY_CHANGE.decode(frames[-1])
            except BusError as exc:
                self.log.warning("occupancy: ignoring a bus message: %s", exc)
                continue
            self.received += 1
            # `hive.4` also matches `hive.42`: the decoded id decides
            for listener in self.listeners.get(values[0], ()):
                listener.push(values)

    def retire(self) -> None:
        """The worker is stopping gracefully: every stream ends (clients reconnect)."""
        self.retiring = True
        for group in self.listeners.values():
            for listener in group:
                listener.wake.set()

    def close(self) -> None:
        self.retiring = True
        if self._task is not None:
            self._task.cancel()
        self.bus.close()


def event(sequence: int | None, data: bytes) -> bytes:
    head = b"id: %d\n" % sequence if sequence else b""
    return head + b"event: occupancy\ndata: " + data + b"\n\n"


def _last_event_id(request: Request) -> int | None:
    text = request.header("Last-Event-ID")
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 20 else -1


def occupancy_stream(request: Request) -> Any:
    """GET /v1/hives/{id}/occupancy/stream"""
    api: Api = request.process.state[NAME]
    hive_id = parse_id(request.captures.get("id"))
    if not hive_id:
        raise HTTPError(404, "no such hive")
    if api.fanout is None or api.fanout.retiring:
        raise HTTPError(503, "this worker is shutting down", [("Retry-After", "1")])
    last_id = _last_event_id(request)
    row = api.current(hive_id)
    if row is not None:
        first = b"" if last_id == row[0] else event(row[0], _zone_item(api, hive_id, row))
        return _response(api, hive_id, first, row[0])
    return _fallback(api, hive_id)


async def _fallback(api: Api, hive_id: int) -> Response:
    found = await api.fetch((hive_id,))
    if hive_id not in found:
        raise HTTPError(404, "no such hive")
    # not in this zone: no sequence to compare with Last-Event-ID; always send the state
    return _response(api, hive_id, event(None, found[hive_id]), 0)


def _response(api: Api, hive_id: int, first: bytes, sent: int) -> Response:
    fanout = api.fanout
    listener = fanout.add(hive_id)
    settings = api.settings
    hello = b": worker %d\nretry: %d\n\n" % (fanout.pid, int(settings["sse_retry"] * 1000))
    stream = _events(api, fanout, listener, hello + first, {hive_id: sent} if sent else {},
                     settings["sse_heartbeat"], with_ids=True)
    headers = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"),
               ("X-Bizzyd-Worker", str(fanout.pid))]
    return Response(200, headers=headers, content_type="text/event-stream", stream=stream)


async def _events(api: Api, fanout: Fanout, listener: Listener, first: bytes,
                  sent: dict[int, int], heartbeat: float, with_ids: bool
                  ) -> AsyncIterator[bytes]:
    """A stream's events after `first`: each change of its hives newer than what was
    sent (`sent`: hive -> sequence; a hive not in it is sent whatever its sequence), the
    zone re-read early and at each heartbeat (the bus may drop changes).  `with_ids`:
    events carry the sequence as their `id:` (one-hive streams)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    checks = [start + delay for delay in EARLY_CHECKS]
    next_beat = start + heartbeat
    try:
        yield first
        while not fanout.retiring:
            due = min(next_beat, checks[0]) if checks else next_beat
            if not listener.changes:
                listener.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.wake.wait(), max(0.0, due - loop.time()))
                if fanout.retiring:
                    break
            out = []
            while listener.changes:
                values = listener.changes.popleft()
                hive_id, seq = values[0], values[6]
                if hive_id not in sent or seq > sent[hive_id]:
                    sent[hive_id] = seq
                    out.append(event(seq if with_ids else None,
                                     _zone_item(api, hive_id, (seq, *values), b"bus")))
            now = loop.time()
            if now >= due:
                if checks and now >= checks[0]:
                    checks.pop(0)
                if now >= next_beat:
                    out.append(b": heartbeat\n\n")
                    next_beat = now + heartbeat
                for hive_id in listener.hive_ids:
                    row = api.current(hive_id)
                    if row is not None and row[0] > sent.get(hive_id, 0):
                        sent[hive_id] = row[0]
                        out.append(event(row[0] if with_ids else None,
                                         _zone_item(api, hive_id, row)))
            if out:
                yield b"".join(out)
        yield b": reconnect (worker retiring)\n\n"
    finally:
        fanout.remove(listener)

def occupancy_stream_many(request: Request) -> Any:
    """GET /v1/occupancy/stream?ids=1,2,3: the changes of several hives on one stream
    (a browser opens at most 6 connections per host).  Events carry no `id:` (each hive
    has its own sequence): every connect starts with the state of every known hive."""
    api: Api = request.process.state[NAME]
    ids = api.parse_ids(request.query)
    if api.fanout is None or api.fanout.retiring:
        raise HTTPError(503, "this worker is shutting down", [("Retry-After", "1")])
    rows = {i: row for i in ids if (row := api.current(i)) is not None}
    missing = [i for i in ids if i not in rows]
    if missing:
        return _many_fallback(api, ids, rows, missing)
    return _many_response(api, ids, rows, {})


async def _many_fallback(api: Api, ids: list[int], rows: dict[int, tuple],
                         missing: list[int]) -> Response:
    return _many_response(api, ids, rows, await api.fetch(missing))


def _many_response(api: Api, ids: list[int], rows: dict[int, tuple],
                   fetched: dict[int, bytes]) -> Response:
    known = tuple(i for i in ids if i in rows or i in fetched)
    if not known:
        raise HTTPError(404, "none of these hives exists")
    first = b"".join(event(None, fetched[i] if i in fetched else _zone_item(api, i, rows[i]))
                     for i in known)
    fanout = api.fanout
    listener = fanout.add(known[0], Listener(known[0], known, BACKLOG * len(known)))
    settings = api.settings
    hello = b": worker %d\nretry: %d\n\n" % (fanout.pid, int(settings["sse_retry"] * 1000))
    sent = {i: rows[i][0] for i in known if i in rows}
    stream = _events(api, fanout, listener, hello + first, sent, settings["sse_heartbeat"],
                     with_ids=False)
    headers = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"),
               ("X-Bizzyd-Worker", str(fanout.pid))]
    return Response(200, headers=headers, content_type="text/event-stream", stream=stream)


def _zone_item(api: Api, hive_id: int, row: tuple, source: bytes = b"zone") -> bytes:
    return item(hive_id, row[2], row[3], row[4], row[5], row[6], source, api.fresh(hive_id),
                api.extra(hive_id, row[2], row[3]))

