-- Occupancy analytics, the series part (issue 18, modules.analytics): the 5-minute and
-- daily rollup levels next to hive_occupancy_hourly, the occupancy curve in all three,
-- corrections and the capacity schedule. Numbered 0009 (18b = 0010, 18c = 0011).
--
-- The occupancy curve of a rollup row: ingest records, for each commit that changes a
-- hive, the raw occupancy before and after it at the commit's time (`last_at`); `area`
-- is the integral of the occupancy (people x seconds) from the row's start to `last_at`,
-- so the time-weighted average of a finished row is
--   (area + last_occupancy x (end - last_at)) / (end - start)
-- without any job. Rows that only carry entries/exits (late reports) have NULL there.
-- Entries and exits go to the row of the report's event time, the curve to the row of
-- the commit time.

ALTER TABLE hive_occupancy_hourly
    ADD COLUMN min_occupancy  integer CHECK (min_occupancy >= 0),
    ADD COLUMN last_occupancy integer CHECK (last_occupancy >= 0),
    ADD COLUMN last_at        timestamptz,
    ADD COLUMN area           double precision CHECK (area >= 0);

CREATE TABLE hive_occupancy_5m (
    hive_id        bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    bucket         timestamptz NOT NULL
                   CHECK (extract(epoch FROM bucket)::bigint % 300 = 0
                          AND extract(epoch FROM bucket) = floor(extract(epoch FROM bucket))),
    entries        integer NOT NULL DEFAULT 0 CHECK (entries >= 0),
    exits          integer NOT NULL DEFAULT 0 CHECK (exits >= 0),
    min_occupancy  integer CHECK (min_occupancy >= 0),
    max_occupancy  integer CHECK (max_occupancy >= min_occupancy),
    last_occupancy integer CHECK (last_occupancy >= 0),
    last_at        timestamptz,
    area           double precision CHECK (area >= 0),
    PRIMARY KEY (hive_id, bucket)
);
COMMENT ON TABLE hive_occupancy_5m IS
    '5-minute rollup per hive (UTC-aligned, which every zone offset divides): entries, '
    'exits and the occupancy curve (min, max, last, area). Kept analytics.retention_5m.';

-- Local days of the hive's time zone (23 or 25 hours on DST days): starts_at/ends_at
-- are the instants of the local midnights.
CREATE TABLE hive_occupancy_daily (
    hive_id        bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    day            date NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL CHECK (ends_at > starts_at),
    entries        integer NOT NULL DEFAULT 0 CHECK (entries >= 0),
    exits          integer NOT NULL DEFAULT 0 CHECK (exits >= 0),
    min_occupancy  integer CHECK (min_occupancy >= 0),
    max_occupancy  integer CHECK (max_occupancy >= min_occupancy),
    last_occupancy integer CHECK (last_occupancy >= 0),
    last_at        timestamptz,
    area           double precision CHECK (area >= 0),
    PRIMARY KEY (hive_id, day)
);
COMMENT ON TABLE hive_occupancy_daily IS
    'Daily rollup per hive over its local days (DST days are 23 or 25 hours long). '
    'Kept analytics.retention_daily.';

-- Corrections: "the count was `occupancy` at `at`". `offset` is occupancy minus the raw
-- count at `at`; it holds from `at` until the end of that occupancy day (`day_end`, the
-- next daily reset), or until a later correction of the same day. `previous` is the
-- corrected count just before, `delta` = occupancy - previous (what the caller sees).
CREATE TABLE hive_correction (
    id          bigserial PRIMARY KEY,
    hive_id     bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    day_end     timestamptz NOT NULL CHECK (day_end > at),
    occupancy   integer NOT NULL CHECK (occupancy >= 0),
    previous    integer NOT NULL CHECK (previous >= 0),
    "offset"    integer NOT NULL,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by  bigint REFERENCES app_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hive_correction_hive_at_idx ON hive_correction (hive_id, at);
COMMENT ON TABLE hive_correction IS
    'Audited occupancy corrections (who: created_by, why: reason, when: created_at).';

-- The live count follows the day's latest correction: occupancy = max(raw + correction, 0),
-- raw = max(day_in - day_out, 0); the daily reset sets it back to 0.
ALTER TABLE hive_occupancy ADD COLUMN correction integer NOT NULL DEFAULT 0;

-- Capacity by time range (event nights); outside every range hive.capacity holds.
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TABLE hive_capacity_schedule (
    id        bigserial PRIMARY KEY,
    hive_id   bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    during    tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during)
                                        AND NOT upper_inc(during)
                                        AND NOT lower_inf(during) AND NOT upper_inf(during)),
    capacity  integer NOT NULL CHECK (capacity BETWEEN 1 AND 1000000),
    label     text CHECK (length(label) <= 200),
    CONSTRAINT hive_capacity_schedule_no_overlap
        EXCLUDE USING gist (hive_id WITH =, during WITH &&)
);
COMMENT ON TABLE hive_capacity_schedule IS
    'Capacity of a hive by time range (replaces hive.capacity inside the range; ranges '
    'of a hive never overlap).';
