"""`bizzyd demo-data`: fill the database with a plausible city and a week of sensor history.

Theory of operation
-------------------
1. Migrate (unless `--no-migrate`), then, in ONE transaction holding an advisory lock:
   refuse if the database already has hives (`--force` truncates the demo tables first,
   `--if-empty` exits 0 quietly instead), build the city (`city.build_city`) and COPY it
   table by table, create the `sensor_report` partitions of the history's months, then
   stream the history (`history.simulate_hive`, hive by hive) into `sensor_report` as
   binary COPY data while the next hives are simulated in a worker thread, and finally
   COPY the per-sensor ingest state, the current occupancy and the hourly rollup that
   the simulation derived from exactly the rows it wrote.  Columns that migration 0004
   adds (`sensor_ingest_state.v1_tally/v2_tally`, `hive_occupancy.day_*`/`clamps`) are
   filled when the schema has them; the occupancy is then the day's net, floored at 0.
   Nothing is visible until the commit, and a failure leaves the database as it was.
2. Determinism: every value comes from `random.Random` streams seeded with `--seed`,
   every id is explicit (1, 2, ... per table; identity sequences are moved past them
   afterwards), and every timestamp is relative to the anchor: `--now` truncated to the
   whole UTC hour, by default today 00:00 UTC.  So the same seed and the same anchor
   give byte-identical tables, and reruns on the same day are identical.  The history
   covers the `--days` days before the anchor.
3. Speed: rows go in with COPY only.  As superuser, the load runs with
   `session_replication_role = replica`, which skips per-row triggers the way
   pg_restore --disable-triggers does: the foreign-key triggers, and the hive time zone
   trigger, whose `is_iana_timezone()` reads pg_timezone_names (~50 ms) for every hive.
   Before the commit, `_check_integrity` checks every foreign key of the demo tables and
   the distinct hive time zones, set-based.  CHECK constraints and unique indexes apply
   as always.  It is used only when the demo tables have no insert trigger other than
   that one (`KNOWN_INSERT_TRIGGERS`); otherwise, or without superuser, rows are checked
   one by one, which is correct but slow (minutes for 2,000 hives).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as Clock
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from modules.database.migrate import MigrationError, up

from . import history, rollups
from .business_user import DEMO_EMAIL, DEMO_PASSWORD, ensure_business_user
from .city import TABLE_COLUMNS, City, Reference, build_city, months_between
from .history import HiveHistory, HivePlan, Window

__all__ = ["DEMO_TABLES", "DemoError", "Options", "Summary", "generate", "main", "parse_args"]

# Every table the demo fills, parents first; `--force` empties exactly these.
HISTORY_TABLES = ("sensor_report", "sensor_ingest_state", "hive_occupancy", "hive_occupancy_hourly",
                  "hive_occupancy_daily", "hive_occupancy_5m")
DEMO_TABLES = (*TABLE_COLUMNS, *HISTORY_TABLES)
# not filled by the demo, but their rows hang off its users and accounts: emptied with them
LINKED_TABLES = ("user_device", "account_audit", "hive_usage_hourly", "sensor_door_daily",
                 "hive_correction", "hive_capacity_schedule", "hive_occupancy_profile",
                 "hive_occupancy_forecast", "hive_insights", "insights_run",
                 "notifier_event", "user_inbox", "user_inbox_delivery")

INGEST_STATE_COLUMNS = (
    "sensor_id",
    "last_total_in",
    "last_total_out",
    "last_sensor_time",
    "baseline_in",
    "baseline_out",
    "baseline_at",
    "restarts",
    "last_counter",
    "last_event_at",
    "lost_events",
    "anomalies",
    "last_anomaly_at",
    "last_anomaly",
    "stale_reports",
    "duplicates",
    "updated_at",
)
OCCUPANCY_COLUMNS = ("hive_id", "occupancy", "total_in", "total_out", "updated_at")
LOCK_KEY = int.from_bytes(hashlib.sha256(b"bizzyd.demo-data").digest()[:8], "big", signed=True)
CHUNK = 20  # hives simulated per step of the history stream
MAX_DAYS = 28  # simulated (sensor reports); longer histories are rollups before that
RAW_DAYS = 7  # the simulated days of a longer history
MAX_ROLLUP_DAYS = 3660

HIVE_TYPE_NAMES = {
    "bar": "Bar",
    "restaurant": "Restaurant",
    "cafe": "Cafe",
    "club": "Club",
    "store": "Store",
    "gym": "Gym",
    "other": "Other",
}
HIVE_STATUS_ROWS = (
    ("draft", "Draft", False),
    ("active", "Active", True),
    ("temporarily_closed", "Temporarily closed", True),
    ("closed", "Closed", False),
)
PLAN_ROWS = (
    ("free", "Free", "user", 0, "none"),
    ("basic", "Basic", "user", 299, "month"),
    ("premium", "Premium", "user", 599, "month"),
    ("business", "Business", "account", 2900, "month"),
)


class DemoError(Exception):
    """The demo cannot run; the message says why (printed as `bizzyd: demo-data: ...`)."""


@dataclass(frozen=True)
class Options:
    dsn: str
    hives: int = 200
    users: int | None = None  # default: 5 per hive
    seed: int = 1
    now: datetime | None = None  # default: today 00:00 UTC
    days: int = 7
    force: bool = False
    if_empty: bool = False
    migrate: bool = True
    reset_at: Clock = Clock(4)  # daily occupancy reset, hive-local (mqtt/occupancy.reset_at)
    business_user: bool = False  # also the dashboard's demo user (business_user.py)

    @property
    def anchor(self) -> datetime:
        """--now truncated to the whole UTC hour (default: today 00:00 UTC)."""
        now = self.now or datetime.now(UTC).replace(hour=0)
        return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)

    @property
    def user_count(self) -> int:
        return self.users if self.users is not None else 5 * self.hives


@dataclass
class Summary:
    """What a run did: rows per table, timing, and what the history looked like."""

    anchor: datetime
    window: Window
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    history_seconds: float = 0.0
    visitors: int = 0
    turned_away: int = 0
    skipped: bool = False  # --if-empty and the database had hives


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not an ISO date or date-time") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bizzyd demo-data",
        description="Fill the database with a demo city: accounts, hives, sensors, users, "
        "deals and a week of sensor history (reports, ingest state, occupancy, hourly "
        "rollup). Deterministic: the same --seed and anchor give identical data.",
        epilog="The anchor is --now truncated to the whole UTC hour; by default today "
        "00:00 UTC, so reruns on the same day give identical data. The history covers "
        "the --days days before the anchor. Exit status: 0 on success (and with "
        "--if-empty when there are hives already), 1 on error, 2 on bad usage.",
    )
    parser.add_argument("--hives", type=_positive, default=200, help="number of hives (200)")
    parser.add_argument(
        "--users", type=int, default=None, help="number of app users (default: 5 per hive)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--now",
        type=_moment,
        default=None,
        metavar="ISO",
        help="anchor: end of the history, e.g. 2024-03-15 or 2024-03-15T12:00Z "
        "(naive means UTC; default: today 00:00 UTC)",
    )
    parser.add_argument(
        "--days",
        type=_positive,
        default=7,
        help=f"days of history before the anchor (7): up to {MAX_DAYS} simulated as sensor "
        f"reports; more (at most {MAX_ROLLUP_DAYS}) are the last {RAW_DAYS} simulated and "
        "hourly and daily rollups written directly before them",
    )
    parser.add_argument(
        "--dsn", default=None, help="PostgreSQL DSN (default: database.dsn of the configuration)"
    )
    parser.add_argument(
        "--force", action="store_true", help="empty the demo tables first if the database has data"
    )
    parser.add_argument(
        "--if-empty",
        action="store_true",
        help="do nothing (exit 0, no output but applied migrations) if the database has hives",
    )
    parser.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="do not apply pending migrations first",
    )
    parser.add_argument(
        "--reset-at",
        type=_clock,
        default=None,
        metavar="HH:MM",
        help="daily occupancy reset, hive-local (default: occupancy.reset_at "
        "or mqtt.reset_at of the configuration, else 04:00)",
    )
    parser.add_argument(
        "--business-user",
        action="store_true",
        help="also make the dashboard's demo business user (admin of a small account; in "
        "the Firebase Auth emulator too when firebase.emulator is set), also when "
        "--if-empty finds data; see docs/dashboard.md",
    )
    return parser


def _clock(text: str) -> Clock:
    try:
        hours, minutes = text.split(":")
        return Clock(int(hours), int(minutes))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not a time of day HH:MM") from exc


def _configured_reset(config: Any) -> Clock:
    """occupancy.reset_at, else mqtt.reset_at, when the config has them; else 04:00."""
    for block in ("occupancy", "mqtt"):
        value = (config.get(block) or {}).get("reset_at") if hasattr(config, "get") else None
        if isinstance(value, Clock):
            return value
        if isinstance(value, str):
            return _clock(value)
    return Clock(4)


def parse_args(argv: Sequence[str], default_dsn: str, default_reset: Clock = Clock(4)) -> Options:
    """Options from the words after `demo-data`; raises _UsageError or SystemExit."""
    args = _build_parser().parse_args(list(argv))
    if args.days > MAX_ROLLUP_DAYS:
        raise _UsageError(f"--days: at most {MAX_ROLLUP_DAYS}")
    if args.users is not None and args.users < 1:
        raise _UsageError("--users: must be at least 1")
    if args.force and args.if_empty:
        raise _UsageError("--force and --if-empty exclude each other")
    return Options(
        dsn=args.dsn or default_dsn,
        hives=args.hives,
        users=args.users,
        seed=args.seed,
        now=args.now,
        days=args.days,
        force=args.force,
        if_empty=args.if_empty,
        migrate=args.migrate,
        reset_at=args.reset_at or default_reset,
        business_user=args.business_user,
    )


def main(argv: list[str], config: Any) -> int:
    """`bizzyd demo-data ...`; the DSN comes from `database.dsn` unless --dsn is given."""
    try:
        options = parse_args(argv, config["database"]["dsn"], _configured_reset(config))
    except SystemExit as exc:  # --help
        return 0 if exc.code in (0, None) else 2
    except _UsageError as exc:
        print(f"bizzyd: demo-data: {exc} (see bizzyd demo-data --help)", file=sys.stderr)
        return 2
    try:
        asyncio.run(generate(options))
        if options.business_user:
            asyncio.run(_business_user(options.dsn, config))
    except DemoError as exc:
        print(f"bizzyd: demo-data: {exc}", file=sys.stderr)
        return 1
    except MigrationError as exc:
        print(f"bizzyd: demo-data: migrations: {exc}", file=sys.stderr)
        return 1
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"bizzyd: demo-data: database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"bizzyd: demo-data: cannot use the database: {exc}", file=sys.stderr)
        return 1
    return 0


async def _business_user(dsn: str, config: Any) -> None:
    firebase = (config.get("firebase") if hasattr(config, "get") else None) or {}
    emulator, project = firebase.get("emulator", ""), firebase.get("project_id", "demo-bizzy")
    made = await ensure_business_user(dsn, emulator, project)
    if made is None:
        raise DemoError("--business-user: no account has 2 to 4 active hives with sensors")
    where = "in the Firebase Auth emulator" if made.in_emulator else (
        "in the database only: no firebase.emulator in the config")
    print(f"demo business user {DEMO_EMAIL} / {DEMO_PASSWORD} ({where}): admin of account "
          f"{made.account_id}, hives {', '.join(map(str, made.hive_ids))}", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


class _Progress:
    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        self.report(f"[{time.monotonic() - self.started:6.1f}s] {line}")


def _shown_dsn(dsn: str) -> str:
    """The DSN without its password."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "(unparsable DSN)"
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


