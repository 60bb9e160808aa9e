#!/usr/bin/env python3
"""MQTT ingest benchmark: end-to-end messages/s and latency, against a bare subscriber.

    .venv/bin/python bench/ingest_bench.py [--messages 40000] [--processes 1]
                                           [--latency-seconds 10] [--markdown FILE]

What is measured, on the local services (Postgres, mosquitto; `scripts/services start`):

1. **Bare paho** (the ceiling): a subscriber process that only counts messages (QoS 1,
   paho's automatic acks) while a publisher process sends `--messages` messages as fast
   as it can.  Rate = messages / (last received - first published).
2. **bizzyd**, same publisher, same kind of messages, on a fresh database with a fleet
   of `--hives` x `--sensors` sensors (half v1, half v2), with `modules.occupancy`
   loaded: publish -> decode -> one transaction per batch -> commit -> ack ->
   OCCUPANCY_UPDATE on the bus -> the cache manager writes the hive's slot in the
   shared-memory zone -> OCCUPANCY_CHANGE published to the workers.  The benchmark
   subscribes to those changes like a worker does (the cache manager publishes a change
   after writing the slot) and stops the clock when the last hive's change shows every
   message in the zone.  Every message adds exactly one entry to its hive (a v2 entry
   event, or a v1 report whose total_in grew by 1), so a change's `total_in` says how
   many of the hive's messages are in.  Ratio = bizzyd / bare (target >= 0.5).
3. **Latency** at half the bizzyd rate for `--latency-seconds`: per message, from
   publish to the zone change that shows it (target p99 < 250 ms).

Publisher, bare subscriber and bizzyd are separate processes; this process only reads
the bus.  The occupancy module runs as in production (cache loader, cache manager,
memcached replica on the local memcached unless `--no-memcached`).  The machine is
shared with whatever else runs: the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import sys
import time
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import asyncpg  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import zmq  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bizzyd.bus import OCCUPANCY_CHANGE, Bus  # noqa: E402
from bizzyd_proc import Bizzyd, children_of, free_port, http_get  # noqa: E402
from modules.mqtt_ingest.codec import (  # noqa: E402
    CounterReport,
    Event,
    EventReport,
    EventType,
    ReportType,
    encode_counter_report,
    encode_event_report,
    sensor_topic,
)
from modules.mqtt_ingest.day import zone  # noqa: E402
from modules.mqtt_ingest.fleet import FleetSensor, create_fleet  # noqa: E402
from modules.mqtt_ingest.testing import (  # noqa: E402
    create_database,
    drop_database,
    ingest_config,
)

TARGET_RATIO = 0.5
TARGET_P99_MS = 250.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- traffic --------------------------------------------------------------------------


@dataclass
class Traffic:
    """Per sensor, a running sequence: message i adds one entry at t0 + i seconds."""

    fleet: list[FleetSensor]
    t0: datetime
    sent: list[int]  # messages generated so far, per sensor (v1 includes the baseline)

    def message(self, s: int, prefix: str) -> tuple[str, bytes, int]:
        sensor = self.fleet[s]
        i = self.sent[s]
        self.sent[s] += 1
        at = self.t0 + timedelta(seconds=i)
        if sensor.firmware == "v1":
            local = at.astimezone(zone(sensor.timezone)).replace(tzinfo=None)
            report = CounterReport(i, 0, local, ReportType.COUNT)
            return (sensor_topic(sensor.external_id, "counters", prefix),
                    encode_counter_report(report), sensor.hive_id)
        event = Event(EventType.ENTRY, 1000, i % 256, at)
        return (sensor_topic(sensor.external_id, "events", prefix),
                encode_event_report(EventReport((event,))), sensor.hive_id)

    def batch(self, count: int, prefix: str) -> list[tuple[str, bytes, int]]:
        n = len(self.fleet)
        return [self.message(k % n, prefix) for k in range(count)]


# --- processes --------------------------------------------------------------------------


def publisher(host: str, port: int, messages: list[tuple[str, bytes, int]], rate: float,
              stamps: str, ready: mp.Event, go: mp.Event) -> None:
    """Publish (QoS 1) as fast as possible (rate 0) or paced; write publish times."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}",
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port, 60)
    client.loop_start()
    times = array("d")
    ready.set()
    go.wait()
    started = time.time()
    infos = []
    for k, (topic, payload, _) in enumerate(messages):
        if rate:
            delay = started + k / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        times.append(time.time())
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    with open(stamps, "wb") as f:
        times.tofile(f)


