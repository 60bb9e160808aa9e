"""The capacity in force: a hive's `capacity`, or inside one of its
`hive_capacity_schedule` ranges (event nights, migration 0009) that range's capacity.
The live occupancy (zone, memcached, Postgres fallback, streams) carries this one; the
cache manager re-reads it when a schedule changes (bus `HIVE_REFRESH`) and when a range
starts or ends (a timer for the next boundary)."""

from __future__ import annotations

# The query rows of the loader, the manager and the workers' Postgres fallback:
# (id, capacity in force now, occupancy, total_in, total_out, updated_at).
HIVES_SQL = """
SELECT h.id, coalesce(s.capacity, h.capacity) AS capacity, o.occupancy, o.total_in,
       o.total_out, o.updated_at
FROM hive h LEFT JOIN hive_occupancy o ON o.hive_id = h.id
LEFT JOIN hive_capacity_schedule s ON s.hive_id = h.id AND s.during @> now()
"""
SOME_HIVES_SQL = HIVES_SQL + "WHERE h.id = ANY($1::bigint[])\n"

# (id, capacity in force at $2) of the hives $1
CAPACITY_AT_SQL = """
SELECT h.id, coalesce(s.capacity, h.capacity) AS capacity
FROM hive h LEFT JOIN hive_capacity_schedule s ON s.hive_id = h.id AND s.during @> $2::timestamptz
WHERE h.id = ANY($1::bigint[])
"""

# the first instant after $1 at which a range starts or ends (NULL: none)
NEXT_BOUNDARY_SQL = """
SELECT min(CASE WHEN lower(during) > $1::timestamptz THEN lower(during)
                ELSE upper(during) END)
FROM hive_capacity_schedule WHERE upper(during) > $1::timestamptz
"""

# the hives with a range starting or ending in ($1, $2]
BOUNDARY_HIVES_SQL = """
SELECT DISTINCT hive_id FROM hive_capacity_schedule
WHERE (lower(during) > $1::timestamptz AND lower(during) <= $2::timestamptz)
   OR (upper(during) > $1::timestamptz AND upper(during) <= $2::timestamptz)
"""
