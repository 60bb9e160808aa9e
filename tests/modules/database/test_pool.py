"""The per-process pool's circuit breaker, against the real Postgres server."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from bizzyd.log import stderr_log
from modules.database.pool import Database, DatabaseUnavailable


def settings(dsn: str) -> dict:
    return {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 1, "statement_timeout": 5.0,
            "connect_timeout": 2.0, "reconnect_max_backoff": 1.0}


def test_a_broken_protocol_state_is_a_connection_failure(pg_server_dsn: str):
    """asyncpg's InternalClientError (a session ended mid-transaction by a Postgres
    shutdown) is retried like a lost connection, never taken for a bad statement,
    and its connection is not reused."""

    async def scenario() -> None:
        db = Database(settings(pg_server_dsn), stderr_log("info"))
        try:
            with pytest.raises(DatabaseUnavailable, match="InternalClientError"):
                async with db.connection() as conn:
                    broken = conn.get_server_pid()
                    raise asyncpg.InternalClientError(
                        "cannot switch to state 15; another operation (2) is in progress")
            with pytest.raises(DatabaseUnavailable):  # the breaker is open for a moment
                async with db.connection():
                    pass
            await asyncio.sleep(max(0.0, db.down_until - time.monotonic()) + 0.1)
            async with db.connection() as conn:  # pool_max_size 1: a new connection
                assert conn.get_server_pid() != broken
                assert await conn.fetchval("SELECT 1") == 1
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_statement_error_is_not_a_connection_failure(pg_server_dsn: str):
    async def scenario() -> None:
        db = Database(settings(pg_server_dsn), stderr_log("info"))
        try:
            with pytest.raises(asyncpg.DivisionByZeroError):
                async with db.connection() as conn:
                    await conn.fetchval("SELECT 1 / 0")
            async with db.connection() as conn:  # no breaker: served at once
                assert await conn.fetchval("SELECT 2") == 2
        finally:
            await db.close()

    asyncio.run(scenario())
