"""What a signed-in user does: profile, favourites, recents, notification settings, push
devices, messages, analytics events; and the plan list.  Endpoints on modules.api,
sign-in by modules.auth; docs/api.md documents them.

    modules: [modules.database, modules.api, modules.auth, modules.users, ...]
    http:
      servers:
        - locations:
            - location: = /v1/me
              content: me
              auth: required
            - location: ~ ^/v1/hives/(?<id>[0-9]+)$
              content: hive
              auth: optional
              record_recent: on          # a signed-in read adds the hive to recents

conf/demo.yaml has every location.  Recents and analytics events are written off the
request path in batches (buffer.py: the loss window on a crash is documented there and
in docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Block, ConfigError, Directive
from bizzyd.config.types import Bool, Duration, Int
from bizzyd.http.phases import Request
from bizzyd.module import Module, PhaseHandler, ProcessContext
from modules.auth.users import UserCache
from modules.database import database

from . import queries
from .api import HANDLERS, NAME
from .buffer import Buffer, BufferFull
from .sentiment import Sentiment

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("flush_interval", Duration(), "1s",
                  doc="Analytics events and recents wait at most this long before they "
                      "are written (what a crash of a worker can lose)."),
        Directive("buffer_limit", Int(min=100, max=1_000_000), 20000,
                  doc="Rows a worker keeps waiting at most (Postgres down): beyond it "
                      "POST /v1/events answers 503."),
    )), doc="Signed-in user endpoints (modules.users)."),
    Directive("record_recent", Bool(), False, (HTTP, SERVER, LOCATION),
              doc="A signed-in 200/304 read of this hive location (capture `id`) adds "
                  "the hive to the user's recents (needs auth: optional or required)."),
)


class UsersState:
    """A worker's write buffers (in `ctx.state["users"]`)."""

    def __init__(self, ctx: ProcessContext) -> None:
        settings, db = ctx.config[NAME], database(ctx)
        interval, limit = settings["flush_interval"], settings["buffer_limit"]
        self.events = Buffer("analytics events", db, ctx.log, _write_events, interval,
                             limit=limit)
        self.recents = Buffer("recents", db, ctx.log, _write_recents, interval, limit=limit)
        self.profiles = UserCache(ctx.config["firebase"]["features_ttl"])
        self.sentiment = Sentiment()  # feedback is scored when it is stored


async def _write_events(conn: Any, rows: list[tuple]) -> None:
    await conn.execute(queries.RECORD_EVENTS, *map(list, zip(*rows, strict=True)))


async def _write_recents(conn: Any, rows: list[tuple]) -> None:
    await conn.execute(queries.RECORD_RECENTS, *map(list, zip(*rows, strict=True)))


def check(config: Any) -> None:
    for key, needed in (("database", "database"), ("api", "api"), ("firebase", "auth")):
        if config.get(key) is None:
            raise ConfigError(f"modules.users needs modules.{needed} (list it in "
                              "`modules:` before modules.users)", ("modules",),
                              config.mark(("modules",)))
    for i, server in enumerate(config.servers):
        for j, location in enumerate(server["locations"]):
            if location["record_recent"] and location["auth"] == "off":
                key = ("http", "servers", i, "locations", j, "record_recent")
                raise ConfigError("record_recent needs auth: optional or required here",
                                  key, config.mark(key) or config.mark(key[:-1]))


def init_worker(ctx: ProcessContext) -> None:
    state = ctx.state[NAME] = UsersState(ctx)
    state.events.start()
    state.recents.start()


async def exit_worker(ctx: ProcessContext) -> None:
    state = ctx.state.pop(NAME, None)
    if state is not None:
        await state.events.close()
        await state.recents.close()


def record_recent(request: Request) -> None:
    user = request.ctx.get("user")
    hive = request.captures.get("id")
    if (user is None or hive is None or request.status not in (200, 304)
            or request.method not in ("GET", "HEAD")):  # a business PATCH is no visit
        return
    state = request.process.state.get(NAME)
    if state is None:
        return
    try:
        state.recents.add([(user.user_id, int(hive), dt.datetime.now(dt.UTC))])
    except (BufferFull, ValueError):
        pass  # a recent is a convenience: dropped rather than slowing the read


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    check=check,
    init_worker=init_worker,
    exit_worker=exit_worker,
    content_handlers=HANDLERS,
    phase_handlers=(PhaseHandler("log", record_recent,
                                 applies=lambda cfg: cfg["record_recent"]),),
    doc=__doc__ or "",
)

__all__ = ["module"]
