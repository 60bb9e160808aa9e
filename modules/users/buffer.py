"""Writes taken off the request path: a per-worker buffer flushed in batches.

A request appends rows and returns at once; a task writes them every `interval` (or
sooner once `batch` rows wait) in one statement.  A graceful stop or reload flushes
what is left (`close`).  What a crash (SIGKILL, power loss) can lose is bounded: the
rows of at most one `interval`, at most `limit` rows per worker.  While Postgres is
unreachable rows are kept and retried; when `limit` rows wait, `add` refuses (the
endpoint answers 503) instead of accepting what it could not keep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Write = Callable[[Any, Sequence[tuple]], Awaitable[None]]


class BufferFull(Exception):
    """More rows wait than the buffer may hold."""


class Buffer:
    """Rows waiting to be written by `write(conn, rows)`."""

    def __init__(self, name: str, db: Any, log: Any, write: Write, interval: float,
                 batch: int = 1000, limit: int = 20000) -> None:
        self.name, self.db, self.log, self.write = name, db, log, write
        self.interval, self.batch, self.limit = interval, batch, limit
        self.rows: list[tuple] = []
        self.written = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def add(self, rows: Sequence[tuple]) -> None:
        if len(self.rows) + len(rows) > self.limit:
            raise BufferFull(f"{self.name}: {len(self.rows)} rows wait to be written")
        self.rows.extend(rows)
        if len(self.rows) >= self.batch:
            self.wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)
            self.wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - kept and retried next round
                self.log.error(f"{self.name}: {len(self.rows)} rows not written yet: {exc}")

    async def flush(self) -> None:
        while self.rows:
            rows = self.rows[:self.batch]
            async with self.db.connection() as conn:
                await self.write(conn, rows)
            del self.rows[:len(rows)]
            self.written += len(rows)

    async def close(self) -> None:
        """Stop the task and write what waits (graceful stop, reload)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - nothing left to retry with
            self.log.error(f"{self.name}: {len(self.rows)} rows LOST at exit: {exc}")
