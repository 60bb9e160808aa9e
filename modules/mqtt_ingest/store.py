"""One batch of decoded messages -> one Postgres transaction (the caller commits).

Theory of operation
-------------------
`store_batch(conn, items, settings)` runs inside a transaction the caller opened and
returns what to tell the rest of bizzyd after the commit (hive states for the bus,
counts for the metrics).  Nothing here talks to the broker: the caller acknowledges
the batch only after the commit, so a crash anywhere before it means redelivery, and
redelivery is harmless because of the steps below.

1. **Sensors.**  The external ids of the batch are looked up (`sensor` joined with its
   hive for the time zone).  An unknown id is a reject (`unknown_sensor`).
2. **Lock.**  The ingest-state rows of the batch's sensors are created if missing and
   locked, in sensor-id order (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), so two
   ingest processes handling the same sensor take turns and cannot deadlock; hive rows
   are locked later, also in id order.  The stored tallies (`v1_tally`, `v2_tally`,
   migration 0004) are the counting state of `counting.py`.
3. **Count, in order.**  Each sensor's reports (v1) and events (v2) of the batch are
   sorted by their sensor order and applied with `apply_report` / `apply_event`:
   a duplicate of the newest item is dropped; an item in order gets its effect; an
   item that is older than what is already applied ("late") is put aside.  The rows
   in order are inserted with one statement per protocol (`ON CONFLICT ... DO NOTHING`
   on the natural keys, a safety net: the tallies already said they are new).
4. **Late items.**  One query finds which of them are already stored (redelivery after
   a crash, a duplicate message): those are duplicates.  Each remaining one reads its
   window of stored neighbours and goes through `recompute_*`.  For v1 the correction
   is also *attributed*: the late report takes its own step from its predecessor and
   its successor's stored delta is reduced accordingly (an UPDATE), so every stored
   row's `delta_in`/`delta_out` is always its step in sensor order, and a hive's
   entries of a period are the sum of its rows' deltas in that period.
5. **Hives.**  Every change carries (hive, event time, entries, exits).  The hive's
   row keeps running totals and, for the current day (`day.py`), the unclamped sums
   `day_in`/`day_out`; `occupancy` is `clamp_occupancy(net before, delta)`, i.e.
   max(net, 0), a function of the set of stored rows, never of arrival order.  A commit
   that leaves the net below zero counts a clamp (`hive_occupancy.clamps`, metrics).
   The day's correction (`hive_occupancy.correction`, modules.analytics) is added to
   the raw count.  Entries/exits and the raw count go to the rollups (`rollup.py`:
   5-minute, hourly and local-day levels).
6. **Status** messages upsert `sensor_status` (the last one wins) and mark a pending
   configuration applied when the reported id is that sensor's pending one.
7. **Rejects** are inserted raw with their reason: they are acknowledged like the rest.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from .codec import (
    CounterReport,
    DecodeError,
    Event,
    EventReport,
    EventType,
    RejectReason,
    ReportType,
    SensorMessage,
    StatusMessage,
    TopicKind,
    decode,
    parse_topic,
)
from .counting import (
    DEFAULT_PARAMS,
    NOTHING,
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
    report_key,
    report_window,
    second_order,
    step,
)
from .day import day_start, local_to_utc, zone
from .rollup import Sample, write_rollups

STATUS_CSQ_OK = frozenset(range(32)) | {99}
V1_MARGIN = timedelta(hours=3)  # local-time order vs UTC order around DST changes


# --- what arrives -----------------------------------------------------------------------


@dataclass(slots=True)
class Incoming:
    """One MQTT message, decoded (or rejected) as it arrived."""

    topic: str
    payload: bytes
    received_at: float  # time.time()
    mid: int = 0
    qos: int = 1
    epoch: int = 0  # the connection it came on (acks are only valid there)
    dup: bool = False
    sensor: str | None = None  # external id from the topic
    kind: TopicKind | None = None
    message: SensorMessage | None = None
    reason: str | None = None  # reject reason code
    detail: str | None = None


def classify(item: Incoming, prefix: str = "", byte_order: str = "big") -> Incoming:
    """Parse the topic and decode the payload; a failure becomes a reject reason."""
    try:
        item.sensor, item.kind = parse_topic(item.topic, prefix)
    except DecodeError as exc:
        item.reason, item.detail = exc.reason.value, exc.detail
        return item
    try:
        item.message = decode(item.kind, item.payload, byte_order)
    except DecodeError as exc:
        item.reason, item.detail = exc.reason.value, exc.detail
        return item
    if isinstance(item.message, StatusMessage) and item.message.csq not in STATUS_CSQ_OK:
        item.reason = RejectReason.FIELD_OUT_OF_RANGE.value
        item.detail = f"status: csq = {item.message.csq} (0..31 or 99)"
        item.message = None
    return item


# --- settings and results ---------------------------------------------------------------


@dataclass(frozen=True)
class StoreSettings:
    params: CountingParams = DEFAULT_PARAMS
    reset_at: time = time(4, 0)
    default_timezone: str = "UTC"


@dataclass
class HiveState:
    """A hive after the commit: what OCCUPANCY_UPDATE carries."""

    hive_id: int
    occupancy: int
    total_in: int
    total_out: int
    delta_in: int
    delta_out: int
    updated_at: float


@dataclass
class Outcome:
    hives: list[HiveState] = field(default_factory=list)
    stored: int = 0  # sensor_report rows inserted
    duplicates: int = 0
    late: int = 0
    statuses: int = 0
    configs_applied: int = 0
    anomalies: int = 0
    lost: int = 0
    clamps: int = 0
    resets: int = 0
    rejects: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    conflicts: int = 0  # rows the tallies called new but the natural key refused


# --- SQL --------------------------------------------------------------------------------

SENSORS_SQL = """
SELECT s.id, s.external_id, s.hive_id, h.timezone
FROM sensor s LEFT JOIN hive h ON h.id = s.hive_id
WHERE s.external_id = ANY($1::text[])
"""

LOCK_STATES_SQL = """
INSERT INTO sensor_ingest_state (sensor_id)
SELECT id FROM unnest($1::bigint[]) AS u(id) ORDER BY id
ON CONFLICT (sensor_id) DO UPDATE SET sensor_id = excluded.sensor_id
RETURNING sensor_id, v1_tally::text, v2_tally::text
"""

INSERT_V1_SQL = """
INSERT INTO sensor_report (sensor_id, hive_id, protocol, reported_at, received_at,
                           sensor_local_time, total_in, total_out, report_type,
                           delta_in, delta_out, outcome)
