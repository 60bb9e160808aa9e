"""The catalogue endpoints: declarations (routes) and what fills their cache entries.

Each handler builds a cache key from the normalised query and the data version it
depends on (listings: the newest catalogue version; a hive's pages: that hive's),
asks the cache (modules.api.cache) for the frozen body, filling it from Postgres on a
miss, and thaws it with live occupancy (render.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from modules.api import (
    BBox,
    Bool,
    Call,
    DurationParam,
    Enum,
    IntParam,
    LatLon,
    Param,
    Problem,
    Reply,
    Route,
    StrParam,
    Versions,
    api_state,
    endpoint,
)
from modules.database import database

from . import cursor, queries
from .queries import Sql
from .render import Overlay, Slot, freeze
from .schemas import (
    Address,
    Deal,
    DealDaily,
    DealFeed,
    DealHive,
    DealItem,
    DealList,
    DealOccurrence,
    HiveDetail,
    HiveItem,
    HiveList,
    HiveType,
    HiveTypeList,
    Image,
    ImageList,
)

NAME = "hives"
MAX_ID = (1 << 63) - 1
DEFAULT_RADIUS = 5000
MAX_RADIUS = 50_000
TAGS = ("catalogue",)
# `<%` matches when word_similarity >= this (pg_trgm's default 0.6 misses two swapped
# letters in a 10-letter word: 0.47)
SEARCH_SETTING = "SET LOCAL pg_trgm.word_similarity_threshold = 0.4"
_IMAGES = msgspec.json.Decoder(list[Image])
_DEALS = msgspec.json.Decoder(list[Deal])
_DAILY = msgspec.json.Decoder(DealDaily | None)
_NEXT = msgspec.json.Decoder(DealOccurrence | None)

ID = Param("id", IntParam(min=1, max=MAX_ID), "the hive's id", where="path")
NEAR = Param("near", LatLon(), "LAT,LON (WGS84 degrees): filter by `radius`, add `distance_m`")
RADIUS = Param("radius", IntParam(min=1, max=MAX_RADIUS, unit="metres"),
               f"metres around `near` (default {DEFAULT_RADIUS}, at most {MAX_RADIUS})")
TYPE = Param("type", StrParam(max_length=40, pattern="[a-z][a-z0-9_]{0,39}"),
             "hive type slug (GET /v1/hive-types); repeatable", repeated=10)
LIMIT = Param("limit", IntParam(min=1, max=100), "page size", default=20)
CURSOR = Param("cursor", StrParam(max_length=200, pattern="[A-Za-z0-9_-]+"),
               "the page after this one (from `next`)")

LIST_PARAMS = (
    Param("q", StrParam(min_length=2, max_length=100),
          "name search: case and accent insensitive, prefixes and typos match"),
    TYPE,
    Param("zip", StrParam(max_length=16, pattern="[A-Za-z0-9][A-Za-z0-9 -]{0,15}"), "ZIP code"),
    Param("city", StrParam(max_length=100), "city (case and accent insensitive)"),
    NEAR, RADIUS,
    Param("bbox", BBox(), "map view: MIN_LON,MIN_LAT,MAX_LON,MAX_LAT"),
    Param("max_occupancy", IntParam(min=0, max=100, unit="percent"),
          "at most this full (percent of capacity)"),
    Param("has_deal", Bool(), "true: only hives with an active deal; false: only without"),
    Param("sort", Enum(("distance", "name", "occupancy", "relevance")),
          "default: relevance with q, else distance with near, else name"),
    LIMIT, CURSOR,
)

LIST_ROUTE = Route("GET", "/v1/hives", "Find hives", HiveList, LIST_PARAMS, tags=TAGS,
                   description="Filters combine; keyset pagination through `next`.",
                   max_age=30)
DETAIL_ROUTE = Route("GET", "/v1/hives/{id}", "A hive's details", HiveDetail, (ID,),
                     tags=TAGS, errors=(400, 404))
IMAGES_ROUTE = Route("GET", "/v1/hives/{id}/images", "A hive's images", ImageList, (ID,),
                     tags=TAGS, errors=(400, 404))
DEALS_ROUTE = Route("GET", "/v1/hives/{id}/deals", "A hive's deals", DealList, (
    ID,
    Param("status", Enum(("active", "upcoming", "all")), "which deals (all: both)",
          default="all"),
    Param("expiring_within", DurationParam(), "only active deals ending within this (24h)"),
), tags=TAGS, errors=(400, 404))
TYPES_ROUTE = Route("GET", "/v1/hive-types", "Hive types", HiveTypeList, (), tags=TAGS,
                    max_age=300)
DEAL_FEED_ROUTE = Route("GET", "/v1/deals", "Active deals", DealFeed, (
    NEAR, RADIUS, TYPE,
    Param("sort", Enum(("distance", "ending")), "default: ending soonest first"),
    LIMIT, CURSOR,
), tags=TAGS, max_age=30)


class Catalogue:
    """A worker's catalogue state (in `ctx.state["hives"]`)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.versions = Versions(ctx.config["database"]["dsn"], "bizzyd_catalogue",
                                 "catalogue_version", ctx.log)
        occupancy = ctx.state.get("occupancy")
        self.overlay = Overlay(occupancy.zone_row if occupancy is not None
                               else lambda hive_id: None)
        self.types: tuple[int, frozenset[str]] = (-1, frozenset())
        self.secret = ctx.config["api"]["cursor_key"].encode()

    def key(self, name: str, version: int, query: str = "") -> str | None:
        """A cache key, or None (no caching) while versions are unknown."""
        if not self.versions.ready:
            return None
        digest = hashlib.blake2b(query.encode(), digest_size=12).hexdigest() if query else "-"
        return f"{name}:v{version}:{digest}"

    async def cached(self, key: str | None, fill: Callable[[], Awaitable[bytes]]) -> bytes:
        return await api_state(self.ctx).cache.get(key, fill)

    async def fetch(self, sql: str, *args: Any, search: bool = False) -> list:
        async with database(self.ctx).connection() as conn:
            if not search:
                return await conn.fetch(sql, *args)
            async with conn.transaction(readonly=True):  # SET LOCAL ends with it
                await conn.execute(SEARCH_SETTING)
                return await conn.fetch(sql, *args)

    async def check_types(self, types: list[str]) -> None:
        version = self.versions.base if self.versions.ready else -2
        if self.types[0] != version or not self.types[1]:
            rows = await self.fetch(queries.TYPE_CODES)
            self.types = (version, frozenset(r["code"] for r in rows))
        unknown = [t for t in types if t not in self.types[1]]
        if unknown:
            raise Problem(400, f"unknown hive type {unknown[0]!r} (see /v1/hive-types)",
                          param="type")


