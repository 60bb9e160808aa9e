"""The response cache of API endpoints: a worker's local table, then memcached, then a fill.

`await cache.get(key, fill)` returns the bytes stored under `key`, calling `fill()`
(an async function that queries Postgres and returns the bytes) only when needed:

1. the worker's local table (`api.local_cache_size` entries, `api.cache_ttl`): a dict
   lookup.  Keys carry the data's version (see versions.py), so a change never serves
   an old entry, locally or in memcached: the entry is simply not asked for again;
2. requests of this worker for a key being looked up wait for that one lookup;
3. memcached (emcache: asyncio, never blocks the loop; concurrent gets are batched
   into one multi-get; each call bounded by `api.memcached_timeout`);
4. on a memcached miss the worker takes the key's fill lock (`add <key>:lock`, expiring
   after `api.fill_lock_ttl`): only the holder fills and stores; the other workers of
   the node (and of other nodes) poll memcached for the value instead of querying
   Postgres, up to `api.fill_wait`, then fill themselves.  So N concurrent misses on
   one key make one query.
5. memcached down (refused, reset, timed out): that request is filled from Postgres
   (`memcached_fallbacks_total`), never a 5xx; after `FAILURES` failures in a row (or
   at once when the connection is refused) a breaker skips memcached for
   `api.memcached_retry`, so requests stop waiting for it.  Postgres down: what the caches hold
   is served; a fill raises the database's 503 with Retry-After.

Counters are in the `metrics.api` zone, one row per worker (exported by /metrics as
`bizzyd_api_<name>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import emcache

from bizzyd.shm import Zone, ZoneSpec
from modules.occupancy.replica import parse_address

ZONE = "metrics.api"
ROWS = 1024
COUNTERS = (
    "local_hits_total",         # answered from the worker's local table
    "memcached_hits_total",     # answered from memcached
    "misses_total",             # memcached had no value
    "fills_total",              # values computed (one database query each)
    "coalesced_total",          # answered by another request's lookup or fill
    "fill_lock_timeouts_total",  # waited for another filler in vain, filled itself
    "memcached_errors_total",   # failed memcached calls
    "memcached_fallbacks_total",  # fills because memcached was unusable
    "uncached_total",           # answered without the cache (versions not known yet)
)
INDEX = {name: i for i, name in enumerate(COUNTERS)}
POLL_FIRST, POLL_MAX = 0.002, 0.02
FAILURES = 3  # memcached failures in a row that open the breaker


def zone_spec() -> ZoneSpec:
    return ZoneSpec(ZONE, tuple((name, "q") for name in COUNTERS), ROWS)


class Metrics:
    """A worker's counters, copied into its zone row at each count but local hits,
    and by a timer; a respawned worker continues from its row."""

    def __init__(self, zone: Zone | None, row: int) -> None:
        self.zone = zone if zone is not None and 0 <= row < ROWS else None
        self.row = row
        self.values = list(self.zone.read(row)) if self.zone is not None \
            else [0] * len(COUNTERS)
        self.timer: Any = None

    def inc(self, name: str) -> None:
        """Count; anything but a local hit (the hot path) is in the zone at once."""
        self.values[INDEX[name]] += 1
        if name != "local_hits_total":
            self.flush()

    def start(self, loop: Any, every: float = 0.5) -> None:
        """Flush every `every` seconds (so a quiet worker's counts are current too)."""
        def tick() -> None:
            self.flush()
            self.timer = loop.call_later(every, tick)
        self.timer = loop.call_later(every, tick)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flush()

    def flush(self) -> None:
        if self.zone is not None:
            self.zone.write(self.row, self.values)


class MemcachedDown(Exception):
    """memcached is skipped (breaker open) or a call failed."""


class Cache:
    """A worker's cache (in `ctx.state["api"].cache`)."""

    def __init__(self, settings: Mapping[str, Any], log: Any, metrics: Metrics) -> None:
        self.log, self.metrics = log, metrics
        self.address = settings["memcached"]
        self.prefix = settings["memcached_prefix"].encode()
        self.ttl = max(1, int(settings["cache_ttl"]))
        self.local_size = settings["local_cache_size"]
        self.timeout = settings["memcached_timeout"]
        self.retry = settings["memcached_retry"]
        self.lock_ttl = max(1, int(settings["fill_lock_ttl"]))
        self.wait = settings["fill_wait"]
        self.local: dict[bytes, tuple[float, bytes]] = {}
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.orphans: dict[bytes, float] = {}  # our fill locks we could not delete
        self.client: Any = None  # emcache.Client, created at the first call
        self.down_until = 0.0
        self.down = False
        self.failures = 0
        self.connecting: asyncio.Future[Any] | None = None

    # -- the lookup ---------------------------------------------------------------------

    async def get(self, key: str | None, fill: Callable[[], Awaitable[bytes]]) -> bytes:
        """The value of `key`, filled once if nothing holds it; `key=None`: no cache."""
        if key is None:
            self.metrics.inc("uncached_total")
            return await fill()
        k = self.prefix + key.encode()
        hit = self.local.get(k)
        if hit is not None and hit[0] > time.monotonic():
            self.metrics.inc("local_hits_total")
            return hit[1]
        task = self.pending.get(k)
        if task is not None:
            self.metrics.inc("coalesced_total")
            return await asyncio.shield(task)
        task = asyncio.ensure_future(self._lookup(k, fill))
        self.pending[k] = task
        task.add_done_callback(lambda t: self._done(k, t))
        return await asyncio.shield(task)

    def _done(self, k: bytes, task: asyncio.Future[bytes]) -> None:
        self.pending.pop(k, None)
        if task.cancelled() or task.exception() is not None:
            return
        if self.local_size:
            if len(self.local) >= self.local_size:
                self.local.clear()
            self.local[k] = (time.monotonic() + self.ttl, task.result())

    async def _lookup(self, k: bytes, fill: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            value = await self._call("get", k)
        except MemcachedDown:
            return await self._fill(fill, "memcached_fallbacks_total")
        if value is not None:
            self.metrics.inc("memcached_hits_total")
            return value
        self.metrics.inc("misses_total")
        lock = k + b":lock"
        try:
            locked = await self._call("add", lock, b"1", exptime=self.lock_ttl)
        except MemcachedDown:  # a timed-out add may still have taken the lock
            self._orphan(lock)
            return await self._fill(fill, "memcached_fallbacks_total")
        if not locked and self.orphans.get(lock, 0.0) <= time.monotonic():
            value = await self._wait_for(k)
            if value is not None:
                self.metrics.inc("coalesced_total")
                return value
            self.metrics.inc("fill_lock_timeouts_total")
        try:
            value = await self._fill(fill)
            with contextlib.suppress(MemcachedDown):
                await self._call("set", k, value, exptime=self.ttl)
        finally:
            if locked:  # also after a failed fill or set: others must not wait for it
                try:
                    await self._call("delete", lock)
                except MemcachedDown:  # it stays until it expires: do not wait for it
                    self._orphan(lock)
        return value

    def _orphan(self, lock: bytes) -> None:
        """A fill lock of ours that may outlive us: this worker will not wait for it."""
        if len(self.orphans) >= 1000:
            self.orphans.clear()
        self.orphans[lock] = time.monotonic() + self.lock_ttl

    async def _fill(self, fill: Callable[[], Awaitable[bytes]],
                    why: str | None = None) -> bytes:
        if why:
            self.metrics.inc(why)
        value = await fill()
        self.metrics.inc("fills_total")
        return value

    async def _wait_for(self, k: bytes) -> bytes | None:
        """Poll memcached for another worker's fill of `k` (None: not in time)."""
        deadline = time.monotonic() + self.wait
        pause = POLL_FIRST
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(POLL_MAX, pause * 2)
            try:
                value = await self._call("get", k)
            except MemcachedDown:
                return None
            if value is not None:
                return value
        return None

    # -- memcached ------------------------------------------------------------------------

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One memcached call, bounded; MemcachedDown when skipped or failed.  `add`
        answers False when the key exists; `get` the value or None."""
        if not self.address:
            raise MemcachedDown("no memcached configured")
        if self.down and time.monotonic() < self.down_until:
            raise MemcachedDown("memcached skipped after failures")
        try:
            client = self.client or await self._connect()
            result = await getattr(client, method)(*args, **kwargs)
        except emcache.NotStoredStorageCommandError:
            result = False
        except (OSError, TimeoutError, emcache.ClusterNoAvailableNodes,
                emcache.CommandError) as exc:
            self._failed(exc)
            raise MemcachedDown(str(exc)) from exc
        self.failures = 0
        if self.down:
            self.down = False
            self.log.notice("api cache: memcached %s reachable again", self.address)
        if method == "get":
            return None if result is None else result.value
        return True if result is None else result

    async def _connect(self) -> Any:
        """The client, created once (concurrent first calls wait for the same one)."""
        connecting = self.connecting
        if connecting is None:
            host, port = parse_address(self.address)
            connecting = self.connecting = asyncio.ensure_future(emcache.create_client(
                [emcache.MemcachedHostAddress(host, port)], timeout=self.timeout,
                connection_timeout=self.timeout, max_connections=4, autobatching=True))
        try:
            self.client = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self.connecting is connecting:
                self.connecting = None
        return self.client

    def _failed(self, exc: BaseException) -> None:
        self.metrics.inc("memcached_errors_total")
        self.failures += 1
        if self.failures < FAILURES and not isinstance(exc, ConnectionRefusedError):
            return
        if not self.down:
            self.log.error("api cache: memcached %s unavailable (%s: %s); skipping it "
                           "for %.0fs at a time", self.address, type(exc).__name__, exc,
                           self.retry)
        self.down = True
        self.down_until = time.monotonic() + self.retry

    async def close(self) -> None:
        self.metrics.stop()
        for task in list(self.pending.values()):
            task.cancel()
        if self.client is not None:
            await _close(self.client)
            self.client = None


async def _close(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 1.0)
