"""Local hours of rollup groups (modules/kpis/hours.py) agree with zoneinfo for every
hour of a year, across DST changes and zones with half-hour offsets."""

from __future__ import annotations

import bisect
import datetime as dt
from zoneinfo import ZoneInfo

from modules.kpis.hours import LocalHours

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC")


def test_every_hour_of_a_year_gets_its_local_hour() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=365)
    hours = LocalHours(ZONES, start, end)
    assert len(hours.thresholds) == 1 + 2 * 3  # Berlin, New York and Sydney change twice
    t = start
    while t < end:
        segment = bisect.bisect_right(hours.thresholds, t)  # as width_bucket numbers it
        for name in ZONES:
            assert hours.local_hour(name, t.hour, segment) == t.astimezone(
                ZoneInfo(name)).hour, (name, t)
        t += dt.timedelta(hours=1)
