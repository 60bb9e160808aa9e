"""Occupancy analytics end to end: history buckets from the rollups (DST days, empty
buckets, 15m from the 5-minute level), the count at an instant, corrections (live count
and corrected series), the capacity schedule, access rules and bad input (Postgres,
memcached, the Firebase Auth emulator, a bizzyd with its cache manager)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from bizzyd_proc import wait_for

from ..occupancy.occ_support import SSEClient
from .conftest import HIVE, expect, signed_in, sql

pytestmark = pytest.mark.services

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def premium(api: httpx.Client) -> dict[str, str]:
    h, me = signed_in(api)
    sql(api.dsn, """INSERT INTO subscription (subscription_type_id, user_id, expires_at)
                    SELECT id, $1, now() + interval '30 days' FROM subscription_type
                    WHERE code = 'premium'""", me)
    return h


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def hourly(dsn: str, hive: int, hour: str, entries: int, exits: int, curve: tuple | None
           ) -> None:
    """An hourly row; curve = (min, max, last, last_at, area) or None (entries only)."""
    low, high, last, last_at, area = curve or (None, 0, None, None, None)
    sql(dsn, """INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits,
                    peak_occupancy, min_occupancy, last_occupancy, last_at, area)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        hive, t(hour), entries, exits, high, low, last, last_at and t(last_at), area)


def five(dsn: str, hive: int, bucket: str, entries: int, curve: tuple) -> None:
    low, high, last, last_at, area = curve
    sql(dsn, """INSERT INTO hive_occupancy_5m (hive_id, bucket, entries, exits, min_occupancy,
                    max_occupancy, last_occupancy, last_at, area)
                VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8)""",
        hive, bucket if isinstance(bucket, dt.datetime) else t(bucket), entries, low, high,
        last, last_at if isinstance(last_at, dt.datetime) else t(last_at), area)


def history(api: httpx.Client, hive: int, h: dict[str, str] | None = None,
            **query: str) -> httpx.Response:
    return api.get(f"/v1/hives/{hive}/occupancy/history", params=query, headers=h or {})


def test_hourly_history_has_averages_and_empty_buckets(api: httpx.Client,
                                                        venue: dict[str, Any]) -> None:
    hive, h = venue["hive"], premium(api)
    # 10:00-11:00: 0 people until 10:30, then 10 -> time-weighted average 5
    hourly(api.dsn, hive, "2026-11-10T10:00:00Z", 12, 2,
           (0, 10, 10, "2026-11-10T10:30:00Z", 0.0))
    hourly(api.dsn, hive, "2026-11-10T11:00:00Z", 3, 1, None)  # late entries only
    body = expect(history(api, hive, h, **{"from": "2026-11-10T10:00:00Z",
                                           "to": "2026-11-10T13:00:00Z", "bucket": "1h"}),
                  200)
    assert body["timezone"] == "Europe/Berlin" and body["has_corrections"] is False
    first, second, third = body["buckets"]
    assert first["start"] == "2026-11-10T10:00:00Z" and first["end"] == "2026-11-10T11:00:00Z"
    assert first["local_start"] == "2026-11-10T11:00:00+01:00"
    assert (first["avg"], first["min"], first["max"]) == (5.0, 0, 10)
    assert (first["entries"], first["exits"], first["empty"]) == (12, 2, False)
    assert first["capacity"] == 100 and first["utilization"] == 0.05
    assert second["empty"] is False and second["avg"] is None and second["entries"] == 3
    assert third["empty"] is True and third["avg"] is None and third["utilization"] is None
    assert (third["entries"], third["exits"], third["corrected"]) == (0, 0, None)