def _n(value: int) -> str:
    return f"{value:,}"


async def generate(options: Options, report: Callable[[str], None] | None = None) -> Summary:
    """Run the demo load described by `options`; progress goes to `report` (stdout)."""
    out = report or (lambda line: print(line, flush=True))
    anchor = options.anchor
    end = int(anchor.timestamp())
    raw_days = options.days if options.days <= MAX_DAYS else RAW_DAYS
    window = Window(end - raw_days * 86400, end)
    rollup_start = end - options.days * 86400
    summary = Summary(anchor, window)
    started = time.monotonic()
    progress = _Progress(out)
    if options.migrate:
        lines: list[str] = []
        applied = await up(options.dsn, report=lines.append)
        if applied:
            for line in lines:
                progress(f"migrate: {line}")
    conn = await asyncpg.connect(
        options.dsn, server_settings={"application_name": "bizzyd demo-data"}
    )
    try:
        await _check_schema(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            if not await _make_room(conn, options, progress):
                summary.skipped = True
                return summary
            out(
                f"demo-data: {_shown_dsn(options.dsn)}: {options.hives} hives, "
                f"{options.user_count} users, seed {options.seed}, history "
                f"{_iso(rollup_start)} .. {_iso(window.end)} ({options.days} days; reports "
                f"from {_iso(window.start)})"
            )
            await conn.execute("SET LOCAL synchronous_commit = off")
            fast = await _fast_load(conn, progress)
            ref = await _reference(conn)
            city = build_city(options.seed, options.hives, options.user_count, anchor, window, ref)
            await _load_city(conn, city, summary, progress)
            await _load_history(conn, city, window, options.reset_at, summary, progress,
                                rollup_start)
            await _derived_counters(conn, fast, progress)
            # statistics first: the checks below (and the app) need sane plans
            analyzed = time.monotonic()
            await conn.execute(f"ANALYZE {', '.join(DEMO_TABLES)}")
            progress(f"analyze: {time.monotonic() - analyzed:.1f} s")
            if fast:
                await conn.execute("SET LOCAL session_replication_role = origin")
                await _check_integrity(conn, progress)
            await _advance_sequences(conn)
            await _announce(conn)
    finally:
        await conn.close()
    summary.seconds = time.monotonic() - started
    _print_summary(summary, out)
    return summary


async def _announce(conn: asyncpg.Connection) -> None:
    """Tell the catalogue caches that everything changed (hive 0), at commit."""
    if await conn.fetchval("SELECT to_regclass('catalogue_version') IS NOT NULL"):
        await conn.execute("SELECT pg_notify('bizzyd_catalogue', "
                           "'0 ' || nextval('catalogue_version')::text)")


def _iso(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%MZ")


async def _check_schema(conn: asyncpg.Connection) -> None:
    missing = [t for t in DEMO_TABLES if await conn.fetchval("SELECT to_regclass($1)", t) is None]
    if missing:
        raise DemoError(
            f"the schema is missing ({', '.join(missing[:3])} ...): run `bizzyd migrate up` "
            "or drop --no-migrate"
        )
    if (
        await conn.fetchval(
            "SELECT to_regprocedure('create_sensor_report_partitions(date, integer)')"
        )
        is None
    ):
        raise DemoError("create_sensor_report_partitions() is missing: migrate the database")


async def _make_room(conn: asyncpg.Connection, options: Options, progress: _Progress) -> bool:
    """Check the demo tables are empty, or empty them (--force); False: --if-empty skip."""
    has_hives = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM hive)")
    if has_hives and options.if_empty:
        return False
    filled = []
    for table in DEMO_TABLES:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            filled.append(table)
    if not filled:
        return True
    if not options.force:
        what = "hives" if has_hives else f"rows in {', '.join(filled)}"
        raise DemoError(
            f"the database already has {what}; --force empties the demo tables "
            f"({len(DEMO_TABLES)} tables, reference rows stay) and loads anew"
        )
    try:
        await conn.execute(f"TRUNCATE {', '.join((*DEMO_TABLES, *LINKED_TABLES))} "
                           "RESTART IDENTITY")
    except asyncpg.FeatureNotSupportedError as exc:  # another module's table refers to ours
        raise DemoError(f"cannot empty the demo tables: {exc}") from exc
    progress(f"force: emptied {len(DEMO_TABLES)} demo tables ({', '.join(filled[:4])} ...)")
    return True


async def _reference(conn: asyncpg.Connection) -> Reference:
    """Ids of hive types, statuses and plans by code; missing reference rows are added."""
    await conn.executemany(
        "INSERT INTO hive_type (code, name) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
        list(HIVE_TYPE_NAMES.items()),
    )
    await conn.executemany(
        "INSERT INTO hive_status (code, name, listed) VALUES ($1, $2, $3) "
        "ON CONFLICT (code) DO NOTHING",
        HIVE_STATUS_ROWS,
    )
    await conn.executemany(
        "INSERT INTO subscription_type (code, name, audience, price_cents, billing_period) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING",
        PLAN_ROWS,
    )
    types = await conn.fetch("SELECT code, id FROM hive_type")
    statuses = await conn.fetch("SELECT code, id FROM hive_status")
    plans = await conn.fetch("SELECT code, id, price_cents FROM subscription_type")
    return Reference(
        hive_type={r["code"]: r["id"] for r in types},
        hive_status={r["code"]: r["id"] for r in statuses},
        plan={r["code"]: r["id"] for r in plans},
        plan_price={r["code"]: r["price_cents"] for r in plans},
    )


async def _copy_records(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple],
    summary: Summary,
) -> int:
    count = 0
    if rows:
        status = await conn.copy_records_to_table(table, records=rows, columns=list(columns))
        count = int(status.split()[-1])
    summary.rows[table] = summary.rows.get(table, 0) + count
    return count


