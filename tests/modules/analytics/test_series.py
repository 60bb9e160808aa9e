"""The per-day instant texts of 5m/15m/1h buckets against the per-bucket ones, on DST
days and in zones with :30 offsets and 30-minute DST shifts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from modules.analytics import series

DAYS = ("2026-03-29", "2026-10-25", "2026-03-08", "2026-11-01", "2026-04-05",
        "2026-10-04")


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/St_Johns",
                                  "Australia/Lord_Howe", "Asia/Kolkata"])
@pytest.mark.parametrize("bucket", ["5m", "15m", "1h"])
def test_day_instants_equal_per_bucket_texts(name: str, bucket: str) -> None:
    tz = ZoneInfo(name)
    for day in DAYS:
        start = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(hours=13)
        bounds = series.edges(start, start + timedelta(hours=50), bucket, tz)
        step = series.STEPS[bucket]
        assert series.regular(bounds) == step
        texts = series.iso(bounds[0]) + "Z"
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            slow = series._instants(texts, lo, hi, tz)
            days, seconds = divmod(lo, 86400)
            assert series.day_instants(tz, step, days)[seconds // step] == slow
            texts = slow[1]


def test_local_days_are_not_regular() -> None:
    tz = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 27, tzinfo=UTC)
    assert series.regular(series.edges(start, start + timedelta(days=5), "1d", tz)) is None
