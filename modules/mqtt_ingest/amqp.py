"""Ingest on RabbitMQ's AMQP side (`mqtt.ingest: amqp`), for several nodes on one broker
cluster.

RabbitMQ's MQTT plugin (3.10: MQTT 3.1.1, no shared subscriptions) publishes what the
sensors send to the `amq.topic` exchange, with the topic's `/` turned into `.`
(`sensors/s7/counters` → `sensors.s7.counters`; a `.` stays a `.`, so a sensor id with
dots is recovered from the known shape, `topic_of`). The topology, declared
idempotently by every ingest process at every connect:

    amq.topic ──<prefix>sensors.#──▶ amqp.exchange (x-consistent-hash, durable)
        ──weight "1"──▶ <amqp.queue_prefix>0 .. <shards-1>   (quorum, single active consumer)

The consistent-hash exchange sends every routing key (one sensor's one kind of report)
to the same shard, so each sensor's counters stay in order. Every ingest process of
every node consumes every shard; RabbitMQ lets one consumer per shard be active (the
others wait), and when a node dies its shards' next consumers take over at once, with
the unacknowledged messages redelivered. Quorum queues are replicated on a majority of
the broker nodes, so a broker node's death loses nothing that was confirmed (the MQTT
plugin PUBACKs a QoS 1 message once the queue has it).

A process subscribes to its preferred shards first (`amqp.node` of `amqp.nodes`: shard
i is preferred when i % nodes == node) and to the others `amqp.takeover_delay` later,
so nodes started together split the shards; a node that comes back later stands by.

Messages go through the same `Pipeline` as MQTT's (decode → one transaction → ack after
the commit → bus). The delivery tag is the `Incoming.mid`, the connection's number its
`epoch`. All shards share one channel, and the pipeline acknowledges in arrival order,
so one `basic.ack(multiple=True)` of the newest tag acknowledges a whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from .store import Incoming

QUORUM = {"x-queue-type": "quorum", "x-single-active-consumer": True}
HEARTBEAT = 5  # seconds; a broker node that hangs is left after about twice this


def routing_key(topic: str) -> str:
    """What RabbitMQ 3.10's MQTT plugin makes of a topic (checked against the broker)."""
    return topic.replace("/", ".")


def topic_of(routing_key: str, topic_prefix: str = "") -> str:
    """The MQTT topic of a routing key: `<prefix>.sensors.<id>.<kind>` →
    `<prefix>/sensors/<id>/<kind>`, whatever dots the sensor id holds; anything else
    with every dot a slash (it ends as a `bad_topic` reject)."""
    prefix = topic_prefix.strip("/")
    head = f"{prefix.replace('/', '.')}.sensors." if prefix else "sensors."
    if routing_key.startswith(head):
        sensor, dot, kind = routing_key[len(head):].rpartition(".")
        if dot and sensor:
            return f"{prefix}/sensors/{sensor}/{kind}" if prefix else f"sensors/{sensor}/{kind}"
    return routing_key.replace(".", "/")


def binding_key(topic_prefix: str) -> str:
    prefix = topic_prefix.strip("/")
    return f"{prefix.replace('/', '.')}.sensors.#" if prefix else "sensors.#"


def shard_order(shards: int, node: int, nodes: int) -> tuple[list[int], list[int]]:
    """(preferred, others): the shards this node subscribes to first, then later."""
    preferred = [i for i in range(shards) if i % nodes == node % nodes]
    return preferred, [i for i in range(shards) if i not in preferred]


def with_heartbeat(url: str) -> str:
    if "heartbeat=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}heartbeat={HEARTBEAT}"


