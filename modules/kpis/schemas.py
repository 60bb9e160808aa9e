"""Response bodies of the kpis endpoints (msgspec Structs; the OpenAPI document shows
them).  docs/api.md "Sensor health, KPIs and feedback" explains every field."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct, field

Change = Annotated[float | None, Meta(description="(now - before) / before; null when "
                                                  "before is 0 or not compared")]


class SensorConfigState(Struct):
    pending: bool
    pending_id: int | None
    pending_since: datetime | None
    applied_id: int | None
    applied_at: datetime | None


class DoorImbalance(Struct):
    flag: bool
    net: int | None = None
    entries: int = 0
    exits: int = 0
    day: Annotated[date | None, Meta(description="the hive's last complete local day")] = None
    threshold: int = 0


class SensorHealth(Struct):
    sensor_id: int
    serial: Annotated[str, Meta(description="the sensor's MQTT id (external id)")]
    name: str | None
    firmware: str
    battery: Annotated[int | None, Meta(description="percent, estimated linearly from "
                                                    "battery_mv (kpis.battery_*_mv)")]
    battery_mv: int | None
    signal: Annotated[int | None, Meta(description="dBm, from CSQ: -113 + 2 x csq")]
    csq: int | None
    last_seen: datetime | None
    report_interval_s: int
    offline: bool
    counter_gaps: Annotated[int, Meta(description="v2 events lost (counter gaps)")]
    restarts: int
    anomalies: int
    config: SensorConfigState
    door_imbalance: DoorImbalance


class Health(Struct):
    hive_id: int
    as_of: datetime
    sensors: list[SensorHealth]


class Changes(Struct):
    visits: Change
    avg_occupancy: Change
    peak_occupancy: Change
    avg_dwell_minutes: Change
    favourites_gained: Change
    detail_views: Change
    search_impressions: Change
    deal_opens: Change


class Figures(Struct):
    visits: int
    avg_occupancy: float | None
    peak_occupancy: int | None
    peak_hours: Annotated[list[int], Meta(description="local hours (0-23), busiest first")]
    avg_dwell_minutes: Annotated[float | None, Meta(description="Little's law: average "
                                                                "occupancy / arrival rate")]
    favourites_gained: int
    detail_views: int
    search_impressions: int
    deal_opens: int
    change: Changes


class HiveFigures(Figures, kw_only=True):
    hive_id: int
    name: str


class Kpis(Struct, kw_only=True):
    account_id: int
    from_: datetime = field(name="from")
    to: datetime
    compare_from: datetime
    compare_to: datetime
    total: Figures
    hives: list[HiveFigures]


Label = Literal["positive", "neutral", "negative"]


class FeedbackMessage(Struct):
    id: int
    hive_id: int
    user_id: int | None
    rating: int | None
    content: str
    sentiment: float | None
    label: Label | None
    created_at: datetime


class FeedbackTotals(Struct):
    hive_id: int
    count: int
    rated: int
    avg_rating: float | None
    avg_sentiment: float | None
    positive: int
    neutral: int
    negative: int


class Feedback(Struct, kw_only=True):
    account_id: int
    from_: datetime = field(name="from")
    to: datetime
    messages: list[FeedbackMessage]
    totals: list[FeedbackTotals]
