"""A demo city with weeks of known-pattern rollups for a few hives, and a bizzyd serving
popular times, forecasts and live occupancy (with the Firebase Auth emulator)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from insights_support import insights_config, prepare  # noqa: E402

from bizzyd_proc import free_port, running, wait_for  # noqa: E402
from modules.database.testing import temporary_database_sync  # noqa: E402


@pytest.fixture(scope="session")
def insights_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(prepare(dsn))
        yield dsn


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
