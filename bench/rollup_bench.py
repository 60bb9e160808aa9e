#!/usr/bin/env python3
"""The ingest's rollup write per batch (modules/mqtt_ingest/rollup.py, migration 0009:
5-minute, hourly and local-day levels with the occupancy curve) against the one hourly
entries/exits statement ingest ran before it, on the same batches, alternating, each in
its own transaction, on the local Postgres (a throw-away database with a small demo city,
or --dsn).  What the new levels add to an ingest commit.

    .venv/bin/python bench/rollup_bench.py [--hives 50] [--moves 10] [--rounds 300]
        [--dsn postgresql://...] [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from occupancy_bench import SERVER_DSN, say, sql, write_markdown  # noqa: E402

from modules.hives.testing import load_demo  # noqa: E402
from modules.mqtt_ingest.rollup import Sample, write_rollups  # noqa: E402

# the statement of modules/mqtt_ingest/store.py before migration 0009
HOURLY_ONLY = """
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[])
        AS u(h, hr, e, x)),
updated AS (
    UPDATE hive_occupancy_hourly o
    SET entries = greatest(o.entries + u.e, 0), exits = greatest(o.exits + u.x, 0),
        updated_at = now()
    FROM u WHERE o.hive_id = u.h AND o.hour = u.hr
    RETURNING o.hive_id, o.hour)
INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits)
SELECT h, hr, greatest(e, 0), greatest(x, 0) FROM u
WHERE NOT EXISTS (SELECT 1 FROM updated d WHERE d.hive_id = u.h AND d.hour = u.hr)
"""


class Move:
    __slots__ = ("at", "delta_in", "delta_out", "hive_id")

    def __init__(self, hive_id: int, at: datetime) -> None:
        self.hive_id, self.at, self.delta_in, self.delta_out = hive_id, at, 1, 0


async def hourly_only(conn: asyncpg.Connection, moves: list[Move]) -> None:
    cells: dict[tuple[int, datetime], list[int]] = {}
    for m in moves:
        cells.setdefault((m.hive_id, m.at.replace(minute=0, second=0, microsecond=0)),
                         [0, 0])[0] += m.delta_in
    items = sorted(cells.items())
    await conn.execute(HOURLY_ONLY, [h for (h, _), _ in items], [t for (_, t), _ in items],
                       [v[0] for _, v in items], [v[1] for _, v in items])


async def run(dsn: str, hives: int, per: int, rounds: int) -> dict[str, list[float]]:
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM hive ORDER BY id LIMIT $1",
                                              hives)]
        tz = ZoneInfo("Europe/Berlin")
        times: dict[str, list[float]] = {"hourly only (before)": [], "three levels": []}
        base = datetime.now(UTC).replace(microsecond=0)
        for r in range(rounds):
            now = base + timedelta(seconds=2 * r)
            moves = [Move(h, now - timedelta(seconds=k)) for h in ids for k in range(per)]
            samples = [Sample(h, tz, 3, 3 + per, now) for h in ids]
            order = list(times) if r % 2 else list(reversed(times))
            for kind in order:
                started = time.perf_counter()
                async with conn.transaction():
                    if kind == "three levels":
                        await write_rollups(conn, moves, samples)
                    else:
                        await hourly_only(conn, moves)
                times[kind].append((time.perf_counter() - started) * 1000)
        return times
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hives", type=int, default=50)
    parser.add_argument("--moves", type=int, default=10, help="moves per hive and batch")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--dsn")
    parser.add_argument("--markdown", type=Path, metavar="FILE")
    args = parser.parse_args()
    dsn, created = args.dsn, None
    if dsn is None:
        created = f"bizzyd_bench_{secrets.token_hex(4)}"
        sql(SERVER_DSN, f'CREATE DATABASE "{created}"')
        dsn = urlunsplit(urlsplit(SERVER_DSN)._replace(path="/" + created))
        asyncio.run(load_demo(dsn, args.hives))
    try:
        say(f"rollup write per ingest batch: {args.hives} hives x {args.moves} moves "
            f"({args.hives * args.moves} messages), {args.rounds} batches each, alternating")
        times = asyncio.run(run(dsn, args.hives, args.moves, args.rounds))
        for kind, values in times.items():
            values.sort()
            say(f"  {kind:22s} median {statistics.median(values):6.2f} ms, p90 "
                f"{values[int(len(values) * 0.9)]:6.2f} ms per batch, "
                f"{statistics.median(values) * 1000 / (args.hives * args.moves):5.1f} µs "
                "per message (median)")
        extra = (statistics.median(times["three levels"])
                 - statistics.median(times["hourly only (before)"]))
        say(f"  the three levels add {extra:.2f} ms per batch, "
            f"{extra * 1000 / (args.hives * args.moves):.1f} µs per message")
        if args.markdown:
            write_markdown(args.markdown, sys.argv[1:], "Ingest rollup write (analytics)",
                           "bench/rollup_bench.py")
        return 0
    finally:
        if created:
            sql(SERVER_DSN, f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
