"""The catalogue's SQL.  Values are always bind parameters (`$n`): a query is composed
only of the constant fragments below, in an order the filters decide (`Sql`)."""

from __future__ import annotations

from typing import Any

# The listing's columns; `{key}` is the sort key expression (see SORT_KEYS).
ITEM_COLUMNS = """
    h.id, h.name, t.code AS type, a.street, a.city, a.zip, a.country,
    a.latitude, a.longitude, h.capacity, h.updated_at,
    (SELECT i.url FROM hive_image i WHERE i.hive_id = h.id AND i.kind = 'cover') AS cover,
    (SELECT count(*) FROM deal d WHERE d.hive_id = h.id AND d.valid_from <= now()
        AND d.valid_until > now())::int AS active_deals,
    COALESCE(o.occupancy, 0) AS occ,
    COALESCE(extract(epoch FROM o.updated_at), 0)::float8 AS occ_at"""

ITEM_FROM = """
FROM hive h
JOIN hive_status s ON s.id = h.status_id AND s.listed
JOIN hive_type t ON t.id = h.hive_type_id
JOIN address a ON a.id = h.address_id
LEFT JOIN hive_occupancy o ON o.hive_id = h.id"""

ACTIVE_DEAL = ("EXISTS (SELECT 1 FROM deal d WHERE d.hive_id = h.id AND d.valid_from <= now()"
               " AND d.valid_until > now())")

IMAGES = """
    SELECT COALESCE(json_agg(json_build_object(
               'id', i.id, 'url', i.url, 'kind', i.kind, 'position', i.position,
               'caption', i.caption) ORDER BY i.kind <> 'cover', i.position, i.id), '[]')
    FROM hive_image i WHERE i.hive_id = h.id"""

# a deal's daily rule and next window (migration 0008), as JSON
DAILY = """CASE WHEN d.daily_weekdays IS NOT NULL THEN json_build_object(
               'weekdays', d.daily_weekdays, 'start', to_char(d.daily_start, 'HH24:MI'),
               'end', to_char(d.daily_end, 'HH24:MI')) END"""
NEXT = """(SELECT json_build_object('starts_at', n.starts_at, 'ends_at', n.ends_at)
              FROM deal_next_occurrence(d, h.timezone, now()) n
              WHERE n.starts_at IS NOT NULL)"""
# active and upcoming deals of hive h; $2: only active (true), only upcoming (false) or
# both (null); $3: active deals ending within this many seconds (null: any)
DEALS = f"""
    SELECT COALESCE(json_agg(json_build_object(
               'id', d.id, 'hive_id', d.hive_id, 'kind', d.kind, 'title', d.title,
               'description', d.description, 'terms', d.terms, 'valid_from', d.valid_from,
               'valid_until', d.valid_until,
               'status', CASE WHEN d.valid_from <= now() THEN 'active' ELSE 'upcoming' END,
               'daily', {DAILY}, 'next_occurrence', {NEXT})
           ORDER BY d.valid_from, d.id), '[]')
    FROM deal d
    WHERE d.hive_id = h.id AND d.valid_until > now()"""

DETAIL = f"""
SELECT {ITEM_COLUMNS}, h.description, h.timezone,
    ({IMAGES}) AS images,
    ({DEALS}) AS deals
{ITEM_FROM}
WHERE h.id = $1"""

HIVE_IMAGES = f"""
SELECT ({IMAGES}) AS images
FROM hive h JOIN hive_status s ON s.id = h.status_id AND s.listed
WHERE h.id = $1"""

HIVE_DEALS = f"""
SELECT ({DEALS}
        AND ($2::bool IS NULL OR (d.valid_from <= now()) = $2)
        AND ($3::int IS NULL OR (d.valid_from <= now()
                                 AND d.valid_until <= now() + make_interval(secs => $3)))
       ) AS deals
FROM hive h JOIN hive_status s ON s.id = h.status_id AND s.listed
WHERE h.id = $1"""

HIVE_TYPES = """
SELECT t.code AS slug, t.name, count(h.id)::int AS hives
FROM hive_type t
LEFT JOIN (hive h JOIN hive_status s ON s.id = h.status_id AND s.listed)
       ON h.hive_type_id = t.id
GROUP BY t.id ORDER BY t.code"""

TYPE_CODES = "SELECT code FROM hive_type"

POINT = "ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography"


class Sql:
    """A query assembled from constant fragments; values become `$n` parameters."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.where: list[str] = []
        self.text = ""

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def point(self, lat: float, lon: float) -> str:
        return POINT.format(lon=self.arg(lon), lat=self.arg(lat))

    def clause(self) -> str:
        return ("WHERE " + " AND ".join(self.where)) if self.where else ""
