"""memcached clients for any module: one server, or a pool with consistent hashing.

    servers("10.0.0.5:11211,10.0.0.6:11211")  → [("10.0.0.5", 11211), ("10.0.0.6", 11211)]
    client(servers, timeout=0.05)              → pymemcache Client (one) or HashClient

A pool is pymemcache's `HashClient` (rendezvous hashing: a key lives on one server; a
server that leaves moves only its own keys). It is built so that a dead server costs
misses, never errors: `ignore_exc` turns its failures into misses (reads) or dropped
writes, after `retry_attempts` failures it is taken out of the ring (its keys go to the
others) and it is tried again after `dead_timeout`. A caller falls back to Postgres on
a miss, as it does for an expired key. A single server keeps raising, so that its
caller's breaker can skip it while it is down.

Clients are blocking and not thread-safe: one per thread (executors of one thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

RETRY_ATTEMPTS = 1  # failures before a pool server leaves the ring
RETRY_TIMEOUT = 1.0  # seconds before a failed server is tried again
DEAD_TIMEOUT = 10.0  # seconds a dead server stays out of the ring


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def servers(value: str | Sequence[str]) -> list[tuple[str, int]]:
    """'HOST:PORT[,HOST:PORT...]' or a list of them; [] for empty."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [parse_address(i) for i in items if i.strip()]


def client(addresses: Sequence[tuple[str, int]], timeout: float, *,
           dead_timeout: float = DEAD_TIMEOUT) -> Any:
    """A Client for one server, a HashClient (consistent hashing) for several."""
    if len(addresses) == 1:
        return Client(addresses[0], connect_timeout=timeout, timeout=timeout, no_delay=True)
    return HashClient(list(addresses), connect_timeout=timeout, timeout=timeout,
                      no_delay=True, ignore_exc=True, retry_attempts=RETRY_ATTEMPTS,
                      retry_timeout=RETRY_TIMEOUT, dead_timeout=dead_timeout)


def ping(memcached: Any) -> None:
    """Raise unless a server answers (a pool: at least one of them)."""
    if not isinstance(memcached, HashClient):
        memcached.version()
        return
    errors = []
    for one in list(memcached.clients.values()):
        try:
            one.version()
            return
        except Exception as exc:
            errors.append(exc)
    raise ConnectionError(f"no memcached server of the pool answers: {errors}")