async def _load_city(
    conn: asyncpg.Connection, city: City, summary: Summary, progress: _Progress
) -> None:
    for name, table in city.tables.items():
        await _copy_records(conn, name, table.columns, table.rows, summary)
    r = summary.rows
    progress(
        f"city: {_n(r['account'])} accounts, {_n(r['address'])} addresses, "
        f"{_n(r['hive'])} hives, {_n(r['hive_image'])} images, "
        f"{_n(r['hive_network'])} networks, {_n(r['deal'])} deals "
        f"({city.expiring_deals} expiring within 48 h)"
    )
    progress(
        f"sensors: {_n(r['sensor'])} sensors ({city.v1_sensors} v1, {city.v2_sensors} v2, "
        f"{r['sensor'] - city.v1_sensors - city.v2_sensors} in stock), {_n(r['modem'])} "
        f"modems, {r['sensor_network_config']} network and {r['sensor_report_config']} report "
        f"profiles, {r['sensor_report_schedule']} schedule windows, "
        f"{_n(r['sensor_config'])} configurations, {_n(r['sensor_status'])} statuses, "
        f"{r['ingest_reject']} rejects"
    )
    progress(
        f"users: {_n(r['app_user'])} users, {_n(r['account_member'])} account members, "
        f"{_n(r['subscription'])} subscriptions, {_n(r['payment_transaction'])} payments, "
        f"{_n(r['user_hive'])} favourites/recents, {_n(r['user_notification_def'])} "
        f"notification settings, {_n(r['user_message'])} messages, "
        f"{_n(r['user_analytics'])} analytics events"
    )


