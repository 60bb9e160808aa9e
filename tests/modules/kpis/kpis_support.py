"""Start a bizzyd with modules.kpis, and the helpers of its tests."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from business_support import HIVE, WRITE_LIMIT, expect

from bizzyd_proc import free_port, running
from modules.auth.testing import emulator_token
from modules.business.testing import business_config
from modules.hives.testing import wait_until_cached
from modules.kpis.testing import kpis_config
from modules.mqtt_ingest.testing import fetch

__all__ = ["expect", "sql"]

PROJECT = "demo-bizzy"


def start(tmp_path_factory: pytest.TempPathFactory, dsn: str) -> Iterator[httpx.Client]:
    emulator = os.environ.get("BIZZYD_FIREBASE_EMULATOR")
    if not emulator:
        pytest.fail("BIZZYD_FIREBASE_EMULATOR is not set: scripts/services start and "
                    'eval "$(scripts/services env)"')
    port = free_port()
    prefix = tmp_path_factory.mktemp("kpis")
    firebase = {"project_id": PROJECT, "emulator": emulator, "features_ttl": "0s"}
    config = kpis_config(business_config(
        port, dsn, os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211"), firebase, WRITE_LIMIT,
        str(prefix / "images")), door_imbalance_threshold=20, max_window="100d")
    config["occupancy"]["freshness_interval"] = "200ms"
    config["http"]["servers"][0]["locations"].insert(
        0, {"location": "= /v1/occupancy", "content": "occupancy_many"})
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.bizzyd = b  # type: ignore[attr-defined]
        client.emulator = emulator  # type: ignore[attr-defined]
        client.dsn = dsn  # type: ignore[attr-defined]
        wait_until_cached(b.log_file, 2)
        yield client


def sql(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    return asyncio.run(fetch(dsn, query, *args))


def signed_in(biz: httpx.Client) -> tuple[dict[str, str], int]:
    token = emulator_token(biz.emulator, f"k{secrets.token_hex(6)}@example.com")
    h = {"Authorization": f"Bearer {token}"}
    return h, expect(biz.get("/v1/me", headers=h), 200)["id"]


def business(biz: httpx.Client, hives: int = 2) -> tuple[dict[str, str], int, list[int]]:
    """A new account (the caller its admin) with `hives` active hives in Berlin."""
    h, _ = signed_in(biz)
    account = expect(biz.post("/v1/accounts", json={"name": "Bee GmbH"}, headers=h), 201)["id"]
    ids = [expect(biz.post(f"/v1/accounts/{account}/hives",
                           json={**HIVE, "name": f"Bee Bar {i}"}, headers=h), 201)["id"]
           for i in range(hives)]
    return h, account, ids
