"""The schema refuses bad data by itself, deduplicates reports and routes them to partitions.

Every test runs in a transaction on the module's migrated database and rolls it back.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pytest

pytestmark = pytest.mark.services

T = TypeVar("T")
World = dict[str, int]

FK = asyncpg.ForeignKeyViolationError
CHECK = asyncpg.CheckViolationError
UNIQUE = asyncpg.UniqueViolationError
NOT_NULL = asyncpg.NotNullViolationError


def in_rolled_back_transaction(dsn: str, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``body(conn)`` in a transaction that is always rolled back."""

    async def run() -> T:
        conn = await asyncpg.connect(dsn)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                return await body(conn)
            finally:
                await transaction.rollback()
        finally:
            await conn.close()

    return asyncio.run(run())


async def make_world(conn: asyncpg.Connection) -> World:
    """An account with one hive (a bar in Berlin) and one v1 sensor in it, plus spares."""
    ids: World = {}
    ids["account"] = await conn.fetchval("INSERT INTO account (name) VALUES ('Acme') RETURNING id")
    for key, street in (("address", "Torstr. 1"), ("spare_address", "Torstr. 2")):
        ids[key] = await conn.fetchval(
            "INSERT INTO address (street, city, zip, country, latitude, longitude) "
            "VALUES ($1, 'Berlin', '10119', 'DE', 52.53, 13.40) RETURNING id",
            street,
        )
    ids["bar"] = await conn.fetchval("SELECT id FROM hive_type WHERE code = 'bar'")
    ids["active"] = await conn.fetchval("SELECT id FROM hive_status WHERE code = 'active'")
    ids["hive"] = await conn.fetchval(
        hive_sql(address_id="{address}", name="'Bar One'").format(**ids) + " RETURNING id"
    )
    ids["sensor"] = await conn.fetchval(
        "INSERT INTO sensor (external_id, firmware, hive_id) VALUES ('860000000000001', 'v1', $1) "
        "RETURNING id",
        ids["hive"],
    )
    ids["user"] = await conn.fetchval(
        "INSERT INTO app_user (firebase_uid) VALUES ('uid-123') RETURNING id"
    )
    return ids


def insert_sql(table: str, defaults: dict[str, str], overrides: dict[str, str]) -> str:
    values = defaults | overrides
    return f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(values.values())})"


def hive_sql(**overrides: str) -> str:
    defaults = {
        "account_id": "{account}", "address_id": "{spare_address}", "hive_type_id": "{bar}",
        "status_id": "{active}", "name": "'Spare'", "timezone": "'Europe/Berlin'",
        "capacity": "10",
    }  # fmt: skip
    return insert_sql("hive", defaults, overrides)


def sensor_sql(**overrides: str) -> str:
    defaults = {"external_id": "'spare-1'", "firmware": "'v2'", "hive_id": "{hive}"}
    return insert_sql("sensor", defaults, overrides)


def address_sql(**overrides: str) -> str:
    defaults = {
        "street": "'Main St 1'", "city": "'Cork'", "zip": "'T12'", "country": "'IE'",
        "latitude": "51.9", "longitude": "-8.47",
    }  # fmt: skip
    return insert_sql("address", defaults, overrides)


def v1_report_sql(**overrides: str) -> str:
    defaults = {
        "sensor_id": "{sensor}", "hive_id": "{hive}", "protocol": "'v1'",
        "reported_at": "'2024-03-15 17:42:07+00'", "sensor_local_time": "'2024-03-15 18:42:07'",
        "total_in": "120", "total_out": "97", "report_type": "255",
    }  # fmt: skip
    return insert_sql("sensor_report", defaults, overrides)


def v2_report_sql(**overrides: str) -> str:
    defaults = {
        "sensor_id": "{sensor}", "hive_id": "{hive}", "protocol": "'v2'",
        "reported_at": "'2024-03-15 18:30:00+00'", "event_type": "1", "distance_mm": "1834",
        "counter": "7",
    }  # fmt: skip
    return insert_sql("sensor_report", defaults, overrides)


