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
from functools import lru_cache, partial
from math import floor
from typing import Any
from zoneinfo import ZoneInfo

from .schemas import Bucket, Corrected

STEPS = {"5m": 300, "15m": 900, "1h": 3600}
BUCKETS = ("5m", "15m", "1h", "1d")
# the longest window per bucket size (about 2,000-10,000 buckets)
MAX_WINDOW = {"5m": timedelta(days=7), "15m": timedelta(days=31),
              "1h": timedelta(days=400), "1d": timedelta(days=3660)}


# a rollup row, as the queries return it (epoch seconds):
# start, end, entries, exits, min, max, last, last_at, area, legacy average


@dataclass(slots=True)
class Span:
    """A value in force over [start, end): a capacity or a correction's offset."""

    start: float
    end: float
    value: int


def edges(start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> list[int]:
    """Bucket boundaries covering [start, end) (floored/ceiled to whole buckets)."""
    step = STEPS.get(bucket)
    if step is not None:
        first = int(start.timestamp()) // step * step
        last = -(-int(end.timestamp()) // step) * step
        return list(range(first, max(last, first + step) + 1, step))
    day = start.astimezone(tz).date()
    stop = (end - timedelta(microseconds=1)).astimezone(tz).date()
    out = []
    while day <= stop + timedelta(days=1):
        out.append(midnight(day, tz))
        day += timedelta(days=1)
    return out


def midnight(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tzinfo=tz).timestamp())


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


def _corrected_in(corrections: Sequence[Span], starts: list[float], lo: float, hi: float,
                  avg: float | None, low: int | None, high: int | None, capacity: int
                  ) -> Corrected | None:
    """The bucket [lo, hi) corrected, if a correction touches it."""
    parts = _overlaps(corrections, starts, lo, hi)
    return _corrected(avg, low, high, capacity, parts, hi - lo) if parts else None


@dataclass(slots=True)
class Context:
    """What the buckets of one answer share."""

    tz: ZoneInfo
    now: float
    default_capacity: int
    capacities: Sequence[Span]
    corrections: Sequence[Span]


@lru_cache(maxsize=8192)
def _day(days: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=days)).isoformat() + "T"


@lru_cache(maxsize=4096)
def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def iso(ts: int) -> str:
    """A UTC instant as ISO 8601 without its zone designator."""
    days, seconds = divmod(ts, 86400)
    return _day(days) + _hms(seconds)


@lru_cache(maxsize=4096)
def _offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    return f"{sign}{abs(offset) // 3600:02d}:{abs(offset) // 60 % 60:02d}"


@lru_cache(maxsize=65536)
def day_offsets(zone: ZoneInfo, days: int) -> tuple[tuple[int, int], ...]:
    """The UTC offsets of a zone during one UTC day: ((from second, offset), ...)."""
    def offset(ts: int) -> int:
        found = datetime.fromtimestamp(ts, UTC).astimezone(zone).utcoffset()
        return int(found.total_seconds()) if found is not None else 0

    start = days * 86400
    first, last = offset(start), offset(start + 86400)
    if first == last:
        return ((0, first),)
    lo, hi = 0, 86400  # the change lies in (lo, hi], found to the minute
    while hi - lo > 60:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if offset(start + mid) == first else (lo, mid)
    return ((0, first), (hi, last))


def local_iso(ts: int, zone: ZoneInfo) -> tuple[str, str]:
    """The local wall-clock time of a UTC instant (ISO, no offset) and its offset."""
    days, seconds = divmod(ts, 86400)
    offset = _offset_in(day_offsets(zone, days), seconds)
    return iso(ts + offset), _offset_text(offset)


def _offset_in(offsets: tuple[tuple[int, int], ...], seconds: int) -> int:
    """The offset in force `seconds` into the day of `offsets` (day_offsets)."""
    return offsets[0][1] if len(offsets) == 1 or seconds < offsets[1][0] else offsets[1][1]