class AmqpIngest:
    """One AMQP connection at a time, to the first reachable URL (rotating on failure)."""

    def __init__(self, mqtt: dict[str, Any], amqp: dict[str, Any], name: str, log: Any,
                 on_message: Callable[[Incoming], None],
                 on_state: Callable[[bool], None]) -> None:
        self.mqtt, self.amqp, self.name, self.log = mqtt, amqp, name, log
        self.on_message, self.on_state = on_message, on_state
        self.urls = [with_heartbeat(u) for u in amqp["urls"]]
        self.next_url = amqp["node"] % len(self.urls)
        self.epoch = 0
        self.connected = False
        self.channel: AbstractChannel | None = None
        self.raw: Any = None  # the aiormq channel: acks without aio-pika's per-message path
        self.occupancy: AbstractExchange | None = None
        self._ack_upto = 0
        self._ack_soon = False
        self._outbox: list[bytes] = []
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._runner: asyncio.Task | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Send the acknowledgements and publications still pending, then disconnect."""
        self._stopping = True
        if self._ack_soon:
            self._flush_acks(self.epoch)
        if self._outbox:
            self._flush_outbox()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    async def _run(self) -> None:
        backoff = 0.25
        while not self._stopping:
            url = self.urls[self.next_url % len(self.urls)]
            try:
                connection = await aio_pika.connect(
                    url, timeout=self.mqtt["connect_timeout"],
                    client_properties={"connection_name": self.name})
            except Exception as exc:
                self.log.warning("amqp ingest: cannot connect to %s: %s; next in %.2fs",
                                 _safe(url), exc or type(exc).__name__, backoff)
                self.next_url += 1
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.mqtt["reconnect_max_backoff"])
                continue
            try:
                await self._session(connection, url)
                backoff = 0.25
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a queue declared with other arguments
                self.log.error("amqp ingest: session on %s failed: %s: %s", _safe(url),
                               type(exc).__name__, exc)
                self.next_url += 1
                backoff = min(backoff * 2, self.mqtt["reconnect_max_backoff"])
            finally:
                self._down()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2.0)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))

    async def _session(self, connection: Any, url: str) -> None:
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(lambda *_: lost.set())
        await channel.set_qos(prefetch_count=self.amqp["prefetch"])
        queues = await self._declare(channel)
        self.epoch += 1
        self.channel, self.raw = channel, await channel.get_underlay_channel()
        self.connected = True
        self.on_state(True)
        preferred, others = shard_order(len(queues), self.amqp["node"], self.amqp["nodes"])
        epoch = self.epoch
        for i in preferred:
            await queues[i].consume(self._deliver(epoch, i))
        self.log.notice("amqp ingest: connected to %s as %s, consuming %d shard(s) first, "  # type: ignore[attr-defined]
                        "%d more in %.1fs", _safe(url), self.name, len(preferred),
                        len(others), self.amqp["takeover_delay"])
        if others:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.amqp["takeover_delay"])
            if not lost.is_set():
                for i in others:
                    await queues[i].consume(self._deliver(epoch, i))
        await lost.wait()
        self.log.warning("amqp ingest: connection to %s lost", _safe(url))
        self.next_url += 1  # another node first: this one may be the one that died

    async def _declare(self, channel: AbstractChannel) -> list[Any]:
        amqp = self.amqp
        hashed = await channel.declare_exchange(amqp["exchange"], "x-consistent-hash",
                                                durable=True)
        await hashed.bind("amq.topic", routing_key=binding_key(self.mqtt["topic_prefix"]))
        queues = []
        for i in range(amqp["shards"]):
            queue = await channel.declare_queue(f"{amqp['queue_prefix']}{i}", durable=True,
                                                arguments=QUORUM)
            await queue.bind(hashed, routing_key="1")  # the weight of the shard
            queues.append(queue)
        self.occupancy = await channel.declare_exchange(amqp["occupancy_exchange"], "fanout",
                                                        durable=True)
        return queues

    def _down(self) -> None:
        was = self.connected
        self.connected = False
        self.channel = self.raw = self.occupancy = None
        self._ack_upto = 0
        if was:
            self.on_state(False)

    # -- messages --------------------------------------------------------------------------

    def _deliver(self, epoch: int, shard: int) -> Callable[[AbstractIncomingMessage], Any]:
        first = [True]

        async def deliver(message: AbstractIncomingMessage) -> None:
            if first[0]:  # which node holds which shard, and since when (failovers)
                first[0] = False
                self.log.info("amqp ingest: shard %d delivering to %s", shard, self.name)
            topic = topic_of(message.routing_key or "", self.mqtt["topic_prefix"])
            self.on_message(Incoming(topic, message.body, time.time(),
                                     message.delivery_tag or 0, 1, epoch,
                                     bool(message.redelivered)))
        return deliver

    def ack(self, tag: int, epoch: int) -> bool:
        """Acknowledge up to `tag` (soon, coalesced); False when its connection is gone."""
        if epoch != self.epoch or not self.connected:
            return False
        self._ack_upto = max(self._ack_upto, tag)
        if not self._ack_soon:
            self._ack_soon = True
            asyncio.get_running_loop().call_soon(self._flush_acks, epoch)
        return True

    def _flush_acks(self, epoch: int) -> None:
        self._ack_soon = False
        tag, self._ack_upto = self._ack_upto, 0
        if tag and epoch == self.epoch and self.raw is not None:
            self._spawn(self.raw.basic_ack(tag, multiple=True))

    def publish_occupancy(self, body: bytes) -> None:
        """Advisory: lost while disconnected (the managers' reconciliation corrects)."""
        if self.occupancy is None:
            return
        self._outbox.append(body)
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush_outbox)

    def _flush_outbox(self) -> None:
        bodies, self._outbox = self._outbox, []
        exchange = self.occupancy
        if exchange is not None and bodies:
            self._spawn(_publish_all(exchange, bodies))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.info("amqp ingest: %s (the broker redelivers what was not acked)",
                          task.exception())


async def _publish_all(exchange: AbstractExchange, bodies: list[bytes]) -> None:
    for body in bodies:
        await exchange.publish(aio_pika.Message(body), routing_key="")


def _safe(url: str) -> str:
    """The URL without its password (for the log)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"