def config_sql(**overrides: str) -> str:
    defaults = {
        "sensor_id": "{sensor}", "threshold_cm": "180", "reporting_interval_min": "30",
        "status_interval_min": "60", "event_threshold": "5",
    }  # fmt: skip
    return insert_sql("sensor_config", defaults, overrides)


V1_KEY = "(sensor_id, reported_at, total_in, total_out, report_type) WHERE protocol = 'v1'"
V2_KEY = "(sensor_id, reported_at, counter, event_type) WHERE protocol = 'v2'"
COVER = "INSERT INTO hive_image (hive_id, kind, url) VALUES ({hive}, 'cover', 'https://img/1')"
DEAL = "INSERT INTO deal (hive_id, title, valid_from, valid_until) VALUES ({hive}, 'Happy', "
STATUS = (
    "INSERT INTO sensor_status (sensor_id, started_at, battery_mv, state_flags, "
    "discarded_events, csq, firmware_version, configuration_id) VALUES ({sensor}, now(), "
)

UNKNOWN = "999999999"
OCCUPANCY = "INSERT INTO hive_occupancy (hive_id, occupancy) VALUES ({hive}, -1)"
HOURLY = "INSERT INTO hive_occupancy_hourly (hive_id, hour, peak_occupancy, avg_occupancy) VALUES "
SUBSCRIPTION = (
    "INSERT INTO subscription (subscription_type_id, user_id, account_id) "
    "SELECT id, {user}, {account} FROM subscription_type WHERE code = 'premium'"
)
ALERT = (
    "INSERT INTO user_notification_def (user_id, hive_id, kind) "
    "VALUES ({user}, {hive}, 'occupancy_above')"
)
USER_HIVE = "INSERT INTO user_hive (user_id, hive_id, kind) VALUES ({user}, "
REJECT = "INSERT INTO ingest_reject (topic, payload, reason) VALUES ('t', '\\x00', 'Bad Length')"


def refusal(case: str, error: type[Exception], culprit: str, *statements: str) -> Any:
    """The last statement must fail with ``error`` on constraint (or column) ``culprit``;
    the statements before it set the stage."""
    return pytest.param(list(statements), error, culprit, id=case)


