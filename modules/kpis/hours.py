"""Local hours of day without converting every rollup row in SQL.

A rollup row's local hour is its UTC hour of day plus its zone's offset, and an offset
only changes at a zone's transitions (DST).  So the KPI query groups rows by UTC hour of
day and by the *segment* between consecutive transitions of the zones involved
(`width_bucket(hour, thresholds)`, a binary search), then regroups those groups by
local hour with each hive's offset in each segment (`shifts`, a few rows per hive): a
few hundred conversions instead of one per row (which cost more than half of the query
over 50 hives and 180 days), and 24 rows per hive to the caller instead of 72.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

DAY, HOUR = dt.timedelta(days=1), dt.timedelta(hours=1)
NEVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)  # keeps the threshold array non-empty


def _offset(zone: ZoneInfo, at: dt.datetime) -> dt.timedelta:
    return at.astimezone(zone).utcoffset() or dt.timedelta(0)


def _changes(zone: ZoneInfo, start: dt.datetime, end: dt.datetime) -> Iterable[dt.datetime]:
    """The whole UTC hours in [start, end) from which the zone's offset differs from the
    hour before (day by day, then hour by hour inside a day that changes)."""
    day = start
    while day < end:
        after = min(day + DAY, end)
        if _offset(zone, day) != _offset(zone, after):
            hour = day
            while hour < after:
                if _offset(zone, hour + HOUR) != _offset(zone, hour):
                    yield hour + HOUR
                hour += HOUR
        day = after


class LocalHours:
    """The thresholds of one query's window and the local hour of a (UTC hour of day,
    segment) group of a hive's zone."""

    def __init__(self, zones: Iterable[str], start: dt.datetime, end: dt.datetime) -> None:
        self.start = start.replace(minute=0, second=0, microsecond=0)
        self.zones = {name: ZoneInfo(name) for name in set(zones)}
        found = {t for z in self.zones.values() for t in _changes(z, self.start, end)}
        self.thresholds = [*sorted(found), NEVER]
        self._known: dict[tuple[str, int, int], int] = {}

    def local_hour(self, zone: str, utc_hour: int, segment: int) -> int:
        """`segment` as width_bucket numbers it: 0 before the first threshold, i from
        threshold i-1 on; every zone's offset is constant within a segment."""
        key = (zone, utc_hour, segment)
        known = self._known.get(key)
        if known is None:
            minutes = utc_hour * 60 + self.offset_minutes(zone, segment)
            known = self._known[key] = minutes // 60 % 24
        return known

    def offset_minutes(self, zone: str, segment: int) -> int:
        at = self.start if segment == 0 else self.thresholds[segment - 1]
        return _offset(self.zones[zone], at) // dt.timedelta(minutes=1)

    def shifts(self, hive_zones: dict[int, str]) -> tuple[list[int], list[int], list[int]]:
        """(hive ids, segments, offsets in minutes): every hive's offset in every segment
        of the window, as three arrays for `unnest` (queries.OCCUPANCY)."""
        rows = [(hive, segment, self.offset_minutes(zone, segment))
                for hive, zone in hive_zones.items()
                for segment in range(len(self.thresholds))]
        hives, segments, minutes = zip(*rows, strict=True) if rows else ((), (), ())
        return list(hives), list(segments), list(minutes)
