"""Configs and data for tests and benchmarks of the catalogue (nothing here runs in
bizzyd): the locations of conf/demo.yaml's catalogue, a config around them, and a
demo city in a database."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

ENDPOINTS = (
    ("= /v1/hives", "hives"),
    ("~ ^/v1/hives/(?<id>[0-9]+)$", "hive"),
    ("~ ^/v1/hives/(?<id>[0-9]+)/images$", "hive_images"),
    ("~ ^/v1/hives/(?<id>[0-9]+)/deals$", "hive_deals"),
    ("= /v1/hive-types", "hive_types"),
    ("= /v1/deals", "deals"),
    ("= /v1/openapi.json", "openapi"),
)


def catalogue_locations(filters: bool = True) -> list[dict[str, Any]]:
    """The catalogue's locations; with ETag/304 and CORS as in conf/demo.yaml."""
    extra = {"etag": True, "cors_allow_origins": ["*"],
             "cors_expose_headers": ["ETag"]} if filters else {}
    return [{"location": match, "content": content, **extra}
            for match, content in ENDPOINTS]


def catalogue_config(port: int, dsn: str, memcached: str, workers: int = 2,
                     api: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A bizzyd config serving the catalogue (and /health, /metrics, occupancy) on
    `port`; the cache's key prefix is new each time, so runs never share entries."""
    return {
        "modules": ["modules.database", "modules.status", "modules.gzip",
                    "modules.conditional", "modules.cors", "modules.occupancy",
                    "modules.api", "modules.hives"],
        "worker_processes": workers,
        "error_log_level": "info",
        "worker_shutdown_timeout": "5s",
        "database": {"dsn": dsn, "connect_timeout": "1s", "reconnect_max_backoff": "2s"},
        "occupancy": {"memcached": memcached,
                      "memcached_prefix": f"t{secrets.token_hex(4)}:occ:"},
        "api": {"memcached": memcached,
                "memcached_prefix": f"t{secrets.token_hex(4)}:api:", **(api or {})},
        "http": {"gzip": True, "servers": [{
            "listen": [f"127.0.0.1:{port}"],
            "locations": [
                {"location": "= /health", "return": [200, '{"status":"ok"}']},
                {"location": "= /metrics", "content": "metrics"},
                {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy$",
                 "content": "occupancy"},
                *catalogue_locations(),
                {"location": "/v1/", "content": "api_not_found"},
                {"location": "/", "return": [404, '{"status":404}']},
            ],
        }]},
        **extra,
    }


async def load_demo(dsn: str, hives: int, seed: int = 1, days: int = 1,
                    now: str | None = None) -> None:
    """Migrate and load a demo city of `hives` hives (quietly); its history ends at `now`
    (ISO, whole UTC hour; default today 00:00 UTC)."""
    from modules.demo_data.generate import generate, parse_args

    anchor = ["--now", now] if now else []
    await generate(parse_args(["--hives", str(hives), "--seed", str(seed),
                               "--days", str(days), *anchor], dsn), report=lambda line: None)


def wait_until_cached(log: Path, workers: int, timeout: float = 15.0) -> None:
    """Wait until every worker listens for catalogue changes (its error log says so):
    until then its answers bypass the cache (`uncached_total`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.count("versions: listening on bizzyd_catalogue") >= workers:
            return
        time.sleep(0.05)
    raise AssertionError(f"not every worker listened for catalogue changes in {timeout}s")


def metric(client: Any, name: str) -> int:
    """A counter of the API cache (metrics.api, summed over workers)."""
    text = client.get("/metrics").text
    m = re.search(rf"^bizzyd_api_{name} (\d+)$", text, re.M)
    assert m, f"no bizzyd_api_{name} in /metrics"
    return int(m.group(1))