# fmt: off
REFUSALS = [
    # foreign keys and deliberate RESTRICTs
    refusal("hive-unknown-account", FK, "hive_account_id_fkey", hive_sql(account_id=UNKNOWN)),
    refusal("hive-unknown-type", FK, "hive_hive_type_id_fkey", hive_sql(hive_type_id=UNKNOWN)),
    refusal("hive-unknown-status", FK, "hive_status_id_fkey", hive_sql(status_id=UNKNOWN)),
    refusal("sensor-unknown-hive", FK, "sensor_hive_id_fkey", sensor_sql(hive_id=UNKNOWN)),
    refusal("report-unknown-sensor", FK, "sensor_report_sensor_id_fkey",
            v1_report_sql(sensor_id=UNKNOWN)),
    refusal("user-hive-unknown-hive", FK, "user_hive_hive_id_fkey",
            USER_HIVE + UNKNOWN + ", 'favourite')"),
    refusal("account-with-hives", FK, "hive_account_id_fkey",
            "DELETE FROM account WHERE id = {account}"),
    refusal("address-of-a-hive", FK, "hive_address_id_fkey",
            "DELETE FROM address WHERE id = {address}"),
    # hives
    refusal("hive-zero-capacity", CHECK, "hive_capacity_check", hive_sql(capacity="0")),
    refusal("hive-negative-capacity", CHECK, "hive_capacity_check", hive_sql(capacity="-5")),
    refusal("hive-blank-name", CHECK, "hive_name_check", hive_sql(name="'   '")),
    refusal("tz-unknown", CHECK, "hive_timezone_valid", hive_sql(timezone="'Mars/Olympus'")),
    refusal("tz-wrong-case", CHECK, "hive_timezone_valid", hive_sql(timezone="'europe/berlin'")),
    refusal("tz-posix-copy", CHECK, "hive_timezone_valid",
            hive_sql(timezone="'posix/Europe/Berlin'")),
    refusal("tz-garbage", CHECK, "hive_timezone_valid", hive_sql(timezone="'CET; DROP'")),
    refusal("tz-update", CHECK, "hive_timezone_valid",
            "UPDATE hive SET timezone = 'Nowhere/Land' WHERE id = {hive}"),
    refusal("two-hives-one-address", UNIQUE, "hive_address_id_key",
            hive_sql(address_id="{address}")),
    refusal("two-cover-images", UNIQUE, "hive_image_one_cover",
            COVER, COVER.replace("img/1", "img/2")),
    refusal("image-unknown-kind", CHECK, "hive_image_kind_check",
            COVER.replace("'cover'", "'banner'")),
    refusal("deal-until-before-from", CHECK, "deal_valid_period",
            DEAL + "'2024-03-02', '2024-03-01')"),
    refusal("deal-empty-period", CHECK, "deal_valid_period",
            DEAL + "'2024-03-02', '2024-03-02')"),
    # addresses
    refusal("latitude-above-90", CHECK, "address_latitude_check", address_sql(latitude="90.5")),
    refusal("latitude-below-minus-90", CHECK, "address_latitude_check",
            address_sql(latitude="-91")),
    refusal("longitude-above-180", CHECK, "address_longitude_check",
            address_sql(longitude="180.01")),
    refusal("latitude-without-longitude", CHECK, "address_coordinates_paired",
            address_sql(longitude="NULL")),
    refusal("country-not-iso", CHECK, "address_country_check", address_sql(country="'Ireland'")),
    # sensors
    refusal("sensor-id-space", CHECK, "sensor_external_id_check",
            sensor_sql(external_id="'has space'")),
    refusal("sensor-id-slash", CHECK, "sensor_external_id_check",
            sensor_sql(external_id="'a/b'")),
    refusal("sensor-id-empty", CHECK, "sensor_external_id_check", sensor_sql(external_id="''")),
    refusal("sensor-id-65-chars", CHECK, "sensor_external_id_check",
            sensor_sql(external_id=f"'{'x' * 65}'")),
    refusal("sensor-id-taken", UNIQUE, "sensor_external_id_key",
            sensor_sql(external_id="'860000000000001'")),
    refusal("sensor-unknown-firmware", CHECK, "sensor_firmware_check",
            sensor_sql(firmware="'v3'")),
    # reports
    refusal("v1-unknown-report-type", CHECK, "sensor_report_report_type_check",
            v1_report_sql(report_type="16")),
    refusal("v1-total-over-16-bits", CHECK, "sensor_report_total_in_check",
            v1_report_sql(total_in="65536")),
    refusal("v1-missing-total", CHECK, "sensor_report_v1_shape",
            v1_report_sql(total_out="NULL")),
    refusal("v1-with-v2-field", CHECK, "sensor_report_v1_shape", v1_report_sql(counter="3")),
    refusal("v2-unknown-event-type", CHECK, "sensor_report_event_type_check",
            v2_report_sql(event_type="3")),
    refusal("v2-counter-over-8-bits", CHECK, "sensor_report_counter_check",
            v2_report_sql(counter="256")),
    refusal("report-unknown-protocol", CHECK, "sensor_report_protocol_check",
            v2_report_sql(protocol="'v3'")),
    refusal("report-without-time", NOT_NULL, "reported_at", v1_report_sql(reported_at="NULL")),
    # the natural keys; the index is the partition's copy, hence the substring
    refusal("v1-duplicate-natural-key", UNIQUE, "_total_in_total_",
            v1_report_sql(), v1_report_sql()),
    refusal("v2-duplicate-natural-key", UNIQUE, "_counter_event_",
            v2_report_sql(), v2_report_sql()),
    # configuration, status, rejects, occupancy
    refusal("config-zero-threshold", CHECK, "sensor_config_threshold_cm_check",
            config_sql(threshold_cm="0")),
    refusal("config-interval", CHECK, "sensor_config_reporting_interval_min_check",
            config_sql(reporting_interval_min="1441")),
    refusal("config-unknown-state", CHECK, "sensor_config_state_check",
            config_sql(state="'done'")),
    refusal("config-applied-without-time", CHECK, "sensor_config_applied_at",
            config_sql(state="'applied'")),
    refusal("config-two-pending", UNIQUE, "sensor_config_one_pending",
            config_sql(), config_sql()),
    refusal("status-csq-32", CHECK, "sensor_status_csq_check",
            STATUS + "3712, 1, 3, 32, 33620996, 17)"),
    refusal("status-battery", CHECK, "sensor_status_battery_mv_check",
            STATUS + "70000, 1, 3, 21, 33620996, 17)"),
    refusal("reject-reason-not-a-code", CHECK, "ingest_reject_reason_check", REJECT),
    refusal("occupancy-negative", CHECK, "hive_occupancy_occupancy_check", OCCUPANCY),
    refusal("hourly-not-on-the-hour", CHECK, "hive_occupancy_hourly_hour_check",
            HOURLY + "({hive}, '2024-03-15 18:30Z', 0, 0)"),
    refusal("hourly-average-above-peak", CHECK, "hive_occupancy_hourly_avg_le_peak",
            HOURLY + "({hive}, '2024-03-15 18:00Z', 3, 4.5)"),
    # users and money
    refusal("user-uid-taken", UNIQUE, "app_user_firebase_uid_key",
            "INSERT INTO app_user (firebase_uid) VALUES ('uid-123')"),
    refusal("user-hive-unknown-kind", CHECK, "user_hive_kind_check",
            USER_HIVE + "{hive}, 'liked')"),
    refusal("subscription-two-owners", CHECK, "subscription_one_owner", SUBSCRIPTION),
    refusal("occupancy-alert-without-threshold", CHECK, "user_notification_def_threshold",
            ALERT),
]
# fmt: on


