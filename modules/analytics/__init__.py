"""Occupancy analytics, the series part (issue 18): history in buckets, the count at an
instant, corrections and the capacity schedule, all from the rollups ingest keeps
current (migration 0009; modules/mqtt_ingest/rollup.py), never from sensor_report.

    modules: [modules.database, modules.api, modules.auth, modules.analytics, ...]
    analytics:
      free_history: 24h        # further back: feature occupancy_history
      retention_5m: 35d        # the 5-minute level
      retention_hourly: 0      # 0: forever
      retention_daily: 0
    http:
      servers:
        - locations:
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/occupancy/history$
              content: occupancy_history
              auth: optional           # more than 24 h back: feature occupancy_history
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/occupancy/at$
              content: occupancy_at
              auth: optional
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/corrections$
              content: hive_corrections
              auth: required
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/capacity-schedule$
              content: capacity_schedule
              auth: required

Every worker runs the retention sweep each `cleanup_interval`; a transaction-scoped
advisory lock lets one of them do it per round.  docs/api.md "Occupancy analytics".
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Duration, Int, Size
from bizzyd.module import Module, ProcessContext

from . import queries
from .api import HANDLERS, NAME
from .cache import Bodies

SWEEP_LOCK = 0x6269_7A7A_7931_3861  # pg advisory lock key of the retention sweep

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("retention_5m", Duration(), "35d",
                  doc="How long 5-minute rollup rows are kept (history with bucket 5m or "
                      "15m, and the count at an instant to 5-minute resolution)."),
        Directive("retention_hourly", Duration(), 0,
                  doc="How long hourly rollup rows are kept; 0 keeps them forever."),
        Directive("retention_daily", Duration(), 0,
                  doc="How long daily rollup rows are kept; 0 keeps them forever."),
        Directive("free_history", Duration(), "24h",
                  doc="How far back history and the count at an instant go for anyone; "
                      "further back needs the feature occupancy_history (modules.auth)."),
        Directive("cache_size", Int(min=0, max=100_000), 64,
                  doc="History answers each worker keeps for windows that ended over an "
                      "hour ago (0: none); a correction, schedule or hive change makes "
                      "new keys at once."),
        Directive("day_cache", Size(), "32m",
                  doc="Memory each worker gives to the rendered buckets of whole UTC days "
                      "that ended over an hour ago, so a window up to now renders only "
                      "its newest hours (0: none; about 6 KB per day of hourly buckets)."),
        Directive("cache_ttl", Duration(), "60s",
                  doc="How long such an answer is served: late reports into an old "
                      "window show after this at most."),
        Directive("cleanup_interval", Duration(), "1h",
                  doc="How often rows past their retention are deleted (one worker per "
                      "round, by an advisory lock)."),
    )), doc="Occupancy analytics (modules.analytics)."),
)


def check(config: Any) -> None:
    for key, needed in (("database", "database"), ("api", "api")):
        if config.get(key) is None:
            raise ConfigError(f"modules.analytics needs modules.{needed} (list it in "
                              "`modules:` before modules.analytics)", ("modules",),
                              config.mark(("modules",)))
    settings = config[NAME]
    if settings["retention_5m"] < 86400:
        key = (NAME, "retention_5m")
        raise ConfigError("retention_5m must be at least 1d (corrections and the count "
                          "at an instant read the last day)", key, config.mark(key))


def _interval(seconds: float) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds > 0 else None


async def sweep(conn: Any, settings: Any) -> tuple[int, int, int] | None:
    """Delete rollup rows past their retention; None when another worker holds the
    round's lock."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK):
            return None
        row = await conn.fetchrow(queries.RETENTION, _interval(settings["retention_5m"]),
                                  _interval(settings["retention_hourly"]),
                                  _interval(settings["retention_daily"]))
        return row[0], row[1], row[2]


async def _sweeper(ctx: ProcessContext) -> None:
    from modules.database import database

    settings = ctx.config[NAME]
    while True:
        await asyncio.sleep(settings["cleanup_interval"])
        try:
            async with database(ctx).connection() as conn:
                done = await sweep(conn, settings)
            if done and any(done):
                ctx.log.info("analytics: deleted %d 5-minute, %d hourly, %d daily rollup "
                             "rows past their retention", *done)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            ctx.log.warning("analytics: retention sweep failed: %s", exc)


def init_worker(ctx: ProcessContext) -> None:
    settings = ctx.config[NAME]
    ctx.state[f"{NAME}.bodies"] = Bodies(settings["cache_size"], settings["cache_ttl"])
    ctx.state[f"{NAME}.days"] = Bodies(1 << 30, settings["cache_ttl"], settings["day_cache"])
    ctx.state[f"{NAME}.sweeper"] = asyncio.get_running_loop().create_task(_sweeper(ctx))


async def exit_worker(ctx: ProcessContext) -> None:
    task = ctx.state.pop(f"{NAME}.sweeper", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    live = ctx.state.pop(f"{NAME}.live", None)
    if live is not None:
        live.close()


module = Module(name=NAME, directives=DIRECTIVES, check=check, init_worker=init_worker,
                exit_worker=exit_worker, content_handlers=HANDLERS, doc=__doc__ or "")

__all__ = ["module", "sweep"]