SELECT s, h, 'v1', t, r, l, i, o, ty, di, do_, oc
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
            $5::timestamp[], $6::int[], $7::int[], $8::smallint[], $9::int[], $10::int[],
            $11::text[]) AS u(s, h, t, r, l, i, o, ty, di, do_, oc)
ON CONFLICT (sensor_id, reported_at, total_in, total_out, report_type)
    WHERE protocol = 'v1' DO NOTHING
RETURNING 1
"""

INSERT_V2_SQL = """
INSERT INTO sensor_report (sensor_id, hive_id, protocol, reported_at, received_at,
                           event_type, distance_mm, counter, delta_in, delta_out, outcome)
SELECT s, h, 'v2', t, r, e, d, c, di, do_, oc
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
            $5::smallint[], $6::int[], $7::smallint[], $8::int[], $9::int[], $10::text[])
     AS u(s, h, t, r, e, d, c, di, do_, oc)
ON CONFLICT (sensor_id, reported_at, counter, event_type)
    WHERE protocol = 'v2' DO NOTHING
RETURNING 1
"""

STORED_V1_SQL = """
SELECT k.s, k.t, k.i, k.o, k.ty
FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[], $5::smallint[])
     AS k(s, t, i, o, ty)
WHERE EXISTS (SELECT 1 FROM sensor_report r
              WHERE r.protocol = 'v1' AND r.sensor_id = k.s AND r.reported_at = k.t
                AND r.total_in = k.i AND r.total_out = k.o AND r.report_type = k.ty)
"""

STORED_V2_SQL = """
SELECT k.s, k.t, k.c, k.e
FROM unnest($1::bigint[], $2::timestamptz[], $3::smallint[], $4::smallint[])
     AS k(s, t, c, e)
WHERE EXISTS (SELECT 1 FROM sensor_report r
              WHERE r.protocol = 'v2' AND r.sensor_id = k.s AND r.reported_at = k.t
                AND r.counter = k.c AND r.event_type = k.e)
