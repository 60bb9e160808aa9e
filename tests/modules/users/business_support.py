"""A bizzyd with the business endpoints, and helpers, for the business tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bizzyd_proc import free_port, running
from modules.business.testing import business_config
from modules.hives.testing import wait_until_cached

# the matrix writes far more than a person would: no 429 in the way
WRITE_LIMIT = {"rate": "1000r/s", "burst": 5000, "address_rate": "1000r/s",
               "address_burst": 5000}


def start(tmp_path_factory: pytest.TempPathFactory, dsn: str, emulator: str,
          project: str) -> Iterator[httpx.Client]:
    port = free_port()
    firebase = {"project_id": project, "emulator": emulator, "features_ttl": "0s"}
    prefix = tmp_path_factory.mktemp("business")
    config = business_config(port, dsn, os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211"),
                             firebase, WRITE_LIMIT, str(prefix / "images"))
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.bizzyd = b  # type: ignore[attr-defined]
        client.emulator = emulator  # type: ignore[attr-defined]
        client.dsn = dsn  # type: ignore[attr-defined]
        client.images = prefix / "images"  # type: ignore[attr-defined]
        wait_until_cached(b.log_file, 2)
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


HIVE = {"name": "Bee Bar", "type": "bar", "capacity": 80, "timezone": "Europe/Berlin",
        "status": "active", "description": "a test bar",
        "address": {"street": "Hauptstr. 1", "city": "Berlin", "country": "DE",
                    "zip": "10115", "latitude": 52.53, "longitude": 13.38}}
DEAL = {"title": "Two for one", "kind": "happy_hour",
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2099-01-01T00:00:00Z"}


def expect(r: httpx.Response, status: int, param: str | None = None) -> Any:
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        if param is not None:
            assert body["invalid_params"][0]["name"] == param, body
        return body
    return r.json() if r.content else None
