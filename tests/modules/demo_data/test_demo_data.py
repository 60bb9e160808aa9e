"""`bizzyd demo-data` on a real Postgres: a small city, checked against its own reports.

The history is checked with independent code: the occupancy timeline and the hourly
rollup are recomputed here from the stored `sensor_report` rows, and every sensor's
ingest state is compared with what `modules.mqtt_ingest.counting` replays from them.
Two anchors are used, each containing a daylight-saving change in Europe/Berlin (clocks
back on 2024-10-27, forward on 2024-03-31).  Performance is not tested here: run
`bizzyd demo-data --hives 2000` by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import secrets
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from modules.demo_data import module
from modules.demo_data.generate import DEMO_TABLES, main
from modules.mqtt_ingest.codec import CounterReport, Event, EventType, ReportType
from modules.mqtt_ingest.counting import (
    DEFAULT_PARAMS,
    CounterTally,
    EventTally,
    apply_report,
    event_sequence,
    replay_events,
    replay_reports,
    report_key,
    step,
)

pytestmark = pytest.mark.services

HIVES = 30
ANCHORS = {
    "clocks-back": datetime(2024, 10, 28, tzinfo=UTC),
    "clocks-forward": datetime(2024, 4, 1, 6, tzinfo=UTC),
}
RESET_AT = time(4)


def run(dsn: str, *args: str) -> int:
    return main(["--dsn", dsn, *args], {"database": {"dsn": "postgresql://unused@127.0.0.1:1/x"}})


def query(dsn: str, sql: str, *params: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *params)
        finally:
            await conn.close()

    return asyncio.run(go())


def value(dsn: str, sql: str, *params: Any) -> Any:
    return query(dsn, sql, *params)[0][0]


def table_digests(dsn: str) -> dict[str, str]:
    """SHA-256 of each demo table's COPY text output, rows in a canonical order."""

    async def go() -> dict[str, str]:
        conn = await asyncpg.connect(dsn)
        try:
            digests = {}
            for table in DEMO_TABLES:
                buf = io.BytesIO()
                await conn.copy_from_query(f"SELECT * FROM {table} t ORDER BY t::text", output=buf)
                digests[table] = hashlib.sha256(buf.getvalue()).hexdigest()
            return digests
        finally:
            await conn.close()

    return asyncio.run(go())


class Loaded:
    """A database the demo filled, with what the checks need read once."""

    def __init__(self, dsn: str, anchor: datetime, output: str) -> None:
        self.dsn, self.anchor, self.output = dsn, anchor, output
        self.start = anchor - timedelta(days=7)
        self.hives = {r["id"]: r for r in query(dsn, "SELECT * FROM hive ORDER BY id")}
        self.reports = query(
            dsn,
            "SELECT r.*, s.firmware FROM sensor_report r JOIN sensor s ON s.id = r.sensor_id "
            "ORDER BY r.id",
        )
        self.by_sensor: dict[int, list[asyncpg.Record]] = defaultdict(list)
        self.by_hive: dict[int, list[asyncpg.Record]] = defaultdict(list)
        for row in self.reports:
            self.by_sensor[row["sensor_id"]].append(row)
            self.by_hive[row["hive_id"]].append(row)

    def timeline(self, hive_id: int) -> list[tuple[datetime, int, int, int]]:
        """(second, entries, exits, occupancy after it), in time order."""
        seconds: dict[datetime, list[int]] = {}
        for row in sorted(self.by_hive[hive_id], key=lambda r: r["reported_at"]):
            step_ = seconds.setdefault(row["reported_at"], [0, 0])
            step_[0] += row["delta_in"]
            step_[1] += row["delta_out"]
        occupancy, out = 0, []
        for moment, (entries, exits) in seconds.items():
            occupancy += entries - exits
            out.append((moment, entries, exits, occupancy))
        return out


@pytest.fixture(scope="module", params=sorted(ANCHORS))
def loaded(request: pytest.FixtureRequest, databases: Any) -> Loaded:
    anchor = ANCHORS[request.param]
    dsn = databases.new()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = run(dsn, "--hives", str(HIVES), "--seed", "1", "--now", anchor.isoformat())
    assert status == 0, buf.getvalue()
    return Loaded(dsn, anchor, buf.getvalue())


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def test_module_provides_the_command() -> None:
    assert module.name == "demo_data"
    assert module.commands["demo-data"] is main


