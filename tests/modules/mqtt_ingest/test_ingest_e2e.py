"""MQTT ingest end to end: a real master, the local mosquitto, the simulator.

Every test uses its own database, topic prefix and client ids, so it shares the
broker with anything else that runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bizzyd_proc import BIZZYD, Bizzyd, alive, children_of, free_port, http_get, wait_for
from modules.mqtt_ingest.codec import (
    CounterReport,
    ReportType,
    StatusMessage,
    decode_config,
    encode_counter_report,
    encode_status,
    sensor_topic,
)
from modules.mqtt_ingest.testing import (
    DEFAULT_MQTT_PORT,
    execute,
    fetch,
    ingest_config,
    settle,
    sim_command,
    temporary_database_sync,
)

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def dsn():
    with temporary_database_sync() as dsn:
        yield dsn


@pytest.fixture
def tag() -> str:
    return "t" + secrets.token_hex(4)


def config(http_port: int, dsn: str, tag: str, **mqtt) -> dict:
    cfg = ingest_config(http_port, dsn, {"topic_prefix": tag, "client_id": tag,
                                    "session_expiry": "60s", **mqtt})
    cfg["modules"].append("modules.status")
    cfg["http"]["servers"][0]["locations"].insert(
        0, {"location": "= /metrics", "content": "metrics"})
    return cfg


def run_sim(dsn: str, tag: str, tmp: Path, *extra: str, port: int = DEFAULT_MQTT_PORT,
            background: bool = False):
    command = sim_command(dsn, port, tag, str(tmp / "truth.json"), "--create-fleet", "6:2",
                          "--client-id", f"{tag}-sim", *extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if background:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=open(tmp / "sim.log", "w"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp / "truth.json").read_text())


def metrics(port: int) -> dict[str, float]:
    status, body = http_get(port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def ingest_pids(b: Bizzyd) -> list[int]:
    return [p for p, title in children_of(b.pid) if title == "bizzyd: mqtt ingest process"]


TRAFFIC = ("--duration", "5", "--speed", "900", "--rate", "500", "--hours", "flat",
           "--restarts", "20", "--wrap-share", "0.5", "--v2-batch", "2")


def test_ground_truth_with_loss_duplication_reordering_and_two_processes(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag, processes=2))
    try:
        b.start()
        wait_for(lambda: len(ingest_pids(b)) == 2, what="two ingest processes")
        truth = run_sim(dsn, tag, tmp_path, *TRAFFIC, "--loss", "0.03", "--dup", "0.03",
                        "--reorder", "0.02")
        settle(dsn, truth)
        m = truth["messages"]
        assert m["lost"] > 0 and m["duplicated"] > 0 and m["restarts"] > 0
        assert any(h["true_occupancy"] != h["expected_occupancy"]
                   for h in truth["hives"].values()) or m["lost"] < 5
        got = metrics(port)
        assert got["bizzyd_mqtt_ingest_received_total"] == m["published"]
        assert got["bizzyd_mqtt_ingest_acked_total"] == m["published"]
        assert got["bizzyd_mqtt_ingest_duplicates_total"] >= m["duplicated"]
        assert got["bizzyd_mqtt_ingest_connected"] == 2
        # both processes got a share (shared subscription)
        rows = asyncio.run(fetch(dsn, "SELECT count(*) AS n FROM sensor_report"))
        assert rows[0]["n"] > 0
        log = b.log()
        assert log.count("connected to 127.0.0.1") >= 2 and f"$share/bizzyd/{tag}/" in log
        assert b.stop() == 0
        assert not b.leftovers()
    finally:
        b.kill_everything()


def zone_answers(port: int, truth: dict) -> list[str]:
    """Where the HTTP API (served from the occupancy zone) differs from the truth."""
    ids = ",".join(truth["hives"])
    status, body = http_get(port, f"/v1/occupancy?ids={ids}")
    assert status == 200, body
    served = {item["hive_id"]: item for item in json.loads(body)["hives"]}
    out = []
    for hive, want in truth["hives"].items():
        item = served.get(int(hive), {})
        got = (item.get("occupancy"), item.get("total_in"), item.get("total_out"),
               item.get("source"))
        exp = (want["expected_occupancy"], want["expected_total_in"],
               want["expected_total_out"], "zone")
        if got != exp:
            out.append(f"hive {hive}: served {got}, truth {exp}")
    return out


def test_ground_truth_served_from_the_occupancy_zone(tmp_path, dsn, tag):
    """Ingest → bus → cache manager → zone → HTTP, with loss and duplication."""
    port = free_port()
    cfg = config(port, dsn, tag)
    cfg["modules"].append("modules.occupancy")
    cfg["occupancy"] = {"memcached": ""}
    cfg["http"]["servers"][0]["locations"].insert(
        0, {"location": "= /v1/occupancy", "content": "occupancy_many"})
    b = Bizzyd(tmp_path, port)
    b.write_config(cfg)
    try:
        b.start()
        b.wait_log("cache manager: writing the occupancy zone")
        truth = run_sim(dsn, tag, tmp_path, *TRAFFIC, "--loss", "0.03", "--dup", "0.03")
        settle(dsn, truth)
        last: list[str] = []

        def served() -> bool:
            last[:] = zone_answers(port, truth)
            return not last

        try:
            wait_for(served, timeout=20, step=0.25, what="the zone to match the truth")
        except AssertionError:
            raise AssertionError("\n".join(last)) from None
        assert truth["messages"]["lost"] > 0 and truth["messages"]["duplicated"] > 0
        assert b.stop() == 0
        assert not b.leftovers()
    finally:
        b.kill_everything()


def publish(tag: str, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-pub",
                         protocol=paho.MQTTv5)
    client.connect("127.0.0.1", DEFAULT_MQTT_PORT)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_malformed_messages_end_in_ingest_reject_with_their_reason(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag))
    try:
        b.start()
        run_sim(dsn, tag, tmp_path, "--dry-run", "--duration", "1")  # just the fleet
        v1 = "sim-0-0"
        v2 = asyncio.run(fetch(dsn, "SELECT external_id FROM sensor WHERE firmware = 'v2' "
                                    "LIMIT 1"))[0]["external_id"]
        good = bytes.fromhex("007800610078006118030f122a07ffff") + bytes(43)
        cases = {
            # only sensors/+/<kind> is subscribed: a bad topic is a bad sensor id
            "bad_topic": (f"{tag}/sensors/not an id!/counters", good),
            "unknown_sensor": (f"{tag}/sensors/nobody/counters", good),
            "bad_length": (sensor_topic(v1, "counters", tag), good[:12]),
            "bad_marker": (sensor_topic(v1, "counters", tag), good[:15] + b"\x7f"),
            "unknown_report_type": (sensor_topic(v1, "counters", tag), good[:14] + b"\x11\xff"),
            "bad_event_type": (sensor_topic(v2, "events", tag), bytes.fromhex("092a0765f493a800")),
            "field_out_of_range": (sensor_topic(v1, "counters", tag),
                                   good[:11] + b"\x18" + good[12:]),  # hour 24
            "bad_date": (sensor_topic(v1, "counters", tag), good[:9] + b"\x04\x1f" + good[11:]),
        }
        cases["bad_length_status"] = (sensor_topic(v1, "status", tag), bytes(19))
        publish(tag, list(cases.values()))
        query = "SELECT reason, topic, payload FROM ingest_reject ORDER BY id"
        wait_for(lambda: len(asyncio.run(fetch(dsn, query))) == len(cases), timeout=15,
                 what="every reject stored")
        rows = asyncio.run(fetch(dsn, query))
        got = {(r["reason"], r["topic"], bytes(r["payload"])) for r in rows}
        want = {(reason.removesuffix("_status"), t, p) for reason, (t, p) in cases.items()}
        assert got == want
        m = metrics(port)
        assert m['bizzyd_mqtt_ingest_rejects_total{reason="bad_length"}'] == 2
        assert m["bizzyd_mqtt_ingest_acked_total"] == len(cases)
        assert b.stop() == 0
    finally:
        b.kill_everything()


def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, dict, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
                  .encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(payload or b"null")


def test_configuration_push_is_retained_and_applied_by_a_status(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag))
    got: list[paho.MQTTMessage] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-dev", protocol=paho.MQTTv5)
    try:
        b.start()
        run_sim(dsn, tag, tmp_path, "--dry-run", "--duration", "1")
        sensor = "sim-1-0"
        path = f"/v1/sensors/{sensor}/config"
        status, _, body = http(port, "PUT", path, b'{"threshold_cm": 0, "reporting_interval_'
                                                  b'min": "x", "colour": 1}')
        assert status == 400
        assert any("threshold_cm" in r for r in body["reasons"])
        assert any("reporting_interval_min" in r for r in body["reasons"])
        assert any("status_interval_min: required" in r for r in body["reasons"])
        assert any("colour" in r for r in body["reasons"])
        assert http(port, "PUT", "/v1/sensors/nobody/config", json.dumps(
            {"threshold_cm": 180, "reporting_interval_min": 30, "status_interval_min": 60,
             "event_threshold": 5}).encode())[0] == 404
        assert http(port, "DELETE", path)[0] == 405
        values = {"threshold_cm": 180, "reporting_interval_min": 30, "status_interval_min": 60,
                  "event_threshold": 5}
        status, _, first = http(port, "PUT", path, json.dumps(values).encode())
        assert status == 201 and first["published"] is True
        values["threshold_cm"] = 175
        status, _, second = http(port, "PUT", path, json.dumps(values).encode())
        assert status == 201
        config_id = second["pending"]["id"]
        assert config_id > first["pending"]["id"]
        # a device that connects later gets the retained configuration
        sub.on_message = lambda c, u, m: got.append(m)
        sub.connect("127.0.0.1", DEFAULT_MQTT_PORT)
        sub.subscribe(f"{tag}/commands/sensor/{sensor}", qos=1)
        sub.loop_start()
        wait_for(lambda: got, timeout=10, what="the retained configuration")
        assert got[0].retain and got[0].qos == 1
        message = decode_config(got[0].payload)
        assert (message.threshold_cm, message.report_interval_min, message.status_interval_min,
                message.event_threshold, message.configuration_id) == (175, 30, 60, 5, config_id)
        status, _, shown = http(port, "GET", path)
        assert status == 200 and shown["pending"]["id"] == config_id and shown["applied"] is None
        states = asyncio.run(fetch(dsn, "SELECT id, state FROM sensor_config ORDER BY id"))
        assert [s["state"] for s in states] == ["superseded", "pending"]
        # the sensor reports it: applied
        report = StatusMessage(datetime.now(UTC).replace(microsecond=0), 3700, 0, 0, 20,
                               (2 << 24) | 1, config_id)
        publish(tag, [(sensor_topic(sensor, "status", tag), encode_status(report))])
        wait_for(lambda: http(port, "GET", path)[2]["applied"] is not None, timeout=10,
                 what="the configuration to be applied")
        shown = http(port, "GET", path)[2]
        assert shown["applied"]["id"] == config_id and shown["pending"] is None
        assert shown["reported_configuration_id"] == config_id
        assert b.stop() == 0
    finally:
        b.kill_everything()  # first: what follows needs the broker, which may be down
        sub.loop_stop()
        # clear the retained message from the shared broker
        publish(tag, [(f"{tag}/commands/sensor/sim-1-0", b"")], retain=True)


def test_configuration_push_answers_503_when_the_broker_is_unreachable(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag, processes=0, port=free_port(),
                          publish_timeout="1s"))
    try:
        b.start()
        run_sim(dsn, tag, tmp_path, "--dry-run", "--duration", "1")
        values = {"threshold_cm": 180, "reporting_interval_min": 30, "status_interval_min": 60,
                  "event_threshold": 5}
        status, headers, body = http(port, "PUT", "/v1/sensors/sim-0-0/config",
                                     json.dumps(values).encode())
        assert status == 503 and headers["Retry-After"] == "5"
        assert body["published"] is False and body["pending"]["state"] == "pending"
        assert http(port, "GET", "/health")[0] == 200
        assert b.stop() == 0
    finally:
        b.kill_everything()


def test_kill_9_of_the_ingest_process_mid_batch_loses_and_doubles_nothing(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag))
    sim = None
    try:
        b.start()
        # every transaction lasts >= 40 ms: a kill lands inside one
        asyncio.run(execute(dsn, """
            CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.04); RETURN NULL; END $$;
            CREATE TRIGGER slow AFTER UPDATE ON hive_occupancy
                FOR EACH STATEMENT EXECUTE FUNCTION slow();"""))
        sim = run_sim(dsn, tag, tmp_path, *TRAFFIC, "--loss", "0.01", "--dup", "0.01",
                      background=True)
        killed = []
        for delay in (1.5, 1.2, 1.0):
            time.sleep(delay)
            pid = wait_for(lambda: ingest_pids(b), what="an ingest process")[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            wait_for(lambda pid=pid: ingest_pids(b) and ingest_pids(b)[0] != pid, timeout=10,
                     what="the master to respawn the ingest process")
        assert sim.wait(60) == 0
        truth = json.loads((tmp_path / "truth.json").read_text())
        settle(dsn, truth, timeout=60)
        m = metrics(port)
        assert m["bizzyd_mqtt_ingest_redelivered_total"] > 0  # unacked work came back
        assert m["bizzyd_mqtt_ingest_received_total"] > truth["messages"]["published"]
        assert b.log().count("mqtt ingest process") >= 3
        assert b.stop() == 0
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        b.kill_everything()


def test_kill_9_of_the_whole_bizzyd_then_restart(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag, processes=2))
    sim = None
    try:
        b.start()
        sim = run_sim(dsn, tag, tmp_path, *TRAFFIC, "--loss", "0.01", "--dup", "0.01",
                      background=True)
        time.sleep(2.0)
        everyone = [p for p, _ in children_of(b.pid)] + [b.pid]  # children first: no
        # PDEATHSIG-triggered graceful code gets to run
        b.seen_pids.update(everyone)
        for pid in everyone:
            os.kill(pid, signal.SIGKILL)
        b.proc.wait(5)
        wait_for(lambda: not any(alive(p) for p in everyone), what="everything dead")
        time.sleep(1.0)  # the simulator keeps publishing into the persistent sessions
        b.start()
        assert sim.wait(60) == 0
        truth = json.loads((tmp_path / "truth.json").read_text())
        settle(dsn, truth, timeout=60)
        assert b.stop() == 0
        assert not b.leftovers()
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        b.kill_everything()


def test_reload_hands_the_session_over_without_loss(tmp_path, dsn, tag):
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag))
    sim = None
    try:
        b.start()
        sim = run_sim(dsn, tag, tmp_path, *TRAFFIC, background=True)
        time.sleep(1.5)
        old = ingest_pids(b)
        b.send(signal.SIGHUP)
        wait_for(lambda: ingest_pids(b) and not set(ingest_pids(b)) & set(old), timeout=15,
                 what="the new generation's ingest process alone")
        assert sim.wait(60) == 0
        truth = json.loads((tmp_path / "truth.json").read_text())
        settle(dsn, truth)
        assert b.stop() == 0
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        b.kill_everything()


def test_config_check_refuses_several_processes_on_mqtt_3_1_1(tmp_path, dsn, tag):
    import yaml

    port = free_port()
    conf = tmp_path / "conf" / "bizzyd.yaml"
    conf.parent.mkdir()
    conf.write_text(yaml.safe_dump(config(port, dsn, tag, protocol="3.1.1", processes=2)))
    done = subprocess.run([*BIZZYD, "-p", str(tmp_path), "-c", str(conf), "-t"],
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "mqtt.processes" in out and "shared subscriptions" in out and "3.1.1" in out
    conf.write_text(yaml.safe_dump(config(port, dsn, tag, protocol="3.1.1", processes=1)))
    done = subprocess.run([*BIZZYD, "-p", str(tmp_path), "-c", str(conf), "-t"],
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


def test_little_endian_fleet_old_style_restart_and_retained_occupancy(tmp_path, dsn, tag):
    """mqtt.byte_order: little; a v1 restart sent as 0x20 with zero totals; and
    publish_occupancy: the hive's state retained on <prefix>/occupancy/<hive_id>."""
    port = free_port()
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag, byte_order="little", publish_occupancy=True))
    got: list[paho.MQTTMessage] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-display",
                      protocol=paho.MQTTv5)
    try:
        b.start()
        run_sim(dsn, tag, tmp_path, "--dry-run", "--duration", "1")
        reports = [(10, 1, 0, ReportType.TIMEOUT), (20, 4, 1, ReportType.COUNT),
                   (0, 0, 2, ReportType.TIMEOUT), (7, 2, 3, ReportType.COUNT)]
        tz = asyncio.run(fetch(dsn, "SELECT h.timezone FROM sensor s JOIN hive h ON "
                                    "h.id = s.hive_id WHERE external_id = 'sim-0-0'"))
        local = datetime.now(ZoneInfo(tz[0]["timezone"])).replace(tzinfo=None, microsecond=0)
        base = local - timedelta(minutes=30)
        publish(tag, [(sensor_topic("sim-0-0", "counters", tag), encode_counter_report(
            CounterReport(i, o, base + timedelta(minutes=m), kind), "little"))
            for i, o, m, kind in reports])
        query = "SELECT total_in, total_out FROM hive_occupancy WHERE hive_id = 1"
        wait_for(lambda: asyncio.run(fetch(dsn, query)) == [{"total_in": 17, "total_out": 5}],
                 timeout=10, what="10+7 in, 3+2 out")
        sub.on_message = lambda c, u, m: got.append(m)
        sub.connect("127.0.0.1", DEFAULT_MQTT_PORT)
        sub.subscribe(f"{tag}/occupancy/#", qos=1)
        sub.loop_start()
        wait_for(lambda: got and json.loads(got[-1].payload)["total_in"] == 17, timeout=10,
                 what="the occupancy message")
        state = json.loads(got[-1].payload)
        assert got[-1].topic == f"{tag}/occupancy/1"
        assert (state["hive_id"], state["total_out"]) == (1, 5)
        sub.loop_stop()
        sub.disconnect()
        got.clear()
        sub.connect("127.0.0.1", DEFAULT_MQTT_PORT)  # a display that connects later
        sub.subscribe(f"{tag}/occupancy/#", qos=1)
        sub.loop_start()
        wait_for(lambda: got, timeout=10, what="the retained occupancy")
        assert got[0].retain and json.loads(got[0].payload) == state
        assert b.stop() == 0
    finally:
        b.kill_everything()
        sub.loop_stop()
        publish(tag, [(f"{tag}/occupancy/1", b"")], retain=True)