def day_instants(zone: ZoneInfo, step: int, days: int) -> tuple[tuple[str, str, str], ...]:
    """(start, end, local start) texts of the step-sized buckets of one UTC day: a year
    of hours is 365 lookups of this instead of three texts built per bucket.  Kept by
    the zone's offsets that day, so zones that agree share them (Berlin and Paris,
    London and Lisbon), in a cache per step holding a few zone-years of hours."""
    return _DAY_INSTANTS[step](day_offsets(zone, days), days)


def _day_instants(step: int, offsets: tuple[tuple[int, int], ...], days: int
                  ) -> tuple[tuple[str, str, str], ...]:
    out = []
    for lo in range(days * 86400, (days + 1) * 86400, step):
        offset = _offset_in(offsets, lo - days * 86400)
        out.append((iso(lo) + "Z", iso(lo + step) + "Z",
                    iso(lo + offset) + _offset_text(offset)))
    return tuple(out)


# days cached per step: ~7 KB a day of hours, 28 KB of quarters, 82 KB of 5 minutes
_DAY_INSTANTS = {step: lru_cache(maxsize=size)(partial(_day_instants, step))
                 for step, size in ((300, 32), (900, 128), (3600, 1536))}


def regular(bounds: list[int]) -> int | None:
    """The step of bounds made by edges() for 5m/15m/1h, None for local days."""
    step = bounds[1] - bounds[0] if len(bounds) > 1 else 0
    if step not in STEPS.values() or bounds[0] % step:
        return None
    return step


