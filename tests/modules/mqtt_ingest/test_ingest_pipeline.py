"""The ingest pipeline against a real Postgres (no broker): exactly-once counting under
any delivery, late reports, rejects, poison messages, statuses, the daily reset."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modules.database import Database
from modules.mqtt_ingest.codec import (
    CounterReport,
    Event,
    EventReport,
    EventType,
    ReportType,
    StatusMessage,
    decode,
    encode_counter_report,
    encode_event_report,
    encode_status,
    parse_topic,
    sensor_topic,
)
from modules.mqtt_ingest.counting import (
    DEFAULT_PARAMS,
    CountingParams,
    event_key,
    report_key,
    step,
)
from modules.mqtt_ingest.day import day_start, local_to_utc, zone
from modules.mqtt_ingest.fleet import create_fleet
from modules.mqtt_ingest.metrics import Metrics
from modules.mqtt_ingest.pipeline import Pipeline
from modules.mqtt_ingest.store import (
    Incoming,
    StoreSettings,
    classify,
    store_batch,
    sweep_resets,
)
from modules.mqtt_ingest.testing import consistency_problems, create_database, drop_database

pytestmark = pytest.mark.services

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)  # Berlin resets at 03:00Z, New York 08:00Z
SETTINGS = StoreSettings(CountingParams(), clock(4, 0), "UTC")
TABLES = ("sensor_report", "sensor_ingest_state", "hive_occupancy", "hive_occupancy_hourly",
          "ingest_reject", "sensor_status", "hive_occupancy_5m", "hive_occupancy_daily")


@pytest.fixture(scope="module")
def db():
    """A migrated database with 2 hives (Berlin, New York) x 2 v1 + 2 v2 sensors."""
    dsn = asyncio.run(create_database())

    async def fleet():
        conn = await asyncpg.connect(dsn)
        try:
            sensors = await create_fleet(conn, 2, 4, prefix="p",
                                         timezones=("Europe/Berlin", "America/New_York"))
            for s in sensors:  # doors 0, 1 speak v1; 2, 3 speak v2
                firmware = "v1" if s.external_id.endswith(("-0", "-1")) else "v2"
                await conn.execute("UPDATE sensor SET firmware = $1 WHERE id = $2",
                                   firmware, s.id)
            return await conn.fetch("SELECT s.external_id, s.firmware, h.timezone, h.id FROM "
                                    "sensor s JOIN hive h ON h.id = s.hive_id ORDER BY s.id")
        finally:
            await conn.close()

    rows = asyncio.run(fleet())
    try:
        yield dsn, [(r["external_id"], r["firmware"], r["timezone"], r["id"]) for r in rows]
    finally:
        asyncio.run(drop_database(dsn))


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute(f"TRUNCATE {', '.join(TABLES)}")


def incoming(topic: str, payload: bytes) -> Incoming:
    return classify(Incoming(topic, payload, time.time()))


async def deliver(conn: asyncpg.Connection, batches: list[list[tuple[str, bytes]]],
                  now: datetime = NOW, params: StoreSettings = SETTINGS) -> None:
    for batch in batches:
        async with conn.transaction():
            await store_batch(conn, [incoming(t, p) for t, p in batch], params, now)


async def snapshot(conn: asyncpg.Connection) -> dict:
    hives = await conn.fetch("SELECT hive_id, occupancy, total_in, total_out, day_in, day_out "
                             "FROM hive_occupancy ORDER BY hive_id")
    rows = await conn.fetch(
        "SELECT sensor_id, reported_at, total_in, total_out, report_type, counter, event_type, "
        "delta_in, delta_out FROM sensor_report ORDER BY 1, 2, 3, 4, 5, 6, 7")
    tallies = await conn.fetch("SELECT sensor_id, v1_tally::text, v2_tally::text, anomalies, "
                               "lost_events FROM sensor_ingest_state ORDER BY 1")
    hourly = await conn.fetch("SELECT hive_id, hour, entries, exits FROM hive_occupancy_hourly "
                              "WHERE entries > 0 OR exits > 0 ORDER BY 1, 2")
    # the 5-minute and local-day levels (modules.analytics) sum to the same totals
    levels = await conn.fetch("SELECT hive_id, sum(entries), sum(exits) "
                              "FROM hive_occupancy_hourly GROUP BY 1 ORDER BY 1")
    for table in ("hive_occupancy_5m", "hive_occupancy_daily"):
        other = await conn.fetch(f"SELECT hive_id, sum(entries), sum(exits) FROM {table} "
                                 "GROUP BY 1 ORDER BY 1")
        assert [tuple(r) for r in other] == [tuple(r) for r in levels], table
    five = await conn.fetch("SELECT hive_id, bucket, entries, exits FROM hive_occupancy_5m "
                            "WHERE entries > 0 OR exits > 0 ORDER BY 1, 2")
    return {"hives": [tuple(r) for r in hives], "rows": [tuple(r) for r in rows],
            "tallies": [(r[0], json.loads(r[1] or "null"), json.loads(r[2] or "null"), r[3],
                         r[4]) for r in tallies],
            "hourly": [tuple(r) for r in hourly], "five": [tuple(r) for r in five]}


# --- the property ----------------------------------------------------------------------

@dataclass
class Sent:
    at: datetime  # when the sensor sent it (the true order)
    topic: str
    payload: bytes


def v1_messages(external_id: str, tz: str, start: datetime, draw) -> list[Sent]:
    wrap = 65536
    total_in = draw(st.sampled_from([0, 65500, 65530, 30000]))
    total_out = draw(st.sampled_from([0, 65520, total_in]))
    t = start
    out = []

    def send(kind: ReportType, zero: bool = False) -> None:
        report = CounterReport(0 if zero else total_in, 0 if zero else total_out,
                               t.astimezone(zone(tz)).replace(tzinfo=None), kind)
        out.append(Sent(t, sensor_topic(external_id, "counters"), encode_counter_report(report)))

    send(ReportType.TIMEOUT)
    steps = draw(st.lists(st.one_of(
        st.tuples(st.just("count"), st.integers(0, 9), st.integers(0, 9)),
        st.tuples(st.just("restart"), st.sampled_from([ReportType.START, ReportType.TIMEOUT]),
                  st.just(0)),
        st.tuples(st.just("jump"), st.integers(1001, 5000), st.integers(0, 3)),
    ), max_size=10))
    for kind, a, b in steps:
        t = t + timedelta(seconds=draw(st.sampled_from([0, 1, 7, 60, 1800, 7200])))
        if kind == "restart":
            total_in = total_out = 0
            send(a, zero=True)
            continue
        total_in, total_out = (total_in + a) % wrap, (total_out + b) % wrap
        send(draw(st.sampled_from([ReportType.COUNT, ReportType.TIMEOUT])))
    return out


def v2_messages(external_id: str, start: datetime, draw) -> list[Sent]:
    counter = draw(st.integers(0, 255))
    t = start
    out, batch = [], []
    steps = draw(st.lists(st.tuples(
        st.sampled_from([EventType.ENTRY, EventType.ENTRY, EventType.EXIT, EventType.STATUS]),
        st.sampled_from([0, 0, 1, 5, 600, 5000]),
        st.sampled_from(["next", "next", "next", "gap", "restart"]),
        st.booleans()), max_size=16))
    for kind, dt, jump, flush in steps:
        t = t + timedelta(seconds=dt)
        counter = {"next": counter, "gap": (counter + 3) % 256, "restart": 0}[jump]
        batch.append(Event(kind, 1000, counter, t))
        counter = (counter + 1) % 256
        if flush or len(batch) == 4:
            out.append(Sent(t, sensor_topic(external_id, "events"),
                            encode_event_report(EventReport(tuple(batch)))))
            batch = []
    if batch:
        out.append(Sent(t, sensor_topic(external_id, "events"),
                        encode_event_report(EventReport(tuple(batch)))))
    return out


@st.composite
def deliveries(draw, fleet):
    """The messages of the fleet, and a delivery with duplicates, reordering, batches."""
    sent: list[Sent] = []
    for external_id, firmware, tz, _ in fleet:
        start = NOW - timedelta(hours=draw(st.sampled_from([11, 9, 5, 1])))
        if firmware == "v1":
            sent += v1_messages(external_id, tz, start, draw)
        else:
            sent += v2_messages(external_id, start, draw)
    sent.sort(key=lambda s: s.at)
    rnd = draw(st.randoms(use_true_random=False))
    delivered = [(s.topic, s.payload) for s in sent]
    delivered += [m for m in delivered if rnd.random() < 0.3]  # redeliveries
    rnd.shuffle(delivered)
    batches, i = [], 0
    while i < len(delivered):
        size = rnd.choice([1, 2, 5, 50])
        batches.append(delivered[i:i + size])
        i += size
    in_order = [[(s.topic, s.payload)] for s in sent]
    return in_order, batches, sent


def model(fleet, sent: list[Sent]) -> list[tuple]:
    """The rules computed directly (counting.step over each sensor's distinct reports in
    sensor order, each step at its report's time), independent of the store."""
    info = {external_id: (firmware, tz, hive) for external_id, firmware, tz, hive in fleet}
    reports: dict[str, dict] = {}
    for s in sent:
        sensor, kind = parse_topic(s.topic)
        items = reports.setdefault(sensor, {})
        message = decode(kind, s.payload)
        if isinstance(message, CounterReport):
            items[report_key(message)] = message
        else:
            for event in message.events:
                items[event_key(event)] = event
    hives: dict[int, list[int]] = {}
    for sensor, items in reports.items():
        firmware, tz, hive = info[sensor]
        boundary = day_start(NOW, zone(tz), clock(4, 0))
        row = hives.setdefault(hive, [0, 0, 0, 0])  # total in/out, day in/out
        previous = None
        for key in sorted(items):
            item = items[key]
            if isinstance(item, CounterReport):
                effect, at = step(previous, item, DEFAULT_PARAMS), local_to_utc(item.sensor_time,
                                                                                 zone(tz))
                previous = item
                d_in, d_out = effect.delta_in, effect.delta_out
            else:
                at = item.timestamp
                d_in, d_out = int(item.event_type == EventType.ENTRY), int(
                    item.event_type == EventType.EXIT)
            row[0] += d_in
            row[1] += d_out
            if min(at, NOW) >= boundary:
                row[2] += d_in
                row[3] += d_out
    return [(hive, max(0, r[2] - r[3]), r[0], r[1], r[2], r[3])
            for hive, r in sorted(hives.items()) if any(r)]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_any_delivery_stores_the_exactly_once_in_order_result(db, data) -> None:
    dsn, fleet = db
    in_order, batches, sent = data.draw(deliveries(fleet))

    async def run() -> tuple[dict, dict, list[str]]:
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            await deliver(conn, in_order)
            expected = await snapshot(conn)
            await _reset(conn)
            await deliver(conn, batches)
            got = await snapshot(conn)
            return expected, got, await consistency_problems(dsn)
        finally:
            await conn.close()

    expected, got, problems = asyncio.run(run())
    assert [h for h in expected["hives"] if any(h[2:])] == model(fleet, sent)
    assert got["hives"] == expected["hives"]
    assert got["rows"] == expected["rows"]
    assert got["tallies"] == expected["tallies"]
    assert got["hourly"] == expected["hourly"]
    assert problems == []


def test_day_and_totals_are_sums_of_what_the_rules_count(db) -> None:
    """A worked example: a late v1 report moves counts across the reset boundary."""
    dsn, fleet = db
    sensor, _, tz, _ = fleet[0]  # v1, Berlin: today's boundary is 03:00Z
    local = lambda hh, mm: datetime(2024, 3, 15, hh, mm)  # noqa: E731 - hive-local
    topic = sensor_topic(sensor, "counters")
    r = lambda i, o, t: (topic, encode_counter_report(CounterReport(i, o, t, ReportType.COUNT)))  # noqa: E731

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            # 03:30 local (before the boundary), then 05:00 local: +20/+5 in the new day
            await deliver(conn, [[r(100, 50, local(3, 30)), r(120, 55, local(5, 0))]])
            first = await snapshot(conn)
            # a late report at 04:30 local: 10 of the 20 entries happened after it
            await deliver(conn, [[r(110, 52, local(4, 30))]])
            return first, await snapshot(conn)
        finally:
            await conn.close()

    first, second = asyncio.run(run())
    assert first["hives"] == [(1, 15, 20, 5, 20, 5)]
    # the late report's step (+10/+2) and its successor's (+10/+3) are both after 04:00
    assert second["hives"] == [(1, 15, 20, 5, 20, 5)]
    deltas = [(row[2], row[7], row[8]) for row in second["rows"]]
    assert deltas == [(100, 0, 0), (110, 10, 2), (120, 10, 3)]
    assert local_to_utc(local(4, 30), zone(tz)) > day_start(NOW, zone(tz), clock(4, 0))


def test_clamp_at_zero_is_counted_and_order_independent(db) -> None:
    dsn, fleet = db
    sensor = fleet[2][0]  # v2, Berlin
    topic = sensor_topic(sensor, "events")
    t = NOW - timedelta(hours=1)
    exits = [(topic, encode_event_report(EventReport((Event(EventType.EXIT, 1, c,
                                                            t + timedelta(seconds=c)),))))
             for c in range(3)]
    entries = [(topic, encode_event_report(EventReport((Event(EventType.ENTRY, 1, c,
                                                              t + timedelta(seconds=c)),))))
               for c in range(10, 15)]

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            await deliver(conn, [exits, entries])
            a = await conn.fetchrow("SELECT occupancy, day_in, day_out, clamps FROM "
                                    "hive_occupancy")
            await _reset(conn)
            await deliver(conn, [entries, exits])
            b = await conn.fetchrow("SELECT occupancy, day_in, day_out, clamps FROM "
                                    "hive_occupancy")
            return tuple(a), tuple(b)
        finally:
            await conn.close()

    exits_first, entries_first = asyncio.run(run())
    assert exits_first == (2, 5, 3, 1)  # shown 0 after the exits (a clamp), then 5 - 3
    assert entries_first == (2, 5, 3, 0)


def test_daily_reset_sweep_and_late_reports_of_yesterday(db) -> None:
    dsn, fleet = db
    sensor = fleet[2][0]  # v2, Berlin (04:00 local = 03:00Z in March)
    topic = sensor_topic(sensor, "events")

    def entry(counter: int, at: datetime):
        return (topic, encode_event_report(EventReport((Event(EventType.ENTRY, 1, counter,
                                                              at),))))

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            evening = datetime(2024, 3, 14, 20, 0, tzinfo=UTC)
            await deliver(conn, [[entry(1, evening), entry(2, evening)]],
                          now=evening + timedelta(hours=1))
            before = await conn.fetchval("SELECT occupancy FROM hive_occupancy")
            # nothing arrives; the sweep after 03:00Z resets the hive
            swept = await sweep_resets(conn, clock(4, 0), NOW)
            after = await conn.fetchrow("SELECT occupancy, total_in, day_start FROM "
                                        "hive_occupancy")
            again = await sweep_resets(conn, clock(4, 0), NOW)
            # a late event of yesterday counts in the totals, not in today's occupancy
            await deliver(conn, [[entry(3, evening + timedelta(minutes=5))]])
            late = await conn.fetchrow("SELECT occupancy, total_in FROM hive_occupancy")
            return before, swept, tuple(after), again, tuple(late)
        finally:
            await conn.close()

    before, swept, after, again, late = asyncio.run(run())
    assert before == 2
    assert [h.occupancy for h in swept] == [0]
    assert after == (0, 2, datetime(2024, 3, 15, 3, 0, tzinfo=UTC))
    assert again == []
    assert late == (0, 3)


def test_status_updates_sensor_status_and_applies_the_pending_configuration(db) -> None:
    dsn, fleet = db
    sensor = fleet[0][0]

    def status(config_id: int, csq: int = 21) -> tuple[str, bytes]:
        message = StatusMessage(NOW, 3712, 1, 3, csq, (2 << 24) | (1 << 16) | 4, config_id)
        return sensor_topic(sensor, "status"), encode_status(message)

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            await conn.execute("DELETE FROM sensor_config")
            sid = await conn.fetchval("SELECT id FROM sensor WHERE external_id = $1", sensor)
            ids = []
            for _ in range(2):
                ids.append(await conn.fetchval(
                    "INSERT INTO sensor_config (sensor_id, threshold_cm, reporting_interval_min,"
                    " status_interval_min, event_threshold) VALUES ($1, 180, 30, 60, 5) "
                    "RETURNING id", sid))
                if len(ids) == 1:  # the first one is applied already
                    await conn.execute("UPDATE sensor_config SET state = 'applied', "
                                       "applied_at = now() WHERE id = $1", ids[0])
            await deliver(conn, [[status(999)]])  # an id this server never issued
            pending = await conn.fetchval("SELECT state FROM sensor_config WHERE id = $1", ids[1])
            await deliver(conn, [[status(ids[1])], [status(ids[1], csq=50)]])
            states = await conn.fetch("SELECT id, state FROM sensor_config ORDER BY id")
            row = await conn.fetchrow("SELECT configuration_id, firmware, csq FROM "
                                      "sensor_status")
            reject = await conn.fetchrow("SELECT reason, detail FROM ingest_reject")
            return pending, [tuple(s) for s in states], tuple(row), tuple(reject), ids
        finally:
            await conn.close()

    pending, states, row, reject, ids = asyncio.run(run())
    assert pending == "pending"
    assert states == [(ids[0], "superseded"), (ids[1], "applied")]
    assert row == (ids[1], "2.1.4", 21)
    assert reject[0] == "field_out_of_range" and "csq" in reject[1]


# --- the pipeline around the store ----------------------------------------------------


def _pipeline(dsn: str, acked: list) -> tuple[Pipeline, Database]:
    import logging

    settings = {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 2, "statement_timeout": 5.0,
                "connect_timeout": 2.0, "reconnect_max_backoff": 1.0}
    db = Database(settings, logging.getLogger("test"))
    log = logging.getLogger("test")
    pipeline = Pipeline(db, SETTINGS, Metrics(None, 0), log,
                        ack=lambda item: acked.append(item) or True, batch_size=100)
    return pipeline, db


def test_a_poison_message_becomes_a_store_failed_reject_and_the_rest_is_stored(db) -> None:
    dsn, fleet = db
    sensor = fleet[0][0]
    topic = sensor_topic(sensor, "counters")

    def report(total: int, minute: int) -> bytes:
        t = datetime(2024, 3, 15, 10, minute)
        return encode_counter_report(CounterReport(total, 0, t, ReportType.COUNT))

    async def run():
        conn = await asyncpg.connect(dsn)
        await _reset(conn)
        await conn.execute("""
            CREATE FUNCTION refuse_4242() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.total_in = 4242 THEN RAISE EXCEPTION 'refused for the test'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_4242 BEFORE INSERT ON sensor_report
                FOR EACH ROW EXECUTE FUNCTION refuse_4242();""")
        acked: list[Incoming] = []
        pipeline, database = _pipeline(dsn, acked)
        try:
            for total, minute in ((4200, 1), (4242, 2), (4250, 3)):
                pipeline.submit(Incoming(topic, report(total, minute), time.time()))
            outcome = await pipeline.process(pipeline.take())
            rows = await conn.fetch("SELECT total_in, delta_in FROM sensor_report ORDER BY 1")
            rejects = await conn.fetch("SELECT reason, payload FROM ingest_reject")
            return outcome, [tuple(r) for r in rows], rejects, acked, pipeline.metrics
        finally:
            await conn.execute("DROP TRIGGER refuse_4242 ON sensor_report; "
                               "DROP FUNCTION refuse_4242()")
            await conn.close()
            await database.close()

    outcome, rows, rejects, acked, metrics = asyncio.run(run())
    assert rows == [(4200, 0), (4250, 50)]  # the poison report never became a baseline
    assert [r["reason"] for r in rejects] == ["store_failed"]
    assert rejects[0]["payload"] == report(4242, 2)
    assert len(acked) == 3  # all acknowledged: nothing blocks the queue
    assert metrics.get('rejects_total{reason="store_failed"}') == 1
    assert metrics.get("db_errors_total") >= 2


def test_batches_form_from_what_queued_during_a_commit(db) -> None:
    dsn, fleet = db
    sensor = fleet[2][0]
    topic = sensor_topic(sensor, "events")
    base = NOW - timedelta(hours=2)

    async def run():
        conn = await asyncpg.connect(dsn)
        await _reset(conn)
        await conn.close()
        acked: list[Incoming] = []
        pipeline, database = _pipeline(dsn, acked)
        sizes = []
        pipeline.on_committed = lambda outcome, items: sizes.append(len(items))
        writer = asyncio.create_task(pipeline.run())
        try:
            for i in range(600):
                event = Event(EventType.ENTRY, 1, i % 256, base + timedelta(seconds=i))
                pipeline.submit(Incoming(topic, encode_event_report(EventReport((event,))),
                                         time.time()))
                if i % 50 == 0:
                    await asyncio.sleep(0.001)
            for _ in range(500):
                if len(acked) == 600:
                    break
                await asyncio.sleep(0.01)
        finally:
            pipeline.stopping = True
            pipeline.wakeup.set()
            writer.cancel()
            await database.close()
        return sizes, len(acked)

    sizes, acked = asyncio.run(run())
    assert acked == 600 and sum(sizes) == 600
    assert sizes[0] == 1  # the first message found the queue empty: no waiting
    assert max(sizes) <= 100 and len(sizes) < 600


def test_reject_reasons_of_every_kind(db) -> None:
    """Every malformed message is stored raw with its reason (through the broker in
    test_ingest_e2e; here the mapping itself)."""
    dsn, fleet = db
    v1, v2 = fleet[0][0], fleet[2][0]
    good = bytes.fromhex("007800610078006118030f122a07ffff") + bytes(43)
    cases = {
        "bad_topic": ("sensors/x/unknown", good),
        "unknown_sensor": ("sensors/nobody/counters", good),
        "bad_length": (sensor_topic(v1, "counters"), good[:15]),
        "bad_marker": (sensor_topic(v1, "counters"), good[:15] + b"\x00"),
        "unknown_report_type": (sensor_topic(v1, "counters"), good[:14] + b"\x42\xff"),
        "bad_event_type": (sensor_topic(v2, "events"), bytes.fromhex("072a0765f493a800")[:8]),
        "field_out_of_range": (sensor_topic(v1, "counters"), good[:9] + b"\x0d" + good[10:]),
        "bad_date": (sensor_topic(v1, "counters"), good[:9] + b"\x02\x1e" + good[11:]),
    }

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            await deliver(conn, [list(cases.values())])
            return await conn.fetch("SELECT reason, topic, payload FROM ingest_reject")
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert {r["reason"]: (r["topic"], r["payload"]) for r in rows} == cases


def test_random_soak_keeps_every_invariant(db) -> None:
    """A bigger random run (many batches, interleaved sensors) ends consistent."""
    dsn, fleet = db
    rnd = random.Random(7)
    messages = []
    for external_id, firmware, tz, _ in fleet:
        t = NOW - timedelta(hours=6)
        totals = [rnd.randrange(65000, 65536), rnd.randrange(0, 100)]
        counter = 0
        for _ in range(60):
            t += timedelta(seconds=rnd.choice([1, 30, 300]))
            if firmware == "v1":
                totals = [(totals[0] + rnd.randrange(6)) % 65536, (totals[1] + rnd.randrange(5))
                          % 65536]
                local = t.astimezone(zone(tz)).replace(tzinfo=None)
                payload = encode_counter_report(CounterReport(*totals, local, ReportType.COUNT))
                messages.append((sensor_topic(external_id, "counters"), payload))
            else:
                kind = rnd.choice([EventType.ENTRY, EventType.EXIT])
                payload = encode_event_report(EventReport((Event(kind, 1, counter, t),)))
                counter = (counter + 1) % 256
                messages.append((sensor_topic(external_id, "events"), payload))
    delivered = messages + rnd.sample(messages, 40)
    rnd.shuffle(delivered)

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            await _reset(conn)
            await deliver(conn, [delivered[i:i + 37] for i in range(0, len(delivered), 37)])
            return await consistency_problems(dsn)
        finally:
            await conn.close()

    assert asyncio.run(run()) == []
