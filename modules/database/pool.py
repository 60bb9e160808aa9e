"""One asyncpg pool per process, with a circuit breaker for when Postgres is down.

Theory of operation: the pool is created lazily and never raises into a request.
A connection-level failure (refused, reset, pool creation failed) opens the
breaker for a back-off period (doubling up to `reconnect_max_backoff`); while it
is open, `connection()` raises `DatabaseUnavailable` at once (a 503 with
Retry-After) instead of hammering a dead server.  After the period the next
request tries again; success closes the breaker and resets the back-off.  When
Postgres returns, service resumes by itself: asyncpg replaces broken connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg

from bizzyd.http.response import HTTPError

# asyncpg raises InternalClientError ("cannot switch to state 15; another operation
# (2) is in progress") when the server ends the session in the middle of a transaction
# (a Postgres shutdown): a connection failure, and that connection is unusable.
CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                     asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                     asyncpg.InternalClientError)


class DatabaseUnavailable(HTTPError):
    """Postgres cannot be reached: the request gets 503 with Retry-After."""

    def __init__(self, retry_after: float, detail: str) -> None:
        super().__init__(503, f"database unavailable: {detail}",
                         [("Retry-After", str(max(1, math.ceil(retry_after))))])


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (an open transaction
    rolled back, listener callbacks dropped).  asyncpg's default would also send
    `CLOSE ALL; UNLISTEN *; RESET ALL; SELECT pg_advisory_unlock_all()`, a round trip
    on every release (15-75 % of a queue call's time); the contract instead is that
    no module leaves session state on a pooled connection (docs/modules.md)."""


class Database:
    """The per-process pool; lives in `ctx.state["database"]`."""

    def __init__(self, settings: Mapping[str, Any], log: Any) -> None:
        self.settings, self.log = settings, log
        self.pool: asyncpg.Pool | None = None
        self.backoff = 0.0
        self.down_until = 0.0
        self.last_error = ""
        self._creating: asyncio.Lock | None = None
        self.replicas = [Database({**settings, "dsn": dsn, "replicas": []}, log)
                         for dsn in settings.get("replicas") or ()]
        self._next_replica = 0

    async def _get_pool(self) -> asyncpg.Pool:
        if self.pool is not None:
            return self.pool
        self._creating = self._creating or asyncio.Lock()
        async with self._creating:
            if self.pool is None:
                s = self.settings
                self.pool = await asyncpg.create_pool(
                    s["dsn"], min_size=s["pool_min_size"], max_size=s["pool_max_size"],
                    reset=_keep_session, timeout=s["connect_timeout"],
                    command_timeout=s["statement_timeout"],
                    server_settings={"statement_timeout": str(int(s["statement_timeout"] * 1000)),
                                     "application_name": "bizzyd"})
        return self.pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or DatabaseUnavailable while Postgres is down."""
        now = time.monotonic()
        if now < self.down_until:
            raise DatabaseUnavailable(self.down_until - now, self.last_error)
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self.settings["connect_timeout"]) as conn:
                try:
                    yield conn
                except asyncpg.InternalClientError:
                    conn.terminate()  # its protocol state is broken: not back to the pool
                    raise
        except CONNECTION_ERRORS as exc:
            self._failed(exc)
            raise DatabaseUnavailable(self.backoff, self.last_error) from exc
        else:
            self._succeeded()

    @contextlib.asynccontextmanager
    async def read_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A standby's connection (may lag by seconds), else the primary's."""
        for replica in self._replica_order():
            opened = replica.connection()
            try:
                conn = await opened.__aenter__()
            except DatabaseUnavailable:
                continue  # its breaker is open now: the next one, or the primary
            failed = True
            try:
                yield conn
                failed = False
            except BaseException as exc:
                if not await opened.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            finally:
                if not failed:
                    await opened.__aexit__(None, None, None)
            return
        async with self.connection() as conn:
            yield conn

    def _replica_order(self) -> list[Database]:
        n = len(self.replicas)
        if not n:
            return []
        self._next_replica = (self._next_replica + 1) % n
        return self.replicas[self._next_replica:] + self.replicas[:self._next_replica]

    def _failed(self, exc: BaseException) -> None:
        self.backoff = min(self.settings["reconnect_max_backoff"],
                           max(0.5, self.backoff * 2))
        self.down_until = time.monotonic() + self.backoff
        self.last_error = f"{type(exc).__name__}: {exc}".strip(": ")
        self.log.error("database: %s; retrying in %.1fs", self.last_error, self.backoff)

    def _succeeded(self) -> None:
        if self.backoff:
            self.log.notice("database: connection restored")  # type: ignore[attr-defined]
        self.backoff = 0.0
        self.down_until = 0.0

    async def start(self) -> None:
        """Warm the pool; a failure only opens the breaker (the worker still starts)."""
        try:
            await self._get_pool()
        except CONNECTION_ERRORS as exc:
            self._failed(exc)

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
            self.pool = None