@pytest.mark.parametrize(("first", "last", "day", "hours"), [
    ("2026-10-24", "2026-10-27", "2026-10-25", 25),  # back to CET
    ("2026-03-28", "2026-03-31", "2026-03-29", 23),  # on to CEST
])
def test_daily_buckets_are_local_days(api: httpx.Client, venue: dict[str, Any], first: str,
                                      last: str, day: str, hours: int) -> None:
    hive, h = venue["hive"], premium(api)
    start, end = (dt.datetime.combine(dt.date.fromisoformat(day) + dt.timedelta(days=d),
                                      dt.time(0), tzinfo=BERLIN).astimezone(UTC) for d in (0, 1))
    assert end - start == dt.timedelta(hours=hours)
    stop = dt.datetime.combine(dt.date.fromisoformat(last), dt.time(0), tzinfo=BERLIN)
    sql(api.dsn, """INSERT INTO hive_occupancy_daily (hive_id, day, starts_at, ends_at,
                        entries, exits, min_occupancy, max_occupancy, last_occupancy,
                        last_at, area)
                    VALUES ($1, $2, $3, $4::timestamptz, 100, 100, 0, 40, 0,
                            $4::timestamptz - interval '1 hour', $5)""",
        venue["hive"], dt.date.fromisoformat(day), start, end, 20.0 * (hours - 1) * 3600)
    body = expect(history(api, hive, h, **{"from": f"{first}T12:00:00+01:00",
                                           "to": stop.isoformat(), "bucket": "1d"}),
                  200)
    spans = {b["local_start"][:10]: (t(b["end"]) - t(b["start"])) / dt.timedelta(hours=1)
             for b in body["buckets"]}
    assert list(spans) == [str(dt.date.fromisoformat(first) + dt.timedelta(days=i))
                           for i in range(3)]
    assert spans[day] == hours and all(v == 24 for k, v in spans.items() if k != day)
    (dst,) = [b for b in body["buckets"] if b["local_start"].startswith(day)]
    assert dst["local_start"].endswith("T00:00:00+02:00" if hours == 25 else "T00:00:00+01:00")
    assert dst["avg"] == round(20.0 * (hours - 1) / hours, 2) and dst["max"] == 40
    # the same day in hours: 23 or 25 local hours
    body = expect(history(api, hive, h, **{"from": start.isoformat(), "to": end.isoformat(),
                                           "bucket": "1h"}), 200)
    assert len(body["buckets"]) == hours


