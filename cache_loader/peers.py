"""Other nodes' occupancy updates for the cache manager (`occupancy.peers`).

With several nodes ingesting from one RabbitMQ cluster (`mqtt.ingest: amqp`), every
commit's changed hives are published as OCCUPANCY_UPDATE frames (the bus's format) to
a fanout exchange. Each node's cache manager binds a queue of its own (exclusive,
server-named, gone with its connection) and applies the frames to its zone exactly
like its own node's bus updates: absolute states, the newest `updated_at` wins, so its
own node's copies and duplicates are ignored.

Why a fanout exchange and not retained MQTT `occupancy/<hive_id>` messages: the frames
are the bus's binary format with no extra codec, one queue per node receives all of
them in commit order per publisher, and a node that subscribes does not first receive
one retained message per hive of the city. What a node misses while it has no
connection is not replayed: each (re)connect asks the manager to reconcile with
Postgres at once, and the periodic reconciliation corrects any other drift.

The manager also publishes to the exchange what only its own node's workers know
(`publish`): corrected counts (as OCCUPANCY_UPDATE frames) and HIVE_REFRESH frames
(a capacity schedule changed). Like ingest's publications they are advisory: lost
while disconnected, corrected by the reconciliation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from modules.mqtt_ingest.amqp import with_heartbeat  # the publishing side's contract

RETRY = 1.0


class PeerUpdates:
    """Consume the fanout exchange from the first reachable URL; reconnect elsewhere."""

    def __init__(self, settings: Any, log: Any, apply: Callable[[list[bytes]], Awaitable[None]],
                 connected: Callable[[], None]) -> None:
        self.urls = [with_heartbeat(u) for u in settings["peers"]]
        self.exchange = settings["peer_exchange"]
        self.log, self.apply, self.connected = log, apply, connected
        self.frames: list[bytes] = []
        self.out: Any = None  # the exchange, while connected
        self.sending: set[asyncio.Task] = set()
        self.arrived = asyncio.Event()
        self.down_logged = False

    async def run(self) -> None:
        n = 0
        while True:
            url = self.urls[n % len(self.urls)]
            n += 1
            try:
                connection = await aio_pika.connect(url, timeout=3)
            except Exception as exc:
                if not self.down_logged:
                    self.log.error("cache manager: peer updates: cannot connect to %s: %s; "
                                   "retrying (the zone is reconciled meanwhile)",
                                   _host(url), exc or type(exc).__name__)
                    self.down_logged = True
                await asyncio.sleep(RETRY)
                continue
            try:
                await self._session(connection, url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("cache manager: peer updates from %s failed: %s: %s",
                               _host(url), type(exc).__name__, exc)
                await asyncio.sleep(RETRY)  # not at once into the same failure
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2.0)

    async def _session(self, connection: Any, url: str) -> None:
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(lambda *_: lost.set())
        exchange = await channel.declare_exchange(self.exchange, "fanout", durable=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._deliver, no_ack=True)
        self.out = exchange
        self.down_logged = False
        self.log.notice("cache manager: receiving other nodes' occupancy updates from %s "  # type: ignore[attr-defined]
                        "(exchange %s)", _host(url), self.exchange)
        self.connected()
        waiter = asyncio.get_running_loop().create_task(lost.wait())
        try:
            while not lost.is_set():
                arrived = asyncio.get_running_loop().create_task(self.arrived.wait())
                await asyncio.wait({arrived, waiter}, return_when=asyncio.FIRST_COMPLETED)
                arrived.cancel()
                self.arrived.clear()
                frames, self.frames = self.frames, []
                if frames:
                    await self.apply(frames)
        finally:
            self.out = None
            waiter.cancel()
        self.log.warning("cache manager: peer updates: connection to %s lost", _host(url))

    def publish(self, frames: list[bytes]) -> None:
        """Send frames to every node (this one included: it ignores its own copies)."""
        if self.out is None:
            self.log.info("cache manager: peer updates: not connected; %d frame(s) for the "
                          "other nodes dropped (their reconciliation corrects)", len(frames))
            return
        task = asyncio.get_running_loop().create_task(_publish_all(self.out, frames))
        self.sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task) -> None:
        self.sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.warning("cache manager: peer updates: publishing failed: %s",
                             task.exception())

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self.frames.append(message.body)
        self.arrived.set()


async def _publish_all(exchange: Any, frames: list[bytes]) -> None:
    for frame in frames:
        await exchange.publish(aio_pika.Message(frame), routing_key="")


def _host(url: str) -> str:
    return url.rpartition("@")[2].partition("?")[0]