"""

# the stored neighbours of a late item: from the last stored time before it to the
# first after it (widened by `margin` for v1, whose order is the local clock's)
WINDOW_SQL = """
WITH b AS (
    SELECT (SELECT max(reported_at) FROM sensor_report
            WHERE sensor_id = $1 AND protocol = $2 AND reported_at < $3) AS lo,
           (SELECT min(reported_at) FROM sensor_report
            WHERE sensor_id = $1 AND protocol = $2 AND reported_at > $3) AS hi)
SELECT r.hive_id, r.reported_at, r.sensor_local_time, r.total_in, r.total_out,
       r.report_type, r.event_type, r.distance_mm, r.counter, r.delta_in, r.delta_out,
       r.outcome
FROM sensor_report r, b
WHERE r.sensor_id = $1 AND r.protocol = $2
  AND r.reported_at >= coalesce(b.lo, $3) - $4::interval
  AND r.reported_at <= coalesce(b.hi, $3) + $4::interval
"""

UPDATE_ROW_SQL = """
UPDATE sensor_report SET delta_in = $6, delta_out = $7, outcome = $8
WHERE protocol = 'v1' AND sensor_id = $1 AND reported_at = $2 AND total_in = $3
  AND total_out = $4 AND report_type = $5
"""

UPDATE_STATES_SQL = """
UPDATE sensor_ingest_state s SET
    v1_tally = coalesce(u.v1::jsonb, s.v1_tally),
    v2_tally = coalesce(u.v2::jsonb, s.v2_tally),
    last_total_in = coalesce(u.lti, s.last_total_in),
    last_total_out = coalesce(u.lto, s.last_total_out),
    last_sensor_time = coalesce(u.lst, s.last_sensor_time),
    baseline_in = coalesce(u.bi, s.baseline_in),
    baseline_out = coalesce(u.bo, s.baseline_out),
    baseline_at = coalesce(u.bt, s.baseline_at),
    restarts = s.restarts + u.rs,
    last_counter = coalesce(u.lc, s.last_counter),
    last_event_at = coalesce(u.le, s.last_event_at),
    lost_events = coalesce(u.lost, s.lost_events),
    anomalies = coalesce(u.an, s.anomalies),
    last_anomaly_at = coalesce(u.lat, s.last_anomaly_at),
    last_anomaly = coalesce(u.la, s.last_anomaly),
    stale_reports = s.stale_reports + u.st,
    duplicates = s.duplicates + u.du,
    updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::int[], $6::timestamptz[],
            $7::int[], $8::int[], $9::timestamptz[], $10::bigint[], $11::smallint[],
            $12::timestamptz[], $13::bigint[], $14::bigint[], $15::timestamptz[],
            $16::text[], $17::bigint[], $18::bigint[])
     AS u(id, v1, v2, lti, lto, lst, bi, bo, bt, rs, lc, le, lost, an, lat, la, st, du)
WHERE s.sensor_id = u.id
"""

LOCK_HIVES_SQL = """
WITH locked AS (
    INSERT INTO hive_occupancy (hive_id)
    SELECT id FROM unnest($1::bigint[]) AS u(id) ORDER BY id
    ON CONFLICT (hive_id) DO UPDATE SET hive_id = excluded.hive_id
    RETURNING hive_id, occupancy, total_in, total_out, day_start, day_in, day_out,
              correction)
SELECT l.*, h.timezone, clock_timestamp() AS locked_at
FROM locked l JOIN hive h ON h.id = l.hive_id
"""

UPDATE_HIVES_SQL = """
UPDATE hive_occupancy o SET
    occupancy = u.occ, total_in = u.ti, total_out = u.tout, day_start = u.ds,
    day_in = u.di, day_out = u.dout, clamps = o.clamps + u.cl, correction = u.cor,
    updated_at = $10
FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::timestamptz[],
            $6::bigint[], $7::bigint[], $8::int[], $9::int[])
     AS u(h, occ, ti, tout, ds, di, dout, cl, cor)
WHERE o.hive_id = u.h
"""

DOORS_SQL = """
INSERT INTO sensor_door_daily AS o (sensor_id, day, entries, exits)
SELECT * FROM unnest($1::bigint[], $2::date[], $3::int[], $4::int[])
ON CONFLICT (sensor_id, day) DO UPDATE SET
    entries = o.entries + excluded.entries, exits = o.exits + excluded.exits
