#!/usr/bin/env python3
"""Loopback HTTP benchmark: bizzyd against uvicorn (raw ASGI) and nginx, with wrk.

Every server answers GET / with the same 27-byte JSON body (content-type
application/json). For each worker count, each server is started in a private
temporary prefix on a loopback port picked here, checked (exact body, pipelining),
warmed up, then measured with `wrk -t1 -c64 --latency` for --duration seconds, and
(bizzyd and nginx) again with 16 requests per write (a wrk Lua pipelining script).

The primary figure is the server's CPU time per request: utime+stime of all its
processes (master and workers, from /proc/PID/stat, sampled before and after the
measured run; children reaped during the run count through the master's
cutime+cstime) divided by the requests wrk completed. One wrk thread tops out near
210k requests/s on this kind of machine, so requests/s alone compares the load
generator as much as the servers.

With 1 worker the server runs on one core (`taskset -c 0`) and wrk on another
(`taskset -c 1`); with 2 workers the server is not pinned and shares the cores with
wrk. Run with `make bench` (installs wrk, nginx-light and the pinned uvicorn first).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
BODY = b'{"ok":true,"test":"27byte"}'
assert len(BODY) == 27, len(BODY)
CONTENT_TYPE = "application/json"
SERVERS = ("bizzyd", "bare", "uvicorn", "nginx")
PIPELINED_SERVERS = ("bizzyd", "nginx")
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()

# Targets (measured and printed as PASS/FAIL, never asserted).  The issue wrote the
# µs targets for a machine where nginx's `return 200` costs 4.4 µs CPU/request; its
# definition of the CPU target is relative ("at least 2.5x uvicorn's requests per
# CPU-second in the same run"), and the absolute figures are also shown scaled by
# nginx's cost measured in the same run.
TARGET_US_PER_REQUEST = 8.0
TARGET_US_ACCESS_LOG = 10.0
TARGET_NGINX_US = 4.4
TARGET_VS_UVICORN = 2.5
TARGET_P99_MS = 2.0
TARGET_RSS_MIB = 30.0
# Issue 14: CPU per request at most 1.2x the bare uvloop+httptools server's (with the
# strict request checks), and with 2 workers at least nginx's requests/s.
TARGET_VS_BARE = 1.2

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
    .. "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d,"
    .. "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# --vary: each request carries a header whose value changes request to request, so no
# read repeats the connection's last one (bizzyd cannot reuse a parse: HttpProtocol._replay)
WRK_VARY = r"""
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/", {["X-N"] = tostring(n %% 1000)})
end
"""

WRK_PIPELINE = r"""
init = function(args)
  local r = {}
  for i = 1, %(depth)d do
    r[i] = wrk.format(nil, "/")
  end
  req = table.concat(r)
end

request = function()
  return req
end
"""


def progress(message: str) -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {message}", flush=True)


class BenchError(Exception):
    """A server failed to start or answered wrongly: the benchmark stops loudly."""


# -- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (fields[0] is the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_table() -> dict[int, list[str]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = read_stat(int(entry.name))
            if fields is not None:
                table[int(entry.name)] = fields
    return table


def descendants(root: int, table: dict[int, list[str]] | None = None) -> list[int]:
    """The live process tree under `root` (root included when alive)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(pid)
    out = [root] if root in table and table[root][0] != "Z" else []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class CpuSample:
    """(utime, stime) clock ticks per process of a tree, and of the root's reaped children."""

    ticks: dict[int, tuple[int, int]]
    reaped: tuple[int, int]


def sample_cpu(root: int) -> CpuSample:
    table = process_table()
    ticks = {pid: (int(table[pid][11]), int(table[pid][12])) for pid in descendants(root, table)}
    root_fields = table.get(root)
    reaped = (int(root_fields[13]), int(root_fields[14])) if root_fields else (0, 0)
    return CpuSample(ticks, reaped)


def cpu_seconds(before: CpuSample, after: CpuSample) -> tuple[float, float, dict[int, float]]:
    """Server user and system CPU seconds between two samples, and total per process."""
    user = after.reaped[0] - before.reaped[0]
    system = after.reaped[1] - before.reaped[1]
    per = {}
    for pid, (u, s) in after.ticks.items():
        u0, s0 = before.ticks.get(pid, (0, 0))
        user, system = user + u - u0, system + s - s0
        per[pid] = (u - u0 + s - s0) / CLK_TCK
    return user / CLK_TCK, system / CLK_TCK, per


def system_busy_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq, steal


def settle(max_wait: float, window: float = 0.5, threshold: float = 0.1) -> float:
    """Wait (up to `max_wait` s) until the machine's busy time over `window` is under
    `threshold` of one core; returns the seconds waited."""
    start = time.monotonic()
    while True:
        busy0, _ = system_busy_ticks()
        time.sleep(window)
        busy1, _ = system_busy_ticks()
        waited = time.monotonic() - start
        if (busy1 - busy0) / CLK_TCK <= threshold * window or waited >= max_wait:
            return waited


