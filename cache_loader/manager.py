"""The cache manager: the single writer of the occupancy zone.

One asyncio loop, four tasks:

- **apply**: PULL `OCCUPANCY_UPDATE` from the bus.  It awaits the first message,
  then drains what is already queued (up to BATCH) without waiting, keeps the
  newest update per hive, and applies each one that is newer (by `updated_at`) than
  the slot; then PUBlishes an `OCCUPANCY_CHANGE` on `hive.<id>` with the slot's new
  sequence.  An update for a hive the zone does not have yet goes to **insert**;
  one for a hive that did not fit (full zone) updates the manager's own table of
  those hives, which feeds memcached.
- **insert**: looks up the capacity of new hives in Postgres and inserts them.
- **capacity**: the live capacity is the one in force (modules/occupancy/capacity.py:
  the hive's, or its capacity schedule's inside a range).  It re-reads the capacity of
  the hives a worker names (`HIVE_REFRESH`, after a schedule was changed) and, with a
  timer for the next instant a scheduled range starts or ends, of the hives whose range
  starts or ends then; changed slots are published like updates.
- **reconcile**: every `occupancy.reconcile_interval` (and once at start, before
  the tasks), compares the zone with Postgres (`loader.sync_rows`, in chunks so
  updates keep flowing), after applying the updates already queued, and corrects
  and logs any drift (counted in `metrics.occupancy`); hives gone from Postgres are
  flagged deleted.  If the cache loader did not load the zone, the first reconcile
  is the load.
- **peers** (with `occupancy.peers`): other nodes' commits, OCCUPANCY_UPDATE frames from
  a RabbitMQ fanout exchange (peers.py), applied like the bus's; each (re)connect
  triggers a reconcile (what was missed meanwhile is not replayed).  What this node's
  workers push (corrections as `OCCUPANCY_SET`, `HIVE_REFRESH`) goes to the exchange too,
  so every node follows a correction or a schedule change at once.
- **replica**: writes changed hives to memcached (`set_many`, noreply) from a
  one-thread executor, and all of them every half `occupancy.memcached_ttl`.
  memcached down: logged once, retried every `occupancy.memcached_retry`.

Start (see loader.py for the hand-off): wait for `meta.loaded` (bounded), take the
writer lock (waiting for a previous manager to exit), repair slots a killed writer
left mid-write, bind the changes' publisher, reconcile once, and only then bind the
updates' puller.  The endpoints are bound after the lock because a previous manager
unlinks its ipc socket files when it closes them.  The puller is bound last because
ingest consumes nothing until it has connected to it (docs/operations.md, "Start-up
order"): so no commit falls between the load and the first reconcile, and the first
reconcile of a fresh start finds nothing to correct.

Signals: TERM/INT stop at once; QUIT applies what is already queued, then stops;
USR1 reopens the log.  After `kill -9` the master respawns it; the zone (shared
memory) is intact, and updates pushed meanwhile wait in the pushers' queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import uvloop
import zmq

from bizzyd.bus import (
    HIVE_REFRESH,
    OCCUPANCY_CHANGE,
    OCCUPANCY_SET,
    OCCUPANCY_UPDATE,
    Bus,
    BusError,
    message_type,
    topic,
)
from bizzyd.shm import HEADER
from modules.database import Database, DatabaseUnavailable, memcached
from modules.occupancy import replica
from modules.occupancy.capacity import (
    BOUNDARY_HIVES_SQL,
    CAPACITY_AT_SQL,
    NEXT_BOUNDARY_SQL,
    SOME_HIVES_SQL,
)
from modules.occupancy.zone import (
    FLAG_DELETED,
    FLAG_LIVE,
    FLAG_STALE,
    METRICS,
    R_AT,
    R_CAP,
    R_FLAGS,
    R_OCC,
    WriterLock,
    seed_sequence,
    table,
)

from .loader import (
    ALL_HIVES_SQL,
    SyncResult,
    install_stop,
    mark_deleted,
    pause,
    row_values,
    sync_rows,
)
from .peers import PeerUpdates

BATCH = 1000
APPLIED = (OCCUPANCY_UPDATE, OCCUPANCY_SET)  # the bus's messages that carry a state
CHUNK = 2000  # reconcile rows per step (the loop runs the other tasks in between)
MC_CHUNK = 500


class Manager:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.settings = ctx.config["occupancy"]
        self.zone = table(ctx.zones)
        self.metrics = ctx.zones[METRICS]
        self.lock = WriterLock(self.zone.meta)
        self.db = Database(ctx.config["database"], ctx.log)
        self.stop: asyncio.Event | None = None
        self.how = "fast"
        self.bus: Bus | None = None
        self.pull: Any = None
        self.pub: Any = None
        # hives that did not fit in the zone: id → [capacity, occ, in, out, at, seq]
        self.overflow: dict[int, list] = {}
        self.pending_new: dict[int, tuple] = {}  # hive → newest update, not in the zone
        self.new_hives: asyncio.Event | None = None
        self.dirty: set[int] = set()
        self.dirty_event: asyncio.Event | None = None
        self.reconcile_now: asyncio.Event | None = None
        self.refresh: set[int] = set()  # hives whose capacity in force must be re-read
        self.capacity_event: asyncio.Event | None = None
        self.writing: asyncio.Lock | None = None  # a reconcile or a capacity refresh
        self.boundaries_since = time.time()  # schedule boundaries up to here are applied
        self.peers: PeerUpdates | None = None
        self.next_seq = seed_sequence()
        self.loaded_by_me = False
        self.counts = {"updates": 0, "applied": 0, "older": 0, "bad": 0, "published": 0}
        self.db_down_logged = False

    # -- life cycle ---------------------------------------------------------------

    def _on_stop(self, how: str) -> None:
        if self.how != "fast":
            self.how = how
        if self.stop is not None:
            self.stop.set()

    async def run(self) -> int:
        self.stop = asyncio.Event()
        self.how = "graceful"
        self.new_hives = asyncio.Event()
        self.dirty_event = asyncio.Event()
        self.reconcile_now = asyncio.Event()
        self.capacity_event = asyncio.Event()
        self.writing = asyncio.Lock()
        install_stop(asyncio.get_running_loop(), self.ctx, self._on_stop)
        if not await self._handoff():
            return 0
        tasks: list[asyncio.Task] = []
        try:
            self.bus = Bus(self.ctx.config["run_dir"], self.ctx.config["bus_hwm"], asyncio=True)
            self.pub = self.bus.publisher("occupancy.changes")
            self.boundaries_since = time.time()  # the first reconcile reads those before
            while not await self._reconcile():  # the zone must be loaded: retry
                if await pause(self.stop, 1.0):
                    return 0
            self.pull = self.bus.puller("occupancy.updates")  # ingest may start now
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._apply_loop()),
                     loop.create_task(self._insert_loop()),
                     loop.create_task(self._reconcile_loop()),
                     loop.create_task(self._capacity_loop())]
            if self.settings["memcached"]:
                tasks.append(loop.create_task(self._replica_loop()))
            if self.settings["peers"]:
                self.peers = PeerUpdates(self.settings, self.log, self._apply,
                                         self.reconcile_now.set)
                tasks.append(loop.create_task(self.peers.run()))
            for task in tasks:
                task.add_done_callback(self._task_done)
            await self.stop.wait()
            if self.how == "graceful":
                await self._drain_queued()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.bus is not None:
                self.bus.close()  # unlinks the ipc endpoints ...
            self.lock.release()  # ... before the next writer may bind them
            await self.db.close()
        self.log.info("cache manager: stopping (%s); %d updates received, %d applied, "
                      "%d older than the zone, %d changes published", self.how,
                      self.counts["updates"], self.counts["applied"], self.counts["older"],
                      self.counts["published"])
        return 0

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or self.stop is None or self.stop.is_set():
            return
        exc = task.exception()
        if exc is None:
            exc = RuntimeError("returned, but it should run until the stop")
        self.log.error("cache manager: task %s failed: %r; exiting to be respawned",
                       task.get_coro().__name__, exc, exc_info=exc)
        self.how = "fast"
        self.stop.set()

    async def _handoff(self) -> bool:
        """Wait for the loader, then take the writer lock; False when told to stop."""
        zone, log = self.zone, self.log
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings["load_timeout"]
        while not zone.loaded() and loop.time() < deadline:
            if await pause(self.stop, 0.05):
                return False
        waiting_since = loop.time()
        told = False
        while not self.lock.try_acquire():
            if not told and loop.time() - waiting_since > 1.0:
                log.notice("cache manager: waiting for the previous writer (pid %d) to exit",
                           zone.meta.get(0, "writer_pid"))
                told = True
            if await pause(self.stop, 0.05):
                return False
        zone.meta.set(0, "writer_pid", os.getpid())
        repaired = zone.repair()
        if repaired:
            log.warning("cache manager: %d slot(s) were left mid-write by a killed writer; "
                        "marked stale until reconciled", len(repaired))
        if zone.loaded():
            log.notice("cache manager: writing the occupancy zone (%d hives)",
                       zone.meta.get(0, "hives"))
        else:
            if zone.meta.get(0, "zone_serial") != zone.serial:
                zone.reset_meta()
            log.notice("cache manager: the cache loader did not load the zone within %.0fs; "
                       "loading it myself", self.settings["load_timeout"])
        return True

    # -- apply ------------------------------------------------------------------

    async def _apply_loop(self) -> None:
        pull = self.pull
        while True:
            frames = [await pull.recv()]
            while len(frames) < BATCH:
                try:
                    frames.append(await pull.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
            await self._apply(frames, local=True)

    async def _drain_queued(self) -> None:
        """Graceful stop: apply what is already queued (without waiting for more)."""
        while True:
            frames = []
            while len(frames) < BATCH:
                try:
                    frames.append(await self.pull.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
            if not frames:
                return
            await self._apply(frames, local=True)

    async def _apply(self, frames: list[bytes], local: bool = False) -> None:
        """Apply bus (`local`) or peer frames; a local correction or capacity refresh is
        also sent to the other nodes."""
        newest: dict[int, tuple] = {}
        shared: list[bytes] = []
        for frame in frames:
            try:
                kind = message_type(frame)
                values = kind.decode(frame)
                if kind is not HIVE_REFRESH and kind not in APPLIED:
                    raise BusError(f"{kind.name} is not for the cache manager")
            except BusError as exc:
                self.counts["bad"] += 1
                if self.counts["bad"] == 1 or self.counts["bad"] % 1000 == 0:
                    self.log.warning("cache manager: ignoring a bus message (%d so far): %s",
                                     self.counts["bad"], exc)
                continue
            if local and kind is not OCCUPANCY_UPDATE:  # ingest shares its own commits
                shared.append(frame if kind is HIVE_REFRESH else OCCUPANCY_UPDATE.encode(*values))
            if kind is HIVE_REFRESH:
                self._refresh_capacity(values[0])
                continue
            prev = newest.get(values[0])
            if prev is None or values[6] >= prev[6]:
                newest[values[0]] = values
        self.counts["updates"] += len(frames)
        changes = []
        zone = self.zone
        for hive_id, (_, occ, t_in, t_out, _, _, at) in newest.items():
            index, row = zone.find(hive_id)
            if row is not None:
                flags = row[R_FLAGS]
                if at <= row[R_AT] and not flags & FLAG_STALE:
                    self.counts["older"] += 1
                    continue
                cap = row[R_CAP]
                _, seq = zone.put(hive_id, occ, cap, t_in, t_out, at,
                                  (flags & ~FLAG_STALE) | FLAG_LIVE, index)
            elif hive_id in self.overflow:
                entry = self.overflow[hive_id]
                if at <= entry[4]:
                    self.counts["older"] += 1
                    continue
                cap = entry[0]
                seq = self._overflow_seq()
                self.overflow[hive_id] = [cap, occ, t_in, t_out, at, seq]
            else:
                prev = self.pending_new.get(hive_id)
                if prev is None or at >= prev[6]:
                    self.pending_new[hive_id] = newest[hive_id]
                assert self.new_hives is not None
                self.new_hives.set()
                continue
            self.counts["applied"] += 1
            changes.append((hive_id, occ, cap, t_in, t_out, at, seq))
        await self._publish(changes)
        if shared and self.peers is not None:
            self.peers.publish(shared)

    def _overflow_seq(self) -> int:
        self.next_seq = max(self.next_seq + 2, seed_sequence())
        return self.next_seq

    async def _publish(self, changes: list[tuple]) -> None:
        if not changes:
            return
        pub = self.pub
        for change in changes:
            await pub.send_multipart([topic(change[0]), OCCUPANCY_CHANGE.encode(*change)])
        self.counts["published"] += len(changes)
        self._mark_dirty(change[0] for change in changes)

    def _mark_dirty(self, ids: Any) -> None:
        """Hives whose memcached entry must be rewritten (or deleted)."""
        if not self.settings["memcached"]:
            return
        self.dirty.update(ids)
        assert self.dirty_event is not None
        self.dirty_event.set()

    # -- new hives -----------------------------------------------------------------

    async def _insert_loop(self) -> None:
        assert self.new_hives is not None
        while True:
            await self.new_hives.wait()
            self.new_hives.clear()
            if not self.pending_new:
                continue
            ids = list(self.pending_new)
            try:
                async with self.db.connection() as conn:
                    rows = await conn.fetch(SOME_HIVES_SQL, ids)
            except DatabaseUnavailable:
                await asyncio.sleep(self.settings["memcached_retry"])
                self.new_hives.set()
                continue
            changes = []
            known = set()
            for r in rows:
                hive_id, cap, occ, t_in, t_out, at, flags = row_values(r)
                known.add(hive_id)
                update = self.pending_new.pop(hive_id, None)
                if update is not None and update[6] > at:
                    _, occ, t_in, t_out, _, _, at = update
                    flags = FLAG_LIVE
                change = self._insert(hive_id, cap, occ, t_in, t_out, at, flags)
                if change is not None:
                    changes.append(change)
            for hive_id in ids:
                if hive_id not in known and self.pending_new.pop(hive_id, None) is not None:
                    self.log.info("cache manager: update for hive %d, which Postgres does "
                                  "not know; ignored", hive_id)
            await self._publish(changes)

    def _insert(self, hive_id: int, cap: int, occ: int, t_in: int, t_out: int, at: float,
                flags: int) -> tuple | None:
        """Insert a hive (or write it if it got in meanwhile); overflow when full."""
        zone = self.zone
        index, row = zone.find(hive_id)
        if row is not None and at <= row[R_AT]:
            return None
        index, seq = zone.put(hive_id, occ, cap, t_in, t_out, at, flags, index)
        if index < 0:
            self._zone_full(1)
            seq = self._overflow_seq()
            self.overflow[hive_id] = [cap, occ, t_in, t_out, at, seq]
        return hive_id, occ, cap, t_in, t_out, at, seq

    def _zone_full(self, hives: int) -> None:
        zone = self.zone
        if zone.mark_full():
            self.log.warning("occupancy zone full (%d slots hold at most %d hives): %d "
                             "hive(s) will be served from memcached/Postgres; raise "
                             "occupancy.zone_capacity", zone.capacity, zone.limit, hives)

    # -- capacity in force ----------------------------------------------------------

    def _refresh_capacity(self, hive_id: int) -> None:
        self.refresh.add(hive_id)
        assert self.capacity_event is not None
        self.capacity_event.set()

    async def _capacity_loop(self) -> None:
        """Re-read the capacity of the hives named on the bus and, at each instant a
        scheduled range starts or ends, of the hives whose range does; then wait for the
        next such instant (or a refresh, or a reconcile, which may have missed nothing
        but a later boundary)."""
        assert self.capacity_event is not None
        event = self.capacity_event
        longest = self.settings["reconcile_interval"]  # a clock step is noticed by then
        boundary: float | None = self.boundaries_since  # those since the first reconcile
        stale = True  # the next boundary must be asked
        while True:
            now = time.time()
            try:
                ids, self.refresh = self.refresh, set()
                if boundary is not None and now >= boundary:
                    ids |= await self._boundary_hives(now)
                    stale = True
                if ids:
                    await self._set_capacities(ids, now)
                    stale = True
                if stale:
                    boundary = await self._next_boundary(now)
                    stale = False
            except DatabaseUnavailable:
                self.refresh |= ids
                await asyncio.sleep(self.settings["memcached_retry"])
                continue
            wait = longest if boundary is None else min(longest, max(0.0, boundary - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), wait)
                stale = not self.refresh  # set by a reconcile: the schedule may have changed
            event.clear()

    async def _boundary_hives(self, now: float) -> set[int]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(BOUNDARY_HIVES_SQL, _utc(self.boundaries_since), _utc(now))
        self.boundaries_since = now
        return {r[0] for r in rows}

    async def _next_boundary(self, now: float) -> float | None:
        async with self.db.connection() as conn:
            at = await conn.fetchval(NEXT_BOUNDARY_SQL, _utc(now))
        return None if at is None else at.timestamp()

    async def _set_capacities(self, ids: set[int], now: float) -> None:
        """Write the capacity in force at `now` into the hives' slots (counts unchanged)."""
        assert self.writing is not None
        async with self.writing:
            async with self.db.connection() as conn:
                rows = await conn.fetch(CAPACITY_AT_SQL, list(ids), _utc(now))
            changes = []
            zone = self.zone
            for hive_id, cap in rows:
                index, row = zone.find(hive_id)
                if row is not None:
                    if row[R_CAP] == cap or row[R_FLAGS] & FLAG_DELETED:
                        continue
                    occ, _, t_in, t_out, at, flags = row[R_OCC:R_FLAGS + 1]
                    _, seq = zone.put(hive_id, occ, cap, t_in, t_out, at, flags, index)
                elif hive_id in self.overflow and self.overflow[hive_id][0] != cap:
                    entry = self.overflow[hive_id]
                    _, occ, t_in, t_out, at, _ = entry
                    seq = self._overflow_seq()
                    self.overflow[hive_id] = [cap, occ, t_in, t_out, at, seq]
                else:  # not loaded yet: the insert reads the capacity in force
                    continue
                changes.append((hive_id, occ, cap, t_in, t_out, at, seq))
            if changes:
                self.log.info("cache manager: capacity in force changed for %d hive(s)",
                              len(changes))
            await self._publish(changes)

    # -- reconcile ------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        interval = self.settings["reconcile_interval"]
        assert self.reconcile_now is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reconcile_now.wait(), interval)
            self.reconcile_now.clear()
            await self._reconcile()

    def _zone_ids(self) -> set[int]:
        """Hive ids in the zone, read raw (this process is the only writer)."""
        zone = self.zone
        start = HEADER.size
        end = start + zone.capacity * zone.zone.slot_size
        unpack = struct.Struct("=8xq" + f"{zone.zone.slot_size - 16}x").iter_unpack
        return {hive_id for (hive_id,) in unpack(zone.buf[start:end]) if hive_id}

    async def _reconcile(self) -> bool:
        """One pass; False when Postgres could not be asked."""
        assert self.writing is not None and self.capacity_event is not None
        async with self.writing:  # not interleaved with a capacity refresh
            done = await self._reconcile_pass()
        self.capacity_event.set()  # the next schedule boundary may have changed meanwhile
        return done

    async def _reconcile_pass(self) -> bool:
        zone, log = self.zone, self.log
        started = time.monotonic()
        before = self._zone_ids()
        try:
            async with self.db.connection() as conn:
                rows = await conn.fetch(ALL_HIVES_SQL)
        except DatabaseUnavailable as exc:
            if not self.db_down_logged:
                log.error("cache manager: cannot reconcile the occupancy zone: %s; the "
                          "zone keeps serving, retrying", exc)
                self.db_down_logged = True
            return False
        if self.db_down_logged:
            log.notice("cache manager: reconciling again (Postgres is back)")
            self.db_down_logged = False
        if self.pull is not None:  # a commit in the snapshot whose update has arrived
            await self._drain_queued()  # is no drift
        queried = time.monotonic()
        total = SyncResult()
        for i in range(0, len(rows), CHUNK):
            part = sync_rows(zone, rows[i:i + CHUNK])
            total.add(part)
            await self._publish(part.changed)
            await asyncio.sleep(0)
        seen = {r[0] for r in rows}
        gone = [h for h in before if h not in seen]
        if gone:
            total.add(mark_deleted(zone, gone))
            self._mark_dirty(total.deleted)  # the replica forgets them
        self._merge_overflow(total.overflow)
        first_load = not zone.loaded()
        if first_load:
            zone.mark_loaded()
        meta = zone.meta
        meta.set(0, "reconciled_at", time.time())
        meta.set(0, "drift_total", meta.get(0, "drift_total") + total.corrected)
        self._count(total)
        elapsed = (time.monotonic() - started) * 1000
        if first_load:
            log.notice("cache manager: loaded %d hives into the occupancy zone in %.0f ms",
                       total.inserted, elapsed)
        elif total.inserted and not total.corrected:
            log.notice("cache manager: reconciled %d hives with Postgres in %.0f ms: no drift, "
                       "added %d new", total.rows, elapsed, total.inserted)
        elif total.corrected:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(total.drift.items())) or "none"
            log.notice("cache manager: reconciled %d hives with Postgres in %.0f ms "
                       "(query %.0f ms): corrected drift in %d (%s), added %d new",
                       total.rows, elapsed, (queried - started) * 1000, total.corrected,
                       kinds, total.inserted)
        else:
            log.info("cache manager: reconciled %d hives with Postgres in %.0f ms: no drift",
                     total.rows, elapsed)
        return True

    def _count(self, total: SyncResult) -> None:
        metrics = self.metrics
        metrics.set(0, "reconciles_total", metrics.get(0, "reconciles_total") + 1)
        for kind, n in total.drift.items():
            field = f'reconcile_corrections_total{{kind="{kind}"}}'
            metrics.set(0, field, metrics.get(0, field) + n)

    def _merge_overflow(self, found: dict[int, list]) -> None:
        if found:
            self._zone_full(len(found))
        for hive_id, (cap, occ, t_in, t_out, at) in found.items():
            mine = self.overflow.get(hive_id)
            if mine is not None and mine[4] > at:
                mine[0] = cap
                continue
            if mine is None or mine[1:5] != [occ, t_in, t_out, at] or mine[0] != cap:
                self.overflow[hive_id] = [cap, occ, t_in, t_out, at, self._overflow_seq()]
                self._mark_dirty((hive_id,))
        for hive_id in [h for h in self.overflow if h not in found]:
            del self.overflow[hive_id]  # gone from Postgres (or in a recreated zone)

    # -- memcached replica ------------------------------------------------------------

    async def _replica_loop(self) -> None:
        settings = self.settings
        assert self.dirty_event is not None
        breaker = replica.Breaker(f"cache manager: memcached {settings['memcached']}",
                                  settings["memcached_retry"], self.log)
        refresh = max(1.0, settings["memcached_ttl"] / 2)
        executor = ThreadPoolExecutor(1, thread_name_prefix="occupancy-replica")
        writer = _ReplicaWriter(self.zone, settings)
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        retry = settings["memcached_retry"]
        next_check = loop.time() + retry
        try:
            while True:
                if loop.time() >= next_full:
                    self.dirty |= self._zone_ids() | set(self.overflow)
                    next_full = loop.time() + refresh
                batch, self.dirty = self.dirty, set()
                overflow = {h: list(self.overflow[h]) for h in batch if h in self.overflow}
                if batch or loop.time() >= next_check:
                    try:  # writes (noreply), and a round trip now and then: is it alive?
                        await loop.run_in_executor(executor, writer.write, batch, overflow)
                    except Exception as exc:
                        breaker.failed(exc)
                        self.dirty |= batch
                        await asyncio.sleep(retry)
                        continue
                    if breaker.succeeded():  # a restarted memcached is empty: refill it
                        next_full = loop.time()
                    next_check = loop.time() + retry
                self.dirty_event.clear()
                if not self.dirty:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.dirty_event.wait(), max(
                            0.0, min(next_full, next_check) - loop.time()))
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            writer.close()


