"""The occupancy day: a hive's occupancy counts the reports since its last reset boundary.

The boundary is `reset_at` (default 04:00) on the hive's local clock.  A report belongs
to the current day when its event time (`reported_at`, or now if the sensor clock is
ahead) is at or after the boundary; older reports still count in the running totals
(`total_in`/`total_out`) but not in the occupancy.  The daily reset is therefore not an
event that must happen at the right moment: every commit first moves a hive whose day
is over to the current boundary (occupancy 0), and a sweep does the same for hives that
receive nothing, so a reset is idempotent and any process may do it.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def day_start(moment: datetime, tz: ZoneInfo, clock: time) -> datetime:
    """The last reset boundary at or before `moment` (aware), as an aware UTC datetime.

    The boundary is the local wall-clock time `clock`; in a DST fold the first
    occurrence is used, in a gap the wall-clock time is read with the offset before
    the gap (zoneinfo's fold=0), which is always a definite instant.
    """
    local = moment.astimezone(tz)
    for days in (0, 1, 2):
        candidate = datetime.combine(local.date() - timedelta(days=days), clock, tzinfo=tz)
        boundary = candidate.astimezone(UTC)
        if boundary <= moment:
            return boundary
    raise AssertionError("unreachable: a boundary lies within two days")


def local_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A v1 sensor's naive hive-local time as UTC (first occurrence when ambiguous)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)