"""

STATUS_SQL = """
INSERT INTO sensor_status AS o (sensor_id, started_at, battery_mv, state_flags,
                                discarded_events, csq, firmware_version, configuration_id,
                                received_at)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[], $5::int[],
                     $6::smallint[], $7::bigint[], $8::bigint[], $9::timestamptz[])
ON CONFLICT (sensor_id) DO UPDATE SET
    started_at = excluded.started_at, battery_mv = excluded.battery_mv,
    state_flags = excluded.state_flags, discarded_events = excluded.discarded_events,
    csq = excluded.csq, firmware_version = excluded.firmware_version,
    configuration_id = excluded.configuration_id, received_at = excluded.received_at
"""

PENDING_SQL = """
SELECT id, sensor_id FROM sensor_config
WHERE state = 'pending' AND id = ANY($1::bigint[])
ORDER BY id FOR UPDATE
"""

SUPERSEDE_APPLIED_SQL = """
UPDATE sensor_config SET state = 'superseded', superseded_at = now()
WHERE sensor_id = $1 AND state = 'applied'
"""

APPLY_SQL = """
UPDATE sensor_config SET state = 'applied', applied_at = now() WHERE id = $1
"""

REJECTS_SQL = """
INSERT INTO ingest_reject (topic, payload, reason, detail, sensor_external_id, received_at)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[])
"""


# --- per-batch working state ------------------------------------------------------------


@dataclass(slots=True)
class Sensor:
    id: int
    external_id: str
    hive_id: int | None
    tz: Any  # ZoneInfo of the hive (or the default)
    v1: CounterTally = field(default_factory=CounterTally)
    v2: EventTally = field(default_factory=EventTally)
    v1_changed: bool = False
    v2_changed: bool = False
    restarts: int = 0
    baseline: tuple[int, int, datetime] | None = None
    last_anomaly: tuple[datetime, str] | None = None
    stale: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class Piece:
    """A change of a hive's counts, at the event time it belongs to."""

    hive_id: int
    at: datetime  # UTC
    delta_in: int
    delta_out: int


@dataclass(slots=True)
class V1Item:
    sensor: Sensor
    report: CounterReport
    reported_at: datetime
    received_at: datetime


@dataclass(slots=True)
class V2Item:
    sensor: Sensor
    event: Event
    received_at: datetime


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _outcome(report: CounterReport, effect: Effect, stale: bool) -> str:
    if report.is_restart:
        return "restart"
    if effect.anomalies > 0:
        return "anomaly"
    return "stale" if stale else "applied"