def bare_subscriber(host: str, port: int, topic: str, expected: int, conn) -> None:
    """Only counts: the ceiling of a Python MQTT consumer on this machine."""
    got = [0, 0.0, 0.0]
    done = mp.Event()

    def on_message(client, userdata, message) -> None:
        now = time.time()
        if got[0] == 0:
            got[1] = now
        got[0] += 1
        got[2] = now
        if got[0] >= expected:
            done.set()

    subscribed = mp.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{os.getpid()}",
                         protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port, 60)
    client.subscribe(topic, qos=1)
    client.loop_start()
    subscribed.wait(10)
    usage = os.times()
    conn.send("ready")
    done.wait(300)
    after = os.times()
    client.disconnect()
    client.loop_stop()
    conn.send({"count": got[0], "first": got[1], "last": got[2],
               "cpu": (after.user + after.system) - (usage.user + usage.system)})


def run_publisher(messages: list, rate: float, tmp: Path, host: str,
                  port: int) -> tuple[mp.Process, str]:
    ctx = mp.get_context("fork")
    stamps = str(tmp / f"stamps-{secrets.token_hex(3)}")
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=publisher, args=(host, port, messages, rate, stamps, ready, go))
    proc.start()
    ready.wait(10)
    go.set()
    return proc, stamps


def read_stamps(path: str, count: int) -> array:
    times = array("d")
    with open(path, "rb") as f:
        times.fromfile(f, count)
    os.unlink(path)
    return times


# --- bizzyd -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def metrics(port: int) -> dict[str, float]:
    out = {}
    for line in http_get(port, "/metrics")[1].decode().splitlines():
        if line.startswith("bizzyd_mqtt_ingest_"):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("bizzyd_mqtt_ingest_")] = float(value)
    return out


class ZoneListener:
    """Subscribes to the cache manager's OCCUPANCY_CHANGE publications, as a worker does:
    a change is published after the hive's slot in the zone was written."""

    def __init__(self, run_dir: str) -> None:
        self.bus = Bus(run_dir)
        self.sock = self.bus.subscriber("occupancy.changes")

    def close(self) -> None:
        self.bus.close()


