#!/usr/bin/env python3
"""Insights benchmark: the profile and forecast jobs over many hives, and the
forecast's accuracy against the demo simulator.

1. Job time.  A throw-away database gets --hives hives (a third each in
   Europe/Berlin, America/New_York and Asia/Kolkata, whose :30 offset splits local
   hours) and --weeks weeks of hourly rollups for every hour of every hive (a bar-like
   evening curve plus noise, written by one INSERT ... SELECT, not through ingest).
   Then the profile job (run_profiles: every hive, weeks x 168 hours each) and the
   forecast job (run_forecasts: 24 hours per hive) run --runs times each; printed:
   seconds per run and rows written.  Target (issue 18): the nightly profile job over
   2,000 hives in under a minute.
2. Accuracy (modules.insights.testing.accuracy): --acc-hives hives simulated by the
   demo city's simulator for --acc-weeks weeks + 2 days; the job's forecast at 12
   moments over the last two days against what the simulator produced (mean absolute
   error, people), with the profile alone and the naive "last hour stays" for
   comparison.

    .venv/bin/python bench/insights_bench.py [--hives 2000] [--weeks 8] [--runs 2]
        [--data-weeks 26] [--no-accuracy]
        [--acc-hives 20] [--acc-weeks 8] [--markdown bench/RESULTS.md]

Needs the local Postgres (`scripts/services start`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from occupancy_bench import (  # noqa: E402
    REPORT,
    SERVER_DSN,
    create_database,
    say,
    sql,
    write_markdown,
)

from modules.hives.testing import load_demo  # noqa: E402
from modules.insights import job  # noqa: E402
from modules.insights.testing import accuracy  # noqa: E402

ROLLUPS_SQL = """
INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits, peak_occupancy,
                                   avg_occupancy)
SELECT h.id, g.hour, 0, 0, ceil(v.avg)::int, v.avg
FROM hive h
CROSS JOIN generate_series($1::timestamptz, $2::timestamptz - interval '1 hour',
                           interval '1 hour') g(hour)
CROSS JOIN LATERAL (SELECT greatest(0, h.capacity * 0.5
        * exp(-0.5 * ((extract(hour FROM g.hour AT TIME ZONE h.timezone) - 21) / 2.5) ^ 2)
        + (random() - 0.5) * 6)::real AS avg) v
"""


async def _exec(dsn: str, text: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(text, *args)
    finally:
        await conn.close()


async def job_times(dsn: str, runs: int, weeks: int) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})
    try:
        now = datetime.now(UTC)
        for n in range(runs):
            profile = await job.run_profiles(conn, now, weeks)
            forecast = await job.run_forecasts(conn, now)
            assert profile is not None and forecast is not None
            rows = await conn.fetchval("SELECT count(*) FROM hive_occupancy_profile")
            fc_rows = await conn.fetchval("SELECT count(*) FROM hive_occupancy_forecast")
            say(f"  run {n + 1}: profile of {profile.hives} hives in {profile.seconds:.2f} s "
                f"({rows} profile rows); forecast of {forecast.hives} hives in "
                f"{forecast.seconds:.2f} s ({fc_rows} forecast rows)")
    finally:
        await conn.close()


def bench_jobs(args: argparse.Namespace) -> None:
    data_weeks = args.data_weeks or args.weeks
    say(f"insights jobs: {args.hives} hives, {data_weeks} weeks of hourly rollups each, "
        f"profiles of the last {args.weeks}")
    name, dsn, ids = create_database(args.hives)
    try:
        third = len(ids) // 3
        sql(dsn, "UPDATE hive SET timezone = 'America/New_York' WHERE id = ANY($1::bigint[])",
            ids[third:2 * third])
        sql(dsn, "UPDATE hive SET timezone = 'Asia/Kolkata' WHERE id = ANY($1::bigint[])",
            ids[2 * third:])
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        started = time.monotonic()
        asyncio.run(_exec(dsn, ROLLUPS_SQL, end - timedelta(weeks=data_weeks), end))
        sql(dsn, "ANALYZE hive_occupancy_hourly")
        count = sql(dsn, "SELECT count(*) AS n FROM hive_occupancy_hourly")[0]["n"]
        say(f"  {count} rollup rows written in {time.monotonic() - started:.1f} s")
        asyncio.run(job_times(dsn, args.runs, args.weeks))
    finally:
        sql(SERVER_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_accuracy(args: argparse.Namespace) -> None:
    from modules.database.testing import temporary_database

    async def run() -> dict[str, float]:
        async with temporary_database(SERVER_DSN) as dsn:
            await load_demo(dsn, args.acc_hives)
            conn = await asyncpg.connect(dsn)
            try:
                return await accuracy(conn, hives=args.acc_hives, weeks=args.acc_weeks)
            finally:
                await conn.close()

    say(f"forecast accuracy: the demo simulator, {args.acc_hives} hives (capacity 60, "
        f"kinds in turn), {args.acc_weeks} weeks + 2 days; 12 forecasts 4 h apart, "
        "24 h each")
    got = asyncio.run(run())
    say(f"  {int(got['hours'])} forecast hours; mean occupancy {got['mean_occupancy']:.2f}")
    say(f"  mean absolute error: forecast {got['mae_forecast']:.2f} people "
        f"({got['mae_forecast'] / 60:.1%} of capacity), profile alone "
        f"{got['mae_profile_only']:.2f}, last hour stays {got['mae_persistence']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hives", type=int, default=2000)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--data-weeks", type=int, default=0,
                        help="weeks of rollups in the table (default: --weeks); the job "
                             "still reads --weeks of them")
    parser.add_argument("--no-accuracy", action="store_true", help="only the job times")
    parser.add_argument("--acc-hives", type=int, default=20)
    parser.add_argument("--acc-weeks", type=int, default=8)
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="append the output to FILE (e.g. bench/RESULTS.md)")
    args = parser.parse_args()
    REPORT.clear()
    bench_jobs(args)
    if not args.no_accuracy:
        bench_accuracy(args)
    if args.markdown:
        write_markdown(args.markdown, sys.argv[1:], "Insights jobs and forecast accuracy",
                       "bench/insights_bench.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
