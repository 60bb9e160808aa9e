"""Data versions from Postgres notifications: what makes cache keys change on a change.

Triggers send `NOTIFY <channel> '<id> <version>'` for every change (id 0: everything),
the version being the next value of a sequence.  Each worker LISTENs on its own
connection and keeps:

* `base`: the sequence's value when the listener (re)connected: every id's version
  unless a notification since says otherwise;
* `of(id)`: the version of one entity (base, or its latest notification);
* `latest`: the newest version seen, for entries that depend on everything (lists).

A cache key includes the version it depends on (`hive:42:v1234`), so after a change
the next request asks for a key nobody has: invalidation is as fast as the
notification (milliseconds), on every node, with nothing to delete.  Until the
listener has connected once (`ready` False) the versions are unknown: callers then
bypass the cache.  When the connection is lost (Postgres down) the last versions stay
in use, so cached answers are still served; on the reconnect `base` is read again, so
a change made meanwhile moves every key on.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

RETRY_FIRST, RETRY_MAX = 0.5, 10.0


class Versions:
    """A worker's view of one notification channel (`run()` keeps it connected)."""

    def __init__(self, dsn: str, channel: str, sequence: str, log: Any) -> None:
        self.dsn, self.channel, self.sequence, self.log = dsn, channel, sequence, log
        self.base = 0
        self.latest = 0
        self.by_id: dict[int, int] = {}
        self.ready = False
        self._task: asyncio.Task[None] | None = None

    def of(self, entity: int) -> int:
        return self.by_id.get(entity, self.base)

    def notified(self, payload: str) -> None:
        try:
            entity_text, version_text = payload.split()
            entity, version = int(entity_text), int(version_text)
        except ValueError:
            self.log.error("versions: bad %s payload %r", self.channel, payload[:80])
            return
        if version <= self.base:
            return
        self.latest = max(self.latest, version)
        if entity == 0:
            self.base = version
            self.by_id.clear()
        elif version > self.by_id.get(entity, 0):
            if len(self.by_id) >= 100_000:
                self.base, self.by_id = self.latest, {}
            else:
                self.by_id[entity] = version

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        retry = RETRY_FIRST
        while True:
            try:
                await self._listen()
                retry = RETRY_FIRST
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                self.log.error("versions: listening on %s failed (%s: %s); retrying in %.1fs",
                               self.channel, type(exc).__name__, exc, retry)
            await asyncio.sleep(retry)
            retry = min(RETRY_MAX, retry * 2)

    async def _listen(self) -> None:
        lost = asyncio.Event()
        conn = await asyncpg.connect(self.dsn, timeout=5,
                                     server_settings={"application_name": "bizzyd versions"})
        try:
            conn.add_termination_listener(lambda c: lost.set())
            await conn.add_listener(self.channel, lambda c, pid, ch, payload:
                                    self.notified(payload))
            row = await conn.fetchrow(f"SELECT last_value, is_called FROM {self.sequence}")
            current = row["last_value"] if row["is_called"] else 0
            self.base = max(self.base, current)
            self.latest = max(self.latest, self.base)
            self.by_id = {k: v for k, v in self.by_id.items() if v > self.base}
            self.ready = True
            self.log.info("versions: listening on %s (version %d)", self.channel, self.base)
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
