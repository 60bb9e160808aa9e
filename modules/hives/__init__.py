"""The public catalogue API: find hives (search, map, proximity), a hive's details,
images and deals, hive types, the deal feed.  Account-free, cached in memcached,
with live occupancy from the shared zone.  Built on modules.api (routes, validation,
problem+json, OpenAPI, cache); docs/api.md documents the endpoints.

    modules: [modules.database, modules.api, modules.occupancy, modules.hives,
              modules.conditional, modules.gzip, modules.cors]
    http:
      servers:
        - locations:
            - location: = /v1/hives
              content: hives
            - location: ~ ^/v1/hives/(?<id>[0-9]+)$
              content: hive
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/images$
              content: hive_images
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/deals$
              content: hive_deals
            - location: = /v1/hive-types
              content: hive_types
            - location: = /v1/deals
              content: deals

Per worker: a `Catalogue` (api.py) with the LISTEN connection that tracks catalogue
versions (modules.api.versions) and the occupancy overlay (render.py).
Needs the PostGIS migration 0005 (`bizzyd migrate up`).
"""

from __future__ import annotations

from typing import Any

from bizzyd.config.schema import ConfigError
from bizzyd.module import Module, ProcessContext

from .api import HANDLERS, NAME, Catalogue


def check(config: Any) -> None:
    for needed in ("database", "api"):
        if config.get(needed) is None:
            raise ConfigError(f"the hives module needs modules.{needed} (list it in "
                              "`modules:` before modules.hives)", ("modules",),
                              config.mark(("modules",)))


def init_worker(ctx: ProcessContext) -> None:
    cat = ctx.state[NAME] = Catalogue(ctx)
    cat.versions.start()


async def exit_worker(ctx: ProcessContext) -> None:
    cat = ctx.state.pop(NAME, None)
    if cat is not None:
        await cat.versions.close()


module = Module(
    name=NAME,
    check=check,
    init_worker=init_worker,
    exit_worker=exit_worker,
    content_handlers=HANDLERS,
    doc=__doc__ or "",
)

__all__ = ["module"]