@pytest.mark.parametrize(("statements", "error", "culprit"), REFUSALS)
def test_database_refuses(
    migrated_dsn: str, statements: list[str], error: type[asyncpg.PostgresError], culprit: str
) -> None:
    async def body(conn: asyncpg.Connection) -> asyncpg.PostgresError:
        world = await make_world(conn)
        *setup, refused = [sql.format(**world) for sql in statements]
        for sql in setup:
            await conn.execute(sql)
        with pytest.raises(error) as caught:
            await conn.execute(refused)
        return caught.value

    refusal = in_rolled_back_transaction(migrated_dsn, body)
    # the intended rule refused it, not some other one
    assert culprit in f"{refusal.constraint_name} {refusal.column_name}"


@pytest.mark.parametrize("zone", ["Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires"])
def test_iana_time_zones_are_accepted(migrated_dsn: str, zone: str) -> None:
    async def body(conn: asyncpg.Connection) -> str:
        world = await make_world(conn)
        sql = hive_sql(timezone=f"'{zone}'").format(**world) + " RETURNING timezone"
        return await conn.fetchval(sql)

    assert in_rolled_back_transaction(migrated_dsn, body) == zone


def test_a_bad_time_zone_is_reported_like_a_check_constraint(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> asyncpg.CheckViolationError:
        world = await make_world(conn)
        with pytest.raises(CHECK) as caught:
            await conn.execute(hive_sql(timezone="'Mars/Olympus_Mons'").format(**world))
        return caught.value

    error = in_rolled_back_transaction(migrated_dsn, body)
    assert (error.table_name, error.column_name) == ("hive", "timezone")
    assert error.constraint_name == "hive_timezone_valid"


# --- deduplication --------------------------------------------------------------------


def test_redelivered_v1_report_is_dropped_by_on_conflict(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> list[str]:
        world = await make_world(conn)
        sql = v1_report_sql().format(**world) + f" ON CONFLICT {V1_KEY} DO NOTHING"
        return [await conn.execute(sql), await conn.execute(sql)]

    assert in_rolled_back_transaction(migrated_dsn, body) == ["INSERT 0 1", "INSERT 0 0"]


def test_redelivered_v2_events_are_dropped_by_on_conflict(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> list[str]:
        world = await make_world(conn)
        first = v2_report_sql().format(**world) + f" ON CONFLICT {V2_KEY} DO NOTHING"
        later = v2_report_sql(counter="8").format(**world) + f" ON CONFLICT {V2_KEY} DO NOTHING"
        return [await conn.execute(sql) for sql in (first, first, later)]

    assert in_rolled_back_transaction(migrated_dsn, body) == [
        "INSERT 0 1",
        "INSERT 0 0",
        "INSERT 0 1",
    ]


def test_reports_differing_in_any_key_field_are_kept(migrated_dsn: str) -> None:
    variants = [
        v1_report_sql(),
        v1_report_sql(total_in="121"),
        v1_report_sql(total_out="98"),
        v1_report_sql(report_type="32"),
        v1_report_sql(reported_at="'2024-03-15 17:42:08+00'", sensor_local_time="'2024-03-15'"),
        v2_report_sql(reported_at="'2024-03-15 17:42:07+00'"),
        v2_report_sql(reported_at="'2024-03-15 17:42:07+00'", event_type="0"),
    ]

    async def body(conn: asyncpg.Connection) -> int:
        world = await make_world(conn)
        for sql in variants:
            await conn.execute(sql.format(**world))
        return await conn.fetchval("SELECT count(*) FROM sensor_report")

    assert in_rolled_back_transaction(migrated_dsn, body) == len(variants)


# --- partitions -----------------------------------------------------------------------


def test_initial_partitions_cover_three_months_around_now(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'sensor_report'::regclass"
        )
        return [row["relname"] for row in rows]

    partitions = set(in_rolled_back_transaction(migrated_dsn, body))
    now = datetime.now(UTC)
    months = [_shift_month(now.year, now.month, delta) for delta in range(-3, 4)]
    assert {f"sensor_report_p{y:04d}{m:02d}" for y, m in months} <= partitions
    assert "sensor_report_default" in partitions


def test_future_report_lands_in_its_month_partition(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> tuple[Any, ...]:
        world = await make_world(conn)
        created = await conn.fetchval("SELECT create_sensor_report_partitions('2031-05-20', 2)")
        again = await conn.fetchval("SELECT create_sensor_report_partitions('2031-05-01', 2)")
        sql = v2_report_sql(reported_at="'2031-05-31 23:59:59+00'").format(**world)
        may = await conn.fetchval(sql + " RETURNING tableoid::regclass::text")
        sql = v2_report_sql(reported_at="'2031-06-01 00:00:00+00'").format(**world)
        june = await conn.fetchval(sql + " RETURNING tableoid::regclass::text")
        return created, again, may, june

    assert in_rolled_back_transaction(migrated_dsn, body) == (
        2,
        0,
        "sensor_report_p203105",
        "sensor_report_p203106",
    )


def test_month_bounds_are_utc_whatever_the_session_time_zone(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> str:
        world = await make_world(conn)
        await conn.execute("SET LOCAL TimeZone = 'Pacific/Kiritimati'")  # UTC+14
        await conn.fetchval("SELECT create_sensor_report_partitions('2032-02-01', 1)")
        sql = v2_report_sql(reported_at="'2032-02-01 00:00:00+00'").format(**world)
        return await conn.fetchval(sql + " RETURNING tableoid::regclass::text")

    assert in_rolled_back_transaction(migrated_dsn, body) == "sensor_report_p203202"


def test_reports_parked_in_default_move_into_a_new_partition(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> tuple[Any, ...]:
        world = await make_world(conn)
        sql = v1_report_sql(reported_at="'2033-07-04 12:00:00+00'").format(**world)
        parked = await conn.fetchval(sql + " RETURNING tableoid::regclass::text")
        await conn.fetchval("SELECT create_sensor_report_partitions('2033-07-01', 1)")
        moved = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM sensor_report WHERE reported_at = $1",
            datetime(2033, 7, 4, 12, tzinfo=UTC),
        )
        # the moved-into partition keeps deduplicating
        again = await conn.execute(sql + f" ON CONFLICT {V1_KEY} DO NOTHING")
        return parked, moved, again

    assert in_rolled_back_transaction(migrated_dsn, body) == (
        "sensor_report_default",
        "sensor_report_p203307",
        "INSERT 0 0",
    )


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


# --- deletes ----------------------------------------------------------------------------


def test_deleting_a_hive_takes_its_own_rows_and_unassigns_its_sensors(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> tuple[Any, ...]:
        world = await make_world(conn)
        await conn.execute(COVER.format(**world))
        await conn.execute((DEAL + "'2024-03-01', '2024-03-02')").format(**world))
        await conn.execute(
            "INSERT INTO user_hive (user_id, hive_id, kind) VALUES ($1, $2, 'favourite')",
            world["user"],
            world["hive"],
        )
        await conn.execute("INSERT INTO hive_occupancy (hive_id) VALUES ($1)", world["hive"])
        await conn.execute("DELETE FROM hive WHERE id = $1", world["hive"])
        leftovers = await conn.fetchval(
            "SELECT (SELECT count(*) FROM hive_image) + (SELECT count(*) FROM deal)"
            " + (SELECT count(*) FROM user_hive) + (SELECT count(*) FROM hive_occupancy)"
        )
        sensor_hive = await conn.fetchval(
            "SELECT hive_id FROM sensor WHERE id = $1", world["sensor"]
        )
        return leftovers, sensor_hive

    assert in_rolled_back_transaction(migrated_dsn, body) == (0, None)


def test_a_hive_with_reports_cannot_be_deleted(migrated_dsn: str) -> None:
    async def body(conn: asyncpg.Connection) -> None:
        world = await make_world(conn)
        await conn.execute(v1_report_sql().format(**world))
        with pytest.raises(FK):
            await conn.execute("DELETE FROM hive WHERE id = $1", world["hive"])

    in_rolled_back_transaction(migrated_dsn, body)


# --- indexes the API relies on ------------------------------------------------------


SEARCHES = [
    pytest.param("SELECT id FROM hive WHERE lower(name) LIKE '%bar%'", "hive_name_trgm_idx"),
    pytest.param(
        "SELECT id FROM address"
        " WHERE point(longitude, latitude) <@ box(point(13, 52), point(14, 53))",
        "address_geo_idx",
    ),
    pytest.param("SELECT id FROM address WHERE zip = '10119'", "address_zip_idx"),
    pytest.param("SELECT id FROM hive WHERE hive_type_id = 1", "hive_type_idx"),
    pytest.param(
        "SELECT id FROM sensor_report"
        " WHERE sensor_id = 1 AND reported_at >= now() - interval '1 day'",
        "sensor_id_reported_at",
    ),
]


@pytest.mark.parametrize(("query", "index"), SEARCHES)
def test_api_queries_can_use_their_index(migrated_dsn: str, query: str, index: str) -> None:
    async def body(conn: asyncpg.Connection) -> str:
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + query)
        return "\n".join(row[0] for row in rows)

    assert index in in_rolled_back_transaction(migrated_dsn, body)
