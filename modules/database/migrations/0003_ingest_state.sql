-- 0003_ingest_state: what MQTT ingest keeps besides the reports themselves: per-sensor
-- counting state, the last status message, configurations sent to sensors, rejected
-- messages, and per-hive occupancy (live and hourly).

-- One row per sensor, updated in the same transaction as the reports it accounts for, so
-- a redelivered message finds the state exactly as its first delivery left it.
CREATE TABLE sensor_ingest_state (
    sensor_id        bigint PRIMARY KEY REFERENCES sensor (id) ON DELETE CASCADE,
    -- v1: totals and sensor time of the last applied report (ordering is by sensor time,
    -- then by totals); deltas are computed against these, with wrap-around
    last_total_in    integer CHECK (last_total_in BETWEEN 0 AND 65535),
    last_total_out   integer CHECK (last_total_out BETWEEN 0 AND 65535),
    last_sensor_time timestamptz,
    -- v1: totals reported by the last restart report (normally 0/0) and when it happened
    baseline_in      integer CHECK (baseline_in BETWEEN 0 AND 65535),
    baseline_out     integer CHECK (baseline_out BETWEEN 0 AND 65535),
    baseline_at      timestamptz,
    restarts         bigint NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    -- v2: last message counter seen (wraps at 256) and the event time that carried it
    last_counter     smallint CHECK (last_counter BETWEEN 0 AND 255),
    last_event_at    timestamptz,
    lost_events      bigint NOT NULL DEFAULT 0 CHECK (lost_events >= 0),   -- counter gaps
    -- both: deltas above mqtt.max_delta are recorded, never applied
    anomalies        bigint NOT NULL DEFAULT 0 CHECK (anomalies >= 0),
    last_anomaly_at  timestamptz,
    last_anomaly     text,
    stale_reports    bigint NOT NULL DEFAULT 0 CHECK (stale_reports >= 0),
    duplicates       bigint NOT NULL DEFAULT 0 CHECK (duplicates >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sensor_ingest_state_totals_paired
        CHECK ((last_total_in IS NULL) = (last_total_out IS NULL)),
    CONSTRAINT sensor_ingest_state_baseline_paired
        CHECK ((baseline_in IS NULL) = (baseline_out IS NULL))
);
COMMENT ON TABLE sensor_ingest_state IS
    'Per-sensor ingest state: last applied totals/counter, restart baseline, and counts '
    'of lost events, anomalies, stale reports and duplicates.';

-- Only the latest status message per sensor (it is a health snapshot); the raw values
-- are kept as sent, with range checks where the protocol defines a range.
CREATE TABLE sensor_status (
    sensor_id        bigint PRIMARY KEY REFERENCES sensor (id) ON DELETE CASCADE,
    started_at       timestamptz NOT NULL,   -- the sensor's startup time
    battery_mv       integer NOT NULL CHECK (battery_mv BETWEEN 0 AND 65535),
    state_flags      integer NOT NULL CHECK (state_flags BETWEEN 0 AND 65535),
    discarded_events integer NOT NULL CHECK (discarded_events BETWEEN 0 AND 65535),
    csq              smallint NOT NULL CHECK (csq BETWEEN 0 AND 31 OR csq = 99),   -- 99 unknown
    firmware_version bigint NOT NULL CHECK (firmware_version BETWEEN 0 AND 4294967295),
    firmware         text GENERATED ALWAYS AS (
                         (firmware_version >> 24)::text || '.'
                         || ((firmware_version >> 16) & 255)::text || '.'
                         || (firmware_version & 65535)::text) STORED,
    -- the configuration the sensor says it applied; not a foreign key: factory sensors
    -- report ids this server never issued
    configuration_id bigint NOT NULL CHECK (configuration_id BETWEEN 0 AND 4294967295),
    received_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sensor_status IS
    'The last status message of each sensor: startup time, battery, state flags, '
    'discarded events, signal (CSQ), firmware and applied configuration id.';

-- The id is the protocol's 32-bit configuration id, unique across the fleet, so the id a
-- status message reports identifies one row (ingest also checks its sensor_id).
CREATE TABLE sensor_config (
    id                     bigint GENERATED ALWAYS AS IDENTITY (MAXVALUE 4294967295) PRIMARY KEY,
    sensor_id              bigint NOT NULL REFERENCES sensor (id) ON DELETE CASCADE,
    report_config_id       bigint REFERENCES sensor_report_config (id) ON DELETE SET NULL,
    threshold_cm           integer NOT NULL CHECK (threshold_cm BETWEEN 1 AND 1000),
    reporting_interval_min integer NOT NULL CHECK (reporting_interval_min BETWEEN 1 AND 1440),
    status_interval_min    integer NOT NULL CHECK (status_interval_min BETWEEN 1 AND 10080),
    event_threshold        integer NOT NULL CHECK (event_threshold BETWEEN 1 AND 1000),
    state                  text NOT NULL DEFAULT 'pending'
                           CHECK (state IN ('pending', 'applied', 'superseded')),
    created_by             bigint REFERENCES app_user (id) ON DELETE SET NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    applied_at             timestamptz,
    superseded_at          timestamptz,
    CONSTRAINT sensor_config_applied_at CHECK (state <> 'applied' OR applied_at IS NOT NULL),
    CONSTRAINT sensor_config_superseded_at
        CHECK ((state = 'superseded') = (superseded_at IS NOT NULL))
);
COMMENT ON TABLE sensor_config IS
    'Configuration messages issued to a sensor: pending until a status message reports the '
    'id, then applied; superseded once a newer one is applied (or replaces a pending one).';
-- At most one configuration waiting and one in force per sensor. To move on, supersede
-- the old row before marking the new one, in the same transaction.
CREATE UNIQUE INDEX sensor_config_one_pending ON sensor_config (sensor_id) WHERE state = 'pending';
CREATE UNIQUE INDEX sensor_config_one_applied ON sensor_config (sensor_id) WHERE state = 'applied';
CREATE INDEX sensor_config_sensor_idx ON sensor_config (sensor_id, created_at);

CREATE TABLE ingest_reject (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic              text NOT NULL,
    payload            bytea NOT NULL,   -- the raw MQTT payload, for replay
    reason             text NOT NULL CHECK (reason ~ '^[a-z][a-z0-9_]{0,63}$'),
    detail             text,
    sensor_external_id text,   -- from the topic when it could be parsed
    received_at        timestamptz NOT NULL DEFAULT now(),
    replayed_at        timestamptz
);
COMMENT ON TABLE ingest_reject IS
    'MQTT messages that could not be decoded or applied, kept raw with a reason code '
    '(bad_length, bad_marker, unknown_sensor ...) so an operator can replay them.';
CREATE INDEX ingest_reject_pending_idx ON ingest_reject (received_at) WHERE replayed_at IS NULL;
CREATE INDEX ingest_reject_reason_idx ON ingest_reject (reason, received_at);

-- The seed's "hive status" occupancy: one row per hive, the truth the shared-memory zone
-- and memcached replicate. Totals are plain sums of applied deltas; occupancy is kept by
-- ingest and never goes below zero (ingest clamps; the CHECK catches a bug, not traffic).
CREATE TABLE hive_occupancy (
    hive_id    bigint PRIMARY KEY REFERENCES hive (id) ON DELETE CASCADE,
    occupancy  integer NOT NULL DEFAULT 0 CHECK (occupancy >= 0),
    total_in   bigint NOT NULL DEFAULT 0 CHECK (total_in >= 0),
    total_out  bigint NOT NULL DEFAULT 0 CHECK (total_out >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE hive_occupancy IS
    'Current occupancy of each hive with running entry/exit totals (source of truth for '
    'the caches).';

-- Hours are UTC hours (a zone with a :30 offset sees its local hours split in two).
CREATE TABLE hive_occupancy_hourly (
    hive_id        bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    hour           timestamptz NOT NULL
                   CHECK (date_trunc('hour', hour AT TIME ZONE 'UTC') = hour AT TIME ZONE 'UTC'),
    entries        integer NOT NULL DEFAULT 0 CHECK (entries >= 0),
    exits          integer NOT NULL DEFAULT 0 CHECK (exits >= 0),
    peak_occupancy integer NOT NULL DEFAULT 0 CHECK (peak_occupancy >= 0),
    avg_occupancy  real NOT NULL DEFAULT 0 CHECK (avg_occupancy >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hive_id, hour),
    CONSTRAINT hive_occupancy_hourly_avg_le_peak CHECK (avg_occupancy <= peak_occupancy)
);
COMMENT ON TABLE hive_occupancy_hourly IS
    'Hourly rollup per hive (entries, exits, peak and time-weighted average occupancy) so '
    'analytics never scan sensor_report.';
