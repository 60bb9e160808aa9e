"""The per-day instant texts of 5m/15m/1h buckets against the per-bucket ones, on DST
days and in zones with :30 offsets and 30-minute DST shifts; the fast rounding of 1h
buckets against round()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=0, max_value=1e7, allow_nan=False)
       | st.integers(0, 10**9).map(lambda n: n / 1000)
       | st.integers(0, 10**8).map(lambda n: n / 200),  # exact halves of the last place
       st.sampled_from([(100, 2), (10000, 4)]))
def test_rounded_is_round(x: float, scale: tuple[int, int]) -> None:
    assert series.rounded(x, scale[0]) == round(x, scale[1])


@pytest.mark.parametrize("x", [0.125, 0.375, 2.675, 1.005, 0.00005, 0.00015, 1e12, 3e15])
def test_rounded_is_round_at_halves_and_large_values(x: float) -> None:
    assert series.rounded(x, 100) == round(x, 2)
    assert series.rounded(x, 10000) == round(x, 4)
