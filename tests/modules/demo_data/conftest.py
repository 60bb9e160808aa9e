"""Fixtures for the demo data tests: fresh throw-away databases on the test Postgres.

The server comes from ``BIZZYD_PG_DSN`` (``scripts/services start postgres`` serves the
default below).  Databases are named ``bizzyd_t_<random>`` and dropped afterwards.  When
the variable is unset and no server runs, the tests are skipped; when it is set, an
unreachable server is a failure.
"""

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:55432/bizzyd"


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _owner(dsn: str, database: str) -> str | None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
        )
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """DSN of the Postgres server (its maintenance database); skip if none is running."""
    dsn = os.environ.get("BIZZYD_PG_DSN", DEFAULT_DSN)
    try:
        asyncio.run(_admin(dsn, "SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        if "BIZZYD_PG_DSN" in os.environ:
            pytest.fail(f"Postgres at BIZZYD_PG_DSN is not usable: {exc}")
        pytest.skip(f"no Postgres at {dsn} (run scripts/services start postgres): {exc}")
    return dsn


class Databases:
    """Creates empty databases on demand; drops them all at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.names: list[str] = []

    def new(self) -> str:
        name = f"bizzyd_t_{secrets.token_hex(6)}"
        asyncio.run(_admin(self.server_dsn, f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return urlunsplit(urlsplit(self.server_dsn)._replace(path="/" + name))

    def drop_all_of(self, role: str) -> None:
        """Drop the databases `role` owns (before the role itself can be dropped)."""
        for name in list(self.names):
            owner = asyncio.run(_owner(self.server_dsn, name))
            if owner == role:
                asyncio.run(
                    _admin(self.server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
                self.names.remove(name)

    def drop_all(self) -> None:
        for name in self.names:
            asyncio.run(_admin(self.server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def databases(pg_server_dsn: str) -> Iterator[Databases]:
    """A factory of fresh, empty databases, dropped at the end of the test module."""
    dbs = Databases(pg_server_dsn)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture
def fresh_dsn(databases: Databases) -> Callable[[], str]:
    return databases.new
