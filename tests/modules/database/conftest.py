"""Fixtures for database tests: a fresh, throw-away database per test (or per module).

The Postgres server comes from ``BIZZYD_PG_DSN`` (``make services`` starts one at the
default below). Each fixture creates ``bizzyd_t_<random>`` on that server, yields its DSN
and drops it afterwards. When the variable is unset and the default server is not
running, the tests fail (they are never skipped: `make test` starts the server).
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from modules.database.migrate import up
from modules.database.testing import admin, new_name, with_database


@contextmanager
def _temporary_database(server: str) -> Iterator[str]:
    name = new_name()
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server, name)
    finally:
        asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
