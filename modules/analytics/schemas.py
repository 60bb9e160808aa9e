"""Request and response bodies of the analytics endpoints (docs/api.md "Occupancy
analytics")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
# instants rendered by the series code (cheaper than a datetime per bucket)
Instant = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class Corrected(msgspec.Struct):
    """A bucket's values with the corrections that touch it applied."""

    avg: float | None
    min: int | None
    max: int | None
    utilization: float | None


class Bucket(msgspec.Struct, gc=False):
    start: Instant
    end: Instant
    local_start: Instant
    empty: bool
    avg: float | None
    min: int | None
    max: int | None
    entries: int
    exits: int
    capacity: int
    utilization: float | None
    corrected: Corrected | None = None


class History(msgspec.Struct, rename={"from_": "from"}):
    hive_id: int
    timezone: str
    bucket: str
    from_: Instant
    to: Instant
    has_corrections: bool
    buckets: list[Bucket]


class At(msgspec.Struct):
    hive_id: int
    t: datetime
    occupancy: int | None
    corrected_occupancy: int | None
    source: str
    resolution: str | None
    as_of: datetime | None


class CorrectionIn(msgspec.Struct, forbid_unknown_fields=True):
    occupancy: Count
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    at: datetime | None = None


class Correction(msgspec.Struct):
    id: int
    hive_id: int
    at: datetime
    occupancy: int
    previous: int
    delta: int
    reason: str
    created_by: int | None
    created_at: datetime
    until: datetime


class CorrectionList(msgspec.Struct):
    corrections: list[Correction]


class ScheduleEntry(msgspec.Struct, rename={"from_": "from"}, forbid_unknown_fields=True):
    from_: datetime
    to: datetime
    capacity: Capacity
    label: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class ScheduleIn(msgspec.Struct, forbid_unknown_fields=True):
    entries: Annotated[list[ScheduleEntry], msgspec.Meta(max_length=1000)]


class Schedule(msgspec.Struct):
    hive_id: int
    default_capacity: int
    entries: list[ScheduleEntry]
