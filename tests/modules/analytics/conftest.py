"""A small demo city in a database of its own and a bizzyd with the business and
analytics endpoints on the Firebase Auth emulator (scripts/services)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bizzyd_proc import free_port, running
from modules.analytics.testing import add_analytics
from modules.auth.testing import emulator_token
from modules.business.testing import business_config
from modules.database.testing import fetch_sync, temporary_database_sync
from modules.hives.testing import load_demo, wait_until_cached

from ..users.business_support import expect  # noqa: F401  (used by the analytics tests)

PROJECT = "demo-bizzy"
WRITE_LIMIT = {"rate": "1000r/s", "burst": 5000, "address_rate": "1000r/s",
               "address_burst": 5000}
HIVE = {"name": "Bee Bar", "type": "bar", "capacity": 100, "timezone": "Europe/Berlin",
        "status": "active", "description": "a test bar",
        "address": {"street": "Hauptstr. 1", "city": "Berlin", "country": "DE",
                    "zip": "10115", "latitude": 52.53, "longitude": 13.38}}


@pytest.fixture(scope="session")
def analytics_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, 5))
        yield dsn


sql = fetch_sync


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, analytics_dsn: str) -> Iterator[httpx.Client]:
    emulator = os.environ.get("BIZZYD_FIREBASE_EMULATOR")
    if not emulator:
        pytest.fail("BIZZYD_FIREBASE_EMULATOR is not set: scripts/services start and "
                    'eval "$(scripts/services env)"')
    port = free_port()
    firebase = {"project_id": PROJECT, "emulator": emulator, "features_ttl": "0s"}
    prefix = tmp_path_factory.mktemp("analytics")
    config = add_analytics(business_config(
        port, analytics_dsn, os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211"), firebase,
        WRITE_LIMIT, str(prefix / "images")), WRITE_LIMIT)
    locations = config["http"]["servers"][0]["locations"]
    at = next(i for i, loc in enumerate(locations) if loc.get("content") == "api_not_found")
    locations.insert(at, {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$",
                          "content": "occupancy_stream"})
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.emulator = emulator  # type: ignore[attr-defined]
        client.dsn = analytics_dsn  # type: ignore[attr-defined]
        client.port = port  # type: ignore[attr-defined]
        wait_until_cached(b.log_file, 2)
        yield client


def signed_in(api: httpx.Client) -> tuple[dict[str, str], int]:
    token = emulator_token(api.emulator, f"a{secrets.token_hex(6)}@example.com")
    h = {"Authorization": f"Bearer {token}"}
    return h, api.get("/v1/me", headers=h).json()["id"]


@pytest.fixture(scope="module")
def venue(api: httpx.Client) -> dict[str, Any]:
    """An account with a Berlin hive: its manager's and a viewer's headers, a stranger's,
    and the hive id."""
    manager, _ = signed_in(api)
    viewer, viewer_id = signed_in(api)
    stranger, _ = signed_in(api)
    account = expect(api.post("/v1/accounts", json={"name": "Bee GmbH"}, headers=manager),
                     201)["id"]
    expect(api.put(f"/v1/accounts/{account}/members/{viewer_id}", json={"role": "viewer"},
                   headers=manager), 200)
    hive = expect(api.post(f"/v1/accounts/{account}/hives", json=HIVE, headers=manager),
                  201)["id"]
    return {"manager": manager, "viewer": viewer, "stranger": stranger, "hive": hive,
            "account": account}