def pin_cpus() -> tuple[str, str] | None:
    """(server core, load generator core), or None when pinning is not possible."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None
    return str(cpus[0]), str(cpus[1])


# -- HTTP checks ----------------------------------------------------------------


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    data = b""
    responses = []
    while len(responses) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "-1"))
            if length < 0:
                raise BenchError(f"response without content-length: {head!r}")
            if len(data) >= end + 4 + length:
                responses.append((status, headers, data[end + 4:end + 4 + length]))
                data = data[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"connection closed after {len(responses)} of {count} responses")
        data += chunk
    return responses


def http_get(port: int, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        return _read_responses(s, 1)[0]


def check_server(name: str, port: int, depth: int) -> None:
    """The exact body, its headers, and `depth` pipelined requests in one write."""
    status, headers, body = http_get(port)
    problems = []
    if status != 200:
        problems.append(f"status {status}")
    if body != BODY:
        problems.append(f"body {body!r} ({len(body)} bytes), expected {BODY!r} ({len(BODY)})")
    if headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
        problems.append(f"content-type {headers.get('content-type')!r}")
    if headers.get("content-length") != str(len(BODY)):
        problems.append(f"content-length {headers.get('content-length')!r}")
    if depth > 1:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n" * depth)
            answers = _read_responses(s, depth)
        bad = [a for a in answers if a[0] != 200 or a[2] != BODY]
        if bad:
            problems.append(f"{len(bad)} of {depth} pipelined responses wrong: {bad[0]!r}")
    if problems:
        raise BenchError(f"{name} answered GET / wrongly: " + "; ".join(problems))


# -- servers --------------------------------------------------------------------


class Server:
    """A server under test, started in a private temporary directory."""

    name = "?"
    label = ""

    def __init__(self, workers: int, tmp: Path, pin: str | None) -> None:
        self.workers = workers
        self.dir = tmp / f"{self.name}-{workers}w"
        self.dir.mkdir(parents=True)
        self.pin = pin
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, str] = {}            # pid -> starttime, to kill safely
        self.stderr_path = self.dir / "stderr.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Write configuration files."""

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    def log_tail(self) -> str:
        try:
            return self.stderr_path.read_text()[-3000:]
        except OSError:
            return ""

    def start(self) -> None:
        self.prepare()
        cmd = (["taskset", "-c", self.pin] if self.pin else []) + self.command()
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=stderr,
                                         stderr=stderr, start_new_session=True)
        self.remember()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} at start:\n"
                                 f"{self.log_tail()}")
            with contextlib.suppress(OSError, BenchError, ValueError, IndexError):
                http_get(self.port, timeout=1)
                if len(self.worker_pids()) >= self.workers:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer on port {self.port} within 20 s:"
                                 f"\n{self.log_tail()}")
            time.sleep(0.05)
        self.remember()

    def remember(self) -> None:
        if self.proc is None:
            return
        table = process_table()
        for pid in descendants(self.proc.pid, table):
            self.seen.setdefault(pid, table[pid][18])

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the master, bounded wait, then SIGKILL whatever of ours is left."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.remember()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                progress(f"{self.name}: still running {timeout:.0f} s after SIGTERM, killing")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and self._left():
            time.sleep(0.05)
        for pid in self._left():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def _left(self) -> list[int]:
        """Processes we started that are still alive (same pid and start time)."""
        left = []
        for pid, start in self.seen.items():
            fields = read_stat(pid)
            if fields is not None and fields[18] == start and fields[0] != "Z":
                left.append(pid)
        return left


class Bizzyd(Server):
    name = "bizzyd"

    def __init__(self, workers: int, tmp: Path, pin: str | None,
                 access_log: tuple[str, str] | None = None) -> None:
        self.access_log = access_log
        if access_log:
            self.name = "bizzyd+log"
        super().__init__(workers, tmp, pin)

    def config(self) -> dict:
        return bizzyd_config(self.port, self.workers, self.access_log)

    def prepare(self) -> None:
        (self.dir / "conf").mkdir()
        (self.dir / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(self.config(),
                                                                      sort_keys=False))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bizzyd", "-p", str(self.dir),
                "-c", str(self.dir / "conf" / "bizzyd.yaml")]

    def env(self) -> dict[str, str]:
        return bizzyd_env()

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return [p for p in descendants(self.proc.pid)
                if cmdline(p).startswith("bizzyd: worker process")]

    def log_tail(self) -> str:
        text = super().log_tail()
        with contextlib.suppress(OSError):
            text += (self.dir / "logs" / "error.log").read_text()[-3000:]
        return text


