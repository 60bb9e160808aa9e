#!/usr/bin/env python3
"""Occupancy endpoint benchmark: `GET /v1/hives/{id}/occupancy` against a `return 200`
location of the same bizzyd, with wrk on loopback.

One bizzyd (1 worker, modules database + occupancy) is started in a temporary
prefix against a throw-away database (created on the local Postgres, migrated,
filled with --hives hives, dropped at the end).  Once the cache loader has filled
the occupancy zone, each location is warmed up and then measured with
`wrk -t1 -c64 -d<duration>s` (the server pinned to CPU 0, wrk to CPU 1 when the
machine has two or more), alternating the two locations for --rounds rounds.

Printed: requests/s of each, the ratio occupancy / return (target >= 0.8), p50/p99
latency, and the worker's CPU time per request (from /proc, utime+stime).

    .venv/bin/python bench/occupancy_bench.py [--duration 10] [--rounds 1]
        [--hives 1000] [--spread]     # --spread: every request another hive (Lua)
        [--baseline]                  # also a constant-answer content handler
        [--insights]                  # with modules.insights: expected_now, vs_usual

Needs the local services (`scripts/services start`) and wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.database.migrate import up  # noqa: E402

SERVER_DSN = os.environ.get("BIZZYD_PG_DSN", "postgresql://postgres@127.0.0.1:25432/bizzyd")
MEMCACHED = os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211")
TARGET = 0.8
CLK_TCK = os.sysconf("SC_CLK_TCK")
OK_BODY = '{"ok":true}'

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT {\"requests\":%d,\"duration_us\":%d,\"errors\":%d,\"status\":%d,"
    .. "\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
"""

WRK_SPREAD = r"""
local ids = {%(ids)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/hives/" .. ids[(n %% #ids) + 1] .. "/occupancy")
end
"""


REPORT: list[str] = []  # what was printed, for --markdown


def say(message: str = "") -> None:
    print(message, flush=True)
    REPORT.append(message)


def progress(message: str) -> None:
    say(f"  {message}")


