-- Business accounts (issue 17): member roles admin/manager/viewer, daily deals, and the
-- audit trail of business writes. Numbered 0008: main has 0007_queue.

-- Roles of the business API: admin (everything, members included), manager (hives,
-- deals, sensors), viewer (read only). The old owner and admin become admin, staff
-- becomes manager (staff could change venues before).
ALTER TABLE account_member DROP CONSTRAINT account_member_member_role_check;
UPDATE account_member SET member_role = CASE member_role WHEN 'staff' THEN 'manager'
                                                         ELSE 'admin' END;
ALTER TABLE account_member
    ALTER COLUMN member_role SET DEFAULT 'viewer',
    ADD CONSTRAINT account_member_member_role_check
        CHECK (member_role IN ('admin', 'manager', 'viewer'));
CREATE INDEX account_member_admin_idx ON account_member (account_id)
    WHERE member_role = 'admin';

-- A daily deal recurs on ISO weekdays (1 = Monday) between two hive-local times, within
-- its validity window. An end at or before the start ends on the next day.
ALTER TABLE deal
    ADD COLUMN daily_weekdays smallint[],
    ADD COLUMN daily_start time,
    ADD COLUMN daily_end time,
    ADD CONSTRAINT deal_daily_shape CHECK (
        num_nonnulls(daily_weekdays, daily_start, daily_end) IN (0, 3)
        AND (daily_weekdays IS NULL OR (cardinality(daily_weekdays) BETWEEN 1 AND 7
             AND daily_weekdays <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]))
        AND (daily_start IS NULL OR daily_start <> daily_end));

-- The next (or current) occurrence of a deal at `at`: for a daily deal the next window on
-- one of its weekdays in the zone `tz` (local wall-clock times, so DST-correct: a 17:00
-- start is 17:00 local on either side of a change; a start inside a spring-forward gap
-- is moved forward as PostgreSQL does), clipped to the validity window; for any other
-- deal its validity window. NULL when no occurrence ends after `at`.
CREATE FUNCTION deal_next_occurrence(d deal, tz text, at timestamptz,
                                     OUT starts_at timestamptz, OUT ends_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    day date;
    s timestamptz;
    e timestamptz;
BEGIN
    IF d.daily_weekdays IS NULL THEN
        IF d.valid_until > at THEN
            starts_at := d.valid_from;
            ends_at := d.valid_until;
        END IF;
        RETURN;
    END IF;
    day := (greatest(at, d.valid_from) AT TIME ZONE tz)::date - 1;
    FOR i IN 0..8 LOOP
        IF extract(isodow FROM day + i)::smallint = ANY (d.daily_weekdays) THEN
            s := ((day + i) + d.daily_start) AT TIME ZONE tz;
            e := ((day + i + CASE WHEN d.daily_end <= d.daily_start THEN 1 ELSE 0 END)
                  + d.daily_end) AT TIME ZONE tz;
            s := greatest(s, d.valid_from);
            e := least(e, d.valid_until);
            IF e > at AND e > s THEN
                starts_at := s;
                ends_at := e;
                RETURN;
            END IF;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION deal_next_occurrence(deal, text, timestamptz) IS
    'The current or next window of a deal (daily deals: in the hive''s time zone).';

-- Who changed what in a business account, and how (rows as JSON before and after).
CREATE TABLE account_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    user_id    bigint REFERENCES app_user (id) ON DELETE SET NULL,
    action     text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    entity_id  bigint,
    before     jsonb,
    after      jsonb,
    at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE account_audit IS
    'Business writes (account, members, hives, deals): who, what, when, before/after.';
CREATE INDEX account_audit_account_idx ON account_audit (account_id, id DESC);
