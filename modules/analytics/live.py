"""Telling the rest of bizzyd about a corrected live count: the same OCCUPANCY_UPDATE
frame ingest pushes after a commit, to this node's cache manager, which updates the
shared zone and memcached and tells the workers (streams)."""

from __future__ import annotations

import contextlib
from typing import Any

import zmq

from bizzyd.bus import OCCUPANCY_UPDATE, Bus
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


def publish(ctx: ProcessContext, row: Any) -> None:
    """Push a hive_occupancy row (after the commit) as OCCUPANCY_UPDATE."""
    live: Live | None = ctx.state.get(f"{NAME}.live")
    if live is None:
        live = ctx.state[f"{NAME}.live"] = Live(ctx)
    live.push(OCCUPANCY_UPDATE.encode(row["hive_id"], row["occupancy"], row["total_in"],
                                      row["total_out"], 0, 0, row["updated_at"].timestamp()))
