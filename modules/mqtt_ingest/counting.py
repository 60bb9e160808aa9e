"""Per-sensor counting: entries, exits and anomalies from sensor reports, exactly once.

Theory of operation
-------------------
What a sensor contributed is a pure function of the SET of its distinct reports, never
of their arrival order.  Put a sensor's distinct reports in sensor order; each one
contributes according to the one just before it:

* v1 (`CounterReport`), ordered by `report_key` = (sensor time, total_in, total_out,
  report type), which is also the natural key.  `step(previous, report)` is:
  - nothing for the first report (it is the baseline) and for a restart (both totals
    0, or type 0x21: a new baseline);
  - else, per total, `new - old`, or when the total went down (a wrap)
    `new + (wrap - old)`;
  - if either delta is above `max_delta` (or negative: a total at or above a
    misconfigured wrap) nothing is applied and one anomaly is counted.  The report
    still becomes the baseline for the next one.
* v2 (`Event`), natural key `event_key` = (timestamp, counter, event type): entry +1,
  exit -1, status 0, whatever the order.  Lost events are the gaps in `counter` (mod
  256) along the events ordered by timestamp and, within one second, by counter starting
  after the widest circular gap (so 254, 255, 0, 1 in one second are in order).  Lost
  events are statistics only, never guessed into occupancy.

`replay_reports` / `replay_events` compute this directly: they are the definition.
Since a contribution depends only on a report and its predecessor, adding a report
changes only the pairs around it, which gives an exact incremental path:

    apply_report(tally, r) / apply_event(tally, e) -> (tally, Effect)
        after everything applied so far (the common case): O(1), the effect is its
        contribution;  a repeat of the last report (v1) or of an event of the last
        second (v2): `duplicate`, nothing changes;  earlier than that: `late`, nothing
        applied: the caller must call recompute.
    recompute_report(tally, window, r) / recompute_event(tally, window, e)
        -> (tally, Effect) with effect = replay(window + r) - replay(window), a
        correction that may be negative (a late restart can turn an anomaly back into
        counts).  `window` is the sensor's stored items whose time lies between the last
        stored time before the late item's and the first stored time after it, both
        inclusive (`report_window`, `event_window`; the whole history also works), read
        BEFORE the late item is stored.  A late item already in the window is a
        duplicate.  In the usual case (a redelivered old v1 report) the correction is 0:
        the later cumulative totals already counted its events.

Ingest contract, per message, in one transaction, then ack:
    1. lock the sensor's tally row (SELECT ... FOR UPDATE): with several ingest
       processes two messages of one sensor may be handled at once;
    2. `tally, effect = apply_*(tally, item, ...)`;
    3. if `effect.late`: read the window, `tally, effect = recompute_*(...)`;
    4. unless `effect.duplicate`: store the item (unique on its natural key), add
       `effect.occupancy` to the hive with `clamp_occupancy`, record
       `effect.anomalies` and `effect.lost` in the stats;
    5. save `tally.to_dict()`.
Invariant: a sensor's tally equals `replay_*(its stored items)`, so a reconciliation
can recompute it from the table and compare.

Persisted per sensor: `CounterTally` (the greatest report applied: sensor time, totals,
type; entries, exits, anomalies, reports) and `EventTally` (the latest second seen,
the (counter, type) of its events, the counter just before that second; entries,
exits, lost, events).  Both are small and serialise with `to_dict` / `from_dict`.

The hive clamp (`clamp_occupancy`, occupancy never below zero) is the one step that
does not commute: sums of effects are order-independent, a floor at zero is not.  The
hive occupancy equals the exactly-once, in-order result whenever no clamp happens; a
clamp is reported so the caller records it as an anomaly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from .codec import CounterReport, Event, EventType, ReportType

__all__ = [
    "CounterTally",
    "CountingParams",
    "DEFAULT_PARAMS",
    "Effect",
    "EventTally",
    "apply_event",
    "apply_report",
    "clamp_occupancy",
    "event_key",
    "event_sequence",
    "event_window",
    "lost_between",
    "recompute_event",
    "recompute_report",
    "replay_events",
    "replay_reports",
    "report_key",
    "report_window",
    "second_order",
    "step",
    "total_delta",
]

EVENT_COUNTER_MODULUS = 256
T = TypeVar("T")
ReportKey = tuple[datetime, int, int, int]
EventKey = tuple[datetime, int, int]
Mark = tuple[int, int]  # (counter, event type): an event within its second


@dataclass(frozen=True, slots=True)
class CountingParams:
    """`mqtt.counter_wrap` and `mqtt.max_delta`."""

    counter_wrap: int = 65536  # some firmware wraps at 65523
    max_delta: int = 1000

    def __post_init__(self) -> None:
        if self.counter_wrap < 2 or self.max_delta < 0:
            raise ValueError(f"bad counting parameters: {self}")


DEFAULT_PARAMS = CountingParams()


@dataclass(frozen=True, slots=True)
class Effect:
    """What one report or event changes: counts, and how it was classified."""

    delta_in: int = 0  # entries added (negative: a correction)
    delta_out: int = 0  # exits added
    anomalies: int = 0  # implausible deltas (v1); negative when a correction removes one
    lost: int = 0  # events revealed lost by a counter gap (v2)
    duplicate: bool = False  # already applied: nothing changes
    late: bool = False  # arrived after later items (from apply: recompute needed)

    @property
    def occupancy(self) -> int:
        """The change of the hive's occupancy."""
        return self.delta_in - self.delta_out

    def __add__(self, other: Effect) -> Effect:
        return Effect(
            self.delta_in + other.delta_in,
            self.delta_out + other.delta_out,
            self.anomalies + other.anomalies,
            self.lost + other.lost,
        )

    def __sub__(self, other: Effect) -> Effect:
        negated = Effect(-other.delta_in, -other.delta_out, -other.anomalies, -other.lost)
        return self + negated


