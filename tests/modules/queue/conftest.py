"""Fixtures of the queue tests: a migrated throw-away database per test module, and a
way to run a scenario against a real `Queues` (pool + LISTEN connection) on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from bizzyd.log import stderr_log
from modules.database.pool import Database
from modules.database.testing import temporary_database_sync
from modules.queue.store import Queues, Wakeups

pytestmark = pytest.mark.services


def db_settings(dsn: str) -> dict:
    return {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 4, "statement_timeout": 5.0,
            "connect_timeout": 2.0, "reconnect_max_backoff": 1.0}


@pytest.fixture(scope="module")
def queue_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        yield dsn


Scenario = Callable[[Queues], Awaitable[Any]]


def run_queues(dsn: str, scenario: Scenario, rescue_interval: float = 0.2,
               listen: bool = True, timeout: float = 60) -> Any:
    """Run `scenario(queues)` on a fresh event loop with its own pool and listener."""

    async def main() -> Any:
        log = stderr_log("info")
        db = Database(db_settings(dsn), log)
        wakeups = Wakeups(dsn, log) if listen else None
        if wakeups is not None:
            wakeups.start()
            await asyncio.wait_for(wakeups.connected.wait(), 10)
        try:
            return await asyncio.wait_for(scenario(Queues(db, wakeups, rescue_interval)),
                                          timeout)
        finally:
            if wakeups is not None:
                await wakeups.close()
            await db.close()

    return asyncio.run(main())


@pytest.fixture
def run(queue_dsn: str) -> Callable[..., Any]:
    return lambda scenario, **kw: run_queues(queue_dsn, scenario, **kw)
