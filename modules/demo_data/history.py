"""A week of sensor history per hive: visitors, sensor reports, rollup and ingest state.

Theory of operation
-------------------
Everything is integer Unix seconds (UTC) until the rows are encoded, and one hive is
simulated at a time from its own `random.Random(plan.seed)`, so a hive's history does
not depend on which other hives exist or in which order they are generated.

1. **Visitors.**  For each local opening session of the hive (opening hours per hive
   type and weekday, `OPENING`), the expected number of arrivals follows a daily curve
   (a sum of bumps over the local clock) scaled so that the peak would fill `fill` of
   the capacity.  Arrivals are drawn per 15-minute bin, each visitor stays a duration
   drawn per hive type and leaves by closing time (plus a few minutes).  An arrival that
   finds the hive at capacity is turned away and never counted, so the true occupancy
   never exceeds the capacity and is 0 shortly after closing.  A visitor leaves by the
   door (sensor) they came in by, so every sensor's own net count stays >= 0.  The
   bins follow the local clock, so nobody arrives in the last 20 minutes of the real
   session (a night when clocks go forward is an hour short).  Sessions that began
   before the window are skipped: every hive is empty at the start.  Hives with two
   doors use v2 sensors, whose per-event rows keep the summed timeline exact.
2. **Reports** (one row per v1 report or v2 event, as ingest stores them):
   * v1: cumulative totals (16 bit, wrapping at 65536) after every 5th event (0xFF) and
     on the 30-minute timer since the last report (0x20).  `sensor_local_time` is the
     hive-local wall clock; `reported_at` is what ingest derives from it (the local
     time in the hive's zone, first occurrence when ambiguous).  A few sensors restart
     at night (totals back to 0/0, 0x21 or old-style 0x20).  A report that would sort
     before the previous one in the counting order (the repeated hour when clocks go
     back, or a wrap within one second) is treated as lost in transit: its events are
     covered by the next report's totals.  Deltas and outcomes follow
     `modules.mqtt_ingest.counting.step` exactly (the tests replay the rows with it).
   * v2: one row per entry/exit event, plus a status event every few hours; the 8-bit
     counter runs over all events, and a few status events are lost on the way, which
     leaves counter gaps (`lost_events`) but never changes occupancy.
3. **Rollup**: the hive's occupancy timeline is the running sum of `delta_in -
   delta_out` over its rows in `reported_at` order (per second).  Per UTC hour: the sums
   of deltas, the peak (at the hour's start or after any second in it) and the
   time-weighted average.  An hour is written when anything was counted in it or the
   hive was occupied; `rollup_of` is the definition (the tests recompute it apart).
   This timeline has no daily reset: it is the true occupancy, never below zero.
4. **Ingest state** per sensor: the readable columns (v1 totals/time of the last
   report, the restart baseline, the last v2 counter and event time, lost events,
   anomalies) and the whole `CounterTally` / `EventTally` of `mqtt_ingest.counting`,
   built with its own classes; both equal the replay of the stored rows.
5. **Occupancy day** (migration 0004): the day began at the last hive-local `reset_at`
   boundary at or before the anchor; `day_in`/`day_out` sum the rows since then and
   `clamps` counts the seconds after which a day's net was below zero
   (`occupancy_day`).

The `sensor_report` rows are emitted as PostgreSQL binary COPY data (no header), which
keeps both the encoding and the server's parsing cheap.
"""

from __future__ import annotations

import heapq
import math
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from modules.mqtt_ingest.codec import CounterReport, ReportType
from modules.mqtt_ingest.counting import CounterTally, EventTally

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "HivePlan",
    "HiveHistory",
    "REPORT_COLUMNS",
    "SensorPlan",
    "SensorState",
    "Window",
    "ZoneClock",
    "rollup_of",
    "simulate_hive",
]

PG_EPOCH = 946_684_800  # 2000-01-01 00:00:00 UTC, the origin of binary timestamps
USEC = 1_000_000
WRAP = 65536  # mqtt.counter_wrap default
MAX_DELTA = 1000  # mqtt.max_delta default
REPORT_EVERY = 5  # v1: a report after every 5th event (type 0xFF)
V1_TIMER = 1800  # v1: a report 30 minutes after the last one (type 0x20)
COUNT, TIMEOUT, START = 0xFF, 0x20, 0x21
EXIT, ENTRY, STATUS = 0, 1, 2
BIN = 900  # arrivals are drawn per 15-minute bin

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

