#!/usr/bin/env python3
"""Catalogue API benchmark (issue 15), wrk on loopback, 1 worker, one run:

1. `GET /v1/hives/{id}` served from the cache (100 hives, warmed), against the
   `return 200` location of the same bizzyd (goal >= 0.5 of its req/s) and against
   the FastAPI + uvicorn peer (bench/peers/catalogue_fastapi.py: same data, SQL,
   encoder and caching; goal: bizzyd >= 3x its req/s).  Also bizzyd with its local
   table off (every hit a memcached get).
2. `near` search, 20 nearest of --hives hives with a type filter, cache off: p50/p99 at
   32 connections (goal p99 <= 10 ms), and the EXPLAIN ANALYZE of its query.
3. The detail read with memcached down (a closed port): req/s from Postgres.

The database: a demo city of --hives hives (`demo-data --days 1`) in a throw-away
database, or --dsn of one already filled.  The servers run on CPU 0, wrk on CPU 1.

    .venv/bin/python bench/catalogue_bench.py [--hives 10000] [--duration 8]
        [--dsn postgresql://...] [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from occupancy_bench import (  # noqa: E402
    CLK_TCK,
    MEMCACHED,
    SERVER_DSN,
    WRK_DONE,
    children,
    cpu_ticks,
    free_port,
    get,
    say,
    sql,
    write_markdown,
    wrk,
)

from modules.hives.testing import catalogue_locations, load_demo  # noqa: E402

ROOT = BENCH.parent
WRK_PATHS = r"""
local paths = {%(paths)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, paths[(n %% #paths) + 1])
end
"""
BERLIN = (52.47, 13.30, 52.56, 13.50)  # south, west, north, east


class Server:
    """A server process pinned to a CPU, stopped at the end."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], port: int,
                 ready_path: str, title: str | None) -> None:
        self.port, self.title = port, title
        self.log = cwd / f"server-{port}.log"
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, ready_path)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"server on {port} did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def worker(self) -> int:
        if self.title is None:
            return self.proc.pid
        return children(self.proc.pid, self.title)[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bizzyd(tmp: Path, dsn: str, pin: str | None, modules: tuple[str, ...] = ("modules.hives",),
           locations: list[dict] | None = None, settings: dict | None = None,
           **api: object) -> Server:
    """A 1-worker bizzyd with the catalogue (or `modules` with their `locations` and
    config blocks `settings`), `api` settings on top of the defaults."""
    port = free_port()
    prefix = tmp / f"bizzyd-{port}"
    (prefix / "conf").mkdir(parents=True)
    config = {
        "modules": ["modules.database", "modules.status", "modules.occupancy", "modules.api",
                    *modules],
        "worker_processes": 1,
        "error_log": "logs/error.log",
        "error_log_level": "info",
        "fast_shutdown_timeout": "2s",
        "database": {"dsn": dsn},
        "occupancy": {"memcached": MEMCACHED},
        "api": {"memcached": MEMCACHED, "memcached_prefix": f"b{secrets.token_hex(3)}:", **api},
        **(settings or {}),
        "http": {"servers": [{
            "listen": [f"127.0.0.1:{port}"],
            "locations": [{"location": "= /ok", "return": [200, '{"ok":true}']},
                          {"location": "= /metrics", "content": "metrics"},
                          *(catalogue_locations(filters=False) if locations is None
                            else locations)],
        }]},
    }
    (prefix / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(config))
    cmd = (["taskset", "-c", pin] if pin else []) + [
        sys.executable, "-m", "bizzyd", "-p", str(prefix), "-c", str(prefix / "conf/bizzyd.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = Server(cmd, prefix, env, port, "/ok", "bizzyd: worker process")
    if "modules.hives" not in modules:
        return server
    log = prefix / "logs" / "error.log"
    deadline = time.monotonic() + 20
    while "versions: listening" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise SystemExit("the catalogue versions listener did not start")
        time.sleep(0.1)
    return server


def peer(tmp: Path, dsn: str, pin: str | None) -> Server:
    port = free_port()
    cmd = (["taskset", "-c", pin] if pin else []) + [
        sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH / "peers"),
        "catalogue_fastapi:app", "--port", str(port), "--loop", "uvloop", "--http",
        "httptools", "--log-level", "warning", "--no-access-log"]
    env = {**os.environ, "PEER_DSN": dsn, "PEER_MEMCACHED": MEMCACHED}
    return Server(cmd, tmp, env, port, "/ok", None)


def script(tmp: Path, name: str, paths: list[str]) -> Path:
    path = tmp / f"{name}.lua"
    path.write_text(WRK_PATHS % {"paths": ",".join(json.dumps(p) for p in paths)} + WRK_DONE)
    return path


def measure(label: str, server: Server, path: str, lua: Path, args: argparse.Namespace,
            pin: str | None, connections: int = 64) -> dict:
    if args.warmup:
        wrk(server.port, path, args.warmup, lua, pin, connections)
    worker = server.worker()
    before = cpu_ticks(worker)
    r = wrk(server.port, path, args.duration, lua, pin, connections)
    r["cpu_us"] = (cpu_ticks(worker) - before) / CLK_TCK * 1e6 / max(1, r["requests"])
    if r["errors"] or r["status"]:
        raise SystemExit(f"{label}: {r['errors']} socket errors, {r['status']} non-2xx")
    if server.title is not None:  # bizzyd: what its cache did
        text = get(server.port, "/metrics")[1].decode()
        counts = dict(re.findall(r"^bizzyd_api_(\w+)_total (\d+)$", text, re.M))
        r["cache"] = " ".join(f"{k}={v}" for k, v in counts.items() if v != "0")
    say(f"  {label:34s} {r['rps']:8.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
        f"p99 {r['p99_us'] / 1000:6.2f} ms  worker CPU {r['cpu_us']:6.1f} µs/req  "
        f"(c={connections})" + (f"\n      cache: {r['cache']}" if r.get("cache") else ""))
    return r


def explain(dsn: str, lat: float, lon: float) -> None:
    from modules.hives.api import KNN_FIRST, SEARCH_SETTING, _list_sql

    params = {"q": None, "type": ["bar"], "zip": None, "city": None, "near": (lat, lon),
              "radius": 5000, "bbox": None, "max_occupancy": None, "has_deal": None,
              "sort": "distance", "limit": 20}
    q = _list_sql(params, None, KNN_FIRST)

    async def run() -> list:
        import asyncpg
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SEARCH_SETTING)
            return await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + q.text, *q.args)
        finally:
            await conn.close()
    say("  EXPLAIN ANALYZE of the near search (type=bar, 20 nearest within 5 km):")
    for row in asyncio.run(run()):
        say("    " + row[0])


def prepare(args: argparse.Namespace) -> tuple[str, str | None]:
    """The database: --dsn, or a new one with a demo city (dropped at the end)."""
    if args.dsn:
        return args.dsn, None
    dsn, name = new_database()
    started = time.monotonic()
    asyncio.run(load_demo(dsn, args.hives, days=1))
    say(f"  demo city of {args.hives} hives loaded in {time.monotonic() - started:.0f} s")
    return dsn, name


def new_database() -> tuple[str, str]:
    """A new empty database on the local server: its DSN and name."""
    name = f"bizzyd_bench_{secrets.token_hex(4)}"
    sql(SERVER_DSN, f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(SERVER_DSN)._replace(path="/" + name)), name


def command_line(doc: str, hives: int, **extra: dict) -> tuple[argparse.Namespace, str | None,
                                                                str | None]:
    """The API benchmarks' shared options (and `extra` ones, name: add_argument keywords),
    checked for wrk; with the CPUs the server and wrk are pinned to (None without)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--hives", type=int, default=hives)
    for name, options in extra.items():
        parser.add_argument(f"--{name}", **options)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--dsn", help="a database already holding a demo city")
    parser.add_argument("--markdown", type=Path, metavar="FILE")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (scripts/install-deps bench)")
    pinned = (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    return (args, "0", "1") if pinned else (args, None, None)


def main() -> int:
    args, srv_pin, wrk_pin = command_line(__doc__ or "", 10000)
    say(f"catalogue benchmark: 1 worker, wrk -t1, {args.duration:g}s per run"
        + (f"; servers on CPU {srv_pin}, wrk on CPU {wrk_pin}" if srv_pin else ""))
    dsn, created = prepare(args)
    tmp = Path(tempfile.mkdtemp(prefix="catbench."))
    servers: list[Server] = []
    try:
        ids = [r["id"] for r in sql(dsn, "SELECT h.id FROM hive h JOIN hive_status s ON "
                                         "s.id = h.status_id WHERE s.listed ORDER BY h.id "
                                         "LIMIT 100")]
        count = sql(dsn, "SELECT count(*) AS n FROM hive")[0]["n"]
        detail = script(tmp, "detail", [f"/v1/hives/{i}" for i in ids])
        ok = script(tmp, "ok", ["/ok"])
        rng = random.Random(15)
        near_paths = [f"/v1/hives?near={rng.uniform(BERLIN[0], BERLIN[2]):.5f},"
                      f"{rng.uniform(BERLIN[1], BERLIN[3]):.5f}&type=bar&limit=20"
                      for _ in range(500)]
        near = script(tmp, "near", near_paths)
        say(f"  {count} hives in the database; detail runs cycle over {len(ids)} hives "
            "(warmed), near runs over 500 points in Berlin")
        say("\n1. GET /v1/hives/{id} from the cache")
        b = bizzyd(tmp, dsn, srv_pin)
        servers.append(b)
        base = measure("bizzyd return 200", b, "/ok", ok, args, wrk_pin)
        hit = measure("bizzyd detail (local table)", b, "/v1/hives/1", detail, args, wrk_pin)
        b.stop()
        b = bizzyd(tmp, dsn, srv_pin, local_cache_size=0)
        servers.append(b)
        mc = measure("bizzyd detail (memcached hit)", b, "/v1/hives/1", detail, args, wrk_pin)
        b.stop()
        p = peer(tmp, dsn, srv_pin)
        servers.append(p)
        fast = measure("FastAPI+uvicorn detail (same cache)", p, "/v1/hives/1", detail, args,
                       wrk_pin)
        p.stop()
        say(f"  ratio detail / return 200: {hit['rps'] / base['rps']:.2f} req/s, "
            f"{base['cpu_us'] / hit['cpu_us']:.2f} by worker CPU per request (goal >= 0.5)")
        say(f"  ratio bizzyd / FastAPI: {hit['rps'] / fast['rps']:.2f} req/s, "
            f"{fast['cpu_us'] / hit['cpu_us']:.2f} by CPU per request (goal >= 3); "
            f"memcached-only bizzyd / FastAPI: {mc['rps'] / fast['rps']:.2f} req/s, "
            f"{fast['cpu_us'] / mc['cpu_us']:.2f} by CPU")
        say(f"\n2. near search, 20 nearest bars of {count} hives, cache off")
        b = bizzyd(tmp, dsn, srv_pin, memcached="", local_cache_size=0)
        servers.append(b)
        n = measure("bizzyd near search (Postgres)", b, near_paths[0], near, args, wrk_pin, 32)
        b.stop()
        say(f"  p99 {n['p99_us'] / 1000:.2f} ms (goal <= 10 ms)")
        explain(dsn, 52.52, 13.405)
        say("\n3. memcached down (a closed port): detail from Postgres")
        b = bizzyd(tmp, dsn, srv_pin, memcached=f"127.0.0.1:{free_port()}", local_cache_size=0)
        servers.append(b)
        measure("bizzyd detail (memcached down)", b, "/v1/hives/1", detail, args, wrk_pin)
        if args.markdown:
            write_markdown(args.markdown, sys.argv[1:], "Catalogue API",
                           "bench/catalogue_bench.py")
        return 0
    finally:
        tear_down(servers, tmp, created)


def tear_down(servers: list, tmp: Path, created: str | None) -> None:
    """After a run: stop the servers, remove their prefix, drop the database it made."""
    for s in servers:
        s.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    if created:
        sql(SERVER_DSN, f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
