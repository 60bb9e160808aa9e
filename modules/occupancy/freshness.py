"""How fresh a hive's live count is: how many of its sensors reported recently.

Each worker keeps `Freshness.by_hive`: hive id → (last heard from, sensors reporting,
sensors total), refreshed every `occupancy.freshness_interval` by one query over the
`sensor_liveness` view (migration 0011: a sensor reports while it is not silent for 3 x
its reporting interval).  A hive's tuple object is replaced only when its values
change, so the pre-rendered responses (api.py) check it by identity: the hot path
costs one dict lookup, never a query.

Rule (docs/api.md "Live occupancy"): `stale` is true when the hive has no sensors or
at least one of them is offline (the count misses what that door saw); null until the
worker's first refresh.  `as_of` is the later of the count's last change and the
last time any of the hive's sensors was heard from.
"""

from __future__ import annotations

import asyncio
from typing import Any

Fresh = tuple[float, int, int]  # last heard from (epoch s, 0: never), reporting, total

FRESHNESS_SQL = """
SELECT hive_id, coalesce(extract(epoch FROM max(last_seen)), 0)::float8 AS last_seen,
       count(*) FILTER (WHERE NOT offline)::int AS reporting, count(*)::int AS total
FROM sensor_liveness WHERE hive_id IS NOT NULL GROUP BY hive_id
"""
NO_SENSORS: Fresh = (0.0, 0, 0)


class Freshness:
    """A worker's sensor counts per hive (see the module docstring)."""

    def __init__(self, ctx: Any, interval: float) -> None:
        self.ctx, self.interval = ctx, interval
        self.by_hive: dict[int, Fresh] = {}
        self.loaded = False
        self._task: asyncio.Task | None = None

    def get(self, hive_id: int) -> Fresh | None:
        """The hive's tuple (None before the first refresh); identity = unchanged."""
        if not self.loaded:
            return None
        return self.by_hive.get(hive_id, NO_SENSORS)

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except Exception as exc:  # Postgres down: keep the last counts, say so once
                if not failing:
                    self.ctx.log.error("occupancy: freshness refresh failed: %s", exc)
                failing = True
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        from modules.database import database

        async with database(self.ctx).connection() as conn:
            rows = await conn.fetch(FRESHNESS_SQL)
        self.update({r["hive_id"]: (r["last_seen"], r["reporting"], r["total"])
                     for r in rows})

    def update(self, new: dict[int, Fresh]) -> None:
        """Keep the old tuple of every hive whose values did not change."""
        by_hive = self.by_hive
        for hive_id in [h for h in by_hive if h not in new]:
            del by_hive[hive_id]
        for hive_id, fresh in new.items():
            if by_hive.get(hive_id) != fresh:
                by_hive[hive_id] = fresh
        self.loaded = True


def fragment(updated_at: float, fresh: Fresh | None, iso: Any) -> bytes:
    """The freshness members of the live occupancy object (after `source`)."""
    if fresh is None:
        return b',"as_of":%s,"sensors_reporting":null,"sensors_total":null,"stale":null' % (
            iso(updated_at))
    last_seen, reporting, total = fresh
    stale = b"true" if total == 0 or reporting < total else b"false"
    return b',"as_of":%s,"sensors_reporting":%d,"sensors_total":%d,"stale":%s' % (
        iso(max(updated_at, last_seen)), reporting, total, stale)
