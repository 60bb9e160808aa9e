#!/usr/bin/env python3
"""In-process driver of bizzyd's HTTP hot path: no sockets, no kernel, repeatable.

Builds the benchmark's config (`return 200` with the 27-byte body; `--access-log`
adds `access_log: logs/access.log` in a temporary prefix), a worker's engine, and
feeds one connection wrk's request (`GET / HTTP/1.1` + Host) one read at a time
(`--depth N`: N requests per read), checking every response; a connection ends
after `keepalive_requests` (1000) requests like under wrk, and a new one starts.
Every `--iteration` reads (64: wrk's 64 connections are all ready at once) the
event loop runs one iteration, as the real loop does between its polls; that is
when the log records queued by those reads are handed to their handlers.

    bench/hotpath.py                      # µs per request (best of --repeat)
    bench/hotpath.py --profile            # cProfile, sorted by own time
    bench/hotpath.py --callgrind          # instructions per request (valgrind)
    bench/hotpath.py --bare [--callgrind] # the same for bench/bare_server.py's protocol
    bench/hotpath.py --vary [--callgrind] # requests that differ read to read (no replay)

`--callgrind` runs itself twice under `valgrind --tool=callgrind`, collecting only
inside the measured loop (run within one `functools.reduce` call, which callgrind
toggles on), for two request counts; the difference divided by the difference in
requests is the instruction count per request, free of start-up and noise.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from http_bench import BODY, bizzyd_config  # noqa: E402

from bizzyd.http.protocol import HttpProtocol  # noqa: E402
from bizzyd.http.testing import InProcessWorker, Transport  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
# --vary: reads alternate between two requests that differ in one header value, so no
# read repeats the one before it and bizzyd parses every request (no replay)
VARIED = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-N: 0\r\n\r\n",
          b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-N: 1\r\n\r\n")


def reads_of(depth: int, vary: bool) -> tuple[bytes, bytes]:
    if vary:
        return VARIED[0] * depth, VARIED[1] * depth
    return REQUEST * depth, REQUEST * depth


async def _next_iteration() -> None:
    """Nothing: running it lets the loop run the callbacks that are due."""


class _Driving:
    """What both drivers share: running reads, checking the last answer."""

    depth: int
    transport: Transport

    def step(self, _acc: Any = None, i: int = 0) -> None:
        raise NotImplementedError

    def check_last(self) -> None:
        last = self.transport.last
        assert last.startswith(b"HTTP/1.1 200 OK\r\n") and last.endswith(BODY), last
        assert last.count(b"HTTP/1.1 200") == self.depth, last

    def run(self, reads: int) -> None:
        functools.reduce(self.step, range(reads), None)


class BareDriver(_Driving):
    """bench/bare_server.py's protocol on the same transport: the floor for bizzyd."""

    def __init__(self, depth: int, vary: bool = False) -> None:
        import bare_server

        self.loop = uvloop.new_event_loop()
        self.clock = bare_server.Clock(self.loop)
        self.protocol = bare_server.Bare
        self.data = reads_of(depth, vary)
        self.depth = depth
        self.transport = Transport()
        self.conn: Any = None
        self.served = 0

    def step(self, _acc: Any = None, i: int = 0) -> None:
        if self.served % 1000 == 0:  # a new connection per 1000 requests, as bizzyd's
            self.conn = self.protocol(self.clock)
            self.conn.connection_made(self.transport)
        self.conn.data_received(self.data[i & 1])
        self.served += self.depth

    def check(self) -> None:
        self.step()
        self.check_last()

    def close(self) -> None:
        self.loop.close()


