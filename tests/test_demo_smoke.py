"""The demo end to end: conf/demo.yaml with a small demo city, the simulator, HTTP.

conf/demo.yaml itself is run (copied into a private prefix with this test's port,
database, topic prefix and client id), so the demo's module list, mqtt block and
locations are what is tested: the occupancy endpoints must show the simulator's
traffic from the shared-memory zone, and the ingest metrics must count it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bizzyd_proc import BIZZYD, ROOT, Bizzyd, fetch_raw, free_port, http_get, wait_for
from modules.mqtt_ingest.testing import DEFAULT_MQTT_PORT, sim_command, temporary_database_sync

pytestmark = pytest.mark.services

HIVES = 30
SIM_SENSORS = 20  # the first sensors of the demo city: hives 1 to about 20


def test_demo_config_check() -> None:
    done = subprocess.run([*BIZZYD, "-p", str(ROOT), "-c", str(ROOT / "conf" / "demo.yaml"),
                           "-t"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def demo_config(port: int, dsn: str, tag: str) -> dict:
    config = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
    config.pop("include", None)  # conf/demo.d adds nothing
    assert {"modules.occupancy", "modules.mqtt_ingest"} <= set(config["modules"])
    config.update(worker_processes=1, pid="run/bizzyd.pid", error_log="logs/error.log",
                  error_log_level="info", worker_shutdown_timeout="5s")
    config["database"]["dsn"] = dsn
    config["mqtt"].update(port=int(os.environ.get("BIZZYD_MQTT_PORT", DEFAULT_MQTT_PORT)),
                          topic_prefix=tag, client_id=tag, session_expiry="60s")
    mc = os.environ.get("BIZZYD_MC_PORT")
    if mc:
        config["occupancy"]["memcached"] = f"127.0.0.1:{mc}"
        config["api"]["memcached"] = f"127.0.0.1:{mc}"
    config["api"]["memcached_prefix"] = f"{tag}:api:"
    emulator = os.environ.get("BIZZYD_FIREBASE_EMULATOR")
    if emulator:
        config["firebase"]["emulator"] = emulator
    (server,) = config["http"]["servers"]
    server["listen"] = [f"127.0.0.1:{port}"]
    for loc in server["locations"]:  # the dashboard's build is in the checkout
        if loc.get("alias", "").startswith("modules/"):
            loc["alias"] = str(ROOT / loc["alias"]) + "/"
    # the notifier pushes to the demo's own FAKE FCM location
    config["notifier"]["fcm_url"] = config["notifier"]["fcm_url"].replace(
        "127.0.0.1:8080", f"127.0.0.1:{port}")
    return config


def occupancy(port: int, ids: list[int]) -> dict[int, dict]:
    status, body = http_get(port, "/v1/occupancy?ids=" + ",".join(map(str, ids)))
    assert status == 200, body
    got = json.loads(body)
    assert got["unknown"] == []
    return {h["hive_id"]: h for h in got["hives"]}


def metric(port: int, name: str) -> float:
    status, body = http_get(port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_demo_with_simulator(tmp_path: Path) -> None:
    tag = "demo" + secrets.token_hex(4)
    port = free_port()
    with temporary_database_sync() as dsn:
        loaded = subprocess.run(
            [*BIZZYD, "-p", str(ROOT), "-c", str(ROOT / "conf" / "demo.yaml"), "-g",
             f"database: {{dsn: '{dsn}'}}", "demo-data", "--hives", str(HIVES), "--seed", "1"],
            capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert loaded.returncode == 0, loaded.stderr
        b = Bizzyd(tmp_path, port)
        b.write_config(demo_config(port, dsn, tag))
        try:
            b.start()
            b.wait_log("mqtt ingest slot 0: ", timeout=15)
            wait_for(lambda: metric(port, "bizzyd_mqtt_ingest_connected") == 1, timeout=15,
                     what="ingest connected")
            ids = list(range(1, HIVES + 1))
            wait_for(lambda: all(h["source"] == "zone" for h in occupancy(port, ids).values()),
                     timeout=15, what="the zone to be loaded")
            before = occupancy(port, ids)

            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            sim = subprocess.run(
                sim_command(dsn, int(os.environ.get("BIZZYD_MQTT_PORT", DEFAULT_MQTT_PORT)),
                            tag, str(tmp_path / "truth.json"), "--client-id", f"{tag}-sim",
                            "--sensors", str(SIM_SENSORS), "--duration", "6", "--speed", "600",
                            "--rate", "150", "--hours", "flat", "--wrap-share", "1",
                            "--seed", "3"),
                env=env, capture_output=True, text=True, timeout=90)
            assert sim.returncode == 0, sim.stderr
            truth = json.loads((tmp_path / "truth.json").read_text())
            published = truth["messages"]["published"]
            assert published > 500

            wait_for(lambda: metric(port, "bizzyd_mqtt_ingest_acked_total") >= published,
                     timeout=30, what="every message acknowledged")
            # the zone follows the bus: totals grew for the simulated hives
            simulated = sorted(int(h) for h in truth["hives"])

            def moved() -> list[int]:
                now = occupancy(port, simulated)
                return [h for h in simulated
                        if now[h]["total_in"] > before[h]["total_in"]
                        and now[h]["source"] == "zone"]

            wait_for(lambda: len(moved()) >= len(simulated) // 2, timeout=15,
                     what="occupancy changes in the zone")
            after = occupancy(port, ids)
            assert any(after[h]["occupancy"] != before[h]["occupancy"] for h in simulated)
            # other hives got no reports (the day-reset sweep may still zero their occupancy)
            assert all(after[h]["total_in"] == before[h]["total_in"]
                       for h in ids if h not in simulated)

            # the catalogue: every anonymous GET of the OpenAPI document answers
            status, body = http_get(port, "/v1/openapi.json")
            assert status == 200
            for path, item in json.loads(body)["paths"].items():
                if "get" not in item or item["get"].get("security"):
                    continue  # signed-in endpoints: signed_in() below
                url = path.replace("{id}", "1")  # hive 1 is always active (city.py)
                status, body = http_get(port, url)
                assert status == 200, (url, body)
            # the dashboard (make test builds it): the index names its bundle
            status, body = http_get(port, "/dashboard/")
            assert status == 200 and b"assets/app-" in body, body[:200]
            status, body = http_get(port, "/dashboard/config.json")
            assert status == 200 and json.loads(body)["firebase"]["projectId"] == "demo-bizzy"
            status, body = http_get(port, "/v1/hives/1")
            assert json.loads(body)["occupancy"]["source"] == "zone"
            status, body = http_get(port, "/v1/hives?near=52.52,13.405&radius=20000&type=bar")
            assert status == 200 and json.loads(body)["items"]
            analytics(port, moved()[0])

            # one hive, and its stream: the current state at once, from the zone
            hive = moved()[0]
            status, body = http_get(port, f"/v1/hives/{hive}/occupancy")
            assert status == 200 and json.loads(body)["source"] == "zone"
            status, headers, _ = fetch_raw(port, "/v1/hives/999999/occupancy/stream")
            assert status == 404

            assert metric(port, "bizzyd_mqtt_ingest_received_total") == published
            assert metric(port, "bizzyd_mqtt_ingest_occupancy_updates_total") > 0

            # sensor configuration: PUT then GET (loopback is allowed)
            sensor = "bz2-000005"
            status, _, body = put(port, f"/v1/sensors/{sensor}/config",
                                  {"threshold_cm": 180, "reporting_interval_min": 30,
                                   "status_interval_min": 60, "event_threshold": 5})
            assert status == 201, body
            status, body = http_get(port, f"/v1/sensors/{sensor}/config")
            assert status == 200
            assert json.loads(body)["pending"]["threshold_cm"] == 180

            # a user signs in at the emulator and uses the signed-in endpoints
            signed_in(port, config_emulator(b), dsn)
            demo_push(b, dsn)

            assert b.stop() == 0
            wait_for(lambda: not b.leftovers(), timeout=5, what="no leftovers")
            assert "Traceback" not in b.log()
        finally:
            b.kill_everything()
            # the retained configuration message of this test's topic prefix
            clear_retained(f"{tag}/commands/sensor/bz2-000005")


def analytics(port: int, hive: int) -> None:
    """Ingest kept the 5-minute rollup of a simulated hive: its history shows the
    simulator's entries and the occupancy curve (docs/api.md "Occupancy analytics")."""
    now = datetime.now(UTC)
    window = (f"from={(now - timedelta(hours=2)):%Y-%m-%dT%H:%MZ}"
              f"&to={(now + timedelta(hours=2)):%Y-%m-%dT%H:%MZ}&bucket=5m")
    status, body = http_get(port, f"/v1/hives/{hive}/occupancy/history?{window}")
    assert status == 200, body
    buckets = json.loads(body)["buckets"]
    assert sum(b["entries"] for b in buckets) > 0
    assert any(b["max"] is not None for b in buckets)
    status, body = http_get(port, f"/v1/hives/{hive}/occupancy/history?bucket=2h")
    assert status == 422 and json.loads(body)["invalid_params"][0]["name"] == "bucket"


