"""The dashboard's locations of conf/demo.yaml, for tests (nothing here runs in bizzyd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WEB = Path(__file__).resolve().parent / "web"
DIST = WEB / "dist"
IMMUTABLE = [["Cache-Control", "public, max-age=31536000, immutable"]]
REVALIDATE = [["Cache-Control", "no-cache"]]


def dashboard_locations(dist: Path = DIST) -> list[dict[str, Any]]:
    """/dashboard/: the config, the fingerprinted assets (cached for a year), the rest
    (the index: revalidated at every load)."""
    return [
        {"location": "= /dashboard/config.json", "content": "dashboard_config"},
        {"location": "/dashboard/assets/", "alias": f"{dist}/assets/",
         "add_header": IMMUTABLE},
        {"location": "/dashboard/", "alias": f"{dist}/", "add_header": REVALIDATE},
    ]