def catalogue(call: Call) -> Catalogue:
    return call.process.state[NAME]


def _item(r: Any, distance: bool, cls: type = HiveItem, **extra: Any) -> Any:
    address = Address(r["street"], r["city"], r["zip"], r["country"], r["latitude"],
                      r["longitude"])
    fields = dict(id=r["id"], name=r["name"], type=r["type"], address=address,
                  capacity=r["capacity"], cover_image=r["cover"],
                  occupancy=Slot(r["id"], r["occ"], r["capacity"], r["occ_at"]),
                  active_deals=r["active_deals"], updated_at=r["updated_at"], **extra)
    if distance:
        fields["distance_m"] = round(r["distance"], 1)
    return cls(**fields)


# -- GET /v1/hives ----------------------------------------------------------------------

SORT_KEYS = {
    "name": "h.name",
    "distance": "(a.geog <-> {point})",
    "occupancy": "(COALESCE(o.occupancy, 0)::float8 / h.capacity)",
    "relevance": "(-word_similarity(search_text({q}), search_text(h.name))::float8)",
}


def _list_defaults(p: dict[str, Any]) -> None:
    if p["radius"] is not None and p["near"] is None:
        raise Problem(400, "needs near=LAT,LON", param="radius")
    if p["near"] is not None and p["radius"] is None:
        p["radius"] = DEFAULT_RADIUS
    if p["sort"] is None:
        p["sort"] = "relevance" if p["q"] else "distance" if p["near"] else "name"
    if p["sort"] == "distance" and p["near"] is None:
        raise Problem(400, "sort=distance needs near=LAT,LON", param="sort")
    if p["sort"] == "relevance" and not p["q"]:
        raise Problem(400, "sort=relevance needs q", param="sort")


