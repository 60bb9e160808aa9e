#!/usr/bin/env python3
"""KPI benchmark (issue 18), wrk on loopback, 1 worker, one run:

`GET /v1/accounts/{id}/kpis?from=..&to=..` over the 50 hives of one account and 90
days (the default comparison is the 90 days before, so 180 days of the hourly rollup
are read: 216,000 rows, plus app usage and favourites), signed in as a viewer of the
account (RS256 tokens verified once by firebase-admin against a local stand-in for
Google's certificate endpoint, then cached), one call at a time (wrk -c1: the latency of
a call; goal: p99 <= 100 ms) and at --connections connections (under load).  Then the
same on the FastAPI + uvicorn peer (bench/peers/kpis_fastapi.py:
the same verifier, membership query and report function), and the EXPLAIN ANALYZE of
the report's four queries.

The database: a demo city of --hives hives (`demo-data --days 1`), then 180 days of
hourly rollups, app usage and favourites for 50 of its hives, moved into one account
(written directly with generate_series, as `demo-data` writes history).  The server
runs on CPU 0, wrk on CPU 1.

    .venv/bin/python bench/kpis_bench.py [--hives 100] [--duration 8] [--connections 4]
        [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from catalogue_bench import Server, command_line, measure, prepare, tear_down  # noqa: E402
from occupancy_bench import (  # noqa: E402
    MEMCACHED,
    WRK_DONE,
    free_port,
    say,
    sql,
    write_markdown,
)
from users_bench import PROJECT, WRK_TOKENS, peer, warm  # noqa: E402

from modules.auth.testing import KeyPair, certs_server  # noqa: E402
from modules.kpis.testing import kpis_locations  # noqa: E402

ROOT = BENCH.parent
HIVES, DAYS = 50, 90
FILL = """
WITH h AS (SELECT id FROM hive ORDER BY id LIMIT $1),
     t AS (SELECT g AS hour FROM generate_series($2::timestamptz - make_interval(days => $3),
                                                 $2::timestamptz - interval '1 hour',
                                                 interval '1 hour') AS g),
     r AS (SELECT h.id, t.hour,
                  (abs(hashint8(h.id * 100003 + extract(epoch FROM t.hour)::bigint)) % 40)
                      AS n
           FROM h, t)
INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits, peak_occupancy,
                                   avg_occupancy)
