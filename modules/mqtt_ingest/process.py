"""The `mqtt ingest` process role: one uvloop event loop running the MQTT client, the
pipeline, the metrics flush, the daily reset sweep and the partition upkeep.

Signals: QUIT graceful (commit what is queued, ack, disconnect; bounded by
`worker_shutdown_timeout`), TERM/INT fast (disconnect now: whatever is not committed is
not acked, and the broker redelivers it to the next process of this slot).

One process per slot and node: the MQTT client id is `<mqtt.client_id>-ingest-<slot>`
with a persistent session, so the process that replaces a dead or retired one gets
the unacknowledged messages redelivered.  During a reload the new generation's
process waits for a lock file (`<run_dir>/mqtt-ingest.<slot>.lock`) that the old one
holds until it exits, so two clients never fight over one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bizzyd.bus import Bus
from bizzyd.module import ProcessContext
from modules.database import Database

from .amqp import AmqpIngest
from .client import AsyncMqtt
from .codec import subscription_topics
from .metrics import ZONE, Metrics
from .pipeline import Pipeline, occupancy_json, update_frame
from .settings import byte_order, counting_params, reset_clock, uses_shared
from .store import HiveState, Incoming, StoreSettings, sweep_resets

SWEEP_INTERVAL = 15.0
PARTITIONS_INTERVAL = 24 * 3600.0


def client_id(config: Any, slot: int) -> str:
    return f"{config['mqtt']['client_id']}-ingest-{slot}"


def topics(mqtt: dict[str, Any]) -> list[str]:
    plain = subscription_topics(mqtt["topic_prefix"])
    if uses_shared(mqtt):
        return [f"$share/{mqtt['share_group']}/{t}" for t in plain]
    return plain


def store_settings(config: Any) -> StoreSettings:
    mqtt = config["mqtt"]
    return StoreSettings(counting_params(mqtt), reset_clock(config), mqtt["default_timezone"])


def main(ctx: ProcessContext) -> int:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ctx.loop = loop
    try:
        return loop.run_until_complete(IngestProcess(ctx).run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class IngestProcess:
    def __init__(self, ctx: ProcessContext) -> None:
        self.ctx, self.log = ctx, ctx.log
        self.config = ctx.config
        self.mqtt = ctx.config["mqtt"]
        self.stopping: asyncio.Future[str] | None = None
        self.lock_fd: int | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = loop.create_future()
        for sig, how in ((signal.SIGQUIT, "graceful"), (signal.SIGTERM, "fast"),
                         (signal.SIGINT, "fast")):
            loop.add_signal_handler(sig, self._stop, how)
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN,
                    signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen)
        if not await self._lock_slot():
            return 0
        try:
            return await self._serve(loop)
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)

    def _stop(self, how: str) -> None:
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result(how)

    def _reopen(self) -> None:
        with contextlib.suppress(Exception):
            self.log.reopen()  # type: ignore[attr-defined]

    async def _lock_slot(self) -> bool:
        """Wait (while not told to stop) for the slot's lock file; False if stopped."""
        path = Path(self.config["run_dir"]) / f"mqtt-ingest.{self.ctx.slot}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.lock_fd = fd
                return True
            except BlockingIOError:
                if not waited:
                    self.log.info("mqtt ingest slot %d: waiting for the previous process "
                                  "of this slot to exit", self.ctx.slot)
                    waited = True
                assert self.stopping is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.stopping), 0.1)
                if self.stopping.done():
                    os.close(fd)
                    return False

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> int:
        ctx, mqtt = self.ctx, self.mqtt
        db = Database(self.config["database"], self.log)
        await db.start()
        metrics = Metrics(ctx.zones.get(ZONE), ctx.slot)
        bus = Bus(self.config["run_dir"], self.config["bus_hwm"])
        occupancy = self.config.get("occupancy")  # this node's cache manager consumes
        pusher = bus.pusher("occupancy.updates", linger_ms=200,  # advisory: absolute states
                            watch=bool(occupancy))
        if occupancy and not await self._wait_for_zone(bus, pusher, occupancy):
            metrics.close()
            bus.close()
            await db.close()
            return 0
        cid = client_id(self.config, ctx.slot)
        amqp = mqtt["ingest"] == "amqp"
        pipeline = Pipeline(
            db, store_settings(self.config), metrics, self.log,
            ack=lambda item: client.ack(item.mid, item.epoch) if amqp
            else client.ack(item.mid, item.qos, item.epoch),
            batch_size=mqtt["batch_size"], batch_linger=mqtt["batch_linger"],
            topic_prefix=mqtt["topic_prefix"], byte_order=byte_order(mqtt), pusher=pusher,
            publish=self._occupancy_publisher(amqp))

        def on_message(message: Any, epoch: int) -> None:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = message._topic.decode("utf-8", "replace")  # noqa: SLF001
            pipeline.submit(Incoming(topic, message.payload, time.time(), message.mid,
                                     message.qos, epoch, bool(message.dup)))

        def on_state(up: bool) -> None:
            metrics.set("connected", int(up))
            if up:
                metrics.inc("connects_total")
            else:
                metrics.inc("disconnects_total")
                dropped = pipeline.drop_connection(client.epoch)
                if dropped:
                    self.log.info("mqtt ingest: %d queued message(s) of the lost connection "
                                  "left to redelivery", dropped)
            metrics.flush()

        client: Any
        if amqp:
            client = AmqpIngest(mqtt, self.config["amqp"], cid, self.log, pipeline.submit,
                                on_state)
        else:
            client = AsyncMqtt(mqtt, cid, loop, self.log, topics(mqtt), on_message, on_state)
            self.log.notice("mqtt ingest slot %d: %s:%d as %s (MQTT %s), topics %s",  # type: ignore[attr-defined]
                            ctx.slot, mqtt["host"], mqtt["port"], cid, mqtt["protocol"],
                            ", ".join(topics(mqtt)))
        self.client = client
        client.start()
        writer = loop.create_task(pipeline.run())
        chores = [loop.create_task(self._flush_metrics(metrics, pipeline))]
        if ctx.slot == 0:
            chores.append(loop.create_task(self._sweeper(db, pipeline, metrics)))
            if mqtt["partition_upkeep"]:
                chores.append(loop.create_task(self._partitions(db)))
        assert self.stopping is not None
        await asyncio.wait({writer, self.stopping}, return_when=asyncio.FIRST_COMPLETED)
        if self.stopping.done():
            how_text = self.stopping.result()
        else:
            how_text = "crash"
            self.log.error("mqtt ingest: the writer stopped: %r", writer.exception())
        for task in chores:
            task.cancel()
        if how_text == "graceful":
            await pipeline.drain(self.config["worker_shutdown_timeout"])
        pipeline.stopping = True
        pipeline.wakeup.set()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        await client.stop()
        metrics.close()
        bus.close()
        await db.close()
        self.log.info("mqtt ingest process exiting (%s stop)", how_text)
        return 0 if how_text != "crash" else 1

    async def _wait_for_zone(self, bus: Bus, pusher: Any, occupancy: Any) -> bool:
        """Consume nothing (no commit, no reset sweep) before the cache manager is
        ready: it binds the bus once the occupancy zone is loaded and reconciled, so
        every commit of this process is either in that load or reaches it on the bus
        (docs/operations.md, "Start-up order").  Bounded: twice the manager's own wait
        for the cache loader.  False when told to stop meanwhile."""
        limit = 2 * occupancy["load_timeout"]
        waiting = asyncio.ensure_future(bus.wait_connected(pusher, limit))
        assert self.stopping is not None
        await asyncio.wait({waiting, self.stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            return False
        if not waiting.result():
            self.log.warning("mqtt ingest slot %d: the cache manager is not ready after "
                             "%.0fs; consuming anyway (its reconcile will catch up)",
                             self.ctx.slot, limit)
        return True

    def _occupancy_publisher(self, amqp: bool) -> Any:
        """Changed hives for the other nodes: the AMQP fanout exchange (always, in amqp
        mode), or retained MQTT messages (mqtt.publish_occupancy)."""
        if amqp:
            return lambda hive: self.client.publish_occupancy(update_frame(hive))
        if not self.mqtt["publish_occupancy"]:
            return None
        prefix = self.mqtt["topic_prefix"].rstrip("/")
        head = f"{prefix}/occupancy/" if prefix else "occupancy/"

        def publish(hive: HiveState) -> None:
            self.client.publish(f"{head}{hive.hive_id}", occupancy_json(hive), qos=1,
                                retain=True)
        return publish

    async def _flush_metrics(self, metrics: Metrics, pipeline: Pipeline) -> None:
        while True:
            await asyncio.sleep(1.0)
            metrics.set("queue_depth", len(pipeline.queue))
            metrics.set("lag_microseconds", pipeline.lag_us())
            metrics.flush()

    async def _sweeper(self, db: Database, pipeline: Pipeline, metrics: Metrics) -> None:
        """Daily reset of hives that receive nothing (the commits reset the others)."""
        clock = reset_clock(self.config)
        while True:
            try:
                async with db.connection() as conn:
                    hives = await sweep_resets(conn, clock, datetime.now(UTC))
                if hives:
                    metrics.inc("resets_total", len(hives))
                    self.log.info("mqtt ingest: daily reset of %d hive(s)", len(hives))
                    pipeline.push(hives)
                    metrics.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("mqtt ingest: reset sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL)

    async def _partitions(self, db: Database) -> None:
        while True:
            try:
                async with db.connection() as conn:
                    created = await conn.fetchval(
                        "SELECT create_sensor_report_partitions(current_date, 3)")
                if created:
                    self.log.notice("mqtt ingest: created %d sensor_report partition(s)",  # type: ignore[attr-defined]
                                    created)
                await asyncio.sleep(PARTITIONS_INTERVAL)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("mqtt ingest: partition upkeep failed: %s", exc)
                await asyncio.sleep(60)