class Driver(_Driving):
    def __init__(self, access_log: bool, depth: int, prefix: Path, iteration: int = 64,
                 vary: bool = False) -> None:
        log = ("http", "logs/access.log") if access_log else None
        self.worker = InProcessWorker(bizzyd_config(8080, 1, log), prefix)
        self.loop, self.ctx, self.engine = self.worker.loop, self.worker.ctx, self.worker.engine
        asyncio.set_event_loop(self.loop)
        self.data = reads_of(depth, vary)
        self.depth = depth
        self.iteration = iteration
        self.conn: HttpProtocol | None = None
        self.transport = Transport()
        self.served = 0

    def connect(self) -> None:
        self.conn, self.transport = self.worker.connect(keep=False)
        self.served = 0

    def step(self, _acc: Any = None, i: int = 0) -> None:
        """One read of `depth` requests (a new connection after 1000 requests)."""
        if self.conn is None or self.transport.closed:
            if self.conn is not None:
                self.conn.connection_lost(None)
            self.connect()
        self.conn.data_received(self.data[i & 1])  # type: ignore[union-attr]
        if i % self.iteration == 0 and self.engine.log_queue:
            self.loop.run_until_complete(_next_iteration())

    def check(self) -> None:
        self.connect()
        self.step()
        self.loop.run_until_complete(_next_iteration())
        self.check_last()

    def close(self) -> None:
        self.worker.close()


def timing(driver: Driver, reads: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        driver.run(reads)
        best = min(best, time.perf_counter() - t)
    return best / (reads * driver.depth) * 1e6


def callgrind(args: argparse.Namespace) -> None:
    counts = []
    small, large = args.reads // 5, args.reads
    for reads in (small, large):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                   "--toggle-collect=functools_reduce", sys.executable, __file__,
                   "--reads", str(reads), "--repeat", "1", "--depth", str(args.depth),
                   "--warmup", "2000", "--iteration", str(args.iteration)] \
                + (["--access-log"] if args.access_log else []) \
                + (["--bare"] if args.bare else []) + (["--vary"] if args.vary else [])
            subprocess.run(cmd, check=True, capture_output=True)
            text = out.read_text(errors="replace")
            match = re.search(r"^summary:\s+(\d+)", text, re.M) \
                or re.search(r"^totals:\s+(\d+)", text, re.M)
            assert match, "no totals in the callgrind output"
            counts.append(int(match.group(1)))
            if args.keep:
                Path(args.keep).write_text(text)
    per = (counts[1] - counts[0]) / ((large - small) * args.depth)
    print(f"instructions per request: {per:,.0f} ({describe(args)})")


def describe(args: argparse.Namespace) -> str:
    what = "bare uvloop+httptools" if args.bare else \
        f"bizzyd, access log {'on' if args.access_log else 'off'}"
    reads = "alternating requests" if args.vary else "the same request"
    return f"{what}, depth {args.depth}, {reads}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reads", type=int, default=50000)
    p.add_argument("--depth", type=int, default=1, help="requests per read")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5000)
    p.add_argument("--iteration", type=int, default=64, metavar="N",
                   help="reads per event-loop iteration (default: 64)")
    p.add_argument("--access-log", action="store_true")
    p.add_argument("--bare", action="store_true",
                   help="drive bench/bare_server.py's protocol instead of bizzyd's")
    p.add_argument("--vary", action="store_true",
                   help="alternate two requests that differ in a header (no read repeats "
                        "the last one, so bizzyd parses each)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--callgrind", action="store_true")
    p.add_argument("--keep", metavar="FILE", help="with --callgrind: keep the larger run's "
                   "callgrind output (callgrind_annotate FILE)")
    args = p.parse_args()
    if args.callgrind:
        callgrind(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        driver: Any = BareDriver(args.depth, args.vary) if args.bare else \
            Driver(args.access_log, args.depth, Path(tmp), args.iteration, args.vary)
        driver.check()
        for _ in range(args.warmup // args.depth):
            driver.step()
        if args.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.runcall(driver.run, args.reads)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        else:
            us = timing(driver, args.reads, args.repeat)
            print(f"{us:.3f} µs per request (best of {args.repeat} x {args.reads} reads, "
                  f"{describe(args)})")
        driver.close()


if __name__ == "__main__":
    main()