class Batch:
    """The work of one transaction (see the module docstring for the steps)."""

    def __init__(self, conn: asyncpg.Connection, settings: StoreSettings, now: datetime) -> None:
        self.conn, self.settings, self.now = conn, settings, now
        self.params = settings.params
        self.out = Outcome()
        self.pieces: list[Piece] = []
        self.doors: defaultdict[tuple[int, date], list[int]] = defaultdict(lambda: [0, 0])
        self.sensors: dict[str, Sensor] = {}
        self.rejects: list[tuple] = []
        self._v1_rows: list[tuple] = []
        self._v2_rows: list[tuple] = []

    # -- entry ---------------------------------------------------------------------------

    async def run(self, items: Sequence[Incoming]) -> Outcome:
        good = [i for i in items if i.reason is None]
        for item in items:
            if item.reason is not None:
                self._reject(item, item.reason, item.detail)
        await self._load_sensors({i.sensor for i in good if i.sensor})
        reports: list[Incoming] = []
        statuses: list[Incoming] = []
        for item in good:
            if item.sensor not in self.sensors:
                self._reject(item, RejectReason.UNKNOWN_SENSOR.value,
                             f"no sensor with external id {item.sensor!r}")
            elif isinstance(item.message, StatusMessage):
                statuses.append(item)
            else:
                reports.append(item)
        if reports:
            await self._lock_states({self.sensors[i.sensor].id for i in reports})
            await self._count(reports)
            await self._save_states()
        if statuses:
            await self._statuses(statuses)
        if self.pieces:
            await self._hives()
        if self.doors:
            await self._save_doors()
        if self.rejects:
            await self.conn.execute(REJECTS_SQL, *zip(*self.rejects, strict=True))
        return self.out

    def _reject(self, item: Incoming, reason: str, detail: str | None) -> None:
        topic = item.topic.replace("\x00", "\ufffd")
        self.rejects.append((topic, bytes(item.payload), reason, detail, item.sensor,
                             _utc(item.received_at)))
        self.out.rejects[reason] += 1

    async def _load_sensors(self, external_ids: set[str]) -> None:
        if not external_ids:
            return
        default = self.settings.default_timezone
        for row in await self.conn.fetch(SENSORS_SQL, sorted(external_ids)):
            tz = zone(row["timezone"] or default)
            self.sensors[row["external_id"]] = Sensor(row["id"], row["external_id"],
                                                      row["hive_id"], tz)

    async def _lock_states(self, ids: set[int]) -> None:
        by_id = {s.id: s for s in self.sensors.values()}
        for row in await self.conn.fetch(LOCK_STATES_SQL, sorted(ids)):
            sensor = by_id[row["sensor_id"]]
            if row["v1_tally"] is not None:
                sensor.v1 = CounterTally.from_dict(json.loads(row["v1_tally"]))
            if row["v2_tally"] is not None:
                sensor.v2 = EventTally.from_dict(json.loads(row["v2_tally"]))

    # -- counting ------------------------------------------------------------------------

    async def _count(self, reports: Sequence[Incoming]) -> None:
        v1: list[V1Item] = []
        v2: list[V2Item] = []
        for item in reports:
            sensor = self.sensors[item.sensor]  # type: ignore[index]
            received = _utc(item.received_at)
            message = item.message
            if isinstance(message, CounterReport):
                v1.append(V1Item(sensor, message, local_to_utc(message.sensor_time, sensor.tz),
                                 received))
            elif isinstance(message, EventReport):
                v2.extend(V2Item(sensor, event, received) for event in message.events)
        v1.sort(key=lambda i: (i.sensor.id, report_key(i.report)))
        v2.sort(key=lambda i: (i.sensor.id, i.event.timestamp, i.event.counter))
        late_v1 = [i for i in v1 if not self._apply_v1(i)]
        late_v2 = [i for i in v2 if not self._apply_v2(i)]
        await self._insert_rows()
        if late_v1:
            await self._late_v1(late_v1)
        if late_v2:
            await self._late_v2(late_v2)

    def _apply_v1(self, item: V1Item) -> bool:
        """Apply in order; False when the report is late (to be recomputed)."""
        sensor, report = item.sensor, item.report
        tally, effect = apply_report(sensor.v1, report, self.params)
        if effect.duplicate:
            sensor.duplicates += 1
            self.out.duplicates += 1
            return True
        if effect.late:
            return False
        sensor.v1, sensor.v1_changed = tally, True
        self._v1_row(item, effect, stale=False)
        self._v1_stats(item, effect, effect)
        if report.is_restart:
            sensor.baseline = (report.total_in, report.total_out, item.reported_at)
        return True

    def _v1_stats(self, item: V1Item, own: Effect, effect: Effect) -> None:
        """`own`: the report's step; `effect`: what the tally changed by."""
        sensor = item.sensor
        sensor.restarts += item.report.is_restart
        self.out.anomalies += effect.anomalies
        if own.anomalies > 0:
            previous = sensor.v1.last
            text = (f"v1 report {item.report.total_in}/{item.report.total_out} at "
                    f"{item.report.sensor_time.isoformat()}: delta above max_delta "
                    f"{self.params.max_delta} (or a total at/above counter_wrap)")
            if previous is not None:
                text += f"; previous applied {previous.total_in}/{previous.total_out}"
            sensor.last_anomaly = (item.reported_at, text)

    def _v1_row(self, item: V1Item, effect: Effect, stale: bool) -> None:
        r, sensor = item.report, item.sensor
        self._v1_rows.append((sensor.id, sensor.hive_id, item.reported_at, item.received_at,
                              r.sensor_time, r.total_in, r.total_out, int(r.report_type),
                              effect.delta_in, effect.delta_out, _outcome(r, effect, stale)))
        self._piece(sensor.hive_id, item.reported_at, effect.delta_in, effect.delta_out)
        self._door(sensor, item.reported_at, effect.delta_in, effect.delta_out)

    def _apply_v2(self, item: V2Item) -> bool:
        sensor, event = item.sensor, item.event
        tally, effect = apply_event(sensor.v2, event)
        if effect.duplicate:
            sensor.duplicates += 1
            self.out.duplicates += 1
            return True
        if effect.late:
            return False
        sensor.v2, sensor.v2_changed = tally, True
        self._v2_row(item, effect)
        return True

    def _v2_row(self, item: V2Item, effect: Effect) -> None:
        e, sensor = item.event, item.sensor
        self._v2_rows.append((sensor.id, sensor.hive_id, e.timestamp, item.received_at,
                              int(e.event_type), e.distance_mm, e.counter, effect.delta_in,
                              effect.delta_out, "applied"))
        self.out.lost += effect.lost
        self._piece(sensor.hive_id, e.timestamp, effect.delta_in, effect.delta_out)
        self._door(sensor, e.timestamp, effect.delta_in, effect.delta_out)

    def _piece(self, hive_id: int | None, at: datetime, delta_in: int, delta_out: int) -> None:
        if hive_id is not None and (delta_in or delta_out):
            self.pieces.append(Piece(hive_id, at, delta_in, delta_out))

    def _door(self, sensor: Sensor, at: datetime, delta_in: int, delta_out: int) -> None:
        """Count a sensor's movements by its hive's local day (door imbalance, kpis)."""
        if delta_in or delta_out:
            cell = self.doors[(sensor.id, at.astimezone(sensor.tz).date())]
            cell[0] += delta_in
            cell[1] += delta_out

    async def _save_doors(self) -> None:
        cells = sorted(self.doors.items())
        await self.conn.execute(DOORS_SQL, [s for (s, _), _ in cells],
                                [d for (_, d), _ in cells], [v[0] for _, v in cells],
                                [v[1] for _, v in cells])

    async def _insert_rows(self) -> None:
        rows_v1, rows_v2 = self._v1_rows, self._v2_rows
        self._v1_rows, self._v2_rows = [], []
        if rows_v1:
            done = await self.conn.fetch(INSERT_V1_SQL, *zip(*rows_v1, strict=True))
            self._inserted(len(rows_v1), len(done))
        if rows_v2:
            done = await self.conn.fetch(INSERT_V2_SQL, *zip(*rows_v2, strict=True))
            self._inserted(len(rows_v2), len(done))

    def _inserted(self, wanted: int, done: int) -> None:
        self.out.stored += done
        if done != wanted:
            # the tallies called these rows new but the natural key already had them:
            # the ingest state is out of step with sensor_report (edited by hand?)
            self.out.conflicts += wanted - done

    # -- late items ----------------------------------------------------------------------

    async def _late_v1(self, items: list[V1Item]) -> None:
        keys = [(i.sensor.id, i.reported_at, i.report.total_in, i.report.total_out,
                 int(i.report.report_type)) for i in items]
        await self._late(items, keys, STORED_V1_SQL, self._recompute_v1)

    async def _late(self, items: Sequence[Any], keys: list[tuple], stored_sql: str,
                    recompute: Callable[[Any], Awaitable[None]]) -> None:
        """Late items by natural key: a stored or repeated key is a duplicate, the
        rest are recomputed into their sensor's history one by one."""
        stored = {tuple(r) for r in await self.conn.fetch(stored_sql, *zip(*keys, strict=True))}
        seen: set[tuple] = set()
        for item, key in zip(items, keys, strict=True):
            if key in stored or key in seen:
                item.sensor.duplicates += 1
                self.out.duplicates += 1
                continue
            seen.add(key)
            await recompute(item)

    async def _recompute_v1(self, item: V1Item) -> None:
        sensor, late = item.sensor, item.report
        rows = await self.conn.fetch(WINDOW_SQL, sensor.id, "v1", item.reported_at, V1_MARGIN)
        stored = {}
        for row in rows:
            report = CounterReport(row["total_in"], row["total_out"], row["sensor_local_time"],
                                   ReportType(row["report_type"]))
            stored[report_key(report)] = (report, row)
        window = report_window([r for r, _ in stored.values()], late)
        tally, effect = recompute_report(sensor.v1, window, late, self.params)
        if effect.duplicate:
            sensor.duplicates += 1
            self.out.duplicates += 1
            return
        sensor.v1, sensor.v1_changed = tally, True
        sensor.stale += 1
        self.out.late += 1
        # attribute: the late report's own step, and its successor's new step
        ordered = sorted([*window, late], key=report_key)
        own = NOTHING
        changes: list[tuple[Any, Effect]] = []
        for before, report in zip([None, *ordered], ordered, strict=False):
            if report is late:
                own = step(before, late, self.params)
            elif before is late:
                changes.append((stored[report_key(report)], step(late, report, self.params)))
        self._v1_row(item, own, stale=True)
        self._v1_stats(item, own, effect)
        for (report, row), new in changes:
            d_in, d_out = new.delta_in - row["delta_in"], new.delta_out - row["delta_out"]
            outcome = _outcome(report, new, row["outcome"] == "stale")
            if d_in or d_out or outcome != row["outcome"]:
                await self.conn.execute(UPDATE_ROW_SQL, sensor.id, row["reported_at"],
                                        report.total_in, report.total_out,
                                        int(report.report_type), new.delta_in, new.delta_out,
                                        outcome)
                self._piece(row["hive_id"], row["reported_at"], d_in, d_out)
                self._door(sensor, row["reported_at"], d_in, d_out)
        await self._insert_rows()

    async def _late_v2(self, items: list[V2Item]) -> None:
        keys = [(i.sensor.id, i.event.timestamp, i.event.counter, int(i.event.event_type))
                for i in items]
        await self._late(items, keys, STORED_V2_SQL, self._recompute_v2)

    async def _recompute_v2(self, item: V2Item) -> None:
        sensor, late = item.sensor, item.event
        rows = await self.conn.fetch(WINDOW_SQL, sensor.id, "v2", late.timestamp, timedelta(0))
        history = [Event(EventType(r["event_type"]), r["distance_mm"], r["counter"],
                         r["reported_at"]) for r in rows]
        tally, effect = recompute_event(sensor.v2, event_window(history, late), late)
        if effect.duplicate:
            sensor.duplicates += 1
            self.out.duplicates += 1
            return
        sensor.v2, sensor.v2_changed = tally, True
        sensor.stale += 1
        self.out.late += 1
        self._v2_row(item, effect)
        await self._insert_rows()

    # -- state rows ----------------------------------------------------------------------

    async def _save_states(self) -> None:
        columns: list[tuple] = []
        for s in self.sensors.values():
            if not (s.v1_changed or s.v2_changed or s.duplicates):
                continue
            last = s.v1.last
            last_utc = None if last is None else local_to_utc(last.sensor_time, s.tz)
            marks = second_order(s.v2.tail) if s.v2.tail else []
            columns.append((
                s.id,
                json.dumps(s.v1.to_dict()) if s.v1_changed else None,
                json.dumps(s.v2.to_dict()) if s.v2_changed else None,
                None if last is None else last.total_in,
                None if last is None else last.total_out,
                last_utc,
                *(s.baseline or (None, None, None)),
                s.restarts,
                marks[-1][0] if marks else None,
                s.v2.last_timestamp,
                s.v2.lost if s.v2_changed else None,
                s.v1.anomalies if s.v1_changed else None,
                *(s.last_anomaly or (None, None)),
                s.stale,
                s.duplicates,
            ))
        if columns:
            await self.conn.execute(UPDATE_STATES_SQL, *zip(*columns, strict=True))

    # -- status messages -----------------------------------------------------------------

    async def _statuses(self, items: Sequence[Incoming]) -> None:
        last: dict[int, tuple[Incoming, StatusMessage]] = {}
        for item in items:
            sensor = self.sensors[item.sensor]  # type: ignore[index]
            last[sensor.id] = (item, item.message)  # type: ignore[assignment]
        rows = [(sid, m.startup_time, m.battery_mv, m.state_flags, m.discarded, m.csq,
                 m.firmware_raw, m.configuration_id, _utc(item.received_at))
                for sid, (item, m) in sorted(last.items())]
        await self.conn.execute(STATUS_SQL, *zip(*rows, strict=True))
        self.out.statuses += len(items)
        wanted = {(sid, m.configuration_id) for sid, (_, m) in last.items()
                  if m.configuration_id}
        if not wanted:
            return
        pending = await self.conn.fetch(PENDING_SQL, sorted({c for _, c in wanted}))
        for row in pending:
            if (row["sensor_id"], row["id"]) in wanted:
                await self.conn.execute(SUPERSEDE_APPLIED_SQL, row["sensor_id"])
                await self.conn.execute(APPLY_SQL, row["id"])
                self.out.configs_applied += 1

    # -- hives ---------------------------------------------------------------------------

    async def _hives(self) -> None:
        by_hive: dict[int, list[Piece]] = defaultdict(list)
        for piece in self.pieces:
            by_hive[piece.hive_id].append(piece)
        rows = await self.conn.fetch(LOCK_HIVES_SQL, sorted(by_hive))
        now, clock = self.now, self.settings.reset_at
        # updated_at: the database clock once the hive rows are locked, so a later commit
        # of a hive always carries a later time (the cache manager keeps the newest)
        stamp = max(r["locked_at"] for r in rows)
        updates, samples = [], []
        for row in sorted(rows, key=lambda r: r["hive_id"]):
            hive_id = row["hive_id"]
            tz = zone(row["timezone"])
            start = day_start(now, tz, clock)
            day_in, day_out, correction = row["day_in"], row["day_out"], row["correction"]
            if row["day_start"] is None or row["day_start"] < start:
                if row["day_start"] is not None and (day_in or day_out):
                    self.out.resets += 1
                day_in = day_out = correction = 0
            net_before = day_in - day_out
            total_in, total_out = row["total_in"], row["total_out"]
            delta_in = delta_out = 0
            for piece in by_hive[hive_id]:
                delta_in += piece.delta_in
                delta_out += piece.delta_out
                if min(piece.at, now) >= start:
                    day_in += piece.delta_in
                    day_out += piece.delta_out
            day_delta = (day_in - day_out) - net_before
            raw, clamped = clamp_occupancy(net_before, day_delta)
            clamp = int(clamped and day_delta < 0)
            self.out.clamps += clamp
            total_in += delta_in
            total_out += delta_out
            occupancy = max(raw + correction, 0)  # the day's correction (analytics)
            updates.append((hive_id, occupancy, total_in, total_out, start, day_in, day_out,
                            clamp, correction))
            samples.append(Sample(hive_id, tz, max(net_before, 0), raw, stamp))
            self.out.hives.append(HiveState(hive_id, occupancy, total_in, total_out,
                                            delta_in, delta_out, stamp.timestamp()))
        await self.conn.execute(UPDATE_HIVES_SQL, *zip(*updates, strict=True), stamp)
        await write_rollups(self.conn, self.pieces, samples)