def test_progress_and_summary(loaded: Loaded) -> None:
    out = loaded.output
    for stage in ("city:", "sensors:", "users:", "partitions:", "history:", "state:", "done in"):
        assert stage in out, out
    assert "reports/s" in out
    for table in DEMO_TABLES:  # the row counts per table at the end
        assert f"  {table} " in out, table
    line = next(x for x in out.splitlines() if x.strip().startswith("sensor_report "))
    assert line.split()[-1] == f"{len(loaded.reports):,}"


@pytest.mark.parametrize(
    "args",
    [
        ("--days", "0"),
        ("--hives", "x"),
        ("--force", "--if-empty"),
        ("--days", "9999"),
        ("--now", "yesterday"),
        ("--reset-at", "25"),
    ],
)
def test_usage_errors(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("postgresql://unused@127.0.0.1:1/x", *args) == 2
    assert "bizzyd: demo-data:" in capsys.readouterr().err


def test_unreachable_database_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("postgresql://postgres@127.0.0.1:1/none", "--hives", "1") == 1
    assert "bizzyd: demo-data:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Determinism, refusal, --if-empty, --force
# ---------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs_and_force_reloads(
    loaded: Loaded, databases: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = table_digests(loaded.dsn)
    args = ("--hives", str(HIVES), "--now", loaded.anchor.isoformat())
    again = databases.new()
    assert run(again, *args, "--seed", "1") == 0
    assert table_digests(again) == expected

    hives = value(again, "SELECT count(*) FROM hive")
    assert run(again, *args, "--seed", "1") == 1  # refuses: there are hives
    assert "--force" in capsys.readouterr().err
    assert value(again, "SELECT count(*) FROM hive") == hives

    capsys.readouterr()
    assert run(again, *args, "--seed", "1", "--if-empty") == 0  # quietly does nothing
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert table_digests(again) == expected

    assert run(again, *args, "--seed", "2", "--force") == 0  # empties, loads another city
    other = table_digests(again)
    assert other["hive"] != expected["hive"]
    assert other["sensor_report"] != expected["sensor_report"]
    assert run(again, *args, "--seed", "1", "--force") == 0  # and back: identical again
    assert table_digests(again) == expected


def test_without_superuser_rows_are_checked_one_by_one_with_the_same_result(
    databases: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fallback (triggers and foreign keys row by row) loads the very same bytes."""
    args = ("--hives", "4", "--seed", "3", "--now", "2024-05-06")
    reference = databases.new()
    assert run(reference, *args) == 0
    role = f"demo_{secrets.token_hex(4)}"
    admin = databases.server_dsn
    query(admin, f"CREATE ROLE {role} LOGIN NOSUPERUSER")
    try:
        dsn = databases.new()
        parts = urlsplit(dsn)
        query(admin, f'ALTER DATABASE "{parts.path.lstrip("/")}" OWNER TO {role}')
        # PostGIS is not a trusted extension: a superuser creates it (docs/operations.md)
        query(dsn, "CREATE EXTENSION IF NOT EXISTS postgis")
        capsys.readouterr()
        as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        assert run(as_role, *args) == 0
        assert "not a superuser" in capsys.readouterr().out
        assert table_digests(dsn) == table_digests(reference)
    finally:
        databases.drop_all_of(role)
        query(admin, f"DROP ROLE IF EXISTS {role}")


def test_if_empty_loads_an_empty_database(databases: Any) -> None:
    dsn = databases.new()
    assert run(dsn, "--hives", "3", "--if-empty", "--now", "2024-05-06") == 0
    assert value(dsn, "SELECT count(*) FROM hive") == 3


def test_no_migrate_on_an_empty_database_fails(
    databases: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(databases.new(), "--hives", "3", "--no-migrate") == 1
    assert "migrate" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# The city
# ---------------------------------------------------------------------------------------


def test_referential_sanity(loaded: Loaded) -> None:
    dsn = loaded.dsn
    assert len(loaded.hives) == HIVES
    assert value(dsn, "SELECT count(*) FROM app_user") == 5 * HIVES
    checks = [
        (
            "a hive without its own address",
            "SELECT count(*) FROM hive h LEFT JOIN address a ON a.id = h.address_id "
            "WHERE a.id IS NULL",
        ),
        (
            "a report of another hive than its sensor's",
            "SELECT count(*) FROM sensor_report r JOIN sensor s ON s.id = r.sensor_id "
            "WHERE r.hive_id IS DISTINCT FROM s.hive_id",
        ),
        (
            "a v1 sensor not named by its modem's IMEI",
            "SELECT count(*) FROM sensor s JOIN modem m ON m.id = s.modem_id "
            "WHERE s.firmware = 'v1' AND s.external_id <> m.imei",
        ),
        (
            "a report before its sensor was installed",
            "SELECT count(*) FROM sensor_report r JOIN sensor s ON s.id = r.sensor_id "
            "WHERE r.reported_at < s.installed_at",
        ),
        (
            "a report received before it happened, or after the anchor",
            "SELECT count(*) FROM sensor_report "
            "WHERE received_at < reported_at OR received_at >= $1",
        ),
        (
            "a status naming a configuration not applied to that sensor",
            "SELECT count(*) FROM sensor_status st LEFT JOIN sensor_config c "
            "ON c.id = st.configuration_id AND c.sensor_id = st.sensor_id "
            "AND c.state = 'applied' WHERE c.id IS NULL",
        ),
        (
            "a user without a subscription",
            "SELECT count(*) FROM app_user u WHERE NOT EXISTS "
            "(SELECT 1 FROM subscription s WHERE s.user_id = u.id)",
        ),
        (
            "an account without an admin",
            "SELECT count(*) FROM account a WHERE NOT EXISTS (SELECT 1 FROM account_member m "
            "WHERE m.account_id = a.id AND m.member_role = 'admin')",
        ),
        (
            "a favourite or recent draft hive",
            "SELECT count(*) FROM user_hive uh JOIN hive h ON h.id = uh.hive_id "
            "JOIN hive_status s ON s.id = h.status_id WHERE NOT s.listed",
        ),
        (
            "a hive with sensors but no occupancy row",
            "SELECT count(DISTINCT s.hive_id) FROM sensor s LEFT JOIN hive_occupancy o "
            "ON o.hive_id = s.hive_id WHERE s.hive_id IS NOT NULL AND o.hive_id IS NULL",
        ),
        (
            "a sensor with reports but no ingest state",
            "SELECT count(DISTINCT r.sensor_id) FROM sensor_report r LEFT JOIN "
            "sensor_ingest_state i ON i.sensor_id = r.sensor_id WHERE i.sensor_id IS NULL",
        ),
        ("a report outside the monthly partitions", "SELECT count(*) FROM sensor_report_default"),
        (
            "a timestamp after the anchor (deals and subscriptions may lie ahead)",
            "SELECT (SELECT count(*) FROM hive WHERE updated_at > $1) "
            "+ (SELECT count(*) FROM app_user WHERE updated_at > $1) "
            "+ (SELECT count(*) FROM sensor_ingest_state WHERE updated_at > $1) "
            "+ (SELECT count(*) FROM hive_occupancy_hourly WHERE updated_at > $1)",
        ),
    ]
    for what, sql in checks:
        params = (loaded.anchor,) if "$1" in sql else ()
        assert value(dsn, sql, *params) == 0, what
    firmware = {
        r["firmware"]: r["n"]
        for r in query(
            dsn, "SELECT firmware, count(*) AS n FROM sensor WHERE hive_id IS NOT NULL GROUP BY 1"
        )
    }
    assert firmware.get("v1", 0) > 0 and firmware.get("v2", 0) > 0, firmware
    assert value(dsn, "SELECT count(*) FROM sensor WHERE hive_id IS NULL") > 0  # in stock
    assert value(dsn, "SELECT count(*) FROM sensor WHERE modem_id IS NOT NULL") > 0


def test_places_and_time_zones(loaded: Loaded) -> None:
    rows = query(
        loaded.dsn, "SELECT h.timezone, a.* FROM hive h JOIN address a ON a.id = h.address_id"
    )
    berlin = [r for r in rows if r["timezone"] == "Europe/Berlin"]
    assert len(berlin) >= 0.8 * len(rows)
    for r in berlin:
        assert r["city"] == "Berlin" and r["country"] == "DE"
        assert 52.44 <= r["latitude"] <= 52.58 and 13.25 <= r["longitude"] <= 13.55
        assert r["zip"].isdigit() and len(r["zip"]) == 5
    assert all(r["latitude"] is not None for r in rows)
    assert value(loaded.dsn, "SELECT count(*) FROM hive_image WHERE kind = 'cover'") == HIVES
    uids = [r["firebase_uid"] for r in query(loaded.dsn, "SELECT firebase_uid FROM app_user")]
    assert all(len(u) == 28 and u.isalnum() for u in uids)


def test_deals_expiring_soon(loaded: Loaded) -> None:
    soon = value(
        loaded.dsn,
        "SELECT count(*) FROM deal d JOIN hive h ON h.id = d.hive_id "
        "JOIN hive_status s ON s.id = h.status_id "
        "WHERE s.code = 'active' AND d.valid_from <= $1 "
        "AND d.valid_until > $1 AND d.valid_until <= $1::timestamptz + interval '48 hours'",
        loaded.anchor,
    )
    assert soon >= 1
    later = "SELECT count(*) FROM deal WHERE valid_until > $1::timestamptz + interval '48 hours'"
    assert value(loaded.dsn, later, loaded.anchor) >= 1


# ---------------------------------------------------------------------------------------
# The history
# ---------------------------------------------------------------------------------------


def test_occupancy_is_never_negative_nor_far_above_capacity(loaded: Loaded) -> None:
    busy = 0
    for hive_id, hive in loaded.hives.items():
        timeline = loaded.timeline(hive_id)
        if not timeline:
            continue
        occupancies = [occ for *_, occ in timeline]
        assert min(occupancies) >= 0, hive_id
        assert max(occupancies) <= hive["capacity"] * 1.2, hive_id
        busy += max(occupancies) >= hive["capacity"] * 0.3
    assert busy >= HIVES // 3  # the curves do fill venues


def test_hives_empty_out_every_day(loaded: Loaded) -> None:
    """Every hive is empty at some moment of every day (closing time), and open hives fill."""
    for hive_id in loaded.hives:
        timeline = loaded.timeline(hive_id)
        if not timeline:
            continue
        for day in range(7):
            start = loaded.start + timedelta(days=day)
            before = [occ for t, *_, occ in timeline if t < start]
            inside = [occ for t, *_, occ in timeline if start <= t < start + timedelta(days=1)]
            assert min([before[-1] if before else 0, *inside]) == 0, (hive_id, day)


def test_v1_reports_every_five_events_or_thirty_minutes(loaded: Loaded) -> None:
    seen_types = False
    for rows in loaded.by_sensor.values():
        if rows[0]["firmware"] != "v1":
            continue
        rows = sorted(rows, key=lambda r: r["reported_at"])
        types = {r["report_type"] for r in rows}
        seen_types = seen_types or {0x20, 0xFF} <= types
        zone = ZoneInfo(loaded.hives[rows[0]["hive_id"]]["timezone"])
        for a, b in zip(rows, rows[1:], strict=False):
            gap = b["reported_at"] - a["reported_at"]
            if (
                a["reported_at"].astimezone(zone).utcoffset()
                > b["reported_at"].astimezone(zone).utcoffset()
            ):  # clocks went back: reports of the repeated hour are dropped
                assert gap <= timedelta(hours=2)
            else:
                assert gap <= timedelta(minutes=30)
        for r in rows:
            zone = ZoneInfo(loaded.hives[r["hive_id"]]["timezone"])
            local = r["sensor_local_time"].replace(tzinfo=zone, fold=0)
            assert local.astimezone(UTC) == r["reported_at"]  # what ingest derives
    assert seen_types


def test_hourly_rollup_equals_the_reports(loaded: Loaded) -> None:
    stored = {
        (r["hive_id"], r["hour"]): r
        for r in query(loaded.dsn, "SELECT * FROM hive_occupancy_hourly")
    }
    expected: dict[tuple[int, datetime], tuple[int, int, int, float]] = {}
    for hive_id in loaded.hives:
        timeline = loaded.timeline(hive_id)
        occupancy, i = 0, 0
        for h in range(7 * 24):
            hour = loaded.start + timedelta(hours=h)
            end = hour + timedelta(hours=1)
            entries = exits = 0
            peak, area, cursor = occupancy, 0.0, hour
            while i < len(timeline) and timeline[i][0] < end:
                moment, step_in, step_out, after = timeline[i]
                area += occupancy * (moment - cursor).total_seconds()
                cursor, occupancy = moment, after
                entries, exits, peak = entries + step_in, exits + step_out, max(peak, after)
                i += 1
            area += occupancy * (end - cursor).total_seconds()
            if entries or exits or peak:
                expected[(hive_id, hour)] = (entries, exits, peak, area / 3600)
    assert stored.keys() == expected.keys()
    for key, (entries, exits, peak, average) in expected.items():
        row = stored[key]
        assert (row["entries"], row["exits"], row["peak_occupancy"]) == (entries, exits, peak)
        assert row["avg_occupancy"] == pytest.approx(average, rel=1e-6, abs=1e-4)
    # and the plain sums straight from SQL
    sums = query(
        loaded.dsn,
        "SELECT hive_id, date_trunc('hour', reported_at, 'UTC') AS hour, sum(delta_in) AS i, "
        "sum(delta_out) AS o FROM sensor_report GROUP BY 1, 2 HAVING sum(delta_in + delta_out) > 0",
    )
    for r in sums:
        row = stored[(r["hive_id"], r["hour"])]
        assert (row["entries"], row["exits"]) == (r["i"], r["o"])
    # the 5-minute and daily levels (migration 0009) hold the same people and the same
    # occupant-seconds per hive; the hourly rows carry the curve columns
    for table in ("hive_occupancy_5m", "hive_occupancy_daily"):
        levels = query(loaded.dsn, "SELECT a.hive_id, a.e, a.x, a.area, b.e AS he, "
                       "b.x AS hx, b.area AS harea FROM "
                       f"(SELECT hive_id, sum(entries) e, sum(exits) x, sum(area) area "
                       f" FROM {table} GROUP BY 1) a FULL JOIN "
                       "(SELECT hive_id, sum(entries) e, sum(exits) x, sum(area) area "
                       " FROM hive_occupancy_hourly GROUP BY 1) b USING (hive_id)")
        assert levels
        for r in levels:
            assert (r["e"], r["x"]) == (r["he"], r["hx"]), (table, r)
            assert r["area"] == pytest.approx(r["harea"], rel=1e-9), (table, r)
    assert all(row["area"] == pytest.approx(row["avg_occupancy"] * 3600, rel=1e-5, abs=0.5)
               for row in stored.values())


def _v1(row: asyncpg.Record) -> CounterReport:
    return CounterReport(
        row["total_in"], row["total_out"], row["sensor_local_time"], ReportType(row["report_type"])
    )


def _v2(row: asyncpg.Record) -> Event:
    return Event(
        EventType(row["event_type"]), row["distance_mm"], row["counter"], row["reported_at"]
    )


def test_report_deltas_follow_the_counting_contract(loaded: Loaded) -> None:
    outcomes: set[str] = set()
    for rows in loaded.by_sensor.values():
        if rows[0]["firmware"] == "v1":
            previous = None
            for row in sorted(rows, key=lambda r: report_key(_v1(r))):
                report = _v1(row)
                effect = step(previous, report, DEFAULT_PARAMS)
                outcome = (
                    "restart" if report.is_restart else "anomaly" if effect.anomalies else "applied"
                )
                assert (row["delta_in"], row["delta_out"], row["outcome"]) == (
                    effect.delta_in,
                    effect.delta_out,
                    outcome,
                )
                outcomes.add(outcome)
                previous = report
        else:
            for row in rows:
                kind = row["event_type"]
                assert (row["delta_in"], row["delta_out"]) == (int(kind == 1), int(kind == 0))
                assert row["outcome"] == "applied"
    assert "applied" in outcomes


def test_ingest_state_equals_the_replay_of_the_reports(loaded: Loaded) -> None:
    states = {r["sensor_id"]: r for r in query(loaded.dsn, "SELECT * FROM sensor_ingest_state")}
    assert states.keys() == loaded.by_sensor.keys()
    tallies = "v1_tally" in next(iter(states.values()))
    for sensor_id, rows in loaded.by_sensor.items():
        state = states[sensor_id]
        zone = ZoneInfo(loaded.hives[rows[0]["hive_id"]]["timezone"])
        if rows[0]["firmware"] == "v1":
            reports = [_v1(r) for r in rows]
            tally = replay_reports(reports)
            assert tally.last is not None
            assert (state["last_total_in"], state["last_total_out"]) == (
                tally.last.total_in,
                tally.last.total_out,
            )
            last_utc = tally.last.sensor_time.replace(tzinfo=zone, fold=0).astimezone(UTC)
            assert state["last_sensor_time"] == last_utc
            assert state["anomalies"] == tally.anomalies
            assert state["restarts"] == sum(r.is_restart for r in reports)
            assert state["last_counter"] is None and state["lost_events"] == 0
            if tallies:
                assert json.loads(state["v1_tally"]) == tally.to_dict()
                assert state["v2_tally"] is None
                _continues(CounterTally.from_dict(json.loads(state["v1_tally"])), tally)
        else:
            events = [_v2(r) for r in rows]
            tally = replay_events(events)
            assert state["last_counter"] == event_sequence(events)[-1].counter
            assert state["last_event_at"] == tally.last_timestamp
            assert state["lost_events"] == tally.lost
            assert state["last_total_in"] is None
            if tallies:
                assert json.loads(state["v2_tally"]) == tally.to_dict()
                assert EventTally.from_dict(json.loads(state["v2_tally"])) == tally
    kinds = {rows[0]["firmware"] for rows in loaded.by_sensor.values()}
    assert kinds == {"v1", "v2"}


def _continues(stored: CounterTally, replayed: CounterTally) -> None:
    """Ingest can go on from the stored tally: a repeat is a duplicate, the next counts."""
    assert stored == replayed and stored.last is not None
    _, effect = apply_report(stored, stored.last)
    assert effect.duplicate
    later = CounterReport(
        (stored.last.total_in + 3) % 65536,
        stored.last.total_out,
        stored.last.sensor_time + timedelta(minutes=5),
        ReportType.COUNT,
    )
    _, effect = apply_report(stored, later)
    assert (effect.delta_in, effect.delta_out) == (3, 0)


def test_current_occupancy_equals_the_reports(loaded: Loaded) -> None:
    rows = query(loaded.dsn, "SELECT * FROM hive_occupancy")
    assert rows
    day = "day_start" in rows[0]
    for row in rows:
        hive_id = row["hive_id"]
        reports = loaded.by_hive[hive_id]
        assert row["total_in"] == sum(r["delta_in"] for r in reports)
        assert row["total_out"] == sum(r["delta_out"] for r in reports)
        if not day:
            assert row["occupancy"] == row["total_in"] - row["total_out"]
            continue
        zone = ZoneInfo(loaded.hives[hive_id]["timezone"])
        assert row["day_start"] == _day_start(loaded.anchor, zone)
        today = [r for r in reports if r["reported_at"] >= row["day_start"]]
        assert row["day_in"] == sum(r["delta_in"] for r in today)
        assert row["day_out"] == sum(r["delta_out"] for r in today)
        assert row["occupancy"] == max(row["day_in"] - row["day_out"], 0)


def _day_start(moment: datetime, zone: ZoneInfo) -> datetime:
    """The last reset boundary at or before `moment` (mqtt_ingest.day.day_start if present)."""
    try:
        from modules.mqtt_ingest.day import day_start
    except ImportError:
        local = moment.astimezone(zone)
        for days in (0, 1, 2):
            day = local.date() - timedelta(days=days)
            boundary = datetime.combine(day, RESET_AT, tzinfo=zone).astimezone(UTC)
            if boundary <= moment:
                return boundary
        raise AssertionError("no boundary") from None
    return day_start(moment, zone, RESET_AT)


def test_v2_counters_have_gaps_only_from_lost_status_events(loaded: Loaded) -> None:
    for rows in loaded.by_sensor.values():
        if rows[0]["firmware"] != "v2":
            continue
        sequence = event_sequence(_v2(r) for r in rows)
        for a, b in zip(sequence, sequence[1:], strict=False):
            gap = (b.counter - a.counter - 1) % 256
            # only status events (one per sensor every 6 h) get lost
            assert gap <= 1 + (b.timestamp - a.timestamp) // timedelta(hours=6), (a, b)