def wait_committed(listener: ZoneListener, want: dict[int, int], timeout: float,
                   log: list[tuple[float, int, int]]) -> float:
    """Read zone changes until every hive's total_in reached `want`; returns that time."""
    deadline = time.time() + timeout
    last = time.time()
    have: dict[int, int] = {}
    missing = {h for h, n in want.items() if n > 0}
    sock = listener.sock
    while missing:
        if time.time() > deadline:
            raise SystemExit(f"timed out: {len(missing)} hive(s) behind, e.g. "
                             f"{sorted(missing)[:5]} ({[have.get(h) for h in sorted(missing)[:5]]}"
                             f" of {[want[h] for h in sorted(missing)[:5]]})")
        if not sock.poll(200):
            continue
        while True:
            try:
                _, frame = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.time()
            hive, _, _, total_in = OCCUPANCY_CHANGE.decode(frame)[:4]
            log.append((now, hive, total_in))
            have[hive] = max(have.get(hive, 0), total_in)
            if hive in missing and have[hive] >= want[hive]:
                missing.discard(hive)
                last = now
    return last


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def markdown(r: dict, ok_ratio: bool, ok_p99: bool) -> str:
    """A self-contained section for bench/RESULTS.md (appended, one per run)."""
    load = ", ".join(f"{x:.2f}" for x in r["load_average_at_start"])
    return (
        f"\n## MQTT ingest, publish → commit → occupancy zone ({r['when']})\n\n"
        f"`bench/ingest_bench.py`: {r['messages']:,} messages, fleet {r['fleet']} (hives x "
        f"sensors, half v1, half v2), batch_size {r['batch_size']}, modules.occupancy "
        f"loaded (the clock stops at the cache manager's zone change); load average at "
        f"start {load}.\n\n"
        "| ingest processes | bare paho msg/s | bizzyd msg/s (to the zone) | ratio | mean batch"
        " | latency rate msg/s | p50 ms | p90 ms | p99 ms | max ms | ingest µs CPU/msg |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {r['processes']} | {r['bare_msgs_per_s']:,} | {r['bizzyd_msgs_per_s']:,} | "
        f"{r['ratio']} | {r['mean_batch']} | {r['latency_rate']:,} | {r['p50_ms']} | "
        f"{r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['ingest_cpu_us_per_msg']} |\n\n"
        f"Targets: ratio ≥ {TARGET_RATIO} {'PASS' if ok_ratio else 'FAIL'}; p99 < "
        f"{TARGET_P99_MS:g} ms at half rate {'PASS' if ok_p99 else 'FAIL'}.\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=40000, help="messages per throughput run")
    p.add_argument("--hives", type=int, default=50)
    p.add_argument("--sensors", type=int, default=4, help="sensors per hive")
    p.add_argument("--processes", type=int, default=1, help="ingest processes")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=21883, help="mosquitto")
    p.add_argument("--no-memcached", action="store_true",
                   help="no memcached replica (occupancy.memcached empty)")
    p.add_argument("--markdown", default=None, help="append the results to this file")
    args = p.parse_args()

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bizzyd-ingest-bench-{secrets.token_hex(3)}"
    tmp.mkdir(parents=True)
    load_at_start = os.getloadavg()
    say(f"load average {load_at_start}; {os.cpu_count()} CPUs")
    dsn = asyncio.run(create_database())
    b: Bizzyd | None = None
    listener: ZoneListener | None = None
    try:
        async def make_fleet() -> list[FleetSensor]:
            conn = await asyncpg.connect(dsn)
            try:
                return await create_fleet(conn, args.hives, args.sensors, 0.5, prefix="b")
            finally:
                await conn.close()

        fleet = asyncio.run(make_fleet())
        traffic = Traffic(fleet, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2),
                          [0] * len(fleet))
        tag = "bench" + secrets.token_hex(3)

        # 1. bare subscriber -----------------------------------------------------------
        bare_traffic = Traffic(fleet, traffic.t0, [0] * len(fleet))
        messages = bare_traffic.batch(args.messages, tag + "bare")
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        sub = ctx.Process(target=bare_subscriber, args=(args.host, args.port,
                                                        f"{tag}bare/sensors/#", len(messages),
                                                        child))
        sub.start()
        assert parent.recv() == "ready"
        pub, stamps = run_publisher(messages, 0, tmp, args.host, args.port)
        pub.join(300)
        bare = parent.recv()
        sub.join(10)
        published = read_stamps(stamps, len(messages))
        bare_rate = bare["count"] / (bare["last"] - published[0])
        pub_rate = len(messages) / (published[-1] - published[0])
        say(f"bare paho subscriber: {bare['count']} messages, {bare_rate:,.0f} msg/s "
            f"(publisher {pub_rate:,.0f} msg/s), {bare['cpu'] / bare['count'] * 1e6:.1f} "
            f"µs CPU/message")

        # 2. bizzyd ----------------------------------------------------------------------
        port = free_port()
        b = Bizzyd(tmp / "bizzyd", port)
        (tmp / "bizzyd").mkdir()
        config = ingest_config(port, dsn, {
            "topic_prefix": tag, "client_id": tag, "processes": args.processes,
            "batch_size": args.batch_size, "receive_maximum": max(1000, 2 * args.batch_size),
            "session_expiry": "60s"}, error_log_level="notice")
        config["modules"] += ["modules.status", "modules.occupancy"]
        mc = "" if args.no_memcached else "127.0.0.1:" + os.environ.get("BIZZYD_MC_PORT",
                                                                        "21211")
        config["occupancy"] = {"memcached": mc}
        config["http"]["servers"][0]["locations"].insert(
            0, {"location": "= /metrics", "content": "metrics"})
        b.write_config(config)
        listener = ZoneListener(str(tmp / "bizzyd" / "run"))
        b.start()
        b.wait_log("cache loader: loaded", timeout=30)
        time.sleep(1.0)
        ingest = [pid for pid, t in children_of(b.pid) if t == "bizzyd: mqtt ingest process"]
        # warm-up: v1 baselines and one message per sensor, so every hive row exists
        warm = [traffic.message(s, tag) for s in range(len(fleet))]
        warm += [traffic.message(s, tag) for s in range(len(fleet))]
        want = {}
        for s in fleet:
            want[s.hive_id] = want.get(s.hive_id, 0) + (2 if s.firmware == "v2" else 1)
        log: list[tuple[float, int, int]] = []
        pub, stamps = run_publisher(warm, 0, tmp, args.host, args.port)
        pub.join(60)
        read_stamps(stamps, len(warm))
        wait_committed(listener, want, 60, log)

        messages = traffic.batch(args.messages, tag)
        for _, _, hive in messages:
            want[hive] += 1
        cpu_before = sum(cpu_seconds(pid) for pid in ingest)
        log.clear()
        pub, stamps = run_publisher(messages, 0, tmp, args.host, args.port)
        end = wait_committed(listener, want, 300, log)
        pub.join(60)
        published = read_stamps(stamps, len(messages))
        cpu = sum(cpu_seconds(pid) for pid in ingest) - cpu_before
        rate = len(messages) / (end - published[0])
        pub_rate2 = len(messages) / (published[-1] - published[0])
        m1 = metrics(port)
        say(f"bizzyd ingest ({args.processes} process(es)): {rate:,.0f} msg/s end to end "
            f"(publisher {pub_rate2:,.0f} msg/s), {cpu / len(messages) * 1e6:.1f} µs CPU/message"
            f", ratio {rate / bare_rate:.2f}")

        # 3. latency at half that rate ---------------------------------------------------
        half = rate / 2
        count = int(half * args.latency_seconds)
        messages = traffic.batch(count, tag)
        base = dict(want)
        for _, _, hive in messages:
            want[hive] += 1
        log.clear()
        pub, stamps = run_publisher(messages, half, tmp, args.host, args.port)
        wait_committed(listener, want, 120, log)
        pub.join(60)
        published = read_stamps(stamps, len(messages))
        # message k of hive h is in once an update of h shows total_in >= base + k
        seen_at: dict[int, list[tuple[int, float]]] = {}
        for at, hive, total_in in log:
            seen_at.setdefault(hive, []).append((total_in, at))
        counters = dict(base)
        latencies = []
        cursor = {h: 0 for h in seen_at}
        for (_, _, hive), sent in zip(messages, published, strict=True):
            counters[hive] += 1
            updates = seen_at[hive]
            i = cursor[hive]
            while updates[i][0] < counters[hive]:
                i += 1
            cursor[hive] = i
            latencies.append((updates[i][1] - sent) * 1000)
        m2 = metrics(port)
        p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
        say(f"latency at {half:,.0f} msg/s ({count} messages): p50 {p50:.1f} ms, p90 {p90:.1f} "
            f"ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms")
        batches = m1["batch_size_count"]
        mean_batch = m1["batch_size_sum"] / batches if batches else 0
        commit_ms = m1["commit_microseconds_sum"] / max(1, m1["commit_microseconds_count"]) / 1e3
        lat_batches = m2["batch_size_count"] - m1["batch_size_count"]
        lat_mean = (m2["batch_size_sum"] - m1["batch_size_sum"]) / lat_batches if lat_batches \
            else 0
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average_at_start": load_at_start,
            "messages": args.messages, "fleet": f"{args.hives}x{args.sensors}",
            "processes": args.processes, "batch_size": args.batch_size,
            "bare_msgs_per_s": round(bare_rate), "bizzyd_msgs_per_s": round(rate),
            "ratio": round(rate / bare_rate, 2),
            "publisher_msgs_per_s": round(pub_rate2),
            "ingest_cpu_us_per_msg": round(cpu / args.messages * 1e6, 1),
            "bare_cpu_us_per_msg": round(bare["cpu"] / bare["count"] * 1e6, 1),
            "mean_batch": round(mean_batch, 1), "mean_commit_ms": round(commit_ms, 2),
            "latency_rate": round(half), "latency_mean_batch": round(lat_mean, 1),
            "p50_ms": round(p50, 1), "p90_ms": round(p90, 1), "p99_ms": round(p99, 1),
            "max_ms": round(max(latencies), 1),
            "duplicates": m2.get("duplicates_total", 0), "rejects": sum(
                v for k, v in m2.items() if k.startswith("rejects_total")),
        }
        ok_ratio = result["ratio"] >= TARGET_RATIO
        ok_p99 = result["p99_ms"] < TARGET_P99_MS
        say(f"ratio {result['ratio']} (target >= {TARGET_RATIO}: "
            f"{'PASS' if ok_ratio else 'FAIL'}), p99 {result['p99_ms']} ms (target < "
            f"{TARGET_P99_MS:g}: {'PASS' if ok_p99 else 'FAIL'})")
        print(json.dumps(result, indent=1))
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write(markdown(result, ok_ratio, ok_p99))
        return 0 if ok_ratio and ok_p99 else 1
    finally:
        if listener is not None:
            listener.close()
        if b is not None:
            with contextlib.suppress(Exception):
                b.stop()
            b.kill_everything()
        asyncio.run(drop_database(dsn))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
