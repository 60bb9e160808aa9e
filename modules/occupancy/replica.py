"""The memcached replica of the occupancy zone (pymemcache).

Key `<prefix><hive id>` (default `bizzyd:occ:42`), value JSON:

    {"hive_id": 42, "occupancy": 17, "capacity": 120, "total_in": 1000,
     "total_out": 983, "updated_at": 1714564800.123, "sequence": 1801...}

(`updated_at` in seconds since the epoch, 0 when the hive never reported), with a
TTL of `occupancy.memcached_ttl`.  The cache manager writes it (`set_many`, noreply)
for every change and refreshes all of it every half TTL; workers read it for the
hives their zone does not have (before the cache loader is done, or past a full
zone), before they ask Postgres.  Other nodes' managers write the same keys.

`occupancy.memcached` may name several servers (a pool: pymemcache's HashClient with
consistent hashing, modules/database/memcached.py): a dead one costs misses, which
fall back to Postgres, and its keys move to the others.

memcached is optional: every call is bounded by `occupancy.memcached_timeout`
(connect and read), and after a failure a `Breaker` skips memcached for
`occupancy.memcached_retry` before the next try, logging once per outage.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modules.database import memcached
from modules.database.memcached import parse_address  # noqa: F401  (public name)


def encode(hive_id: int, occupancy: int, capacity: int, total_in: int, total_out: int,
           updated_at: float, sequence: int) -> bytes:
    return json.dumps({"hive_id": hive_id, "occupancy": occupancy, "capacity": capacity,
                       "total_in": total_in, "total_out": total_out,
                       "updated_at": updated_at, "sequence": sequence},
                      separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any] | None:
    """A replica value, or None when it is not one (another writer's garbage)."""
    try:
        value = json.loads(data)
        return value if isinstance(value, dict) and isinstance(value.get("hive_id"), int) \
            else None
    except ValueError:
        return None


class Breaker:
    """Skip a failing service for `retry` seconds; log once per outage."""

    def __init__(self, what: str, retry: float, log: Any) -> None:
        self.what, self.retry, self.log = what, retry, log
        self.down_until = 0.0
        self.down = False

    def open(self) -> bool:
        """True while the service should be skipped."""
        return self.down and time.monotonic() < self.down_until

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.log.error("%s unavailable (%s: %s); retrying every %.0fs meanwhile",
                           self.what, type(exc).__name__, exc, self.retry)
        self.down = True
        self.down_until = time.monotonic() + self.retry

    def succeeded(self) -> bool:
        """Record a success; True when it ends an outage."""
        was_down = self.down
        if was_down:
            self.log.notice("%s reachable again", self.what)
        self.down = False
        return was_down


def client(settings: Mapping[str, Any]) -> Any:
    """One server, or a pool with consistent hashing (`memcached: "a:1,b:2"`)."""
    return memcached.client(memcached.servers(settings["memcached"]),
                            settings["memcached_timeout"])


class ReplicaReader:
    """A worker's memcached reads.

    pymemcache is blocking; a worker's loop must not block.  The calls run in a
    one-thread executor (a client used by one thread only), so a slow or remote
    memcached costs the loop nothing: the request awaits a future.  The socket
    timeouts (~50 ms) bound how long the thread can be stuck, and `wait_for`
    bounds the request, so a request's fallback never waits longer than that.
    This is only the cold path (a zone miss); zone hits never get here.
    """

    def __init__(self, settings: Mapping[str, Any], log: Any) -> None:
        self.settings = settings
        self.prefix = settings["memcached_prefix"]
        self.enabled = bool(settings["memcached"])
        self.breaker = Breaker(f"memcached {settings['memcached']}",
                               settings["memcached_retry"], log)
        self.bound = settings["memcached_timeout"] * 3 + 0.05
        self._client: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def _get_many(self, keys: list[str]) -> dict[str, bytes]:
        if self._client is None:
            self._client = client(self.settings)
        try:
            return self._client.get_many(keys)
        except Exception:
            self._client.close()
            raise

    async def get_many(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Replica values by hive id; {} when memcached is off, down or slow."""
        if not self.enabled or self.breaker.open():
            return {}
        keys = [f"{self.prefix}{i}" for i in ids]
        if not keys:
            return {}
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="occupancy-memcached")
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._get_many, keys), self.bound)
        except Exception as exc:
            self.breaker.failed(exc)
            return {}
        self.breaker.succeeded()
        out = {}
        for data in found.values():
            value = decode(data)
            if value is not None:
                out[value["hive_id"]] = value
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._client is not None:
            self._client.close()
            self._client = None