def bizzyd_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def bizzyd_config(port: int, workers: int, access_log: tuple[str, str] | None) -> dict:
    config: dict = {
        "worker_processes": workers,
        "error_log": "logs/error.log",
        "error_log_level": "warn",
        "fast_shutdown_timeout": "2s",
        "http": {
            "default_type": CONTENT_TYPE,
            "servers": [{
                "listen": [f"127.0.0.1:{port}"],
                "locations": [
                    {"location": "= /", "return": [200, BODY.decode()]},
                ],
            }],
        },
    }
    if access_log:
        where, value = access_log
        if where == "module":
            config["modules"] = ["modules.access_log"]
            config["http"]["access_log"] = value
        elif where == "http":
            config["http"]["access_log"] = value
        else:
            config["access_log"] = value
    return config


class Uvicorn(Server):
    name = "uvicorn"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "uvicorn_app:app",
                "--host", "127.0.0.1", "--port", str(self.port), "--loop", "uvloop",
                "--http", "httptools", "--no-access-log", "--log-level", "warning",
                "--workers", str(self.workers)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "BENCH_BODY": BODY.decode()}

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        return [p for p in descendants(self.proc.pid)
                if p != self.proc.pid and "spawn_main" in cmdline(p)]


class Bare(Uvicorn):
    """bench/bare_server.py: uvloop + httptools answering the body, nothing else (the
    same environment and process layout as uvicorn's: forked workers)."""

    name = "bare"

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "bare_server.py"), "--port", str(self.port),
                "--workers", str(self.workers)]

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        return [p for p in descendants(self.proc.pid) if p != self.proc.pid]


