"""GET /v1/hives/{id}/popular-times and GET /v1/hives/{id}/forecast: reads of what the
insights job stored (job.py), never computed per request."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from modules.api import Call, IntParam, Param, Problem, Reply, Route, endpoint
from modules.database import database

from .schemas import BestTime, Day, Forecast, ForecastHour, HourStat, Peak, PopularTimes

MAX_ID = (1 << 63) - 1
CACHE_SIZE = 10000  # hives per worker and endpoint (cleared when full)
TAGS = ("insights",)
BAND_FEATURE = "forecast_band"

ID = Param("id", IntParam(min=1, max=MAX_ID), "the hive's id", where="path")

POPULAR_ROUTE = Route(
    "GET", "/v1/hives/{id}/popular-times", "How busy a hive usually is", PopularTimes, (ID,),
    tags=TAGS, errors=(404, 422), max_age=300, invalid_status=422,
    description="Weekday x local-hour profile of the last weeks (free for everyone).")
FORECAST_ROUTE = Route(
    "GET", "/v1/hives/{id}/forecast", "Expected occupancy of the next hours", Forecast, (
        ID, Param("hours", IntParam(min=1, max=24, unit="hours"), "how many hours, from the "
                  "current one", default=6)),
    tags=TAGS, errors=(401, 404, 422), max_age=60, invalid_status=422,
    description="The profile adjusted by how today runs; `best_time` is the quietest hour. "
                "The p10-p90 band needs the feature forecast_band (sign in).")

HIVE_SQL = """
SELECT h.timezone, h.capacity, i.weeks, i.profile_at, i.forecast_at, i.today_ratio
FROM hive h LEFT JOIN hive_insights i ON i.hive_id = h.id WHERE h.id = $1
"""
PROFILE_SQL = """
SELECT weekday, hour, samples, mean, p10, p50, p90 FROM hive_occupancy_profile
WHERE hive_id = $1
"""
FORECAST_SQL = """
SELECT hour, usual, expected, low, high FROM hive_occupancy_forecast
WHERE hive_id = $1 AND hour >= date_trunc('hour', now()) ORDER BY hour LIMIT $2
"""


class Cache:
    """Per-worker answers by hive, valid while their version (the stored data's run,
    as Live last saw it) is unchanged."""

    def __init__(self) -> None:
        self.entries: dict[Any, tuple[Any, Any]] = {}

    def get(self, key: Any, version: Any) -> Any:
        hit = self.entries.get(key)
        return hit[1] if hit is not None and version is not None and hit[0] == version else None

    def put(self, key: Any, version: Any, value: Any) -> None:
        if version is None:
            return
        if len(self.entries) >= CACHE_SIZE:
            self.entries.clear()
        self.entries[key] = (version, value)


class State:
    """A worker's insights objects (in `ctx.state["insights"]`)."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.popular = Cache()
        self.forecasts = Cache()


def _state(call: Call) -> State:
    return call.process.state["insights"]


async def _hive(conn: Any, hive_id: int) -> Any:
    row = await conn.fetchrow(HIVE_SQL, hive_id)
    if row is None:
        raise Problem(404, "no such hive")
    return row


def _round(value: float) -> float:
    return round(value, 1)


def profile_days(rows: list[Any], peaks: int) -> tuple[list[Day], list[Peak]]:
    """The 7 x 24 grid (nulls where the profile has no row) and the `peaks` busiest
    hours of the week (only hours someone usually is there)."""
    by_slot = {(r["weekday"], r["hour"]): r for r in rows}
    top = max((r["mean"] for r in rows), default=0.0)
    days = []
    for weekday in range(1, 8):
        hours = []
        for hour in range(24):
            r = by_slot.get((weekday, hour))
            if r is None:
                hours.append(HourStat(hour, None, None, None, None, None, 0))
                continue
            relative = round(100 * r["mean"] / top) if top > 0 else 0
            hours.append(HourStat(hour, _round(r["mean"]), _round(r["p10"]), _round(r["p50"]),
                                  _round(r["p90"]), relative, r["samples"]))
        busiest = max((h for h in hours if h.avg), key=lambda h: h.avg or 0.0, default=None)
        days.append(Day(weekday, hours, busiest.hour if busiest else None))
    ranked = sorted((r for r in rows if r["mean"] > 0),
                    key=lambda r: (-r["mean"], r["weekday"], r["hour"]))
    return days, [Peak(r["weekday"], r["hour"], _round(r["mean"]), peak_label(r["weekday"],
                                                                             r["hour"]))
                  for r in ranked[:peaks]]


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def peak_label(weekday: int, hour: int) -> str:
    """"Friday 21:00-22:00" (ISO weekday, local hour)."""
    return f"{WEEKDAYS[weekday - 1]} {hour:02d}:00-{(hour + 1) % 24:02d}:00"


@endpoint(POPULAR_ROUTE)
async def popular_times(call: Call) -> Reply:
    hive_id = call.params["id"]
    state = _state(call)
    version = state.live.runs.get("profile")
    body = state.popular.get(hive_id, version)
    if body is None:
        async with database(call.process).read_connection() as conn:
            hive = await _hive(conn, hive_id)
            rows = await conn.fetch(PROFILE_SQL, hive_id)
        days, peaks = profile_days(rows, call.process.config["insights"]["peak_hours"])
        body = msgspec.json.encode(PopularTimes(hive_id, hive["timezone"], hive["weeks"] or 0,
                                                hive["profile_at"], days, peaks))
        state.popular.put(hive_id, version, body)
    return Reply(body)


async def band_allowed(call: Call) -> bool:
    """Whether the signed-in caller's plan grants forecast_band (modules.auth's plan
    cache, as `require_feature` uses); False for anonymous callers."""
    user = call.request.ctx.get("user")
    if user is None:
        return False
    from modules.auth import auth_state, user_version

    ctx = call.process
    plan = await auth_state(ctx).features.get(database(ctx), user.user_id,
                                              user_version(ctx, user.user_id))
    return BAND_FEATURE in plan.features


def local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


async def _forecast_rows(call: Call, hive_id: int) -> tuple[Any, list[Any]]:
    """The hive's row and its stored forecast from the current hour on (24 at most),
    from the worker's cache while the forecast run and the hour are unchanged."""
    state = _state(call)
    run = state.live.runs.get("forecast")
    version = (run, int(time.time()) // 3600) if run is not None else None
    found = state.forecasts.get(hive_id, version)
    if found is None:
        async with database(call.process).read_connection() as conn:
            hive = await _hive(conn, hive_id)
            rows = await conn.fetch(FORECAST_SQL, hive_id, 24)
        found = (hive, rows)
        state.forecasts.put(hive_id, version, found)
    return found


@endpoint(FORECAST_ROUTE)
async def forecast(call: Call) -> Forecast:
    hive_id = call.params["id"]
    band = await band_allowed(call)
    hive, rows = await _forecast_rows(call, hive_id)
    zone = ZoneInfo(hive["timezone"])
    hours = [ForecastHour(r["hour"], local(r["hour"], zone), _round(r["expected"]),
                          _round(r["low"]) if band else None,
                          _round(r["high"]) if band else None, _round(r["usual"]))
             for r in rows[:call.params["hours"]]]
    quietest = min(hours, key=lambda h: h.expected, default=None)  # the first of equals
    best = BestTime(quietest.start, quietest.local_start, quietest.expected) if quietest else None
    ratio = hive["today_ratio"]
    return Forecast(hive_id, hive["forecast_at"], hive["capacity"], hive["timezone"], hours,
                    best, band, round(ratio, 3) if ratio is not None else None)
