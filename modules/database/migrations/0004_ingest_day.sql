-- 0004_ingest_day: what MQTT ingest needs beyond 0003 to count exactly once and to reset
-- occupancy daily (docs/ingest.md, "Counting" and "Daily reset").
--
-- 1. The per-sensor counting state of modules/mqtt_ingest/counting.py. sensor_ingest_state
--    (0003) keeps the last v1 totals and the last v2 counter for people to read, but the
--    exact incremental algorithm needs a little more: the report type of the last v1
--    report and the events of the latest v2 second (`tail`) with the counter before it.
--    The tallies are stored whole, as `CounterTally.to_dict()` / `EventTally.to_dict()`,
--    next to the readable columns that ingest keeps in step with them.
-- 2. The occupancy "day". A hive's occupancy counts the reports whose event time lies
--    after the hive's last reset boundary (`mqtt.reset_at`, hive-local). Keeping the
--    unclamped net of that day (day_in - day_out) makes the displayed occupancy
--    (greatest(net, 0)) a function of the SET of reports, so redelivery and reordering
--    cannot change it; a running clamped value could not do that (an exit applied before
--    its entry would be floored away). `clamps` counts commits whose net went below zero.

ALTER TABLE sensor_ingest_state
    ADD COLUMN v1_tally jsonb CHECK (v1_tally IS NULL OR jsonb_typeof(v1_tally) = 'object'),
    ADD COLUMN v2_tally jsonb CHECK (v2_tally IS NULL OR jsonb_typeof(v2_tally) = 'object');
COMMENT ON COLUMN sensor_ingest_state.v1_tally IS
    'counting.CounterTally.to_dict(): the greatest v1 report applied and the sums; '
    'equals the replay of the sensor''s stored v1 rows.';
COMMENT ON COLUMN sensor_ingest_state.v2_tally IS
    'counting.EventTally.to_dict(): the latest second of v2 events, its (counter, type) '
    'marks, the counter before it and the sums; equals the replay of the stored events.';

ALTER TABLE hive_occupancy
    ADD COLUMN day_start timestamptz,
    ADD COLUMN day_in    bigint NOT NULL DEFAULT 0,
    ADD COLUMN day_out   bigint NOT NULL DEFAULT 0,
    ADD COLUMN clamps    bigint NOT NULL DEFAULT 0 CHECK (clamps >= 0);
COMMENT ON COLUMN hive_occupancy.day_start IS
    'The reset boundary (UTC) the day_in/day_out sums start at; occupancy = '
    'greatest(day_in - day_out, 0).';
COMMENT ON COLUMN hive_occupancy.day_in IS
    'Entries of reports with reported_at >= day_start (the sum of their delta_in).';
COMMENT ON COLUMN hive_occupancy.day_out IS
    'Exits of reports with reported_at >= day_start (the sum of their delta_out).';
COMMENT ON COLUMN hive_occupancy.clamps IS
    'Commits that left day_in - day_out below zero (occupancy shown as 0): an anomaly.';