async def store_batch(conn: asyncpg.Connection, items: Sequence[Incoming],
                      settings: StoreSettings, now: datetime | None = None) -> Outcome:
    """Store one batch; the caller holds the transaction and commits."""
    return await Batch(conn, settings, now or datetime.now(UTC)).run(items)


def reject_everything(items: Iterable[Incoming], reason: str, detail: str) -> list[Incoming]:
    """Mark messages as rejects (a message the database refused even alone)."""
    out = []
    for item in items:
        item.reason, item.detail, item.message = reason, detail[:1000], None
        out.append(item)
    return out


# --- daily reset sweep ------------------------------------------------------------------

SWEEP_SELECT_SQL = """
SELECT o.hive_id, o.day_start, h.timezone FROM hive_occupancy o JOIN hive h ON h.id = o.hive_id
"""

SWEEP_UPDATE_SQL = """
UPDATE hive_occupancy o
SET day_start = u.b, day_in = 0, day_out = 0, occupancy = 0, correction = 0,
    updated_at = clock_timestamp()
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(h, b)
WHERE o.hive_id = u.h AND (o.day_start IS NULL OR o.day_start < u.b)
RETURNING o.hive_id, o.occupancy, o.total_in, o.total_out, o.updated_at
"""


async def sweep_resets(conn: asyncpg.Connection, clock: time,
                       now: datetime | None = None) -> list[HiveState]:
    """Move every hive whose day is over to the current boundary (occupancy 0)."""
    now = now or datetime.now(UTC)
    due = []
    for row in await conn.fetch(SWEEP_SELECT_SQL):
        start = day_start(now, zone(row["timezone"]), clock)
        if row["day_start"] is None or row["day_start"] < start:
            due.append((row["hive_id"], start))
    if not due:
        return []
    due.sort()
    rows = await conn.fetch(SWEEP_UPDATE_SQL, [h for h, _ in due], [b for _, b in due])
    return [HiveState(r["hive_id"], r["occupancy"], r["total_in"], r["total_out"], 0, 0,
                      r["updated_at"].timestamp()) for r in rows]
