"""Helpers of the insights tests: the data the fixtures prepare, the server's config."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import asyncpg

from modules.auth.testing import emulator_address
from modules.database.testing import fetch_sync
from modules.hives.testing import catalogue_config, load_demo
from modules.insights import job
from modules.insights.testing import pattern_rollups, write_rollups

HIVES = 30
PATTERNED = 6  # hives 1..6 get 4 weeks of the `weekly` pattern, up to the current hour
NO_PROFILE = 12
PROJECT = "demo-bizzy"
LOCATIONS = [
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/popular-times$", "content": "popular_times"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/forecast$", "content": "forecast",
     "auth": "optional"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$",
     "content": "occupancy_stream"},
    {"location": "= /v1/occupancy", "content": "occupancy_many"},
]


sql = fetch_sync  # one query from synchronous test code


async def prepare(dsn: str) -> None:
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
        # hives from NO_PROFILE on have no rollups: no profile, no forecast
        await conn.execute("DELETE FROM hive_occupancy_hourly WHERE hive_id >= $1", NO_PROFILE)
        await job.run_profiles(conn, now, 8)
        await job.run_forecasts(conn, now)
    finally:
        await conn.close()



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
