"""The JSON API toolkit: route declarations, parameter validation, problem+json errors,
OpenAPI generation, msgspec encoding and the response cache (memcached).

    modules: [modules.database, modules.api, modules.occupancy, modules.hives]
    api:
      memcached: 127.0.0.1:21211
      cache_ttl: 120s
    http:
      servers:
        - locations:
            - location: = /v1/openapi.json
              content: openapi

Endpoint modules (modules.hives) declare `Route`s with `endpoint` (routes.py), raise
`Problem` (problem.py) and cache through `api_state(ctx).cache` (cache.py), keyed by
`Versions` (versions.py).  docs/modules.md "Writing a JSON API endpoint" shows how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bizzyd.config.schema import Block, Directive
from bizzyd.config.types import Custom, Duration, Int, Str
from bizzyd.module import Module, ProcessContext
from modules.occupancy import memcached_address

from .cache import Cache, Metrics, zone_spec
from .openapi import document, openapi
from .params import BBox, Bool, Enum, Kind, LatLon, Param
from .params import Duration as DurationParam
from .params import Int as IntParam
from .params import Str as StrParam
from .problem import PROBLEM_TYPE, Problem, ProblemDetails
from .routes import Call, Reply, Route, endpoint, methods, not_found
from .versions import Versions

NAME = "api"


DIRECTIVES = (
    Directive(NAME, Block((
        Directive("memcached", Custom("HOST:PORT or empty", memcached_address), "127.0.0.1:21211",
                  doc="memcached server of the API response cache (HOST:PORT); empty: "
                      "no memcached (every miss of the local table is a query)."),
        Directive("memcached_prefix", Str(), "bizzyd:api:",
                  doc="Key prefix of the API cache's entries."),
        Directive("cache_ttl", Duration(), "120s",
                  doc="How long a cached response may be served (memcached and local)."),
        Directive("local_cache_size", Int(min=0, max=1 << 20), 10000,
                  doc="Entries each worker keeps in memory in front of memcached "
                      "(0: none, every request asks memcached)."),
        Directive("memcached_timeout", Duration(), "250ms",
                  doc="Bound of each memcached call (and of connecting)."),
        Directive("memcached_retry", Duration(), "5s",
                  doc="After a memcached failure, skip it this long (fill from Postgres)."),
        Directive("fill_lock_ttl", Duration(), "10s",
                  doc="Expiry of a key's fill lock (a filler that died frees it then)."),
        Directive("fill_wait", Duration(), "6s",
                  doc="How long a miss waits for another worker's fill before it "
                      "queries Postgres itself (about database.statement_timeout: as "
                      "long as a fill may take)."),
        Directive("cursor_key", Str(), "bizzyd-cursor",
                  doc="Key of the checksum that makes pagination cursors tamper-evident."),
    )), doc="JSON API: response cache and pagination settings."),
)


@dataclass
class ApiState:
    """A worker's API objects (in `ctx.state["api"]`)."""

    settings: Any
    cache: Cache
    metrics: Metrics


def api_state(ctx: ProcessContext) -> ApiState:
    """The worker's ApiState (for endpoint modules)."""
    return ctx.state[NAME]


def init_worker(ctx: ProcessContext) -> None:
    settings = ctx.config[NAME]
    metrics = Metrics(ctx.zones.get(zone_spec().name), ctx.slot)
    metrics.start(ctx.loop)
    ctx.state[NAME] = ApiState(settings, Cache(settings, ctx.log, metrics), metrics)


async def exit_worker(ctx: ProcessContext) -> None:
    state = ctx.state.pop(NAME, None)
    if state is not None:
        await state.cache.close()


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    zones=lambda config: [zone_spec()],
    init_worker=init_worker,
    exit_worker=exit_worker,
    content_handlers={"openapi": openapi, "api_not_found": not_found},
    doc=__doc__ or "",
)

__all__ = ["BBox", "Bool", "Call", "DurationParam", "Enum", "IntParam", "Kind", "LatLon",
           "PROBLEM_TYPE", "Param", "Problem", "ProblemDetails", "Reply", "Route",
           "StrParam", "Versions", "api_state", "document", "endpoint", "methods", "module"]
