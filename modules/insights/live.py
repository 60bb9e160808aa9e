"""`expected_now` and `vs_usual` on the live occupancy objects, from a per-worker copy
of the current hour's forecast; and the versions (last runs) of the stored profiles and
forecasts, which key the endpoints' per-worker cache (api.py).

Each worker keeps {hive: (expected, usual)} for the current UTC hour.  A task checks
every `insights.live_refresh` (and just after each hour starts) whether the forecast
job ran again (`insights_run`) or the hour changed, and only then reads the hour's
rows (one query for all hives) and has the occupancy module render its objects again.
A request costs nothing more: the members are rendered into the cached objects.

`vs_usual` compares the live count with the usual count of this local weekday and
hour (the profile's mean): "busier" when it is above usual by more than the
tolerance, "quieter" when below by more, else "usual"; the tolerance is the largest
of 20 % of usual, 5 % of the capacity and 2 people, so that a handful of people in a
quiet hour is not "busier".  Both members are null while the hive has no forecast.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

RUNS_SQL = "SELECT job, finished_at FROM insights_run"
HOUR_SQL = """
SELECT hive_id, expected, usual FROM hive_occupancy_forecast
WHERE hour = date_trunc('hour', $1::timestamptz)
"""
NULLS = b',"expected_now":null,"vs_usual":null'


def compare(occupancy: int, usual: float, capacity: int) -> bytes:
    """busier / usual / quieter (see the module's docstring)."""
    tolerance = max(0.2 * usual, 0.05 * capacity, 2.0)
    if occupancy > usual + tolerance:
        return b"busier"
    if occupancy < usual - tolerance:
        return b"quieter"
    return b"usual"


class Live:
    """A worker's copy of the current hour's forecast (ctx.state["insights"].live)."""

    def __init__(self, ctx: Any, refresh: float) -> None:
        self.ctx = ctx
        self.refresh = refresh
        self.values: dict[int, tuple[float, float]] = {}
        self.seen: tuple[Any, int] | None = None  # (forecast run, hour) loaded
        self.runs: dict[str, Any] = {}  # job -> finished_at, as of the last check
        self.changed: Any = None  # the occupancy module's fields_changed
        self.task: asyncio.Task[None] | None = None

    def fields(self, hive_id: int, occupancy: int, capacity: int) -> bytes:
        found = self.values.get(hive_id)
        if found is None:
            return NULLS
        expected, usual = found
        return b',"expected_now":%.1f,"vs_usual":"%s"' % (
            expected, compare(occupancy, usual, capacity))

    def start(self, changed: Any) -> None:
        """Poll from now on; `changed` (or None): the occupancy module's re-render."""
        self.changed = changed
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres away: keep the values, try again
                self.ctx.log.warning("insights: expected_now not refreshed: %s", exc)
            now = time.time()
            to_next_hour = 3600 - now % 3600 + 0.5
            await asyncio.sleep(min(self.refresh, to_next_hour))

    async def load(self) -> bool:
        """Read the hour's forecast if the job ran since, or the hour changed."""
        from modules.database import database

        now = datetime.now(UTC)
        hour = int(now.timestamp()) // 3600
        async with database(self.ctx).read_connection() as conn:
            self.runs = {r["job"]: r["finished_at"] for r in await conn.fetch(RUNS_SQL)}
            run = self.runs.get("forecast")
            if self.seen == (run, hour):
                return False
            rows = await conn.fetch(HOUR_SQL, now)
        self.values = {r["hive_id"]: (r["expected"], r["usual"]) for r in rows}
        self.seen = (run, hour)
        if self.changed is not None:
            self.changed()
        return True

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
