"""A worker's cache of history it has rendered, in two layers:

- whole answers for windows that ended a while ago (`analytics.cache_size`);
- the buckets of whole UTC days that ended a while ago (`analytics.day_cache`), so a
  window reaching up to now (the app's "last year") renders only its first partial day
  and its last hours: a year of hours costs a day's rows, not 8,760 of them.

Keys carry the hive's version (its row, corrections and capacity schedule), so a change
there makes new keys at once.  Late reports into a settled window show after
`analytics.cache_ttl` at most.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable

MAX_BODY = 8 << 20  # larger answers are not kept


class Bodies:
    """A bounded LRU of encoded texts (at most `size` of them and `max_bytes` in all),
    each valid for `ttl` seconds."""

    def __init__(self, size: int, ttl: float, max_bytes: int = 1 << 62) -> None:
        self.size, self.ttl, self.max_bytes = size, ttl, max_bytes
        self.bytes = 0
        self.items: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()

    def get(self, key: Hashable | None) -> bytes | None:
        if key is None or self.size == 0:
            return None
        hit = self.items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        self.items.move_to_end(key)
        return hit[1]

    def put(self, key: Hashable | None, body: bytes) -> None:
        if key is None or self.size == 0 or len(body) > min(MAX_BODY, self.max_bytes):
            return
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= len(old[1])
        self.items[key] = (time.monotonic() + self.ttl, body)
        self.bytes += len(body)
        while len(self.items) > self.size or self.bytes > self.max_bytes:
            self.bytes -= len(self.items.popitem(last=False)[1][1])
