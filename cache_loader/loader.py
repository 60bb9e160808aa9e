"""The cache loader: a one-shot process that fills the occupancy zone from Postgres.

It runs at start (and with each new generation after a reload, when it finds the
zone already loaded and exits at once).  Hand-off to the cache manager, the zone's
long-lived writer:

1. the loader queries Postgres (capacity in force + hive_occupancy), retrying while
   Postgres is down, up to `occupancy.load_timeout`;
2. it takes the writer lock (`zone.WriterLock`, a record lock on the meta segment),
   writes every hive, sets `meta.loaded`, releases the lock and exits 0;
3. the cache manager waits for `meta.loaded` (at most `load_timeout`), then takes
   the writer lock and only then starts applying updates.  If the loader did not
   finish in time, the manager loads the zone itself (the same `sync_rows`), and a
   late loader that finally gets the lock finds `loaded` set and writes nothing.

So there is exactly one writer at any time, and the loader never writes after the
manager started.  Until `loaded` is set the workers answer from memcached/Postgres.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvloop

from modules.database import Database, DatabaseUnavailable
from modules.occupancy.capacity import HIVES_SQL
from modules.occupancy.zone import (
    FLAG_DELETED,
    FLAG_LIVE,
    FLAG_STALE,
    R_FLAGS,
    R_OCC,
    OccupancyTable,
    WriterLock,
    table,
)

ALL_HIVES_SQL = HIVES_SQL  # with the capacity in force now (modules.occupancy.capacity)
EPS = 1e-6  # updated_at values closer than this are the same instant (µs in Postgres)
RETRY = 1.0


@dataclass
class SyncResult:
    """What `sync_rows` did to the zone."""

    inserted: int = 0
    drift: dict[str, int] = field(default_factory=dict)
    # (hive_id, occupancy, capacity, total_in, total_out, updated_at, sequence)
    changed: list[tuple] = field(default_factory=list)
    # hives that did not fit: hive_id → [capacity, occupancy, in, out, updated_at]
    overflow: dict[int, list] = field(default_factory=dict)
    rows: int = 0
    live: int = 0
    deleted: list[int] = field(default_factory=list)

    @property
    def corrected(self) -> int:
        return sum(self.drift.values())

    def add(self, other: SyncResult) -> None:
        self.inserted += other.inserted
        for kind, n in other.drift.items():
            self.drift[kind] = self.drift.get(kind, 0) + n
        self.changed += other.changed
        self.overflow.update(other.overflow)
        self.rows += other.rows
        self.live += other.live
        self.deleted += other.deleted


def row_values(r: Sequence[Any]) -> tuple[int, int, int, int, int, float, int]:
    """(hive_id, capacity, occupancy, in, out, updated_at, flags) of a query row."""
    if r[2] is None:  # no hive_occupancy row yet: empty, never updated
        return r[0], r[1], 0, 0, 0, 0.0, 0
    return r[0], r[1], r[2], r[3], r[4], r[5].timestamp(), FLAG_LIVE


def sync_rows(zone: OccupancyTable, rows: Sequence[Any]) -> SyncResult:
    """Make the zone agree with Postgres rows (the writer only).

    A hive missing from the zone is inserted.  A hive whose slot is older than its
    row (by updated_at), or as old but different, or with another capacity, or
    stale/deleted, is corrected and counted as drift by kind.  A slot newer than its
    row is left alone: the update reached the zone after the query's snapshot.
    """
    result = SyncResult(rows=len(rows))
    for r in rows:
        hive_id, cap, occ, t_in, t_out, at, flags = row_values(r)
        result.live += bool(flags)
        index, row = zone.find(hive_id)
        if row is None:
            index, seq = zone.put(hive_id, occ, cap, t_in, t_out, at, flags)
            if index < 0:
                result.overflow[hive_id] = [cap, occ, t_in, t_out, at]
                continue
            result.inserted += 1
            result.changed.append((hive_id, occ, cap, t_in, t_out, at, seq))
            continue
        _, _, z_occ, z_cap, z_in, z_out, z_at, z_flags, _ = row
        if z_flags & FLAG_STALE:
            kind = "stale"
        elif z_flags & FLAG_DELETED:
            kind = "reappeared"
        elif at > z_at + EPS:
            kind = "behind"
        elif at >= z_at - EPS and (occ, t_in, t_out) != (z_occ, z_in, z_out):
            kind = "differs"
        elif cap != z_cap:
            kind = "capacity"
            if at < z_at - EPS:  # the zone's counts are newer: keep them
                occ, t_in, t_out, at, flags = z_occ, z_in, z_out, z_at, z_flags
        else:
            continue
        _, seq = zone.put(hive_id, occ, cap, t_in, t_out, at, flags, index)
        result.drift[kind] = result.drift.get(kind, 0) + 1
        result.changed.append((hive_id, occ, cap, t_in, t_out, at, seq))
    return result


def mark_deleted(zone: OccupancyTable, hive_ids: Sequence[int]) -> SyncResult:
    """Flag slots of hives Postgres no longer has (slots are never freed)."""
    result = SyncResult()
    for hive_id in hive_ids:
        index, row = zone.find(hive_id)
        if row is None or row[R_FLAGS] & FLAG_DELETED:
            continue
        zone.put(hive_id, *row[R_OCC:R_FLAGS], row[R_FLAGS] | FLAG_DELETED, index=index)
        result.deleted.append(hive_id)
        result.drift["deleted"] = result.drift.get("deleted", 0) + 1
    return result


def install_stop(loop: asyncio.AbstractEventLoop, ctx: Any,
                 on_stop: Any) -> None:
    """TERM/INT: fast stop, QUIT: graceful stop; USR1 reopens the log; the rest of
    the master's signals are ignored (their default would kill the process)."""
    loop.add_signal_handler(signal.SIGTERM, on_stop, "fast")
    loop.add_signal_handler(signal.SIGINT, on_stop, "fast")
    loop.add_signal_handler(signal.SIGQUIT, on_stop, "graceful")
    reopen = getattr(ctx.log, "reopen", None)
    if reopen is not None:
        loop.add_signal_handler(signal.SIGUSR1, reopen)
    for sig in (signal.SIGHUP, signal.SIGWINCH, signal.SIGUSR2, signal.SIGTTIN,
                signal.SIGTTOU, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep; True when told to stop meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Loader:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.settings = ctx.config["occupancy"]
        self.zone = table(ctx.zones)
        self.stop: asyncio.Event | None = None

    def _on_stop(self, how: str) -> None:
        assert self.stop is not None
        self.stop.set()

    async def run(self) -> int:
        self.stop = asyncio.Event()
        install_stop(asyncio.get_running_loop(), self.ctx, self._on_stop)
        zone, log = self.zone, self.log
        if zone.loaded():
            log.info("cache loader: the occupancy zone is already loaded (%d hives)",
                     zone.meta.get(0, "hives"))
            return 0
        started = time.monotonic()
        deadline = started + self.settings["load_timeout"]
        db = Database(self.ctx.config["database"], log)
        try:
            while True:
                try:
                    async with db.connection() as conn:
                        rows = await conn.fetch(ALL_HIVES_SQL)
                    break
                except DatabaseUnavailable as exc:
                    if time.monotonic() + RETRY > deadline:
                        log.error("cache loader: cannot load the occupancy zone (%s); the "
                                  "cache manager will load it when Postgres is back", exc)
                        return 1
                    if await pause(self.stop, RETRY):
                        return 0
        finally:
            await db.close()
        queried = time.monotonic()
        lock = WriterLock(zone.meta)
        while not lock.try_acquire():  # a manager of the previous generation may write
            if await pause(self.stop, 0.05):
                return 0
        try:
            if zone.loaded():
                log.info("cache loader: the cache manager loaded the zone meanwhile")
                return 0
            if zone.meta.get(0, "zone_serial") != zone.serial:
                zone.reset_meta()
            result = sync_rows(zone, rows)
            zone.mark_loaded()
        finally:
            lock.release()
        done = time.monotonic()
        log.notice("cache loader: loaded %d hives (%d with occupancy) into the occupancy zone "
                   "in %.0f ms (query %.0f ms, zone %.0f ms)%s", result.inserted, result.live,
                   (done - started) * 1000, (queried - started) * 1000, (done - queried) * 1000,
                   f"; {len(result.overflow)} did not fit" if result.overflow else "")
        if result.overflow and zone.mark_full():
            log.warning("occupancy zone full (%d slots hold at most %d hives): %d hive(s) "
                        "will be served from memcached/Postgres; raise "
                        "occupancy.zone_capacity", zone.capacity, zone.limit,
                        len(result.overflow))
        return 0


def main(ctx: Any) -> int:
    """Entry point of the `cache loader` role."""
    return uvloop.run(Loader(ctx).run())
