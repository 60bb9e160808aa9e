#!/usr/bin/env python3
"""10,000 idle keep-alive connections on one bizzyd worker: its RSS, and what a fresh
client sees meanwhile.

Starts bizzyd (1 worker, `worker_connections` 12000) in a temporary prefix, measures a
fresh client first with no other connection (`--requests` requests, each on a new
connection: connect, GET /health, read, close), then opens `--idle` keep-alive
connections (each sends one request and stays open), reads the worker's RSS, and
measures the fresh client again.  Prints p50/p99/max of both runs, their ratio, and
the RSS added per idle connection.  Goals (issue 14): RSS added ≤ 60 MiB, p99 ≤ 5 ms.

The open-files limit is raised to its hard limit here (the systemd unit sets
LimitNOFILE=65536; see docs/operations.md).

    bench/idle_bench.py [--idle 10000] [--requests 2000] [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from http_bench import bizzyd_env, cmdline, descendants, free_port, rss_kib  # noqa: E402

REQUEST = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
CLOSE = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
GOAL_MIB, GOAL_P99_MS = 60.0, 5.0


def config(port: int) -> dict:
    return {"worker_processes": 1, "worker_connections": 12000,
            "worker_rlimit_nofile": 20000, "error_log": "logs/error.log",
            "error_log_level": "warn",
            "http": {"keepalive_timeout": "300s", "client_header_timeout": "300s",
                     "servers": [{"listen": [f"127.0.0.1:{port}"], "locations": [
                         {"location": "= /health", "return": [200, "ok"]}]}]}}


def fresh_client(port: int, count: int) -> list[float]:
    """Milliseconds per request, each on a new connection."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(CLOSE)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        took.append((time.perf_counter() - started) * 1000)
    return sorted(took)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def hold(port: int, count: int, batch: int = 250) -> list[socket.socket]:
    held: list[socket.socket] = []
    for i in range(0, count, batch):
        group = [socket.create_connection(("127.0.0.1", port), timeout=10)
                 for _ in range(min(batch, count - i))]
        for s in group:
            s.sendall(REQUEST)
        for s in group:
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "no response"
        held += group
        print(f"\r{len(held)} idle connections", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return held


def release(held: list[socket.socket]) -> None:
    for s in held:  # reset, not FIN: no thousands of sockets in TIME_WAIT
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def run(args: argparse.Namespace) -> list[str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="bizzyd-idle-") as tmp:
        prefix, port = Path(tmp), free_port()
        (prefix / "conf").mkdir()
        (prefix / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(config(port)))
        proc = subprocess.Popen([sys.executable, "-m", "bizzyd", "-p", str(prefix)],
                                env=bizzyd_env(), cwd=prefix)
        held: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 15
            while not (workers := [p for p in descendants(proc.pid)
                                   if cmdline(p).startswith("bizzyd: worker process")]):
                assert time.monotonic() < deadline and proc.poll() is None, "no worker"
                time.sleep(0.1)
            fresh_client(port, 200)  # warm-up
            alone = fresh_client(port, args.requests)
            before = rss_kib(workers[0])
            held = hold(port, args.idle)
            after = rss_kib(workers[0])
            crowded = fresh_client(port, args.requests)
        finally:
            release(held)
            proc.terminate()
            proc.wait(15)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    added = (after - before) / 1024
    lines = [
        f"worker RSS: {before / 1024:.1f} MiB with no client, {after / 1024:.1f} MiB with "
        f"{args.idle:,} idle keep-alive connections: +{added:.1f} MiB "
        f"({(after - before) * 1024 / args.idle:,.0f} bytes each); goal ≤ {GOAL_MIB:g} MiB: "
        f"{'PASS' if added <= GOAL_MIB else 'FAIL'}",
        f"fresh client alone ({args.requests} requests, new connection each): p50 "
        f"{pct(alone, 50):.2f} ms, p99 {pct(alone, 99):.2f} ms, max {alone[-1]:.2f} ms",
        f"fresh client beside {args.idle:,} idle connections: p50 {pct(crowded, 50):.2f} ms, "
        f"p99 {pct(crowded, 99):.2f} ms, max {crowded[-1]:.2f} ms "
        f"(p99 {pct(crowded, 99) / pct(alone, 99):.2f}x alone); goal p99 ≤ {GOAL_P99_MS:g} ms: "
        f"{'PASS' if pct(crowded, 99) <= GOAL_P99_MS else 'FAIL'}",
    ]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle", type=int, default=10_000, help="idle connections (10000)")
    p.add_argument("--requests", type=int, default=2000,
                   help="fresh-client requests per measurement (2000)")
    p.add_argument("--markdown", type=Path, help="append a section to this file")
    args = p.parse_args()
    lines = run(args)
    print("\n".join(lines))
    if args.markdown:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        section = [f"## Idle connections, {dt.date.today().isoformat()}", "",
                   f"`bench/idle_bench.py --idle {args.idle} --requests {args.requests}` "
                   f"(load average at the end: {load})", ""] + [f"- {line}" for line in lines]
        with args.markdown.open("a") as out:
            out.write("\n" + "\n".join(section) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
