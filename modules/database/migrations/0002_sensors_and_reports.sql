-- 0002_sensors_and_reports: sensors, their modems and configuration profiles, and the
-- sensor_report table, partitioned by month.

CREATE TABLE modem (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei       text NOT NULL UNIQUE CHECK (imei ~ '^[0-9]{15}$'),
    iccid      text UNIQUE CHECK (iccid ~ '^[0-9]{18,22}$'),   -- the SIM card in it
    operator   text,
    model      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE modem IS 'A GPRS modem (and its SIM) that carries a sensor''s MQTT traffic.';

-- Network and report configs are named profiles shared by many sensors (a fleet uses one
-- APN and broker; a "busy bar" profile suits many doors). What was actually sent to one
-- sensor, with its wire configuration id, is a sensor_config row (migration 0003).
CREATE TABLE sensor_network_config (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    apn         text NOT NULL,
    apn_user    text,
    broker_host text NOT NULL,
    broker_port integer NOT NULL DEFAULT 8883 CHECK (broker_port BETWEEN 1 AND 65535),
    use_tls     boolean NOT NULL DEFAULT true,
    keepalive_s integer NOT NULL DEFAULT 60 CHECK (keepalive_s BETWEEN 10 AND 3600),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sensor_network_config IS
    'Network profile for sensors: APN and the MQTT broker to reach (no secrets).';
CREATE TRIGGER sensor_network_config_touch_updated_at BEFORE UPDATE ON sensor_network_config
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The four values of the protocol's configuration message. The ranges are tighter than
-- the 16-bit wire fields on purpose: they are what makes physical sense for a door.
CREATE TABLE sensor_report_config (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                   text NOT NULL UNIQUE,
    threshold_cm           integer NOT NULL CHECK (threshold_cm BETWEEN 1 AND 1000),
    reporting_interval_min integer NOT NULL CHECK (reporting_interval_min BETWEEN 1 AND 1440),
    status_interval_min    integer NOT NULL CHECK (status_interval_min BETWEEN 1 AND 10080),
    event_threshold        integer NOT NULL CHECK (event_threshold BETWEEN 1 AND 1000),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sensor_report_config IS
    'Report profile: detection threshold, reporting/status intervals, events per report.';
CREATE TRIGGER sensor_report_config_touch_updated_at BEFORE UPDATE ON sensor_report_config
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Windows are hive-local wall-clock times; a window crossing midnight is two rows.
CREATE TABLE sensor_report_schedule (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    report_config_id       bigint NOT NULL REFERENCES sensor_report_config (id) ON DELETE CASCADE,
    iso_weekday            smallint NOT NULL CHECK (iso_weekday BETWEEN 1 AND 7),   -- 1 = Monday
    starts_at              time NOT NULL,
    ends_at                time NOT NULL,
    reporting_interval_min integer NOT NULL CHECK (reporting_interval_min BETWEEN 1 AND 1440),
    CONSTRAINT sensor_report_schedule_window CHECK (ends_at > starts_at)
);
COMMENT ON TABLE sensor_report_schedule IS
    'Weekly windows (e.g. opening hours) in which a report profile uses another reporting '
    'interval; outside every window the profile''s own interval applies.';
CREATE INDEX sensor_report_schedule_config_idx
    ON sensor_report_schedule (report_config_id, iso_weekday, starts_at);

CREATE TABLE sensor (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the <sensor_id> of the MQTT topics: modem IMEI or the name printed on the device
    external_id       text NOT NULL UNIQUE CHECK (external_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name              text,
    firmware          text NOT NULL CHECK (firmware IN ('v1', 'v2')),
    hive_id           bigint REFERENCES hive (id) ON DELETE SET NULL,   -- NULL: in stock
    modem_id          bigint UNIQUE REFERENCES modem (id) ON DELETE SET NULL,
    network_config_id bigint REFERENCES sensor_network_config (id) ON DELETE RESTRICT,
    report_config_id  bigint REFERENCES sensor_report_config (id) ON DELETE RESTRICT,
    installed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sensor IS
    'A presence sensor: its MQTT identity, firmware protocol, hive and modem.';
CREATE TRIGGER sensor_touch_updated_at BEFORE UPDATE ON sensor
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE INDEX sensor_hive_idx ON sensor (hive_id);

-- ---------------------------------------------------------------------------------------
-- sensor_report: one row per v1 counter report and per v2 event.
--
-- Both protocols share one table so "reports of a sensor between t1 and t2" is one index
-- scan whatever the firmware; `protocol` says which column group is filled (enforced by
-- the *_shape CHECKs). reported_at is the event time in UTC: the v2 timestamp as sent, or
-- the v1 hive-local sensor time converted with hive.timezone at ingest. It is the
-- partition key, so both natural keys include it (a unique index on a partitioned table
-- must contain the partition key), and ingest dedups with
--   ON CONFLICT (sensor_id, reported_at, total_in, total_out, report_type)
--       WHERE protocol = 'v1' DO NOTHING
--   ON CONFLICT (sensor_id, reported_at, counter, event_type)
--       WHERE protocol = 'v2' DO NOTHING
-- reported_at is a pure function of the message and the hive's zone, so a redelivered
-- message maps to the same key. Never use received_at in a key.
-- ---------------------------------------------------------------------------------------

-- Identity columns are not allowed on partitioned tables before PostgreSQL 17.
CREATE SEQUENCE sensor_report_id_seq AS bigint;

CREATE TABLE sensor_report (
    id                bigint NOT NULL DEFAULT nextval('sensor_report_id_seq'),
    sensor_id         bigint NOT NULL REFERENCES sensor (id) ON DELETE RESTRICT,
    -- the hive the sensor was in when the report arrived (sensors move); history, so
    -- a hive with reports cannot be deleted
    hive_id           bigint REFERENCES hive (id) ON DELETE RESTRICT,
    protocol          text NOT NULL CHECK (protocol IN ('v1', 'v2')),
    reported_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    -- v1 counter report
    sensor_local_time timestamp,   -- wall-clock time exactly as sent (no zone)
    total_in          integer CHECK (total_in BETWEEN 0 AND 65535),
    total_out         integer CHECK (total_out BETWEEN 0 AND 65535),
    report_type       smallint CHECK (report_type IN (32, 33, 255)),   -- 0x20, 0x21, 0xFF
    -- v2 event
    event_type        smallint CHECK (event_type IN (0, 1, 2)),   -- exit, entry, status
    distance_mm       integer CHECK (distance_mm BETWEEN 0 AND 65535),
    counter           smallint CHECK (counter BETWEEN 0 AND 255),
    -- what ingest did with it: entries/exits applied to occupancy, and why
    delta_in          integer NOT NULL DEFAULT 0 CHECK (delta_in >= 0),
    delta_out         integer NOT NULL DEFAULT 0 CHECK (delta_out >= 0),
    outcome           text CHECK (outcome IN ('applied', 'restart', 'stale', 'anomaly')),
    PRIMARY KEY (id, reported_at),
    CONSTRAINT sensor_report_v1_shape CHECK (protocol <> 'v1' OR (
        sensor_local_time IS NOT NULL AND total_in IS NOT NULL AND total_out IS NOT NULL
        AND report_type IS NOT NULL
        AND event_type IS NULL AND distance_mm IS NULL AND counter IS NULL)),
    CONSTRAINT sensor_report_v2_shape CHECK (protocol <> 'v2' OR (
        event_type IS NOT NULL AND distance_mm IS NOT NULL AND counter IS NOT NULL
        AND sensor_local_time IS NULL AND total_in IS NULL AND total_out IS NULL
        AND report_type IS NULL))
) PARTITION BY RANGE (reported_at);
ALTER SEQUENCE sensor_report_id_seq OWNED BY sensor_report.id;
COMMENT ON TABLE sensor_report IS
    'Every sensor report as received (v1 counter reports and v2 events), partitioned by '
    'month of reported_at (UTC); deduplicated by the protocol natural keys.';

CREATE UNIQUE INDEX sensor_report_v1_natural_key
    ON sensor_report (sensor_id, reported_at, total_in, total_out, report_type)
    WHERE protocol = 'v1';
CREATE UNIQUE INDEX sensor_report_v2_natural_key
    ON sensor_report (sensor_id, reported_at, counter, event_type)
    WHERE protocol = 'v2';
CREATE INDEX sensor_report_sensor_time_idx ON sensor_report (sensor_id, reported_at);
CREATE INDEX sensor_report_hive_time_idx ON sensor_report (hive_id, reported_at);

-- Catches what no monthly partition covers (a sensor clock stuck in 2000, a month nobody
-- created yet); create_sensor_report_partitions moves such rows out when it can.
CREATE TABLE sensor_report_default PARTITION OF sensor_report DEFAULT;
COMMENT ON TABLE sensor_report_default IS
    'Reports outside every monthly partition; should stay (nearly) empty.';

CREATE FUNCTION create_sensor_report_partitions(from_month date, months integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    first_month date;
    lower_bound text;
    upper_bound text;
    part        text;
    created     integer := 0;
BEGIN
    IF from_month IS NULL OR months IS NULL OR months NOT BETWEEN 1 AND 120 THEN
        RAISE EXCEPTION 'create_sensor_report_partitions: need a month and 1..120 months'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- concurrent callers (several ingest processes at start-up) take turns
    PERFORM pg_advisory_xact_lock(hashtext('bizzyd.create_sensor_report_partitions'));
    first_month := make_date(extract(year FROM from_month)::int,
                             extract(month FROM from_month)::int, 1);
    FOR i IN 0 .. months - 1 LOOP
        -- bounds are UTC midnights written with an explicit offset, so the session's
        -- TimeZone setting cannot shift them
        lower_bound := to_char(first_month + make_interval(months => i), 'YYYY-MM-DD')
                       || ' 00:00:00+00';
        upper_bound := to_char(first_month + make_interval(months => i + 1), 'YYYY-MM-DD')
                       || ' 00:00:00+00';
        part := 'sensor_report_p'
                || to_char(first_month + make_interval(months => i), 'YYYYMM');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            PERFORM _create_sensor_report_partition(part, lower_bound::timestamptz,
                                                    upper_bound::timestamptz);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION create_sensor_report_partitions(date, integer) IS
    'Create the monthly sensor_report partitions sensor_report_pYYYYMM for `months` months '
    'from from_month; existing ones are skipped. Returns how many were created.';

CREATE FUNCTION _create_sensor_report_partition(part text, lo timestamptz, hi timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sensor_report_default
                   WHERE reported_at >= lo AND reported_at < hi) THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF sensor_report FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    ELSE
        PERFORM _move_into_sensor_report_partition(part, lo, hi);
    END IF;
    EXECUTE format('COMMENT ON TABLE %I IS %L', part,
                   format('sensor_report rows with reported_at in [%s, %s) UTC',
                          to_char(lo AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                          to_char(hi AT TIME ZONE 'UTC', 'YYYY-MM-DD')));
END
$$;
COMMENT ON FUNCTION _create_sensor_report_partition(text, timestamptz, timestamptz) IS
    'Internal to create_sensor_report_partitions: create and comment one partition.';

-- A new partition cannot be created while the default partition holds rows of its range,
-- so those rows are moved: build the table apart, move the rows in, then attach it.
CREATE FUNCTION _move_into_sensor_report_partition(part text, lo timestamptz, hi timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cols text;
BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
    FROM pg_attribute
    WHERE attrelid = 'sensor_report'::regclass AND attnum > 0 AND NOT attisdropped;
    EXECUTE format('CREATE TABLE %I (LIKE sensor_report INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part);
    EXECUTE format('WITH moved AS (DELETE FROM sensor_report_default '
                   'WHERE reported_at >= $1 AND reported_at < $2 RETURNING %s) '
                   'INSERT INTO %I (%s) SELECT %s FROM moved', cols, part, cols, cols)
        USING lo, hi;
    EXECUTE format('ALTER TABLE sensor_report ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, hi);
END
$$;
COMMENT ON FUNCTION _move_into_sensor_report_partition(text, timestamptz, timestamptz) IS
    'Internal to create_sensor_report_partitions: build partition `part` from the rows of '
    'sensor_report_default in [lo, hi), then attach it.';

-- Three months back (late sensors, backfills) to three ahead. Something must keep calling
-- this as time passes (ingest at start-up and daily); the default partition is the net.
SELECT create_sensor_report_partitions(
    (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months')::date, 7);
