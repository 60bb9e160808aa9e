"""The insights job: profiles (popular times) and forecasts, set-based SQL over all hives.

`run_profiles(conn, end, weeks)` recomputes every hive's weekday x local-hour profile
from the `weeks` weeks of `hive_occupancy_hourly` before `end` (a whole UTC hour);
`run_forecasts(conn, now, ...)` writes the next `horizon` hours of every profiled hive.
Both are one statement each (no loop over hives) and record their run in
`insights_run`, which the workers watch to reload the live `expected_now`.

`serve(ctx)` is the `insights job` process role: it runs the profile every
`insights.profile_interval` and the forecast every `insights.forecast_interval`,
under a transaction-level advisory lock so that several nodes never run one job at
the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

LOCK = 0x494E5347  # advisory lock class of the job ("INSG")

# An hour whose rollup counted people but has no peak (so no average) yet: its average
# is not known (the row was written by ingest, the job that owns the rollup has not
# completed it), so it is left out rather than taken for an empty hour.
UNKNOWN = "coalesce(r.entries + r.exits > 0 AND r.peak_occupancy = 0, false)"

# Every hour of the window for every hive that has rollups (a missing rollup row is an
# empty hour: 0), converted to the hive's local clock, then one ordered-set aggregate
# per hive, weekday and hour.  A hive whose rollups start inside the window is profiled
# from its first rollup hour on (a new hive is not pulled down by weeks it did not exist).
PROFILE_SQL = """
WITH win AS (
    SELECT h.id AS hive_id, h.timezone,
           greatest($1::timestamptz - make_interval(weeks => $2::int),
                    date_trunc('hour', f.first)) AS start
    FROM hive h
    CROSS JOIN LATERAL (SELECT min(r.hour) AS first FROM hive_occupancy_hourly r
                        WHERE r.hive_id = h.id) f
    WHERE f.first < $1::timestamptz
), samples AS (
    SELECT w.hive_id,
           extract(isodow FROM g.hour AT TIME ZONE w.timezone)::smallint AS weekday,
           extract(hour FROM g.hour AT TIME ZONE w.timezone)::smallint AS hour,
           coalesce(r.avg_occupancy, 0)::float8 AS v
    FROM win w
    CROSS JOIN LATERAL generate_series(w.start, $1::timestamptz - interval '1 hour',
                                       interval '1 hour') g(hour)
    LEFT JOIN hive_occupancy_hourly r ON r.hive_id = w.hive_id AND r.hour = g.hour
    WHERE NOT {UNKNOWN}
), stats AS (
    SELECT hive_id, weekday, hour, count(*) AS n, avg(v) AS mean,
           percentile_cont(ARRAY[0.1, 0.5, 0.9]) WITHIN GROUP (ORDER BY v) AS pc
    FROM samples GROUP BY hive_id, weekday, hour
), written AS (
    INSERT INTO hive_occupancy_profile AS p (hive_id, weekday, hour, samples, mean, p10,
                                             p50, p90)
    SELECT hive_id, weekday, hour, least(n, 32767), mean, pc[1], greatest(pc[2], pc[1]),
           greatest(pc[3], pc[2], pc[1])
    FROM stats
    ON CONFLICT (hive_id, weekday, hour) DO UPDATE SET
        samples = excluded.samples, mean = excluded.mean, p10 = excluded.p10,
        p50 = excluded.p50, p90 = excluded.p90
    RETURNING hive_id
), hives AS (
    INSERT INTO hive_insights AS i (hive_id, weeks, profile_at)
    SELECT DISTINCT hive_id, $2::int, $1::timestamptz FROM written
    ON CONFLICT (hive_id) DO UPDATE SET weeks = excluded.weeks,
                                        profile_at = excluded.profile_at
    RETURNING hive_id
)
SELECT count(*) FROM hives
""".replace("{UNKNOWN}", UNKNOWN)

# How today runs: the observed hourly averages of the last `$2` complete hours against
# the profile's means of the same local hours, shrunk towards 1 by a prior of `$5` x
# capacity per hour (a few people more in a quiet hour say little) and bounded to
# [0.25, 4].  The forecast of an hour `k` hours ahead is the profile scaled by
# 1 + (ratio - 1) * exp(-k / tau): today's deviation fades with the horizon.
FORECAST_SQL = """
WITH cur AS (SELECT date_trunc('hour', $1::timestamptz) AS h0),
hv AS (
    SELECT h.id AS hive_id, h.timezone, h.capacity
    FROM hive h JOIN hive_insights i ON i.hive_id = h.id
), recent AS (
    SELECT hv.hive_id, hv.capacity, sum(coalesce(r.avg_occupancy, 0)) AS observed,
           sum(p.mean) AS usual, count(*) AS hours
    FROM hv CROSS JOIN cur
    CROSS JOIN LATERAL generate_series(cur.h0 - make_interval(hours => $2::int),
                                       cur.h0 - interval '1 hour', interval '1 hour') g(hour)
    JOIN hive_occupancy_profile p ON p.hive_id = hv.hive_id
         AND p.weekday = extract(isodow FROM g.hour AT TIME ZONE hv.timezone)::int
         AND p.hour = extract(hour FROM g.hour AT TIME ZONE hv.timezone)::int
    LEFT JOIN hive_occupancy_hourly r ON r.hive_id = hv.hive_id AND r.hour = g.hour
    WHERE NOT {UNKNOWN}
    GROUP BY hv.hive_id, hv.capacity
), ratio AS (
    SELECT hive_id, least(greatest(
               (observed + $5::float8 * capacity * hours)
               / (usual + $5::float8 * capacity * hours), 0.25), 4.0) AS r
    FROM recent
), fc AS (
    SELECT hv.hive_id, g.hour, hv.capacity, p.mean, p.p10, p.p90,
           1 + (coalesce(ratio.r, 1) - 1)
               * exp(-extract(epoch FROM g.hour - cur.h0) / 3600.0 / $4::float8) AS f
    FROM hv CROSS JOIN cur
    CROSS JOIN LATERAL generate_series(cur.h0, cur.h0 + make_interval(hours => $3::int - 1),
                                       interval '1 hour') g(hour)
    JOIN hive_occupancy_profile p ON p.hive_id = hv.hive_id
         AND p.weekday = extract(isodow FROM g.hour AT TIME ZONE hv.timezone)::int
         AND p.hour = extract(hour FROM g.hour AT TIME ZONE hv.timezone)::int
    LEFT JOIN ratio ON ratio.hive_id = hv.hive_id
), expected AS (
    SELECT *, least(mean * f, capacity) AS e FROM fc
), gone AS (
    DELETE FROM hive_occupancy_forecast WHERE hour < (SELECT h0 FROM cur)
), marked AS (
    UPDATE hive_insights i SET forecast_at = $1::timestamptz,
                               today_ratio = coalesce(ratio.r, 1)
    FROM hv LEFT JOIN ratio ON ratio.hive_id = hv.hive_id
    WHERE i.hive_id = hv.hive_id
), written AS (
    INSERT INTO hive_occupancy_forecast AS o (hive_id, hour, usual, expected, low, high)
    SELECT hive_id, hour, mean, e, least(p10 * f, e), greatest(least(p90 * f, capacity), e)
    FROM expected
    ON CONFLICT (hive_id, hour) DO UPDATE SET
        usual = excluded.usual, expected = excluded.expected, low = excluded.low,
        high = excluded.high
    RETURNING hive_id
)
SELECT count(DISTINCT hive_id) FROM written
""".replace("{UNKNOWN}", UNKNOWN)

RECORD_SQL = """
INSERT INTO insights_run (job, finished_at, hives, seconds) VALUES ($1, $2, $3, $4)
ON CONFLICT (job) DO UPDATE SET finished_at = excluded.finished_at,
    hives = excluded.hives, seconds = excluded.seconds