NOTHING = Effect()
DUPLICATE = Effect(duplicate=True)
LATE = Effect(late=True)
LATE_DUPLICATE = Effect(duplicate=True, late=True)


def report_window(history: Iterable[CounterReport], late: CounterReport) -> list[CounterReport]:
    """The stored v1 reports `recompute_report` needs for `late` (see the module doc)."""
    return _window(history, late.sensor_time, lambda report: report.sensor_time)


def event_window(history: Iterable[Event], late: Event) -> list[Event]:
    """The stored events `recompute_event` needs for `late` (see the module doc)."""
    return _window(history, late.timestamp, lambda event: event.timestamp)


def _window(history: Iterable[T], when: datetime, time_of: Callable[[T], datetime]) -> list[T]:
    items = list(history)
    low = max((time_of(i) for i in items if time_of(i) < when), default=when)
    high = min((time_of(i) for i in items if time_of(i) > when), default=when)
    return [i for i in items if low <= time_of(i) <= high]


def clamp_occupancy(current: int, delta: int) -> tuple[int, bool]:
    """The hive occupancy after `delta`, floored at zero, and whether the floor was hit."""
    new = current + delta
    return (new, False) if new >= 0 else (0, True)


# --- v1: cumulative totals ------------------------------------------------------------


def report_key(report: CounterReport) -> ReportKey:
    """Sensor order of v1 reports, and their natural key (with the sensor)."""
    return (report.sensor_time, report.total_in, report.total_out, int(report.report_type))


def total_delta(old: int, new: int, wrap: int) -> int:
    """Events counted between two values of one total; a lower total is a wrap."""
    return new - old if new >= old else new + (wrap - old)


def step(previous: CounterReport | None, report: CounterReport, params: CountingParams) -> Effect:
    """What `report` contributes when `previous` comes just before it in sensor order."""
    if previous is None or report.is_restart:
        return NOTHING
    wrap = params.counter_wrap
    delta_in = total_delta(previous.total_in, report.total_in, wrap)
    delta_out = total_delta(previous.total_out, report.total_out, wrap)
    if 0 <= delta_in <= params.max_delta and 0 <= delta_out <= params.max_delta:
        return Effect(delta_in, delta_out)
    return Effect(anomalies=1)


