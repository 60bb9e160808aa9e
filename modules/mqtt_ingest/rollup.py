"""The occupancy rollups an ingest commit keeps current (migration 0009).

Three levels: `hive_occupancy_5m` (UTC 5-minute buckets), `hive_occupancy_hourly` (UTC
hours) and `hive_occupancy_daily` (the hive's local days, 23 or 25 hours long on DST
days).  Each commit adds its entries and exits to the buckets of their event times and
one point of the occupancy curve (the raw count before and after the commit, at the
commit's time) to the buckets of that time: min, max, last and `area`, the integral of
the count from the bucket's start, so a bucket's time-weighted average needs no job.
One statement per level, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import asyncpg

FIVE_MINUTES = 300


class Move(Protocol):
    """A change of a hive's counts at an event time (store.Piece)."""

    hive_id: int
    at: datetime
    delta_in: int
    delta_out: int


@dataclass(slots=True)
class Sample:
    """A hive's raw count before and after a commit, at the commit's time."""

    hive_id: int
    tz: ZoneInfo
    before: int
    after: int
    at: datetime


def _area(start: str) -> str:
    return (f"CASE WHEN u.t IS NULL THEN o.area "
            f"WHEN o.last_at IS NULL THEN u.pre * extract(epoch FROM u.t - {start}) "
            f"ELSE o.area + o.last_occupancy * greatest(extract(epoch FROM u.t - o.last_at), 0)"
            f" END")


def _upsert(table: str, key: str, key_type: str, peak: str, start: str, extra_set: str = "",
            extra_cols: str = "", extra_vals: str = "") -> str:
    """UPDATE the existing buckets, INSERT the others (entries/exits may be negative
    corrections of late reports: floored at 0, which an ON CONFLICT insert could not)."""
    return f"""
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::{key_type}[], $3::timestamptz[], $4::timestamptz[],
                         $5::int[], $6::int[], $7::int[], $8::int[], $9::timestamptz[])
        AS u(h, k, s, z, e, x, pre, post, t)),
updated AS (
    UPDATE {table} o SET
        entries = greatest(o.entries + u.e, 0), exits = greatest(o.exits + u.x, 0),
        min_occupancy = least(o.min_occupancy, u.pre, u.post),
        {peak} = greatest(o.{peak}, u.pre, u.post),
        area = {_area(start)},
        last_occupancy = coalesce(u.post, o.last_occupancy),
        last_at = coalesce(u.t, o.last_at){extra_set}
    FROM u WHERE o.hive_id = u.h AND o.{key} = u.k
    RETURNING o.hive_id, o.{key})
INSERT INTO {table} (hive_id, {key}{extra_cols}, entries, exits, min_occupancy, {peak},
                     last_occupancy, last_at, area)
SELECT h, k{extra_vals}, greatest(e, 0), greatest(x, 0), least(pre, post),
       coalesce(greatest(pre, post), {'0' if peak == 'peak_occupancy' else 'NULL'}),
       post, t, pre * extract(epoch FROM t - s)
FROM u WHERE NOT EXISTS (SELECT 1 FROM updated d WHERE d.hive_id = u.h AND d.{key} = u.k)
"""


FIVE_MINUTE_SQL = _upsert("hive_occupancy_5m", "bucket", "timestamptz", "max_occupancy",
                          "o.bucket")
# the legacy avg_occupancy: the average so far (readers that know `area` finish it)
HOURLY_SQL = _upsert(
    "hive_occupancy_hourly", "hour", "timestamptz", "peak_occupancy", "o.hour",
    extra_set=(",\n        avg_occupancy = CASE WHEN u.t IS NULL THEN o.avg_occupancy ELSE "
               f"least(greatest(o.peak_occupancy, u.pre, u.post), ({_area('o.hour')}) / "
               "greatest(extract(epoch FROM u.t - o.hour), 1)) END"),
    extra_cols=", avg_occupancy",
    extra_vals=", coalesce(least(greatest(pre, post), pre::real), 0)")
DAILY_SQL = _upsert("hive_occupancy_daily", "day", "date", "max_occupancy", "o.starts_at",
                    extra_cols=", starts_at, ends_at", extra_vals=", s, z")


def local_day(at: datetime, tz: ZoneInfo) -> tuple[date, datetime, datetime]:
    """The hive-local day of an instant, with the instants of its two midnights."""
    return _day_bounds(at.astimezone(tz).date(), tz)


@lru_cache(maxsize=4096)
def _day_bounds(day: date, tz: ZoneInfo) -> tuple[date, datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return day, start, end


Cells = dict[tuple[int, Any], list[Any]]  # (hive, key) -> [start, end, e, x, pre, post, t]


def _levels(moves: Iterable[Move], samples: Iterable[Sample]) -> tuple[Cells, Cells, Cells]:
    """The batch's cells of each level.  Moves are summed per 5-minute bucket first (a
    5-minute bucket lies in one hour and, as every zone's offset is a multiple of 15
    minutes, in one local day), then the buckets are folded into hours and days."""
    zones = {s.hive_id: s.tz for s in samples}
    fine: dict[tuple[int, int], list[Any]] = {}
    for move in moves:
        seconds = int(move.at.timestamp())
        key = (move.hive_id, seconds - seconds % FIVE_MINUTES)
        cell = fine.get(key)
        if cell is None:
            cell = fine[key] = [0, 0, None, None, None]
        cell[0] += move.delta_in
        cell[1] += move.delta_out
    for sample in samples:
        seconds = int(sample.at.timestamp())
        key = (sample.hive_id, seconds - seconds % FIVE_MINUTES)
        cell = fine.get(key)
        if cell is None:
            cell = fine[key] = [0, 0, None, None, None]
        cell[2:5] = sample.before, sample.after, sample.at
    five: Cells = {}
    hourly: Cells = {}
    daily: Cells = {}
    for (hive_id, bucket), (e, x, pre, post, t) in fine.items():
        start = datetime.fromtimestamp(bucket, UTC)
        hour = datetime.fromtimestamp(bucket - bucket % 3600, UTC)
        day, day_start, day_end = local_day(start, zones.get(hive_id, UTC))  # type: ignore[arg-type]
        five[(hive_id, start)] = [start, None, e, x, pre, post, t]
        for cells, key, s, z in ((hourly, hour, hour, None), (daily, day, day_start, day_end)):
            cell = cells.get((hive_id, key))
            if cell is None:
                cells[(hive_id, key)] = [s, z, e, x, pre, post, t]
                continue
            cell[2] += e
            cell[3] += x
            if t is not None:
                cell[4:7] = pre, post, t
    return five, hourly, daily


async def _write(conn: asyncpg.Connection, sql: str, cells: Cells) -> None:
    if not cells:
        return
    ordered = sorted(cells.items(), key=lambda c: c[0])
    columns = list(zip(*((h, k, *v) for (h, k), v in ordered), strict=True))
    await conn.execute(sql, *columns)


async def write_rollups(conn: asyncpg.Connection, moves: Iterable[Move],
                        samples: list[Sample]) -> None:
    """Add a commit's moves and occupancy samples to the three rollup levels."""
    fine, hourly, daily = _levels(moves, samples)
    await _write(conn, FIVE_MINUTE_SQL, fine)
    await _write(conn, HOURLY_SQL, hourly)
    await _write(conn, DAILY_SQL, daily)
