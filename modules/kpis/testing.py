"""The kpis locations of conf/demo.yaml, for tests (nothing here runs in bizzyd)."""

from __future__ import annotations

from typing import Any

LOCATIONS = (
    ("~ ^/v1/hives/(?<id>[0-9]+)/health$", "hive_health"),
    ("~ ^/v1/accounts/(?<id>[0-9]+)/kpis$", "account_kpis"),
    ("~ ^/v1/accounts/(?<id>[0-9]+)/feedback$", "account_feedback"),
)


def kpis_locations() -> list[dict[str, Any]]:
    return [{"location": match, "content": content, "auth": "required"}
            for match, content in LOCATIONS]


def kpis_config(config: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A business config (modules.business.testing) with the kpis endpoints added."""
    config["modules"].append("modules.kpis")
    config["http"]["servers"][0]["locations"][:0] = kpis_locations()
    config["kpis"] = settings
    return config
