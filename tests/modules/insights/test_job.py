"""The insights job's SQL on a real Postgres: profiles in local time (DST), empty
hours, new hives, today's adjustment and its damping, the band, the lock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from modules.database.testing import temporary_database_sync
from modules.hives.testing import load_demo
from modules.insights import job
from modules.insights.testing import pattern_rollups, weekly, write_rollups

pytestmark = pytest.mark.services

BERLIN = "Europe/Berlin"


@pytest.fixture
def dsn(pg_server_dsn: str) -> Iterator[str]:
    """4 demo hives in Berlin, capacity 100, without rollups."""
    with temporary_database_sync(pg_server_dsn) as dsn:
        async def prepare() -> None:
            await load_demo(dsn, 4)
            c = await asyncpg.connect(dsn)
            try:
                await c.execute("DELETE FROM hive_occupancy_hourly")
                await c.execute("UPDATE hive SET timezone = $1, capacity = 100", BERLIN)
            finally:
                await c.close()
        asyncio.run(prepare())
        yield dsn


def on(dsn: str, body: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await body(conn)
        finally:
            await conn.close()
    asyncio.run(run())


async def profile(conn: asyncpg.Connection, hive_id: int) -> dict[tuple[int, int], asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM hive_occupancy_profile WHERE hive_id = $1", hive_id)
    return {(r["weekday"], r["hour"]): r for r in rows}


async def profile_is_the_pattern_on_the_local_clock_across_dst(conn):
    # eight weeks that contain the end of summer time in Berlin (2026-10-25, 03:00 → 02:00)
    end = datetime(2026, 11, 10, tzinfo=UTC)
    await write_rollups(conn, pattern_rollups(1, BERLIN, 100, end - timedelta(weeks=8), end))
    run = await job.run_profiles(conn, end, 8)
    assert run is not None and run.hives == 1
    got = await profile(conn, 1)
    assert len(got) == 7 * 24
    # samples: the UTC hours of the window, counted on the local clock by zoneinfo
    zone = ZoneInfo(BERLIN)
    counts: dict[tuple[int, int], int] = {}
    for k in range(8 * 7 * 24):
        local = (end - timedelta(hours=k + 1)).astimezone(zone)
        counts[local.isoweekday(), local.hour] = counts.get((local.isoweekday(), local.hour), 0) + 1
    assert counts[7, 2] == 9  # the repeated 02:00 of that Sunday
    for (weekday, hour), r in got.items():
        expected = weekly(weekday, hour, 100)
        assert r["mean"] == pytest.approx(expected, abs=1e-3), (weekday, hour)
        assert r["p10"] == pytest.approx(expected, abs=1e-3)
        assert r["p90"] == pytest.approx(expected, abs=1e-3)
        assert r["samples"] == counts[weekday, hour], (weekday, hour)


async def empty_hours_count_as_zero_and_a_new_hive_starts_at_its_first_rollup(conn):
    end = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
    zone = ZoneInfo(BERLIN)
    # hive 1: someone only on Monday 20:00 local (10 people), 8 weeks; hive 2: 2 weeks
    for hive_id, weeks in ((1, 8), (2, 2)):
        rows = []
        for w in range(1, weeks + 1):
            local = (end - timedelta(weeks=w)).astimezone(zone).replace(hour=20)
            rows.append((hive_id, local.astimezone(UTC), 10, 10, 10, 10.0))
        await write_rollups(conn, rows)
    await job.run_profiles(conn, end, 8)
    one, two = await profile(conn, 1), await profile(conn, 2)
    assert one[(1, 20)]["mean"] == pytest.approx(10) and one[(1, 20)]["samples"] == 8
    assert one[(1, 21)]["mean"] == 0 and one[(1, 21)]["samples"] == 8
    assert one[(3, 12)]["samples"] == 8 and one[(3, 12)]["p90"] == 0
    # the window starts at a hive's first rollup hour (Monday 20:00, 8 or 2 weeks ago)
    assert one[(1, 19)]["samples"] == 7
    assert two[(1, 20)]["mean"] == pytest.approx(10) and two[(1, 20)]["samples"] == 2
    assert two[(1, 21)]["samples"] == 2 and two[(1, 19)]["samples"] == 1
    # hives without any rollup get no profile
    assert await profile(conn, 3) == {}


async def an_hour_ingest_counted_but_nobody_averaged_is_left_out(conn):
    end = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
    local = (end - timedelta(weeks=1)).astimezone(ZoneInfo(BERLIN)).replace(hour=20)
    await write_rollups(conn, pattern_rollups(4, BERLIN, 100, end - timedelta(weeks=8), end)
                       )
    # last Monday 20:00: entries and exits counted, peak and average not (yet) computed
    await conn.execute("UPDATE hive_occupancy_hourly SET entries = 9, exits = 4, "
                       "peak_occupancy = 0, avg_occupancy = 0 WHERE hive_id = 4 AND hour = $1",
                       local.astimezone(UTC))
    await job.run_profiles(conn, end, 8)
    got = await profile(conn, 4)
    assert got[(1, 20)]["samples"] == 7 and got[(1, 21)]["samples"] == 8
    assert got[(1, 20)]["mean"] == pytest.approx(weekly(1, 20, 100), abs=1e-3)
    # and the forecast's "how today runs" leaves it out too: as usual, not quieter
    await job.run_forecasts(conn, local + timedelta(hours=1, minutes=10))
    ratio = await conn.fetchval("SELECT today_ratio FROM hive_insights WHERE hive_id = 4")
    assert ratio == pytest.approx(1.0, abs=1e-3)


def _busier_today(start: datetime) -> object:
    return lambda local: 1.6 if local >= start else 1.0


async def forecast_follows_a_busier_today_and_fades_with_the_horizon(conn):
    zone = ZoneInfo(BERLIN)
    now = datetime(2026, 6, 5, 21, 30, tzinfo=zone)  # a Friday evening
    today = now.replace(hour=15, minute=0)
    for hive_id, factor in ((1, _busier_today(today)), (2, lambda local: 1.0)):
        await write_rollups(conn, pattern_rollups(
            hive_id, BERLIN, 100, now - timedelta(weeks=5), now, factor=factor))
    await job.run_profiles(conn, now - timedelta(hours=12), 4)  # last night's profile
    run = await job.run_forecasts(conn, now)
    assert run is not None and run.hives == 2
    rows = await conn.fetch("SELECT * FROM hive_occupancy_forecast WHERE hive_id = 1 "
                            "ORDER BY hour")
    assert len(rows) == 24 and rows[0]["hour"] == now.astimezone(UTC).replace(minute=0)
    ratio = await conn.fetchval("SELECT today_ratio FROM hive_insights WHERE hive_id = 1")
    assert 1.3 < ratio < 1.6  # shrunk from 1.6 by the prior
    assert rows[0]["expected"] == 100  # 1.4 x 80 people, bounded by the capacity
    for k, r in enumerate(rows):  # today's lift fades as exp(-k / 3 h)
        if 0 < r["expected"] < 100:
            lift = 1 + (ratio - 1) * math.exp(-k / 3)
            assert r["expected"] == pytest.approx(r["usual"] * lift, rel=1e-3), k
    noon = next(r for r in rows if r["hour"].astimezone(zone).hour == 13)  # 15 h ahead
    assert noon["expected"] == pytest.approx(noon["usual"], rel=0.02)
    for r in rows:
        assert r["low"] <= r["expected"] <= r["high"] <= 100
    # the usual hive: as usual (no noise: the band is the pattern itself)
    usual = await conn.fetch("SELECT * FROM hive_occupancy_forecast WHERE hive_id = 2")
    for r in usual:
        assert r["expected"] == pytest.approx(r["usual"], rel=1e-3, abs=1e-3)
        local = r["hour"].astimezone(zone)
        assert r["usual"] == pytest.approx(weekly(local.isoweekday(), local.hour, 100),
                                           abs=1e-3)
    # a later run drops past hours
    await job.run_forecasts(conn, now + timedelta(hours=3))
    first = await conn.fetchval("SELECT min(hour) FROM hive_occupancy_forecast")
    assert first == (now + timedelta(hours=3)).astimezone(UTC).replace(minute=0)


async def a_job_runs_once_at_a_time(conn, dsn):
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1, 0)", job.LOCK)
            assert await job.run_profiles(conn, datetime.now(UTC), 8) is None
            assert await job.run_forecasts(conn, datetime.now(UTC)) is not None
        assert await job.run_profiles(conn, datetime.now(UTC), 8) is not None
    finally:
        await holder.close()


def test_profile_is_the_pattern_on_the_local_clock_across_dst(dsn):
    on(dsn, profile_is_the_pattern_on_the_local_clock_across_dst)


def test_empty_hours_count_as_zero_and_a_new_hive_starts_at_its_first_rollup(dsn):
    on(dsn, empty_hours_count_as_zero_and_a_new_hive_starts_at_its_first_rollup)


def test_forecast_follows_a_busier_today_and_fades_with_the_horizon(dsn):
    on(dsn, forecast_follows_a_busier_today_and_fades_with_the_horizon)


def test_a_job_runs_once_at_a_time(dsn):
    on(dsn, lambda conn: a_job_runs_once_at_a_time(conn, dsn))


def test_an_hour_ingest_counted_but_nobody_averaged_is_left_out(dsn):
    on(dsn, an_hour_ingest_counted_but_nobody_averaged_is_left_out)