REPORT_COLUMNS = (
    "sensor_id",
    "hive_id",
    "protocol",
    "reported_at",
    "received_at",
    "sensor_local_time",
    "total_in",
    "total_out",
    "report_type",
    "event_type",
    "distance_mm",
    "counter",
    "delta_in",
    "delta_out",
    "outcome",
)
# One binary COPY tuple per protocol: field count, then (length, value) per column,
# length -1 for NULL.  Types: bigint, bigint, text, timestamptz x2, timestamp, int x2,
# smallint, smallint, int, smallint, int x2, text.
_V1_ROW = struct.Struct(">h iq iq i2s iq iq iq ii ii ih i i i ii ii i7s".replace(" ", ""))
_V2_ROW = struct.Struct(">h iq iq i2s iq iq i i i i ih ii ih ii ii i7s".replace(" ", ""))
_OUTCOMES = {"applied": b"applied", "restart": b"restart", "anomaly": b"anomaly"}


Hourly = tuple[int, int, int, int, int, float]  # see rollup_of


@dataclass(frozen=True, slots=True)
class Window:
    """The simulated period [start, end), whole UTC hours, as Unix seconds."""

    start: int
    end: int

    @property
    def hours(self) -> int:
        return (self.end - self.start) // 3600


@dataclass(frozen=True, slots=True)
class SensorPlan:
    """What the city decided about one sensor; the history follows from it."""

    sensor_id: int
    firmware: str  # v1 | v2
    share: float  # fraction of the hive's visitors using this sensor's door
    start_in: int = 0  # v1: totals at the window start (since the last device start)
    start_out: int = 0
    timer_phase: int = 0  # v1: seconds after the window start of the first report
    restart_at: int | None = None  # v1: first timer report at/after this is a restart
    restart_type: int = START  # 0x21, or 0x20 for old firmware
    counter: int = 0  # v2: counter of the first event
    event_threshold: int = 5  # v2: events per payload
    flush_s: int = 300  # v2: a payload waits at most this long
    status_every: int = 6 * 3600  # v2: a status event this often
    status_phase: int = 0
    status_loss: float = 0.03  # v2: share of status events lost in transit
    distance_mm: int = 1800  # v2: detection threshold (distance of an event below it)


@dataclass(frozen=True, slots=True)
class HivePlan:
    hive_id: int
    kind: str  # hive_type code
    capacity: int
    timezone: str
    seed: int
    popularity: float = 1.0
    open: bool = True  # False: temporarily closed, sensors report but nobody comes
    sensors: tuple[SensorPlan, ...] = ()


@dataclass(slots=True)
class SensorState:
    """The ingest state of one sensor after its rows (columns of sensor_ingest_state)."""

    sensor_id: int
    firmware: str
    rows: int = 0
    entries: int = 0
    exits: int = 0
    last_total_in: int | None = None
    last_total_out: int | None = None
    last_report_type: int | None = None
    last_sensor_time: int | None = None  # UTC seconds of the last v1 report
    last_local_time: int | None = None  # its local wall clock, as "seconds" since 1970
    baseline_in: int | None = None
    baseline_out: int | None = None
    baseline_at: int | None = None
    restarts: int = 0
    last_counter: int | None = None
    last_event_at: int | None = None
    lost_events: int = 0
    anomalies: int = 0
    last_anomaly_at: int | None = None
    last_activity: int | None = None  # last row's received_at
    tally: dict[str, Any] | None = None  # counting.CounterTally/EventTally.to_dict()


