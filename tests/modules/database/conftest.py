"""Fixtures for database tests: a fresh, throw-away database per test (or per module).

The Postgres server comes from ``BIZZYD_PG_DSN`` (``make services`` starts one at the
default below). Each fixture creates ``bizzyd_t_<random>`` on that server, yields its DSN
and drops it afterwards. When the variable is unset and the default server is not
running, the tests fail (they are never skipped: `make test` starts the server).
"""

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from modules.database.migrate import up

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:55432/bizzyd"


def _server_dsn() -> str:
    return os.environ.get("BIZZYD_PG_DSN", DEFAULT_DSN)


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """DSN of the Postgres server (its maintenance database); fail if none is running."""
    dsn = _server_dsn()
    try:
        asyncio.run(_admin(dsn, "SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"no usable Postgres at {dsn} (make test starts it; by hand: "
                    f"make services): {exc}")
    return dsn


@contextmanager
def _temporary_database(server_dsn: str) -> Iterator[str]:
    name = f"bizzyd_t_{secrets.token_hex(6)}"
    asyncio.run(_admin(server_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(server_dsn, name)
    finally:
        asyncio.run(_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_dsn(pg_server_dsn: str) -> Iterator[str]:
    """DSN of a new, empty database created for this test and dropped after it."""
    with _temporary_database(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def migrated_dsn(pg_server_dsn: str) -> Iterator[str]:
    """DSN of a new database with every migration applied, shared by one test module.

    Tests that write to it should do so in a transaction they roll back.
    """
    with _temporary_database(pg_server_dsn) as dsn:
        asyncio.run(up(dsn, report=lambda line: None))
        yield dsn


@pytest.fixture
def other_fresh_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A second new, empty database, for tests that compare two."""
    with _temporary_database(pg_server_dsn) as dsn:
        yield dsn