class Nginx(Server):
    name = "nginx"

    def prepare(self) -> None:
        d = self.dir
        (d / "tmp").mkdir()
        body = BODY.decode().replace("\\", "\\\\").replace("'", "\\'")
        temp_paths = "\n".join(f"    {kind}_temp_path {d}/tmp/{kind};"
                               for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(f"""\
# private nginx for bizzyd's benchmark (not the system one)
daemon off;
master_process on;
worker_processes {self.workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    default_type {CONTENT_TYPE};
{temp_paths}
    server {{
        listen 127.0.0.1:{self.port};
        location = / {{
            return 200 '{body}';
        }}
    }}
}}
""")

    def command(self) -> list[str]:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-e", str(self.dir / "error.log")]

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return [p for p in descendants(self.proc.pid)
                if cmdline(p).startswith("nginx: worker process")]

    def log_tail(self) -> str:
        text = super().log_tail()
        with contextlib.suppress(OSError):
            text += (self.dir / "error.log").read_text()[-3000:]
        return text


# -- wrk ------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    workers: int
    mode: str                         # "64c" or "64c x16 pipelined"
    pinned: str
    requests: int = 0
    seconds: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    worker_cpu_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wrk_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    steal_s: float = 0.0

    @property
    def pipelined(self) -> bool:
        return "pipelined" in self.mode

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("inf")

    @property
    def per_cpu_second(self) -> float:
        return self.requests / self.cpu_s if self.cpu_s else 0.0


def median_result(runs: list[Result]) -> Result:
    """One row for the rounds of a server and mode: the median of each per-request
    figure (CPU, user CPU, req/s, p50, p99, other CPU), the largest RSS, all errors."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    mid = sorted(runs, key=lambda r: r.us_per_request)[len(runs) // 2]
    med = Result(first.server, first.workers, first.mode, first.pinned)
    med.seconds = statistics.median(r.seconds for r in runs)
    med.requests = round(statistics.median(r.rps for r in runs) * med.seconds)
    per_request = med.requests / mid.requests if mid.requests else 0.0
    med.cpu_s = statistics.median(r.us_per_request for r in runs) * med.requests / 1e6
    med.user_s = statistics.median(r.user_s / r.requests if r.requests else 0.0
                                   for r in runs) * med.requests
    med.worker_cpu_s = [c * per_request for c in mid.worker_cpu_s]
    med.p50_us = statistics.median(r.p50_us for r in runs)
    med.p99_us = statistics.median(r.p99_us for r in runs)
    med.rss_kib = [max(k) for k in zip(*(r.rss_kib for r in runs), strict=False)]
    for r in runs:
        for kind, count in r.errors.items():
            med.errors[kind] = med.errors.get(kind, 0) + count
    for name in ("wrk_cpu_s", "other_cpu_s", "steal_s"):
        setattr(med, name, statistics.median(getattr(r, name) for r in runs))
    return med


def medians(results: list[Result]) -> list[Result]:
    """The rounds' results, one median row per server, worker count and mode."""
    groups: dict[tuple[str, int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.server, r.workers, r.mode), []).append(r)
    return [median_result(runs) for runs in groups.values()]


class Wrk:
    def __init__(self, tmp: Path, connections: int, depth: int, pin: str | None,
                 vary: bool = False) -> None:
        self.connections = connections
        self.depth = depth
        self.pin = pin
        self.plain_script = tmp / "done.lua"
        self.plain_script.write_text((WRK_VARY % {} if vary else "") + WRK_DONE)
        self.pipeline_script = tmp / f"pipeline{depth}.lua"
        self.pipeline_script.write_text(WRK_PIPELINE % {"depth": depth} + WRK_DONE)

    def run(self, port: int, seconds: float, pipelined: bool) -> tuple[dict, float]:
        """Run wrk; returns its summary (from the Lua `done`) and its own CPU seconds."""
        script = self.pipeline_script if pipelined else self.plain_script
        cmd = (["taskset", "-c", self.pin] if self.pin else []) + [
            "wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
            "--latency", "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}/"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        match = re.search(r"^BENCH-RESULT (\{.*\})$", out.stdout, re.M)
        if out.returncode != 0 or not match:
            raise BenchError(f"wrk failed ({out.returncode}): {' '.join(cmd)}\n"
                             f"{out.stdout}\n{out.stderr}")
        return json.loads(match.group(1)), wrk_cpu


def measure(server: Server, wrk: Wrk, seconds: float, warmup: float, pipelined: bool,
            pinned: str, max_settle: float) -> Result:
    assert server.proc is not None
    mode = f"{wrk.connections}c" + (f" x{wrk.depth} pipelined" if pipelined else "")
    result = Result(server.name, server.workers, mode, pinned)
    if max_settle > 0:
        waited = settle(max_settle)
        if waited > 0.6:
            progress(f"waited {waited:.1f} s for other jobs on the machine to go quiet")
    if warmup > 0:
        progress(f"{server.name} {server.workers}w {mode}: warm-up {warmup:g} s")
        wrk.run(server.port, warmup, pipelined)
    progress(f"{server.name} {server.workers}w {mode}: measuring {seconds:g} s")
    server.remember()
    busy0, steal0 = system_busy_ticks()
    before = sample_cpu(server.proc.pid)
    summary, wrk_cpu = wrk.run(server.port, seconds, pipelined)
    after = sample_cpu(server.proc.pid)
    busy1, steal1 = system_busy_ticks()
    server.remember()
    result.requests = summary["requests"]
    result.seconds = summary["duration_us"] / 1e6
    result.p50_us, result.p99_us = summary["p50_us"], summary["p99_us"]
    result.errors = {k: summary[k] for k in ("connect", "read", "write", "status", "timeout")
                     if summary[k]}
    result.user_s, system_s, per = cpu_seconds(before, after)
    result.cpu_s = result.user_s + system_s
    workers = server.worker_pids()
    result.worker_cpu_s = [per.get(p, 0.0) for p in workers]
    result.rss_kib = [rss_kib(p) for p in workers]
    result.wrk_cpu_s = wrk_cpu
    result.other_cpu_s = max(0.0, (busy1 - busy0) / CLK_TCK - result.cpu_s - wrk_cpu)
    result.steal_s = (steal1 - steal0) / CLK_TCK
    progress(f"  {result.rps:,.0f} req/s, {result.us_per_request:.2f} us CPU/request, "
             f"p99 {result.p99_us / 1000:.2f} ms, worker RSS "
             f"{', '.join(f'{k / 1024:.1f}' for k in result.rss_kib)} MiB"
             + (f", ERRORS {result.errors}" if result.errors else ""))
    return result


# -- access log probe -----------------------------------------------------------


def probe_access_log(value: str, tmp: Path) -> tuple[str, str] | None:
    """Where `bizzyd -T` accepts `access_log: VALUE`, or None (not available yet)."""
    places = ["http", "main"]
    if (ROOT / "modules" / "access_log").is_dir():
        places.insert(0, "module")
    for where in places:
        d = tmp / f"probe-{where}"
        (d / "conf").mkdir(parents=True)
        conf = d / "conf" / "bizzyd.yaml"
        conf.write_text(yaml.safe_dump(bizzyd_config(free_port(), 1, (where, value)),
                                       sort_keys=False))
        out = subprocess.run([sys.executable, "-m", "bizzyd", "-p", str(d), "-c", str(conf),
                              "-T"], capture_output=True, text=True, timeout=60,
                             env=bizzyd_env(), cwd=d)
        if out.returncode == 0:
            return where, value
    return None


# -- report ---------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("bizzyd", "uvloop", "httptools", "uvicorn"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            found["bizzyd"] += f" (git {out.stdout.strip()})"
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
        found["nginx"] = out.stderr.strip().removeprefix("nginx version: nginx/")
    except OSError:
        found["nginx"] = "not installed"
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        first = (out.stdout or out.stderr).splitlines()[0]
        found["wrk"] = first.split(" Copyright")[0].removeprefix("wrk ")
    except (OSError, IndexError):
        found["wrk"] = "not installed"
    return found


def uname_a() -> str:
    try:
        return subprocess.run(["uname", "-a"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(platform.uname()).strip()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment() -> list[tuple[str, str]]:
    v = versions()
    return [
        ("uname -a", uname_a()),
        ("CPU", cpu_model()),
        ("nproc", str(os.cpu_count())),
        ("load average at start", " ".join(Path("/proc/loadavg").read_text().split()[:3])),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items())),
    ]


def fmt_rss(r: Result) -> str:
    return "/".join(f"{k / 1024:.1f}" for k in r.rss_kib) or "-"


def fmt_split(r: Result) -> str:
    if len(r.worker_cpu_s) < 2 or not r.cpu_s:
        return ""
    return "/".join(f"{c / r.cpu_s * 100:.0f}" for c in r.worker_cpu_s)


COLUMNS = ("server", "workers", "load", "req/s", "µs CPU/req", "usr+sys µs", "req/CPU-s",
           "p50 ms",
           "p99 ms", "worker RSS MiB", "server CPU s", "wrk CPU %", "other CPU s",
           "errors")


def row(r: Result) -> tuple[str, ...]:
    split = fmt_split(r)
    usr = r.user_s / r.requests * 1e6 if r.requests else 0.0
    sys_ = (r.cpu_s - r.user_s) / r.requests * 1e6 if r.requests else 0.0
    return (r.server, str(r.workers), r.mode, f"{r.rps:,.0f}", f"{r.us_per_request:.2f}",
            f"{usr:.1f}+{sys_:.1f}",
            f"{r.per_cpu_second:,.0f}", f"{r.p50_us / 1000:.2f}", f"{r.p99_us / 1000:.2f}",
            fmt_rss(r), f"{r.cpu_s:.2f}" + (f" ({split}%)" if split else ""),
            f"{r.wrk_cpu_s / r.seconds * 100:.0f}" if r.seconds else "-",
            f"{r.other_cpu_s:.2f}" + (f" +{r.steal_s:.2f} steal" if r.steal_s >= 0.05 else "")
            + (" (noisy)" if noisy(r) else ""),
            ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0")


def noisy(r: Result) -> bool:
    """Other jobs (or steal) took more than 10% of a core during the run."""
    return r.other_cpu_s + r.steal_s > 0.1 * r.seconds


def find(results: list[Result], server: str, workers: int, pipelined: bool) -> Result | None:
    for r in results:
        if r.server == server and r.workers == workers and r.pipelined == pipelined:
            return r
    return None


def comparisons(results: list[Result], worker_counts: list[int]) -> list[str]:
    lines = []
    for n in worker_counts:
        b = find(results, "bizzyd", n, False)
        if b is None:
            continue
        for peer in ("bare", "uvicorn", "nginx"):
            p = find(results, peer, n, False)
            if p and p.per_cpu_second:
                lines.append(f"{n} worker(s): bizzyd/{peer} requests per CPU-second = "
                             f"{b.per_cpu_second / p.per_cpu_second:.2f}x, requests/s = "
                             f"{b.rps / p.rps:.2f}x")
        log, u = find(results, "bizzyd+log", n, False), find(results, "uvicorn", n, False)
        if log and u and u.per_cpu_second:
            lines.append(f"{n} worker(s): bizzyd+log/uvicorn requests per CPU-second = "
                         f"{log.per_cpu_second / u.per_cpu_second:.2f}x")
        bp, np_ = find(results, "bizzyd", n, True), find(results, "nginx", n, True)
        if bp and np_ and np_.rps:
            lines.append(f"{n} worker(s), pipelined: bizzyd/nginx requests/s = "
                         f"{bp.rps / np_.rps:.2f}x, requests per CPU-second = "
                         f"{bp.per_cpu_second / np_.per_cpu_second:.2f}x")
    return lines


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "FAIL")


def cpu_targets(b: Result | None, u: Result | None, n: Result | None, label: str,
                absolute: float) -> list[str]:
    """The issue's CPU target for one bizzyd run: relative to uvicorn (plain runs
    only), then the µs figure against the target scaled by nginx's measured cost, then
    against the absolute target as written."""
    if b is None:
        return [f"SKIP  {label}: no 1-worker run"]
    lines = []
    if u is not None and u.per_cpu_second:
        # the issue equates 8 µs with 2.5x uvicorn: 10 µs (access log) is then 2x
        wanted = TARGET_VS_UVICORN * TARGET_US_PER_REQUEST / absolute
        ratio = b.per_cpu_second / u.per_cpu_second
        lines.append(f"{verdict(ratio >= wanted)}  {label}, 1 worker: {ratio:.2f}x "
                     f"uvicorn's requests per CPU-second (target ≥ {wanted:g}x: "
                     f"{absolute:g} µs where {TARGET_US_PER_REQUEST:g} µs is "
                     f"{TARGET_VS_UVICORN:g}x; peers measured in this run)")
    if n is not None and n.requests:
        scaled = absolute * n.us_per_request / TARGET_NGINX_US
        lines.append(f"{verdict(b.us_per_request <= scaled)}  {label}, 1 worker: "
                     f"{b.us_per_request:.2f} µs CPU/request (scaled target ≤ {scaled:.1f} µs "
                     f"= {absolute:g} µs x nginx {n.us_per_request:.2f} µs here / "
                     f"{TARGET_NGINX_US:g} µs where the target was set)")
    lines.append(f"{verdict(b.us_per_request <= absolute)}  {label}, 1 worker: "
                 f"{b.us_per_request:.2f} µs CPU/request (absolute target ≤ {absolute:g} µs, "
                 f"as written for the faster machine)")
    return lines


def p99_targets(b: Result | None, n: Result | None) -> list[str]:
    if b is None:
        return ["SKIP  p99 (no bizzyd 1-worker run)"]
    ms = b.p99_us / 1000
    lines = [f"{verdict(ms <= TARGET_P99_MS)}  p99 at {b.mode}, 1 worker: {ms:.2f} ms "
             f"(absolute target ≤ {TARGET_P99_MS:g} ms)"]
    if n is not None:
        lines.append(f"{verdict(b.p99_us <= n.p99_us)}  p99 at {b.mode}, 1 worker: {ms:.2f} ms "
                     f"vs nginx {n.p99_us / 1000:.2f} ms in this run (relative: ≤ nginx's; "
                     "a comparison, not the issue's target)")
    return lines


def bare_targets(results: list[Result], worker_counts: list[int]) -> list[str]:
    """Issue 14: ≤ 1.2x the bare server's CPU per request (1 worker); with 2 workers,
    requests/s ≥ nginx's."""
    lines = []
    b1, bare1 = find(results, "bizzyd", 1, False), find(results, "bare", 1, False)
    if b1 and bare1 and bare1.requests:
        ratio = b1.us_per_request / bare1.us_per_request
        lines.append(f"{verdict(ratio <= TARGET_VS_BARE)}  return 200, 1 worker: "
                     f"{b1.us_per_request:.2f} µs CPU/request = {ratio:.2f}x the bare "
                     f"uvloop+httptools server's {bare1.us_per_request:.2f} µs "
                     f"(target ≤ {TARGET_VS_BARE:g}x)")
    if 2 in worker_counts:
        b2, n2 = find(results, "bizzyd", 2, False), find(results, "nginx", 2, False)
        if b2 and n2:
            lines.append(f"{verdict(b2.rps >= n2.rps)}  {b2.mode}, 2 workers: bizzyd "
                         f"{b2.rps:,.0f} req/s vs nginx {n2.rps:,.0f} (target ≥ nginx)")
    return lines


def targets(results: list[Result], worker_counts: list[int]) -> list[str]:
    b1, u1, n1 = (find(results, name, 1, False) for name in ("bizzyd", "uvicorn", "nginx"))
    lines = cpu_targets(b1, u1, n1, "return 200", TARGET_US_PER_REQUEST)
    log1 = find(results, "bizzyd+log", 1, False)
    if log1 is not None:
        lines += cpu_targets(log1, u1, n1, "return 200 + access log", TARGET_US_ACCESS_LOG)
    for n in worker_counts:
        bp, np_ = find(results, "bizzyd", n, True), find(results, "nginx", n, True)
        if bp and np_:
            lines.append(f"{verdict(bp.rps >= np_.rps)}  {bp.mode}, {n} worker(s): "
                         f"bizzyd {bp.rps:,.0f} req/s vs nginx "
                         f"{np_.rps:,.0f} (target ≥ nginx)")
    lines += bare_targets(results, worker_counts)
    lines += p99_targets(b1, n1)
    rss = [k for r in results if r.server.startswith("bizzyd") for k in r.rss_kib]
    if rss:
        worst = max(rss) / 1024
        lines.append(f"{verdict(worst <= TARGET_RSS_MIB)}  bizzyd worker RSS after the runs: "
                     f"max {worst:.1f} MiB (target ≤ {TARGET_RSS_MIB:g} MiB)")
    return lines


def text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def markdown_section(date: str, args: argparse.Namespace, env: list[tuple[str, str]],
                     results: list[Result], notes: list[str], compare: list[str],
                     verdicts: list[str], elapsed: float, rounds: list[Result]) -> str:
    lines = [f"## {date}", ""]
    lines += [f"- **{k}**: `{v}`" if k == "uname -a" else f"- **{k}**: {v}" for k, v in env]
    lines.append(f"- **command**: `{' '.join(['bench/http_bench.py', *args.argv])}` "
                 f"({elapsed:.0f} s)")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    lines += ["", "Ratios:", ""] + [f"- {c}" for c in compare]
    if rounds:
        lines += ["", "Each round:", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row(r)) + " |" for r in rounds]
    lines += ["", "Targets (measured, not asserted):", "", "```", *verdicts, "```", ""]
    lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_markdown(path: Path, date: str, section: str) -> None:
    header = ("# bizzyd HTTP benchmark results\n\n"
              "Written by `bench/http_bench.py --markdown` (`make bench`); one section per "
              "date, a new run of the same date replaces its section. See bench/README.md.\n\n")
    text = path.read_text() if path.exists() else header
    pattern = re.compile(rf"^## {re.escape(date)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


# -- main -----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Primary figure: server CPU time per request (all its processes). "
               "See bench/README.md.")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="seconds per measured run (default: 10)")
    p.add_argument("--warmup", type=float, default=2.0, metavar="S",
                   help="seconds of warm-up load before each measured run (default: 2)")
    p.add_argument("--settle", type=float, default=3.0, metavar="S",
                   help="before each run, wait up to S seconds for the machine to be quiet "
                        "(under 10%% of a core busy); 0 skips (default: 3)")
    p.add_argument("--connections", type=int, default=64, metavar="N",
                   help="wrk connections (default: 64)")
    p.add_argument("--vary", action="store_true",
                   help="64c runs send requests that differ request to request (an X-N "
                        "header with a counter): bizzyd parses every one")
    p.add_argument("--pipeline", type=int, default=16, metavar="DEPTH",
                   help="requests per write in the pipelined runs of bizzyd and nginx; "
                        "0 skips them (default: 16)")
    p.add_argument("--workers", default="1,2", metavar="LIST",
                   help="worker counts, comma-separated (default: 1,2)")
    p.add_argument("--servers", default=",".join(SERVERS), metavar="LIST",
                   help=f"servers to run, comma-separated (default: {','.join(SERVERS)})")
    p.add_argument("--access-log", nargs="?", const="logs/access.log",
                   default="logs/access.log", metavar="VALUE",
                   help="also run bizzyd with `access_log: VALUE` (default: "
                        "logs/access.log; 1 worker) when `bizzyd -T` accepts the directive, "
                        "else prints 'not available'")
    p.add_argument("--no-access-log", dest="access_log", action="store_const", const=None,
                   help="skip the bizzyd+log runs")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="run every server N times, interleaved (bizzyd, bare, ..., then "
                        "again), and compare the medians: steadier on a noisy machine "
                        "(default: 1)")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="append (or replace today's) section in FILE, e.g. bench/RESULTS.md")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error("--workers takes a comma-separated list of integers")
    if not args.worker_counts or min(args.worker_counts) < 1:
        p.error("--workers needs positive counts")
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_names) - set(SERVERS)
    if unknown:
        p.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.duration < 1 or args.connections < 1 or args.pipeline < 0 or args.rounds < 1:
        p.error("--duration ≥ 1, --connections ≥ 1, --pipeline ≥ 0, --rounds ≥ 1")
    return args