SELECT id, hour, n, n, n + 5, n / 2.0 FROM r"""
USAGE = """
INSERT INTO hive_usage_hourly (hive_id, hour, detail_views, search_impressions, deal_opens)
SELECT hive_id, hour, entries % 7, entries, entries % 3 FROM hive_occupancy_hourly
WHERE hive_id = ANY($1::bigint[]) AND entries % 4 = 0
ON CONFLICT DO NOTHING"""


def fill(dsn: str, anchor: dt.datetime) -> tuple[int, list[int]]:
    """50 hives in one new account with 2 x 90 days of rollups: (account, hive ids)."""
    started = time.monotonic()
    ids = [r["id"] for r in sql(dsn, "SELECT id FROM hive ORDER BY id LIMIT $1", HIVES)]
    account = sql(dsn, "INSERT INTO account (name) VALUES ('KPI bench') RETURNING id")[0]["id"]
    sql(dsn, "UPDATE hive SET account_id = $1 WHERE id = ANY($2::bigint[])", account, ids)
    sql(dsn, "DELETE FROM hive_occupancy_hourly WHERE hive_id = ANY($1::bigint[])", ids)
    sql(dsn, FILL, HIVES, anchor, 2 * DAYS)
    sql(dsn, USAGE, ids)
    sql(dsn, "ANALYZE hive_occupancy_hourly")
    sql(dsn, "ANALYZE hive_usage_hourly")
    rows = sql(dsn, "SELECT count(*) AS n FROM hive_occupancy_hourly "
                    "WHERE hive_id = ANY($1::bigint[])", ids)[0]["n"]
    say(f"  {rows:,} hourly rollup rows for {HIVES} hives in account {account}, "
        f"written in {time.monotonic() - started:.1f} s")
    return account, ids


def bizzyd(tmp: Path, dsn: str, pin: str | None, certs_url: str) -> Server:
    port = free_port()
    prefix = tmp / f"bizzyd-{port}"
    (prefix / "conf").mkdir(parents=True)
    config = {
        "modules": ["modules.database", "modules.occupancy", "modules.api", "modules.hives",
                    "modules.auth", "modules.users", "modules.business", "modules.kpis"],
        "worker_processes": 1,
        "error_log": "logs/error.log",
        "error_log_level": "info",
        "fast_shutdown_timeout": "2s",
        "database": {"dsn": dsn},
        "occupancy": {"memcached": MEMCACHED},
        "api": {"memcached": MEMCACHED, "memcached_prefix": f"k{secrets.token_hex(3)}:"},
        "firebase": {"project_id": PROJECT, "certs_url": certs_url},
        "business": {"images_dir": str(prefix / "images")},
        "http": {"servers": [{
            "listen": [f"127.0.0.1:{port}"],
            "locations": [{"location": "= /ok", "return": [200, '{"ok":true}']},
                          {"location": "= /v1/me", "content": "me", "auth": "required"},
                          *kpis_locations()],
        }]},
    }
    (prefix / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(config))
    cmd = (["taskset", "-c", pin] if pin else []) + [
        sys.executable, "-m", "bizzyd", "-p", str(prefix), "-c", str(prefix / "conf/bizzyd.yaml")]
    env = {k: v for k, v in os.environ.items() if k != "FIREBASE_AUTH_EMULATOR_HOST"}
    env["PYTHONPATH"] = str(ROOT)
    return Server(cmd, prefix, env, port, "/ok", "bizzyd: worker process")


def explain(dsn: str, ids: list[int], bounds: tuple) -> None:
    from modules.kpis import queries
    from modules.kpis.hours import LocalHours

    zones = {r["id"]: r["timezone"] for r in sql(dsn, "SELECT id, timezone FROM hive "
                                                      "WHERE id = ANY($1::bigint[])", ids)}
    hours = LocalHours(zones.values(), bounds[0], bounds[1])
    runs = {"the period's rollup by local hour": (queries.OCCUPANCY, ids, *bounds[:2],
                                                  hours.thresholds, *hours.shifts(zones)),
            "the comparison period's rollup": (queries.OCCUPANCY_TOTALS, ids, *bounds[2:]),
            "app usage": (queries.USAGE, ids, *bounds),
            "favourites": (queries.FAVOURITES, ids, *bounds)}

    async def run(query: str, *args: object) -> list:
        import asyncpg
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query, *args)
        finally:
            await conn.close()
    for what, (query, *args) in runs.items():
        say(f"  EXPLAIN ANALYZE of {what} ({HIVES} hives, {DAYS} days; the call runs "
            "the four at once):")
        for row in asyncio.run(run(query, *args)):
            say("    " + row[0])


def main() -> int:
    args, srv_pin, wrk_pin = command_line(__doc__ or "", 100,
                                          connections={"type": int, "default": 4})
    say(f"KPI benchmark: 1 worker, wrk -t1 -c1 and -c{args.connections}, "
        f"{args.duration:g}s per run"
        + (f"; server on CPU {srv_pin}, wrk on CPU {wrk_pin}" if srv_pin else ""))
    dsn, created = prepare(args)
    tmp = Path(tempfile.mkdtemp(prefix="kpisbench."))
    key = KeyPair("bench")
    server = None
    try:
        to = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        start = to - dt.timedelta(days=DAYS)
        account, ids = fill(dsn, to)
        path = (f"/v1/accounts/{account}/kpis?from={start:%Y-%m-%dT%H:%M:%SZ}"
                f"&to={to:%Y-%m-%dT%H:%M:%SZ}")
        with certs_server(key) as url:
            server = bizzyd(tmp, dsn, srv_pin, url)
            uid = f"kpi-bench-{secrets.token_hex(4)}"
            tokens = [key.token(PROJECT, uid)]
            warm(server.port, tokens)  # enrols the user: now a viewer of the account
            sql(dsn, "INSERT INTO account_member (account_id, user_id, member_role) "
                     "SELECT $1, id, 'viewer' FROM app_user WHERE firebase_uid = $2",
                account, uid)
            lua = tmp / "kpis.lua"
            lua.write_text(WRK_TOKENS % {"tokens": json.dumps(tokens[0]), "path": path}
                           + WRK_DONE)
            say(f"\n  {path}")
            ours = [measure("bizzyd kpis (50 hives, 90 days)", server, "/", lua, args,
                            wrk_pin, c) for c in (1, args.connections)]
            server.stop()
            server = peer(tmp, dsn, srv_pin, url, "kpis_fastapi:app")
            theirs = [measure("FastAPI+uvicorn kpis (same report)", server, "/", lua, args,
                              wrk_pin, c) for c in (1, args.connections)]
        p99 = ours[0]["p99_us"] / 1000
        say(f"  bizzyd p99 of a call {p99:.1f} ms (goal <= 100 ms): "
            f"{'MET' if p99 <= 100 else 'NOT MET'}; "
            f"FastAPI peer {theirs[0]['p99_us'] / 1000:.1f} ms")
        for c, mine, peers in zip((1, args.connections), ours, theirs, strict=True):
            say(f"  c={c}: bizzyd / FastAPI {mine['rps'] / peers['rps']:.2f}x "
                f"the req/s, {peers['cpu_us'] / mine['cpu_us']:.2f}x less worker CPU "
                "per call (Postgres not counted)")
        explain(dsn, ids, (start, to, start - (to - start), start))
        if args.markdown:
            write_markdown(args.markdown, sys.argv[1:], "KPI API", "bench/kpis_bench.py")
        return 0
    finally:
        tear_down([server] if server is not None else [], tmp, created)


if __name__ == "__main__":
    sys.exit(main())
