"""Popular times, forecasts and "best time to go" (issue 18): the insights job and the
endpoints that read what it stored.

    modules: [modules.database, modules.occupancy, modules.api, modules.auth,
              modules.insights]
    insights:
      weeks: 8
    http:
      servers:
        - locations:
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/popular-times$
              content: popular_times
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/forecast$
              content: forecast
              auth: optional          # a signed-in premium user gets the band

Pieces:
- process role `insights job` (job.py): the profile of every hive from the last
  `weeks` weeks of `hive_occupancy_hourly` every `profile_interval` (nightly), the
  forecast of the next 24 hours every `forecast_interval`; set-based SQL, one
  statement per job;
- content handlers `popular_times` and `forecast` (api.py);
- per worker: the current hour's forecast, which adds `expected_now` and `vs_usual`
  to the live occupancy objects (live.py; needs modules.occupancy, listed before);
- command `bizzyd insights [profile|forecast|all]`: run the jobs once now.

Migration 0010 has the tables and the feature `forecast_band`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Bool, Duration, Int
from bizzyd.module import Module, ProcessContext, ProcessRole

from . import job
from .api import State, forecast, popular_times
from .live import Live

NAME = "insights"

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("weeks", Int(min=1, max=52), 8,
                  doc="Weeks of hourly rollups a profile (popular times) is made of."),
        Directive("job", Bool(), True,
                  doc="Run the `insights job` process on this node (several nodes may: "
                      "an advisory lock lets one run each job at a time)."),
        Directive("profile_interval", Duration(), "24h",
                  doc="How often the job recomputes every hive's profile."),
        Directive("forecast_interval", Duration(), "5m",
                  doc="How often the job recomputes every hive's forecast (also at each "
                      "new hour)."),
        Directive("check_interval", Duration(), "30s",
                  doc="How often the job process checks whether a job is due."),
        Directive("job_timeout", Duration(), "5m",
                  doc="statement_timeout of the job's statements."),
        Directive("adjust_hours", Int(min=1, max=24), 6,
                  doc="Complete hours before now that say how today runs against its "
                      "profile (the forecast's adjustment)."),
        Directive("adjust_damping", Duration(), "3h",
                  doc="Today's deviation fades with the horizon as exp(-ahead / this)."),
        Directive("adjust_prior", Int(min=0, max=100), 5,
                  doc="Percent of the capacity per hour added to observed and usual "
                      "before their ratio is taken: small deviations stay near 1."),
        Directive("peak_hours", Int(min=1, max=24), 3,
                  doc="How many peak hours popular-times names."),
        Directive("live_refresh", Duration(), "30s",
                  doc="How often each worker checks for a new forecast (for "
                      "expected_now; also just after each hour starts)."),
    )), doc="Popular times, forecasts and expected_now (modules.insights)."),
)


def check(config: Any) -> None:
    if config.get("database") is None:
        raise ConfigError("the insights module needs modules.database (list it in "
                          "`modules:`)", ("modules",), config.mark(("modules",)))


def init_worker(ctx: ProcessContext) -> None:
    from modules.occupancy import add_fields

    live = Live(ctx, ctx.config[NAME]["live_refresh"])
    ctx.state[NAME] = State(live)
    # without modules.occupancy there is no object to add to (None): the runs are
    # still followed, for the endpoints' cache
    live.start(add_fields(ctx, live.fields))


def exit_worker(ctx: ProcessContext) -> None:
    state = ctx.state.pop(NAME, None)
    if state is not None:
        state.live.close()


def run_command(argv: list[str], config: Any) -> int:
    """`bizzyd insights [profile|forecast|all]`: run the jobs once, now."""
    which = argv[0] if argv else "all"
    if which not in ("profile", "forecast", "all") or len(argv) > 1:
        print("usage: bizzyd insights [profile|forecast|all]")
        return 2
    return asyncio.run(_run_once(config, which))


async def _run_once(config: Any, which: str) -> int:
    settings = config[NAME]
    conn = await job.connect(config)
    try:
        now = datetime.now(UTC)
        runs = []
        if which in ("profile", "all"):
            runs.append(await job.run_profiles(conn, now, settings["weeks"]))
        if which in ("forecast", "all"):
            runs.append(await job.run_forecasts(conn, now, job.forecast_settings(settings)))
    finally:
        await conn.close()
    for run in runs:
        if run is None:
            print("insights: another process is running the job; try again later")
            return 1
        print(f"insights: {run.job} of {run.hives} hives in {run.seconds:.2f}s")
    return 0


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    check=check,
    init_worker=init_worker,
    exit_worker=exit_worker,
    roles=(ProcessRole("insights job", job.main,
                       count=lambda config: 1 if config[NAME]["job"] else 0),),
    content_handlers={"popular_times": popular_times, "forecast": forecast},
    commands={NAME: run_command},
    doc=__doc__ or "",
)

__all__ = ["module"]