# Triggers that fire on INSERT into the demo tables and that the fast load may skip
# because _check_integrity re-checks what they check, once per table.
# The catalogue notifications (migration 0005) are skipped too: one NOTIFY for the
# whole load (`_announce`) replaces one per row.
KNOWN_INSERT_TRIGGERS = {("hive", "hive_timezone_valid"), ("hive", "hive_catalogue_notify"),
                         ("hive_image", "hive_image_catalogue_notify"),
                         ("deal", "deal_catalogue_notify"),
                         ("user_analytics", "user_analytics_usage"),
                         # the notifier's (0012): demo deals and payments are not news,
                         # and the notifier loads every alert setting when it starts
                         ("deal", "deal_notifier"),
                         ("payment_transaction", "payment_transaction_notifier"),
                         ("user_notification_def", "user_notification_def_notifier")}


async def _fast_load(conn: asyncpg.Connection, progress: _Progress) -> bool:
    """Skip per-row triggers for this transaction, if allowed and nothing unknown is lost.

    With session_replication_role = replica, PostgreSQL fires neither the foreign-key
    triggers nor ordinary user triggers, as in pg_restore --disable-triggers.  The only
    user trigger on an insert into a demo table is the hive time zone check (which costs
    a scan of pg_timezone_names per row); both are re-checked set-based before commit.
    """
    if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        progress("note: not a superuser: foreign keys and triggers run row by row (slow)")
        return False
    triggers = await conn.fetch(
        """
        SELECT t.tgrelid::regclass::text AS tab, t.tgname AS name
        FROM pg_trigger t
        WHERE NOT t.tgisinternal AND t.tgrelid = ANY($1::regclass[])
          AND t.tgtype & 4 <> 0   -- fires on INSERT
        ORDER BY 1, 2
        """,
        list(DEMO_TABLES),
    )
    unknown = [
        f"{r['tab']}.{r['name']}"
        for r in triggers
        if (r["tab"], r["name"]) not in KNOWN_INSERT_TRIGGERS
    ]
    if unknown:
        progress(f"note: unknown insert triggers ({', '.join(unknown)}): loading row by row")
        return False
    await conn.execute("SET LOCAL session_replication_role = replica")
    return True


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def _check_integrity(conn: asyncpg.Connection, progress: _Progress) -> None:
    """What the skipped triggers check, set-based: every foreign key, the time zones."""
    started = time.monotonic()
    keys = await conn.fetch(
        """
        SELECT c.conname AS name, c.conrelid::regclass::text AS child,
               c.confrelid::regclass::text AS parent,
               array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(num, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
                     ORDER BY k.i)::text[] AS cols,
               array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(num, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num
                     ORDER BY k.i)::text[] AS refs
        FROM pg_constraint c
        WHERE c.contype = 'f' AND c.conparentid = 0 AND c.conrelid = ANY($1::regclass[])
        ORDER BY 2, 1
        """,
        list(DEMO_TABLES),
    )
    checks = []
    for key in keys:
        present = " AND ".join(f"x.{_quote(c)} IS NOT NULL" for c in key["cols"])
        match = " AND ".join(
            f"p.{_quote(r)} = x.{_quote(c)}" for c, r in zip(key["cols"], key["refs"], strict=True)
        )
        checks.append(
            f"SELECT {_literal(key['name'])}::text AS name, count(*) AS orphans "
            f"FROM {key['child']} x WHERE {present} "
            f"AND NOT EXISTS (SELECT 1 FROM {key['parent']} p WHERE {match})"
        )
    broken = []
    if checks:
        rows = await conn.fetch(" UNION ALL ".join(f"({c})" for c in checks))
        broken = [f"{r['name']} ({r['orphans']} rows)" for r in rows if r["orphans"]]
    # one is_iana_timezone() call per distinct zone (each reads pg_timezone_names)
    zones = [
        row["timezone"]
        for row in await conn.fetch("SELECT DISTINCT timezone FROM hive ORDER BY 1")
        if not await conn.fetchval("SELECT is_iana_timezone($1)", row["timezone"])
    ]
    if broken or zones:
        raise DemoError(f"bug: broken references {broken}, bad time zones {zones}")
    progress(
        f"checked: {len(keys)} foreign keys and the hive time zones "
        f"({time.monotonic() - started:.1f} s)"
    )