KNN_FIRST = 256  # nearest addresses a sort=distance query considers first (x8 if short)

# Addresses nearest first through the GiST index (`<->` KNN): with the LIMIT the
# planner must use the index order, instead of collecting everything within the radius
# and sorting it (it prefers that once joins and filters are added).
KNN = ("(SELECT a.*, a.geog <-> {point} AS knn FROM address a WHERE a.geog IS NOT NULL"
       "{after} ORDER BY a.geog <-> {point} LIMIT {k})")
KNN_EDGE = ("SELECT a.geog <-> {point} AS d FROM address a WHERE a.geog IS NOT NULL"
            "{after} ORDER BY a.geog <-> {point} OFFSET {k} LIMIT 1")


def _list_sql(p: dict[str, Any], after: tuple[Any, int] | None, k: int = 0) -> Sql:
    """The listing query; for sort=distance, over the `k` addresses nearest to `near`
    (from the cursor's distance on)."""
    sql = Sql()
    w = sql.where
    point = sql.point(*p["near"]) if p["near"] else None
    q = sql.arg(p["q"]) if p["q"] else None
    source = queries.ITEM_FROM
    knn = p["sort"] == "distance"
    if knn:
        start = f" AND a.geog <-> {point} >= {sql.arg(after[0])}" if after else ""
        sub = KNN.format(point=point, after=start, k=sql.arg(k))
        source = source.replace("JOIN address a ", f"JOIN {sub} a ")
        w.append(f"a.knn <= {sql.arg(float(p['radius']))}")
    elif point:
        w.append(f"ST_DWithin(a.geog, {point}, {sql.arg(float(p['radius']))}, false)")
    if q:
        w.append(f"search_text({q}) <% search_text(h.name)")
    if p["type"]:
        w.append(f"t.code = ANY({sql.arg(p['type'])}::text[])")
    if p["zip"]:
        w.append(f"a.zip = {sql.arg(p['zip'])}")
    if p["city"]:
        w.append(f"search_text(a.city) = search_text({sql.arg(p['city'])})")
    if p["bbox"]:
        west, south, east, north = (sql.arg(v) for v in p["bbox"])
        w.append("a.latitude IS NOT NULL AND point(a.longitude, a.latitude) <@ "
                 f"box(point({west}, {south}), point({east}, {north}))")
    if p["max_occupancy"] is not None:
        w.append(f"COALESCE(o.occupancy, 0) * 100 <= {sql.arg(p['max_occupancy'])} * h.capacity")
    if p["has_deal"] is not None:
        w.append(queries.ACTIVE_DEAL if p["has_deal"] else f"NOT {queries.ACTIVE_DEAL}")
    key = "a.knn" if knn else SORT_KEYS[p["sort"]].format(point=point, q=q)
    if after is not None:
        w.append(f"({key}, h.id) > ({sql.arg(after[0])}, {sql.arg(after[1])})")
    distance = f", ({'a.geog <-> ' + point}) AS distance" if point else ""
    sql.text = (f"SELECT {queries.ITEM_COLUMNS}, {key} AS sort_key{distance}"
                f"{source} {sql.clause()} ORDER BY {key}, h.id "
                f"LIMIT {sql.arg(p['limit'] + 1)}")
    return sql


async def _list_rows(cat: Catalogue, p: dict[str, Any], after: tuple[Any, int] | None) -> list:
    """The rows of a page.  sort=distance widens its candidates (x8) while the page is
    short and the next candidate is still within the radius."""
    k = KNN_FIRST if p["sort"] == "distance" else 0
    while True:
        sql = _list_sql(p, after, k)
        rows = await cat.fetch(sql.text, *sql.args, search=bool(p["q"]))
        if not k or len(rows) > p["limit"]:
            return rows
        edge = Sql()
        point = edge.point(*p["near"])
        start = f" AND a.geog <-> {point} >= {edge.arg(after[0])}" if after else ""
        rest = await cat.fetch(KNN_EDGE.format(point=point, after=start, k=edge.arg(k)),
                               *edge.args)
        if not rest or rest[0]["d"] > p["radius"]:
            return rows
        k *= 8


