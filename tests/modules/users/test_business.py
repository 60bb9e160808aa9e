"""Business accounts end to end: accounts, members and roles, hives and deals with their
validation, daily deals, the audit trail, and the public catalogue following the writes
(Firebase Auth emulator, Postgres, memcached)."""

from __future__ import annotations

import copy
import datetime as dt
import secrets
from collections.abc import Iterator

import httpx
import pytest

from bizzyd_proc import wait_for

from .business_support import DEAL, HIVE, bearer, expect, start
from .conftest import PROJECT, emulator_address, new_token, sql

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def biz(tmp_path_factory: pytest.TempPathFactory, users_dsn: str) -> Iterator[httpx.Client]:
    yield from start(tmp_path_factory, users_dsn, emulator_address(), PROJECT)


def signed_in(biz: httpx.Client) -> tuple[dict[str, str], int]:
    h = bearer(new_token(biz.emulator))
    return h, biz.get("/v1/me", headers=h).json()["id"]


def new_account(biz: httpx.Client, h: dict[str, str], name: str = "Bee GmbH") -> dict:
    return expect(biz.post("/v1/accounts", json={"name": name}, headers=h), 201)


def test_opening_an_account_makes_the_caller_its_admin(biz: httpx.Client) -> None:
    h, me = signed_in(biz)
    account = new_account(biz, h)
    assert account["role"] == "admin"
    members = expect(biz.get(f"/v1/accounts/{account['id']}/members", headers=h), 200)
    assert [(m["user_id"], m["role"]) for m in members["items"]] == [(me, "admin")]
    r = biz.patch(f"/v1/accounts/{account['id']}", json={"billing_email": "b@example.com"},
                  headers=h)
    assert expect(r, 200)["billing_email"] == "b@example.com"
    expect(biz.patch(f"/v1/accounts/{account['id']}", json={"billing_email": "nope"},
                     headers=h), 422, "billing_email")
    expect(biz.post("/v1/accounts", json={"name": " "}, headers=h), 422, "name")
    expect(biz.post("/v1/accounts", json={"name": "x"}), 401)
    audit = expect(biz.get(f"/v1/accounts/{account['id']}/audit", headers=h), 200)["items"]
    assert [a["action"] for a in audit] == ["account.update", "account.create"]
    assert audit[0]["user_id"] == me
    assert audit[0]["before"]["billing_email"] is None
    assert audit[0]["after"]["billing_email"] == "b@example.com"


def test_members_and_the_last_admin(biz: httpx.Client) -> None:
    h, me = signed_in(biz)
    _, other = signed_in(biz)
    account = new_account(biz, h)["id"]
    base = f"/v1/accounts/{account}/members"
    assert expect(biz.put(f"{base}/{other}", json={"role": "manager"}, headers=h),
                  200)["role"] == "manager"
    expect(biz.put(f"{base}/{other}", json={"role": "owner"}, headers=h), 422, "role")
    expect(biz.put(f"{base}/999999999", json={"role": "viewer"}, headers=h), 404)
    # the only admin can neither step down nor leave
    expect(biz.put(f"{base}/{me}", json={"role": "viewer"}, headers=h), 409)
    expect(biz.delete(f"{base}/{me}", headers=h), 409)
    expect(biz.put(f"{base}/{other}", json={"role": "admin"}, headers=h), 200)
    expect(biz.delete(f"{base}/{me}", headers=h), 204)
    # no longer a member: the account is not found
    expect(biz.get(f"/v1/accounts/{account}", headers=h), 404)
    rows = sql(biz.dsn, "SELECT user_id, member_role FROM account_member WHERE account_id = $1",
               account)
    assert [(r["user_id"], r["member_role"]) for r in rows] == [(other, "admin")]
    actions = sql(biz.dsn, "SELECT action, entity_id FROM account_audit WHERE account_id = $1 "
                  "ORDER BY id", account)
    assert [(a["action"], a["entity_id"]) for a in actions] == [
        ("account.create", account), ("member.put", other), ("member.put", other),
        ("member.delete", me)]


