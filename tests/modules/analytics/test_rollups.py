"""The rollups ingest writes (modules/mqtt_ingest/rollup.py): the occupancy curve of the
5-minute, hourly and local-day levels, negative late corrections floored at 0, and the
retention sweep (real Postgres)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from modules.analytics import sweep
from modules.mqtt_ingest.rollup import Sample, write_rollups

pytestmark = pytest.mark.services

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class Move:
    hive_id: int
    at: datetime
    delta_in: int
    delta_out: int


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def _scenario(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        hive = await conn.fetchval("SELECT min(id) FROM hive")
        for table in ("hive_occupancy_5m", "hive_occupancy_hourly", "hive_occupancy_daily"):
            await conn.execute(f"DELETE FROM {table} WHERE hive_id = $1", hive)
        t1, t2 = utc("2026-10-25T10:02:30"), utc("2026-10-25T10:04:00")
        async with conn.transaction():
            await write_rollups(conn, [Move(hive, t1, 5, 0)], [Sample(hive, BERLIN, 0, 5, t1)])
        async with conn.transaction():
            await write_rollups(conn, [Move(hive, t2, 0, 2), Move(hive, t1, -1, 0)],
                                [Sample(hive, BERLIN, 5, 3, t2)])
        out = {}
        for table, key in (("hive_occupancy_5m", "bucket"), ("hive_occupancy_hourly", "hour"),
                           ("hive_occupancy_daily", "day")):
            out[table] = dict(await conn.fetchrow(f"SELECT * FROM {table} WHERE hive_id = $1",
                                                  hive))
            out[table]["key"] = out[table][key]
        return out
    finally:
        await conn.close()


def test_three_levels_carry_the_curve(analytics_dsn: str) -> None:
    got = asyncio.run(_scenario(analytics_dsn))
    five, hour, day = (got[t] for t in ("hive_occupancy_5m", "hive_occupancy_hourly",
                                        "hive_occupancy_daily"))
    assert five["key"] == utc("2026-10-25T10:00:00")
    assert hour["key"] == utc("2026-10-25T10:00:00")
    for row in (five, hour, day):
        assert (row["entries"], row["exits"]) == (4, 2)  # 5, then a late -1
        assert (row["min_occupancy"], row["last_occupancy"]) == (0, 3)
        assert row["last_at"] == utc("2026-10-25T10:04:00")
        # 0 people until 10:02:30, then 5 for 90 s
        assert row["area"] == pytest.approx(450.0)
    assert five["max_occupancy"] == 5 and day["max_occupancy"] == 5
    assert hour["peak_occupancy"] == 5
    assert hour["avg_occupancy"] == pytest.approx(450 / 240)  # the average so far
    # the local day of 25 hours (clocks back): midnight CEST to midnight CET
    assert str(day["key"]) == "2026-10-25"
    assert day["starts_at"] == utc("2026-10-24T22:00:00")
    assert day["ends_at"] == utc("2026-10-25T23:00:00")


async def _sweep(dsn: str) -> tuple:
    conn = await asyncpg.connect(dsn)
    try:
        hive = await conn.fetchval("SELECT min(id) FROM hive")
        old = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=40)
        await conn.execute("INSERT INTO hive_occupancy_5m (hive_id, bucket, entries) "
                           "VALUES ($1, $2, 1), ($1, $3, 1) ON CONFLICT DO NOTHING",
                           hive, old, old + timedelta(days=30))
        settings = {"retention_5m": 35 * 86400, "retention_hourly": 0, "retention_daily": 0}
        hourly_before = await conn.fetchval("SELECT count(*) FROM hive_occupancy_hourly")
        done = await sweep(conn, settings)
        count = "SELECT count(*) FROM hive_occupancy_5m WHERE hive_id = $1 AND bucket = $2"
        left = await conn.fetchval(count, hive, old)
        kept = await conn.fetchval(count, hive, old + timedelta(days=30))
        hourly_after = await conn.fetchval("SELECT count(*) FROM hive_occupancy_hourly")
        return done, left, kept, hourly_before, hourly_after
    finally:
        await conn.close()


def test_retention_sweep(analytics_dsn: str) -> None:
    done, left, kept, hourly_before, hourly_after = asyncio.run(_sweep(analytics_dsn))
    assert done is not None and done[0] >= 1 and done[1:] == (0, 0)
    assert (left, kept) == (0, 1)
    assert hourly_before == hourly_after  # retention 0: forever