def _after(call: Call, query: str, cat: Catalogue) -> tuple[Any, int] | None:
    """The decoded cursor (sort key, id): a text key for sort=name, else a number."""
    text = call.params["cursor"]
    if text is None:
        return None
    key, last = cursor.decode(text, query, cat.secret)
    if isinstance(key, str) != (call.params["sort"] == "name"):
        raise Problem(400, "not a cursor of this sort", param="cursor")
    return key, last


def _next(path: str, query: str, rows: list, limit: int, secret: bytes) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    token = cursor.encode(last["sort_key"], last["id"], query, secret)
    return f"{path}?{query}&cursor={token}" if query else f"{path}?cursor={token}"


@endpoint(LIST_ROUTE)
async def list_hives(call: Call) -> Reply:
    cat = catalogue(call)
    p = call.params
    _list_defaults(p)
    query = call.canonical(skip=("cursor",))
    after = _after(call, query, cat)

    async def fill() -> bytes:
        if p["type"]:
            await cat.check_types(p["type"])
        rows = await _list_rows(cat, p, after)
        near = p["near"] is not None
        items = [_item(r, near) for r in rows[:p["limit"]]]
        return freeze(HiveList(items, _next(LIST_ROUTE.path, query, rows, p["limit"],
                                            cat.secret)))

    key = cat.key("hives", cat.versions.latest, call.canonical())
    return Reply(cat.overlay.thaw(await cat.cached(key, fill)))


# -- a hive's pages ------------------------------------------------------------------------

async def _hive_page(call: Call, page: str, fill: Callable[[], Awaitable[bytes]],
                     query: str = "") -> Reply:
    cat = catalogue(call)
    hive_id = call.params["id"]
    key = cat.key(f"hive:{hive_id}:{page}", cat.versions.of(hive_id), query)
    frozen = await cat.cached(key, fill)
    if not frozen:
        raise Problem(404, "no such hive")
    return Reply(cat.overlay.thaw(frozen))


@endpoint(DETAIL_ROUTE)
async def hive_detail(call: Call) -> Reply:
    cat = catalogue(call)

    async def fill() -> bytes:
        rows = await cat.fetch(queries.DETAIL, call.params["id"])
        if not rows:
            return b""
        r = rows[0]
        return freeze(_item(r, False, HiveDetail, description=r["description"],
                            timezone=r["timezone"], images=_IMAGES.decode(r["images"]),
                            deals=_DEALS.decode(r["deals"])))

    return await _hive_page(call, "detail", fill)


@endpoint(IMAGES_ROUTE)
async def hive_images(call: Call) -> Reply:
    cat = catalogue(call)

    async def fill() -> bytes:
        rows = await cat.fetch(queries.HIVE_IMAGES, call.params["id"])
        return freeze(ImageList(_IMAGES.decode(rows[0]["images"]))) if rows else b""

    return await _hive_page(call, "images", fill)


@endpoint(DEALS_ROUTE)
async def hive_deals(call: Call) -> Reply:
    cat = catalogue(call)
    p = call.params
    active = {"active": True, "upcoming": False, "all": None}[p["status"]]
    if p["expiring_within"] is not None and active is False:
        raise Problem(400, "only active deals expire: not with status=upcoming",
                      param="expiring_within")

    async def fill() -> bytes:
        rows = await cat.fetch(queries.HIVE_DEALS, p["id"], active, p["expiring_within"])
        return freeze(DealList(_DEALS.decode(rows[0]["deals"]))) if rows else b""

    return await _hive_page(call, "deals", fill, call.canonical())


# -- GET /v1/hive-types -----------------------------------------------------------------

