#!/usr/bin/env python3
"""Signed-in API benchmark (issue 16), wrk on loopback, 1 worker, one run:

`GET /v1/me` signed in with the token cache warm (100 users' RS256 tokens, verified
once each by firebase-admin against a local stand-in for Google's certificate
endpoint) against the anonymous `GET /v1/hives/{id}` served from the cache, in the
same bizzyd: worker CPU per request (goal: /v1/me <= 1.5x the hive read), and the
Postgres backend's CPU per /v1/me; then the signed-in hive read (which records a
recent, written in batches) against the anonymous one; last, the same /v1/me on the
FastAPI + uvicorn peer (bench/peers/users_fastapi.py). The server runs on CPU 0, wrk
on CPU 1.

    .venv/bin/python bench/users_bench.py [--hives 2000] [--duration 8]
        [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from catalogue_bench import Server, command_line, measure, prepare, script  # noqa: E402
from occupancy_bench import (  # noqa: E402
    CLK_TCK,
    MEMCACHED,
    REPORT,
    SERVER_DSN,
    WRK_DONE,
    cpu_ticks,
    free_port,
    say,
    sql,
)

from modules.auth.testing import KeyPair, certs_server  # noqa: E402
from modules.hives.testing import catalogue_locations  # noqa: E402
from modules.users.testing import user_locations  # noqa: E402

ROOT = BENCH.parent
PROJECT = "bizzy-bench"
WRK_TOKENS = r"""
local tokens = {%(tokens)s}
local n = 0
request = function()
  n = n + 1
  local token = tokens[(n %% #tokens) + 1]
  return wrk.format("GET", "%(path)s", {["Authorization"] = "Bearer " .. token})
end
"""
WRK_SIGNED_PATHS = r"""
local tokens = {%(tokens)s}
local paths = {%(paths)s}
local n = 0
request = function()
  n = n + 1
  local token = tokens[(n %% #tokens) + 1]
  return wrk.format("GET", paths[(n %% #paths) + 1], {["Authorization"] = "Bearer " .. token})
end
"""


def bizzyd(tmp: Path, dsn: str, pin: str | None, certs_url: str) -> Server:
    port = free_port()
    prefix = tmp / f"bizzyd-{port}"
    (prefix / "conf").mkdir(parents=True)
    catalogue = catalogue_locations(filters=False)
    for loc in catalogue:  # as in conf/demo.yaml: signed-in reads record recents
        if loc["content"] == "hive":
            loc.update(auth="optional", record_recent=True)
    config = {
        "modules": ["modules.database", "modules.occupancy", "modules.api", "modules.hives",
                    "modules.auth", "modules.users"],
        "worker_processes": 1,
        "error_log": "logs/error.log",
        "error_log_level": "info",
        "fast_shutdown_timeout": "2s",
        "database": {"dsn": dsn},
        "occupancy": {"memcached": MEMCACHED},
        "api": {"memcached": MEMCACHED, "memcached_prefix": f"u{secrets.token_hex(3)}:"},
        "firebase": {"project_id": PROJECT, "certs_url": certs_url},
        "http": {"servers": [{
            "listen": [f"127.0.0.1:{port}"],
            "locations": [{"location": "= /ok", "return": [200, '{"ok":true}']},
                          *catalogue,
                          *user_locations(write_limit={})],
        }]},
    }
    (prefix / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(config))
    cmd = (["taskset", "-c", pin] if pin else []) + [
        sys.executable, "-m", "bizzyd", "-p", str(prefix), "-c", str(prefix / "conf/bizzyd.yaml")]
    env = {k: v for k, v in os.environ.items() if k != "FIREBASE_AUTH_EMULATOR_HOST"}
    env["PYTHONPATH"] = str(ROOT)
    server = Server(cmd, prefix, env, port, "/ok", "bizzyd: worker process")
    log = prefix / "logs" / "error.log"
    deadline = time.monotonic() + 20
    while "versions: listening" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise SystemExit("the catalogue versions listener did not start")
        time.sleep(0.1)
    return server


def warm(port: int, tokens: list[str]) -> None:
    """One sign-in per token (verification, app_user row): the token cache is warm."""
    import http.client

    for token in tokens:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/v1/me", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"sign-in failed: {response.status} {body[:300]!r}")
        finally:
            conn.close()


def peer(tmp: Path, dsn: str, pin: str | None, certs_url: str,
         app: str = "users_fastapi:app") -> Server:
    """A signed-in FastAPI peer of bench/peers (its tokens from `certs_url`)."""
    port = free_port()
    cmd = (["taskset", "-c", pin] if pin else []) + [
        sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH / "peers"),
        app, "--port", str(port), "--loop", "uvloop", "--http",
        "httptools", "--log-level", "warning", "--no-access-log"]
    env = {k: v for k, v in os.environ.items() if k != "FIREBASE_AUTH_EMULATOR_HOST"}
    env.update(PEER_DSN=dsn, PEER_CERTS_URL=certs_url, PEER_PROJECT=PROJECT)
    return Server(cmd, tmp, env, port, "/ok", None)


def backend_ticks(dsn: str) -> int:
    """CPU ticks of the Postgres backends connected to the benchmark's database."""
    name = dsn.rsplit("/", 1)[1]
    pids = [r["pid"] for r in sql(dsn, "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
                                       "AND pid <> pg_backend_pid()", name)]
    return sum(cpu_ticks(p) for p in pids if Path(f"/proc/{p}").exists())


def main() -> int:
    args, srv_pin, wrk_pin = command_line(__doc__ or "", 2000,
                                          users={"type": int, "default": 100})
    say(f"signed-in API benchmark: 1 worker, wrk -t1, {args.duration:g}s per run, "
        f"{args.users} users" + (f"; server on CPU {srv_pin}, wrk on CPU {wrk_pin}"
                                 if srv_pin else ""))
    dsn, created = prepare(args)
    tmp = Path(tempfile.mkdtemp(prefix="usersbench."))
    key = KeyPair("bench")
    server = None
    try:
        with certs_server(key) as url:
            server = bizzyd(tmp, dsn, srv_pin, url)
            ids = [r["id"] for r in sql(dsn, "SELECT h.id FROM hive h JOIN hive_status s "
                                             "ON s.id = h.status_id WHERE s.listed "
                                             "ORDER BY h.id LIMIT 100")]
            tokens = [key.token(PROJECT, f"bench-{secrets.token_hex(4)}-{i}")
                      for i in range(args.users)]
            warm(server.port, tokens)
            me = tmp / "me.lua"
            me.write_text(WRK_TOKENS % {"tokens": ",".join(json.dumps(t) for t in tokens),
                                        "path": "/v1/me"} + WRK_DONE)
            detail = script(tmp, "detail", [f"/v1/hives/{i}" for i in ids])
            hive = measure("GET /v1/hives/{id} anonymous", server, "/", detail, args,
                           wrk_pin)
            before = backend_ticks(dsn)
            signed = measure("GET /v1/me signed in (cache warm)", server, "/", me, args,
                             wrk_pin)
            pg_us = (backend_ticks(dsn) - before) / CLK_TCK * 1e6 / max(1, signed["requests"])
            reads = tmp / "reads.lua"
            reads.write_text(WRK_SIGNED_PATHS % {
                "tokens": ",".join(json.dumps(t) for t in tokens),
                "paths": ",".join(json.dumps(f"/v1/hives/{i}") for i in ids)} + WRK_DONE)
            recorded = measure("GET /v1/hives/{id} signed in", server, "/", reads, args,
                               wrk_pin)
            ratio = signed["cpu_us"] / hive["cpu_us"]
            say(f"  Postgres backend CPU per /v1/me: {pg_us:.1f} µs (profile and plan are cached)")
            say(f"  worker CPU ratio /v1/me : hive read = {ratio:.2f} (goal <= 1.5): "
                + ("MET" if ratio <= 1.5 else "NOT MET"))
            say(f"  a signed-in hive read (verifies the cached token, records a recent) "
                f"costs {recorded['cpu_us'] / hive['cpu_us']:.2f}x an anonymous one")
            server.stop()
            server = peer(tmp, dsn, srv_pin, url)
            warm(server.port, tokens)
            fastapi = measure("FastAPI peer GET /v1/me (cache warm)", server, "/", me, args,
                              wrk_pin)
            say(f"  bizzyd /v1/me: {fastapi['cpu_us'] / signed['cpu_us']:.2f}x less CPU "
                f"per request and {signed['rps'] / fastapi['rps']:.2f}x the req/s of the "
                "FastAPI + uvicorn peer")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            sql(SERVER_DSN, f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
    if args.markdown:
        write_markdown(args.markdown, sys.argv[1:])
    return 0


def write_markdown(path: Path, argv: list[str]) -> None:
    import subprocess

    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    head = (f"\n## Signed-in API, {time.strftime('%Y-%m-%d %H:%M')} (git {rev})\n\n"
            f"`bench/users_bench.py {' '.join(argv)}`; {os.cpu_count()} CPUs, "
            f"load average at the end {load}.\n\n```\n")
    with path.open("a") as out:
        out.write(head + "\n".join(REPORT).strip("\n") + "\n```\n")


if __name__ == "__main__":
    sys.exit(main())
