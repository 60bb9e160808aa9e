"""The signed-in locations of conf/demo.yaml, for tests and benchmarks (nothing here runs
in bizzyd)."""

from __future__ import annotations

from typing import Any

from modules.hives.testing import catalogue_config

WRITE_LIMIT = {"rate": "5r/s", "burst": 30, "address_rate": "200r/s", "address_burst": 2000}
ME_LOCATIONS = (
    ("= /v1/me", "me", "4k"),
    ("= /v1/me/favourites", "me_favourites", "1k"),
    ("~ ^/v1/me/favourites/(?<hive_id>[0-9]+)$", "me_favourite", "1k"),
    ("= /v1/me/recent", "me_recent", "1k"),
    ("= /v1/me/notifications", "me_notifications", "8k"),
    ("~ ^/v1/me/notifications/(?<id>[0-9]+)$", "me_notification", "8k"),
    ("= /v1/me/notifications/inbox", "me_inbox", "1k"),
    ("~ ^/v1/me/notifications/inbox/(?<id>[0-9]+)$", "me_inbox_item", "1k"),
    ("= /v1/me/notifications/inbox/read", "me_inbox_read", "1k"),
    ("~ ^/v1/me/devices/(?<fcm_token>[^/]+)$", "me_device", "1k"),
    ("= /v1/me/messages", "me_messages", "8k"),
    ("= /v1/events", "events", "64k"),
)


def user_locations(write_limit: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The signed-in locations (auth: required, small bodies, a write limit)."""
    limit = WRITE_LIMIT if write_limit is None else write_limit
    return [{"location": match, "content": content, "auth": "required",
             "client_max_body_size": size, "write_limit": limit}
            for match, content, size in ME_LOCATIONS] + [
        {"location": "= /v1/subscription-types", "content": "subscription_types"}]


def users_config(port: int, dsn: str, memcached: str, firebase: dict[str, Any],
                 write_limit: dict[str, Any] | None = None, workers: int = 2,
                 extra_locations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The catalogue's config (modules.hives.testing) plus sign-in, the user endpoints,
    the inbox (modules.notifier, its process off) and the App Store notifications; the
    hive detail location records recents."""
    config = catalogue_config(port, dsn, memcached, workers=workers)
    config["modules"] += ["modules.auth", "modules.users", "modules.store", "modules.queue",
                          "modules.notifier"]
    config["firebase"] = firebase
    config["notifier"] = {"enabled": False}   # the inbox endpoints only
    config["users"] = {"flush_interval": "200ms"}
    locations = config["http"]["servers"][0]["locations"]
    for loc in locations:
        if loc.get("content") == "hive":
            loc.update({"auth": "optional", "record_recent": True})
    at = next(i for i, loc in enumerate(locations) if loc.get("content") == "api_not_found")
    locations[at:at] = [*user_locations(write_limit), *(extra_locations or []),
                        {"location": "= /v1/store/apple", "content": "store_apple",
                         "client_max_body_size": "64k"}]
    return config