def config_emulator(b: Bizzyd) -> str:
    return yaml.safe_load(b.conf.read_text())["firebase"]["emulator"]


def signed_in(port: int, emulator: str, dsn: str) -> None:
    auth = token(emulator)
    status, _, body = put(port, "/v1/me/favourites/1", None, auth, "PUT")
    assert status == 204, body
    status, _, body = put(port, "/v1/me", {"nickname": "Demo"}, auth, "PATCH")
    assert status == 200 and json.loads(body)["nickname"] == "Demo", body
    status, _, body = put(port, "/v1/me/favourites", None, auth, "GET")
    assert [i["hive_id"] for i in json.loads(body)["items"]] == [1]
    business(port, auth, dsn, token(emulator))


def token(emulator: str) -> dict[str, str]:
    from modules.auth.testing import emulator_token

    return {"Authorization": "Bearer " + emulator_token(
        emulator, f"demo{secrets.token_hex(4)}@example.com")}


def business(port: int, auth: dict, dsn: str, stranger: dict) -> None:
    """A business opens an account, adds a hive and a daily deal (docs/api.md)."""
    status, _, body = put(port, "/v1/accounts", {"name": "Demo Bar GmbH"}, auth, "POST")
    assert status == 201, body
    account = json.loads(body)["id"]
    hive = {"name": "Demo Bar", "type": "bar", "capacity": 60, "timezone": "Europe/Berlin",
            "status": "active", "address": {"street": "Torstr. 1", "city": "Berlin",
                                            "country": "DE", "latitude": 52.53,
                                            "longitude": 13.4}}
    status, _, body = put(port, f"/v1/accounts/{account}/hives", hive, auth, "POST")
    assert status == 201, body
    hive_id = json.loads(body)["id"]
    deal = {"title": "Happy hour", "kind": "happy_hour", "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2099-01-01T00:00:00Z",
            "daily": {"weekdays": [1, 2, 3, 4, 5], "start": "17:00", "end": "19:00"}}
    status, _, body = put(port, f"/v1/hives/{hive_id}/deals", deal, auth, "POST")
    assert status == 201 and json.loads(body)["next_occurrence"], body
    wait_for(lambda: json.loads(http_get(port, f"/v1/hives/{hive_id}/deals")[1])["items"],
             timeout=10, what="the public deal list shows the new deal")
    image = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 150, 20)).save(image, "PNG")
    status, _, body = put(port, f"/v1/hives/{hive_id}/images", image.getvalue(),
                          {**auth, "Content-Type": "image/png"}, "POST")
    assert status == 201, body
    path = "/images/" + json.loads(body)["url"].split("/images/", 1)[1]
    status, served = http_get(port, path)
    assert status == 200 and served == image.getvalue()
    # the sensor configuration push, now by membership (the sensor moves into the hive)
    sql_sync(dsn, "UPDATE sensor SET hive_id = $1 WHERE external_id = 'bz2-000005'", hive_id)
    config = {"threshold_cm": 170, "reporting_interval_min": 30, "status_interval_min": 60,
              "event_threshold": 5}
    status, _, body = put(port, "/v1/sensors/bz2-000005/config", config, auth)
    assert status == 201, body
    status, _, body = put(port, "/v1/sensors/bz2-000005/config", config, stranger)
    assert status == 404, body
    # as a viewer of the account: may read the configuration, not change it
    viewer = json.loads(put(port, "/v1/me", None, stranger, "GET")[2])["id"]
    status, _, body = put(port, f"/v1/accounts/{account}/members/{viewer}",
                          {"role": "viewer"}, auth)
    assert status == 200, body
    assert put(port, "/v1/sensors/bz2-000005/config", config, stranger)[0] == 403
    status, _, body = put(port, "/v1/sensors/bz2-000005/config", None, stranger, "GET")
    assert status == 200 and json.loads(body)["pending"]["threshold_cm"] == 170, body
    status, _, body = put(port, f"/v1/hives/{hive_id}/sensors", None, auth, "GET")
    assert [s["pending"]["threshold_cm"] for s in json.loads(body)["items"]] == [170], body
    status, _, body = put(port, f"/v1/accounts/{account}/audit", None, auth, "GET")
    assert [a["action"] for a in json.loads(body)["items"]] == [
        "member.put", "sensor.config", "image.create", "deal.create", "hive.create",
        "account.create"], body
    kpis(port, stranger, dsn, hive_id, viewer)


