"""Occupancy rollups written directly, for long demo histories (`--days` above the
simulated window) and the hourly/daily rows of the simulated window itself.

Before the simulated window no reports exist: each hive's hours follow its type's
opening hours and daily curves (`history.OPENING`, the same as the simulation), scaled
by its capacity and popularity, a factor per day (0.75-1.25, a little busier in summer)
and noise per hour, from a `random.Random` seeded with the hive's seed: deterministic.
Closed hours have no row (empty buckets).  The daily level sums each local day of the
hive's time zone (23 or 25 hours on DST days), simulated hours included.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

from .history import OPENING, PG_EPOCH, STAY, USEC, HivePlan, _curve

# (hour, entries, exits, peak, average, minimum or None, last, area)
HourRow = tuple[int, int, int, int, float, int | None, int, float]

HOURLY_COLUMNS = ("hive_id", "hour", "entries", "exits", "peak_occupancy", "avg_occupancy",
                  "min_occupancy", "last_occupancy", "last_at", "area", "updated_at")
FIVE_COLUMNS = ("hive_id", "bucket", "entries", "exits", "min_occupancy", "max_occupancy",
                "last_occupancy", "last_at", "area")
DAILY_COLUMNS = ("hive_id", "day", "starts_at", "ends_at", "entries", "exits",
                 "min_occupancy", "max_occupancy", "last_occupancy", "last_at", "area")
_HOURLY = struct.Struct(">h iq iq ii ii ii if ii ii iq id iq".replace(" ", ""))
_HOURLY_NO_MIN = struct.Struct(">h iq iq ii ii ii if i ii iq id iq".replace(" ", ""))
_FIVE = struct.Struct(">h iq iq ii ii i ii ii iq id".replace(" ", ""))
_DAILY = struct.Struct(">h iq ii iq iq ii ii ii ii ii iq id".replace(" ", ""))
PG_DAY0 = date(2000, 1, 1)
WEEK = 168


@cache
def profile(kind: str) -> tuple[float, ...]:
    """Share of the capacity inside per local hour of the week (Monday 00:00 = 0)."""
    hours = [0.0] * WEEK
    for weekday, sessions in OPENING[kind].items():
        for session in sessions:
            weights, _ = _curve(session)
            for i, weight in enumerate(weights):
                minute = weekday * 1440 + session.open_min + i * 15
                hours[(minute // 60) % WEEK] += session.fill * weight / 4
    return tuple(min(h, 1.0) for h in hours)


@lru_cache(maxsize=65536)
def local_day(zone: str, day: date) -> tuple[int, int, tuple[int, ...]]:
    """A local day's midnights (Unix seconds) and the local hour of each whole UTC hour
    starting in it (from `first_hour(start)`)."""
    tz = ZoneInfo(zone)
    start = int(datetime.combine(day, time(0), tzinfo=tz).timestamp())
    end = int(datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).timestamp())
    first = -(-start // 3600) * 3600  # each UTC hour belongs to the day it starts in
    if end - start == 86400 and first == start:
        return start, end, tuple(range(24))
    hours = tuple(datetime.fromtimestamp(t, tz).hour for t in range(first, end, 3600))
    return start, end, hours


def first_hour(start: int) -> int:
    return -(-start // 3600) * 3600


def synthetic_hours(plan: HivePlan, start: int, end: int) -> list[HourRow]:
    """The modelled hours of one hive in [start, end) (whole UTC hours)."""
    if not plan.open:
        return []
    rng = random.Random(plan.seed * 7919 + 18)
    shares = profile(plan.kind)
    stay = STAY[plan.kind][2]
    scale = plan.capacity * plan.popularity
    rows: list[HourRow] = []
    tz = ZoneInfo(plan.timezone)
    day = datetime.fromtimestamp(start, UTC).astimezone(tz).date()
    while True:
        day_start, _, hours = local_day(plan.timezone, day)
        first = first_hour(day_start)
        if first >= end:
            break
        season = 1.0 + 0.1 * math.sin((day.timetuple().tm_yday - 100) / 58.1)
        factor = (0.75 + 0.5 * rng.random()) * season * scale
        base = day.weekday() * 24
        for i, local_hour in enumerate(hours):
            hour = first + i * 3600
            share = shares[base + local_hour]
            if share <= 0 or hour < start or hour >= end:
                continue
            avg = min(share * factor * (0.9 + 0.2 * rng.random()), plan.capacity)
            peak = min(plan.capacity, math.ceil(avg * 1.2))
            entries = round(avg * 60 / stay)
            rows.append((hour, entries, entries, peak, avg, int(avg * 0.7), round(avg),
                         avg * 3600))
        day += timedelta(days=1)
    return rows


def simulated_hours(rows: Sequence[tuple[int, int, int, int, int, float]]) -> list[HourRow]:
    """history.rollup_of's rows in HourRow form (no minimum; `last` is the average)."""
    return [(h, e, x, peak, avg, None, round(avg), area) for h, e, x, peak, area, avg in rows]


def hourly_copy(hive_id: int, rows: Sequence[HourRow], updated_until: int) -> bytes:
    """Binary COPY tuples of hive_occupancy_hourly (HOURLY_COLUMNS)."""
    out = []
    for hour, entries, exits, peak, avg, low, last, area in rows:
        end = (min(hour + 3600, updated_until) - PG_EPOCH) * USEC
        head = (11, 8, hive_id, 8, (hour - PG_EPOCH) * USEC, 4, entries, 4, exits, 4, peak,
                4, min(avg, peak))
        tail = (4, last, 8, end, 8, area, 8, end)
        if low is None:
            out.append(_HOURLY_NO_MIN.pack(*head, -1, *tail))
        else:
            out.append(_HOURLY.pack(*head, 4, low, *tail))
    return b"".join(out)


def daily_copy(hive_id: int, zone: str, rows: Sequence[HourRow]) -> bytes:
    """Binary COPY tuples of hive_occupancy_daily from a hive's hours, by local day."""
    tz = ZoneInfo(zone)
    out = []
    days: dict[date, list[HourRow]] = {}
    for row in rows:
        days.setdefault(datetime.fromtimestamp(row[0], tz).date(), []).append(row)
    for day, hours in days.items():
        start, end, _ = local_day(zone, day)
        entries = sum(r[1] for r in hours)
        exits = sum(r[2] for r in hours)
        area = sum(r[7] for r in hours)
        top = max(r[3] for r in hours)
        low = 0 if len(hours) * 3600 < end - start else min(r[5] or 0 for r in hours)
        out.append(_DAILY.pack(11, 8, hive_id, 4, (day - PG_DAY0).days,
                               8, (start - PG_EPOCH) * USEC, 8, (end - PG_EPOCH) * USEC,
                               4, entries, 4, exits, 4, low, 4, top, 4, 0,
                               8, (end - PG_EPOCH) * USEC, 8, area))
    return b"".join(out)


def five_copy(hive_id: int, rows: Sequence[tuple[int, int, int, int, int, float]],
              updated_until: int) -> bytes:
    """Binary COPY tuples of hive_occupancy_5m from history.rollup_of(..., 300) rows (no
    minimum; `last` is the average)."""
    out = []
    for start, entries, exits, peak, area, avg in rows:
        end = (min(start + 300, updated_until) - PG_EPOCH) * USEC
        out.append(_FIVE.pack(9, 8, hive_id, 8, (start - PG_EPOCH) * USEC, 4, entries,
                              4, exits, -1, 4, peak, 4, round(avg), 8, end, 8, float(area)))
    return b"".join(out)
