"""bizzyd-sim: a sensor fleet on MQTT, with the occupancy bizzyd should end up showing.

    python -m modules.mqtt_ingest.sim --dsn postgresql://postgres@127.0.0.1:25432/bizzyd \\
        --port 21883 --duration 60 --speed 120 --rate 500 --loss 0.01 --dup 0.01 \\
        --truth truth.json

Theory of operation
-------------------
The whole run is generated first, deterministically from `--seed`, then published:

1. **Fleet.**  The sensors installed in hives are read from Postgres (firmware v1/v2
   from the sensor rows; the hive's time zone, capacity and type).  `--create-fleet
   HIVES:SENSORS` inserts a synthetic fleet first (prefix `--fleet-prefix`).
2. **Time.**  The simulated window ends now and lasts `duration x speed` seconds, so
   every sensor time lies in the past and publishing message k at real offset
   (t_k - start) / speed ends the run at the present.
3. **Visitors.**  Each hive type has opening hours and peaks (hive-local); arrivals
   follow that curve and are scaled so the messages average `--rate` per real second.
   A visitor enters through one door (sensor), stays a while, and leaves through the
   same door before closing; an arrival that finds the hive full is turned away.
4. **Sensors.**  v1: cumulative 16-bit totals (some start near `--counter-wrap`, so
   they wrap), a report after 5 events (0xFF) and after 30 simulated minutes without
   one (0x20); a report at the window start gives the baseline.  v2: one message per
   `--v2-batch` events with the 8-bit counter.  Every sensor sends a status message
   every `--status-every` minutes.  Device restarts (`--restarts` per sensor and
   simulated day): v1 totals back to 0 with a start report (0x21, or 0x20 with zero
   totals for old firmware), v2 counter back to 0.
5. **Delivery faults.**  Each message is lost with `--loss`, duplicated (a second copy a
   little later) with `--dup`, and delayed behind later ones with `--reorder`.
6. **Ground truth** (`--truth`): per hive, what bizzyd must show given the protocol's
   rules applied to what was actually delivered: a lost v1 report loses nothing (the
   next totals cover it, unless it was a baseline or restart report); a lost v2 message
   loses its events; deltas above `--max-delta` are anomalies.  The occupancy counts
   contributions since the hive's last reset boundary (`--reset-at`, hive-local), as
   max(net, 0); the totals count everything.  The physical occupancy (people inside) is
   given too.  The truth assumes the sensors had no reports stored before the run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import json
import math
import random
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .codec import (
    CounterReport,
    Event,
    EventReport,
    EventType,
    ReportType,
    StatusMessage,
    encode_counter_report,
    encode_event_report,
    encode_status,
    sensor_topic,
)
from .day import day_start, local_to_utc, zone
from .fleet import FleetSensor
from .settings import parse_clock

BIN = 300  # seconds per intensity bin
V1_EVENTS_PER_REPORT = 5
V1_TIMEOUT = 30 * 60
DOOR_MAX_RATE = 1.0  # at most one person per door and second
# MQTT 5 PUBACK reason: accepted, but no subscription matched, so no one will get it
NO_MATCHING_SUBSCRIBERS = 0x10

# opening hours (local, hour of day; closing may be past midnight) and peaks (hour, weight)
OPENING: dict[str, tuple[float, float, tuple[tuple[float, float], ...], float]] = {
    # type: (open, close, peaks, mean stay in minutes)
    "bar": (16, 26, ((21.0, 2.0), (23.5, 1.0)), 60),
    "restaurant": (11, 23, ((12.5, 2.0), (19.5, 2.5)), 70),
    "cafe": (7, 19, ((8.5, 1.5), (13.0, 1.0)), 30),
    "store": (9, 20, ((11.0, 0.8), (17.5, 1.5)), 20),
    "club": (22, 29, ((1.0, 2.5),), 120),
    "gym": (6, 22, ((7.0, 1.5), (18.5, 2.0)), 75),
    "other": (8, 20, ((12.0, 1.0),), 30),
}


def intensity(hive_type: str, local_hour: float) -> float:
    """Relative arrival rate at a local time of day (0 when closed)."""
    opens, closes, peaks, _ = OPENING.get(hive_type, OPENING["other"])
    hour = local_hour if local_hour >= opens else local_hour + 24
    if not opens <= hour < closes - 0.25:  # no arrivals in the last quarter hour
        return 0.0
    rate = 0.3
    for peak, weight in peaks:
        for shift in (0, 24, -24):
            rate += weight * math.exp(-((hour - peak - shift) ** 2) / 2.0)
    return rate


# --- generated messages ---------------------------------------------------------------


@dataclass
class Message:
    at: int  # simulated Unix seconds (when the sensor sends it)
    sensor: int  # index in the fleet
    kind: str  # counters | events | status
    payload: bytes
    report: CounterReport | None = None
    events: tuple[Event, ...] = ()
    seq: int = 0


@dataclass
class Door:
    sensor: FleetSensor
    index: int
    events: list[tuple[int, int]] = field(default_factory=list)  # (t, +1 entry / -1 exit)


@dataclass
class HiveTruth:
    hive_id: int
    timezone: str
    capacity: int
    visitors: int = 0
    turned_away: int = 0
    inside_at_end: int = 0


class Simulation:
    def __init__(self, fleet: list[FleetSensor], args: argparse.Namespace, end: int) -> None:
        self.fleet, self.args = fleet, args
        self.rng = random.Random(args.seed)
        self.end = end
        self.start = end - int(args.duration * args.speed)
        self.doors = [Door(s, i) for i, s in enumerate(fleet)]
        self.hives: dict[int, HiveTruth] = {}
        self.by_hive: dict[int, list[Door]] = defaultdict(list)
        for door in self.doors:
            s = door.sensor
            self.hives.setdefault(s.hive_id, HiveTruth(s.hive_id, s.timezone, s.capacity))
            self.by_hive[s.hive_id].append(door)
        self.messages: list[Message] = []
        self.stats: dict[str, int] = defaultdict(int)

    # -- people --------------------------------------------------------------------------

    def _curve(self, hive: HiveTruth, hive_type: str) -> list[float]:
        if self.args.hours == "flat":
            return [1.0] * len(range(self.start, self.end, BIN))
        tz = zone(hive.timezone)
        weights = []
        for t in range(self.start, self.end, BIN):
            local = datetime.fromtimestamp(t + BIN // 2, tz)
            weights.append(intensity(hive_type, local.hour + local.minute / 60))
        return weights

    def people(self, visitors_total: int) -> None:
        curves = {}
        for hive_id, doors in self.by_hive.items():
            curves[hive_id] = self._curve(self.hives[hive_id], doors[0].sensor.hive_type)
        weight = {h: sum(c) * math.sqrt(self.hives[h].capacity) for h, c in curves.items()}
        total = sum(weight.values()) or 1.0
        for hive_id, curve in sorted(curves.items()):
            if not weight[hive_id]:
                continue
            count = int(round(visitors_total * weight[hive_id] / total))
            self._visits(self.hives[hive_id], self.by_hive[hive_id], curve, count)

    def _visits(self, hive: HiveTruth, doors: list[Door], curve: list[float],
                count: int) -> None:
        rng = self.rng
        hive_type = doors[0].sensor.hive_type
        stay_mean = OPENING.get(hive_type, OPENING["other"])[3] * 60
        cumulative, running = [], 0.0
        for w in curve:
            running += w
            cumulative.append(running)
        # a door lets one person through per second at most: cap the arrivals
        count = min(count, int(len(doors) * (self.end - self.start) * DOOR_MAX_RATE / 4))
        arrivals = sorted(self._arrival(rng, cumulative) for _ in range(count))
        inside: list[tuple[int, int]] = []  # heap of (departure, door)
        for t in arrivals:
            while inside and inside[0][0] <= t:
                heapq.heappop(inside)
            if len(inside) >= hive.capacity:
                hive.turned_away += 1
                continue
            door = rng.randrange(len(doors))
            stay = max(120, min(4 * 3600, int(rng.expovariate(1 / stay_mean))))
            leave = self._closing_bound(curve, t, t + stay)
            hive.visitors += 1
            doors[door].events.append((t, +1))
            if leave <= self.end:
                doors[door].events.append((leave, -1))
            heapq.heappush(inside, (leave, door))
        hive.inside_at_end = sum(1 for leave, _ in inside if leave > self.end)

    def _arrival(self, rng: random.Random, cumulative: list[float]) -> int:
        i = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
        lo = self.start + i * BIN
        return min(self.end - 1, lo + rng.randrange(BIN))

    def _closing_bound(self, curve: list[float], arrival: int, leave: int) -> int:
        """People leave by closing: the first closed bin after the arrival (+10 min)."""
        i = (arrival - self.start) // BIN
        while i < len(curve) and curve[i] > 0:
            i += 1
        if i < len(curve):
            return min(leave, self.start + i * BIN + 600)
        return leave

    # -- sensors -------------------------------------------------------------------------

    def sensors(self) -> None:
        for door in self.doors:
            (self._v1 if door.sensor.firmware == "v1" else self._v2)(door)
            self._statuses(door)
        self.messages.sort(key=lambda m: (m.at, m.sensor, m.seq))

    def _restart_times(self) -> list[int]:
        rate = self.args.restarts / 86400.0
        times, t = [], self.start
        while rate > 0:
            t += int(self.rng.expovariate(rate)) + 1
            if t >= self.end:
                break
            times.append(t)
        return times

    def _local(self, door: Door, t: int) -> datetime:
        return datetime.fromtimestamp(t, zone(door.sensor.timezone)).replace(tzinfo=None)

    def _v1(self, door: Door) -> None:
        a, rng = self.args, self.rng
        wrap = a.counter_wrap
        near = rng.random() < a.wrap_share
        if near:
            total_in, total_out = wrap - rng.randint(1, 150), wrap - rng.randint(1, 150)
        else:
            total_in = rng.randrange(0, 20000)
            total_out = max(0, total_in - rng.randint(0, 50))
        restarts = self._restart_times()
        last_at = [self.start - 1]
        pending = 0

        def report(t: int, kind: ReportType, zero: bool = False) -> None:
            t = max(t, last_at[0] + 1)  # strictly increasing sensor seconds
            last_at[0] = t
            r = CounterReport(0 if zero else total_in, 0 if zero else total_out,
                              self._local(door, t), kind)
            self._emit(Message(t, door.index, "counters",
                               encode_counter_report(r, a.byte_order), report=r))

        report(self.start, ReportType.TIMEOUT)  # the baseline of the run
        timeline = [(t, 0, d) for t, d in door.events] + [(t, 1, 0) for t in restarts]
        timeline.sort()
        for t, is_restart, d in timeline:
            while last_at[0] + V1_TIMEOUT <= t:
                report(last_at[0] + V1_TIMEOUT, ReportType.TIMEOUT)
                pending = 0
            if is_restart:
                total_in = total_out = 0
                pending = 0
                old_firmware = self.rng.random() < 0.3
                report(t, ReportType.TIMEOUT if old_firmware else ReportType.START, zero=True)
                self.stats["restarts"] += 1
                continue
            if d > 0:
                total_in = (total_in + 1) % wrap
            else:
                total_out = (total_out + 1) % wrap
            pending += 1
            if pending >= V1_EVENTS_PER_REPORT:
                report(t, ReportType.COUNT)
                pending = 0
        while last_at[0] + V1_TIMEOUT <= self.end:
            report(last_at[0] + V1_TIMEOUT, ReportType.TIMEOUT)

    def _v2(self, door: Door) -> None:
        a = self.args
        counter = self.rng.randrange(256)
        restarts = set(self._restart_times())
        batch: list[Event] = []
        timeline = sorted([(t, d) for t, d in door.events] + [(t, 0) for t in restarts])

        def flush() -> None:
            if batch:
                report = EventReport(tuple(batch))
                self._emit(Message(int(batch[-1].timestamp.timestamp()), door.index, "events",
                                   encode_event_report(report, a.byte_order),
                                   events=report.events))
                batch.clear()

        for t, d in timeline:
            if d == 0:
                flush()
                counter = 0
                self.stats["restarts"] += 1
                continue
            kind = EventType.ENTRY if d > 0 else EventType.EXIT
            when = datetime.fromtimestamp(t, UTC)
            if batch and (t - batch[0].timestamp.timestamp() > 60 or len(batch) >= a.v2_batch):
                flush()
            batch.append(Event(kind, self.rng.randrange(300, 2500), counter, when))
            counter = (counter + 1) % 256
        flush()

    def _statuses(self, door: Door) -> None:
        every = self.args.status_every * 60
        if every <= 0:
            return
        t = self.start + self.rng.randrange(every)
        booted = datetime.fromtimestamp(self.start - 3600, UTC)
        while t < self.end:
            status = StatusMessage(booted, self.rng.randrange(3300, 4200), 0,
                                   self.rng.randrange(5), self.rng.randrange(10, 31),
                                   (2 << 24) | (1 << 16) | 4, 0)
            self._emit(Message(t, door.index, "status",
                               encode_status(status, self.args.byte_order)))
            t += every

    def _emit(self, message: Message) -> None:
        message.seq = len(self.messages)
        self.messages.append(message)
        self.stats[f"generated_{message.kind}"] += 1

    # -- delivery ------------------------------------------------------------------------

    def delivery(self) -> list[Message]:
        """The publish order after loss, duplication and reordering."""
        a, rng = self.args, self.rng
        out: list[tuple[float, int, Message]] = []
        for i, m in enumerate(self.messages):
            if rng.random() < a.loss:
                self.stats["lost"] += 1
                continue
            at = float(m.at)
            if rng.random() < a.reorder:
                at += rng.uniform(1, 120)  # held back behind later messages
                self.stats["reordered"] += 1
            out.append((at, i, m))
            if rng.random() < a.dup:
                out.append((at + rng.uniform(0, 60), i, m))
                self.stats["duplicated"] += 1
        out.sort(key=lambda x: (x[0], x[1]))
        return [m for _, _, m in out]

    # -- what bizzyd must show -----------------------------------------------------------

    def truth(self, delivered: list[Message]) -> dict[str, Any]:
        a = self.args
        clock = parse_clock(a.reset_at)
        end = datetime.fromtimestamp(self.end, UTC)
        contributions: dict[int, list[tuple[datetime, int, int]]] = defaultdict(list)
        seen: dict[int, dict] = defaultdict(dict)
        for m in delivered:
            if m.kind == "counters":
                r = m.report
                assert r is not None
                seen[m.sensor][(r.sensor_time, r.total_in, r.total_out, int(r.report_type))] = r
            elif m.kind == "events":
                for e in m.events:
                    seen[m.sensor][(e.timestamp, e.counter, int(e.event_type))] = e
        anomalies = 0
        for index, items in seen.items():
            door = self.doors[index]
            hive = door.sensor.hive_id
            tz = zone(door.sensor.timezone)
            if door.sensor.firmware == "v1":
                previous = None
                for key in sorted(items):
                    r = items[key]
                    restart = r.report_type == ReportType.START or (r.total_in == 0
                                                                    and r.total_out == 0)
                    if previous is not None and not restart:
                        d_in = _delta(previous.total_in, r.total_in, a.counter_wrap)
                        d_out = _delta(previous.total_out, r.total_out, a.counter_wrap)
                        if 0 <= d_in <= a.max_delta and 0 <= d_out <= a.max_delta:
                            contributions[hive].append((local_to_utc(r.sensor_time, tz),
                                                        d_in, d_out))
                        else:
                            anomalies += 1
                    previous = r
            else:
                for e in items.values():
                    entry, leave = e.event_type == EventType.ENTRY, e.event_type == EventType.EXIT
                    contributions[hive].append((e.timestamp, int(entry), int(leave)))
        hives = {}
        for hive_id, hive in sorted(self.hives.items()):
            boundary = day_start(end, zone(hive.timezone), clock)
            parts = contributions.get(hive_id, [])
            day = [(i, o) for t, i, o in parts if min(t, end) >= boundary]
            net = sum(i for i, _ in day) - sum(o for _, o in day)
            hives[str(hive_id)] = {
                "expected_occupancy": max(0, net),
                "expected_net": net,
                "expected_total_in": sum(i for _, i, _ in parts),
                "expected_total_out": sum(o for _, _, o in parts),
                "day_start": boundary.isoformat(),
                "true_occupancy": hive.inside_at_end,
                "visitors": hive.visitors,
                "turned_away": hive.turned_away,
                "timezone": hive.timezone,
            }
        return {
            "version": 1,
            "seed": a.seed,
            "start": datetime.fromtimestamp(self.start, UTC).isoformat(),
            "end": end.isoformat(),
            "reset_at": clock.strftime("%H:%M"),
            "counter_wrap": a.counter_wrap,
            "max_delta": a.max_delta,
            "sensors": len(self.doors),
            "messages": {"generated": len(self.messages), "published": len(delivered),
                         **dict(self.stats), "expected_anomalies": anomalies},
            "hives": hives,
        }


def _delta(old: int, new: int, wrap: int) -> int:
    return new - old if new >= old else new + (wrap - old)


def generate(fleet: list[FleetSensor], args: argparse.Namespace,
             end: int | None = None) -> tuple[Simulation, list[Message], dict[str, Any]]:
    """Build the run: messages in publish order and the ground truth."""
    end = end if end is not None else int(time.time())
    sim = Simulation(fleet, args, end)
    # size the crowd: a pilot without visitors counts the fixed messages
    sim.sensors()
    fixed = len(sim.messages)
    sim.messages.clear()
    sim.stats.clear()
    sim.rng = random.Random(args.seed)
    v1 = sum(1 for s in fleet if s.firmware == "v1")
    v2 = len(fleet) - v1
    per_visitor = 2 * (v1 / V1_EVENTS_PER_REPORT + v2 / max(1, args.v2_batch)) / max(1, len(fleet))
    target = int(args.rate * args.duration)
    visitors = max(0, int((target - fixed) / max(per_visitor, 1e-9)))
    sim.people(visitors)
    sim.sensors()
    delivered = sim.delivery()
    return sim, delivered, sim.truth(delivered)


# --- publishing -----------------------------------------------------------------------


def publish(sim: Simulation, delivered: list[Message], args: argparse.Namespace) -> dict:
    acked = [0]
    unrouted = [0]  # accepted, but no subscription matched: the broker dropped it
    refused: list[str] = []
    lock = threading.Lock()

    def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        code = getattr(reason, "value", 0)
        with lock:
            if code >= 0x80:
                refused.append(str(reason))
            else:
                acked[0] += 1
                unrouted[0] += code == NO_MATCHING_SUBSCRIBERS

    clients = [_connect(args, port, n, on_publish) for n, port in enumerate(ports(args))]
    topics = [{k: sensor_topic(d.sensor.external_id, k, args.topic_prefix)
               for k in ("counters", "events", "status")} for d in sim.doors]
    started = time.monotonic()
    last_line = started
    for n, m in enumerate(delivered, 1):
        due = started + (m.at - sim.start) / args.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # a sensor keeps its broker node (its messages stay in order on one connection)
        clients[m.sensor % len(clients)].publish(topics[m.sensor][m.kind], m.payload,
                                                 qos=args.qos)
        now = time.monotonic()
        if args.progress and now - last_line >= 1.0:
            last_line = now
            _progress(sim, m, n, len(delivered), acked[0], now - started)
    deadline = time.monotonic() + args.drain
    while acked[0] < len(delivered) and time.monotonic() < deadline and args.qos > 0:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    if args.progress:
        _progress(sim, delivered[-1] if delivered else None, len(delivered), len(delivered),
                  acked[0], elapsed)
        print(file=sys.stderr)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    if args.qos > 0 and acked[0] < len(delivered):
        why = f" ({len(refused)} refused: {refused[0]})" if refused else ""
        raise SystemExit(f"bizzyd-sim: only {acked[0]} of {len(delivered)} publishes were "
                         f"acknowledged by the broker{why}")
    if unrouted[0]:
        print(f"bizzyd-sim: warning: the broker had no subscriber for {unrouted[0]} of "
              f"{len(delivered)} messages and dropped them (ingest not subscribed yet?); "
              "the ground truth counts them", file=sys.stderr)
    return {"published": len(delivered), "acked": acked[0], "unrouted": unrouted[0],
            "seconds": round(elapsed, 3),
            "rate": round(len(delivered) / elapsed, 1) if elapsed else 0.0}


def ports(args: argparse.Namespace) -> list[int]:
    """--port 1883 or several broker nodes: --port 21011,21021,21031."""
    return [int(p) for p in str(args.port).split(",") if p.strip()]


def _connect(args: argparse.Namespace, port: int, n: int, on_publish: Any) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = str(args.protocol) == "5"
    base = args.client_id or f"bizzyd-sim-{random.getrandbits(32):08x}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{base}-{n}" if n else base,
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    if args.username:
        client.username_pw_set(args.username, args.password)
    client.max_inflight_messages_set(args.inflight)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    client.connect(args.host, port, 30)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"bizzyd-sim: no CONNACK from {args.host}:{port}")
    return client


def _progress(sim: Simulation, m: Message | None, n: int, total: int, acked: int,
              elapsed: float) -> None:
    clock = datetime.fromtimestamp(m.at, UTC).strftime("%H:%M:%S") if m else "-"
    rate = n / elapsed if elapsed else 0.0
    print(f"\rbizzyd-sim: sim {clock}Z  sent {n}/{total}  acked {acked}  "
          f"{rate:,.0f} msg/s  {elapsed:5.1f}s", end="", file=sys.stderr, flush=True)


# --- command line -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bizzyd-sim",
        description="Simulate the Bizzy sensor fleet on MQTT and write the occupancy "
                    "bizzyd should show (ground truth).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("fleet")
    g.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:25432/bizzyd",
                   help="Postgres with the hives and sensors")
    g.add_argument("--sensors", type=int, default=0, help="use the first N sensors (0: all)")
    g.add_argument("--fleet-prefix", default=None,
                   help="only sensors whose external id starts with this")
    g.add_argument("--create-fleet", metavar="HIVES:SENSORS", default=None,
                   help="first insert HIVES hives with SENSORS sensors each")
    g.add_argument("--v2-share", type=float, default=0.5,
                   help="share of v2 sensors in a created fleet")
    g = p.add_argument_group("broker")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", default="1883",
                   help="broker port, or several nodes' ports separated by commas (each "
                        "sensor publishes to one of them)")
    g.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    g.add_argument("--username", default=None)
    g.add_argument("--password", default=None)
    g.add_argument("--client-id", default=None)
    g.add_argument("--topic-prefix", default="")
    g.add_argument("--qos", type=int, default=1, choices=(0, 1))
    g.add_argument("--inflight", type=int, default=1000, help="unacknowledged publishes")
    g.add_argument("--drain", type=float, default=30.0,
                   help="seconds to wait for the broker's acks at the end")
    g = p.add_argument_group("traffic")
    g.add_argument("--duration", type=float, default=60.0, help="real seconds of the run")
    g.add_argument("--speed", type=float, default=60.0,
                   help="simulated seconds per real second (time compression)")
    g.add_argument("--rate", type=float, default=200.0,
                   help="target average messages per real second")
    g.add_argument("--hours", default="real", choices=("real", "flat"),
                   help="arrivals follow opening hours and peaks, or are flat (all open)")
    g.add_argument("--v2-batch", type=int, default=1, help="events per v2 message (1..64)")
    g.add_argument("--status-every", type=int, default=60,
                   help="simulated minutes between status messages (0: none)")
    g.add_argument("--restarts", type=float, default=0.5,
                   help="device restarts per sensor and simulated day")
    g.add_argument("--wrap-share", type=float, default=0.2,
                   help="share of v1 sensors whose totals start just below the wrap")
    g.add_argument("--loss", type=float, default=0.0, help="probability a message is lost")
    g.add_argument("--dup", type=float, default=0.0,
                   help="probability a message is delivered twice")
    g.add_argument("--reorder", type=float, default=0.0,
                   help="probability a message is delayed behind later ones")
    g.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("rules (must match bizzyd's mqtt block)")
    g.add_argument("--counter-wrap", type=int, default=65536)
    g.add_argument("--max-delta", type=int, default=1000)
    g.add_argument("--reset-at", default="04:00")
    g.add_argument("--byte-order", default="big", choices=("big", "little"))
    g = p.add_argument_group("output")
    g.add_argument("--truth", default=None, help="write the ground truth JSON here")
    g.add_argument("--dry-run", action="store_true",
                   help="generate and write the truth, publish nothing")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress line on stderr")
    return p


async def _fleet(args: argparse.Namespace) -> list[FleetSensor]:
    import asyncpg

    from .fleet import create_fleet, load_fleet

    conn = await asyncpg.connect(args.dsn)
    try:
        if args.create_fleet:
            hives, _, per = args.create_fleet.partition(":")
            await create_fleet(conn, int(hives), int(per or 2), args.v2_share,
                               prefix=args.fleet_prefix or "sim", seed=args.seed)
        fleet = await load_fleet(conn, args.fleet_prefix, args.sensors or None)
        if fleet:
            stored = await conn.fetchval(
                "SELECT count(*) FROM sensor_ingest_state WHERE sensor_id = ANY($1::bigint[])",
                [s.id for s in fleet])
            if stored:
                print(f"bizzyd-sim: warning: {stored} of these sensors already have ingest "
                      "state; the ground truth assumes none", file=sys.stderr)
        return fleet
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 1 <= args.v2_batch <= 64:
        raise SystemExit("bizzyd-sim: --v2-batch must be 1..64")
    fleet = asyncio.run(_fleet(args))
    if not fleet:
        raise SystemExit("bizzyd-sim: no sensors installed in hives (use --create-fleet)")
    sim, delivered, truth = generate(fleet, args)
    print(f"bizzyd-sim: {len(fleet)} sensors in {len(sim.hives)} hives, "
          f"{truth['messages']['generated']} messages over "
          f"{args.duration * args.speed / 3600:.1f} simulated hours, {len(delivered)} to "
          f"publish", file=sys.stderr)
    if not args.dry_run:
        truth["run"] = publish(sim, delivered, args)
    if args.truth:
        with open(args.truth, "w") as f:
            json.dump(truth, f, indent=1, sort_keys=True)
    expected = sum(h["expected_occupancy"] for h in truth["hives"].values())
    print(f"bizzyd-sim: done; expected total occupancy {expected} "
          f"(true {sum(h['true_occupancy'] for h in truth['hives'].values())})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