def day_plan(bounds: list[int], step: int, settled: float
             ) -> list[tuple[int, int, int | None]]:
    """The buckets of `bounds` (regular, `step` apart) in stretches of at most a UTC day:
    (first, end, day) for buckets first..end-1, where day is the UTC day number when the
    stretch is the whole of a day that ended by `settled` (cacheable), else None."""
    per_day, last = 86400 // step, len(bounds) - 1
    out: list[tuple[int, int, int | None]] = []
    i = 0
    while i < last:
        lo = bounds[i]
        into = lo % 86400
        if not into and i + per_day <= last and bounds[i + per_day] <= settled:
            out.append((i, i + per_day, lo // 86400))
            i += per_day
        else:
            end = min(i + (86400 - into) // step, last)
            out.append((i, end, None))
            i = end
    return out


def render(bounds: list[int], rows: Sequence[Any], ctx: Context) -> list[Bucket]:
    """The buckets [bounds[i], bounds[i+1]) from the rows (records in the column order
    above) sorted by start.  The loop is the cost of a year of hours: names are local,
    the ISO texts come from per-day and per-second caches."""
    cap_starts = [s.start for s in ctx.capacities]
    cor_starts = [s.start for s in ctx.corrections]
    out: list[Bucket] = []
    append, make = out.append, Bucket
    j, n = 0, len(rows)
    tz, now, default = ctx.tz, ctx.now, ctx.default_capacity
    capacities, corrections = ctx.capacities, ctx.corrections
    start = iso(bounds[0]) + "Z"
    step = regular(bounds)
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if step is not None:
            days, seconds = divmod(lo, 86400)
            start, end, local = day_instants(tz, step, days)[seconds // step]
        else:
            start, end, local = _instants(start, lo, hi, tz)
        while j < n and rows[j][0] < lo:
            j += 1
        k = j
        while k < n and rows[k][0] < hi:
            k += 1
        capacity = (capacity_of(default, capacities, cap_starts, lo, hi)
                    if capacities else default)
        if k == j:
            append(make(start, end, local, True, None, None, None, 0, 0, capacity, None))
        elif k == j + 1 and not corrections:  # one row, the common case: no call
            s, e, entries, exits, low, high, last, last_at, area, legacy = rows[j]
            stop = e if e < now else now
            width = stop - s
            if last_at is not None and area is not None and last is not None:
                late = stop - last_at
                avg = (None if width <= 0 else round(
                    (0.0 + (area + last * late if late > 0 else area) / width * width)
                    / (0.0 + width), 2))
            elif legacy is not None and width > 0:
                avg = round((0.0 + legacy * width) / (0.0 + width), 2)
            else:
                avg = None
            append(make(start, end, local, False, avg, low, high, entries, exits, capacity,
                        None if avg is None else round(avg / capacity, 4)))
        else:
            entries, exits, low, high, avg = _values(rows, j, k, now)
            corrected = (_corrected_in(corrections, cor_starts, lo, hi, avg, low, high,
                                       capacity) if corrections else None)
            append(make(start, end, local, False, avg, low, high, entries, exits, capacity,
                        None if avg is None else round(avg / capacity, 4), corrected))
        j, start = k, end
    return out


def render_hours(bounds: list[int], rows: Sequence[Any], ctx: Context) -> list[Bucket]:
    """render() for 1h buckets from queries.HOURS rows (start, entries, exits, min, max,
    average): at most one row per bucket, its average computed by Postgres."""
    cap_starts = [s.start for s in ctx.capacities]
    cor_starts = [s.start for s in ctx.corrections]
    out: list[Bucket] = []
    append, make = out.append, Bucket
    j, n = 0, len(rows)
    tz, default = ctx.tz, ctx.default_capacity
    capacities, corrections = ctx.capacities, ctx.corrections
    next_s = rows[0][0] if rows else None
    lo, day, texts = bounds[0], None, ()
    for hi in bounds[1:]:
        days, seconds = divmod(lo, 86400)
        if days != day:
            day, texts = days, day_instants(tz, 3600, days)
        start, end, local = texts[seconds // 3600]
        capacity = (capacity_of(default, capacities, cap_starts, lo, hi)
                    if capacities else default)
        while next_s is not None and next_s < lo:
            j += 1
            next_s = rows[j][0] if j < n else None
        if next_s is None or next_s >= hi:
            append(make(start, end, local, True, None, None, None, 0, 0, capacity, None))
            lo = hi
            continue
        _, entries, exits, low, high, avg = rows[j]
        j += 1
        next_s = rows[j][0] if j < n else None
        if avg is not None:
            avg = rounded(avg, 100)
        corrected = (_corrected_in(corrections, cor_starts, lo, hi, avg, low, high, capacity)
                     if corrections else None)
        append(make(start, end, local, False, avg, low, high, entries, exits, capacity,
                    None if avg is None else rounded(avg / capacity, 10000), corrected))
        lo = hi
    return out


def rounded(x: float, scale: int) -> float:
    """round(x, 2) for scale 100, round(x, 4) for 10000 (the same float), at a third of
    its cost: the nearest multiple of 1/scale is k/scale, which int division rounds
    correctly; only where x * scale is too close to a half (or too large) to tell k
    from the float product does round() decide."""
    y = x * scale
    k = floor(y)
    f = y - k
    if 0.49 < f < 0.51 or not 0 <= y < 1e12:
        return round(x, 2 if scale == 100 else 4)
    return (k + (f > 0.5)) / scale


def _instants(start: str, lo: int, hi: int, tz: ZoneInfo) -> tuple[str, str, str]:
    """(start, end, local start) of a bucket of any length; start is the previous end."""
    local, offset = local_iso(lo, tz)
    return start, iso(hi) + "Z", local + offset


def _values(rows: Sequence[Any], j: int, k: int, now: float
            ) -> tuple[int, int, int | None, int | None, float | None]:
    """Entries, exits, min, max and time-weighted average of rows[j:k]."""
    entries = exits = 0
    low: int | None = None
    high: int | None = None
    weighted = weight = 0.0
    for i in range(j, k):
        s, e, ins, outs, r_min, r_max, last, last_at, area, legacy = rows[i]
        entries += ins
        exits += outs
        if r_min is not None and (low is None or r_min < low):
            low = r_min
        if r_max is not None and (high is None or r_max > high):
            high = r_max
        stop = e if e < now else now
        if last_at is not None and area is not None and last is not None:
            if stop <= s:
                continue
            late = stop - last_at
            avg = (area + last * late if late > 0 else area) / (stop - s)
        elif legacy is not None:
            avg = legacy
        else:
            continue
        weighted += avg * (stop - s)
        weight += stop - s
    return entries, exits, low, high, (round(weighted / weight, 2) if weight > 0 else None)


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
