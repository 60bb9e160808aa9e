"""Cached bodies with live occupancy: filled once, overlaid at every response.

A filled response is encoded with a placeholder where each hive's occupancy goes (the
encoder's `enc_hook` writes `"\\u0000occ:<id>:<count>:<capacity>:<as_of>"`: Postgres
text can hold no NUL, so no real string looks like it).  `freeze` splits the JSON at
the placeholders once, and the cache stores the pieces (msgpack).  `thaw` joins them
with each hive's occupancy object: from the node's occupancy zone when it has the hive
(`source: zone`), else the value Postgres had at the fill (`source: database`).  So a
cached listing is never staler than the zone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from modules.occupancy.api import iso

_MARK = re.compile(rb'"\\u0000occ:([0-9]+):([0-9]+):([0-9]+):([0-9.e+-]+)"')
_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder(tuple[list[bytes], list[tuple[int, int, int, float]]])
MEMO = 10_000


class Slot:
    """Where a hive's occupancy goes, with the database's value as the fallback."""

    __slots__ = ("hive_id", "count", "capacity", "as_of")

    def __init__(self, hive_id: int, count: int, capacity: int, as_of: float) -> None:
        self.hive_id, self.count, self.capacity, self.as_of = hive_id, count, capacity, as_of


def _hook(obj: Any) -> Any:
    if isinstance(obj, Slot):
        return f"\x00occ:{obj.hive_id}:{obj.count}:{obj.capacity}:{obj.as_of!r}"
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


ENCODER = msgspec.json.Encoder(enc_hook=_hook)


def freeze(value: Any) -> bytes:
    """Encode a response Struct (with Slots) into the cached form."""
    parts = _MARK.split(ENCODER.encode(value) + b"\n")
    segments = parts[0::5]
    marks = [(int(parts[i]), int(parts[i + 1]), int(parts[i + 2]), float(parts[i + 3]))
             for i in range(1, len(parts), 5)]
    return _PACK.encode((segments, marks))


def level(percent: int) -> bytes:
    if percent < 40:
        return b"quiet"
    if percent < 75:
        return b"moderate"
    return b"busy" if percent < 100 else b"full"


def occupancy_json(count: int, capacity: int, as_of: bytes, source: bytes) -> bytes:
    """The occupancy object; `as_of` already JSON (a string or null)."""
    percent = (count * 100 + capacity // 2) // capacity
    return (b'{"count":%d,"capacity":%d,"percent":%d,"level":"%s","as_of":%s,"source":"%s"}'
            % (count, capacity, percent, level(percent), as_of, source))


class Overlay:
    """A worker's renderer of occupancy objects (memoised per zone slot sequence)."""

    def __init__(self, zone_row: Callable[[int], tuple | None]) -> None:
        self.zone_row = zone_row
        self.memo: dict[int, tuple[int, bytes]] = {}
        self.decoded: dict[bytes, tuple[list[bytes], list[tuple]]] = {}
        self.times: dict[float, bytes] = {}

    def iso(self, moment: float) -> bytes:
        """A time as JSON, memoised (formatting one costs about 5 us)."""
        text = self.times.get(moment)
        if text is None:
            if len(self.times) >= MEMO:
                self.times.clear()
            text = self.times[moment] = iso(moment)
        return text

    def occupancy(self, hive_id: int, count: int, capacity: int, as_of: float) -> bytes:
        row = self.zone_row(hive_id)
        if row is None:
            return occupancy_json(count, capacity, self.iso(as_of), b"database")
        memo = self.memo.get(hive_id)
        if memo is not None and memo[0] == row[0]:
            return memo[1]
        body = occupancy_json(row[2], row[3] or capacity, self.iso(row[6]), b"zone")
        if len(self.memo) >= MEMO:
            self.memo.clear()
        self.memo[hive_id] = (row[0], body)
        return body

    def thaw(self, frozen: bytes) -> bytes:
        decoded = self.decoded.get(frozen)  # the same bytes object, for cache hits
        if decoded is None:
            if len(self.decoded) >= MEMO:
                self.decoded.clear()
            decoded = self.decoded[frozen] = _UNPACK.decode(frozen)
        segments, marks = decoded
        if not marks:
            return segments[0]
        out = [segments[0]]
        for mark, segment in zip(marks, segments[1:], strict=True):
            out.append(self.occupancy(*mark))
            out.append(segment)
        return b"".join(out)