def write_markdown(path: Path, argv: list[str], title: str = "Occupancy endpoint",
                   script: str = "bench/occupancy_bench.py") -> None:
    """Append this run's output to a results file, with the date and the machine."""
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    head = (f"\n## {title}, {time.strftime('%Y-%m-%d %H:%M')} (git {rev})\n\n"
            f"`{script} {' '.join(argv)}`; {os.cpu_count()} CPUs, "
            f"load average at the end {load}.\n\n```\n")
    with path.open("a") as out:
        out.write(head + "\n".join(REPORT).strip("\n") + "\n```\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _sql(dsn: str, text: str, *args):
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(text, *args)
    finally:
        await conn.close()


def sql(dsn: str, text: str, *args):
    return asyncio.run(_sql(dsn, text, *args))


def create_database(hives: int) -> tuple[str, str, list[int]]:
    name = f"bizzyd_bench_{secrets.token_hex(4)}"
    sql(SERVER_DSN, f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(SERVER_DSN)._replace(path="/" + name))
    asyncio.run(up(dsn, report=lambda line: None))
    rows = sql(dsn, """
        WITH acc AS (INSERT INTO account (name) VALUES ('bench') RETURNING id),
        addr AS (INSERT INTO address (street, city, country)
                 SELECT 'Street ' || g, 'City', 'DE' FROM generate_series(1, $1) g
                 RETURNING id)
        INSERT INTO hive (account_id, address_id, hive_type_id, status_id, name, timezone,
                          capacity)
        SELECT (SELECT id FROM acc), addr.id, (SELECT id FROM hive_type WHERE code = 'bar'),
               (SELECT id FROM hive_status WHERE code = 'active'), 'Hive ' || addr.id,
               'Europe/Berlin', 120
        FROM addr RETURNING id""", hives)
    ids = sorted(r["id"] for r in rows)
    sql(dsn, """INSERT INTO hive_occupancy (hive_id, occupancy, total_in, total_out)
                SELECT id, id % 100, 5000 + id % 100, 5000 FROM unnest($1::bigint[]) id""",
        ids)
    return name, dsn, ids


NOOP_MODULE = """
from bizzyd.http.engine import server_header
from bizzyd.http.response import StaticResponse
from bizzyd.module import Module

ANSWER = StaticResponse(200, b'{"ok":true}', "application/json", server_header(True))

module = Module(name="bench_noop", content_handlers={"bench_noop": lambda request: ANSWER})
"""


def add_forecasts(dsn: str, ids: list[int]) -> None:
    """A forecast row of the current and the next hour for every hive (as the insights
    job writes them), so that every occupancy object carries expected_now/vs_usual."""
    sql(dsn, """
        INSERT INTO hive_occupancy_forecast (hive_id, hour, usual, expected, low, high)
        SELECT id, date_trunc('hour', now()) + k * interval '1 hour', id % 60, id % 70, 0, 100
        FROM unnest($1::bigint[]) id, generate_series(0, 1) k""", ids)
    sql(dsn, "INSERT INTO insights_run VALUES ('forecast', now(), $1, 0)", len(ids))


def config(port: int, dsn: str, insights: bool = False) -> dict:
    extra = {"insights": {"job": False}} if insights else {}
    return {
        **extra,
        "modules": ["modules.database", "modules.occupancy", "bench_noop",
                    *(["modules.insights"] if insights else [])],
        "worker_processes": 1,
        "error_log": "logs/error.log",
        "error_log_level": "notice",
        "fast_shutdown_timeout": "2s",
        "database": {"dsn": dsn},
        "occupancy": {"memcached": MEMCACHED},
        "http": {"servers": [{
            "listen": [f"127.0.0.1:{port}"],
            "locations": [
                {"location": "= /ok", "return": [200, OK_BODY]},
                {"location": "~ ^/noop/(?<id>[0-9]+)$", "content": "bench_noop"},
                {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy$", "content": "occupancy"},
                {"location": "= /health", "return": [200, OK_BODY]},
            ],
        }]},
    }


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def children(pid: int, title: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and cmd.startswith(title):
            out.append(int(entry.name))
    return out


def get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def wrk(port: int, path: str, seconds: float, script: Path, pin: str | None,
        connections: int = 64) -> dict:
    cmd = (["taskset", "-c", pin] if pin else []) + [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCH-RESULT (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        raise SystemExit(f"wrk failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hives", type=int, default=1000)
    parser.add_argument("--baseline", action="store_true",
                        help="also measure a content handler that returns a constant "
                             "pre-rendered response (the core's own per-handler cost)")
    parser.add_argument("--spread", action="store_true",
                        help="each request asks another hive (wrk Lua), not one hive")
    parser.add_argument("--insights", action="store_true",
                        help="load modules.insights (its expected_now and vs_usual in "
                             "every occupancy object), with a forecast for every hive")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="append the output to FILE (e.g. bench/RESULTS.md)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (scripts/install-deps bench)")
    two_cpus = (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    server_pin, wrk_pin = ("0", "1") if two_cpus else (None, None)
    say(f"occupancy benchmark: 1 worker, wrk -t1 -c64, {args.duration:g}s per run, "
          f"{args.rounds} round(s), {args.hives} hives"
          + (", spread over all hives" if args.spread else ", one hive")
          + (", with modules.insights" if args.insights else "")
          + (f"; server on CPU {server_pin}, wrk on CPU {wrk_pin}" if two_cpus else ""))
    name, dsn, ids = create_database(args.hives)
    if args.insights:
        add_forecasts(dsn, ids)
    tmp = Path(tempfile.mkdtemp(prefix="occbench."))
    proc = None
    try:
        port = free_port()
        (tmp / "conf").mkdir()
        (tmp / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(config(port, dsn, args.insights)))
        (tmp / "site").mkdir()
        (tmp / "site" / "bench_noop.py").write_text(NOOP_MODULE)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp / 'site'}"}
        cmd = (["taskset", "-c", server_pin] if server_pin else []) + [
            sys.executable, "-m", "bizzyd", "-p", str(tmp), "-c", str(tmp / "conf/bizzyd.yaml")]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=open(tmp / "stderr.log", "wb"))  # noqa: SIM115
        hive = ids[len(ids) // 2]
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = get(port, f"/v1/hives/{hive}/occupancy")
                data = json.loads(body) if status == 200 else {}
                if data.get("source") == "zone" and (
                        not args.insights or data.get("expected_now") is not None):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("bizzyd did not serve the zone:\n"
                                 + (tmp / "stderr.log").read_text()
                                 + (tmp / "logs/error.log").read_text())
            time.sleep(0.1)
        [worker] = children(proc.pid, "bizzyd: worker process")
        say(f"  sample: {body.decode().strip()}")
        done = tmp / "done.lua"
        done.write_text(WRK_DONE)
        spread = tmp / "spread.lua"
        spread.write_text(WRK_SPREAD % {"ids": ",".join(map(str, ids))} + WRK_DONE)
        runs = {"return 200": ("/ok", done),
                "occupancy": (f"/v1/hives/{hive}/occupancy", spread if args.spread else done)}
        if args.baseline:  # the core's cost of any content handler: a constant answer
            runs["noop"] = (f"/noop/{hive}", done)
        totals = {k: {"requests": 0, "seconds": 0.0, "ticks": 0, "p50": [], "p99": []}
                  for k in runs}
        for n in range(args.rounds):
            for label, (path, script) in runs.items():
                if args.warmup:
                    wrk(port, path, args.warmup, script, wrk_pin)
                before = cpu_ticks(worker)
                r = wrk(port, path, args.duration, script, wrk_pin)
                ticks = cpu_ticks(worker) - before
                if r["errors"] or r["status"]:
                    raise SystemExit(f"{label}: {r['errors']} socket errors, "
                                     f"{r['status']} non-2xx responses")
                t = totals[label]
                t["requests"] += r["requests"]
                t["seconds"] += r["duration_us"] / 1e6
                t["ticks"] += ticks
                t["p50"].append(r["p50_us"])
                t["p99"].append(r["p99_us"])
                progress(f"round {n + 1} {label:10s} {r['rps']:9.0f} req/s  "
                         f"p50 {r['p50_us'] / 1000:.2f} ms  p99 {r['p99_us'] / 1000:.2f} ms  "
                         f"worker CPU {ticks / CLK_TCK * 1e6 / r['requests']:.1f} µs/req")
        rps = {k: t["requests"] / t["seconds"] for k, t in totals.items()}
        ratio = rps["occupancy"] / rps["return 200"]
        say()
        for label, t in totals.items():
            say(f"  {label:10s} {rps[label]:9.0f} req/s   worker CPU "
                  f"{t['ticks'] / CLK_TCK * 1e6 / t['requests']:5.1f} µs/request   "
                  f"p99 {max(t['p99']) / 1000:.2f} ms")
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        say(f"  ratio occupancy / return 200: {ratio:.3f} (target >= {TARGET}) {verdict}")
        cpu = {k: t["ticks"] / t["requests"] for k, t in totals.items()}
        say(f"  worker CPU per request, return 200 / occupancy: "
              f"{cpu['return 200'] / cpu['occupancy']:.3f} (the same ratio when the worker is "
              f"the bottleneck; steadier on a busy machine)")
        if args.baseline:
            say(f"  ratio noop handler / return 200: {rps['noop'] / rps['return 200']:.3f}  "
                  f"(the ceiling for any content handler); occupancy / noop: "
                  f"{rps['occupancy'] / rps['noop']:.3f}")
        if args.markdown:
            write_markdown(args.markdown, sys.argv[1:])
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        sql(SERVER_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
