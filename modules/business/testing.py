"""The business locations of conf/demo.yaml, for tests (nothing here runs in bizzyd)."""

from __future__ import annotations

import os
from typing import Any

from modules.users.testing import users_config

ACCOUNT = "/v1/accounts/(?<id>[0-9]+)"
LOCATIONS = (
    ("= /v1/accounts", "accounts"),
    (f"~ ^{ACCOUNT}$", "account"),
    (f"~ ^{ACCOUNT}/members$", "account_members"),
    (f"~ ^{ACCOUNT}/members/(?<user_id>[0-9]+)$", "account_member"),
    (f"~ ^{ACCOUNT}/audit$", "account_audit"),
    (f"~ ^{ACCOUNT}/hives$", "account_hives"),
    ("~ ^/v1/deals/(?<id>[0-9]+)$", "deal"),
    ("~ ^/v1/hives/(?<id>[0-9]+)/sensors$", "hive_sensors"),
    ("~ ^/v1/images/(?<id>[0-9]+)$", "image"),
)
# the sensor configuration push also answers trusted callers without a token
SENSOR_CONFIG = {"location": r"~ ^/v1/sensors/(?<sensor>[A-Za-z0-9_.-]{1,64})/config$",
                 "content": "sensor_config_managed", "auth": "optional",
                 "client_max_body_size": "4k"}
# the public hive and hive deals locations also take the business writes
SHARED = {"hive": "hive_managed", "hive_deals": "hive_deals_managed",
          "hive_images": "hive_images_managed"}
IMMUTABLE = [["Cache-Control", "public, max-age=31536000, immutable"]]


def business_locations(write_limit: dict[str, Any]) -> list[dict[str, Any]]:
    return [*({"location": match, "content": content, "auth": "required",
               "client_max_body_size": "16k", "write_limit": write_limit}
              for match, content in LOCATIONS),
            {**SENSOR_CONFIG, "write_limit": write_limit}]


def business_config(port: int, dsn: str, memcached: str, firebase: dict[str, Any],
                    write_limit: dict[str, Any], images_dir: str,
                    workers: int = 2) -> dict[str, Any]:
    """The users' config (modules.users.testing) plus the business endpoints, and the
    uploaded images served from `images_dir` at /images/ (1 MB, 4 Mpx at most).  The
    configuration push publishes to the broker of `scripts/services` (its own topic
    prefix); no caller is trusted without a token."""
    images = {"location": "/images/", "alias": images_dir.rstrip("/") + "/",
              "add_header": IMMUTABLE}
    config = users_config(port, dsn, memcached, firebase, workers=workers,
                          extra_locations=[*business_locations(write_limit), images])
    config["modules"] += ["modules.mqtt_ingest", "modules.business"]
    config["business"] = {"images_dir": images_dir, "image_max_bytes": "1m",
                          "image_max_pixels": 4_000_000,
                          "images_url": f"http://127.0.0.1:{port}/images",
                          "sensor_config_trusted": []}
    config["mqtt"] = {"port": int(os.environ.get("BIZZYD_MQTT_PORT", "21883")),
                      "topic_prefix": f"biz{port}", "client_id": f"biz{port}",
                      "session_expiry": "10s", "reconnect_max_backoff": "1s"}
    for loc in config["http"]["servers"][0]["locations"]:
        if loc.get("content") in SHARED:
            loc.update({"content": SHARED[loc["content"]], "auth": "optional",
                        "client_max_body_size": "2m", "write_limit": write_limit})
    return config
