"""The simulator: its command line, its generation, and its ground truth."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from modules.mqtt_ingest.codec import ReportType, decode, parse_topic
from modules.mqtt_ingest.fleet import FleetSensor
from modules.mqtt_ingest.sim import generate, parser, publish
from modules.mqtt_ingest.testing import DEFAULT_MQTT_PORT

ROOT = Path(__file__).resolve().parents[3]
END = int(datetime(2024, 3, 15, 12, 0, tzinfo=UTC).timestamp())


def fleet(hives: int = 4, per: int = 2, v2: bool | None = None) -> list[FleetSensor]:
    out = []
    for h in range(hives):
        for n in range(per):
            firmware = ("v2" if v2 else "v1") if v2 is not None else ("v2" if n % 2 else "v1")
            out.append(FleetSensor(len(out) + 1, f"s-{h}-{n}", firmware, h + 1, "UTC", 500,
                                   "bar"))
    return out


def args(*extra: str):
    return parser().parse_args(["--hours", "flat", "--duration", "10", "--speed", "360",
                                "--rate", "300", "--restarts", "0", "--no-progress", *extra])


def test_help_lists_every_knob() -> None:
    done = subprocess.run([sys.executable, "-m", "modules.mqtt_ingest.sim", "--help"],
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    for option in ("--sensors", "--speed", "--rate", "--loss", "--dup", "--restarts",
                   "--wrap-share", "--truth", "--create-fleet", "--protocol", "--reset-at"):
        assert option in done.stdout


def test_generation_is_deterministic_and_near_the_target_rate() -> None:
    a = generate(fleet(), args("--loss", "0.05", "--dup", "0.05"), END)
    b = generate(fleet(), args("--loss", "0.05", "--dup", "0.05"), END)
    assert [m.payload for m in a[1]] == [m.payload for m in b[1]]
    assert a[2] == b[2]
    generated = a[2]["messages"]["generated"]
    assert 0.6 * 3000 <= generated <= 1.4 * 3000  # 300/s for 10 s
    times = [m.at for m in a[0].messages]
    assert min(times) >= END - 3600 and max(times) <= END + 60


def test_without_faults_the_truth_is_the_real_occupancy() -> None:
    """(v2: every event is sent at once; a v1 sensor still holds up to 4 unreported
    events at the end, which bizzyd cannot know about.)"""
    _, delivered, truth = generate(fleet(v2=True), args(), END)
    for hive in truth["hives"].values():
        assert hive["expected_occupancy"] == hive["true_occupancy"]
        assert hive["visitors"] > 0
        assert hive["expected_total_in"] - hive["expected_total_out"] == hive["true_occupancy"]


def test_lost_v1_reports_lose_nothing_lost_v2_events_are_lost() -> None:
    _, _, v1_truth = generate(fleet(v2=False), args("--loss", "0.1", "--wrap-share", "0"), END)
    gaps = [h["true_occupancy"] - h["expected_occupancy"] for h in v1_truth["hives"].values()]
    # only a lost baseline or a lost last report can cost events with v1
    assert sum(abs(g) for g in gaps) <= 0.2 * sum(h["true_occupancy"]
                                                  for h in v1_truth["hives"].values())
    _, _, v2_truth = generate(fleet(v2=True), args("--loss", "0.1"), END)
    assert v2_truth["messages"]["lost"] > 0
    assert any(h["true_occupancy"] != h["expected_occupancy"]
               for h in v2_truth["hives"].values())


def test_wraps_and_restarts_appear_in_the_reports() -> None:
    sim, _, truth = generate(fleet(v2=False), args("--wrap-share", "1", "--restarts", "48"),
                             END)
    by_sensor: dict[int, list] = {}
    for m in sim.messages:
        if m.kind == "counters":
            by_sensor.setdefault(m.sensor, []).append(m.report)
    wrapped = restarted = 0
    for reports in by_sensor.values():
        for before, after in zip(reports, reports[1:], strict=False):
            restart = (after.report_type == ReportType.START
                       or after.total_in == 0 == after.total_out)
            restarted += restart
            wrapped += not restart and after.total_in < before.total_in
    assert wrapped > 0 and restarted > 0
    assert truth["messages"]["restarts"] == restarted
    assert truth["messages"]["expected_anomalies"] == 0


def test_reset_boundary_inside_the_window() -> None:
    """A window across 04:00 counts only what happened after it."""
    end = int(datetime(2024, 3, 15, 4, 30, tzinfo=UTC).timestamp())
    _, _, truth = generate(fleet(v2=True), args(), end)
    differs = 0
    for hive in truth["hives"].values():
        assert hive["day_start"] == "2024-03-15T04:00:00+00:00"
        assert hive["expected_total_in"] - hive["expected_total_out"] == hive["true_occupancy"]
        assert hive["expected_occupancy"] == max(0, hive["expected_net"])
        differs += hive["expected_net"] != hive["true_occupancy"]
    assert differs  # people who came before 04:00 are not in the new day


@pytest.mark.services
def test_publishes_what_it_says_to_the_broker() -> None:
    sim, delivered, _ = generate(fleet(2, 2), args("--duration", "2", "--speed", "600",
                                                   "--rate", "200", "--dup", "0.1",
                                                   "--topic-prefix", "simtest",
                                                   "--port", str(DEFAULT_MQTT_PORT),
                                                   "--client-id", f"simtest-{os.getpid()}"),
                                 END)
    seen: Counter = Counter()
    ready = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"simtest-sub-{os.getpid()}",
                      protocol=paho.MQTTv5)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, m: seen.update([(m.topic, bytes(m.payload))])
    sub.connect("127.0.0.1", DEFAULT_MQTT_PORT)
    sub.subscribe("simtest/sensors/#", qos=1)
    sub.loop_start()
    try:
        assert ready.wait(5)
        result = publish(sim, delivered, sim.args)
        assert result["acked"] == len(delivered)
        want = Counter((f"simtest/sensors/{sim.doors[m.sensor].sensor.external_id}/{m.kind}",
                        m.payload) for m in delivered)
        deadline = threading.Event()
        for _ in range(100):
            if sum(seen.values()) >= len(delivered):
                break
            deadline.wait(0.05)
        assert seen == want
        for topic, payload in seen:
            _, kind = parse_topic(topic, "simtest")
            decode(kind, payload)
    finally:
        sub.loop_stop()
        sub.disconnect()


@pytest.mark.services
def test_counts_what_the_broker_had_no_subscriber_for() -> None:
    """A QoS 1 PUBACK 'no matching subscribers' (MQTT 5) is not a delivery: the broker
    dropped the message, so the simulator says so instead of a silently wrong truth."""
    sim, delivered, _ = generate(fleet(1, 2), args("--duration", "1", "--speed", "600",
                                                   "--rate", "50",
                                                   "--topic-prefix", f"nosub{os.getpid()}",
                                                   "--port", str(DEFAULT_MQTT_PORT),
                                                   "--client-id", f"nosub-{os.getpid()}"),
                                 END)
    result = publish(sim, delivered, sim.args)
    assert result["acked"] == len(delivered) > 0
    assert result["unrouted"] == len(delivered)
