"""Apply the ordered SQL migrations in ``migrations/`` to a Postgres database.

Theory of operation:

* A migration is one file ``NNNN_name.sql``: its version is the number, its checksum the
  SHA-256 of its bytes. Versions are unique; files are applied in version order.
* Each migration runs in one transaction together with its ``schema_migrations`` row, so
  a migration is either applied and recorded, or neither. A migration file therefore must
  not contain transaction control (BEGIN/COMMIT) or statements that refuse to run in a
  transaction (CREATE INDEX CONCURRENTLY).
* An applied migration is history. If its file changed or disappeared, ``up`` refuses to
  run rather than guess: fix the file back, or write a new migration. A pending file
  numbered below the newest applied one is refused too (renumber it), so every database
  applies the same files in the same order.
* ``up`` holds a session advisory lock for its whole run: concurrent runs (several nodes
  starting at once) take turns, and the later ones find nothing left to do.
"""

import argparse
import asyncio
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, NoReturn

import asyncpg

__all__ = [
    "ADVISORY_LOCK_KEY",
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "load_migrations",
    "main",
    "status",
    "up",
]

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

_FILENAME = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")

# The advisory lock `up` holds (same key in every bizzyd database): 64 bits of a hash of
# a fixed string, unlikely to collide with any other user of advisory locks.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"bizzyd.migrate").digest()[:8], "big", signed=True
)

_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY CHECK (version > 0),
    name       text NOT NULL,
    checksum   text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'Migrations applied by bizzyd migrate: version, file name, SHA-256 of the file, when.';
"""

_RECORD = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


class MigrationError(Exception):
    """A migration cannot be loaded or applied; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name, SQL text and SHA-256 checksum (hex)."""

    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        """The file name the migration was loaded from."""
        return _filename(self.version, self.name)


@dataclass(frozen=True)
class MigrationStatus:
    """How one migration stands in a database.

    ``applied_at`` is None for a pending migration; ``changed`` is true when the file's
    checksum differs from the one recorded when it was applied; ``missing`` is true when
    the database records a migration for which there is no file.
    """

    version: int
    name: str
    applied_at: datetime | None
    changed: bool = False
    missing: bool = False

    @property
    def state(self) -> str:
        """One word: applied, pending, changed or missing."""
        if self.missing:
            return "missing"
        if self.changed:
            return "changed"
        return "pending" if self.applied_at is None else "applied"


class _Applied(NamedTuple):
    version: int
    name: str
    checksum: str
    applied_at: datetime


def _filename(version: int, name: str) -> str:
    return f"{version:04d}_{name}.sql"


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read the migrations of ``directory`` (default: the bundled ones), by version.

    Every ``*.sql`` file must be named ``NNNN_name.sql`` (lower-case name); other files
    are ignored. Raises MigrationError for a badly named, unreadable or empty file and for
    two files with the same version.
    """
    directory = MIGRATIONS_DIR if directory is None else directory
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    by_version: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        migration = _read_migration(path)
        other = by_version.get(migration.version)
        if other is not None:
            raise MigrationError(
                f"duplicate migration version {migration.version:04d}: "
                f"{other.filename} and {path.name}"
            )
        by_version[migration.version] = migration
    return [by_version[version] for version in sorted(by_version)]


def _read_migration(path: Path) -> Migration:
    match = _FILENAME.match(path.name)
    if match is None:
        raise MigrationError(f"{path.name}: not a migration file name (want NNNN_name.sql)")
    version = int(match["version"])
    if version == 0:
        raise MigrationError(f"{path.name}: versions start at 0001")
    try:
        data = path.read_bytes()
        sql = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"{path.name}: cannot read: {exc}") from exc
    if not sql.strip():
        raise MigrationError(f"{path.name}: file is empty")
    return Migration(version, match["name"], sql, hashlib.sha256(data).hexdigest())


# ---------------------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------------------


async def status(dsn: str, *, directory: Path | None = None) -> list[MigrationStatus]:
    """Compare the migration files with what the database at ``dsn`` has applied.

    Returns one entry per version found in either place, by version. Read-only: a
    database that was never migrated shows every migration pending.
    """
    migrations = load_migrations(directory)
    conn = await _connect(dsn)
    try:
        applied = await _fetch_applied(conn)
    finally:
        await conn.close()
    return _combine(migrations, applied)


async def up(
    dsn: str,
    *,
    directory: Path | None = None,
    report: Callable[[str], None] = print,
) -> int:
    """Apply the pending migrations to the database at ``dsn``; return how many.

    Each migration runs in its own transaction with its ``schema_migrations`` row.
    Raises MigrationError, naming the file, when an applied migration's file changed or
    is missing, when a pending file is older than the newest applied one, or when a
    migration fails (that migration is rolled back; the ones before it stay applied).
    ``report`` receives one line of progress per step.
    """
    migrations = load_migrations(directory)
    conn = await _connect(dsn)
    try:
        await _take_lock(conn, report)
        await conn.execute(_CREATE_HISTORY)
        pending = _pending(migrations, await _fetch_applied(conn))
        for migration in pending:
            await _apply(conn, migration, report)
    finally:
        await conn.close()  # ends the session, which releases the advisory lock
    report(f"applied {len(pending)} migration(s)" if pending else "schema is up to date")
    return len(pending)


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "bizzyd migrate"})