def kpis(port: int, viewer: dict, dsn: str, hive_id: int, viewer_id: int) -> None:
    """modules.kpis as a viewer: the sensor's health; the numbers of a demo account."""
    status, _, body = put(port, f"/v1/hives/{hive_id}/health", None, viewer, "GET")
    assert status == 200, body
    [sensor] = json.loads(body)["sensors"]
    assert sensor["serial"] == "bz2-000005" and sensor["config"]["pending"], sensor
    sql_sync(dsn, "INSERT INTO account_member (account_id, user_id, member_role) "
                  "SELECT account_id, $1, 'viewer' FROM hive WHERE id = 1", viewer_id)
    status, _, body = put(port, "/v1/hives/1/health", None, viewer, "GET")
    assert status == 200 and json.loads(body)["sensors"], body
    account = first_account(dsn)
    status, _, body = put(port, f"/v1/accounts/{account}/kpis", None, viewer, "GET")
    assert status == 200, body
    assert json.loads(body)["total"]["visits"] > 0, body  # the demo's week of history
    status, _, body = put(port, f"/v1/accounts/{account}/feedback", None, viewer, "GET")
    assert status == 200 and "totals" in json.loads(body), body


def first_account(dsn: str) -> int:
    import asyncio

    from modules.mqtt_ingest.testing import fetch

    return asyncio.run(fetch(dsn, "SELECT account_id FROM hive WHERE id = 1"))[0]["account_id"]


