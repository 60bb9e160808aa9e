"""Buckets of an occupancy history from rollup rows: pure functions, no I/O.

Times are epoch seconds inside (cheap to compare and add over a year of hours) and
aware datetimes at the edges.  5m, 15m and 1h buckets are UTC-aligned (the hive's local
hours too, except in zones with :30/:45 offsets, where 1h buckets are UTC hours);
1d buckets are the hive's local days, from local midnight to local midnight (23 or 25
hours on DST days).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .schemas import Bucket, Corrected

STEPS = {"5m": 300, "15m": 900, "1h": 3600}
BUCKETS = ("5m", "15m", "1h", "1d")
# the longest window per bucket size (about 2,000-10,000 buckets)
MAX_WINDOW = {"5m": timedelta(days=7), "15m": timedelta(days=31),
              "1h": timedelta(days=400), "1d": timedelta(days=3660)}


@dataclass(slots=True)
class Row:
    """A rollup row (any level), times in epoch seconds."""

    start: float
    end: float
    entries: int
    exits: int
    min: int | None
    max: int | None
    last: int | None
    last_at: float | None
    area: float | None
    avg: float | None  # the legacy hourly average, for rows without a curve


@dataclass(slots=True)
class Span:
    """A value in force over [start, end): a capacity or a correction's offset."""

    start: float
    end: float
    value: int


def edges(start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> list[float]:
    """Bucket boundaries covering [start, end) (floored/ceiled to whole buckets)."""
    step = STEPS.get(bucket)
    if step is not None:
        first = int(start.timestamp()) // step * step
        last = -(-int(end.timestamp()) // step) * step
        return [float(t) for t in range(first, max(last, first + step) + 1, step)]
    day = start.astimezone(tz).date()
    stop = (end - timedelta(microseconds=1)).astimezone(tz).date()
    out = []
    while day <= stop + timedelta(days=1):
        out.append(midnight(day, tz))
        day += timedelta(days=1)
    return out


def midnight(day: date, tz: ZoneInfo) -> float:
    return datetime.combine(day, time(0), tzinfo=tz).timestamp()


def row_avg(row: Row, now: float) -> float | None:
    """Time-weighted average of a row, finished to its end (or now, if running)."""
    if row.last_at is None or row.area is None or row.last is None:
        return row.avg
    end = min(row.end, now)
    if end <= row.start:
        return None
    area = row.area + row.last * max(end - row.last_at, 0.0)
    return area / (end - row.start)


def _overlaps(spans: Sequence[Span], starts: list[float], lo: float, hi: float
              ) -> list[tuple[float, int]]:
    """(length, value) of the spans that overlap [lo, hi) (spans sorted, disjoint)."""
    out = []
    i = max(bisect_right(starts, lo) - 1, 0)
    while i < len(spans) and spans[i].start < hi:
        s = spans[i]
        length = min(s.end, hi) - max(s.start, lo)
        if length > 0:
            out.append((length, s.value))
        i += 1
    return out


def capacity_of(default: int, spans: Sequence[Span], starts: list[float], lo: float,
                hi: float) -> int:
    """The capacity in force for the largest share of [lo, hi)."""
    parts = _overlaps(spans, starts, lo, hi)
    if not parts:
        return default
    best = max(parts)
    return best[1] if best[0] >= (hi - lo) - sum(p[0] for p in parts) else default


def _utilization(avg: float | None, capacity: int) -> float | None:
    return None if avg is None else round(avg / capacity, 4)


def _corrected(avg: float | None, low: int | None, high: int | None, capacity: int,
               parts: list[tuple[float, int]], length: float) -> Corrected:
    """Raw values plus the offsets in force: time-weighted for the average, the
    smallest/largest offset for min/max (uncovered time has offset 0)."""
    covered = sum(p[0] for p in parts)
    offsets = [v for _, v in parts] + ([0] if covered < length else [])
    mean = sum(n * v for n, v in parts) / length
    c_avg = None if avg is None else round(max(avg + mean, 0.0), 2)
    c_min = None if low is None else max(low + min(offsets), 0)
    c_max = None if high is None else max(high + max(offsets), 0)
    return Corrected(c_avg, c_min, c_max, _utilization(c_avg, capacity))


@dataclass(slots=True)
class Context:
    """What the buckets of one answer share."""

    tz: ZoneInfo
    now: float
    default_capacity: int
    capacities: Sequence[Span]
    corrections: Sequence[Span]


def buckets(bounds: list[float], rows: Sequence[Row], ctx: Context) -> list[Bucket]:
    """One Bucket per [bounds[i], bounds[i+1]), from the rows sorted by start."""
    cap_starts = [s.start for s in ctx.capacities]
    cor_starts = [s.start for s in ctx.corrections]
    out: list[Bucket] = []
    j, n = 0, len(rows)
    tz, now = ctx.tz, ctx.now
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        while j < n and rows[j].start < lo:
            j += 1
        k = j
        while k < n and rows[k].start < hi:
            k += 1
        capacity = (capacity_of(ctx.default_capacity, ctx.capacities, cap_starts, lo, hi)
                    if ctx.capacities else ctx.default_capacity)
        start = datetime.fromtimestamp(lo, UTC)
        bucket = _bucket(rows[j:k], lo, hi, now, capacity)
        bucket.start, bucket.end = start, datetime.fromtimestamp(hi, UTC)
        bucket.local_start = start.astimezone(tz)
        if ctx.corrections and not bucket.empty:
            parts = _overlaps(ctx.corrections, cor_starts, lo, hi)
            if parts:
                bucket.corrected = _corrected(bucket.avg, bucket.min, bucket.max, capacity,
                                              parts, hi - lo)
        out.append(bucket)
        j = k
    return out


def _bucket(rows: Sequence[Row], lo: float, hi: float, now: float, capacity: int) -> Bucket:
    if not rows:
        return Bucket(None, None, None, True, None, None, None, 0, 0,  # type: ignore[arg-type]
                      capacity, None)
    entries = exits = 0
    low: int | None = None
    high: int | None = None
    weighted = weight = 0.0
    for r in rows:
        entries += r.entries
        exits += r.exits
        if r.min is not None and (low is None or r.min < low):
            low = r.min
        if r.max is not None and (high is None or r.max > high):
            high = r.max
        avg = row_avg(r, now)
        if avg is not None:
            length = min(r.end, now) - r.start
            weighted += avg * length
            weight += length
    avg = round(weighted / weight, 2) if weight > 0 else None
    return Bucket(None, None, None, False, avg, low, high, entries, exits,  # type: ignore[arg-type]
                  capacity, _utilization(avg, capacity))


def correction_spans(rows: Sequence[tuple[float, float, int]]) -> list[Span]:
    """Corrections (at, day_end, offset) sorted by `at` → disjoint spans: each holds
    until the next correction of its day or the day's end."""
    spans: list[Span] = []
    for i, (at, day_end, offset) in enumerate(rows):
        end = day_end
        if i + 1 < len(rows) and rows[i + 1][0] < end:
            end = rows[i + 1][0]
        if end > at:
            spans.append(Span(at, end, offset))
    return spans


def offset_at(spans: Sequence[Span], t: float) -> int:
    """The correction offset in force at t (0 if none)."""
    for s in spans:
        if s.start <= t < s.end:
            return s.value
    return 0
