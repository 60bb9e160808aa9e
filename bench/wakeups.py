#!/usr/bin/env python3
"""System calls and wake-ups per request: bizzyd, the bare uvloop+httptools server
and nginx under the same wrk load as `http_bench.py` (its servers, its `--vary` script).

For each server: start it with --workers workers, run `wrk -t1 -c64`, placed on the
cores as http_bench.py does (1 worker: the server on one core, wrk on another; more:
wrk on the second core, the server unpinned), and count with `perf stat` on the
workers (kernel tracepoints, so root) for --duration seconds in the middle of the run:
every system call, the event waits (`epoll_wait`/`epoll_pwait`), the reads and writes
of any kind, and the context switches, each divided by the requests wrk completed in
that window (its rate times the window).  Requests per wait says how many requests
one wake-up of a worker carries.  Several rounds, interleaved; the table is their
medians.

It explains the 2-worker figures of http_bench.py rather than ranking the servers:
where the counts match, the difference is CPU spent in user space (see hotpath.py).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import http_bench as hb

SERVERS = {"bizzyd": hb.Bizzyd, "bare": hb.Bare, "nginx": hb.Nginx}
WAITS = ("syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait")
READS = ("syscalls:sys_enter_read", "syscalls:sys_enter_recvfrom")
WRITES = ("syscalls:sys_enter_write", "syscalls:sys_enter_writev",
          "syscalls:sys_enter_sendto")
EVENTS = ("raw_syscalls:sys_enter", *WAITS, *READS, *WRITES, "context-switches")
COLUMNS = ("server", "workers", "req/s", "syscalls", "waits", "reads", "writes",
           "ctx switches", "req/wait")


def count(server: hb.Server, script: Path, seconds: float, cpu: str | None
          ) -> dict[str, float]:
    """Per-request counts over `seconds` of a wrk run on `server` (already started)."""
    pids = ",".join(str(p) for p in server.worker_pids())
    wrk = subprocess.Popen((["taskset", "-c", cpu] if cpu else []) + ["wrk", "-t1", "-c64",
                            f"-d{seconds + 2:g}s", "-s", str(script),
                            f"http://127.0.0.1:{server.port}/"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    perf = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", pids,
                           "--", "sleep", f"{seconds:g}"], capture_output=True, text=True)
    out, _ = wrk.communicate(timeout=seconds + 30)
    rate = float(next(line.split()[1] for line in out.splitlines()
                      if line.startswith("Requests/sec")))
    counts = {}
    for line in perf.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "", 1).isdigit():
            counts[fields[2]] = float(fields[0])
    if not counts:
        raise hb.BenchError(f"perf stat counted nothing:\n{perf.stderr[-2000:]}")
    requests = rate * seconds
    waits = sum(counts.get(e, 0.0) for e in WAITS)
    return {"req/s": rate, "syscalls": counts.get("raw_syscalls:sys_enter", 0.0) / requests,
            "waits": waits / requests,
            "reads": sum(counts.get(e, 0.0) for e in READS) / requests,
            "writes": sum(counts.get(e, 0.0) for e in WRITES) / requests,
            "ctx switches": counts.get("context-switches", 0.0) / requests,
            "req/wait": requests / waits if waits else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=float, default=4.0, help="seconds counted per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--servers", default="bizzyd,bare,nginx")
    p.add_argument("--same-request", action="store_true",
                   help="wrk's default script (the same GET / each time) instead of --vary's")
    args = p.parse_args(argv)
    names = [n for n in args.servers.split(",") if n]
    if unknown := [n for n in names if n not in SERVERS]:
        p.error(f"unknown server(s) {unknown}: pick from {', '.join(SERVERS)}")
    tmp = Path(tempfile.mkdtemp(prefix="bizzyd-wakeups-"))
    script = tmp / "requests.lua"
    script.write_text("" if args.same_request else hb.WRK_VARY % {})
    cpus = hb.pin_cpus()
    pin = cpus[0] if cpus and args.workers == 1 else None
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for round_ in range(1, args.rounds + 1):
        for name in names:
            server = SERVERS[name](args.workers, tmp / f"r{round_}", pin)
            hb.progress(f"round {round_}: {name} {args.workers}w")
            server.start()
            try:
                runs[name].append(count(server, script, args.duration,
                                        cpus[1] if cpus else None))
            finally:
                server.stop()
    rows = [COLUMNS]
    for name in names:
        med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
        rows.append((name, str(args.workers), f"{med['req/s']:,.0f}",
                     *(f"{med[k]:.3f}" for k in COLUMNS[3:-1]), f"{med['req/wait']:.2f}"))
    print(hb.text_table(rows))
    print(f"\nper request, medians of {args.rounds} rounds; wrk -t1 -c64, "
          f"{'the same request' if args.same_request else '--vary requests'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
