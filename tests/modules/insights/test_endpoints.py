"""GET /v1/hives/{id}/popular-times and /forecast, the forecast band's feature, bad
input, and expected_now / vs_usual on the live occupancy objects."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from insights_support import NO_PROFILE, sql

from bizzyd_proc import wait_for
from modules.auth.testing import emulator_address, emulator_token
from modules.insights import job
from modules.insights.live import compare

pytestmark = pytest.mark.services


def refresh_forecasts(dsn: str) -> None:
    """Run the forecast job now (a test may cross an hour since the fixture ran it)."""
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await job.run_forecasts(conn, datetime.now(UTC))
        finally:
            await conn.close()
    asyncio.run(run())


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_popular_times_is_the_weekly_profile_with_peaks(api):
    r = api.get("/v1/hives/1/popular-times")
    assert r.status_code == 200 and "public" in r.headers["cache-control"]
    data = r.json()
    tz = sql(api.dsn, "SELECT timezone FROM hive WHERE id = 1")[0]["timezone"]
    assert data["hive_id"] == 1 and data["timezone"] == tz and data["weeks"] == 8
    assert data["computed_at"].endswith("Z")
    assert [d["weekday"] for d in data["days"]] == list(range(1, 8))
    hours = [h for d in data["days"] for h in d["hours"]]
    assert all(len(d["hours"]) == 24 for d in data["days"])
    assert all(h["p10"] <= h["p50"] <= h["p90"] and h["samples"] >= 4 for h in hours)
    assert max(h["relative"] for h in hours) == 100 and min(h["relative"] for h in hours) >= 0
    # the pattern (testing.weekly): Friday and Saturday evenings are the busiest
    peaks = data["peak_hours"]
    assert len(peaks) == 3 and peaks == sorted(peaks, key=lambda p: -p["avg"])
    assert peaks[0]["weekday"] in (5, 6) and peaks[0]["hour"] in (20, 21, 22)
    day = "Friday" if peaks[0]["weekday"] == 5 else "Saturday"
    assert peaks[0]["label"] == f"{day} {peaks[0]['hour']}:00-{peaks[0]['hour'] + 1}:00"
    friday = data["days"][4]
    assert friday["peak_hour"] in (20, 21, 22)
    assert friday["hours"][friday["peak_hour"]]["avg"] == max(
        h["avg"] for h in friday["hours"])


def test_popular_times_of_a_hive_without_profile(api):
    data = api.get(f"/v1/hives/{NO_PROFILE}/popular-times").json()
    assert data["weeks"] == 0 and data["computed_at"] is None and data["peak_hours"] == []
    assert all(h["avg"] is None and h["relative"] is None and h["samples"] == 0
               for d in data["days"] for h in d["hours"])


def test_forecast_hours_and_best_time(api):
    refresh_forecasts(api.dsn)
    now = datetime.now(UTC)
    data = api.get("/v1/hives/2/forecast").json()  # hours=6 by default
    assert data["hive_id"] == 2 and data["band"] is False and data["capacity"] > 0
    hours = data["hours"]
    assert len(hours) == 6
    starts = [datetime.fromisoformat(h["start"].replace("Z", "+00:00")) for h in hours]
    assert starts[0] == now.replace(minute=0, second=0, microsecond=0) or \
        starts[0] == (now + timedelta(minutes=1)).replace(minute=0, second=0, microsecond=0)
    assert all(b - a == timedelta(hours=1) for a, b in zip(starts, starts[1:], strict=False))
    for h, start in zip(hours, starts, strict=True):
        local = datetime.fromisoformat(h["local_start"])
        assert local == start and local.utcoffset() is not None
        assert h["low"] is None and h["high"] is None and h["expected"] >= 0
    quietest = min(hours, key=lambda h: h["expected"])
    assert data["best_time"] == {"start": quietest["start"],
                                 "local_start": quietest["local_start"],
                                 "expected": quietest["expected"]}
    assert len(api.get("/v1/hives/2/forecast?hours=24").json()["hours"]) == 24
    assert len(api.get("/v1/hives/2/forecast?hours=1").json()["hours"]) == 1
    # no profile: no hours, no best time
    empty = api.get(f"/v1/hives/{NO_PROFILE}/forecast").json()
    assert empty["hours"] == [] and empty["best_time"] is None


@pytest.mark.parametrize("path, name", [
    ("/v1/hives/2/forecast?hours=0", "hours"),
    ("/v1/hives/2/forecast?hours=25", "hours"),
    ("/v1/hives/2/forecast?hours=-3", "hours"),
    ("/v1/hives/2/forecast?hours=six", "hours"),
    ("/v1/hives/2/forecast?hours=", "hours"),
    ("/v1/hives/0/forecast", "id"),
    ("/v1/hives/99999999999999999999/popular-times", "id"),
    ("/v1/hives/0/popular-times", "id"),
])
def test_bad_input_is_422_naming_the_field(api, path, name):
    body = problem(api.get(path), 422)
    assert body["invalid_params"][0]["name"] == name


def test_unknown_hives_and_parameters(api):
    assert problem(api.get("/v1/hives/999999/forecast"), 404)["detail"] == "no such hive"
    assert problem(api.get("/v1/hives/999999/popular-times"), 404)["detail"] == "no such hive"
    body = problem(api.get("/v1/hives/2/forecast?hourz=3"), 400)
    assert body["invalid_params"][0]["name"] == "hourz"
    assert problem(api.post("/v1/hives/2/forecast"), 405)


def test_the_band_needs_the_forecast_band_feature(api):
    refresh_forecasts(api.dsn)
    token = emulator_token(emulator_address(), f"u{secrets.token_hex(6)}@example.com")
    auth = {"Authorization": f"Bearer {token}"}
    free = api.get("/v1/hives/2/forecast", headers=auth).json()
    assert free["band"] is False and free["hours"][0]["low"] is None
    user_id = sql(api.dsn, "SELECT max(id) AS id FROM app_user")[0]["id"]
    for plan, band in (("basic", False), ("premium", True)):
        sql(api.dsn, "DELETE FROM subscription WHERE user_id = $1", user_id)
        sql(api.dsn, """INSERT INTO subscription (subscription_type_id, user_id, expires_at)
                        SELECT id, $1, now() + interval '30 days' FROM subscription_type
                        WHERE code = $2""", user_id, plan)
        data = api.get("/v1/hives/2/forecast?hours=12", headers=auth).json()
        assert data["band"] is band, plan
        for h in data["hours"]:
            if band:
                assert h["low"] <= h["expected"] <= h["high"] <= data["capacity"]
            else:
                assert h["low"] is None and h["high"] is None
    assert problem(api.get("/v1/hives/2/forecast",
                           headers={"Authorization": "Bearer nonsense"}), 401)


def test_vs_usual_thresholds():
    assert compare(10, 10.0, 100) == b"usual"
    assert compare(13, 10.0, 100) == b"usual"  # within max(2, 5 % of 100 = 5)
    assert compare(16, 10.0, 100) == b"busier"
    assert compare(4, 10.0, 100) == b"quieter"
    assert compare(130, 100.0, 200) == b"busier"  # 20 % of usual = 20 < 30
    assert compare(115, 100.0, 200) == b"usual"
    assert compare(3, 0.0, 20) == b"busier" and compare(2, 0.0, 20) == b"usual"


def _live(api: httpx.Client, hive_id: int) -> dict:
    return api.get(f"/v1/hives/{hive_id}/occupancy").json()


def _first_event(api: httpx.Client, hive_id: int) -> dict:
    with api.stream("GET", f"/v1/hives/{hive_id}/occupancy/stream", timeout=5) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                return json.loads(line[6:])
    raise AssertionError("no event")


def test_live_occupancy_carries_expected_now_and_vs_usual(api):
    hive_id = 3
    capacity = sql(api.dsn, "SELECT capacity FROM hive WHERE id = $1", hive_id)[0]["capacity"]
    people = max(10, capacity // 2)
    sql(api.dsn, "UPDATE hive_occupancy SET occupancy = $2, updated_at = now() "
                 "WHERE hive_id = $1", hive_id, people)
    wait_for(lambda: _live(api, hive_id)["occupancy"] == people, timeout=10,
             what="the zone to follow Postgres")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for usual, word in ((people, "usual"), (3 * people, "quieter"), (0, "busier")):
        expected = usual + 1.25
        sql(api.dsn, """
            INSERT INTO hive_occupancy_forecast (hive_id, hour, usual, expected, low, high)
            VALUES ($1, $2, $3, $4, 0, $4) ON CONFLICT (hive_id, hour) DO UPDATE
            SET usual = $3, expected = $4, low = 0, high = $4""", hive_id, hour, usual,
            expected)
        sql(api.dsn, "UPDATE insights_run SET finished_at = clock_timestamp() "
                     "WHERE job = 'forecast'")
        # every worker reloads within insights.live_refresh (200 ms): ask a few times
        wait_for(lambda e=expected: all(_live(api, hive_id)["expected_now"] == round(e, 1)
                                        for _ in range(6)), timeout=10, what="expected_now")
        assert _live(api, hive_id)["vs_usual"] == word
        many = api.get(f"/v1/occupancy?ids={hive_id},1").json()["hives"]
        assert many[0]["expected_now"] == round(expected, 1) and many[0]["vs_usual"] == word
        assert "expected_now" in many[1] and "vs_usual" in many[1]
        event = _first_event(api, hive_id)
        assert event["expected_now"] == round(expected, 1) and event["vs_usual"] == word
    # a hive without a forecast: both null
    other = NO_PROFILE
    assert {k: _live(api, other)[k] for k in ("expected_now", "vs_usual")} == {
        "expected_now": None, "vs_usual": None}


def test_answers_follow_a_new_run_of_the_job(api):
    """Each worker caches answers per hive while the job's run is the same; a new run
    (insights_run) is seen within insights.live_refresh and the new data served."""
    before = api.get("/v1/hives/4/popular-times").json()
    assert before["days"][0]["hours"][3]["avg"] != 77.7
    sql(api.dsn, "UPDATE hive_occupancy_profile SET mean = 77.7, p50 = 77.7, p90 = 77.7 "
                 "WHERE hive_id = 4 AND weekday = 1 AND hour = 3")
    sql(api.dsn, "UPDATE insights_run SET finished_at = clock_timestamp() "
                 "WHERE job = 'profile'")
    wait_for(lambda: all(api.get("/v1/hives/4/popular-times").json()["days"][0]["hours"][3]
                         ["avg"] == 77.7 for _ in range(6)), timeout=10, what="the new profile")