def test_fifteen_minutes_fold_three_five_minute_rows(api: httpx.Client,
                                                     venue: dict[str, Any]) -> None:
    hive = venue["hive"]
    now = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    base = now.replace(minute=now.minute // 15 * 15) - dt.timedelta(hours=2)
    for i, (low, high, last) in enumerate([(0, 4, 4), (4, 9, 6), (2, 6, 2)]):
        b = base + dt.timedelta(minutes=5 * i)
        five(api.dsn, hive, b, 3, (low, high, last, b + dt.timedelta(seconds=150),
                                   150.0 * low))
    body = expect(history(api, hive, **{"from": base.isoformat(),
                                        "to": (base + dt.timedelta(minutes=30)).isoformat(),
                                        "bucket": "15m"}), 200)  # anonymous: last 24 h
    first, second = body["buckets"]
    expected = (0 * 150 + 4 * 150 + 4 * 150 + 6 * 150 + 2 * 150 + 2 * 150) / 900
    assert (first["min"], first["max"], first["entries"]) == (0, 9, 9)
    assert first["avg"] == round(expected, 2)
    assert second["empty"] is True
    five_body = expect(history(api, hive, **{"from": base.isoformat(),
                                             "to": (base + dt.timedelta(minutes=15)
                                                    ).isoformat(), "bucket": "5m"}), 200)
    assert [b["max"] for b in five_body["buckets"]] == [4, 9, 6]


def test_count_at_an_instant(api: httpx.Client, venue: dict[str, Any]) -> None:
    hive = venue["hive"]
    at = expect(api.get(f"/v1/hives/{hive}/occupancy/at",
                        params={"t": "2026-11-10T10:45:00Z"}, headers=premium(api)), 200)
    assert at["occupancy"] == 10 and at["resolution"] == "1h" and at["source"] == "rollup"
    # before the first point of that hour: nothing since the day's reset
    at = expect(api.get(f"/v1/hives/{hive}/occupancy/at",
                        params={"t": "2026-11-10T10:15:00Z"}, headers=premium(api)), 200)
    assert at["occupancy"] == 0
    expect(api.get(f"/v1/hives/{hive}/occupancy/at",
                   params={"t": "2099-01-01T00:00:00Z"}), 422, "t")
    expect(api.get(f"/v1/hives/{hive}/occupancy/at",
                   params={"t": "2026-11-10T10:15:00Z"}), 401)


def test_corrections_change_the_live_count_and_the_corrected_series(
        api: httpx.Client, venue: dict[str, Any]) -> None:
    hive, manager = venue["hive"], venue["manager"]
    now = dt.datetime.now(UTC)
    bucket = now.replace(minute=now.minute // 5 * 5, second=0, microsecond=0)
    five(api.dsn, hive, bucket - dt.timedelta(minutes=5), 0,
         (0, 0, 0, bucket - dt.timedelta(minutes=4), 0.0))
    made = expect(api.post(f"/v1/hives/{hive}/corrections", headers=manager,
                           json={"occupancy": 12, "reason": "door sensor missed a group"}),
                  201)
    assert (made["occupancy"], made["previous"], made["delta"]) == (12, 0, 12)
    assert made["hive_id"] == hive and made["reason"] == "door sensor missed a group"
    live = wait_for(lambda: (r := api.get(f"/v1/hives/{hive}/occupancy").json())
                    ["occupancy"] == 12 and r, timeout=10)
    assert live["occupancy"] == 12
    listed = expect(api.get(f"/v1/hives/{hive}/corrections", headers=venue["viewer"]), 200)
    assert [c["id"] for c in listed["corrections"]][0] == made["id"]
    body = expect(history(api, hive, **{"from": (bucket - dt.timedelta(minutes=5)).isoformat(),
                                        "to": (bucket + dt.timedelta(minutes=5)).isoformat(),
                                        "bucket": "5m"}), 200)
    assert body["has_corrections"] is True
    before, current = body["buckets"]
    assert before["corrected"] is None and before["avg"] == 0
    at = expect(api.get(f"/v1/hives/{hive}/occupancy/at",
                        params={"t": dt.datetime.now(UTC).isoformat()}), 200)
    assert (at["occupancy"], at["corrected_occupancy"]) == (0, 12)
    # a second correction: previous is the corrected count
    again = expect(api.post(f"/v1/hives/{hive}/corrections", headers=manager,
                            json={"occupancy": 5, "reason": "recount"}), 201)
    assert (again["previous"], again["delta"]) == (12, -7)
    wait_for(lambda: api.get(f"/v1/hives/{hive}/occupancy").json()["occupancy"] == 5,
             timeout=10)
    rows = sql(api.dsn, "SELECT created_by, reason FROM hive_correction WHERE hive_id = $1 "
               "ORDER BY id", hive)
    assert [r["reason"] for r in rows] == ["door sensor missed a group", "recount"]
    assert all(r["created_by"] is not None for r in rows)


def test_correction_rules(api: httpx.Client, venue: dict[str, Any]) -> None:
    hive, base = venue["hive"], f"/v1/hives/{venue['hive']}/corrections"
    good = {"occupancy": 3, "reason": "x"}
    expect(api.post(base, json=good, headers=venue["viewer"]), 403)
    expect(api.post(base, json=good, headers=venue["stranger"]), 404)
    expect(api.get(base, headers=venue["stranger"]), 404)
    expect(api.post(base, json=good), 401)
    expect(api.post("/v1/hives/999999999/corrections", json=good, headers=venue["manager"]),
           404)
    m = venue["manager"]
    expect(api.post(base, json={**good, "occupancy": -1}, headers=m), 422, "occupancy")
    expect(api.post(base, json={**good, "at": "2099-01-01T00:00:00Z"}, headers=m), 422, "at")
    expect(api.post(base, json={**good, "reason": " "}, headers=m), 422, "reason")
    expect(api.post(base, json={"occupancy": 3}, headers=m), 422)
    # a past correction: series only, the live count stays; a cached answer of the
    # window (same connection, same worker) is not served after it
    window = {"from": "2026-11-10T10:00:00Z", "to": "2026-11-10T11:00:00Z"}
    h = premium(api)
    for _ in range(2):
        before = expect(history(api, hive, h, **window), 200)
        assert before["buckets"][0]["corrected"] is None
    live = api.get(f"/v1/hives/{hive}/occupancy").json()["occupancy"]
    past = expect(api.post(base, json={**good, "at": "2026-11-10T10:45:00Z"}, headers=m), 201)
    assert (past["previous"], past["delta"]) == (10, -7)
    assert api.get(f"/v1/hives/{hive}/occupancy").json()["occupancy"] == live
    body = expect(history(api, hive, h, **window), 200)
    corrected = body["buckets"][0]["corrected"]
    # offset -7 over the last quarter of the hour; min/max take the extremes
    assert corrected == {"avg": 3.25, "min": 0, "max": 10, "utilization": 0.0325}


def test_capacity_schedule(api: httpx.Client, venue: dict[str, Any]) -> None:
    hive, m = venue["hive"], venue["manager"]
    url = f"/v1/hives/{hive}/capacity-schedule"
    night = {"from": "2026-11-10T09:00:00Z", "to": "2026-11-10T11:00:00Z", "capacity": 250,
             "label": "Concert night"}
    later = {"from": "2026-11-11T18:00:00Z", "to": "2026-11-11T23:00:00Z", "capacity": 150}
    body = expect(api.put(url, json={"entries": [later, night]}, headers=m), 200)
    assert body["default_capacity"] == 100
    assert [e["capacity"] for e in body["entries"]] == [250, 150]
    assert expect(api.get(url, headers=venue["viewer"]), 200) == body
    overlap = {**later, "from": "2026-11-10T10:00:00Z", "to": "2026-11-10T12:00:00Z"}
    expect(api.put(url, json={"entries": [night, overlap]}, headers=m), 422, "entries[1].from")
    backwards = {**later, "to": "2026-11-11T17:00:00Z"}
    expect(api.put(url, json={"entries": [backwards]}, headers=m), 422, "entries[0].to")
    expect(api.put(url, json={"entries": [{**later, "capacity": 0}]}, headers=m), 422,
           "entries[0].capacity")
    expect(api.put(url, json={"entries": []}, headers=venue["viewer"]), 403)
    expect(api.get(url, headers=venue["stranger"]), 404)
    history_body = expect(history(api, hive, premium(api), **{
        "from": "2026-11-10T10:00:00Z", "to": "2026-11-10T12:00:00Z"}), 200)
    first, second = history_body["buckets"]
    assert (first["capacity"], second["capacity"]) == (250, 100)
    assert first["utilization"] == round(5.0 / 250, 4)


def live(api: httpx.Client, hive: int) -> dict[str, Any]:
    return expect(api.get(f"/v1/hives/{hive}/occupancy"), 200)


def zone_hive(api: httpx.Client, venue: dict[str, Any]) -> int:
    """A new hive of the venue's account (capacity 100), in the cache manager's zone
    (a correction brings it there)."""
    m = venue["manager"]
    hive = expect(api.post(f"/v1/accounts/{venue['account']}/hives", json=HIVE, headers=m),
                  201)["id"]
    expect(api.post(f"/v1/hives/{hive}/corrections", headers=m,
                    json={"occupancy": 40, "reason": "opening count"}), 201)
    wait_for(lambda: live(api, hive)["source"] == "zone", timeout=10, what="the zone")
    return hive


def test_a_schedule_in_force_now_is_the_live_capacity_at_once(
        api: httpx.Client, venue: dict[str, Any]) -> None:
    hive, m = zone_hive(api, venue), venue["manager"]
    url = f"/v1/hives/{hive}/capacity-schedule"
    now = dt.datetime.now(UTC)
    night = {"from": (now - dt.timedelta(hours=1)).isoformat(),
             "to": (now + dt.timedelta(hours=1)).isoformat(), "capacity": 320}
    assert live(api, hive)["capacity"] == 100
    expect(api.put(url, json={"entries": [night]}, headers=m), 200)
    body = wait_for(lambda: (r := live(api, hive))["capacity"] == 320 and r, timeout=2,
                    what="the live capacity to follow the schedule")
    assert (body["source"], body["occupancy"]) == ("zone", 40)
    expect(api.put(url, json={"entries": []}, headers=m), 200)
    wait_for(lambda: live(api, hive)["capacity"] == 100, timeout=2,
             what="the live capacity back to the hive's")


def test_the_live_capacity_switches_when_a_scheduled_range_starts_and_ends(
        api: httpx.Client, venue: dict[str, Any]) -> None:
    hive, m = zone_hive(api, venue), venue["manager"]
    stream = SSEClient(api.port, f"/v1/hives/{hive}/occupancy/stream")  # type: ignore[attr-defined]
    try:
        assert stream.status == 200
        assert stream.next_event()["json"]["capacity"] == 100
        start = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
        end = start + dt.timedelta(seconds=3)
        entry = {"from": start.isoformat(), "to": end.isoformat(), "capacity": 250,
                 "label": "Concert night"}
        expect(api.put(f"/v1/hives/{hive}/capacity-schedule", json={"entries": [entry]},
                       headers=m), 200)
        before = live(api, hive)
        if time.time() < start.timestamp():  # else this slow machine took 3 s for a PUT
            assert before["capacity"] == 100
        # the stream's events: the scheduled capacity at the start, the hive's at the end
        switched = stream.next_event(timeout=start.timestamp() - time.time() + 5)
        assert switched["json"]["capacity"] == 250
        assert switched["json"]["occupancy"] == 40
        assert start.timestamp() <= switched["at"] <= start.timestamp() + 2.0
        assert live(api, hive)["capacity"] == 250
        back = stream.next_event(timeout=end.timestamp() - time.time() + 5)
        assert back["json"]["capacity"] == 100
        assert end.timestamp() <= back["at"] <= end.timestamp() + 2.0
        assert live(api, hive)["capacity"] == 100
        assert [e["json"]["capacity"] for e in stream.events] == [100, 250, 100]
    finally:
        stream.close()


def test_bad_history_input(api: httpx.Client, venue: dict[str, Any]) -> None:
    hive = venue["hive"]
    h = premium(api)
    expect(history(api, hive, h, **{"from": "2026-11-10T12:00:00Z",
                                    "to": "2026-11-10T10:00:00Z"}), 422, "from")
    expect(history(api, hive, h, bucket="2h"), 422, "bucket")
    expect(history(api, hive, h, **{"from": "2026-01-01T00:00:00Z",
                                    "to": "2026-01-09T00:00:00Z", "bucket": "5m"}), 422, "to")
    expect(history(api, hive, h, **{"from": "2024-01-01T00:00:00Z",
                                    "to": "2026-01-09T00:00:00Z", "bucket": "1h"}), 422, "to")
    expect(history(api, hive, h, **{"from": "yesterday"}), 422, "from")
    expect(history(api, hive, h, **{"from": "2026-11-10T10:00:00"}), 422, "from")
    expect(history(api, 999999999, h), 404)
    old = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    expect(history(api, hive, **old), 401)
    free, _ = signed_in(api)
    assert "occupancy_history" in expect(history(api, hive, free, **old), 403)["detail"]
    expect(history(api, hive, h, **old), 200)
    assert len(expect(history(api, hive), 200)["buckets"]) in (24, 25)