async def _take_lock(conn: asyncpg.Connection, report: Callable[[str], None]) -> None:
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
        return
    report("another migration run holds the lock; waiting for it")
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)


async def _fetch_applied(conn: asyncpg.Connection) -> dict[int, _Applied]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    )
    return {row["version"]: _Applied(*row) for row in rows}


async def _apply(
    conn: asyncpg.Connection, migration: Migration, report: Callable[[str], None]
) -> None:
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(_RECORD, migration.version, migration.name, migration.checksum)
    except asyncpg.PostgresError as exc:
        raise MigrationError(_describe_failure(migration, exc)) from exc
    elapsed_ms = (time.monotonic() - started) * 1000
    report(f"applied {migration.filename} ({elapsed_ms:.0f} ms)")


def _describe_failure(migration: Migration, exc: asyncpg.PostgresError) -> str:
    where = ""
    position = getattr(exc, "position", None)
    if position:  # 1-based character offset of a syntax error in the file
        line = migration.sql.count("\n", 0, int(position) - 1) + 1
        where = f" (line {line})"
    return f"{migration.filename}{where} failed: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------
# Comparing files with history
# ---------------------------------------------------------------------------------------


def _combine(migrations: list[Migration], applied: dict[int, _Applied]) -> list[MigrationStatus]:
    files = {migration.version: migration for migration in migrations}
    result = []
    for version in sorted(files.keys() | applied.keys()):
        migration, row = files.get(version), applied.get(version)
        if row is None:
            assert migration is not None
            result.append(MigrationStatus(version, migration.name, None))
        elif migration is None:
            result.append(MigrationStatus(version, row.name, row.applied_at, missing=True))
        else:
            changed = migration.checksum != row.checksum
            result.append(MigrationStatus(version, migration.name, row.applied_at, changed))
    return result


def _pending(migrations: list[Migration], applied: dict[int, _Applied]) -> list[Migration]:
    problems = list(_history_problems(migrations, applied))
    if problems:
        raise MigrationError("; ".join(problems))
    pending = [m for m in migrations if m.version not in applied]
    newest = max(applied, default=0)
    if pending and pending[0].version < newest:
        raise MigrationError(
            f"{pending[0].filename} is pending but newer migration "
            f"{_filename(newest, applied[newest].name)} is already applied; "
            f"renumber it after {newest:04d}"
        )
    return pending


def _history_problems(migrations: list[Migration], applied: dict[int, _Applied]) -> Iterable[str]:
    files = {migration.version: migration for migration in migrations}
    for row in applied.values():
        migration = files.get(row.version)
        when = row.applied_at.isoformat(timespec="seconds")
        if migration is None:
            name = _filename(row.version, row.name)
            yield f"{name} was applied on {when} but its file is missing"
        elif migration.checksum != row.checksum:
            yield (
                f"{migration.filename} changed after it was applied on {when} "
                f"(checksum {row.checksum[:12]} is now {migration.checksum[:12]}); "
                "restore it and put the change in a new migration"
            )


# ---------------------------------------------------------------------------------------
# Command line: bizzyd migrate [status|up]
# ---------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bizzyd migrate",
        description="Show or apply the database migrations (plain SQL files, in order).",
        epilog="Exit status: 0 on success; 1 on error, or from status when an applied "
        "migration's file changed or is missing.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("status", "up"),
        default="status",
        help="status: list migrations and their state (default); up: apply pending ones",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"directory of NNNN_name.sql files (default: {MIGRATIONS_DIR})",
    )
    return parser


def main(argv: list[str], dsn: str) -> int:
    """Run ``bizzyd migrate`` with ``argv`` (the words after "migrate") against ``dsn``.

    Returns the exit status: 0 on success, 1 on failure (the reason printed to stderr as
    ``bizzyd: migrate: <reason>``).
    """
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:  # --help printed its text
        return 0 if exc.code in (0, None) else 1
    except _UsageError as exc:
        return _fail(f"{exc} (see bizzyd migrate --help)")
    try:
        if args.command == "up":
            asyncio.run(up(dsn, directory=args.dir))
            return 0
        return _print_status(asyncio.run(status(dsn, directory=args.dir)))
    except (MigrationError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(str(exc))
    except (OSError, TimeoutError, ValueError) as exc:  # unreachable server, bad DSN
        return _fail(f"cannot use the database: {exc}")


def _print_status(rows: list[MigrationStatus]) -> int:
    print(_format_table(rows))
    drifted = [row for row in rows if row.changed or row.missing]
    if drifted:
        return _fail(f"{len(drifted)} applied migration(s) changed or missing")
    return 0


def _format_table(rows: list[MigrationStatus]) -> str:
    lines = [("VERSION", "NAME", "STATE", "APPLIED AT")]
    for row in rows:
        applied = row.applied_at.isoformat(timespec="seconds") if row.applied_at else "-"
        lines.append((f"{row.version:04d}", row.name, row.state, applied))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _fail(reason: str) -> int:
    print(f"bizzyd: migrate: {reason}", file=sys.stderr)
    return 1
