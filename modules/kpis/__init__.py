"""Sensor health, business KPIs and feedback (issue 18): `GET /v1/hives/{id}/health`,
`GET /v1/accounts/{id}/kpis`, `GET /v1/accounts/{id}/feedback`, for viewers of the
account (modules.business's rule).  Reads counters kept at write time (migration 0011):
the hourly occupancy rollup, `hive_usage_hourly` (user_analytics events, by trigger),
`sensor_door_daily` (ingest) and the sentiment stored with each feedback message.

    modules: [modules.database, modules.api, modules.auth, modules.users,
              modules.business, modules.kpis]
    http:
      servers:
        - locations:
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/health$
              content: hive_health
              auth: required
            - location: ~ ^/v1/accounts/(?<id>[0-9]+)/kpis$
              content: account_kpis
              auth: required
            - location: ~ ^/v1/accounts/(?<id>[0-9]+)/feedback$
              content: account_feedback
              auth: required

`bizzyd sentiment-backfill` scores feedback stored before migration 0011.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Duration, Int
from bizzyd.module import Module
from modules.users.sentiment import Sentiment

from . import queries
from .api import HANDLERS, NAME

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("door_imbalance_threshold", Int(min=1, max=1_000_000), 20,
                  doc="A sensor's door is flagged in the health endpoint when its "
                      "entries minus exits over the hive's last complete local day is "
                      "further than this from 0 (a failing or misaligned sensor)."),
        Directive("battery_empty_mv", Int(min=0, max=65535), 3300,
                  doc="Battery voltage shown as 0 % (health: battery %, linear)."),
        Directive("battery_full_mv", Int(min=1, max=65535), 4200,
                  doc="Battery voltage shown as 100 %."),
        Directive("default_window", Duration(), "7d",
                  doc="KPI window when `from` is not given (it ends at `to`, default now)."),
        Directive("feedback_window", Duration(), "30d",
                  doc="Feedback window when `from` is not given."),
        Directive("max_window", Duration(), "400d",
                  doc="Longest KPI, comparison or feedback window (422 beyond)."),
    )), doc="Sensor health, business KPIs and feedback (modules.kpis)."),
)


def check(config: Any) -> None:
    if config.get("business") is None:
        raise ConfigError("modules.kpis needs modules.business (list it in `modules:` "
                          "before modules.kpis)", ("modules",), config.mark(("modules",)))
    settings = config[NAME]
    if settings["battery_full_mv"] <= settings["battery_empty_mv"]:
        key = (NAME, "battery_full_mv")
        raise ConfigError("battery_full_mv must be above battery_empty_mv", key,
                          config.mark(key))


async def backfill(dsn: str, batch: int = 500) -> int:
    """Score every feedback message without a sentiment; returns how many."""
    analyser, done = Sentiment(), 0
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        while rows := await conn.fetch(queries.UNSCORED, batch):
            await conn.execute(queries.SCORE, [r["id"] for r in rows],
                               [analyser.score(r["content"]) for r in rows])
            done += len(rows)
    finally:
        await conn.close()
    return done


def backfill_command(argv: list[str], config: Any) -> int:
    parser = argparse.ArgumentParser(prog="bizzyd sentiment-backfill",
                                     description="Score feedback stored without a sentiment "
                                                 "(before migration 0011).")
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction")
    args = parser.parse_args(argv)
    done = asyncio.run(backfill(config["database"]["dsn"], args.batch))
    print(f"scored {done} feedback messages")
    return 0


module = Module(name=NAME, directives=DIRECTIVES, check=check, content_handlers=HANDLERS,
                commands={"sentiment-backfill": backfill_command}, doc=__doc__ or "",
                requires=("modules.business",))

__all__ = ["backfill", "module"]
