"""Response schemas of the insights endpoints (msgspec Structs; the OpenAPI document
describes them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

Count = Annotated[float, Meta(ge=0, description="people (an hourly average)")]
People = Annotated[float, Meta(ge=0)]
Hour = Annotated[int, Meta(ge=0, le=23)]


class HourStat(Struct):
    hour: Annotated[int, Meta(ge=0, le=23, description="local hour (the hive's clock)")]
    avg: Annotated[People | None, Meta(description="mean of the hourly averages")]
    p10: People | None
    p50: People | None
    p90: People | None
    relative: Annotated[Annotated[int, Meta(ge=0, le=100)] | None, Meta(description=(
        "avg against the busiest hour of the hive's week, 0..100"))]
    samples: Annotated[int, Meta(ge=0, description="hours that went into it")]


class Day(Struct):
    weekday: Annotated[int, Meta(ge=1, le=7, description="ISO weekday, 1 = Monday")]
    hours: list[HourStat]
    peak_hour: Annotated[Hour | None, Meta(description=(
        "the day's busiest local hour; null when nobody is usually there"))]


class Peak(Struct):
    weekday: Annotated[int, Meta(ge=1, le=7)]
    hour: Annotated[int, Meta(ge=0, le=23)]
    avg: Count
    label: Annotated[str, Meta(description="the hour named, local time",
                               examples=["Friday 21:00-22:00"])]


class PopularTimes(Struct):
    hive_id: int
    timezone: str
    weeks: Annotated[int, Meta(ge=0, description="weeks of history the profile covers "
                                                "(0: not computed yet)")]
    computed_at: Annotated[datetime | None, Meta(description="when the profile was computed")]
    days: Annotated[list[Day], Meta(description="7 days (Monday first) of 24 local hours")]
    peak_hours: Annotated[list[Peak], Meta(description="the busiest hours of the week, "
                                                      "busiest first")]


class ForecastHour(Struct):
    start: datetime
    local_start: Annotated[str, Meta(description="start on the hive's clock, with offset")]
    expected: Count
    low: Annotated[People | None, Meta(description=(
        "p10 of past weeks at this hour, adjusted like `expected`; null without the "
        "forecast_band feature"))]
    high: Annotated[People | None, Meta(description="p90, as `low`")]
    usual: Annotated[float, Meta(ge=0, description="the profile's mean for this hour")]


class BestTime(Struct):
    start: datetime
    local_start: str
    expected: Count


class Forecast(Struct):
    hive_id: int
    computed_at: Annotated[datetime | None, Meta(description="when the job made it")]
    capacity: int
    timezone: str
    hours: Annotated[list[ForecastHour], Meta(description=(
        "from the current hour on; empty while the hive has no profile"))]
    best_time: Annotated[BestTime | None, Meta(description="the quietest hour of `hours`")]
    band: Annotated[bool, Meta(description="whether low/high are given (feature "
                                           "forecast_band)")]
    today_ratio: Annotated[People | None, Meta(description=(
        "how the last hours ran against the profile (1: as usual), damped"))]