@dataclass(slots=True)
class HiveHistory:
    hive_id: int
    copy_data: bytes  # binary COPY tuples of sensor_report, without header/trailer
    rows: int
    v1_rows: int
    v2_rows: int
    visitors: int
    turned_away: int
    sensors: list[SensorState]
    hourly: list[Hourly]  # see rollup_of
    occupancy: int
    total_in: int
    total_out: int
    last_report_at: int | None
    max_occupancy: int = 0
    day_start: int | None = None  # the hive's last reset boundary at or before the anchor
    day_in: int = 0  # entries and exits of the rows since day_start
    day_out: int = 0
    clamps: int = 0  # seconds after which a day's net (in - out) was below zero
    five: list[Hourly] = field(default_factory=list)  # rollup_of with 5-minute buckets


# ---------------------------------------------------------------------------------------
# Opening hours and daily curves
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    open_min: int  # minutes after local midnight of the opening day (may exceed 1440)
    close_min: int
    fill: float  # share of the capacity the curve's peak would fill
    bumps: tuple[tuple[float, float, float], ...]  # (local hour, height, width in hours)


def _s(opens: str, closes: str, fill: float, *bumps: tuple[float, float, float]) -> Session:
    def minutes(text: str) -> int:
        hours, mins = text.split(":")
        return int(hours) * 60 + int(mins)

    return Session(minutes(opens), minutes(closes), fill, bumps)


WEEKDAYS, WEEKEND = (0, 1, 2, 3, 4), (5, 6)
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)

# Per hive type: {weekday (0 = Monday): sessions opening that day}.  Closing times past
# 24:00 are after midnight.
OPENING: dict[str, dict[int, tuple[Session, ...]]] = {}


def _days(table: dict[tuple[int, ...], tuple[Session, ...]]) -> dict[int, tuple[Session, ...]]:
    return {day: sessions for days, sessions in table.items() for day in days}


OPENING["cafe"] = _days(
    {
        WEEKDAYS: (
            _s("07:00", "19:00", 0.45, (8.6, 1.0, 1.0), (12.8, 0.8, 0.8), (15.6, 0.5, 1.0)),
        ),
        WEEKEND: (_s("09:00", "19:00", 0.6, (11.6, 1.0, 1.6), (15.5, 0.6, 1.2)),),
    }
)
OPENING["bar"] = _days(
    {
        (MON, TUE, WED, SUN): (_s("17:00", "25:00", 0.45, (21.5, 1.0, 1.8)),),
        (THU,): (_s("17:00", "26:00", 0.6, (22.0, 1.0, 1.8)),),
        (FRI, SAT): (_s("17:00", "27:00", 0.9, (23.0, 1.0, 2.0)),),
    }
)
OPENING["restaurant"] = _days(
    {
        (MON, TUE, WED, THU): (
            _s("11:30", "15:00", 0.5, (12.9, 1.0, 0.7)),
            _s("17:30", "23:30", 0.55, (20.0, 1.0, 1.1)),
        ),
        (FRI, SAT): (
            _s("11:30", "15:00", 0.55, (13.0, 1.0, 0.8)),
            _s("17:30", "24:00", 0.85, (20.3, 1.0, 1.2)),
        ),
        (SUN,): (
            _s("11:30", "15:30", 0.75, (13.2, 1.0, 1.0)),
            _s("17:30", "22:30", 0.5, (19.5, 1.0, 1.1)),
        ),
    }
)
OPENING["club"] = _days(
    {
        (THU,): (_s("23:00", "29:00", 0.55, (26.0, 1.0, 1.3)),),
        (FRI, SAT): (_s("23:00", "31:00", 0.95, (27.0, 1.0, 1.6)),),
    }
)
OPENING["store"] = _days(
    {
        WEEKDAYS: (_s("10:00", "20:00", 0.25, (12.8, 0.7, 1.2), (17.5, 1.0, 1.4)),),
        (SAT,): (_s("10:00", "20:00", 0.45, (14.0, 1.0, 2.5)),),
    }
)
OPENING["gym"] = _days(
    {
        WEEKDAYS: (
            _s("06:00", "23:00", 0.4, (7.3, 0.8, 0.9), (12.5, 0.35, 0.8), (18.8, 1.0, 1.4)),
        ),
        WEEKEND: (_s("08:00", "21:00", 0.3, (11.0, 1.0, 2.5), (17.0, 0.6, 1.5)),),
    }
)
OPENING["other"] = _days(
    {
        (TUE, WED, THU, FRI): (_s("10:00", "18:00", 0.25, (14.5, 1.0, 2.2)),),
        WEEKEND: (_s("10:00", "18:00", 0.45, (14.0, 1.0, 2.5)),),
    }
)

