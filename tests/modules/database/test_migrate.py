"""The migration runner: loading files, applying them once, refusing drift, the CLI."""

import asyncio
import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from modules.database.migrate import (
    ADVISORY_LOCK_KEY,
    MIGRATIONS_DIR,
    MigrationError,
    load_migrations,
    main,
    status,
    up,
)

pytestmark = pytest.mark.services

EXPECTED_TABLES = {
    # 0001 core entities
    "account", "account_member", "address", "app_user", "deal", "feature", "hive",
    "hive_image", "hive_network", "hive_status", "hive_type", "payment_transaction",
    "subscription", "subscription_type", "subscription_type_feature", "user_analytics",
    "user_hive", "user_message", "user_notification_def",
    # 0002 sensors and reports
    "modem", "sensor", "sensor_network_config", "sensor_report", "sensor_report_config",
    "sensor_report_default", "sensor_report_schedule",
    # 0003 ingest state
    "hive_occupancy", "hive_occupancy_hourly", "ingest_reject", "sensor_config",
    "sensor_ingest_state", "sensor_status",
    # the runner's own
    "schema_migrations",
}  # fmt: skip


def quiet(line: str) -> None:
    """A report callback that drops progress lines."""


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled migrations that a test may edit."""
    return Path(shutil.copytree(MIGRATIONS_DIR, tmp_path / "migrations"))


# --- loading files ------------------------------------------------------------------


def test_bundled_migrations_load_in_version_order_with_file_checksums() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert migrations[0].filename == "0001_core_entities.sql"
    for migration in migrations:
        data = (MIGRATIONS_DIR / migration.filename).read_bytes()
        assert migration.checksum == hashlib.sha256(data).hexdigest()
        assert migration.sql == data.decode()


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match=r"0001_a\.sql and 0001_b\.sql"):
        load_migrations(tmp_path)


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0000_x.sql"])
def test_badly_named_sql_files_are_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path, {name: "SELECT 1;"})
    with pytest.raises(MigrationError, match=name.replace(".", r"\.")):
        load_migrations(tmp_path)


def test_files_other_than_sql_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, {"0001_a.sql": "SELECT 1;", "README.md": "notes"})
    assert [m.filename for m in load_migrations(tmp_path)] == ["0001_a.sql"]


# --- applying -----------------------------------------------------------------------


def test_fresh_database_migrates_to_every_table(fresh_dsn: str) -> None:
    applied = asyncio.run(up(fresh_dsn, report=quiet))

    assert applied == len(load_migrations())
    rows = asyncio.run(
        fetch(fresh_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    )
    assert {row["tablename"] for row in rows} >= EXPECTED_TABLES


def test_history_records_each_file_with_its_checksum(fresh_dsn: str) -> None:
    asyncio.run(up(fresh_dsn, report=quiet))

    rows = asyncio.run(fetch(fresh_dsn, "SELECT * FROM schema_migrations ORDER BY version"))
    expected = [(m.version, m.name, m.checksum) for m in load_migrations()]
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == expected


def test_every_table_has_a_comment(fresh_dsn: str) -> None:
    asyncio.run(up(fresh_dsn, report=quiet))

    rows = asyncio.run(
        fetch(
            fresh_dsn,
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p') AND obj_description(oid, 'pg_class') IS NULL "
            # an extension's own tables (PostGIS' spatial_ref_sys) are not ours to comment
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "AND d.objid = pg_class.oid AND d.deptype = 'e')",
        )
    )
    assert [row["relname"] for row in rows] == []


def test_second_up_applies_nothing(fresh_dsn: str) -> None:
    asyncio.run(up(fresh_dsn, report=quiet))
    lines: list[str] = []

    assert asyncio.run(up(fresh_dsn, report=lines.append)) == 0
    assert lines == ["schema is up to date"]


def test_status_shows_pending_then_applied(fresh_dsn: str) -> None:
    before = asyncio.run(status(fresh_dsn))
    asyncio.run(up(fresh_dsn, report=quiet))
    after = asyncio.run(status(fresh_dsn))

    versions = [m.version for m in load_migrations()]
    assert [(s.version, s.state, s.applied_at) for s in before] == [
        (v, "pending", None) for v in versions
    ]
    assert [(s.version, s.state) for s in after] == [(v, "applied") for v in versions]
    assert all(s.applied_at is not None and not s.changed for s in after)


def test_status_leaves_a_fresh_database_untouched(fresh_dsn: str) -> None:
    asyncio.run(status(fresh_dsn))

    rows = asyncio.run(fetch(fresh_dsn, "SELECT to_regclass('schema_migrations') AS t"))
    assert rows[0]["t"] is None


def test_modified_applied_migration_is_refused(fresh_dsn: str, migrations_copy: Path) -> None:
    asyncio.run(up(fresh_dsn, directory=migrations_copy, report=quiet))
    edited = migrations_copy / "0002_sensors_and_reports.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")

    with pytest.raises(MigrationError, match=r"0002_sensors_and_reports\.sql changed"):
        asyncio.run(up(fresh_dsn, directory=migrations_copy, report=quiet))
    states = {s.version: s.state for s in asyncio.run(status(fresh_dsn, directory=migrations_copy))}
    assert states[2] == "changed"


def test_missing_applied_migration_is_refused(fresh_dsn: str, migrations_copy: Path) -> None:
    asyncio.run(up(fresh_dsn, directory=migrations_copy, report=quiet))
    (migrations_copy / "0003_ingest_state.sql").unlink()

    with pytest.raises(MigrationError, match=r"0003_ingest_state\.sql .* file is missing"):
        asyncio.run(up(fresh_dsn, directory=migrations_copy, report=quiet))
    states = {s.version: s.state for s in asyncio.run(status(fresh_dsn, directory=migrations_copy))}
    assert states[3] == "missing"


def test_pending_migration_older_than_the_newest_applied_is_refused(
    fresh_dsn: str, tmp_path: Path
) -> None:
    write(tmp_path, {"0001_a.sql": "CREATE TABLE a ();", "0003_c.sql": "CREATE TABLE c ();"})
    asyncio.run(up(fresh_dsn, directory=tmp_path, report=quiet))
    write(tmp_path, {"0002_b.sql": "CREATE TABLE b ();"})

    with pytest.raises(MigrationError, match=r"0002_b\.sql is pending .* 0003_c\.sql"):
        asyncio.run(up(fresh_dsn, directory=tmp_path, report=quiet))


def test_failing_migration_is_named_and_rolled_back(fresh_dsn: str, tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "0001_ok.sql": "CREATE TABLE ok ();",
            "0002_broken.sql": "CREATE TABLE half_done ();\nSELECT * FROM no_such_table;",
        },
    )

    with pytest.raises(MigrationError, match=r"0002_broken\.sql .*no_such_table"):
        asyncio.run(up(fresh_dsn, directory=tmp_path, report=quiet))
    rows = asyncio.run(
        fetch(
            fresh_dsn,
            "SELECT to_regclass('ok') AS ok, to_regclass('half_done') AS half, "
            "(SELECT array_agg(version) FROM schema_migrations) AS versions",
        )
    )
    assert (rows[0]["ok"], rows[0]["half"], rows[0]["versions"]) == ("ok", None, [1])


def test_syntax_error_names_the_line(fresh_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, {"0001_typo.sql": "CREATE TABLE fine ();\n\nSELEC 1;\n"})

    with pytest.raises(MigrationError, match=r"0001_typo\.sql \(line 3\)"):
        asyncio.run(up(fresh_dsn, directory=tmp_path, report=quiet))


def test_concurrent_up_applies_each_migration_once(fresh_dsn: str) -> None:
    results = asyncio.run(_two_ups(fresh_dsn))

    assert sorted(results) == [0, len(load_migrations())]
    rows = asyncio.run(fetch(fresh_dsn, "SELECT count(*) AS n FROM schema_migrations"))
    assert rows[0]["n"] == len(load_migrations())


def test_up_waits_for_a_run_holding_the_lock(fresh_dsn: str) -> None:
    results, lines = asyncio.run(_two_ups_behind_a_held_lock(fresh_dsn))

    assert sorted(results) == [0, len(load_migrations())]
    assert lines.count("another migration run holds the lock; waiting for it") == 2


async def _two_ups(dsn: str) -> list[int]:
    return list(await asyncio.gather(up(dsn, report=quiet), up(dsn, report=quiet)))


async def _two_ups_behind_a_held_lock(dsn: str) -> tuple[list[int], list[str]]:
    holder = await asyncpg.connect(dsn)
    await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    lines: list[str] = []
    runs = [asyncio.create_task(up(dsn, report=lines.append)) for _ in range(2)]
    async with asyncio.timeout(30):
        while sum("waiting" in line for line in lines) < 2:
            await asyncio.sleep(0.01)
    await holder.close()
    return list(await asyncio.gather(*runs)), lines


# --- command line -------------------------------------------------------------------


def test_cli_up_then_status(fresh_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up"], fresh_dsn) == 0
    assert "applied 0001_core_entities.sql" in capsys.readouterr().out

    assert main(["status"], fresh_dsn) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["VERSION", "NAME", "STATE", "APPLIED", "AT"]
    assert out.splitlines()[1].split()[:3] == ["0001", "core_entities", "applied"]
    assert "pending" not in out


def test_cli_status_fails_when_history_drifted(
    fresh_dsn: str, migrations_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "--dir", str(migrations_copy)], fresh_dsn) == 0
    (migrations_copy / "0001_core_entities.sql").write_text("-- rewritten\nSELECT 1;\n")
    capsys.readouterr()

    assert main(["status", "--dir", str(migrations_copy)], fresh_dsn) == 1
    captured = capsys.readouterr()
    assert "changed" in captured.out
    assert captured.err.startswith("bizzyd: migrate: 1 applied migration(s) changed")
    assert main(["up", "--dir", str(migrations_copy)], fresh_dsn) == 1
    assert "0001_core_entities.sql changed" in capsys.readouterr().err


def test_cli_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], "postgresql://unused") == 0
    assert "bizzyd migrate" in capsys.readouterr().out


def test_cli_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sideways"], "postgresql://unused") == 1
    assert capsys.readouterr().err.startswith("bizzyd: migrate: argument command")


def test_cli_unreachable_server_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up"], "postgresql://postgres@127.0.0.1:1/nothing") == 1
    assert capsys.readouterr().err.startswith("bizzyd: migrate: cannot use the database")