def preflight(args: argparse.Namespace) -> None:
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk (scripts/install-deps bench)")
    if "nginx" in args.server_names and shutil.which("nginx") is None \
            and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx (scripts/install-deps bench)")
    if "uvicorn" in args.server_names:
        try:
            importlib.metadata.version("uvicorn")
        except importlib.metadata.PackageNotFoundError:
            missing.append("uvicorn (.venv/bin/pip install -r bench/requirements.txt)")
    if missing:
        raise BenchError("missing: " + "; ".join(missing) + " -- or run `make bench`")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started = time.monotonic()
    date = dt.date.today().isoformat()
    try:
        preflight(args)
    except BenchError as exc:
        print(f"http_bench: {exc}", file=sys.stderr)
        return 2
    cpus = pin_cpus()
    notes = [
        f"Body: {BODY.decode()} ({len(BODY)} bytes), content-type {CONTENT_TYPE}; "
        f"wrk -t1 -c{args.connections}, {args.duration:g} s measured after "
        f"{args.warmup:g} s of warm-up; keep-alive limits are each server's default "
        "(bizzyd and nginx: 1000 requests per connection, uvicorn: none).",
        "µs CPU/req = utime+stime of all the server's processes (master and workers) "
        "/ requests completed; req/CPU-s is its inverse. RSS is VmRSS of each worker "
        "after the run. Worker CPU shares in parentheses.",
        "No IRQ time accounting on this kernel: loopback softirq work is charged to "
        "whichever process (server or wrk) is running; 'other CPU s' is the rest of the "
        "machine's busy time during the run (other jobs, unattributed softirq), plus "
        "hypervisor steal.",
    ]
    if cpus:
        notes.append(f"1 worker: server pinned to core {cpus[0]} (taskset -c {cpus[0]}), wrk "
                     f"to core {cpus[1]}; 2+ workers: wrk pinned to core {cpus[1]}, the server "
                     "unpinned, so its workers share the cores with wrk.")
    else:
        notes.append("No pinning (fewer than 2 usable cores or no taskset): servers and wrk "
                     "share the cores.")
    notes.append("One wrk thread tops out near 210k requests/s here: where wrk CPU % is "
                 "near 100, requests/s measures wrk, compare µs CPU/req instead.")

    tmp = Path(tempfile.mkdtemp(prefix="bizzyd-bench-"))
    results: list[Result] = []
    servers: list[Server] = []
    try:
        access_log = None
        if args.access_log is not None:
            access_log = probe_access_log(args.access_log, tmp)
            if access_log is None:
                progress(f"access log: not available (bizzyd -T does not accept "
                         f"`access_log: {args.access_log}` yet); running without it")
                notes.append("--access-log: not available (bizzyd -T rejects the directive).")
            else:
                progress(f"access log: `access_log: {args.access_log}` accepted "
                         f"({access_log[0]} level); adding bizzyd+log runs")
                notes.append(f"bizzyd+log: access_log: {args.access_log} "
                             f"({access_log[0]} level).")
        env = environment()
        for key, value in env:
            progress(f"{key}: {value}")
        wrk = Wrk(tmp, args.connections, args.pipeline, cpus[1] if cpus else None, args.vary)
        if args.vary:
            notes.append("--vary: every request of the 64c runs has an `X-N` header whose "
                         "value changes request to request (no read repeats the last one).")
        plan: list[tuple[str, int]] = []
        for n in args.worker_counts:
            plan += [(name, n) for name in SERVERS if name in args.server_names]
            if access_log and "bizzyd" in args.server_names and n == 1:
                plan.append(("bizzyd+log", n))
        if args.rounds > 1:
            notes.append(f"{args.rounds} rounds, servers interleaved; the rows are the "
                         "medians of the rounds (each round's rows follow the ratios).")
        for round_no, (name, n) in enumerate(plan * args.rounds):
            if args.rounds > 1 and round_no % len(plan) == 0:
                progress(f"round {round_no // len(plan) + 1} of {args.rounds}")
            pin = cpus[0] if cpus and n == 1 else None
            where = tmp / f"round{round_no // len(plan) + 1}"
            if name == "bizzyd":
                server: Server = Bizzyd(n, where, pin)
            elif name == "bizzyd+log":
                server = Bizzyd(n, where, pin, access_log)
            elif name == "uvicorn":
                server = Uvicorn(n, where, pin)
            elif name == "bare":
                server = Bare(n, where, pin)
            else:
                server = Nginx(n, where, pin)
            servers.append(server)
            progress(f"{name} {n}w: starting on 127.0.0.1:{server.port}"
                     + (f" (taskset -c {pin})" if pin else " (not pinned)"))
            server.start()
            pipelined = args.pipeline > 1 and name in PIPELINED_SERVERS
            check_server(name, server.port, args.pipeline if pipelined else 1)
            progress(f"{name} {n}w: GET / returns the exact {len(BODY)}-byte body"
                     + (f"; {args.pipeline} pipelined requests answered" if pipelined else ""))
            pinned = f"server {pin}, wrk {cpus[1]}" if pin and cpus else \
                (f"wrk {cpus[1]}" if cpus else "none")
            for mode in (False, True) if pipelined else (False,):
                results.append(measure(server, wrk, args.duration, args.warmup, mode, pinned,
                                       args.settle))
            server.stop()
            progress(f"{name} {n}w: stopped")
    except BenchError as exc:
        print(f"\nhttp_bench: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as exc:
        print(f"\nhttp_bench: interrupted ({exc or 'SIGINT'}), stopping the servers",
              file=sys.stderr, flush=True)
        return 130
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    if any(noisy(r) for r in results):
        notes.append("(noisy): during that run other processes or the hypervisor used more "
                     "than 10% of a core; its requests/s and latency are less reliable (CPU "
                     "per request much less affected). Other jobs were running on the machine.")
    rounds = results
    results = medians(rounds)
    compare = comparisons(results, args.worker_counts)
    verdicts = targets(results, args.worker_counts)
    print()
    print(text_table([COLUMNS, *(row(r) for r in results)]))
    print()
    for line in compare:
        print(line)
    if args.rounds > 1:
        print("\neach round:\n")
        print(text_table([COLUMNS, *(row(r) for r in rounds)]))
    print()
    for line in verdicts:
        print(line)
    print()
    for note in notes:
        print(f"note: {note}")
    print(f"\ntotal {elapsed:.0f} s")
    if args.markdown:
        section = markdown_section(date, args, env, results, notes, compare, verdicts, elapsed,
                                   rounds if args.rounds > 1 else [])
        write_markdown(args.markdown, date, section)
        print(f"wrote the {date} section of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