@endpoint(TYPES_ROUTE)
async def hive_types(call: Call) -> Reply:
    cat = catalogue(call)

    async def fill() -> bytes:
        rows = await cat.fetch(queries.HIVE_TYPES)
        return freeze(HiveTypeList([HiveType(r["slug"], r["name"], r["hives"])
                                    for r in rows]))

    return Reply(cat.overlay.thaw(await cat.cached(cat.key("types", cat.versions.latest),
                                                   fill)))


# -- GET /v1/deals ------------------------------------------------------------------------

DEAL_FEED = """
SELECT d.id, d.hive_id, d.kind, d.title, d.description, d.terms, d.valid_from,
       d.valid_until, h.name, t.code AS type, {key} AS sort_key{distance},
       ({daily})::text AS daily, ({next})::text AS next_occurrence
FROM deal d
JOIN hive h ON h.id = d.hive_id
JOIN hive_status s ON s.id = h.status_id AND s.listed
JOIN hive_type t ON t.id = h.hive_type_id
JOIN address a ON a.id = h.address_id
WHERE d.valid_from <= now() AND d.valid_until > now() {where}
ORDER BY {key}, d.id LIMIT {limit}"""


def _deal_feed_sql(p: dict[str, Any], after: tuple[Any, int] | None) -> Sql:
    sql = Sql()
    point = sql.point(*p["near"]) if p["near"] else None
    if point:
        sql.where.append(f"ST_DWithin(a.geog, {point}, {sql.arg(float(p['radius']))}, false)")
    if p["type"]:
        sql.where.append(f"t.code = ANY({sql.arg(p['type'])}::text[])")
    key = (f"(a.geog <-> {point})" if p["sort"] == "distance"
           else "extract(epoch FROM d.valid_until)::float8")
    if after is not None:
        sql.where.append(f"({key}, d.id) > ({sql.arg(after[0])}, {sql.arg(after[1])})")
    distance = f", (a.geog <-> {point}) AS distance" if point else ""
    sql.text = DEAL_FEED.format(key=key, distance=distance, daily=queries.DAILY,
                                next=queries.NEXT,
                                where="".join(" AND " + c for c in sql.where),
                                limit=sql.arg(p["limit"] + 1))
    return sql


def _deal_item(r: Any, near: bool) -> DealItem:
    now = datetime.now(UTC)
    deal = Deal(r["id"], r["hive_id"], r["kind"], r["title"], r["description"], r["terms"],
                r["valid_from"], r["valid_until"],
                "active" if r["valid_from"] <= now else "upcoming",
                _DAILY.decode(r["daily"] or "null"), _NEXT.decode(r["next_occurrence"] or "null"))
    distance = round(r["distance"], 1) if near else None
    return DealItem(deal, DealHive(r["hive_id"], r["name"], r["type"], distance))


@endpoint(DEAL_FEED_ROUTE)
async def deal_feed(call: Call) -> Reply:
    cat = catalogue(call)
    p = call.params
    if p["radius"] is not None and p["near"] is None:
        raise Problem(400, "needs near=LAT,LON", param="radius")
    if p["near"] is not None and p["radius"] is None:
        p["radius"] = DEFAULT_RADIUS
    p["sort"] = p["sort"] or "ending"
    if p["sort"] == "distance" and p["near"] is None:
        raise Problem(400, "sort=distance needs near=LAT,LON", param="sort")
    query = call.canonical(skip=("cursor",))
    after = _after(call, query, cat)

    async def fill() -> bytes:
        if p["type"]:
            await cat.check_types(p["type"])
        sql = _deal_feed_sql(p, after)
        rows = await cat.fetch(sql.text, *sql.args)
        items = [_deal_item(r, p["near"] is not None) for r in rows[:p["limit"]]]
        return freeze(DealFeed(items, _next(DEAL_FEED_ROUTE.path, query, rows, p["limit"],
                                            cat.secret)))

    key = cat.key("deals", cat.versions.latest, call.canonical())
    return Reply(cat.overlay.thaw(await cat.cached(key, fill)))


HANDLERS = {"hives": list_hives, "hive": hive_detail, "hive_images": hive_images,
            "hive_deals": hive_deals, "hive_types": hive_types, "deals": deal_feed}
