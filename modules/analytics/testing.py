"""The analytics locations of conf/demo.yaml, for tests and benchmarks (nothing here
runs in bizzyd)."""

from __future__ import annotations

from typing import Any

HIVE = "/v1/hives/(?<id>[0-9]+)"
LOCATIONS = (
    (f"~ ^{HIVE}/occupancy/history$", "occupancy_history", "optional"),
    (f"~ ^{HIVE}/occupancy/at$", "occupancy_at", "optional"),
    (f"~ ^{HIVE}/corrections$", "hive_corrections", "required"),
    (f"~ ^{HIVE}/capacity-schedule$", "capacity_schedule", "required"),
)


def analytics_locations(write_limit: dict[str, Any] | None = None,
                        signed_in: bool = True) -> list[dict[str, Any]]:
    """The locations; `signed_in=False`: only the public ones, for a bizzyd without
    modules.auth (no `auth` directive)."""
    out = []
    for match, content, auth in LOCATIONS:
        if not signed_in:
            if auth == "optional":
                out.append({"location": match, "content": content})
            continue
        loc: dict[str, Any] = {"location": match, "content": content, "auth": auth}
        if auth == "required":
            loc["client_max_body_size"] = "64k"
            if write_limit is not None:
                loc["write_limit"] = write_limit
        out.append(loc)
    return out


def add_analytics(config: dict[str, Any], write_limit: dict[str, Any] | None = None,
                  settings: dict[str, Any] | None = None,
                  signed_in: bool = True) -> dict[str, Any]:
    """A config (e.g. modules.business.testing's, or the catalogue's with
    `signed_in=False`) plus analytics, before its api_not_found location."""
    config["modules"].append("modules.analytics")
    if settings:
        config["analytics"] = settings
    locations = config["http"]["servers"][0]["locations"]
    at = next(i for i, loc in enumerate(locations) if loc.get("content") == "api_not_found")
    locations[at:at] = analytics_locations(write_limit, signed_in)
    return config
