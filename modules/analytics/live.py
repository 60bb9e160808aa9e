"""Telling the rest of bizzyd about a corrected live count or a changed capacity
schedule, on the bus to this node's cache manager: OCCUPANCY_SET (a hive's state, as
ingest's OCCUPANCY_UPDATE) or HIVE_REFRESH (re-read the capacity in force).  The manager
updates the shared zone and memcached, tells the workers (streams) and, in a cluster
(`occupancy.peers`), the other nodes' managers."""

from __future__ import annotations

import contextlib
from typing import Any

import zmq

from bizzyd.bus import HIVE_REFRESH, OCCUPANCY_SET, Bus
from bizzyd.module import ProcessContext

NAME = "analytics"


class Live:
    """A worker's bus pusher (created on first use, closed at exit)."""

    def __init__(self, ctx: ProcessContext) -> None:
        self.ctx = ctx
        self.bus: Bus | None = None
        self.pusher: Any = None

    def push(self, frame: bytes) -> None:
        if self.pusher is None:
            self.bus = Bus(self.ctx.config["run_dir"], self.ctx.config["bus_hwm"])
            self.pusher = self.bus.pusher("occupancy.updates", linger_ms=200)
        with contextlib.suppress(zmq.Again):  # no cache manager listening: Postgres has it
            self.pusher.send(frame, zmq.NOBLOCK)

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = self.pusher = None


def _live(ctx: ProcessContext) -> Live:
    live: Live | None = ctx.state.get(f"{NAME}.live")
    if live is None:
        live = ctx.state[f"{NAME}.live"] = Live(ctx)
    return live


def publish(ctx: ProcessContext, row: Any) -> None:
    """Push a hive_occupancy row (after the commit) as OCCUPANCY_SET."""
    _live(ctx).push(OCCUPANCY_SET.encode(row["hive_id"], row["occupancy"], row["total_in"],
                                         row["total_out"], 0, 0, row["updated_at"].timestamp()))


def refresh(ctx: ProcessContext, hive_id: int) -> None:
    """The hive's capacity schedule changed (after the commit): push HIVE_REFRESH."""
    _live(ctx).push(HIVE_REFRESH.encode(hive_id))
