"""The public occupancy endpoints (content handlers), served from the zone.

`occupancy` (`GET /v1/hives/{id}/occupancy`, regex capture `id`): one seqlock read;
the pre-rendered response of that slot's sequence is cached, so a hit costs a
capture, an int(), a probe, a dict lookup and one join in the writer.  A miss (the
zone is not loaded yet, the hive did not fit, or it is new) falls back to memcached,
then Postgres; an id Postgres does not know is answered 404 and remembered for
`occupancy.negative_ttl`.

`occupancy_many` (`GET /v1/occupancy?ids=1,2,3`): up to `occupancy.max_ids` hives,
in the order asked; unknown ids are listed apart.

The JSON shape is documented in docs/api.md.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from bizzyd.http.phases import Request
from bizzyd.http.response import HTTPError, Response, StaticResponse, server_header

from .capacity import SOME_HIVES_SQL
from .freshness import Fresh, Freshness, fragment
from .replica import ReplicaReader
from .zone import OccupancyTable

NAME = "occupancy"
JSON = "application/json"
MAX_ID = (1 << 63) - 1
BODY_CACHE = 8192  # pre-rendered responses kept per worker (cleared when full)
UNKNOWN_CACHE = 10000



def iso(ts: float) -> bytes:
    """JSON for a point in time: an ISO 8601 UTC string (ms), or null for never."""
    if not ts:
        return b"null"
    text = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
    return b'"' + text.removesuffix("+00:00").encode() + b'Z"'


def item(hive_id: int, occupancy: int, capacity: int, total_in: int, total_out: int,
         updated_at: float, source: bytes, fresh: Fresh | None = None,
         extra: bytes = b"") -> bytes:
    """One hive's JSON object (docs/api.md), with its freshness (freshness.py);
    `extra`: fields other modules add (`Api.extra`), each starting with a comma."""
    return (b'{"hive_id":%d,"occupancy":%d,"capacity":%d,"total_in":%d,"total_out":%d,'
            b'"updated_at":%s,"source":"%s"%s%s}'
            % (hive_id, occupancy, capacity, total_in, total_out, iso(updated_at), source,
               fragment(updated_at, fresh, iso), extra))


# A field provider: (hive id, occupancy, capacity) -> JSON members, each after a comma.
Fields = Callable[[int, int, int], bytes]


def parse_id(text: str | None) -> int:
    """A hive id from a capture or a list; 0 when it cannot be one."""
    if not text or not text.isdigit() or len(text) > 19:
        return 0
    value = int(text)
    return value if 0 < value <= MAX_ID else 0


class Api:
    """A worker's occupancy state (in `ctx.state["occupancy"]`)."""

    def __init__(self, ctx: Any, table: OccupancyTable, settings: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.table = table
        self.settings = settings
        self.replica = ReplicaReader(settings, ctx.log)
        self.max_ids = settings["max_ids"]
        self.negative_ttl = settings["negative_ttl"]
        self.ready = False  # the zone was seen loaded: from then on it stays loaded
        self.freshness = Freshness(ctx, settings["freshness_interval"])
        self.fresh = self.freshness.get
        # hive -> (seq, tokens, response, body, freshness it was rendered with)
        self.bodies: dict[int, tuple[int, bool, StaticResponse, bytes, Any]] = {}
        # id text -> (seq word, seq, location, response, hive id, freshness)
        self.hits: dict[str | None, tuple[int, int, Any, StaticResponse, int, Any]] = {}
        self._words = table.words
        self.unknown: dict[int, float] = {}
        self.fanout: Any = None  # stream.Fanout, set by init_worker
        self.providers: list[Fields] = []  # add_fields(): e.g. modules.insights

    # -- fields of other modules ----------------------------------------------------

    def add_fields(self, provider: Fields) -> None:
        """Have `provider` add members to every occupancy object of this worker."""
        self.providers.append(provider)
        self.fields_changed()

    def fields_changed(self) -> None:
        """A provider's answers changed: render every object again when next asked."""
        self.bodies.clear()
        self.hits.clear()

    def extra(self, hive_id: int, occupancy: int, capacity: int) -> bytes:
        return b"".join(p(hive_id, occupancy, capacity) for p in self.providers)

    # -- the zone -----------------------------------------------------------------

    def zone_row(self, hive_id: int) -> tuple | None:
        """The hive's consistent slot (seq first), or None (not loaded / not there)."""
        if not self.ready:
            if not self.table.loaded():
                return None
            self.ready = True
        return self.table.lookup(hive_id)

    def rendered(self, row: tuple, tokens: bool) -> tuple[int, bool, StaticResponse, bytes, Any]:
        """The cached response for a slot's sequence and the hive's freshness (rendered
        again when either changed)."""
        hive_id = row[1]
        cached = self.bodies.get(hive_id)
        fresh = self.fresh(hive_id)
        if (cached is not None and cached[0] == row[0] and cached[1] == tokens
                and cached[4] is fresh):
            return cached
        body = item(hive_id, row[2], row[3], row[4], row[5], row[6], b"zone", fresh,
                    self.extra(hive_id, row[2], row[3]))
        static = StaticResponse(200, body + b"\n", JSON, server_header(tokens))
        if len(self.bodies) >= BODY_CACHE:
            self.bodies.clear()
        cached = self.bodies[hive_id] = (row[0], tokens, static, body, fresh)
        return cached

    # -- the fallbacks ------------------------------------------------------------

    async def fetch(self, ids: Iterable[int]) -> dict[int, bytes]:
        """JSON items of hives the zone could not serve: memcached, then Postgres.

        Ids that neither knows are left out (and remembered as unknown for a while).
        Raises DatabaseUnavailable (503) when Postgres is needed and down.
        """
        now = time.monotonic()
        wanted = [i for i in ids if self.unknown.get(i, 0.0) <= now]
        found: dict[int, bytes] = {}
        if not wanted:
            return found
        for hive_id, v in (await self.replica.get_many(wanted)).items():
            try:
                found[hive_id] = item(hive_id, v["occupancy"], v["capacity"], v["total_in"],
                                      v["total_out"], v["updated_at"] or 0.0, b"memcached",
                                      self.fresh(hive_id),
                                      self.extra(hive_id, v["occupancy"], v["capacity"]))
            except (KeyError, TypeError, ValueError):
                continue
        rest = [i for i in wanted if i not in found]
        if not rest:
            return found
        from modules.database import database

        async with database(self.ctx).connection() as conn:
            rows = await conn.fetch(SOME_HIVES_SQL, rest)
        for r in rows:
            at = r["updated_at"].timestamp() if r["updated_at"] is not None else 0.0
            found[r["id"]] = item(r["id"], r["occupancy"] or 0, r["capacity"],
                                  r["total_in"] or 0, r["total_out"] or 0, at, b"database",
                                  self.fresh(r["id"]),
                                  self.extra(r["id"], r["occupancy"] or 0, r["capacity"]))
        if len(self.unknown) >= UNKNOWN_CACHE:
            self.unknown.clear()
        expires = time.monotonic() + self.negative_ttl
        for i in rest:
            if i not in found:
                self.unknown[i] = expires
        return found

    # -- the handlers ---------------------------------------------------------------

    def one(self, request: Request) -> Any:
        """The hot path.  `hits` maps the captured id text to (slot counter word, sequence,
        location, pre-rendered response): if the slot's sequence is still the one the
        response was rendered from, the slot has not changed (a seqlock validation
        in one 8-byte read), and the StaticResponse is returned as it is (the writer
        adds Date and Connection: one join)."""
        text = request.captures.get("id")
        hit = self.hits.get(text)
        loc = request.location
        if (hit is not None and hit[2] is loc and self._words[hit[0]] == hit[1]
                and self.fresh(hit[4]) is hit[5]):
            return hit[3]
        static = self.zone_static(text, loc)
        if static is not None:
            return static.to_response() if loc.filtered else static
        hive_id = parse_id(text)
        if not hive_id:
            raise HTTPError(404, "no such hive")
        return self._one_fallback(hive_id)

    def zone_static(self, text: str | None, loc: Any) -> StaticResponse | None:
        """The pre-rendered zone answer for a captured id (remembered in `hits`), or
        None when the zone cannot answer (not loaded, not there, not an id)."""
        hive_id = parse_id(text)
        if not hive_id or not (self.ready or self._ready()):
            return None
        found = self.table.locate(hive_id)
        if found is None:
            return None
        start, row = found
        cached = self.rendered(row, loc.config["server_tokens"])
        static = cached[2]
        if not loc.filtered:
            if len(self.hits) >= BODY_CACHE:
                self.hits.clear()
            self.hits[text] = (start >> 3, row[0], loc, static, hive_id, cached[4])
        return static

    def _ready(self) -> bool:
        self.ready = self.table.loaded()
        return self.ready

    async def _one_fallback(self, hive_id: int) -> Response:
        found = await self.fetch((hive_id,))
        if hive_id not in found:
            raise HTTPError(404, "no such hive")
        return Response(200, found[hive_id] + b"\n", content_type=JSON)

    def many(self, request: Request) -> Any:
        ids = self.parse_ids(request.query)
        items: dict[int, bytes] = {}
        missing = []
        tokens = request.location.config["server_tokens"]
        for hive_id in ids:
            row = self.zone_row(hive_id)
            if row is not None:
                items[hive_id] = self.rendered(row, tokens)[3]
            else:
                missing.append(hive_id)
        if missing:
            return self._many_fallback(ids, items, missing)
        return self._many_response(ids, items)

    async def _many_fallback(self, ids: list[int], items: dict[int, bytes],
                             missing: list[int]) -> Response:
        items.update(await self.fetch(missing))
        return self._many_response(ids, items)

    @staticmethod
    def _many_response(ids: list[int], items: dict[int, bytes]) -> Response:
        unknown = b",".join(b"%d" % i for i in ids if i not in items)
        body = b'{"hives":[%s],"unknown":[%s]}\n' % (
            b",".join(items[i] for i in ids if i in items), unknown)
        return Response(200, body, content_type=JSON)

    def parse_ids(self, query: str) -> list[int]:
        values = parse_qs(query, keep_blank_values=True).get("ids")
        if not values:
            raise HTTPError(400, "the query needs ids=ID[,ID...]")
        texts = [t.strip() for v in values for t in v.split(",")]
        if len(texts) > 4 * self.max_ids:  # duplicates count once, but parse a bounded list
            raise HTTPError(400, f"at most {self.max_ids} ids per request, got {len(texts)}")
        ids: dict[int, None] = {}
        for text in texts:
            hive_id = parse_id(text)
            if not hive_id:
                raise HTTPError(400, f"ids must be positive integers, got {text[:40]!r}")
            ids[hive_id] = None
        if len(ids) > self.max_ids:
            raise HTTPError(400, f"at most {self.max_ids} ids per request, got {len(ids)}")
        return list(ids)

    def current(self, hive_id: int) -> tuple | None:
        """The zone row of a hive, for streams (None: not served from this zone)."""
        return self.zone_row(hive_id)

    def close(self) -> None:
        self.freshness.close()
        self.replica.close()


def occupancy(request: Request) -> Any:
    """GET /v1/hives/{id}/occupancy"""
    return request.process.state[NAME].one(request)


def quick_occupancy(ctx: Any, location: Any, captures: Mapping[str, str]) -> Any:
    """The zone-hit answer without a Request: the pre-rendered StaticResponse, or None
    (then the request takes the normal path through `occupancy`).

    The core's quick content hook (docs/modules.md): called straight from the
    protocol for GET/HEAD on a location with no phase handlers and no filters.
    """
    api: Api = ctx.state[NAME]
    text = captures.get("id")
    hit = api.hits.get(text)
    if (hit is not None and hit[2] is location and api._words[hit[0]] == hit[1]
            and api.fresh(hit[4]) is hit[5]):
        return hit[3]
    return api.zone_static(text, location)


occupancy.quick = quick_occupancy  # type: ignore[attr-defined]


def occupancy_many(request: Request) -> Any:
    """GET /v1/occupancy?ids=1,2,3"""
    return request.process.state[NAME].many(request)
