#!/usr/bin/env python3
"""Occupancy history benchmark (issue 18), wrk on loopback, 1 worker, one run:

`GET /v1/hives/{id}/occupancy/history` over one year with bucket=1h (8,760 buckets from
the hourly rollup, about 2 MB of JSON), and over the same year with bucket=1d, served by
bizzyd (modules.analytics) and by the FastAPI + uvicorn peer doing the same work
(bench/peers/analytics_fastapi.py: the same SQL, bucket code and encoder), at 1 and 4
connections; bizzyd without its caches (every request queries and renders, as the
peer) and with them (`analytics.cache_size`: a past window is rendered once per worker
and version; `analytics.day_cache`: whole settled UTC days are rendered once, so a year
up to now renders about a day).  The year ending now ("1h to now": the app's question,
`to` left out) is asked of every server too, and so is that year for one hive of each
time zone in turn ("1h to now, zones").  Goal: one year of hourly history p99 <= 20 ms.

The database: a demo city with a year of rollups (`demo-data --days 365 --hives N`) in a
throw-away database, or --dsn of one already filled.  The hive asked is the one with the
most hourly rows.  The servers run on CPU 0, wrk on CPU 1.

    .venv/bin/python bench/analytics_bench.py [--hives 200] [--duration 8]
        [--dsn postgresql://...] [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from catalogue_bench import (  # noqa: E402
    Server,
    command_line,
    measure,
    new_database,
    script,
    tear_down,
)
from catalogue_bench import bizzyd as catalogue_bizzyd  # noqa: E402
from occupancy_bench import free_port, say, sql, write_markdown  # noqa: E402

from modules.analytics.testing import analytics_locations  # noqa: E402

ROOT = BENCH.parent


def bizzyd(tmp: Path, dsn: str, pin: str | None, cached: bool = True) -> Server:
    """bizzyd with the public analytics endpoints (no modules.auth: the year is free)."""
    caches = {} if cached else {"cache_size": 0, "day_cache": 0}
    return catalogue_bizzyd(tmp, dsn, pin, modules=("modules.analytics",),
                            locations=analytics_locations(signed_in=False),
                            settings={"analytics": {"free_history": "400d", **caches}})


def peer(tmp: Path, dsn: str, pin: str | None) -> Server:
    port = free_port()
    cmd = (["taskset", "-c", pin] if pin else []) + [
        sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH / "peers"),
        "analytics_fastapi:app", "--port", str(port), "--loop", "uvloop", "--http",
        "httptools", "--log-level", "warning", "--no-access-log"]
    return Server(cmd, tmp, {**os.environ, "PEER_DSN": dsn}, port, "/ok", None)


def prepare(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.dsn:
        return args.dsn, None
    from modules.demo_data.generate import generate, parse_args

    dsn, name = new_database()
    started = time.monotonic()
    asyncio.run(generate(parse_args(["--hives", str(args.hives), "--days", "365"], dsn),
                         report=lambda line: None))
    say(f"  demo city of {args.hives} hives with a year of rollups loaded in "
        f"{time.monotonic() - started:.0f} s")
    return dsn, name


def main() -> int:
    args, srv_pin, wrk_pin = command_line(__doc__ or "", 200)
    say(f"analytics benchmark: 1 worker, wrk -t1, {args.duration:g}s per run"
        + (f"; servers on CPU {srv_pin}, wrk on CPU {wrk_pin}" if srv_pin else ""))
    dsn, created = prepare(args)
    tmp = Path(tempfile.mkdtemp(prefix="anabench."))
    servers: list[Server] = []
    try:
        top = sql(dsn, "SELECT hive_id, count(*) AS n, min(hour) AS lo, max(hour) AS hi "
                       "FROM hive_occupancy_hourly GROUP BY 1 ORDER BY 2 DESC LIMIT 1")[0]
        rows = sql(dsn, "SELECT count(*) AS n FROM hive_occupancy_hourly")[0]["n"]
        hives = sql(dsn, "SELECT count(*) AS n FROM hive")[0]["n"]
        end = (top["hi"] + timedelta(hours=1)).astimezone(UTC)
        start = end - timedelta(days=365)
        query = f"from={start:%Y-%m-%dT%H:%MZ}&to={end:%Y-%m-%dT%H:%MZ}"
        history = f"/v1/hives/{top['hive_id']}/occupancy/history"
        year_ago = datetime.now(UTC) - timedelta(days=365)
        since = f"from={year_ago:%Y-%m-%dT%H:%MZ}&bucket=1h"
        paths = {"1h": [f"{history}?{query}&bucket=1h"], "1d": [f"{history}?{query}&bucket=1d"],
                 "1h to now": [f"{history}?{since}"],
                 # one hive per time zone in turn: the day texts of every zone in play
                 "1h to now, zones": [f"/v1/hives/{r['id']}/occupancy/history?{since}" for r in
                                      sql(dsn, "SELECT DISTINCT ON (timezone) id FROM hive "
                                               "ORDER BY timezone, id")]}
        say(f"  {hives} hives, {rows:,} hourly rollup rows; hive {top['hive_id']} has "
            f"{top['n']:,} of them ({top['lo']:%Y-%m-%d} .. {top['hi']:%Y-%m-%d}); "
            f"window {start:%Y-%m-%d} .. {end:%Y-%m-%d}")
        results = {}
        uncached = functools.partial(bizzyd, cached=False)
        for name, start_server in (("bizzyd", uncached), ("FastAPI+uvicorn", peer),
                                   ("bizzyd (caches)", bizzyd)):
            server = start_server(tmp, dsn, srv_pin)
            servers.append(server)
            for bucket, path in paths.items():
                lua = script(tmp, f"{name}-{bucket}".replace("+", "").replace(",", ""), path)
                for c in (1, 4):
                    results[(name, bucket, c)] = measure(
                        f"{name} {bucket} year c={c}", server, path[0], lua, args, wrk_pin, c)
            server.stop()
        for bucket in paths:
            for c in (1, 4):
                b, p = results[("bizzyd", bucket, c)], results[("FastAPI+uvicorn", bucket, c)]
                say(f"  {bucket} c={c}: bizzyd / FastAPI {b['rps'] / p['rps']:.2f} req/s, "
                    f"p99 {b['p99_us'] / 1000:.2f} ms vs {p['p99_us'] / 1000:.2f} ms")
        for name in ("bizzyd", "bizzyd (caches)"):
            for bucket in ("1h", "1h to now", "1h to now, zones"):
                p99 = results[(name, bucket, 1)]["p99_us"] / 1000
                say(f"  {name}: one year of hourly history ({bucket}), 1 connection: "
                    f"p99 {p99:.2f} ms (goal <= 20 ms)")
        if args.markdown:
            write_markdown(args.markdown, sys.argv[1:], "Occupancy history (analytics)",
                           "bench/analytics_bench.py")
        return 0
    finally:
        tear_down(servers, tmp, created)


if __name__ == "__main__":
    sys.exit(main())