@pytest.mark.parametrize(("change", "param"), [
    ({"capacity": 0}, "capacity"),
    ({"capacity": -5}, "capacity"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": "posix/Europe/Berlin"}, "timezone"),
    ({"type": "spaceport"}, "type"),
    ({"name": ""}, "name"),
    ({"address": {"street": "a", "city": "b", "country": "DE", "latitude": 52.0}},
     "address.longitude"),
    ({"address": {"street": "a", "city": "b", "country": "DE", "latitude": 91,
                  "longitude": 0}}, "address.latitude"),
    ({"address": {"street": "a", "city": "b", "country": "Germany"}}, "address.country"),
])
def test_bad_hives_are_422_naming_the_field_and_nothing_is_written(
        biz: httpx.Client, change: dict, param: str) -> None:
    h, _ = signed_in(biz)
    account = new_account(biz, h)["id"]
    expect(biz.post(f"/v1/accounts/{account}/hives", json={**HIVE, **change}, headers=h),
           422, param)
    assert sql(biz.dsn, "SELECT count(*) FROM hive WHERE account_id = $1", account)[0][0] == 0
    assert sql(biz.dsn, "SELECT count(*) FROM account_audit WHERE account_id = $1 "
               "AND action LIKE 'hive.%'", account)[0][0] == 0


def test_a_hive_is_managed_and_the_public_catalogue_follows(biz: httpx.Client) -> None:
    h, _ = signed_in(biz)
    account = new_account(biz, h)["id"]
    hive = expect(biz.post(f"/v1/accounts/{account}/hives", json=HIVE, headers=h), 201)
    assert hive["account_id"] == account and hive["timezone"] == "Europe/Berlin"
    public = f"/v1/hives/{hive['id']}"
    assert expect(biz.get(public), 200)["name"] == "Bee Bar"   # cached now
    expect(biz.patch(public, json={"capacity": 0}, headers=h), 422, "capacity")
    expect(biz.patch(public, json={"timezone": "Europe/Nowhere"}, headers=h), 422, "timezone")
    r = biz.patch(public, json={"name": "Honey Bar", "capacity": 90}, headers=h)
    assert expect(r, 200)["capacity"] == 90
    wait_for(lambda: biz.get(public).json().get("name") == "Honey Bar", timeout=10,
             what="the public hive shows the new name")
    expect(biz.delete(public, headers=h), 204)
    listed = expect(biz.get(f"/v1/accounts/{account}/hives", headers=h), 200)["items"]
    assert [(x["id"], x["status"], x["name"]) for x in listed] == [
        (hive["id"], "closed", "Honey Bar")]
    wait_for(lambda: biz.get(public).status_code == 404, timeout=10,
             what="the closed hive leaves the catalogue")
    status = sql(biz.dsn, "SELECT s.code FROM hive h JOIN hive_status s ON s.id = h.status_id "
                 "WHERE h.id = $1", hive["id"])[0][0]
    assert status == "closed"
    audit = expect(biz.get(f"/v1/accounts/{account}/audit", headers=h), 200)["items"]
    assert [a["action"] for a in audit][:3] == ["hive.close", "hive.update", "hive.create"]
    assert audit[1]["before"]["name"] == "Bee Bar" and audit[1]["after"]["name"] == "Honey Bar"


@pytest.fixture
def own_hive(biz: httpx.Client) -> tuple[dict[str, str], int]:
    h, _ = signed_in(biz)
    account = new_account(biz, h)["id"]
    hive = expect(biz.post(f"/v1/accounts/{account}/hives", json=HIVE, headers=h), 201)
    return h, hive["id"]


@pytest.mark.parametrize(("change", "param"), [
    ({"valid_until": "2025-12-31T00:00:00Z"}, "valid_until"),
    ({"valid_until": DEAL["valid_from"]}, "valid_until"),
    ({"valid_from": "2026-01-01T00:00:00"}, "valid_from"),          # no zone
    ({"kind": "bogof"}, "kind"),
    ({"daily": {"weekdays": [8], "start": "17:00", "end": "19:00"}}, "daily.weekdays[0]"),
    ({"daily": {"weekdays": [], "start": "17:00", "end": "19:00"}}, "daily.weekdays"),
    ({"daily": {"weekdays": [1], "start": "25:00", "end": "19:00"}}, "daily.start"),
    ({"daily": {"weekdays": [1], "start": "17:00", "end": "17:00"}}, "daily.end"),
])
def test_bad_deals_are_422_naming_the_field(biz: httpx.Client, own_hive: tuple,
                                            change: dict, param: str) -> None:
    h, hive = own_hive
    expect(biz.post(f"/v1/hives/{hive}/deals", json={**DEAL, **change}, headers=h), 422,
           param)
    assert sql(biz.dsn, "SELECT count(*) FROM deal WHERE hive_id = $1", hive)[0][0] == 0


def test_deals_are_written_and_shown_publicly(biz: httpx.Client, own_hive: tuple) -> None:
    h, hive = own_hive
    public = f"/v1/hives/{hive}/deals"
    assert expect(biz.get(public), 200)["items"] == []
    deal = expect(biz.post(public, json=DEAL, headers=h), 201)
    assert deal["daily"] is None
    assert deal["next_occurrence"] == {"starts_at": "2026-01-01T00:00:00Z",
                                       "ends_at": "2099-01-01T00:00:00Z"}
    wait_for(lambda: [d["id"] for d in biz.get(public).json()["items"]] == [deal["id"]],
             timeout=10, what="the public deals show the new deal")
    near = "/v1/deals?near=52.53,13.38&radius=50&limit=100"   # where HIVE is
    feed = wait_for(lambda: [i["deal"] for i in biz.get(near).json()["items"]
                             if i["deal"]["id"] == deal["id"]],
                    timeout=10, what="the deal feed shows the new deal")
    assert feed[0]["next_occurrence"] == deal["next_occurrence"] and feed[0]["daily"] is None
    r = biz.patch(f"/v1/deals/{deal['id']}", json={"valid_until": "2025-06-01T00:00:00Z"},
                  headers=h)
    expect(r, 422, "valid_until")
    r = biz.patch(f"/v1/deals/{deal['id']}", json={"title": "Three for two"}, headers=h)
    assert expect(r, 200)["title"] == "Three for two"
    wait_for(lambda: biz.get(public).json()["items"][0]["title"] == "Three for two",
             timeout=10, what="the public deal shows the new title")
    expect(biz.delete(f"/v1/deals/{deal['id']}", headers=h), 204)
    expect(biz.delete(f"/v1/deals/{deal['id']}", headers=h), 404)
    wait_for(lambda: biz.get(public).json()["items"] == [], timeout=10,
             what="the deleted deal leaves the public list")


def occurrence(dsn: str, deal: int, at: str) -> tuple[str, str] | None:
    row = sql(dsn, "SELECT n.starts_at, n.ends_at FROM deal d JOIN hive h ON h.id = d.hive_id,"
              " deal_next_occurrence(d, h.timezone, $2) n WHERE d.id = $1", deal,
              dt.datetime.fromisoformat(at))[0]
    if row["starts_at"] is None:
        return None
    return (row["starts_at"].astimezone(dt.UTC).strftime("%m-%d %H:%M"),
            row["ends_at"].astimezone(dt.UTC).strftime("%m-%d %H:%M"))


def test_daily_deals_recur_in_the_hive_time_zone_across_dst(biz: httpx.Client,
                                                           own_hive: tuple) -> None:
    h, hive = own_hive
    body = {**DEAL, "valid_from": "2027-03-01T00:00:00Z", "valid_until": "2027-11-15T00:00:00Z",
            "daily": {"weekdays": [7, 7, 3], "start": "17:00", "end": "19:00"}}
    deal = expect(biz.post(f"/v1/hives/{hive}/deals", json=body, headers=h), 201)
    assert deal["daily"] == {"weekdays": [3, 7], "start": "17:00", "end": "19:00"}
    assert deal["next_occurrence"]["starts_at"] == "2027-03-03T16:00:00Z"  # a Wednesday, CET
    shown = wait_for(lambda: [x for x in biz.get(f"/v1/hives/{hive}/deals").json()["items"]
                              if x["id"] == deal["id"]], timeout=10, what="the public deal")
    assert shown[0]["daily"] == deal["daily"]
    assert shown[0]["next_occurrence"] == deal["next_occurrence"]
    d = deal["id"]
    # Berlin: CET (UTC+1) until Sunday 2027-03-28, CEST (UTC+2) after, CET from 10-31
    assert occurrence(biz.dsn, d, "2027-03-21T12:00:00+00:00") == ("03-21 16:00", "03-21 18:00")
    assert occurrence(biz.dsn, d, "2027-03-27T20:00:00+00:00") == ("03-28 15:00", "03-28 17:00")
    assert occurrence(biz.dsn, d, "2027-03-28T16:30:00+00:00") == ("03-28 15:00", "03-28 17:00")
    assert occurrence(biz.dsn, d, "2027-10-31T10:00:00+00:00") == ("10-31 16:00", "10-31 18:00")
    assert occurrence(biz.dsn, d, "2027-11-14T20:00:00+00:00") is None   # window over
    # across midnight: Friday 22:00 to Saturday 02:00 local, clipped to the window
    late = copy.deepcopy(body)
    late["daily"] = {"weekdays": [5], "start": "22:00", "end": "02:00"}
    d = expect(biz.post(f"/v1/hives/{hive}/deals", json=late, headers=h), 201)["id"]
    assert occurrence(biz.dsn, d, "2027-03-06T00:30:00+00:00") == ("03-05 21:00", "03-06 01:00")
    assert occurrence(biz.dsn, d, "2027-03-01T00:00:00+00:00") == ("03-05 21:00", "03-06 01:00")
    # a weekday change is a PATCH of the whole daily rule
    r = biz.patch(f"/v1/deals/{d}", json={"daily": None}, headers=h)
    assert expect(r, 200)["daily"] is None


def test_the_business_endpoints_are_in_the_openapi_document(biz: httpx.Client) -> None:
    from .test_business_matrix import ENDPOINTS

    doc = expect(biz.get("/v1/openapi.json"), 200)
    for method, path, _, success, _ in ENDPOINTS:
        operation = doc["paths"][path][method.lower()]
        assert operation["security"] == [{"bearerAuth": []}], (method, path)
        assert str(success) in operation["responses"], (method, path)
        assert {"401", "403", "404"} <= set(operation["responses"]), (method, path)
    assert "get" in doc["paths"]["/v1/hives/{id}"]       # the public read stays
    assert "DealDaily" in doc["components"]["schemas"]


def test_schemathesis_over_the_business_endpoints_finds_no_failure(biz: httpx.Client,
                                                                   tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from .test_business_matrix import ENDPOINTS

    h, _ = signed_in(biz)
    new_account(biz, h)     # ids 1.. of accounts mostly exist: not only 404s
    done = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run",
         f"{biz.base_url}/v1/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "10",
         "--seed", "17", "--request-timeout", "10", "--report-dir", str(tmp_path),
         "-H", h["Authorization"].join(("Authorization: ", "")),
         "--include-path-regex",
         r"^/v1/(accounts|(deals|images)/\{id\}$|hives/\{id\}(/deals|/sensors|/images)?$|"
         r"sensors/\{sensor\}/config$)"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    public = 3  # GET /v1/hives/{id}, its /deals and /images
    assert f"Selected: {len(ENDPOINTS) + public}/" in done.stdout, done.stdout[-3000:]


def test_anonymous_writes_on_the_public_locations_are_401_before_validation(
        biz: httpx.Client) -> None:
    hive = sql(biz.dsn, "SELECT min(id) FROM hive")[0][0]
    r = biz.patch(f"/v1/hives/{hive}", json={"capacity": 0})
    expect(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    expect(biz.post(f"/v1/hives/{hive}/deals", json={"title": ""}), 401)
    expect(biz.delete(f"/v1/hives/{hive}"), 401)


def test_a_hive_lists_its_sensors_with_status_and_configuration(biz: httpx.Client,
                                                                own_hive: tuple) -> None:
    h, hive = own_hive
    tag = secrets.token_hex(4)
    ids = [sql(biz.dsn, "INSERT INTO sensor (external_id, firmware, hive_id) VALUES ($1, $2, $3)"
               " RETURNING id", f"{tag}-{n}", "v2", hive)[0][0] for n in ("a", "b", "c")]
    sql(biz.dsn, "INSERT INTO sensor_status (sensor_id, started_at, battery_mv, state_flags, "
        "discarded_events, csq, firmware_version, configuration_id, received_at) VALUES "
        "($1, now(), 3700, 0, 0, 17, 16908291, 0, now()), "
        "($2, now(), 3300, 0, 0, 99, 16908291, 0, now() - interval '3 days')", ids[0], ids[1])
    sql(biz.dsn, "INSERT INTO sensor_config (sensor_id, threshold_cm, reporting_interval_min, "
        "status_interval_min, event_threshold) VALUES ($1, 150, 15, 60, 5)", ids[0])
    items = expect(biz.get(f"/v1/hives/{hive}/sensors", headers=h), 200)["items"]
    assert [(s["external_id"], s["status"], s["battery_mv"], s["signal_csq"])
            for s in items] == [(f"{tag}-a", "ok", 3700, 17), (f"{tag}-b", "silent", 3300, None),
                                (f"{tag}-c", "never_seen", None, None)]
    assert items[0]["firmware_version"] == "1.2.3"
    assert items[0]["pending"]["threshold_cm"] == 150 and items[0]["applied"] is None
    assert items[0]["last_seen"] is not None and items[2]["last_seen"] is None


def test_a_configuration_push_is_validated_published_and_audited(biz: httpx.Client,
                                                                 own_hive: tuple) -> None:
    import paho.mqtt.publish as publish
    import paho.mqtt.subscribe as subscribe
    import yaml

    from modules.mqtt_ingest.codec import decode_config

    h, hive = own_hive
    sensor = f"push-{secrets.token_hex(4)}"
    sql(biz.dsn, "INSERT INTO sensor (external_id, firmware, hive_id) VALUES ($1, 'v2', $2)",
        sensor, hive)
    path = f"/v1/sensors/{sensor}/config"
    good = {"threshold_cm": 120, "reporting_interval_min": 10, "status_interval_min": 60,
            "event_threshold": 4}
    expect(biz.put(path, json={**good, "threshold_cm": 0}, headers=h), 422, "threshold_cm")
    expect(biz.put(path, json={**good, "colour": "red"}, headers=h), 422, "colour")
    expect(biz.put(f"/v1/sensors/{sensor}x/config", json=good, headers=h), 404)
    assert sql(biz.dsn, "SELECT count(*) FROM sensor_config c JOIN sensor s "
               "ON s.id = c.sensor_id WHERE s.external_id = $1", sensor)[0][0] == 0
    pushed = expect(biz.put(path, json=good, headers=h), 201)
    assert pushed["published"] and pushed["pending"]["threshold_cm"] == 120
    mqtt = yaml.safe_load(biz.bizzyd.conf.read_text())["mqtt"]
    message = subscribe.simple(pushed["topic"], hostname="127.0.0.1", port=mqtt["port"],
                               retained=True, msg_count=1, keepalive=5)
    assert pushed["topic"] == f"{mqtt['topic_prefix']}/commands/sensor/{sensor}"
    decoded = decode_config(message.payload)
    assert (decoded.threshold_cm, decoded.configuration_id) == (120, pushed["pending"]["id"])
    state = expect(biz.get(path, headers=h), 200)
    assert state["pending"]["id"] == pushed["pending"]["id"] and state["applied"] is None
    account = sql(biz.dsn, "SELECT account_id FROM hive WHERE id = $1", hive)[0][0]
    audit = expect(biz.get(f"/v1/accounts/{account}/audit", headers=h), 200)["items"][0]
    assert (audit["action"], audit["entity_id"]) == ("sensor.config", pushed["pending"]["id"])
    assert audit["after"]["threshold_cm"] == 120 and audit["before"] is None
    publish.single(pushed["topic"], b"", qos=1, retain=True, hostname="127.0.0.1",
                   port=mqtt["port"])