def put(port: int, path: str, body: dict | bytes | None, headers: dict | None = None,
        method: str = "PUT") -> tuple[int, object, bytes]:
    """A request with a JSON body (bytes: sent as they are)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        raw = body if isinstance(body, bytes | None) else json.dumps(body)
        conn.request(method, path, raw,
                     {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def demo_push(b: Bizzyd, dsn: str) -> None:
    """The notifier runs against the demo's FAKE FCM, and says so: a new deal at a user's
    favourite hive is pushed there."""
    b.wait_log("Cloud Messaging is a FAKE", timeout=15)
    sql_sync(dsn, """
        WITH u AS (INSERT INTO app_user (firebase_uid) VALUES ('demo-push') RETURNING id),
        d AS (INSERT INTO user_device (fcm_token, user_id, platform)
              SELECT 'demo-push-token', id, 'ios' FROM u),
        f AS (INSERT INTO user_hive (user_id, hive_id, kind) SELECT id, 1, 'favourite' FROM u)
        INSERT INTO user_notification_def (user_id, kind) SELECT id, 'new_deal' FROM u""")
    sql_sync(dsn, "INSERT INTO deal (hive_id, title, valid_from, valid_until) VALUES "
                  "(1, 'Demo push', now(), now() + interval '1 day')")
    b.wait_log("FAKE FCM: push", timeout=15)
    b.wait_log(" to demo-push-token", timeout=15)


def sql_sync(dsn: str, query: str, *args: object) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(query, *args)
        finally:
            await conn.close()
    asyncio.run(run())


def clear_retained(topic: str) -> None:
    import paho.mqtt.publish as publish

    port = int(os.environ.get("BIZZYD_MQTT_PORT", DEFAULT_MQTT_PORT))
    try:
        publish.single(topic, b"", qos=1, retain=True, hostname="127.0.0.1", port=port)
    except OSError as exc:
        print(f"could not clear {topic}: {exc}", file=sys.stderr)
