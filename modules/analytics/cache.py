"""A worker's recent history answers for windows that ended a while ago (their key
carries the hive's version: its row, corrections and capacity schedule), so repeated
reads of the same past year cost a dict lookup.  Late reports into such a window show
after `analytics.cache_ttl` at most."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable

MAX_BODY = 8 << 20  # larger answers are not kept


class Bodies:
    """A bounded LRU of encoded answers, each valid for `ttl` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
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
        if key is None or self.size == 0 or len(body) > MAX_BODY:
            return
        self.items[key] = (time.monotonic() + self.ttl, body)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
