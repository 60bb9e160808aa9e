"""The business locations of conf/demo.yaml, for tests (nothing here runs in bizzyd)."""

from __future__ import annotations

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
)
# the public hive and hive deals locations also take the business writes
SHARED = {"hive": "hive_managed", "hive_deals": "hive_deals_managed"}


def business_locations(write_limit: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"location": match, "content": content, "auth": "required",
             "client_max_body_size": "16k", "write_limit": write_limit}
            for match, content in LOCATIONS]


def business_config(port: int, dsn: str, memcached: str, firebase: dict[str, Any],
                    write_limit: dict[str, Any], workers: int = 2) -> dict[str, Any]:
    """The users' config (modules.users.testing) plus the business endpoints."""
    config = users_config(port, dsn, memcached, firebase, workers=workers,
                          extra_locations=business_locations(write_limit))
    config["modules"].append("modules.business")
    for loc in config["http"]["servers"][0]["locations"]:
        if loc.get("content") in SHARED:
            loc.update({"content": SHARED[loc["content"]], "auth": "optional",
                        "client_max_body_size": "16k", "write_limit": write_limit})
    return config
