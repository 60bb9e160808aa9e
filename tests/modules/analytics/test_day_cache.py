"""History answers made of cached whole days are the answers rendered in one go: over
corrections, a capacity schedule, a partial first day and the unsettled last hours, for
1h, 15m and 5m buckets; and 1h answers (averages by Postgres, fetched in chunks) are
those of the general render of full rollup rows (Postgres with a demo city)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from modules.analytics import api, queries, series
from modules.analytics.cache import Bodies
from modules.analytics.schemas import History
from modules.database.testing import temporary_database_sync
from modules.hives.testing import load_demo
from modules.mqtt_ingest.day import zone

pytestmark = pytest.mark.services

# the last 13:37 UTC: the correction and the schedule below fall in the demo's open
# hours (its venues report nothing at night), whatever the time the tests run
NOW = datetime.now(UTC).replace(hour=13, minute=37, second=0, microsecond=0)
NOW -= timedelta(days=datetime.now(UTC) < NOW)
WINDOWS = (("1h", timedelta(days=9, hours=5)), ("15m", timedelta(days=6, minutes=45)),
           ("5m", timedelta(days=3, hours=2, minutes=5)))


# the general form of a rollup row (series.render's columns) for hourly rows
HOURLY = """
SELECT extract(epoch FROM hour)::float8 AS s, extract(epoch FROM hour)::float8 + 3600 AS e,
       entries, exits, min_occupancy,
       CASE WHEN last_at IS NULL AND peak_occupancy = 0 AND avg_occupancy = 0 THEN NULL
            ELSE peak_occupancy END,
       last_occupancy, extract(epoch FROM last_at)::float8 AS last_at, area,
       CASE WHEN last_at IS NULL AND peak_occupancy = 0 AND avg_occupancy = 0 THEN NULL
            ELSE avg_occupancy END AS avg
