"""Rollups with a known weekly pattern, for the insights tests and benchmarks (nothing
here runs in bizzyd).

Two sources:
- `simulated_rollups`: the demo city's sensor simulator (modules.demo_data.history:
  opening hours and daily curves per hive type, random arrivals and stays) run for
  several weeks per hive, reduced to its hourly rollup (`rollup_of`), exactly what
  `bizzyd demo-data` writes.  The rows are written directly (COPY), not through MQTT
  ingest: ingest cannot run weeks of accelerated time (its clock is the wall clock).
- `pattern_rollups`: a closed-form weekly pattern (`weekly`) times a day factor plus
  Gaussian noise, for tests that need to know the truth exactly (DST, adjustment).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from modules.demo_data.history import HivePlan, SensorPlan, Window, simulate_hive

Row = tuple[int, datetime, int, int, int, float]  # hive, hour, entries, exits, peak, avg
COLUMNS = ("hive_id", "hour", "entries", "exits", "peak_occupancy", "avg_occupancy")


def weekly(weekday: int, hour: int, capacity: int) -> float:
    """A bar-like week: quiet by day, an evening bump, busier Friday and Saturday
    (ISO weekday, local hour)."""
    evening = math.exp(-0.5 * ((hour - 21) / 2.0) ** 2) + math.exp(-0.5 * ((hour + 3) / 2.0) ** 2)
    lunch = 0.25 * math.exp(-0.5 * ((hour - 13) / 1.2) ** 2)
    scale = 0.8 if weekday in (5, 6) else 0.45
    return round(capacity * scale * (evening + lunch), 3)


def pattern_rollups(hive_id: int, timezone: str, capacity: int, start: datetime,
                    end: datetime, noise: float = 0.0, seed: int = 1,
                    factor: Callable[[datetime], float] = lambda local: 1.0,
                    shape: Callable[[int, int, int], float] = weekly) -> list[Row]:
    """One row per UTC hour of [start, end): avg = shape(local weekday, local hour) x
    factor(local time) + N(0, noise), bounded to [0, capacity]."""
    rng = random.Random(seed)
    zone = ZoneInfo(timezone)
    rows = []
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        local = hour.astimezone(zone)
        value = shape(local.isoweekday(), local.hour, capacity) * factor(local)
        value = min(max(value + rng.gauss(0, noise), 0.0), float(capacity))
        rows.append((hive_id, hour, 0, 0, math.ceil(value), value))
        hour += timedelta(hours=1)
    return rows


def simulated_rollups(hive_id: int, kind: str, timezone: str, capacity: int,
                      start: datetime, end: datetime, seed: int) -> list[Row]:
    """The demo simulator's hourly rollup of one hive over [start, end) (whole hours),
    one v2 sensor counting every door.  Hours nobody was in are absent (as in demo-data)."""
    window = Window(int(start.timestamp()), int(end.timestamp()))
    plan = HivePlan(hive_id, kind, capacity, timezone, seed,
                    sensors=(SensorPlan(hive_id * 10, "v2", 1.0, counter=0),))
    history = simulate_hive(plan, window)
    return [(hive_id, datetime.fromtimestamp(hour, UTC), entries, exits, peak, average)
            for hour, entries, exits, peak, _area, average in history.hourly]


async def write_rollups(conn: asyncpg.Connection, rows: Iterable[Row],
                        hive_ids: Sequence[int] | None = None) -> int:
    """Replace the rollups of `hive_ids` (default: those in `rows`) with `rows`."""
    rows = list(rows)
    ids = sorted({r[0] for r in rows} if hive_ids is None else set(hive_ids))
    await conn.execute("DELETE FROM hive_occupancy_hourly WHERE hive_id = ANY($1::bigint[])",
                       ids)
    await conn.copy_records_to_table("hive_occupancy_hourly", records=rows, columns=COLUMNS)
    return len(rows)


def truth(rows: Iterable[Row], hive_id: int, start: datetime, hours: int) -> list[float]:
    """The averages of hive_id's hours [start, start + hours) (0 where no row)."""
    by_hour = {r[1]: r[5] for r in rows if r[0] == hive_id}
    return [by_hour.get(start + timedelta(hours=k), 0.0) for k in range(hours)]


KINDS = ("bar", "restaurant", "cafe", "club", "store", "gym", "other")


async def accuracy(conn: asyncpg.Connection, hives: int = 8, weeks: int = 6, cuts: int = 12,
                   every: int = 4, end: datetime = datetime(2026, 11, 23, tzinfo=UTC)
                   ) -> dict[str, float]:
    """The forecast's mean absolute error (people) against the simulator's own future.

    The first `hives` hives of the database (their time zones; kinds in turn from
    KINDS, capacity 60) get `weeks` weeks + 2 days of simulated rollups ending at `end`.
    Then, at `cuts` moments `every` hours apart over the last two days, the profile is
    computed from the weeks before the moment and the forecast is made; each forecast
    hour is compared with what the simulator produced for that hour.  Also reported:
    the same without today's adjustment (profile only) and a naive forecast that the
    last complete hour stays (persistence), and the mean occupancy.
    """
    from . import job

    rows_of = await conn.fetch("SELECT id, timezone FROM hive ORDER BY id LIMIT $1", hives)
    start = end - timedelta(weeks=weeks, days=2)
    rows: list[Row] = []
    for i, h in enumerate(rows_of):
        rows += simulated_rollups(h["id"], KINDS[i % len(KINDS)], h["timezone"], 60, start,
                                  end, seed=1000 + h["id"])
    await conn.execute("UPDATE hive SET capacity = 60 WHERE id = ANY($1::bigint[])",
                       [h["id"] for h in rows_of])
    await write_rollups(conn, rows, [h["id"] for h in rows_of])
    errors: dict[str, list[float]] = {"forecast": [], "profile_only": [], "persistence": []}
    truths: list[float] = []
    plain = job.ForecastSettings(prior=1e9)  # the ratio stays 1
    for c in range(cuts):
        moment = end - timedelta(days=2) + timedelta(hours=c * every)
        await job.run_profiles(conn, moment - timedelta(hours=moment.hour), weeks)
        for name, settings in (("forecast", job.ForecastSettings()), ("profile_only", plain)):
            await job.run_forecasts(conn, moment, settings)
            for h in rows_of:
                got = [r["expected"] for r in await conn.fetch(
                    "SELECT expected FROM hive_occupancy_forecast WHERE hive_id = $1 "
                    "AND hour >= $2 ORDER BY hour", h["id"], moment)]
                real = truth(rows, h["id"], moment, 24)
                assert len(got) == 24, (h["id"], moment, len(got))
                errors[name] += [abs(a - b) for a, b in zip(got, real, strict=True)]
                if name == "forecast":
                    truths += real
                    last = truth(rows, h["id"], moment - timedelta(hours=1), 1)[0]
                    errors["persistence"] += [abs(last - b) for b in real]
    out = {f"mae_{k}": sum(v) / len(v) for k, v in errors.items()}
    out["mean_occupancy"] = sum(truths) / len(truths)
    out["hours"] = float(len(truths))
    return out
