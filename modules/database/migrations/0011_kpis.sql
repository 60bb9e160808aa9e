-- 0011_kpis: what the sensor health, KPI and feedback endpoints (modules.kpis) read
-- without scanning raw rows: a per-sensor daily door counter kept by ingest, per-hive
-- hourly usage counts kept by a trigger on user_analytics, and the sentiment of
-- feedback stored at write time.

-- Entries and exits of one sensor (one door) per local day of its hive, added by ingest
-- in the transaction of the reports (modules/mqtt_ingest/store.py `_doors`).  A door
-- whose entries minus exits drifts far from 0 over a day is a failing sensor (health).
CREATE TABLE sensor_door_daily (
    sensor_id bigint NOT NULL REFERENCES sensor (id) ON DELETE CASCADE,
    day       date NOT NULL,   -- the hive's local day of the counted movements
    entries   integer NOT NULL DEFAULT 0,
    exits     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (sensor_id, day)
);
COMMENT ON TABLE sensor_door_daily IS
    'Entries and exits per sensor and local day (door imbalance in the health endpoint).';

-- When each sensor was last heard from (a counted report or a status message), the
-- reporting interval it works to (the applied configuration's, else its report
-- profile's: the longest of the profile and its schedule windows, else 15 minutes), and
-- whether it is offline: silent for 3 x that interval (issue 18).  The health endpoint
-- and the freshness of live occupancy both read this, so they agree.
CREATE VIEW sensor_liveness AS
SELECT x.*, (x.last_seen IS NULL
             OR x.last_seen < now() - make_interval(mins => 3 * x.interval_min)) AS offline
FROM (
    SELECT s.id AS sensor_id, s.hive_id,
           nullif(greatest(coalesce(st.updated_at, '-infinity'),
                           coalesce(ss.received_at, '-infinity')), '-infinity') AS last_seen,
           coalesce(c.reporting_interval_min,
                    greatest(p.reporting_interval_min,
                             (SELECT max(w.reporting_interval_min)
                              FROM sensor_report_schedule w
                              WHERE w.report_config_id = p.id)),
                    15) AS interval_min
    FROM sensor s
    LEFT JOIN sensor_ingest_state st ON st.sensor_id = s.id
    LEFT JOIN sensor_status ss ON ss.sensor_id = s.id
    LEFT JOIN sensor_config c ON c.sensor_id = s.id AND c.state = 'applied'
    LEFT JOIN sensor_report_config p ON p.id = s.report_config_id) AS x;
COMMENT ON VIEW sensor_liveness IS
    'Per sensor: last heard from, reporting interval (minutes), offline (silent 3 x that).';

-- App usage per hive and UTC hour, derived from user_analytics events as they are
-- inserted (statement trigger below), so KPIs read counters, not the event log:
--   hive_viewed  with data.hive_id      -> detail_views
--   deal_opened  with data.hive_id      -> deal_opens
--   search_made  with data.hive_ids[]   -> search_impressions (one per hive shown)
CREATE TABLE hive_usage_hourly (
    hive_id            bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    hour               timestamptz NOT NULL,
    detail_views       integer NOT NULL DEFAULT 0 CHECK (detail_views >= 0),
    search_impressions integer NOT NULL DEFAULT 0 CHECK (search_impressions >= 0),
    deal_opens         integer NOT NULL DEFAULT 0 CHECK (deal_opens >= 0),
    PRIMARY KEY (hive_id, hour)
);
COMMENT ON TABLE hive_usage_hourly IS
    'Detail views, search impressions and deal opens per hive and hour (from user_analytics).';

-- The hives an event counts for, and as what.  Ids that are not plain positive integers
-- are ignored (the data is free-form: a bad id must not lose the batch of events).
CREATE FUNCTION usage_hives(action text, data jsonb)
RETURNS TABLE (hive_id bigint, kind text) LANGUAGE sql IMMUTABLE AS $$
    SELECT (data ->> 'hive_id')::bigint, action
    WHERE action IN ('hive_viewed', 'deal_opened')
      AND data ->> 'hive_id' ~ '^[1-9][0-9]{0,17}$'
    UNION
    SELECT x::bigint, action
    FROM jsonb_array_elements_text(CASE WHEN action = 'search_made'
                                        AND jsonb_typeof(data -> 'hive_ids') = 'array'
                                   THEN data -> 'hive_ids' ELSE '[]' END) AS x
    WHERE x ~ '^[1-9][0-9]{0,17}$'
$$;

CREATE FUNCTION usage_add(actions text[], datas jsonb[], ats timestamptz[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO hive_usage_hourly AS o (hive_id, hour, detail_views, search_impressions,
                                        deal_opens)
    SELECT u.hive_id, date_trunc('hour', e.at, 'UTC'),
           count(*) FILTER (WHERE u.kind = 'hive_viewed'),
           count(*) FILTER (WHERE u.kind = 'search_made'),
           count(*) FILTER (WHERE u.kind = 'deal_opened')
    FROM unnest(actions, datas, ats) AS e (action, data, at),
         LATERAL usage_hives(e.action, e.data) AS u
    WHERE EXISTS (SELECT 1 FROM hive h WHERE h.id = u.hive_id)
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (hive_id, hour) DO UPDATE SET
        detail_views = o.detail_views + excluded.detail_views,
        search_impressions = o.search_impressions + excluded.search_impressions,
        deal_opens = o.deal_opens + excluded.deal_opens
$$;

CREATE FUNCTION user_analytics_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM usage_add(array_agg(action), array_agg(data), array_agg(created_at))
    FROM new_events WHERE action IN ('hive_viewed', 'deal_opened', 'search_made');
    RETURN NULL;
END $$;

CREATE TRIGGER user_analytics_usage AFTER INSERT ON user_analytics
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION user_analytics_usage();

-- the events stored before this migration
SELECT usage_add(array_agg(action), array_agg(data), array_agg(created_at))
FROM user_analytics WHERE action IN ('hive_viewed', 'deal_opened', 'search_made');

-- Feedback sentiment: VADER's compound score (-1 .. 1), computed by the writer (modules
-- .users) when the message is stored; rows from before are filled by
-- `bizzyd sentiment-backfill` (NULL until then).  The label uses VADER's thresholds.
ALTER TABLE user_message
    ADD COLUMN sentiment real CHECK (sentiment BETWEEN -1 AND 1),
    ADD COLUMN sentiment_label text GENERATED ALWAYS AS (
        CASE WHEN sentiment IS NULL THEN NULL
             WHEN sentiment >= 0.05 THEN 'positive'
             WHEN sentiment <= -0.05 THEN 'negative'
             ELSE 'neutral' END) STORED;
CREATE INDEX user_message_unscored_idx ON user_message (id)
    WHERE sentiment IS NULL AND kind = 'feedback';
