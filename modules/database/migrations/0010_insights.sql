-- Popular times and forecasts (issue 18, modules/insights): a weekday x local-hour
-- profile per hive from the last weeks of hive_occupancy_hourly, and the next 24 hours'
-- forecast, both written by the insights job (never per request); the feature that
-- shows the forecast's band.

-- One row per hive, weekday and local hour. ISO weekday (1 = Monday) and hour of the
-- hive's local clock (DST-correct: the hour that clocks skip has one sample fewer, the
-- repeated one one more). Hours without a rollup row count as 0 (nobody there).
CREATE TABLE hive_occupancy_profile (
    hive_id  bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    weekday  smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    hour     smallint NOT NULL CHECK (hour BETWEEN 0 AND 23),
    samples  smallint NOT NULL CHECK (samples >= 0),
    mean     real NOT NULL CHECK (mean >= 0),
    p10      real NOT NULL CHECK (p10 >= 0),
    p50      real NOT NULL CHECK (p50 >= p10),
    p90      real NOT NULL CHECK (p90 >= p50),
    PRIMARY KEY (hive_id, weekday, hour)
);
COMMENT ON TABLE hive_occupancy_profile IS
    'Popular times: mean and p10/p50/p90 of the hourly average occupancy per ISO weekday '
    'and local hour over the last weeks (insights job).';

-- Per hive: when its profile and forecast were computed, over how many weeks, and the
-- damped "today against usual" factor the forecast used.
CREATE TABLE hive_insights (
    hive_id       bigint PRIMARY KEY REFERENCES hive (id) ON DELETE CASCADE,
    weeks         smallint NOT NULL CHECK (weeks > 0),
    profile_at    timestamptz NOT NULL,
    forecast_at   timestamptz,
    today_ratio   real CHECK (today_ratio >= 0)
);
COMMENT ON TABLE hive_insights IS
    'When the insights job last computed each hive''s profile and forecast, and the '
    'today-against-profile ratio the forecast used.';

-- The next 24 hours per hive, whole UTC hours; `usual` is the profile mean of that
-- local weekday and hour, `expected` the forecast after today's adjustment, low/high
-- its p10-p90 band (adjusted alike).
CREATE TABLE hive_occupancy_forecast (
    hive_id   bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    hour      timestamptz NOT NULL
              CHECK (date_trunc('hour', hour AT TIME ZONE 'UTC') = hour AT TIME ZONE 'UTC'),
    usual     real NOT NULL CHECK (usual >= 0),
    expected  real NOT NULL CHECK (expected >= 0),
    low       real NOT NULL CHECK (low >= 0 AND low <= expected),
    high      real NOT NULL CHECK (high >= expected),
    PRIMARY KEY (hive_id, hour)
);
COMMENT ON TABLE hive_occupancy_forecast IS
    'Forecast occupancy of the next hours per hive (insights job), with the p10-p90 band.';

-- Runs of the job: the workers compare `finished_at` to know when to reload.
CREATE TABLE insights_run (
    job          text PRIMARY KEY CHECK (job IN ('profile', 'forecast')),
    finished_at  timestamptz NOT NULL,
    hives        integer NOT NULL CHECK (hives >= 0),
    seconds      real NOT NULL CHECK (seconds >= 0)
);
COMMENT ON TABLE insights_run IS
    'The last run of each insights job (profile, forecast): when, how many hives, how long.';

INSERT INTO feature (code, name, description) VALUES
    ('forecast_band', 'Forecast band', 'The likely range (p10-p90) around the forecast');

INSERT INTO subscription_type_feature (subscription_type_id, feature_id)
SELECT t.id, f.id
FROM subscription_type t JOIN feature f ON f.code = 'forecast_band'
WHERE t.code IN ('premium', 'business');
