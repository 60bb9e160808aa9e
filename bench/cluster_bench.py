"""Cluster benchmark: 1, 2 and 3 bizzyd nodes on a 3-node RabbitMQ cluster, side by side.

For each node count, on fresh queues (a new tag) and the same fleet:

* ingest end to end: MESSAGES sensor messages (half v1 counters, half v2 events, in
  order per sensor) published to RabbitMQ's `amq.topic` over AMQP with publisher
  confirms (what the MQTT plugin does with a sensor's PUBLISH), the clock stops when
  Postgres holds every row: messages/s through the quorum queues, the nodes' ingest and
  their commits (bounded by the publish rate when that is lower);
* ingest drain: the nodes' ingest processes are stopped (SIGSTOP), MESSAGES are queued,
  then they continue (SIGCONT): messages/s the nodes consume and commit from full
  queues, without the publisher in the way;
* API: `wrk -t1 -c64` for DURATION seconds through HAProxy on
  `GET /v1/hives/{id}/occupancy` (spread over the fleet's hives);
* staleness (2 and 3 nodes): single entries published over MQTT (QoS 1) to broker node
  1, one every 50 ms, each to another hive; Server-Sent Events streams on every node
  timestamp when the new count arrives. Reported: publish → the node that committed it
  (the first to show it) and publish → the other nodes (their API shows the number).

Everything runs on this one 2-core machine: the brokers, Postgres, HAProxy, wrk and the
nodes share two CPUs, so more nodes add processes, not cores. Ports: BIZZYD_PORT_BASE
(default 27100) .. +99; Postgres is the one `scripts/services` runs (BIZZYD_PG_DSN).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cluster")]

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from ingest_bench import Traffic  # noqa: E402
from occupancy_bench import WRK_DONE, WRK_SPREAD, wrk  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bizzyd_proc import children_of  # noqa: E402
from cluster_support import Services, bizzyd_nodes, haproxy, node_port  # noqa: E402
from modules.mqtt_ingest.amqp import routing_key  # noqa: E402
from modules.mqtt_ingest.fleet import create_fleet  # noqa: E402
from modules.mqtt_ingest.testing import temporary_database_sync  # noqa: E402

REPORT: list[str] = []

def say(text: str = "") -> None:
    print(text, flush=True)
    REPORT.append(text)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM sensor_report")
    finally:
        await conn.close()


async def publish_amqp(url: str, messages: list[tuple[str, bytes, int]]) -> float:
    """Publish to amq.topic with confirms (in windows of 500); seconds taken."""
    connection = await aio_pika.connect(url)
    started = time.perf_counter()
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("amq.topic", ensure=False)
        for i in range(0, len(messages), 500):
            await asyncio.gather(*(exchange.publish(
                aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=routing_key(topic))
                for topic, payload, _ in messages[i:i + 500]))
    return time.perf_counter() - started


def wait_rows(dsn: str, before: int, count: int, started: float, timeout: float) -> float:
    """Seconds from `started` until Postgres holds `count` more rows than `before`."""
    while (rows := asyncio.run(count_rows(dsn))) < before + count:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"only {rows - before} of {count} rows after {timeout:.0f}s")
        time.sleep(0.02)
    return time.perf_counter() - started


def ingest_round(dsn: str, url: str, messages: list, timeout: float = 300) -> dict:
    before = asyncio.run(count_rows(dsn))
    started = time.perf_counter()
    published = asyncio.run(publish_amqp(url, messages))
    took = wait_rows(dsn, before, len(messages), started, timeout)
    return {"messages": len(messages), "seconds": took, "rate": len(messages) / took,
            "publish_rate": len(messages) / published}


def drain_round(dsn: str, url: str, messages: list, masters: list,
                timeout: float = 300) -> dict:
    """Queue everything while ingest is stopped; rows/s once it continues."""
    pids = [p for b in masters for p, title in children_of(b.pid) if "mqtt ingest" in title]
    before = asyncio.run(count_rows(dsn))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        asyncio.run(publish_amqp(url, messages))
    finally:
        started = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    took = wait_rows(dsn, before, len(messages), started, timeout)
    return {"messages": len(messages), "seconds": took, "rate": len(messages) / took,
            "processes": len(pids)}


class Stream:
    """An SSE stream of one hive on one node; (total_in, arrival time) of each event."""

    def __init__(self, port: int, hive: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET /v1/hives/{hive}/occupancy/stream HTTP/1.1\r\nHost: b\r\n\r\n"
                          .encode())
        self.seen: dict[int, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                now = time.time()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        total = json.loads(line[6:])["total_in"]
                        self.seen.setdefault(total, now)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def staleness(services: Services, nodes: int, traffic: Traffic, tag: str, hives: list[int],
              samples: int) -> dict:
    """Publish one entry at a time over MQTT; arrival on every node's stream."""
    v2 = [i for i, s in enumerate(traffic.fleet) if s.firmware == "v2"]
    by_hive: dict[int, int] = {}
    for i in v2:
        by_hive.setdefault(traffic.fleet[i].hive_id, i)
    targets = [h for h in hives if h in by_hive][:samples]
    streams = {(n, h): Stream(node_port(services, n), h)
               for n in range(1, nodes + 1) for h in targets}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-stale",
                         protocol=paho.MQTTv311)
    client.connect("127.0.0.1", services.mqtt_port(1), 30)
    client.loop_start()
    time.sleep(1.0)  # the streams' first events (the current state)
    sent: list[tuple[int, int, float]] = []
    try:
        for k in range(samples):
            hive = targets[k % len(targets)]
            first = streams[(1, hive)].seen
            current = max(first) if first else 0
            topic, payload, _ = traffic.message(by_hive[hive], tag)
            at = time.time()
            client.publish(topic, payload, qos=1).wait_for_publish(5)
            sent.append((hive, current + 1, at))
            time.sleep(0.05)
        time.sleep(2.0)
    finally:
        client.disconnect()
        client.loop_stop()
        for s in streams.values():
            s.close()
    first_node, other_nodes, missing = [], [], 0
    for hive, total, at in sent:
        arrivals = sorted(streams[(n, hive)].seen.get(total, 0) - at
                          for n in range(1, nodes + 1))
        if arrivals[0] < 0:  # some node never showed it
            missing += 1
            continue
        first_node.append(arrivals[0] * 1000)
        other_nodes += [a * 1000 for a in arrivals[1:]]
    if not first_node:
        raise SystemExit("staleness: no sample arrived")
    return {"samples": len(first_node), "missing": missing,
            "first_p50": percentile(first_node, 50), "first_p99": percentile(first_node, 99),
            "other_p50": percentile(other_nodes, 50), "other_p99": percentile(other_nodes, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--duration", type=float, default=5.0, help="wrk seconds per run")
    parser.add_argument("--samples", type=int, default=200, help="staleness samples")
    parser.add_argument("--hives", type=int, default=50)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--markdown", type=Path, metavar="FILE")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("haproxy"):
        raise SystemExit("needs wrk and haproxy (scripts/install-deps bench; cluster)")
    tmp = Path(tempfile.mkdtemp(prefix="clusterbench."))
    services = Services(tmp / "services", heartbeat=120)  # outlives the SIGSTOP of drain
    say(f"cluster benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}: {args.messages} messages per ingest run, "
        f"wrk -t1 -c64 {args.duration:g}s through HAProxy, {args.samples} staleness samples")
    services.start()
    results = []
    try:
        with temporary_database_sync() as dsn:
            fleet = asyncio.run(_fleet(dsn, args.hives))
            traffic = Traffic(fleet, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1),
                              [0] * len(fleet))
            hives = sorted({s.hive_id for s in fleet})
            script = tmp / "spread.lua"
            script.write_text(WRK_SPREAD % {"ids": ",".join(map(str, hives))} + WRK_DONE)
            for n in [int(x) for x in args.nodes.split(",")]:
                results.append(one_count(services, dsn, traffic, hives, n, tmp, script, args))
    finally:
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table(results)
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write("\n## Cluster (bench/cluster_bench.py)\n\n```\n" + "\n".join(REPORT)
                    + "\n```\n")
    return 0


async def _fleet(dsn: str, hives: int) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await create_fleet(conn, hives, 2, 0.5, prefix="cb")
    finally:
        await conn.close()


def one_count(services: Services, dsn: str, traffic: Traffic, hives: list[int], n: int,
              tmp: Path, script: Path, args: argparse.Namespace) -> dict:
    tag = "b" + secrets.token_hex(4)
    work = tmp / f"n{n}-{tag}"
    work.mkdir()
    with bizzyd_nodes(work, services, dsn, tag, nodes=n, shards=12, memcached="") as masters, \
            haproxy(work, services, nodes=n) as lb:
        time.sleep(5.5)  # takeover_delay (5 s): the standby consumers are in place
        messages = traffic.batch(args.messages, tag)
        ingest = ingest_round(dsn, services.amqp_urls()[0], messages)
        say(f"{n} node(s): ingest {ingest['rate']:,.0f} msg/s ({ingest['messages']} in "
            f"{ingest['seconds']:.1f}s; AMQP publish alone {ingest['publish_rate']:,.0f}/s)")
        drain = drain_round(dsn, services.amqp_urls()[0], traffic.batch(args.messages, tag),
                            masters)
        say(f"{n} node(s): ingest drain {drain['rate']:,.0f} msg/s ({drain['messages']} "
            f"queued, committed in {drain['seconds']:.1f}s by {drain['processes']} "
            f"process(es))")
        api = wrk(lb, "/", args.duration, script, None)
        say(f"{n} node(s): API through HAProxy {api['rps']:,.0f} req/s, p50 "
            f"{api['p50_us'] / 1000:.2f} ms, p99 {api['p99_us'] / 1000:.2f} ms, "
            f"errors {api['errors']}, non-2xx {api['status']}")
        stale = None
        if n >= 2:
            stale = staleness(services, n, traffic, tag, hives, args.samples)
            say(f"{n} node(s): staleness publish → committing node p50 "
                f"{stale['first_p50']:.0f} ms p99 {stale['first_p99']:.0f} ms; → other "
                f"nodes' API p50 {stale['other_p50']:.0f} ms p99 {stale['other_p99']:.0f} ms "
                f"({stale['samples']} samples, {stale['missing']} missing)")
    return {"nodes": n, "ingest": ingest, "drain": drain, "api": api, "stale": stale}


def table(results: list[dict]) -> None:
    say("")
    say("| nodes | ingest msg/s end to end | ingest drain msg/s | API req/s via HAProxy | "
        "API p99 ms | staleness other nodes p50 / p99 ms |")
    say("|---|---|---|---|---|---|")
    for r in results:
        s = r["stale"]
        stale = f"{s['other_p50']:.0f} / {s['other_p99']:.0f}" if s else "-"
        say(f"| {r['nodes']} | {r['ingest']['rate']:,.0f} | {r['drain']['rate']:,.0f} | "
            f"{r['api']['rps']:,.0f} | "
            f"{r['api']['p99_us'] / 1000:.1f} | {stale} |")
    if len(results) > 1 and results[0]["nodes"] == 1:
        one, last = results[0], results[-1]
        say(f"ratio {last['nodes']} nodes / 1 node: ingest "
            f"{last['ingest']['rate'] / one['ingest']['rate']:.2f}, drain "
            f"{last['drain']['rate'] / one['drain']['rate']:.2f}, API "
            f"{last['api']['rps'] / one['api']['rps']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