@dataclass(frozen=True, slots=True)
class CounterTally:
    """A sensor's v1 counting state: what ingest persists and what replay computes."""

    last: CounterReport | None = None  # the greatest report applied, by report_key
    entries: int = 0
    exits: int = 0
    anomalies: int = 0
    reports: int = 0  # distinct reports applied

    @property
    def effect(self) -> Effect:
        return Effect(self.entries, self.exits, self.anomalies)

    def plus(self, effect: Effect, last: CounterReport | None = None) -> CounterTally:
        """This tally after one more distinct report with that effect."""
        return CounterTally(
            last or self.last,
            self.entries + effect.delta_in,
            self.exits + effect.delta_out,
            self.anomalies + effect.anomalies,
            self.reports + 1,
        )

    def to_dict(self) -> dict[str, Any]:
        counts = (self.entries, self.exits, self.anomalies, self.reports)
        last = None if self.last is None else _report_dict(self.last)
        return {"last": last, **dict(zip(_COUNTER_COUNTS, counts, strict=True))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CounterTally:
        last = None if data["last"] is None else _report_from_dict(data["last"])
        return cls(last, *(data[name] for name in _COUNTER_COUNTS))


_COUNTER_COUNTS = ("entries", "exits", "anomalies", "reports")


def _report_dict(report: CounterReport) -> dict[str, Any]:
    return {
        "sensor_time": report.sensor_time.isoformat(),
        "total_in": report.total_in,
        "total_out": report.total_out,
        "report_type": int(report.report_type),
    }


def _report_from_dict(data: Mapping[str, Any]) -> CounterReport:
    return CounterReport(
        total_in=data["total_in"],
        total_out=data["total_out"],
        sensor_time=datetime.fromisoformat(data["sensor_time"]),
        report_type=ReportType(data["report_type"]),
    )


def replay_reports(
    reports: Iterable[CounterReport], params: CountingParams = DEFAULT_PARAMS
) -> CounterTally:
    """The tally of a set of v1 reports (duplicates ignored), in sensor order."""
    distinct = {report_key(report): report for report in reports}
    tally = CounterTally()
    for key in sorted(distinct):
        tally = tally.plus(step(tally.last, distinct[key], params), distinct[key])
    return tally


def apply_report(
    tally: CounterTally, report: CounterReport, params: CountingParams = DEFAULT_PARAMS
) -> tuple[CounterTally, Effect]:
    """Apply one arriving v1 report; `late` in the effect means: call recompute_report."""
    if tally.last is None or report_key(report) > report_key(tally.last):
        effect = step(tally.last, report, params)
        return tally.plus(effect, report), effect
    return tally, DUPLICATE if report_key(report) == report_key(tally.last) else LATE


def recompute_report(
    tally: CounterTally,
    window: Iterable[CounterReport],
    late: CounterReport,
    params: CountingParams = DEFAULT_PARAMS,
) -> tuple[CounterTally, Effect]:
    """Apply a late v1 report: the correction replay(window + late) - replay(window)."""
    if tally.last is None or report_key(late) >= report_key(tally.last):
        raise ValueError("not a late report: use apply_report")
    stored = {report_key(report): report for report in window}
    if report_key(late) in stored:
        return tally, LATE_DUPLICATE
    before = replay_reports(stored.values(), params)
    after = replay_reports([*stored.values(), late], params)
    effect = replace(after.effect - before.effect, late=True)
    return tally.plus(effect), effect


# --- v2: events -----------------------------------------------------------------------

_COUNTS = {  # occupancy effect of each event type
    EventType.ENTRY: Effect(delta_in=1),
    EventType.EXIT: Effect(delta_out=1),
    EventType.STATUS: NOTHING,
}


def event_key(event: Event) -> EventKey:
    """The natural key of an event (with the sensor)."""
    return (event.timestamp, event.counter, int(event.event_type))


def _mark(event: Event) -> Mark:
    return (event.counter, int(event.event_type))


def lost_between(previous: int, counter: int) -> int:
    """Events lost between two consecutive counters (mod 256); a repeat is no gap."""
    return (counter - previous - 1) % EVENT_COUNTER_MODULUS if counter != previous else 0


def second_order(marks: Iterable[Mark]) -> list[Mark]:
    """Events of one second in sensor order: by counter, after the widest circular gap."""
    ordered = sorted(marks)
    pairs = zip(ordered, ordered[1:] + ordered[:1], strict=True)
    gaps = [(b[0] - a[0]) % EVENT_COUNTER_MODULUS for a, b in pairs]
    if not gaps or gaps[-1] == max(gaps):  # the wrap-around gap is the widest: as sorted
        return ordered
    start = gaps.index(max(gaps)) + 1
    return ordered[start:] + ordered[:start]


def _lost(previous: int | None, counters: Iterable[int]) -> int:
    total = 0
    for counter in counters:
        total += 0 if previous is None else lost_between(previous, counter)
        previous = counter
    return total


def _counters(marks: Iterable[Mark]) -> list[int]:
    return [counter for counter, _ in second_order(marks)]


@dataclass(frozen=True, slots=True)
class EventTally:
    """A sensor's v2 counting state: what ingest persists and what replay computes."""

    last_timestamp: datetime | None = None  # the latest second with events
    tail: tuple[Mark, ...] = ()  # the events of that second, sorted
    before: int | None = None  # the counter of the last event before that second
    entries: int = 0
    exits: int = 0
    lost: int = 0
    events: int = 0  # distinct events applied

    @property
    def statuses(self) -> int:
        return self.events - self.entries - self.exits

    @property
    def effect(self) -> Effect:
        return Effect(self.entries, self.exits, lost=self.lost)

    def plus(self, effect: Effect) -> EventTally:
        """This tally after one more distinct event with that effect."""
        return replace(
            self,
            entries=self.entries + effect.delta_in,
            exits=self.exits + effect.delta_out,
            lost=self.lost + effect.lost,
            events=self.events + 1,
        )

    def to_dict(self) -> dict[str, Any]:
        stamp = None if self.last_timestamp is None else self.last_timestamp.isoformat()
        counts = (self.entries, self.exits, self.lost, self.events)
        return {
            "last_timestamp": stamp,
            "tail": [list(mark) for mark in self.tail],
            "before": self.before,
            **dict(zip(_EVENT_COUNTS, counts, strict=True)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventTally:
        raw = data["last_timestamp"]
        stamp = None if raw is None else datetime.fromisoformat(raw)
        tail = tuple((counter, kind) for counter, kind in data["tail"])
        return cls(stamp, tail, data["before"], *(data[name] for name in _EVENT_COUNTS))


_EVENT_COUNTS = ("entries", "exits", "lost", "events")


def event_sequence(events: Iterable[Event]) -> list[Event]:
    """Distinct events in sensor order: by second, then `second_order` within it."""
    seconds: defaultdict[datetime, dict[Mark, Event]] = defaultdict(dict)
    for event in events:
        seconds[event.timestamp][_mark(event)] = event
    return [seconds[t][m] for t in sorted(seconds) for m in second_order(seconds[t])]


def replay_events(events: Iterable[Event]) -> EventTally:
    """The tally of a set of events (duplicates ignored)."""
    sequence = event_sequence(events)
    last = sequence[-1].timestamp if sequence else None
    earlier = [event for event in sequence if event.timestamp != last]
    entries = sum(event.event_type is EventType.ENTRY for event in sequence)
    exits = sum(event.event_type is EventType.EXIT for event in sequence)
    return EventTally(
        last_timestamp=last,
        tail=tuple(sorted(_mark(event) for event in sequence if event.timestamp == last)),
        before=earlier[-1].counter if earlier else None,
        entries=entries,
        exits=exits,
        lost=_lost(None, (event.counter for event in sequence)),
        events=len(sequence),
    )


def apply_event(tally: EventTally, event: Event) -> tuple[EventTally, Effect]:
    """Apply one arriving event; `late` in the effect means: call recompute_event."""
    if tally.last_timestamp is None or event.timestamp > tally.last_timestamp:
        return _open_second(tally, event)
    if event.timestamp < tally.last_timestamp:
        return tally, LATE
    if _mark(event) in tally.tail:
        return tally, DUPLICATE
    return _grow_tail(tally, event)


def _open_second(tally: EventTally, event: Event) -> tuple[EventTally, Effect]:
    """The first event of a second after every second seen so far."""
    previous = _counters(tally.tail)[-1] if tally.tail else tally.before
    effect = replace(_COUNTS[event.event_type], lost=_lost(previous, [event.counter]))
    new_tail = {"last_timestamp": event.timestamp, "tail": (_mark(event),), "before": previous}
    return replace(tally.plus(effect), **new_tail), effect


def _grow_tail(tally: EventTally, event: Event) -> tuple[EventTally, Effect]:
    """Another event of the latest second: its order there depends on the whole second."""
    tail = tuple(sorted((*tally.tail, _mark(event))))
    lost = _lost(tally.before, _counters(tail)) - _lost(tally.before, _counters(tally.tail))
    effect = replace(_COUNTS[event.event_type], lost=lost)
    return replace(tally.plus(effect), tail=tail), effect


def recompute_event(
    tally: EventTally, window: Iterable[Event], late: Event
) -> tuple[EventTally, Effect]:
    """Apply a late event: the correction replay(window + late) - replay(window)."""
    if tally.last_timestamp is None or late.timestamp >= tally.last_timestamp:
        raise ValueError("not a late event: use apply_event")
    stored = {event_key(event): event for event in window}
    if event_key(late) in stored:
        return tally, LATE_DUPLICATE
    before = replay_events(stored.values())
    after = replay_events([*stored.values(), late])
    effect = replace(after.effect - before.effect, late=True)
    # the late event may now be the last one before the latest second
    reaches_tail = after.last_timestamp == tally.last_timestamp
    new_before = after.before if reaches_tail else tally.before
    return replace(tally.plus(effect), before=new_before), effect
