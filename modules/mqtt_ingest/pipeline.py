"""The ingest pipeline of one process: queue -> batch -> transaction -> ack -> bus.

Theory of operation
-------------------
`submit()` runs in paho's on_message (on the event loop): it decodes the message at
once (`store.classify`) and appends it to a queue.  `run()` is the single writer:

    wait until the queue is non-empty
    take up to batch_size messages          (what arrived while the last commit ran:
                                             batches grow with the load, and a message
                                             that finds the queue empty is committed
                                             at once; batch_linger > 0 lets a small
                                             batch wait that long for company)
    one transaction: store_batch            (store.py)
    commit, then ack every message of the batch, in arrival order
    push one OCCUPANCY_UPDATE per changed hive on the bus

Failures:
* Postgres unreachable, restarting, a deadlock or serialization failure: the batch is
  kept and retried (back-off from the database breaker); nothing is acked, so the
  broker's in-flight window fills and it stops sending: back-pressure, no loss.
* Any other database error (a bug or a value the schema refuses): the batch is split
  into one transaction per message; a message that still fails alone is stored as a
  reject `store_failed` with the error, so one poison message cannot stop ingest.
* The MQTT connection drops: queued messages of that connection are discarded (the
  broker redelivers them on the next one); a batch already committing still commits,
  but its acks are skipped (their packet ids belonged to the old connection).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import zmq

from bizzyd.bus import OCCUPANCY_UPDATE
from modules.database import DatabaseUnavailable

from .metrics import STORE_FAILED, Metrics
from .store import HiveState, Incoming, Outcome, StoreSettings, classify, store_batch

RETRY_STATES = ("08", "40", "53", "57")  # connection, rollback, resources, intervention
MAX_CANCELLED = 2  # a batch hitting statement_timeout this often is split
POISON_RETRY = 5.0  # seconds between attempts to store a reject the database refuses


def _retryable(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, DatabaseUnavailable | asyncpg.PostgresConnectionError
                      | asyncpg.InterfaceError | OSError | ConnectionError | TimeoutError) \
        or state[:2] in RETRY_STATES


class Pipeline:
    def __init__(self, db: Any, settings: StoreSettings, metrics: Metrics, log: Any, *,
                 ack: Callable[[Incoming], bool], batch_size: int = 500,
                 batch_linger: float = 0.0, topic_prefix: str = "",
                 byte_order: str = "big", pusher: zmq.Socket | None = None,
                 publish: Callable[[HiveState], None] | None = None) -> None:
        self.db, self.settings, self.metrics, self.log = db, settings, metrics, log
        self.ack = ack
        self.batch_size, self.batch_linger = batch_size, batch_linger
        self.prefix, self.byte_order = topic_prefix, byte_order
        self.pusher, self.publish = pusher, publish
        self.queue: deque[Incoming] = deque()
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.busy = False  # a batch is being committed
        self.in_flight: list[Incoming] = []
        self._one_at_a_time = asyncio.Lock()
        self.on_committed: Callable[[Outcome, Sequence[Incoming]], None] | None = None

    # -- intake (paho's on_message) ----------------------------------------------------------

    def submit(self, item: Incoming) -> None:
        classify(item, self.prefix, self.byte_order)
        self.queue.append(item)
        m = self.metrics
        m.inc("received_total")
        if item.dup:
            m.inc("redelivered_total")
        self.wakeup.set()

    def drop_connection(self, epoch: int) -> int:
        """Forget queued messages of a lost connection (the broker redelivers them)."""
        kept = deque(i for i in self.queue if i.epoch > epoch)
        dropped = len(self.queue) - len(kept)
        self.queue = kept
        return dropped

    # -- the writer --------------------------------------------------------------------------

    async def run(self) -> None:
        while not self.stopping:
            await self.wakeup.wait()
            if not self.queue:
                self.wakeup.clear()
                continue
            if self.batch_linger > 0 and len(self.queue) < self.batch_size:
                age = time.time() - self.queue[0].received_at
                if age < self.batch_linger:
                    await asyncio.sleep(self.batch_linger - age)
            if self.stopping:
                break  # drain() takes over
            await self.process(self.take())

    def take(self) -> list[Incoming]:
        queue = self.queue
        return [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]

    async def drain(self, timeout: float) -> None:
        """Graceful stop: commit what is queued (bounded), then stop the writer."""
        self.stopping = True
        self.wakeup.set()
        deadline = time.monotonic() + timeout
        while (self.queue or self.busy) and time.monotonic() < deadline:
            if self.busy:
                await asyncio.sleep(0.01)
                continue
            try:
                await asyncio.wait_for(self.process(self.take()),
                                       max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break

    async def process(self, items: list[Incoming]) -> Outcome | None:
        """Commit, ack, push; the whole cycle for one batch (one batch at a time, so
        acknowledgements keep the arrival order)."""
        if not items:
            return None
        async with self._one_at_a_time:
            return await self._process(items)

    async def _process(self, items: list[Incoming]) -> Outcome | None:
        self.busy = True
        self.in_flight = items
        started = time.perf_counter()
        try:
            outcome = await self.commit(items)
        finally:
            self.busy = False
            self.in_flight = []
        if outcome is None:
            return None  # stopping while the database was down: no ack, redelivery
        elapsed_us = int((time.perf_counter() - started) * 1e6)
        self._acknowledge(items)
        self._account(outcome, items, elapsed_us)
        self.push(outcome.hives)
        if self.on_committed is not None:
            self.on_committed(outcome, items)
        return outcome

    async def commit(self, items: list[Incoming]) -> Outcome | None:
        """One transaction for the batch, retried while the database is unavailable."""
        cancelled = 0
        while True:
            try:
                async with self.db.connection() as conn, conn.transaction():
                    return await store_batch(conn, items, self.settings)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # classified below
                self.metrics.inc("db_errors_total")
                if getattr(exc, "sqlstate", "") == "57014":
                    cancelled += 1
                    if cancelled <= MAX_CANCELLED:
                        continue
                elif _retryable(exc):
                    if self.stopping:
                        return None  # not acked: the broker redelivers after the restart
                    await asyncio.sleep(self._retry_delay())
                    continue
                if len(items) == 1 and items[0].reason == STORE_FAILED:
                    # even the reject cannot be stored: keep it unacknowledged and retry
                    self.log.critical("mqtt ingest: cannot store the reject of %s: %s: %s; "
                                      "retrying in %.0fs", items[0].topic,
                                      type(exc).__name__, exc, POISON_RETRY)
                    if self.stopping:
                        return None
                    await asyncio.sleep(POISON_RETRY)
                    continue
                return await self._split(items, exc)

    def _retry_delay(self) -> float:
        until = getattr(self.db, "down_until", 0.0)
        return min(2.0, max(0.05, until - time.monotonic()))

    async def _split(self, items: list[Incoming], exc: BaseException) -> Outcome | None:
        detail = f"{type(exc).__name__}: {exc}"
        if len(items) == 1:
            item = items[0]
            self.log.error("mqtt ingest: storing %s failed (%s); kept as a reject",
                           item.topic, detail)
            item.reason, item.detail, item.message = STORE_FAILED, detail[:1000], None
            return await self.commit([item])
        self.log.error("mqtt ingest: a batch of %d failed (%s); storing one by one",
                       len(items), detail)
        total = Outcome()
        for item in items:
            part = await self.commit([item])
            if part is None:
                return None
            _merge(total, part)
        return total

    # -- after the commit ----------------------------------------------------------------

    def _acknowledge(self, items: Sequence[Incoming]) -> None:
        now = time.time()
        acked = 0
        for item in items:
            if self.ack(item):
                acked += 1
                self.metrics.observe("ack_latency_microseconds",
                                     int((now - item.received_at) * 1e6))
        self.metrics.inc("acked_total", acked)

    def _account(self, out: Outcome, items: Sequence[Incoming], elapsed_us: int) -> None:
        m = self.metrics
        m.observe("batch_size", len(items))
        m.observe("commit_microseconds", elapsed_us)
        m.inc("reports_stored_total", out.stored)
        m.inc("duplicates_total", out.duplicates)
        m.inc("late_total", out.late)
        m.inc("status_total", out.statuses)
        m.inc("configs_applied_total", out.configs_applied)
        m.inc("anomalies_total", max(0, out.anomalies))
        m.inc("lost_events_total", max(0, out.lost))
        m.inc("clamps_total", out.clamps)
        m.inc("resets_total", out.resets)
        for reason, n in out.rejects.items():
            m.reject(reason, n)
        if out.conflicts:
            self.log.error("mqtt ingest: %d report(s) were new to the ingest state but "
                           "already in sensor_report: state and reports are out of step",
                           out.conflicts)
        m.committed()
        m.set("queue_depth", len(self.queue))
        m.flush()

    def push(self, hives: Sequence[HiveState]) -> None:
        for hive in hives:
            if self.pusher is not None:
                try:
                    self.pusher.send(update_frame(hive), zmq.NOBLOCK)
                    self.metrics.inc("occupancy_updates_total")
                except zmq.Again:
                    self.metrics.inc("bus_dropped_total")
            if self.publish is not None:
                self.publish(hive)

    def lag_us(self) -> int:
        """Age of the oldest message this process holds unacknowledged."""
        oldest = self.in_flight[0].received_at if self.in_flight else None
        if self.queue and (oldest is None or self.queue[0].received_at < oldest):
            oldest = self.queue[0].received_at
        return 0 if oldest is None else int((time.time() - oldest) * 1e6)


def _merge(total: Outcome, part: Outcome) -> None:
    total.hives = _latest(total.hives + part.hives)
    for name in ("stored", "duplicates", "late", "statuses", "configs_applied", "anomalies",
                 "lost", "clamps", "resets", "conflicts"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    for reason, n in part.rejects.items():
        total.rejects[reason] += n


def _latest(hives: list[HiveState]) -> list[HiveState]:
    """One state per hive: the last one, with the deltas summed."""
    out: dict[int, HiveState] = {}
    for hive in hives:
        if hive.hive_id in out:
            prev = out[hive.hive_id]
            hive = HiveState(hive.hive_id, hive.occupancy, hive.total_in, hive.total_out,
                             prev.delta_in + hive.delta_in, prev.delta_out + hive.delta_out,
                             hive.updated_at)
        out[hive.hive_id] = hive
    return list(out.values())


def update_frame(hive: HiveState) -> bytes:
    """The bus's OCCUPANCY_UPDATE frame of a hive (also what other nodes receive)."""
    return OCCUPANCY_UPDATE.encode(hive.hive_id, hive.occupancy, hive.total_in,
                                   hive.total_out, hive.delta_in, hive.delta_out,
                                   hive.updated_at)


def occupancy_json(hive: HiveState) -> bytes:
    """The retained occupancy/<hive_id> message (mqtt.publish_occupancy)."""
    return json.dumps({"v": 1, "hive_id": hive.hive_id, "occupancy": hive.occupancy,
                       "total_in": hive.total_in, "total_out": hive.total_out,
                       "updated_at": hive.updated_at}).encode()