async def _load_history(
    conn: asyncpg.Connection,
    city: City,
    window: Window,
    reset_at: Clock,
    summary: Summary,
    progress: _Progress,
    rollup_start: int | None = None,
) -> None:
    first = datetime.fromtimestamp(window.start, UTC).date()
    last = datetime.fromtimestamp(window.end, UTC).date()
    created = await conn.fetchval(
        "SELECT create_sensor_report_partitions($1, $2)", first, months_between(first, last)
    )
    progress(
        f"partitions: {months_between(first, last)} month(s) from {first:%Y-%m}, {created} created"
    )
    # ids in the order the rows are written, whatever earlier (rolled back) runs drew
    await conn.execute("SELECT setval(pg_get_serial_sequence('sensor_report', 'id'), 1, false)")
    started = time.monotonic()
    done: list[HiveHistory] = []
    plans = city.plans
    rows_so_far = 0
    next_report = max(1, len(plans) // 4)

    def simulate(chunk: Sequence[HivePlan]) -> list[HiveHistory]:
        return [history.simulate_hive(plan, window, reset_at) for plan in chunk]

    async def source() -> AsyncIterator[bytes]:
        nonlocal rows_so_far, next_report
        loop = asyncio.get_running_loop()
        yield history.COPY_HEADER
        chunks = [plans[i : i + CHUNK] for i in range(0, len(plans), CHUNK)]
        with ThreadPoolExecutor(1, thread_name_prefix="demo-history") as pool:
            pending = loop.run_in_executor(pool, simulate, chunks[0]) if chunks else None
            for i in range(len(chunks)):
                assert pending is not None
                histories = await pending
                if i + 1 < len(chunks):  # simulate the next hives while these are sent
                    pending = loop.run_in_executor(pool, simulate, chunks[i + 1])
                data = b"".join(h.copy_data for h in histories)
                for h in histories:
                    h.copy_data = b""
                    rows_so_far += h.rows
                done.extend(histories)
                yield data
                if len(done) >= next_report and len(done) < len(plans):
                    next_report += max(1, len(plans) // 4)
                    elapsed = time.monotonic() - started
                    progress(
                        f"history: {len(done)}/{len(plans)} hives, {_n(rows_so_far)} "
                        f"reports ({_n(int(rows_so_far / elapsed))} reports/s)"
                    )
        yield history.COPY_TRAILER

    status = await conn.copy_to_table(
        "sensor_report", source=source(), columns=list(history.REPORT_COLUMNS), format="binary"
    )
    reports = int(status.split()[-1])
    summary.rows["sensor_report"] = reports
    summary.history_seconds = elapsed = time.monotonic() - started
    summary.visitors = sum(h.visitors for h in done)
    summary.turned_away = sum(h.turned_away for h in done)
    v1 = sum(h.v1_rows for h in done)
    progress(
        f"history: {_n(reports)} reports ({_n(v1)} v1 reports, {_n(reports - v1)} v2 events) "
        f"from {_n(sum(len(h.sensors) for h in done))} sensors in {len(done)} hives, "
        f"{_n(summary.visitors)} visits ({_n(summary.turned_away)} turned away at capacity), "
        f"{elapsed:.1f} s, {_n(int(reports / max(elapsed, 1e-9)))} reports/s"
    )
    await _load_rollups(conn, plans, done, window,
                        window.start if rollup_start is None else rollup_start, summary,
                        progress)
    # migration 0004 (when present) stores the counting tallies whole and the occupancy day
    tallies = {"v1_tally", "v2_tally"} <= await _columns(conn, "sensor_ingest_state")
    day = {"day_start", "day_in", "day_out", "clamps"} <= await _columns(conn, "hive_occupancy")
    columns = INGEST_STATE_COLUMNS + (("v1_tally", "v2_tally") if tallies else ())
    states = [_ingest_state_row(s, window, tallies) for h in done for s in h.sensors]
    await _copy_records(conn, "sensor_ingest_state", columns, states, summary)
    columns = OCCUPANCY_COLUMNS + (("day_start", "day_in", "day_out", "clamps") if day else ())
    occupancy = [_occupancy_row(h, window, day) for h in done]
    await _copy_records(conn, "hive_occupancy", columns, occupancy, summary)
    r = summary.rows
    inside = sum(row[1] for row in occupancy)
    progress(
        f"state: {_n(r['sensor_ingest_state'])} sensor ingest states"
        f"{' with counting tallies' if tallies else ''}, {_n(r['hive_occupancy'])} hive "
        f"occupancies ({_n(inside)} people inside now"
        f"{f', daily reset at {reset_at:%H:%M}' if day else ''}), "
        f"{_n(r['hive_occupancy_hourly'])} hourly rollup rows"
    )


# what ingest and the user_analytics trigger (skipped by the fast load) keep (0011)
USAGE_FILL = """
SELECT usage_add(array_agg(action), array_agg(data), array_agg(created_at))
FROM user_analytics WHERE action IN ('hive_viewed', 'deal_opened', 'search_made')"""
DOORS_FILL = """
INSERT INTO sensor_door_daily (sensor_id, day, entries, exits)
SELECT r.sensor_id, (r.reported_at AT TIME ZONE h.timezone)::date, sum(r.delta_in),
       sum(r.delta_out)
FROM sensor_report r JOIN hive h ON h.id = r.hive_id
WHERE r.delta_in <> 0 OR r.delta_out <> 0
GROUP BY 1, 2"""


async def _derived_counters(conn: asyncpg.Connection, fast: bool, progress: _Progress) -> None:
    """App usage per hive and hour, door counts per sensor and day (modules.kpis)."""
    if await conn.fetchval("SELECT to_regclass('sensor_door_daily')") is None:
        return  # before migration 0011
    started = time.monotonic()
    if fast:
        await conn.execute(USAGE_FILL)
    doors = await conn.execute(DOORS_FILL)
    progress(f"counters: app usage per hive and hour, {_n(int(doors.split()[-1]))} door days, "
             f"{time.monotonic() - started:.1f} s")
async def _load_rollups(conn: asyncpg.Connection, plans: Sequence[HivePlan],
                        done: Sequence[HiveHistory], window: Window, before: int,
                        summary: Summary, progress: _Progress) -> None:
    """The hourly rollup streamed (COPY), hive by hive: modelled hours from `before` to
    the simulated window, then the simulated ones; then the daily level of both."""
    started = time.monotonic()
    daily = bytearray()
    simulated = {h.hive_id: h.hourly for h in done}

    def chunk_of(chunk: Sequence[HivePlan]) -> bytes:
        out = []
        for plan in chunk:
            hours = [*rollups.synthetic_hours(plan, before, window.start),
                     *rollups.simulated_hours(simulated.get(plan.hive_id, []))]
            out.append(rollups.hourly_copy(plan.hive_id, hours, window.end))
            daily.extend(rollups.daily_copy(plan.hive_id, plan.timezone, hours))
        return b"".join(out)

    async def source() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        yield history.COPY_HEADER
        chunks = [plans[i : i + 50] for i in range(0, len(plans), 50)]
        step = max(1, len(chunks) // 4)
        with ThreadPoolExecutor(1, thread_name_prefix="demo-rollups") as pool:
            pending = loop.run_in_executor(pool, chunk_of, chunks[0]) if chunks else None
            for i in range(len(chunks)):
                assert pending is not None
                data = await pending
                if i + 1 < len(chunks):
                    pending = loop.run_in_executor(pool, chunk_of, chunks[i + 1])
                yield data
                if (i + 1) % step == 0 and i + 1 < len(chunks):
                    progress(f"rollups: {(i + 1) * 50}/{len(plans)} hives, "
                             f"{time.monotonic() - started:.1f} s")
        yield history.COPY_TRAILER

    async def five() -> AsyncIterator[bytes]:
        yield history.COPY_HEADER
        for h in done:
            yield rollups.five_copy(h.hive_id, h.five, window.end)
            h.five = []
        yield history.COPY_TRAILER

    for table, data, columns in (("hive_occupancy_hourly", source(), rollups.HOURLY_COLUMNS),
                                 ("hive_occupancy_daily", None, rollups.DAILY_COLUMNS),
                                 ("hive_occupancy_5m", five(), rollups.FIVE_COLUMNS)):
        status = await conn.copy_to_table(table, source=data or _framed(bytes(daily)),
                                          columns=list(columns), format="binary")
        summary.rows[table] = int(status.split()[-1])
    progress(
        f"rollups: {_n(summary.rows['hive_occupancy_hourly'])} hourly and "
        f"{_n(summary.rows['hive_occupancy_daily'])} daily rows from {_iso(before)} "
        f"({(window.start - before) // 86400} days modelled before the simulated ones), "
        f"{_n(summary.rows['hive_occupancy_5m'])} 5-minute rows of the simulated days, "
        f"{time.monotonic() - started:.1f} s"
    )


async def _columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped",
        table,
    )
    return {row["attname"] for row in rows}


async def _framed(body: bytes) -> AsyncIterator[bytes]:
    yield history.COPY_HEADER
    yield body
    yield history.COPY_TRAILER


def _at(moment: int | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def _ingest_state_row(s: history.SensorState, window: Window, tallies: bool) -> tuple:
    anomaly = f"{s.anomalies} implausible deltas" if s.anomalies else None
    row = (
        s.sensor_id,
        s.last_total_in,
        s.last_total_out,
        _at(s.last_sensor_time),
        s.baseline_in,
        s.baseline_out,
        _at(s.baseline_at),
        s.restarts,
        s.last_counter,
        _at(s.last_event_at),
        s.lost_events,
        s.anomalies,
        _at(s.last_anomaly_at),
        anomaly,
        0,
        0,
        _at(s.last_activity or window.start),
    )
    if not tallies:
        return row
    tally = None if s.tally is None else json.dumps(s.tally)
    return (*row, tally if s.firmware == "v1" else None, tally if s.firmware == "v2" else None)


def _occupancy_row(h: HiveHistory, window: Window, day: bool) -> tuple:
    """hive_occupancy; with the occupancy day (0004) the occupancy is that day's net."""
    updated = max((s.last_activity or window.start for s in h.sensors), default=window.start)
    if not day:
        return (h.hive_id, h.occupancy, h.total_in, h.total_out, _at(updated))
    occupancy = max(h.day_in - h.day_out, 0)
    return (
        h.hive_id,
        occupancy,
        h.total_in,
        h.total_out,
        _at(updated),
        _at(h.day_start),
        h.day_in,
        h.day_out,
        h.clamps,
    )


async def _advance_sequences(conn: asyncpg.Connection) -> None:
    """Move every identity sequence past the explicit ids (the app inserts next)."""
    for table, columns in TABLE_COLUMNS.items():
        if columns[0] != "id":
            continue
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
        )


def _print_summary(summary: Summary, out: Callable[[str], None]) -> None:
    total = sum(summary.rows.values())
    out(
        f"done in {summary.seconds:.1f} s (history {summary.history_seconds:.1f} s): "
        f"{_n(total)} rows, anchor {summary.anchor:%Y-%m-%dT%H:%MZ}"
    )
    width = max(len(t) for t in summary.rows)
    for table in DEMO_TABLES:
        if table in summary.rows:
            out(f"  {table:<{width}}  {summary.rows[table]:>12,}")
