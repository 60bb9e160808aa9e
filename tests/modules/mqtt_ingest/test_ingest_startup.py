"""Occupancy at start-up (issue 14): what the zone serves in the first seconds.

A real bizzyd (master, cache loader and manager, ingest) on the shared Postgres and
mosquitto. Before it starts, the broker holds messages for its persistent session
and some hives' occupancy day is over (the start-up reset sweep resets them): both
are commits that ingest makes right at start, the case where the first reconcile
used to correct most hives of the demo city. A second fleet publishes while bizzyd
starts. Within 5 s of bizzyd answering, the occupancy served over HTTP equals the
ground truth, and the reconcile corrected nothing (`bizzyd_occupancy_...` metrics).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bizzyd_proc import Bizzyd, free_port, http_get, wait_for
from modules.mqtt_ingest.codec import subscription_topics
from modules.mqtt_ingest.testing import (
    DEFAULT_MQTT_PORT,
    ingest_config,
    sim_command,
    temporary_database_sync,
)
from modules.occupancy.zone import DRIFT_KINDS

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[3]
STALE_HIVES = 50  # hives whose day is over: the start-up sweep resets them (the
# hive_timezone_valid trigger costs ~50 ms an insert: keep it small)
FAST = ("--speed", "900", "--rate", "300", "--hours", "flat", "--wrap-share", "0.5",
        "--drain", "10")


@pytest.fixture
def dsn():
    with temporary_database_sync() as dsn:
        yield dsn


def config(port: int, dsn: str, tag: str) -> dict:
    cfg = ingest_config(port, dsn, {"topic_prefix": tag, "client_id": tag,
                                    "session_expiry": "60s"})
    cfg["modules"] += ["modules.status", "modules.occupancy"]
    cfg["occupancy"] = {"memcached": ""}
    cfg["http"]["servers"][0]["locations"][:0] = [
        {"location": "= /metrics", "content": "metrics"},
        {"location": "= /v1/occupancy", "content": "occupancy_many"}]
    return cfg


def open_session(tag: str) -> None:
    """The persistent session ingest slot 0 left at its last stop: the broker queues
    what sensors publish for it until bizzyd connects."""
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-ingest-0",
                         protocol=paho.MQTTv5)
    client.on_subscribe = lambda *args: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 60
    client.connect("127.0.0.1", DEFAULT_MQTT_PORT, clean_start=False, properties=props)
    client.loop_start()
    try:
        client.subscribe([(t, 1) for t in subscription_topics(tag)])
        assert subscribed.wait(10), "no SUBACK"
    finally:
        client.disconnect()
        client.loop_stop()


def sim(dsn: str, tag: str, tmp: Path, fleet: str, *extra: str,
        background: bool = False) -> subprocess.Popen | dict:
    truth = tmp / f"truth-{fleet}.json"
    command = sim_command(dsn, DEFAULT_MQTT_PORT, tag, str(truth), "--create-fleet", "8:2",
                          "--fleet-prefix", fleet, "--client-id", f"{tag}-{fleet}",
                          *FAST, *extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp / f"sim-{fleet}.log", "w") as log:  # the child keeps its own copy
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    if background:
        return proc
    assert proc.wait(60) == 0, (tmp / f"sim-{fleet}.log").read_text()
    return json.loads(truth.read_text())


async def stale_hives(dsn: str, n: int) -> dict[int, tuple[int, int, int]]:
    """n hives whose occupancy day ended two days ago; their truth after the reset."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r["id"] for r in await conn.fetch("""
            WITH acc AS (INSERT INTO account (name) VALUES ('old') RETURNING id),
            addr AS (INSERT INTO address (street, city, country)
                     SELECT 'Old street ' || g, 'City', 'DE' FROM generate_series(1, $1) g
                     RETURNING id)
            INSERT INTO hive (account_id, address_id, hive_type_id, status_id, name,
                              timezone, capacity)
            SELECT (SELECT id FROM acc), addr.id, (SELECT id FROM hive_type LIMIT 1),
                   (SELECT id FROM hive_status WHERE code = 'active'), 'Old ' || addr.id,
                   'Europe/Berlin', 100
            FROM addr RETURNING id""", n)]
        await conn.execute("""
            INSERT INTO hive_occupancy (hive_id, occupancy, total_in, total_out,
                                        updated_at, day_start, day_in, day_out)
            SELECT id, 7, 100, 93, now() - interval '2 days', now() - interval '2 days',
                   7, 0
            FROM unnest($1::bigint[]) id""", ids)
    finally:
        await conn.close()
    return {h: (0, 100, 93) for h in ids}


def expected(truth: dict) -> dict[int, tuple[int, int, int]]:
    return {int(h): (w["expected_occupancy"], w["expected_total_in"],
                     w["expected_total_out"]) for h, w in truth["hives"].items()}


def served_differences(port: int, want: dict[int, tuple[int, int, int]]) -> list[str]:
    out = []
    ids = sorted(want)
    for i in range(0, len(ids), 100):  # occupancy.max_ids
        status, body = http_get(port, "/v1/occupancy?ids=" + ",".join(map(str, ids[i:i + 100])))
        assert status == 200, body
        for item in json.loads(body)["hives"]:
            got = (item["occupancy"], item["total_in"], item["total_out"])
            if got != want[item["hive_id"]] or item["source"] != "zone":
                out.append(f"hive {item['hive_id']}: served {got} from {item['source']}, "
                           f"truth {want[item['hive_id']]}")
    return out


def metrics(port: int) -> dict[str, float]:
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in body.decode().splitlines()
             if line and not line.startswith("#"))}


def test_first_seconds_serve_the_truth_and_the_reconcile_corrects_nothing(tmp_path, dsn):
    tag = "t" + secrets.token_hex(4)
    port = free_port()
    want = asyncio.run(stale_hives(dsn, STALE_HIVES))
    open_session(tag)
    want |= expected(sim(dsn, tag, tmp_path, "queued", "--duration", "2"))
    b = Bizzyd(tmp_path, port)
    b.write_config(config(port, dsn, tag))
    live = None
    try:
        live = sim(dsn, tag, tmp_path, "live", "--duration", "1", background=True)
        b.start()
        serving = time.monotonic()
        assert live.wait(30) == 0, (tmp_path / "sim-live.log").read_text()
        want |= expected(json.loads((tmp_path / "truth-live.json").read_text()))
        last: list[str] = []

        def matches() -> bool:
            last[:] = served_differences(port, want)
            return not last

        try:
            wait_for(matches, timeout=max(0.0, serving + 5.0 - time.monotonic()), step=0.1,
                     what="the zone to serve the ground truth")
        except AssertionError:
            raise AssertionError("within 5 s of start:\n" + "\n".join(last[:20])) from None
        got = metrics(port)
        assert got["bizzyd_occupancy_reconciles_total"] >= 1
        corrections = {k: got[f'bizzyd_occupancy_reconcile_corrections_total{{kind="{k}"}}']
                       for k in DRIFT_KINDS}
        assert corrections == dict.fromkeys(DRIFT_KINDS, 0.0), corrections
        assert got["bizzyd_mqtt_ingest_resets_total"] == STALE_HIVES
        assert "corrected drift" not in b.log()
        assert b.stop() == 0
    finally:
        if live is not None and live.poll() is None:
            live.kill()
        b.kill_everything()
