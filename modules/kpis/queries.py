"""SQL of the kpis endpoints.  Everything reads counters kept at write time
(hive_occupancy_hourly, hive_usage_hourly, sensor_door_daily, user_message.sentiment),
never sensor_report or the user_analytics log."""

# $1 hive
HEALTH = """
SELECT s.id, s.external_id, s.name, s.firmware, st.battery_mv, NULLIF(st.csq, 99) AS csq,
       l.last_seen, l.interval_min, l.offline,
       coalesce(i.lost_events, 0) AS lost_events, coalesce(i.restarts, 0) AS restarts,
       coalesce(i.anomalies, 0) AS anomalies,
       pc.id AS pending_id, pc.created_at AS pending_since,
       ac.id AS applied_id, ac.applied_at,
       d.day, d.entries, d.exits
FROM sensor s
JOIN hive h ON h.id = s.hive_id
JOIN sensor_liveness l ON l.sensor_id = s.id
LEFT JOIN sensor_status st ON st.sensor_id = s.id
LEFT JOIN sensor_ingest_state i ON i.sensor_id = s.id
LEFT JOIN sensor_config pc ON pc.sensor_id = s.id AND pc.state = 'pending'
LEFT JOIN sensor_config ac ON ac.sensor_id = s.id AND ac.state = 'applied'
LEFT JOIN sensor_door_daily d
       ON d.sensor_id = s.id AND d.day = (now() AT TIME ZONE h.timezone)::date - 1
WHERE s.hive_id = $1
ORDER BY s.id"""

HIVE_ACCOUNT = "SELECT account_id FROM hive WHERE id = $1"
ACCOUNT_HIVES = "SELECT id, name, timezone FROM hive WHERE account_id = $1 ORDER BY id"

# The period [$2, $3) per hive and local hour of day, for the figures and the peak hours:
# an index range scan of the hourly rollup grouped by UTC hour of day and DST segment
# (hours.py: no time zone conversion per row), then those groups regrouped by local hour
# with the hives' offsets per segment ($5-$7, hours.LocalHours.shifts).  The sums of a
# (UTC hour, segment) group are the ones this query returned before it regrouped.
OCCUPANCY = """
WITH g AS (
    SELECT r.hive_id, (date_part('epoch', r.hour)::bigint / 3600 % 24)::int AS utc_hour,
           width_bucket(r.hour, $4::timestamptz[]) AS segment,
           sum(r.entries)::bigint AS entries, sum(r.avg_occupancy)::float8 AS occupancy_hours,
           max(r.peak_occupancy) AS peak, count(*)::int AS hours
    FROM hive_occupancy_hourly r
    WHERE r.hive_id = ANY($1::bigint[]) AND r.hour >= $2 AND r.hour < $3
    GROUP BY 1, 2, 3)
SELECT g.hive_id, (g.utc_hour * 60 + s.minutes + 1440) / 60 % 24 AS local_hour,
       sum(g.entries)::bigint AS entries, sum(g.occupancy_hours) AS occupancy_hours,
       max(g.peak) AS peak, sum(g.hours)::int AS hours
FROM g JOIN unnest($5::bigint[], $6::int[], $7::int[]) AS s (hive_id, segment, minutes)
            ON s.hive_id = g.hive_id AND s.segment = g.segment
GROUP BY 1, 2"""

# The comparison period [$2, $3): the same sums per hive only (peak hours are not compared).
OCCUPANCY_TOTALS = """
SELECT r.hive_id, sum(r.entries)::bigint AS entries,
       sum(r.avg_occupancy)::float8 AS occupancy_hours, max(r.peak_occupancy) AS peak,
       count(*)::int AS hours
FROM hive_occupancy_hourly r
WHERE r.hive_id = ANY($1::bigint[]) AND r.hour >= $2 AND r.hour < $3
GROUP BY 1"""

USAGE = """
SELECT hive_id, (hour >= $2 AND hour < $3) AS current,
       sum(detail_views)::bigint AS detail_views,
       sum(search_impressions)::bigint AS search_impressions,
       sum(deal_opens)::bigint AS deal_opens
FROM hive_usage_hourly
WHERE hive_id = ANY($1::bigint[])
  AND ((hour >= $2 AND hour < $3) OR (hour >= $4 AND hour < $5))
GROUP BY 1, 2"""

FAVOURITES = """
SELECT hive_id, (created_at >= $2 AND created_at < $3) AS current, count(*)::bigint AS n
FROM user_hive
WHERE hive_id = ANY($1::bigint[]) AND kind = 'favourite'
  AND ((created_at >= $2 AND created_at < $3) OR (created_at >= $4 AND created_at < $5))
GROUP BY 1, 2"""

# $1 hive ids, $2 from, $3 to, $4 limit
FEEDBACK = """
SELECT id, hive_id, user_id, rating, content, sentiment, sentiment_label, created_at
FROM user_message
WHERE hive_id = ANY($1::bigint[]) AND kind = 'feedback'
  AND created_at >= $2 AND created_at < $3
ORDER BY created_at DESC, id DESC
LIMIT $4"""

FEEDBACK_TOTALS = """
SELECT hive_id, count(*)::int AS count, count(rating)::int AS rated,
       avg(rating)::float8 AS avg_rating, avg(sentiment)::float8 AS avg_sentiment,
       count(*) FILTER (WHERE sentiment_label = 'positive')::int AS positive,
       count(*) FILTER (WHERE sentiment_label = 'neutral')::int AS neutral,
       count(*) FILTER (WHERE sentiment_label = 'negative')::int AS negative
FROM user_message
WHERE hive_id = ANY($1::bigint[]) AND kind = 'feedback'
  AND created_at >= $2 AND created_at < $3
GROUP BY hive_id ORDER BY hive_id"""

# the backfill of feedback stored before migration 0011 (or by a writer without scoring)
UNSCORED = """
SELECT id, content FROM user_message
WHERE sentiment IS NULL AND kind = 'feedback' ORDER BY id LIMIT $1"""
SCORE = """
UPDATE user_message m SET sentiment = u.s
FROM unnest($1::bigint[], $2::real[]) AS u (id, s) WHERE m.id = u.id"""
