"""A demo city in a database of its own, the Firebase Auth emulator (scripts/services),
and a bizzyd serving the catalogue and the signed-in endpoints."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import httpx
import pytest

from bizzyd_proc import free_port, running
from modules.auth.testing import emulator_address, emulator_token
from modules.database.testing import fetch_sync, temporary_database_sync
from modules.hives.testing import load_demo, wait_until_cached
from modules.store.testing import Chain
from modules.users.testing import users_config

HIVES = 40
PROJECT = "demo-bizzy"


@pytest.fixture(scope="session")
def users_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, HIVES))
        yield dsn


sql = fetch_sync  # one query from synchronous test code


def hive_ids(dsn: str, n: int) -> list[int]:
    return [r["id"] for r in sql(dsn, "SELECT id FROM hive ORDER BY id LIMIT $1", n)]


def new_token(emulator: str) -> str:
    return emulator_token(emulator, f"u{secrets.token_hex(6)}@example.com")


EXTRA_LOCATIONS = [
    {"location": "= /v1/me/history", "content": "subscription_types",
     "require_feature": "occupancy_history"},
    {"location": "= /v1/limited/me", "content": "me", "auth": "required",
     "write_limit": {"address_rate": "1r/m", "address_burst": 3}},
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, users_dsn: str) -> Iterator[httpx.Client]:
    """An HTTP client of a bizzyd (2 workers) on the emulator; `api.emulator`,
    `api.dsn`, `api.bizzyd`."""
    emulator = emulator_address()
    port = free_port()
    # plans changed by SQL in the tests (not through bizzyd) are seen at once
    firebase = {"project_id": PROJECT, "emulator": emulator, "features_ttl": "0s"}
    config = users_config(port, users_dsn, os.environ.get("BIZZYD_MEMCACHED",
                                                          "127.0.0.1:21211"),
                          firebase, extra_locations=EXTRA_LOCATIONS)
    prefix = tmp_path_factory.mktemp("users")
    (prefix / "apple-root.pem").write_bytes(Chain().root_pem())
    config["store"] = {"apple_root_certificate": str(prefix / "apple-root.pem")}
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.bizzyd = b  # type: ignore[attr-defined]
        client.emulator = emulator  # type: ignore[attr-defined]
        client.dsn = users_dsn  # type: ignore[attr-defined]
        wait_until_cached(b.log_file, 2)
        yield client
