"""Per-sensor counting: the rules of PROTOCOL.md, and exactness under any delivery order."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.mqtt_ingest.codec import CounterReport, Event, EventType, ReportType
from modules.mqtt_ingest.counting import (
    DEFAULT_PARAMS,
    CounterTally,
    CountingParams,
    Effect,
    EventTally,
    apply_event,
    apply_report,
    clamp_occupancy,
    event_window,
    recompute_event,
    recompute_report,
    replay_events,
    replay_reports,
    report_window,
    second_order,
)

T0 = datetime(2024, 3, 15, 8, 0, 0)  # hive-local sensor time
U0 = datetime(2024, 3, 15, 18, 30, 0, tzinfo=UTC)
COUNT, TIMEOUT, START = ReportType.COUNT, ReportType.TIMEOUT, ReportType.START
ENTRY, EXIT, STATUS = EventType.ENTRY, EventType.EXIT, EventType.STATUS


def v1(total_in: int, total_out: int, minute: int, kind: ReportType = COUNT) -> CounterReport:
    return CounterReport(total_in, total_out, T0 + timedelta(minutes=minute), kind)


def v2(kind: EventType, counter: int, second: int = 0) -> Event:
    return Event(kind, 1000, counter, U0 + timedelta(seconds=second))


def _stored(tally: CounterTally | EventTally) -> CounterTally | EventTally:
    """What ingest would read back from Postgres: the tally through JSON."""
    return type(tally).from_dict(json.loads(json.dumps(tally.to_dict())))


def feed_reports(
    stream: Iterable[CounterReport], params: CountingParams = DEFAULT_PARAMS
) -> tuple[CounterTally, Effect]:
    """The ingest loop: apply, recompute when late, store the distinct reports."""
    tally, stored, total = CounterTally(), list[CounterReport](), Effect()
    for report in stream:
        tally, effect = apply_report(tally, report, params)
        if effect.late:
            window = report_window(stored, report)
            tally, effect = recompute_report(tally, window, report, params)
        if not effect.duplicate:
            stored.append(report)
        tally, total = CounterTally.from_dict(_stored(tally).to_dict()), total + effect
    return tally, total


def feed_events(stream: Iterable[Event]) -> tuple[EventTally, Effect]:
    tally, stored, total = EventTally(), list[Event](), Effect()
    for event in stream:
        tally, effect = apply_event(tally, event)
        if effect.late:
            tally, effect = recompute_event(tally, event_window(stored, event), event)
        if not effect.duplicate:
            stored.append(event)
        tally, total = EventTally.from_dict(_stored(tally).to_dict()), total + effect
    return tally, total


def effects_of(reports: list[CounterReport], **params: int) -> list[Effect]:
    tally, effects = CounterTally(), []
    for report in reports:
        tally, effect = apply_report(tally, report, CountingParams(**params))
        effects.append(effect)
    return effects


def counts(effect: Effect) -> tuple[int, int, int]:
    return effect.delta_in, effect.delta_out, effect.anomalies


# --- v1 rules -------------------------------------------------------------------------


def test_first_report_is_only_a_baseline() -> None:
    (effect,) = effects_of([v1(120, 97, 0)])
    assert counts(effect) == (0, 0, 0)


def test_counts_the_difference_of_cumulative_totals() -> None:
    effects = effects_of([v1(100, 90, 0), v1(120, 97, 5)])
    assert counts(effects[1]) == (20, 7, 0)


def test_lower_total_is_a_wrap_at_65536_by_default() -> None:
    effects = effects_of([v1(65530, 10, 0), v1(4, 12, 5)])
    assert counts(effects[1]) == (10, 2, 0)


def test_wrap_at_65523_for_that_firmware() -> None:
    effects = effects_of([v1(65520, 10, 0), v1(5, 12, 5)], counter_wrap=65523)
    assert counts(effects[1]) == (8, 2, 0)


def test_delta_of_exactly_max_delta_is_applied() -> None:
    effects = effects_of([v1(10, 0, 0), v1(1010, 0, 5)])
    assert counts(effects[1]) == (1000, 0, 0)


def test_delta_above_max_delta_is_an_anomaly_and_a_new_baseline() -> None:
    effects = effects_of([v1(10, 5, 0), v1(1500, 6, 5), v1(1510, 8, 10)])
    assert counts(effects[1]) == (0, 0, 1)
    assert counts(effects[2]) == (10, 2, 0)


def test_max_delta_is_configurable() -> None:
    effects = effects_of([v1(10, 5, 0), v1(61, 6, 5)], max_delta=50)
    assert effects[1].anomalies == 1


def test_total_beyond_a_misconfigured_wrap_is_an_anomaly() -> None:
    effects = effects_of([v1(65530, 0, 0), v1(3, 0, 5)], counter_wrap=65523)
    assert counts(effects[1]) == (0, 0, 1)


@pytest.mark.parametrize("kind", [COUNT, TIMEOUT, START])
def test_restart_with_zero_totals_sets_a_new_baseline(kind: ReportType) -> None:
    effects = effects_of([v1(500, 400, 0), v1(0, 0, 5, kind), v1(7, 3, 10)])
    assert counts(effects[1]) == (0, 0, 0)
    assert counts(effects[2]) == (7, 3, 0)


def test_start_report_type_is_a_restart_whatever_its_totals() -> None:
    effects = effects_of([v1(500, 400, 0), v1(2, 1, 5, START), v1(7, 3, 10)])
    assert counts(effects[1]) == (0, 0, 0)
    assert counts(effects[2]) == (5, 2, 0)


def test_duplicate_of_the_last_report_is_dropped() -> None:
    effects = effects_of([v1(100, 90, 0), v1(120, 97, 5), v1(120, 97, 5)])
    assert effects[2].duplicate
    assert counts(effects[2]) == (0, 0, 0)


def test_same_sensor_time_is_ordered_by_totals() -> None:
    tally, total = feed_reports([v1(100, 90, 0), v1(110, 90, 5), v1(105, 90, 5)])
    assert total.delta_in == 10
    assert tally.last == v1(110, 90, 5)


def test_older_report_is_stored_but_not_counted_again() -> None:
    tally, _ = feed_reports([v1(100, 90, 0), v1(110, 95, 10)])
    tally, effect = apply_report(tally, v1(105, 92, 5))
    assert effect.late and not effect.duplicate
    window = [v1(100, 90, 0), v1(110, 95, 10)]
    tally, effect = recompute_report(tally, window, v1(105, 92, 5))
    assert counts(effect) == (0, 0, 0)
    assert (tally.entries, tally.exits, tally.reports) == (10, 5, 3)


def test_late_redelivery_of_a_stored_report_is_a_duplicate() -> None:
    history = [v1(100, 90, 0), v1(105, 92, 5), v1(110, 95, 10)]
    tally, _ = feed_reports(history)
    tally_after, effect = recompute_report(tally, history, v1(105, 92, 5))
    assert effect.duplicate and effect.late
    assert tally_after == tally


def test_late_restart_turns_an_anomaly_back_into_counts() -> None:
    tally, total = feed_reports([v1(500, 400, 0), v1(5, 3, 10)])
    assert counts(total) == (0, 0, 1)
    tally, total = feed_reports([v1(500, 400, 0), v1(5, 3, 10), v1(0, 0, 5)])
    assert counts(total) == (5, 3, 0)
    assert tally == replay_reports([v1(500, 400, 0), v1(0, 0, 5), v1(5, 3, 10)])


def test_recompute_refuses_a_report_that_is_not_late() -> None:
    tally, _ = feed_reports([v1(100, 90, 0)])
    with pytest.raises(ValueError, match="not a late report"):
        recompute_report(tally, [], v1(110, 90, 5))


def test_report_window_brackets_the_late_time() -> None:
    history = [v1(1, 0, 0), v1(2, 0, 10), v1(3, 0, 10), v1(4, 0, 20), v1(5, 0, 30)]
    assert report_window(history, v1(9, 0, 15)) == history[1:4]
    assert report_window(history, v1(9, 0, 10)) == history[0:4]
    assert report_window(history, v1(9, 0, -5)) == history[0:1]


def test_counter_tally_survives_json() -> None:
    tally, _ = feed_reports([v1(100, 90, 0), v1(1200, 97, 5), v1(1210, 99, 6)])
    assert _stored(tally) == tally
    assert _stored(CounterTally()) == CounterTally()


# --- v2 rules -------------------------------------------------------------------------


def test_entry_exit_and_status_effects() -> None:
    _, total = feed_events([v2(ENTRY, 1), v2(ENTRY, 2), v2(EXIT, 3), v2(STATUS, 4)])
    assert (total.delta_in, total.delta_out, total.occupancy) == (2, 1, 1)


def test_counter_gap_counts_lost_events() -> None:
    tally, total = feed_events([v2(ENTRY, 7, 0), v2(EXIT, 10, 5)])
    assert total.lost == tally.lost == 2
    assert total.occupancy == 0  # lost events are never guessed into occupancy


def test_counter_wraps_at_256() -> None:
    _, total = feed_events([v2(ENTRY, 254, 0), v2(ENTRY, 255, 1), v2(ENTRY, 0, 2)])
    assert total.lost == 0


def test_counter_wrap_within_one_second_is_in_order() -> None:
    assert second_order([(0, 1), (255, 1), (1, 0), (254, 1)]) == [
        (254, 1),
        (255, 1),
        (0, 1),
        (1, 0),
    ]
    tally, _ = feed_events([v2(ENTRY, 253, 0), v2(ENTRY, 0, 1)])
    assert tally.lost == 2  # 254 and 255
    tally, effect = apply_event(tally, v2(ENTRY, 255, 1))  # same second, arrives after 0
    assert not effect.late
    assert (effect.lost, tally.lost) == (-1, 1)


def test_duplicate_event_is_dropped() -> None:
    tally, total = feed_events([v2(ENTRY, 7, 0), v2(EXIT, 8, 0), v2(ENTRY, 7, 0)])
    assert (total.delta_in, total.delta_out, tally.events) == (1, 1, 2)


def test_late_event_counts_once_and_fills_its_gap() -> None:
    tally, total = feed_events([v2(ENTRY, 7, 0), v2(ENTRY, 9, 20)])
    assert total.lost == 1
    tally, effect = apply_event(tally, v2(EXIT, 8, 10))
    assert effect.late
    window = [v2(ENTRY, 7, 0), v2(ENTRY, 9, 20)]
    tally, effect = recompute_event(tally, window, v2(EXIT, 8, 10))
    assert (effect.delta_out, effect.lost, tally.lost, tally.before) == (1, -1, 0, 8)


def test_event_tally_survives_json() -> None:
    tally, _ = feed_events([v2(ENTRY, 7, 0), v2(EXIT, 9, 20), v2(STATUS, 10, 20)])
    assert _stored(tally) == tally
    assert tally.statuses == 1


# --- hive clamp -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "delta", "expected"),
    [(3, -2, (1, False)), (3, 2, (5, False)), (1, -1, (0, False)), (1, -3, (0, True))],
)
def test_occupancy_never_goes_below_zero(current: int, delta: int, expected: tuple) -> None:
    assert clamp_occupancy(current, delta) == expected


# --- properties: any delivery counts like exactly-once, in-order delivery -------------


@st.composite
def v1_histories(
    draw: st.DrawFn, wraps: tuple[int, ...] = (65536, 65523, 300), restarts: bool = True
) -> tuple[list[CounterReport], CountingParams, int, int]:
    """Reports of one sensor from a ground truth of entries and exits, with the truth."""
    params = CountingParams(draw(st.sampled_from(wraps)), draw(st.sampled_from([1000, 40])))
    wrap, top = params.counter_wrap, min(params.max_delta, params.counter_wrap - 1)
    totals = (draw(st.integers(0, wrap - 1)), draw(st.integers(0, wrap - 1)))
    reports = [CounterReport(*totals, T0, draw(st.sampled_from(ReportType)))]
    entries = exits = 0
    for _ in range(draw(st.integers(0, 25))):
        if restarts and draw(st.integers(0, 6)) == 0:
            step, totals, kind = (0, 0), (0, 0), draw(st.sampled_from(ReportType))
        else:
            step = (draw(st.integers(0, top)), draw(st.integers(0, top)))
            totals = ((totals[0] + step[0]) % wrap, (totals[1] + step[1]) % wrap)
            kind = draw(st.sampled_from([COUNT, TIMEOUT]))
            if totals == (0, 0) and step != (0, 0):
                continue  # indistinguishable from a restart: the protocol cannot tell
        reports.append(_after(reports[-1], totals, kind, draw(st.integers(0, 3600))))
        entries, exits = entries + step[0], exits + step[1]
    return reports, params, entries, exits


def _after(
    previous: CounterReport, totals: tuple[int, int], kind: ReportType, seconds: int
) -> CounterReport:
    """The next report, seconds later (a second later if needed to stay in order)."""
    report = CounterReport(*totals, previous.sensor_time + timedelta(seconds=seconds), kind)
    same_second_ok = (report.total_in, report.total_out, kind) > (
        previous.total_in,
        previous.total_out,
        previous.report_type,
    )
    if seconds or same_second_ok:
        return report
    return _after(previous, totals, kind, 1)


def _redelivered(draw: st.DrawFn, items: list) -> list:
    duplicates = draw(st.lists(st.sampled_from(items), max_size=len(items))) if items else []
    return draw(st.permutations(items + duplicates))


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_v1_duplicated_shuffled_delivery_counts_exactly_once(data: st.DataObject) -> None:
    reports, params, entries, exits = data.draw(v1_histories())
    in_order = replay_reports(reports, params)
    assert (in_order.entries, in_order.exits, in_order.anomalies) == (entries, exits, 0)
    assert feed_reports(reports, params)[0] == in_order
    tally, total = feed_reports(_redelivered(data.draw, reports), params)
    assert tally == in_order
    assert (total.delta_in, total.delta_out, total.anomalies) == (entries, exits, 0)


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_v1_lost_reports_lose_no_events(data: st.DataObject) -> None:
    reports, params, entries, exits = data.draw(v1_histories((65536, 65523), restarts=False))
    middle = range(1, len(reports) - 1)  # the first is the baseline, the last has news
    lost = data.draw(st.sets(st.sampled_from(middle))) if middle else set()
    delivered = [r for i, r in enumerate(reports) if i not in lost]
    # a gap adds up the deltas of the lost reports: allow that much (still below the wrap)
    covering = CountingParams(params.counter_wrap, params.max_delta * len(reports))
    tally, _ = feed_reports(_redelivered(data.draw, delivered), covering)
    assert (tally.entries, tally.exits, tally.anomalies) == (entries, exits, 0)


arbitrary_reports = st.builds(
    CounterReport,
    st.integers(0, 70),
    st.integers(0, 70),
    st.integers(0, 4).map(lambda minute: T0 + timedelta(minutes=minute)),
    st.sampled_from(ReportType),
)


@given(data=st.data(), reports=st.lists(arbitrary_reports, max_size=30))
@settings(max_examples=100, deadline=None)
def test_v1_any_report_set_in_any_order_matches_replay(
    data: st.DataObject, reports: list[CounterReport]
) -> None:
    params = CountingParams(counter_wrap=64, max_delta=20)  # wraps, anomalies, collisions
    tally, total = feed_reports(_redelivered(data.draw, reports), params)
    expected = replay_reports(reports, params)
    assert tally == expected
    assert counts(total) == counts(expected.effect)


@st.composite
def v2_histories(draw: st.DrawFn) -> tuple[list[Event], int]:
    """Events of one sensor, some dropped on the way, and how many were dropped."""
    start, count = draw(st.integers(0, 255)), draw(st.integers(1, 60))
    moment, truth = U0, []
    for index in range(count):
        moment += timedelta(seconds=draw(st.sampled_from([0, 0, 1, 7, 3600])))
        kind = draw(st.sampled_from(EventType))
        truth.append(Event(kind, draw(st.integers(0, 4000)), (start + index) % 256, moment))
    dropped = draw(st.sets(st.integers(0, count - 1)))
    kept = [i for i in range(count) if i not in dropped]
    lost = kept[-1] - kept[0] + 1 - len(kept) if kept else 0
    return [truth[i] for i in kept], lost


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_v2_duplicated_shuffled_delivery_counts_exactly_once(data: st.DataObject) -> None:
    events, lost = data.draw(v2_histories())
    in_order = replay_events(events)
    assert in_order.lost == lost
    assert in_order.entries == sum(e.event_type is ENTRY for e in events)
    assert in_order.exits == sum(e.event_type is EXIT for e in events)
    assert feed_events(events)[0] == in_order
    tally, total = feed_events(_redelivered(data.draw, events))
    assert tally == in_order
    assert (total.delta_in, total.delta_out, total.lost) == (
        in_order.entries,
        in_order.exits,
        lost,
    )


arbitrary_events = st.builds(
    Event,
    st.sampled_from(EventType),
    st.just(1000),
    st.sampled_from([250, 252, 254, 255, 0, 1, 3, 128]),
    st.integers(0, 3).map(lambda second: U0 + timedelta(seconds=second)),
)


@given(data=st.data(), events=st.lists(arbitrary_events, max_size=30))
@settings(max_examples=100, deadline=None)
def test_v2_any_event_set_in_any_order_matches_replay(
    data: st.DataObject, events: list[Event]
) -> None:
    tally, total = feed_events(_redelivered(data.draw, events))
    expected = replay_events(events)
    assert tally == expected
    assert (total.delta_in, total.delta_out, total.lost) == (
        expected.entries,
        expected.exits,
        expected.lost,
    )