class _ReplicaWriter:
    """memcached writes, in the replica thread only (the client is not shared)."""

    def __init__(self, zone: Any, settings: Any) -> None:
        self.zone = zone
        self.settings = settings
        self.prefix = settings["memcached_prefix"]
        self.ttl = int(settings["memcached_ttl"])
        self.client = replica.client(settings)
        self.verify_at = 0.0

    def write(self, ids: set[int], overflow: dict[int, list]) -> None:
        values: dict[str, bytes] = {}
        gone = []
        for hive_id in ids:
            entry = overflow.get(hive_id)
            if entry is not None:
                cap, occ, t_in, t_out, at, seq = entry
            else:
                try:
                    _, row = self.zone.find(hive_id)
                except TimeoutError:
                    continue
                if row is None or row[R_FLAGS] & FLAG_STALE:
                    continue
                if row[R_FLAGS] & FLAG_DELETED:
                    gone.append(f"{self.prefix}{hive_id}")
                    continue
                seq, _, occ, cap, t_in, t_out, at = row[:7]
            values[f"{self.prefix}{hive_id}"] = replica.encode(hive_id, occ, cap, t_in, t_out,
                                                               at, seq)
            if len(values) >= MC_CHUNK:
                self._send(values)
                values = {}
        if values:
            self._send(values)
        try:
            if gone:
                self.client.delete_many(gone, noreply=True)
            if time.monotonic() >= self.verify_at:
                # noreply writes never read, so a dead server goes unnoticed: ask it
                memcached.ping(self.client)
                self.verify_at = time.monotonic() + self.settings["memcached_retry"]
        except Exception:
            self.client.close()
            raise

    def _send(self, values: dict[str, bytes]) -> None:
        try:
            self.client.set_many(values, expire=self.ttl, noreply=True)
        except Exception:
            self.client.close()
            raise

    def close(self) -> None:
        self.client.close()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def main(ctx: Any) -> int:
    """Entry point of the `cache manager` role."""
    return uvloop.run(Manager(ctx).run())


__all__ = ["Manager", "main"]
