-- The notifier (issue 19): what occupancy alerts need beyond 0006 (hysteresis margin,
-- cooldown, and the trigger state the notifier keeps), an outbox of events it turns into
-- notifications, and the in-app inbox, which is also the record of what was sent.

-- Settings: the margin by which occupancy must cross back before an alert re-arms (in
-- the threshold's unit: percentage points or people), and the least time between two
-- alerts of one setting. State (written by the notifier only): armed (NULL: not seen
-- yet; the first occupancy seen arms it unless the threshold is already crossed, so that
-- only a crossing alerts), and how many times the setting fired (the idempotency id of
-- an alert is `occ:<id>:<fired_count>`).
ALTER TABLE user_notification_def
    ADD COLUMN margin integer NOT NULL DEFAULT 5 CHECK (margin BETWEEN 0 AND 100000),
    ADD COLUMN cooldown_seconds integer NOT NULL DEFAULT 900
        CHECK (cooldown_seconds BETWEEN 0 AND 604800),
    ADD COLUMN armed boolean,
    ADD COLUMN fired_count integer NOT NULL DEFAULT 0 CHECK (fired_count >= 0);

-- A changed threshold, direction or hive starts over from the next occupancy seen.
CREATE FUNCTION notifier_def_rearm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.hive_id, OLD.kind, OLD.threshold_percent, OLD.threshold_count)
        IS DISTINCT FROM (NEW.hive_id, NEW.kind, NEW.threshold_percent, NEW.threshold_count)
    THEN
        NEW.armed := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER user_notification_def_rearm BEFORE UPDATE ON user_notification_def
    FOR EACH ROW EXECUTE FUNCTION notifier_def_rearm();

-- The notifier keeps the settings of occupancy alerts in memory: a change of a setting
-- (not of its state) is announced with the setting's id.
CREATE FUNCTION notifier_def_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.user_id, OLD.hive_id, OLD.kind, OLD.threshold_percent,
            OLD.threshold_count, OLD.quiet_start, OLD.quiet_end, OLD.time_zone,
            OLD.enabled, OLD.margin, OLD.cooldown_seconds, OLD.deal_kinds)
        IS NOT DISTINCT FROM (NEW.user_id, NEW.hive_id, NEW.kind, NEW.threshold_percent,
            NEW.threshold_count, NEW.quiet_start, NEW.quiet_end, NEW.time_zone,
            NEW.enabled, NEW.margin, NEW.cooldown_seconds, NEW.deal_kinds) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('bizzyd_notifier_defs',
                      CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END::text);
    RETURN NULL;
END $$;
CREATE TRIGGER user_notification_def_notifier
    AFTER INSERT OR UPDATE OR DELETE ON user_notification_def
    FOR EACH ROW EXECUTE FUNCTION notifier_def_changed();

-- Events the notifier turns into notifications (a transactional outbox: the event
-- commits with what caused it, and the notifier deletes it once its notifications are
-- queued, so a notifier that is down or crashes misses none).
CREATE TABLE notifier_event (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('new_deal', 'subscription_renewed')),
    ref_id     bigint NOT NULL,            -- deal id; payment_transaction id
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notifier_event IS
    'Outbox of the notifier: new deals and subscription renewals not yet turned into '
    'notifications.';

CREATE FUNCTION notifier_event_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notifier_event (kind, ref_id) VALUES (TG_ARGV[0], NEW.id);
    PERFORM pg_notify('bizzyd_notifier_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER deal_notifier AFTER INSERT ON deal
    FOR EACH ROW EXECUTE FUNCTION notifier_event_add('new_deal');
CREATE TRIGGER payment_transaction_notifier AFTER INSERT ON payment_transaction
    FOR EACH ROW WHEN (NEW.kind = 'renewal' AND NEW.status = 'succeeded')
    EXECUTE FUNCTION notifier_event_add('subscription_renewed');

-- The in-app inbox: every notification the notifier handled, pushed or not (quiet
-- hours, no device). Its idempotency key is unique: a job delivered twice by the queue
-- finds its row and sends nothing again.
CREATE TABLE user_inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 64),
    kind            text NOT NULL CHECK (kind IN ('occupancy_above', 'occupancy_below',
                        'new_deal', 'deal_expiring', 'subscription_renewed',
                        'subscription_expiring')),
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body            text NOT NULL CHECK (length(body) <= 1000),
    hive_id         bigint REFERENCES hive (id) ON DELETE SET NULL,
    deal_id         bigint REFERENCES deal (id) ON DELETE SET NULL,
    pushed          boolean NOT NULL,      -- false: quiet hours, or no device to push to
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz
);
COMMENT ON TABLE user_inbox IS
    'Notifications sent to a user (the app''s inbox), by idempotency key.';
CREATE INDEX user_inbox_user_idx ON user_inbox (user_id, id DESC);
CREATE INDEX user_inbox_unread_idx ON user_inbox (user_id) WHERE read_at IS NULL;

-- Which devices a notification was pushed to: a retry pushes only to the others.
CREATE TABLE user_inbox_delivery (
    inbox_id  bigint NOT NULL REFERENCES user_inbox (id) ON DELETE CASCADE,
    fcm_token text NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (inbox_id, fcm_token)
);
COMMENT ON TABLE user_inbox_delivery IS 'Devices a notification of the inbox was pushed to.';