# Minutes a visitor stays: triangular (low, high, mode).
STAY: dict[str, tuple[float, float, float]] = {
    "cafe": (10, 75, 30),
    "bar": (40, 200, 90),
    "restaurant": (45, 130, 80),
    "club": (45, 330, 150),
    "store": (5, 50, 15),
    "gym": (35, 110, 65),
    "other": (25, 160, 60),
}

# Capacity per hive type: triangular (low, high, mode).
CAPACITY: dict[str, tuple[int, int, int]] = {
    "cafe": (12, 60, 28),
    "bar": (25, 180, 60),
    "restaurant": (20, 160, 55),
    "club": (120, 900, 300),
    "store": (10, 120, 25),
    "gym": (25, 180, 60),
    "other": (20, 200, 50),
}


@cache
def _curve(session: Session) -> tuple[tuple[float, ...], float]:
    """Relative arrival intensity per 15-minute bin of a session, and its sum."""
    last = session.close_min - 20  # nobody arrives in the last 20 minutes
    weights = []
    for start in range(session.open_min, last, BIN // 60):
        hour = (start + 7.5) / 60
        value = sum(h * math.exp(-0.5 * ((hour - mu) / w) ** 2) for mu, h, w in session.bumps)
        weights.append(max(value, 0.08))
    peak = max(weights, default=1.0)
    normed = tuple(w / peak for w in weights)
    return normed, sum(normed)


# ---------------------------------------------------------------------------------------
# Time zones
# ---------------------------------------------------------------------------------------


class ZoneClock:
    """UTC offsets of one zone over a window, per 15 minutes, and its repeated hours."""

    SLOT = 900

    def __init__(self, name: str, window: Window) -> None:
        self.zone = ZoneInfo(name)
        self.start = window.start - 2 * 86400
        count = (window.end - self.start) // self.SLOT + 2 * 96
        self.offsets = [self._offset(self.start + i * self.SLOT) for i in range(count)]
        # [from, to): the second pass of a local hour repeated when clocks go back
        self.repeated: list[tuple[int, int]] = []
        for i in range(1, count):
            drop = self.offsets[i - 1] - self.offsets[i]
            if drop > 0:
                moment = self.start + i * self.SLOT
                self.repeated.append((moment, moment + drop))

    def _offset(self, moment: int) -> int:
        offset = datetime.fromtimestamp(moment, UTC).astimezone(self.zone).utcoffset()
        assert offset is not None
        return int(offset.total_seconds())

    def local(self, moment: int) -> int:
        """The local wall clock at UTC `moment`, as naive "seconds since 1970"."""
        return moment + self.offsets[(moment - self.start) // self.SLOT]

    def second_pass(self, moment: int) -> bool:
        """Whether the local time at `moment` already happened once (clocks went back)."""
        return any(lo <= moment < hi for lo, hi in self.repeated)

    def utc(self, local: datetime) -> int:
        """Unix seconds of a naive local time (the first occurrence when ambiguous)."""
        return int(local.replace(tzinfo=self.zone, fold=0).timestamp())


@lru_cache(maxsize=64)
def zone_clock(name: str, window: Window) -> ZoneClock:
    return ZoneClock(name, window)


# ---------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------


def _sessions(plan: HivePlan, window: Window, clock: ZoneClock) -> list[tuple[int, int, Session]]:
    """(open, close, session) in UTC seconds, for sessions opening inside the window."""
    found = []
    first = datetime.fromtimestamp(clock.local(window.start), UTC).date() - timedelta(days=1)
    last = datetime.fromtimestamp(clock.local(window.end), UTC).date()
    day = first
    while day <= last:
        midnight = datetime(day.year, day.month, day.day)
        for session in OPENING[plan.kind].get(day.weekday(), ()):
            opens = clock.utc(midnight + timedelta(minutes=session.open_min))
            closes = clock.utc(midnight + timedelta(minutes=session.close_min))
            # a session already running at the window start is skipped (empty hives);
            # the half hour leaves room for every v1 sensor's first (baseline) report
            if opens >= window.start + V1_TIMER and opens < window.end and closes > opens:
                found.append((opens, closes, session))
        day += timedelta(days=1)
    return found


def _visitors(
    plan: HivePlan, window: Window, clock: ZoneClock, rng: random.Random
) -> tuple[list[list[tuple[int, int]]], int, int]:
    """Per sensor, its (time, event type) entries and exits, sorted; visitors; turned away."""
    doors: list[list[tuple[int, int]]] = [[] for _ in plan.sensors]
    if not plan.open or not plan.sensors:
        return doors, 0, 0
    low, high, mode = STAY[plan.kind]
    mean_stay = (low + high + mode) / 3
    shares = [s.share for s in plan.sensors]
    door_cum = [sum(shares[: i + 1]) for i in range(len(shares))]
    single = len(plan.sensors) == 1
    capacity = plan.capacity
    visitors = turned_away = 0
    random_ = rng.random
    # stays in seconds: 256 quantiles of the type's triangular distribution, picked at random
    stays = sorted(int(rng.triangular(low, high, mode) * 60) for _ in range(256))
    for opens, closes, session in _sessions(plan, window, clock):
        weights, total = _curve(session)
        if not weights:
            continue
        fill = session.fill * plan.popularity * max(0.5, rng.gauss(1.0, 0.12))
        per_minute_at_peak = fill * capacity / mean_stay
        expected = per_minute_at_peak * total * (BIN / 60)
        count = max(0, round(rng.gauss(expected, math.sqrt(expected))))
        bins = rng.choices(range(len(weights)), weights=weights, k=count)
        arrivals = sorted(opens + b * BIN + int(random_() * BIN) for b in bins)
        # the bins follow the local clock; when clocks go forward that night the session
        # is an hour shorter, and nobody arrives in its last 20 minutes
        last_in = closes - 1200
        inside: list[int] = []  # departure times of those inside (a heap)
        last_out = closes + 600
        for arrival in arrivals:
            if arrival >= last_in:
                break
            while inside and inside[0] <= arrival:
                heapq.heappop(inside)
            if len(inside) >= capacity:
                turned_away += 1
                continue
            leaves = arrival + stays[int(random_() * 256)]
            if leaves > closes:  # closing time: everybody out within ten minutes
                leaves = closes + int(random_() * 600)
                leaves = min(max(leaves, arrival + 60), last_out)
            heapq.heappush(inside, leaves)
            visitors += 1
            if single:
                door = doors[0]
            else:
                pick = random_()
                door = doors[next((i for i, c in enumerate(door_cum) if pick < c), -1)]
            door.append((arrival, ENTRY))
            door.append((leaves, EXIT))
    end = window.end
    for door in doors:
        door.sort()
        while door and door[-1][0] >= end:  # after the anchor: not happened yet
            door.pop()
    return doors, visitors, turned_away


def _latency(rng: random.Random) -> int:
    return 1 + int(rng.random() * 4)


def _v1_reports(
    plan: HivePlan,
    sensor: SensorPlan,
    events: list[tuple[int, int]],
    window: Window,
    clock: ZoneClock,
    rng: random.Random,
    out: bytearray,
    timeline: list[tuple[int, int, int]],
) -> SensorState:
    """Emit a v1 sensor's counter reports; return its ingest state."""
    state = SensorState(sensor.sensor_id, "v1")
    pack = _V1_ROW.pack
    sid, hid = sensor.sensor_id, plan.hive_id
    total_in, total_out = sensor.start_in % WRAP, sensor.start_out % WRAP
    restart_at = sensor.restart_at
    last_key: tuple[int, int, int, int] | None = None  # (local, in, out, type) of the last row
    last_moment = 0
    prev_in = prev_out = 0
    latest = window.end - 1

    def emit(moment: int, report_type: int) -> None:
        nonlocal last_key, last_moment, prev_in, prev_out
        local = clock.local(moment)
        key = (local, total_in, total_out, report_type)
        if last_key is not None and (key <= last_key or clock.second_pass(moment)):
            return  # would arrive "late" in sensor order: lost in transit
        restart = report_type == START or (total_in == 0 and total_out == 0)
        if last_key is None or restart:
            delta_in = delta_out = 0
            outcome = "restart" if restart else "applied"
            if restart:
                state.restarts += 1
            state.baseline_in, state.baseline_out, state.baseline_at = total_in, total_out, moment
        else:
            delta_in = total_in - prev_in if total_in >= prev_in else total_in + WRAP - prev_in
            delta_out = (
                total_out - prev_out if total_out >= prev_out else total_out + WRAP - prev_out
            )
            if delta_in <= MAX_DELTA and delta_out <= MAX_DELTA:
                outcome = "applied"
            else:
                delta_in = delta_out = 0
                outcome = "anomaly"
                state.anomalies += 1
                state.last_anomaly_at = moment
        received = min(moment + _latency(rng), max(moment, latest))
        out.extend(
            pack(
                15,
                8,
                sid,
                8,
                hid,
                2,
                b"v1",
                8,
                (moment - PG_EPOCH) * USEC,
                8,
                (received - PG_EPOCH) * USEC,
                8,
                (local - PG_EPOCH) * USEC,
                4,
                total_in,
                4,
                total_out,
                2,
                report_type,
                -1,
                -1,
                -1,
                4,
                delta_in,
                4,
                delta_out,
                7,
                _OUTCOMES[outcome],
            )
        )
        state.rows += 1
        timeline.append((moment, delta_in, delta_out))
        state.entries += delta_in
        state.exits += delta_out
        last_key, last_moment, prev_in, prev_out = key, moment, total_in, total_out
        state.last_activity = received

    last_report = window.start + sensor.timer_phase
    pending = 0

    def timer_until(moment: int) -> None:
        """Fire the 30-minute timer for every period that ended by `moment`."""
        nonlocal last_report, total_in, total_out, restart_at
        while last_report + V1_TIMER <= moment:
            last_report += V1_TIMER
            if restart_at is not None and last_report >= restart_at and pending == 0:
                restart_at = None  # the device starts: counters back to 0
                total_in = total_out = 0
                emit(last_report, sensor.restart_type)
            else:
                emit(last_report, TIMEOUT)

    emit(last_report, TIMEOUT)  # the first report seen: the baseline
    for moment, kind in events:
        timer_until(moment)
        if kind == ENTRY:
            total_in = (total_in + 1) % WRAP
        else:
            total_out = (total_out + 1) % WRAP
        pending += 1
        if pending == REPORT_EVERY:
            pending = 0
            last_report = moment
            emit(moment, COUNT)
    timer_until(latest)
    if last_key is not None:
        state.last_local_time, state.last_total_in, state.last_total_out = last_key[:3]
        state.last_report_type = last_key[3]
        state.last_sensor_time = last_moment
        last = CounterReport(
            total_in=last_key[1],
            total_out=last_key[2],
            sensor_time=datetime.fromtimestamp(last_key[0], UTC).replace(tzinfo=None),
            report_type=ReportType(last_key[3]),
        )
        tally = CounterTally(last, state.entries, state.exits, state.anomalies, state.rows)
        state.tally = tally.to_dict()
    return state


def _v2_events(
    plan: HivePlan,
    sensor: SensorPlan,
    events: list[tuple[int, int]],
    window: Window,
    rng: random.Random,
    out: bytearray,
    timeline: list[tuple[int, int, int]],
) -> SensorState:
    """Emit a v2 sensor's events (with status events); return its ingest state."""
    state = SensorState(sensor.sensor_id, "v2")
    statuses = [
        (moment, STATUS)
        for moment in range(window.start + sensor.status_phase, window.end, sensor.status_every)
    ]
    stream = list(heapq.merge(events, statuses)) if statuses else events
    pack = _V2_ROW.pack
    sid, hid = sensor.sensor_id, plan.hive_id
    counter = sensor.counter
    previous: int | None = None  # counter of the previous event that arrived
    batch: list[tuple[int, int, int, int]] = []
    batch_start = 0
    random_ = rng.random
    near = int(sensor.distance_mm * 0.25)
    spread = sensor.distance_mm - near - 1
    latest = window.end - 1
    second: int | None = None  # the latest second with events, its marks, the counter before
    marks: list[tuple[int, int]] = []
    before: int | None = None

    def flush(at: int) -> None:
        received = max(min(at + _latency(rng), latest), batch[-1][0])
        for moment, kind, distance, count in batch:
            delta_in, delta_out = int(kind == ENTRY), int(kind == EXIT)
            out.extend(
                pack(
                    15,
                    8,
                    sid,
                    8,
                    hid,
                    2,
                    b"v2",
                    8,
                    (moment - PG_EPOCH) * USEC,
                    8,
                    (received - PG_EPOCH) * USEC,
                    -1,
                    -1,
                    -1,
                    -1,
                    2,
                    kind,
                    4,
                    distance,
                    2,
                    count,
                    4,
                    delta_in,
                    4,
                    delta_out,
                    7,
                    b"applied",
                )
            )
            timeline.append((moment, delta_in, delta_out))
        state.last_activity = received
        batch.clear()

    for moment, kind in stream:
        count = counter
        counter = (counter + 1) & 0xFF
        if kind == STATUS:
            if random_() < sensor.status_loss:
                continue  # lost on the way: a gap in the counter
            distance = 0
        else:
            distance = near + int(random_() * spread)
        if batch and moment >= batch_start + sensor.flush_s:
            flush(batch_start + sensor.flush_s)
        if not batch:
            batch_start = moment
        batch.append((moment, kind, distance, count))
        if len(batch) >= sensor.event_threshold:
            flush(moment)
        if previous is not None:
            state.lost_events += (count - previous - 1) % 256
        if moment != second:
            second, marks, before = moment, [], previous
        marks.append((count, kind))
        previous = count
        state.rows += 1
        state.entries += kind == ENTRY
        state.exits += kind == EXIT
        state.last_counter, state.last_event_at = count, moment
    if batch:
        flush(batch_start + sensor.flush_s)
    if second is not None:
        tally = EventTally(
            last_timestamp=datetime.fromtimestamp(second, UTC),
            tail=tuple(sorted(marks)),
            before=before,
            entries=state.entries,
            exits=state.exits,
            lost=state.lost_events,
            events=state.rows,
        )
        state.tally = tally.to_dict()
    return state


def simulate_hive(plan: HivePlan, window: Window, reset_at: time = time(4)) -> HiveHistory:
    """The whole history of one hive: report rows, rollup, occupancy, sensor states.

    `reset_at` is the daily occupancy reset (hive-local), for the occupancy "day".
    """
    rng = random.Random(plan.seed)
    clock = zone_clock(plan.timezone, window)
    doors, visitors, turned_away = _visitors(plan, window, clock, rng)
    out = bytearray()
    timeline: list[tuple[int, int, int]] = []
    states = []
    v1_rows = v2_rows = 0
    for sensor, events in zip(plan.sensors, doors, strict=True):
        if sensor.firmware == "v1":
            state = _v1_reports(plan, sensor, events, window, clock, rng, out, timeline)
            v1_rows += state.rows
        else:
            state = _v2_events(plan, sensor, events, window, rng, out, timeline)
            v2_rows += state.rows
        states.append(state)
    if len(plan.sensors) > 1:
        timeline.sort(key=lambda row: row[0])  # stable: sensor order within a second
    hourly, occupancy, highest = rollup_of(timeline, window)
    five = rollup_of(timeline, window, 300)[0]
    boundaries = reset_boundaries(plan.timezone, reset_at, window)
    day = occupancy_day(timeline, boundaries)
    return HiveHistory(
        hive_id=plan.hive_id,
        copy_data=bytes(out),
        rows=v1_rows + v2_rows,
        v1_rows=v1_rows,
        v2_rows=v2_rows,
        visitors=visitors,
        turned_away=turned_away,
        sensors=states,
        hourly=hourly,
        five=five,
        occupancy=occupancy,
        total_in=sum(s.entries for s in states),
        total_out=sum(s.exits for s in states),
        last_report_at=timeline[-1][0] if timeline else None,
        max_occupancy=highest,
        day_start=day[0],
        day_in=day[1],
        day_out=day[2],
        clamps=day[3],
    )


def reset_boundaries(timezone: str, reset_at: time, window: Window) -> list[int]:
    """The daily reset instants of a zone that lie in the window, up to the anchor.

    A boundary is `reset_at` on the local clock (the first occurrence in a fold, the
    offset before the gap in a gap: zoneinfo's fold=0), as `mqtt_ingest.day` has it.
    """
    zone = ZoneInfo(timezone)
    first = datetime.fromtimestamp(window.start, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(window.end, zone).date()
    found = []
    day = first
    while day <= last:
        moment = int(datetime.combine(day, reset_at, tzinfo=zone).timestamp())
        if moment <= window.end:
            found.append(moment)
        day += timedelta(days=1)
    return found


def occupancy_day(
    timeline: Iterable[tuple[int, int, int]], boundaries: list[int]
) -> tuple[int | None, int, int, int]:
    """(day start, day in, day out, clamps) at the anchor, from a hive's timeline.

    The day is the one that began at the last boundary at or before the anchor; its sums
    count the rows at or after it.  `clamps` counts, over all days, the seconds after
    which that day's net fell below zero (ingest counts commits; one second of rows
    stands in for one commit).
    """
    start = boundaries[-1] if boundaries else None
    day_in = day_out = clamps = net = 0
    upcoming = iter(boundaries)
    next_boundary = next(upcoming, None)
    second = None
    for moment, delta_in, delta_out in timeline:
        if moment != second:
            if second is not None and net < 0:
                clamps += 1  # the previous second left the day below zero
            second = moment
            while next_boundary is not None and moment >= next_boundary:
                net = 0  # a new day
                next_boundary = next(upcoming, None)
        net += delta_in - delta_out
        if start is not None and moment >= start:
            day_in += delta_in
            day_out += delta_out
    if second is not None and net < 0:
        clamps += 1
    return start, day_in, day_out, clamps


def rollup_of(
    timeline: Iterable[tuple[int, int, int]], window: Window, step: int = 3600
) -> tuple[list[Hourly], int, int]:
    """Hourly rollup of one hive's rows, its final occupancy and its highest occupancy.

    `timeline` is (reported_at, delta_in, delta_out) in reported_at order.  The
    occupancy changes once per second, by the net of that second's rows, starting from
    0 at the window start.  Returns (hour start, entries, exits, peak, area, average)
    for every hour in which something was counted or someone was inside; `area` is the
    integral of the occupancy over the hour (occupant-seconds), `average` is area/3600,
    and `peak` the highest occupancy at the hour's start or after any of its seconds.
    `step`: the bucket length in seconds instead of an hour (300: the 5-minute level).
    """
    rows: list[Hourly] = []
    occupancy = highest = 0
    hour = -1
    entries = exits = peak = area = 0
    cursor = window.start
    start = window.start

    def close(index: int, upto: int) -> None:
        """Finish hour `index`, then the quiet hours up to (not including) `upto`."""
        end = start + (index + 1) * step
        total = area + occupancy * (end - cursor)
        if entries or exits or peak:
            rows.append((end - step, entries, exits, peak, total, total / step))
        if occupancy:
            for quiet in range(index + 1, upto):
                rows.append(
                    (start + quiet * step, 0, 0, occupancy, occupancy * step, float(occupancy))
                )

    second = None
    net = step_in = step_out = 0
    for moment, delta_in, delta_out in (*timeline, (None, 0, 0)):
        if moment == second:
            net += delta_in - delta_out
            step_in += delta_in
            step_out += delta_out
            continue
        if second is not None:  # apply the finished second
            index = (second - start) // step
            if index != hour:
                if hour >= 0:
                    close(hour, index)
                hour, entries, exits, area, peak = index, 0, 0, 0, occupancy
                cursor = start + index * step
            area += occupancy * (second - cursor)
            cursor = second
            occupancy += net
            entries += step_in
            exits += step_out
            if occupancy > peak:
                peak = occupancy
                if occupancy > highest:
                    highest = occupancy
        if moment is None:
            break
        second, net, step_in, step_out = moment, delta_in - delta_out, delta_in, delta_out
    if hour >= 0:
        close(hour, (window.end - window.start) // step)
    return rows, occupancy, highest
