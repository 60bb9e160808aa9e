"""A demo city with weeks of known-pattern rollups for a few hives, and a bizzyd serving
popular times, forecasts and live occupancy (with the Firebase Auth emulator)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from bizzyd_proc import free_port, running, wait_for
from modules.database.testing import temporary_database_sync
from modules.hives.testing import catalogue_config, load_demo
from modules.insights import job
from modules.insights.testing import pattern_rollups, write_rollups

HIVES = 30
PATTERNED = 6  # hives 1..6 get 4 weeks of the `weekly` pattern, up to the current hour
PROJECT = "demo-bizzy"
LOCATIONS = [
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/popular-times$", "content": "popular_times"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/forecast$", "content": "forecast",
     "auth": "optional"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$",
     "content": "occupancy_stream"},
    {"location": "= /v1/occupancy", "content": "occupancy_many"},
]


def sql(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


async def _prepare(dsn: str) -> None:
    await load_demo(dsn, HIVES)
    conn = await asyncpg.connect(dsn)
    try:
        hives = await conn.fetch("SELECT id, timezone, capacity FROM hive WHERE id <= $1",
                                 PATTERNED)
        now = datetime.now(UTC)
        rows = [r for h in hives for r in pattern_rollups(
            h["id"], h["timezone"], h["capacity"], now - timedelta(weeks=4), now, noise=1.0,
            seed=h["id"])]
        await write_rollups(conn, rows)
        await job.run_profiles(conn, now, 8)
        await job.run_forecasts(conn, now)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def insights_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(_prepare(dsn))
        yield dsn


def emulator_address() -> str:
    address = os.environ.get("BIZZYD_FIREBASE_EMULATOR")
    if not address:
        pytest.fail("BIZZYD_FIREBASE_EMULATOR is not set: run scripts/services start and "
                    'eval "$(scripts/services env)"')
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"the Firebase Auth emulator at {address} is not running: {exc}")
    return address


def insights_config(port: int, dsn: str, job_on: bool = False) -> dict:
    """The catalogue's config plus sign-in and insights (the job off unless asked: the
    fixture ran it, and the tests write forecast rows of their own)."""
    config = catalogue_config(port, dsn, os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211"))
    config["modules"] += ["modules.auth", "modules.insights"]
    config["firebase"] = {"project_id": PROJECT, "emulator": emulator_address(),
                          "features_ttl": "0s"}
    config["insights"] = {"job": job_on, "live_refresh": "200ms", "check_interval": "200ms"}
    config["occupancy"]["reconcile_interval"] = "1s"
    locations = config["http"]["servers"][0]["locations"]
    at = next(i for i, loc in enumerate(locations) if loc.get("content") == "api_not_found")
    locations[at:at] = LOCATIONS
    return config


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, insights_dsn: str) -> Iterator[httpx.Client]:
    """An HTTP client of a bizzyd (2 workers); `api.dsn`, `api.bizzyd`, `api.port`."""
    port = free_port()
    prefix = tmp_path_factory.mktemp("insights")
    with running(prefix, insights_config(port, insights_dsn), port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.bizzyd = b  # type: ignore[attr-defined]
        client.dsn = insights_dsn  # type: ignore[attr-defined]
        client.port = port  # type: ignore[attr-defined]
        wait_for(lambda: client.get("/v1/hives/1/occupancy").status_code == 200
                 and "expected_now" in client.get("/v1/hives/1/occupancy").json(),
                 timeout=15, what="occupancy with expected_now")
        yield client
