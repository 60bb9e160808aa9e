"""Fixtures of the dashboard tests: one demo city with its business user, one bizzyd
serving the dashboard, one Chromium (helpers in dash_support.py)."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import chromium  # noqa: E402
from dash_support import (  # noqa: E402
    DESKTOP,
    PageWatch,
    built,
    dashboard_config,
    sign_in,
)

from bizzyd_proc import free_port, running  # noqa: E402
from modules.auth.testing import emulator_address  # noqa: E402
from modules.database.testing import temporary_database_sync  # noqa: E402
from modules.demo_data.business_user import ensure_business_user  # noqa: E402
from modules.hives.testing import load_demo, wait_until_cached  # noqa: E402
from modules.insights import job  # noqa: E402

PROJECT = "demo-bizzy"


@dataclass(frozen=True)
class City:
    dsn: str
    emulator: str
    account_id: int     # the demo business user's account
    hive_ids: tuple[int, ...]
HIVES = 40


async def insights(dsn: str) -> None:
    """Popular times and forecasts now (the job process would make them within its
    first check)."""
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        await job.run_profiles(conn, now, 8)
        await job.run_forecasts(conn, now)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def city(pg_server_dsn: str) -> Iterator[City]:
    """A demo city of 40 hives with 8 days of history up to now, and the demo business user."""
    built()
    emulator = emulator_address()
    with temporary_database_sync(pg_server_dsn, migrate=False) as dsn:
        # history up to this hour, so the last-24-hours charts have data at any time of
        # day; 8 days, so the popular times (from a hive's first open hour) cover a week
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:00Z")
        asyncio.run(load_demo(dsn, HIVES, days=8, now=now))
        asyncio.run(insights(dsn))
        user = asyncio.run(ensure_business_user(dsn, emulator, PROJECT))
        assert user is not None, "the demo city has no account for the business user"
        yield City(dsn, emulator, user.account_id, user.hive_ids)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, city: Any) -> Iterator[Any]:
    """bizzyd (2 workers) serving the dashboard; `server.url`, `server.tag` (MQTT topic
    prefix), `server.api` (an httpx client)."""
    port, tag = free_port(), "t" + secrets.token_hex(4)
    prefix = tmp_path_factory.mktemp("dashboard")
    config = dashboard_config(port, city.dsn, city.emulator, PROJECT, str(prefix / "images"),
                              tag)
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
        wait_until_cached(b.log_file, 2)
        b.url, b.tag, b.api = f"http://127.0.0.1:{port}/dashboard/", tag, api
        b.emulator = city.emulator
        yield b


@pytest.fixture(scope="module")
def browser(server: Any) -> Iterator[Any]:
    """Chromium, started after the server (the fixtures before it use asyncio.run) and
    closed with the test module: playwright's sync API keeps an event loop running in
    this thread meanwhile, which other tests' asyncio.run would trip over."""
    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots: under pytest's basetemp (dashboard-screenshots*/)."""
    return tmp_path_factory.mktemp("dashboard-screenshots", numbered=False)


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser: Any, server: Any, watch: PageWatch) -> Iterator[Any]:
    """A signed-in desktop page; by the end no console error may have happened and no
    request may have left for another host."""
    page = sign_in(browser, server, DESKTOP, watch)
    yield page
    page.context.close()
    assert watch.errors == []
    # nothing from a CDN or Google: bizzyd and (sign-in) the emulator only
    origin, emulator = server.url.removesuffix("dashboard/"), f"http://{server.emulator}"
    assert watch.foreign(origin, emulator) == []
    assert watch.foreign(origin) and watch.foreign(emulator)  # both were asked
