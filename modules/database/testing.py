"""Throw-away databases for tests and benchmarks (nothing here runs in bizzyd).

The server comes from `BIZZYD_PG_DSN` (`scripts/services env` exports it; the default
is the port `scripts/services` uses). Databases are named `bizzyd_t_<random>` and
dropped with `WITH (FORCE)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from . import DEFAULT_DSN as DEFAULT_PG


def server_dsn() -> str:
    return os.environ.get("BIZZYD_PG_DSN", DEFAULT_PG)


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def admin(dsn: str, sql: str) -> None:
    """Run one statement on its own connection (CREATE/DROP DATABASE need that)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def check_server(dsn: str) -> str | None:
    """Why the server at `dsn` is not usable, or None."""
    try:
        asyncio.run(admin(dsn, "SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return (f"no usable Postgres at {dsn} (make test starts it; by hand: "
                f"make services): {exc}")
    return None


def new_name() -> str:
    return f"bizzyd_t_{secrets.token_hex(6)}"


async def drop_database(dsn: str, server: str | None = None) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    await admin(server or server_dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def create_database(server: str | None = None, migrate: bool = True) -> str:
    """A new database (with every migration applied unless `migrate` is False)."""
    from .migrate import up

    server = server or server_dsn()
    name = new_name()
    await admin(server, f'CREATE DATABASE "{name}"')
    dsn = with_database(server, name)
    if migrate:
        await up(dsn, report=lambda line: None)
    return dsn


@contextlib.asynccontextmanager
async def temporary_database(server: str | None = None) -> AsyncIterator[str]:
    """A new migrated database, dropped afterwards."""
    dsn = await create_database(server)
    try:
        yield dsn
    finally:
        await drop_database(dsn, server)


@contextlib.contextmanager
def temporary_database_sync(server: str | None = None, migrate: bool = True) -> Iterator[str]:
    dsn = asyncio.run(create_database(server, migrate))
    try:
        yield dsn
    finally:
        asyncio.run(drop_database(dsn, server))


def fetch_sync(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    """One query on a connection of its own, from synchronous test code."""
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()
    return asyncio.run(run())