FROM hive_occupancy_hourly WHERE hive_id = $1 AND hour >= $2 AND hour < $3
ORDER BY hour"""


def test_answers_from_day_pieces_are_the_answers_rendered_at_once(pg_server_dsn: str
                                                                   ) -> None:
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, 2, days=10, now=f"{NOW:%Y-%m-%dT%H}:00Z"))
        asyncio.run(_check(dsn))


def test_hours_are_the_general_render_of_the_rollup_rows(pg_server_dsn: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(api, "HOURS_CHUNK", 37)  # seams inside days, a short last chunk
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, 2, days=10, now=f"{NOW:%Y-%m-%dT%H}:00Z"))
        asyncio.run(_check_hours(dsn))


async def _check_hours(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        hive_id = await _with_correction_and_schedule(conn)
        # besides the demo's curve rows: a legacy row (average, no curve), a row with
        # counts only (no curve, no average) and the unsettled hour with its curve
        await conn.execute(
            """UPDATE hive_occupancy_hourly SET last_at = NULL, area = NULL,
                   last_occupancy = NULL, peak_occupancy = 9, avg_occupancy = 3.3333
               WHERE hive_id = $1 AND hour = $2""", hive_id, _hour(50))
        await conn.execute(
            """UPDATE hive_occupancy_hourly SET last_at = NULL, area = NULL,
                   last_occupancy = NULL, peak_occupancy = 0, avg_occupancy = 0
               WHERE hive_id = $1 AND hour = $2""", hive_id, _hour(51))
        await conn.execute(
            """INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits,
                   peak_occupancy, min_occupancy, last_occupancy, last_at, area)
               VALUES ($1, $2, 7, 2, 8, 1, 5, $3, 4321.5)
               ON CONFLICT (hive_id, hour) DO UPDATE SET last_at = $3, area = 4321.5,
                   last_occupancy = 5""", hive_id, _hour(0), NOW - timedelta(minutes=9))
        hive = await conn.fetchrow(queries.HIVE_VERSION, hive_id)
        for since in (timedelta(hours=30, minutes=15), timedelta(days=9, hours=5)):
            bounds = series.edges(NOW - since, NOW, "1h", zone(hive["timezone"]))
            got = await api._history_body(conn, hive, "1h", bounds, NOW, Bodies(0, 60, 0))
            assert got == await _general(conn, hive, bounds), since
        assert b'"corrected":{' in got and b'"capacity":7,' in got
    finally:
        await conn.close()


def _hour(back: int) -> datetime:
    return NOW.replace(minute=0) - timedelta(hours=back)


async def _general(conn: asyncpg.Connection, hive: asyncpg.Record, bounds: list[int]
                   ) -> bytes:
    lo, hi = (datetime.fromtimestamp(b, UTC) for b in (bounds[0], bounds[-1]))
    rows = await conn.fetch(HOURLY, hive["id"], lo, hi)
    capacities = await conn.fetch(queries.SCHEDULE_IN, hive["id"], lo, hi)
    corrections = await conn.fetch(queries.CORRECTIONS_IN, hive["id"], lo, hi)
    spans = series.correction_spans([tuple(r) for r in corrections])
    ctx = series.Context(zone(hive["timezone"]), NOW.timestamp(), hive["capacity"],
                         [series.Span(*r) for r in capacities], spans)
    return api.ENCODER.encode(History(
        hive["id"], hive["timezone"], "1h", series.iso(bounds[0]) + "Z",
        series.iso(bounds[-1]) + "Z", bool(spans), series.render(bounds, rows, ctx)))


async def _body(conn: asyncpg.Connection, hive_id: int, bucket: str, since: timedelta,
                days: Bodies) -> bytes:
    hive = await conn.fetchrow(queries.HIVE_VERSION, hive_id)
    bounds = series.edges(NOW - since, NOW, bucket, zone(hive["timezone"]))
    return await api._history_body(conn, hive, bucket, bounds, NOW, days)


def _whole_days(since: timedelta) -> int:
    """UTC days wholly inside the window that ended an hour or more before NOW."""
    first = -(-int((NOW - since).timestamp()) // 86400)
    last = int((NOW - api.SETTLED).timestamp()) // 86400
    return last - first


async def _check(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        hive_id = await _with_correction_and_schedule(conn)
        for bucket, since in WINDOWS:
            whole = await _body(conn, hive_id, bucket, since, Bodies(1 << 30, 60, 0))
            days = Bodies(1 << 30, 60, 32 << 20)
            cold = await _body(conn, hive_id, bucket, since, days)
            warm = await _body(conn, hive_id, bucket, since, days)
            assert cold == whole and warm == whole, bucket
            answer = msgspec.json.decode(warm)
            assert answer["has_corrections"] is True
            assert any(b["capacity"] == 7 for b in answer["buckets"])
            assert len(days.items) == _whole_days(since) >= 2
        await _pieces_are_served_until_the_version_changes(conn, hive_id)
    finally:
        await conn.close()


async def _with_correction_and_schedule(conn: asyncpg.Connection) -> int:
    """The hive with the most hourly rows, given a correction and a capacity schedule."""
    hive_id = await conn.fetchval("SELECT hive_id FROM hive_occupancy_hourly "
                                  "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
    await conn.execute(
        """INSERT INTO hive_correction (hive_id, at, day_end, occupancy, previous,
               "offset", reason)
           VALUES ($1, $2, $2::timestamptz + interval '5 hours', 9, 5, 4, 't')""",
        hive_id, NOW - timedelta(days=2, minutes=20))
    await conn.execute(
        """INSERT INTO hive_capacity_schedule (hive_id, during, capacity)
           VALUES ($1, tstzrange($2, $2::timestamptz + interval '27 hours'), 7)""",
        hive_id, NOW - timedelta(days=3, minutes=-10))
    return hive_id


async def _pieces_are_served_until_the_version_changes(conn: asyncpg.Connection,
                                                       hive_id: int) -> None:
    bucket, since = WINDOWS[0]
    days = Bodies(1 << 30, 60, 32 << 20)
    before = await _body(conn, hive_id, bucket, since, days)
    # a late report rewrites a settled hour: the cached day still answers (until the TTL)
    done = await conn.execute(
        """UPDATE hive_occupancy_hourly SET entries = entries + 1000
           WHERE hive_id = $1 AND hour = (SELECT max(hour) FROM hive_occupancy_hourly
                                          WHERE hive_id = $1 AND hour < $2)""",
        hive_id, NOW - timedelta(days=3))
    assert done == "UPDATE 1"
    assert await _body(conn, hive_id, bucket, since, days) == before
    fresh = await _body(conn, hive_id, bucket, since, Bodies(1 << 30, 60, 0))
    assert fresh != before
    # a new correction is a new version of the hive: every day is rendered again
    await conn.execute(
        """INSERT INTO hive_correction (hive_id, at, day_end, occupancy, previous, "offset",
               reason) VALUES ($1, $2, $2::timestamptz + interval '1 hour', 1, 1, 0, 'v')""",
        hive_id, NOW - timedelta(days=20))
    assert await _body(conn, hive_id, bucket, since, days) == fresh
