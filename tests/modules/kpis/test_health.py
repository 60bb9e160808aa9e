"""GET /v1/hives/{id}/health and the freshness of live occupancy, on real services."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx
import pytest
from kpis_support import business, expect, signed_in, sql

from bizzyd_proc import wait_for

pytestmark = pytest.mark.services

STATUS = """
INSERT INTO sensor_status (sensor_id, started_at, battery_mv, state_flags, discarded_events,
                           csq, firmware_version, configuration_id, received_at)
VALUES ($1, now() - interval '1 day', $2, 0, 0, $3, 16777216, 0, $4)"""
CONFIG = """
INSERT INTO sensor_config (sensor_id, threshold_cm, reporting_interval_min,
                           status_interval_min, event_threshold, state, applied_at)
VALUES ($1, 100, $2, 60, 1, $3, CASE WHEN $3 = 'applied' THEN now() END) RETURNING id"""


def sensors(dsn: str, hive_id: int) -> tuple[int, int]:
    """Two sensors in the hive: `ok` reporting every minute, heard from now, 40 people
    more in than out yesterday (Berlin); `quiet` silent for 10 minutes (> 3 x 1 min)."""
    ok, quiet = (sql(dsn, "INSERT INTO sensor (external_id, firmware, hive_id) VALUES "
                          "($1, 'v2', $2) RETURNING id", f"k-{hive_id}-{n}", hive_id)[0]["id"]
                 for n in ("ok", "quiet"))
    now = dt.datetime.now(dt.UTC)
    sql(dsn, STATUS, ok, 3750, 21, now)
    sql(dsn, STATUS, quiet, 4300, 99, now - dt.timedelta(minutes=10))
    for sensor in (ok, quiet):
        sql(dsn, CONFIG, sensor, 1, "applied")
    sql(dsn, "INSERT INTO sensor_ingest_state (sensor_id, lost_events, restarts, updated_at) "
             "VALUES ($1, 3, 1, now())", ok)
    yesterday = dt.datetime.now(ZoneInfo("Europe/Berlin")).date() - dt.timedelta(days=1)
    sql(dsn, "INSERT INTO sensor_door_daily VALUES ($1, $3, 50, 10), ($2, $3, 12, 10), "
             "($1, $3 - 1, 0, 500)", ok, quiet, yesterday)
    return ok, quiet


def test_health_of_each_sensor(biz: httpx.Client) -> None:
    h, _, (hive, _) = business(biz)
    ok, quiet = sensors(biz.dsn, hive)
    pending = sql(biz.dsn, CONFIG, ok, 5, "pending")[0]["id"]
    body = expect(biz.get(f"/v1/hives/{hive}/health", headers=h), 200)
    assert body["hive_id"] == hive and body["as_of"].endswith("Z")
    first, second = body["sensors"]
    assert (first["sensor_id"], first["serial"], second["sensor_id"]) == (ok, f"k-{hive}-ok",
                                                                         quiet)
    # 3750 mV between 3300 (0 %) and 4200 (100 %); CSQ 21 is -71 dBm; 99 is unknown
    assert (first["battery"], first["battery_mv"], first["signal"]) == (50, 3750, -71)
    assert (second["battery"], second["signal"]) == (100, None)
    assert first["report_interval_s"] == 60 and first["last_seen"].endswith("Z")
    assert (first["offline"], second["offline"]) == (False, True)
    assert (first["counter_gaps"], first["restarts"]) == (3, 1)
    assert first["config"]["pending"] is True and first["config"]["pending_id"] == pending
    assert first["config"]["applied_at"] is not None and second["config"]["pending"] is False
    # yesterday: 50 in, 10 out through the first door (net 40 > 20); 12/10 through the other
    assert first["door_imbalance"] == {"flag": True, "net": 40, "entries": 50, "exits": 10,
                                       "day": first["door_imbalance"]["day"], "threshold": 20}
    assert second["door_imbalance"]["flag"] is False and second["door_imbalance"]["net"] == 2


def test_health_is_for_members_only(biz: httpx.Client) -> None:
    h, account, (hive, _) = business(biz)
    stranger, _ = signed_in(biz)
    viewer, viewer_id = signed_in(biz)
    expect(biz.put(f"/v1/accounts/{account}/members/{viewer_id}", json={"role": "viewer"},
                   headers=h), 200)
    expect(biz.get(f"/v1/hives/{hive}/health", headers=viewer), 200)
    expect(biz.get(f"/v1/hives/{hive}/health", headers=stranger), 404)
    expect(biz.get(f"/v1/hives/{hive}/health"), 401)
    expect(biz.get("/v1/hives/999999999/health", headers=h), 404)


def live(biz: httpx.Client, hive: int) -> dict:
    return expect(biz.get(f"/v1/hives/{hive}/occupancy"), 200)


def test_live_occupancy_says_how_fresh_it_is(biz: httpx.Client) -> None:
    _, _, (hive, bare) = business(biz)
    _, quiet = sensors(biz.dsn, hive)
    # (the rows went in one by one: a refresh may see them half written, the next not)
    wait_for(lambda: (live(biz, hive)["sensors_total"], live(biz, hive)["sensors_reporting"])
             == (2, 1), what="the sensor counts")
    data = live(biz, hive)
    assert (data["sensors_reporting"], data["stale"]) == (1, True)  # one door is silent
    assert data["as_of"].endswith("Z") and data["source"] in ("zone", "database")
    assert (live(biz, bare)["sensors_total"], live(biz, bare)["stale"]) == (0, True)
    # the silent sensor speaks again: the next refresh makes the count fresh
    sql(biz.dsn, "UPDATE sensor_status SET received_at = now() WHERE sensor_id = $1", quiet)
    wait_for(lambda: live(biz, hive)["sensors_reporting"] == 2, what="the refresh")
    assert live(biz, hive)["stale"] is False
    many = expect(biz.get(f"/v1/occupancy?ids={hive},{bare}"), 200)["hives"]
    assert [(h["sensors_reporting"], h["sensors_total"], h["stale"]) for h in many] == [
        (2, 2, False), (0, 0, True)]
