"""A bizzyd with the business and kpis endpoints on a small demo city (Postgres,
memcached, the Firebase Auth emulator from scripts/services); helpers in kpis_support."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "users"))  # business_support

from kpis_support import start  # noqa: E402

from modules.database.testing import temporary_database_sync  # noqa: E402
from modules.hives.testing import load_demo  # noqa: E402


@pytest.fixture(scope="session")
def kpis_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, 8))
        yield dsn


@pytest.fixture(scope="module")
def biz(tmp_path_factory: pytest.TempPathFactory, kpis_dsn: str) -> Iterator[httpx.Client]:
    yield from start(tmp_path_factory, kpis_dsn)
