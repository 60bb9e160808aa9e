"""Fixtures for the demo data tests: fresh throw-away databases on the test Postgres.

The server comes from ``BIZZYD_PG_DSN`` (``scripts/services start postgres`` serves the
default, see modules/database/testing.py).  Databases are named ``bizzyd_t_<random>``
and dropped afterwards.  No usable server is a failure, never a skip.
"""

import asyncio
from collections.abc import Callable, Iterator

import asyncpg
import pytest

from modules.database.testing import admin, new_name, with_database


async def _owner(dsn: str, database: str) -> str | None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
        )
    finally:
        await conn.close()


class Databases:
    """Creates empty databases on demand; drops them all at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.names: list[str] = []

    def new(self) -> str:
        name = new_name()
        asyncio.run(admin(self.server_dsn, f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return with_database(self.server_dsn, name)

    def drop_all_of(self, role: str) -> None:
        """Drop the databases `role` owns (before the role itself can be dropped)."""
        for name in list(self.names):
            owner = asyncio.run(_owner(self.server_dsn, name))
            if owner == role:
                asyncio.run(
                    admin(self.server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
                self.names.remove(name)

    def drop_all(self) -> None:
        for name in self.names:
            asyncio.run(admin(self.server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