"""

LAST_RUNS_SQL = "SELECT job, finished_at FROM insights_run"


@dataclass(frozen=True)
class Run:
    """What one run of a job did."""

    job: str
    hives: int
    seconds: float


def hour_of(moment: datetime) -> datetime:
    """The whole UTC hour that contains `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _locked(conn: asyncpg.Connection, job: str) -> bool:
    return await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", LOCK,
                               0 if job == "profile" else 1)


async def run_profiles(conn: asyncpg.Connection, end: datetime, weeks: int) -> Run | None:
    """Recompute every hive's profile from the `weeks` weeks before the hour of `end`;
    None when another process holds the job's lock."""
    started = time.monotonic()
    async with conn.transaction():
        if not await _locked(conn, "profile"):
            return None
        hives = await conn.fetchval(PROFILE_SQL, hour_of(end), weeks)
        run = Run("profile", hives, time.monotonic() - started)
        await conn.execute(RECORD_SQL, run.job, end, run.hives, run.seconds)
    return run


@dataclass(frozen=True)
class ForecastSettings:
    horizon: int = 24  # hours
    adjust_hours: int = 6  # complete hours that say how today runs
    damping: float = 3.0  # hours: today's deviation fades as exp(-k / damping)
    prior: float = 0.05  # x capacity per hour: shrinks the ratio towards 1


async def run_forecasts(conn: asyncpg.Connection, now: datetime,
                        settings: ForecastSettings = ForecastSettings()) -> Run | None:
    """Write the next `horizon` hours (from the hour of `now`) of every profiled hive."""
    started = time.monotonic()
    async with conn.transaction():
        if not await _locked(conn, "forecast"):
            return None
        hives = await conn.fetchval(FORECAST_SQL, now, settings.adjust_hours,
                                    settings.horizon, settings.damping, settings.prior)
        run = Run("forecast", hives, time.monotonic() - started)
        await conn.execute(RECORD_SQL, run.job, now, run.hives, run.seconds)
    return run


def forecast_settings(settings: Any) -> ForecastSettings:
    """ForecastSettings from the `insights` config block."""
    return ForecastSettings(24, settings["adjust_hours"], settings["adjust_damping"] / 3600,
                            settings["adjust_prior"] / 100)


class Scheduler:
    """Decides which job is due, from the last runs recorded in the database."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.forecast = forecast_settings(settings)

    async def tick(self, conn: asyncpg.Connection, now: datetime) -> list[Run]:
        last = {r["job"]: r["finished_at"] for r in await conn.fetch(LAST_RUNS_SQL)}
        done = []
        profile_due = timedelta(seconds=self.settings["profile_interval"])
        if last.get("profile") is None or now - last["profile"] >= profile_due:
            run = await run_profiles(conn, now, self.settings["weeks"])
            if run is not None:
                done.append(run)
        forecast_due = timedelta(seconds=self.settings["forecast_interval"])
        if (done or last.get("forecast") is None or now - last["forecast"] >= forecast_due
                or hour_of(last["forecast"]) != hour_of(now)):
            run = await run_forecasts(conn, now, self.forecast)
            if run is not None:
                done.append(run)
        return done


async def connect(config: Any) -> asyncpg.Connection:
    """The job's own connection, with the job's statement timeout."""
    timeout_ms = int(config["insights"]["job_timeout"] * 1000)
    return await asyncpg.connect(config["database"]["dsn"],
                                 timeout=config["database"]["connect_timeout"],
                                 server_settings={"statement_timeout": str(timeout_ms),
                                                  "application_name": "bizzyd insights"})


async def serve(ctx: Any) -> int:
    """The `insights job` process: tick every `insights.check_interval` until a signal."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    settings = ctx.config["insights"]
    scheduler = Scheduler(settings)
    conn: asyncpg.Connection | None = None
    while not stop.done():
        try:
            if conn is None or conn.is_closed():
                conn = await connect(ctx.config)
            for run in await scheduler.tick(conn, datetime.now(UTC)):
                ctx.log.notice("insights: %s of %d hives in %.2fs", run.job, run.hives,
                               run.seconds)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            ctx.log.error("insights: job failed: %s", exc)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            conn = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stop), settings["check_interval"])
    if conn is not None:
        await conn.close()
    return 0


def main(ctx: Any) -> int:
    return asyncio.run(serve(ctx))
