#!/usr/bin/env python3
"""Queue benchmark: send + receive + delete in batches of 10, 4 producers and 4
consumers, through bizzyd's SQS endpoint, next to a plain Postgres
`SELECT ... FOR UPDATE SKIP LOCKED` script (the ceiling).

bizzyd (2 workers, modules database + queue, SigV4 on) is started in a temporary prefix
against a throw-away database on the local Postgres. Producers (one process, 4 asyncio
tasks, each on its own keep-alive connection) send SendMessageBatch requests of 10;
consumers (another process, 4 tasks) long-poll ReceiveMessage (10, WaitTimeSeconds 20)
and DeleteMessageBatch what they got. Each body carries its send time: the latency is
from just before the send request to the moment the receive answer is parsed.

Two phases per system:
  throughput  producers unthrottled for --duration s; messages/s = messages deleted /
              time until the last delete (the consumers drain what is left);
  latency     producers at --rate messages/s in total, or half the throughput
              measured just before if that is less; p50/p99 send->receive.

The ceiling does the same with asyncpg: INSERT of 10 rows + NOTIFY, and consumers that
`DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 10) RETURNING` (receive
and delete in one statement, no HTTP), waiting on LISTEN when the table is empty.

    .venv/bin/python bench/queue_bench.py [--duration 10] [--rate 1000]
        [--markdown bench/RESULTS.md]

Needs the local services (`scripts/services start`). Goals: >= 5,000 messages/s and
p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.database.testing import create_database, drop_database  # noqa: E402
from modules.queue.sigv4 import ALGORITHM, canonical_request, signing_key  # noqa: E402

KEY, SECRET = "AKIDBENCH", "bench-secret"
PRODUCERS = CONSUMERS = 4
BATCH = 10
REPORT: list[str] = []


def say(message: str = "") -> None:
    print(message, flush=True)
    REPORT.append(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a small keep-alive HTTP client that signs SQS requests -----------------------------

class Client:
    def __init__(self, port: int) -> None:
        self.port, self.host = port, f"127.0.0.1:{port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.keys: dict[str, bytes] = {}

    async def call(self, action: str, params: dict) -> dict:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(params).encode()
        headers = self.sign(action, body)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"POST / HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
                          .encode() + body)
        status_line = await self.reader.readline()
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            close = close or (name.lower() == b"connection" and b"close" in value.lower())
        data = await self.reader.readexactly(length)
        if close:  # keepalive_requests reached: the next call opens a new connection
            self.writer.close()
            self.writer = None
        if b" 200 " not in status_line:
            raise RuntimeError(f"{action}: {status_line!r} {data[:200]!r}")
        return json.loads(data)

    def sign(self, action: str, body: bytes) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self.host, "x-amz-date": amz,
                   "x-amz-target": f"AmazonSQS.{action}",
                   "content-type": "application/x-amz-json-1.0"}
        signed = sorted(headers)
        request = canonical_request("POST", "/", "", {k: [v] for k, v in headers.items()},
                                    signed, hashlib.sha256(body).hexdigest())
        scope = f"{day}/us-east-1/sqs/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        key = self.keys.get(day) or self.keys.setdefault(
            day, signing_key(SECRET, day, "us-east-1", "sqs"))
        sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"{ALGORITHM} Credential={KEY}/{scope}, "
                                    f"SignedHeaders={';'.join(signed)}, Signature={sig}")
        return headers


# -- the two systems: send/receive+delete primitives -----------------------------------

class Sqs:
    def __init__(self, port: int, url: str) -> None:
        self.client, self.url = Client(port), url

    async def send(self, bodies: list[str]) -> None:
        await self.client.call("SendMessageBatch", {"QueueUrl": self.url, "Entries": [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]})

    async def take(self) -> list[str]:
        got = (await self.client.call("ReceiveMessage", {
            "QueueUrl": self.url, "MaxNumberOfMessages": BATCH, "WaitTimeSeconds": 2}))
        messages = got.get("Messages", [])
        if messages:
            await self.client.call("DeleteMessageBatch", {"QueueUrl": self.url, "Entries": [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)]})
        return [m["Body"] for m in messages]


CEILING_TABLE = "CREATE TABLE IF NOT EXISTS bench_q (id bigserial PRIMARY KEY, body text)"


class Ceiling:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.woken = asyncio.Event()

    async def connect(self) -> asyncpg.Connection:
        if self.conn is None:
            self.conn = await asyncpg.connect(self.dsn)
            await self.conn.add_listener("bench_q", lambda *a: self.woken.set())
        return self.conn

    async def send(self, bodies: list[str]) -> None:
        conn = await self.connect()
        await conn.execute("WITH i AS (INSERT INTO bench_q (body) SELECT unnest($1::text[])) "
                           "SELECT pg_notify('bench_q', '')", bodies)

    async def take(self) -> list[str]:
        conn = await self.connect()
        deadline = time.monotonic() + 2
        while True:
            self.woken.clear()
            rows = await conn.fetch(
                "DELETE FROM bench_q WHERE id IN (SELECT id FROM bench_q ORDER BY id "
                "LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING body", BATCH)
            left = deadline - time.monotonic()
            if rows or left <= 0:
                return [r["body"] for r in rows]
            try:
                await asyncio.wait_for(self.woken.wait(), left)
            except TimeoutError:
                pass


class Direct:
    """The queue module's Python API in the benchmark's own processes (no HTTP)."""

    shared: dict[str, object] = {}

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def queues(self):  # one pool and LISTEN connection per process
        if "queues" not in self.shared:
            from bizzyd.log import stderr_log
            from modules.database.pool import Database
            from modules.queue.store import Queues, Wakeups
            log = stderr_log("error")
            db = Database({"dsn": self.dsn, "pool_min_size": 1, "pool_max_size": 8,
                           "statement_timeout": 5.0, "connect_timeout": 5.0,
                           "reconnect_max_backoff": 1.0}, log)
            wakeups = Wakeups(self.dsn, log)
            wakeups.start()
            self.shared["queues"] = Queues(db, wakeups)
        return self.shared["queues"]

    async def send(self, bodies: list[str]) -> None:
        from modules.queue.store import SendEntry
        await (await self.queues()).send_batch("bench", [SendEntry(b) for b in bodies])

    async def take(self) -> list[str]:
        q = await self.queues()
        got = await q.receive("bench", BATCH, wait_seconds=2)
        if got:
            await q.delete_batch("bench", [m.receipt_handle for m in got])
        return [m.body for m in got]


def make(system: tuple) -> Sqs | Ceiling | Direct:
    if system[0] == "sqs":
        return Sqs(*system[1:])
    return Ceiling(system[1]) if system[0] == "ceiling" else Direct(system[1])


# -- producer and consumer processes -------------------------------------------------

def produce(system: tuple, seconds: float, rate: float, out: mp.Queue) -> None:
    async def one(interval: float) -> int:
        peer, sent, next_at = make(system), 0, time.monotonic()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if interval:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await peer.send([f"{time.time():.6f}"] * BATCH)
            sent += BATCH
        return sent

    interval = PRODUCERS * BATCH / rate if rate else 0.0
    out.put(("sent", sum(asyncio.run(_gather(one, interval, PRODUCERS)))))


async def _gather(fn, arg, n: int) -> list:
    return await asyncio.gather(*(fn(arg) for _ in range(n)))


def consume(system: tuple, expected_by: float, out: mp.Queue) -> None:
    async def one(_: object) -> tuple[int, list[float], float]:
        peer, count, latencies, last = make(system), 0, [], 0.0
        while True:
            bodies = await peer.take()
            now = time.time()
            if not bodies:
                if time.time() > expected_by:
                    return count, latencies, last
                continue
            count += len(bodies)
            last = time.monotonic()
            latencies += [now - float(b) for b in bodies]

    results = asyncio.run(_gather(one, None, CONSUMERS))
    out.put(("got", sum(r[0] for r in results), [x for r in results for x in r[1]],
             max(r[2] for r in results)))


def phase(system: tuple, seconds: float, rate: float) -> dict:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    start = time.monotonic()
    consumer = ctx.Process(target=consume, args=(system, time.time() + seconds + 2, out))
    producer = ctx.Process(target=produce, args=(system, seconds, rate, out))
    consumer.start()
    producer.start()
    results = {}
    for _ in range(2):
        item = out.get(timeout=seconds + 120)
        results[item[0]] = item[1:]
    producer.join(10)
    consumer.join(10)
    got, latencies, last = results["got"]
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {"sent": results["sent"][0], "got": got, "rate": got / max(1e-9, last - start),
            "p50": pct(0.50), "p99": pct(0.99), "max": latencies[-1] * 1000}


# -- bizzyd --------------------------------------------------------------------------

def bizzyd_config(port: int, dsn: str) -> dict:
    return {
        "modules": ["modules.database", "modules.queue"],
        "worker_processes": 2, "error_log": "logs/error.log", "error_log_level": "notice",
        "database": {"dsn": dsn, "pool_max_size": 8},
        "queue": {"sqs_credentials": [f"{KEY}:{SECRET}"]},
        "http": {"servers": [{"listen": [f"127.0.0.1:{port} reuseport"], "locations": [
            {"location": "= /health", "return": [200, "ok"]},
            {"location": "= /", "content": "sqs"}]}]},
    }


def start_bizzyd(prefix: Path, port: int, dsn: str) -> subprocess.Popen:
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "bizzyd.yaml").write_text(yaml.safe_dump(bizzyd_config(port, dsn)))
    proc = subprocess.Popen([sys.executable, "-m", "bizzyd", "-p", str(prefix), "-c",
                             str(prefix / "conf" / "bizzyd.yaml")], cwd=prefix,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("bizzyd did not start")


def measure(name: str, system: tuple, seconds: float, rate: float) -> None:
    """Throughput, then latency at `rate` or half that throughput, whichever is less
    (a latency measured past saturation would only show the backlog)."""
    thr = phase(system, seconds, 0)
    rate = min(rate, thr["rate"] / 2)
    report(name, thr, phase(system, seconds, rate), rate)


def report(name: str, thr: dict, lat: dict, rate: float) -> None:
    say(f"  {name:<26} {thr['rate']:8.0f} messages/s  ({thr['got']} of {thr['sent']} "
        f"received+deleted; saturated p99 {thr['p99']:.0f} ms)")
    say(f"  {'':<26} at {rate:.0f} msg/s: p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  "
        f"max {lat['max']:.1f} ms  ({lat['got']} of {lat['sent']})")


def write_markdown(path: Path, argv: list[str]) -> None:
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    head = (f"\n## Queue, {time.strftime('%Y-%m-%d %H:%M')} (git {rev})\n\n"
            f"`bench/queue_bench.py {' '.join(argv)}`; {os.cpu_count()} CPUs, "
            f"load average at the end {load}.\n\n```\n")
    with path.open("a") as out:
        out.write(head + "\n".join(REPORT).strip("\n") + "\n```\n")


async def ceiling_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(CEILING_TABLE)
    await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="total messages/s of the latency phase")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--only", choices=("sqs", "direct", "ceiling"), action="append",
                        help="run only these systems (repeatable; e.g. to profile one)")
    args = parser.parse_args()
    only = set(args.only or ("sqs", "direct", "ceiling"))
    dsn = asyncio.run(create_database())
    prefix = Path(tempfile.mkdtemp(prefix="bizzyd-queue-bench-"))
    port = free_port()
    proc = start_bizzyd(prefix, port, dsn)
    try:
        say(f"queue benchmark: {PRODUCERS} producers + {CONSUMERS} consumers, batches of "
            f"{BATCH}, {args.duration:g}s per phase; bizzyd 2 workers, SigV4 on")
        url = asyncio.run(Client(port).call("CreateQueue", {"QueueName": "bench"}))["QueueUrl"]
        if "sqs" in only:
            measure("bizzyd SQS (HTTP)", ("sqs", port, url), args.duration, args.rate)
        if "direct" in only:
            measure("queue API in-process", ("direct", dsn), args.duration, args.rate)
        if "ceiling" in only:
            asyncio.run(ceiling_table(dsn))
            measure("SKIP LOCKED script", ("ceiling", dsn), args.duration, args.rate)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        asyncio.run(drop_database(dsn))
        shutil.rmtree(prefix, ignore_errors=True)
    if args.markdown:
        write_markdown(args.markdown, sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
