"""SQL of the analytics endpoints (rollups only: never sensor_report)."""

HIVE = "SELECT id, timezone, capacity FROM hive WHERE id = $1"
# with what a past window's answer depends on besides the rollups (cache key)
HIVE_VERSION = """
SELECT h.id, h.timezone, h.capacity,
       concat_ws(':', extract(epoch FROM h.updated_at),
                 (SELECT max(id) FROM hive_correction c WHERE c.hive_id = h.id),
                 (SELECT max(id) FROM hive_capacity_schedule s WHERE s.hive_id = h.id))
           AS version
FROM hive h WHERE h.id = $1"""

# the caller's user role and membership in the account of hive $2 (no row: no hive)
ACCESS = """
SELECT h.account_id, u.user_role, m.member_role
FROM hive h
JOIN app_user u ON u.id = $1
LEFT JOIN account_member m ON m.account_id = h.account_id AND m.user_id = u.id
WHERE h.id = $2"""

_CURVE = ("entries, exits, min_occupancy, {peak}, last_occupancy, "
          "extract(epoch FROM last_at)::float8 AS last_at, area")

_NO_CURVE = "last_at IS NULL AND peak_occupancy = 0 AND avg_occupancy = 0"
_PEAK = f"CASE WHEN {_NO_CURVE} THEN NULL ELSE peak_occupancy END AS peak_occupancy"
_AVG = f"CASE WHEN {_NO_CURVE} THEN NULL ELSE avg_occupancy END"

FIVE_MINUTES = f"""
SELECT extract(epoch FROM bucket)::float8 AS s, extract(epoch FROM bucket)::float8 + 300 AS e,
       {_CURVE.format(peak="max_occupancy")}, NULL::real AS avg
FROM hive_occupancy_5m WHERE hive_id = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket"""

# rows ingest wrote with entries/exits only have no curve (peak 0, no last_at); rows
# from before migration 0009 (demo history) have peak and average but no curve
# 1h buckets are one row each: the average is computed here, with the same float8
# operations as series._values on the row (so the texts are the same), up to $4 (now,
# epoch seconds) for the unsettled hour; no curve and no legacy average: NULL.
# date_part gives the float8 of extract(epoch ...)::float8 without numeric arithmetic.
HOURS = f"""
SELECT s, entries, exits, min_occupancy, {_PEAK},
       CASE WHEN last_at IS NOT NULL AND area IS NOT NULL AND last_occupancy IS NOT NULL
            THEN CASE WHEN w > 0 THEN
                ((CASE WHEN late > 0 THEN area + last_occupancy * late ELSE area END) / w)
                * w / w END
            WHEN w > 0 THEN ({_AVG})::float8 * w / w
       END AS avg
FROM hive_occupancy_hourly,
     LATERAL (SELECT date_part('epoch', hour) AS s) AS start,
     LATERAL (SELECT least(s + 3600, $4::float8) - s AS w,
                     least(s + 3600, $4::float8) - date_part('epoch', last_at) AS late) AS stop
WHERE hive_id = $1 AND hour >= $2 AND hour < $3
ORDER BY hour"""

DAILY = f"""
SELECT extract(epoch FROM starts_at)::float8 AS s, extract(epoch FROM ends_at)::float8 AS e,
       {_CURVE.format(peak="max_occupancy")}, NULL::real AS avg
FROM hive_occupancy_daily WHERE hive_id = $1 AND starts_at >= $2 AND starts_at < $3
ORDER BY day"""

# the count at $2: the last point of the curve at or before it, finest level first
AT = """
SELECT * FROM (
    (SELECT '5m' AS resolution, last_occupancy, last_at FROM hive_occupancy_5m
     WHERE hive_id = $1 AND bucket <= $2 AND bucket > $2 - interval '2 days'
       AND last_at <= $2 ORDER BY bucket DESC LIMIT 1)
    UNION ALL
    (SELECT '1h', last_occupancy, last_at FROM hive_occupancy_hourly
     WHERE hive_id = $1 AND hour <= $2 AND hour > $2 - interval '2 days'
       AND last_at <= $2 ORDER BY hour DESC LIMIT 1)
    UNION ALL
    (SELECT '1d', last_occupancy, last_at FROM hive_occupancy_daily
     WHERE hive_id = $1 AND starts_at <= $2 AND starts_at > $2 - interval '3 days'
       AND last_at <= $2 ORDER BY day DESC LIMIT 1)) AS found
ORDER BY last_at DESC, resolution LIMIT 1"""

CORRECTIONS_IN = """
SELECT extract(epoch FROM at)::float8 AS at,
       extract(epoch FROM day_end)::float8 AS day_end, "offset"
FROM hive_correction WHERE hive_id = $1 AND at < $3 AND day_end > $2
ORDER BY at, id"""

CORRECTION_COLUMNS = """id, hive_id, at, occupancy, previous, occupancy - previous AS delta,
       reason, created_by, created_at, day_end"""
CORRECTIONS = f"""
SELECT {CORRECTION_COLUMNS} FROM hive_correction WHERE hive_id = $1
ORDER BY created_at DESC, id DESC LIMIT $2"""
CORRECTION_INSERT = f"""
INSERT INTO hive_correction (hive_id, at, day_end, occupancy, previous, "offset", reason,
                             created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING {CORRECTION_COLUMNS}"""

LOCK_LIVE = """
WITH locked AS (
    INSERT INTO hive_occupancy (hive_id) VALUES ($1)
    ON CONFLICT (hive_id) DO UPDATE SET hive_id = excluded.hive_id
    RETURNING *)
SELECT * FROM locked"""

# the live count after a correction of the current day: the day's latest correction
LIVE_CORRECT = """
UPDATE hive_occupancy SET correction = $2, occupancy = $3, day_start = $4,
    day_in = $5, day_out = $6, updated_at = clock_timestamp()
WHERE hive_id = $1
RETURNING hive_id, occupancy, total_in, total_out, updated_at"""
LATEST_OF_DAY = """
SELECT "offset" FROM hive_correction WHERE hive_id = $1 AND at >= $2 AND at <= $3
ORDER BY at DESC, id DESC LIMIT 1"""

SCHEDULE = """
SELECT lower(during) AS "from", upper(during) AS "to", capacity, label
FROM hive_capacity_schedule WHERE hive_id = $1 ORDER BY lower(during)"""
SCHEDULE_IN = """
SELECT extract(epoch FROM lower(during))::float8 AS s,
       extract(epoch FROM upper(during))::float8 AS e, capacity
FROM hive_capacity_schedule WHERE hive_id = $1 AND during && tstzrange($2, $3)
ORDER BY lower(during)"""
SCHEDULE_DELETE = "DELETE FROM hive_capacity_schedule WHERE hive_id = $1"
SCHEDULE_INSERT = """
INSERT INTO hive_capacity_schedule (hive_id, during, capacity, label)
SELECT $1, tstzrange(f, t, '[)'), c, l
FROM unnest($2::timestamptz[], $3::timestamptz[], $4::int[], $5::text[]) AS u(f, t, c, l)"""

RETENTION = """
WITH a AS (DELETE FROM hive_occupancy_5m WHERE bucket < now() - $1::interval RETURNING 1),
     b AS (DELETE FROM hive_occupancy_hourly
           WHERE $2::interval IS NOT NULL AND hour < now() - $2::interval RETURNING 1),
     c AS (DELETE FROM hive_occupancy_daily
           WHERE $3::interval IS NOT NULL AND ends_at < now() - $3::interval RETURNING 1)
SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b), (SELECT count(*) FROM c)"""
