-- App users (issue 16): push devices, richer notification settings, anonymised
-- analytics after "delete my account", and the App Store products of the user plans.

-- The UUID the app passes to the App Store as appAccountToken when the user buys a
-- plan: store notifications name the user by it (no personal data). Given at sign-in
-- (modules.auth), not by a column default: demo data stays reproducible.
ALTER TABLE app_user ADD COLUMN store_account_token uuid UNIQUE;
UPDATE app_user SET store_account_token = gen_random_uuid();

-- A device the app registered for push (Firebase Cloud Messaging registration token).
CREATE TABLE user_device (
    fcm_token  text PRIMARY KEY CHECK (length(fcm_token) BETWEEN 1 AND 4096),
    user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    platform   text NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE user_device IS
    'Push devices of a user: the FCM registration token (one user per token) and platform.';
CREATE INDEX user_device_user_idx ON user_device (user_id);
CREATE TRIGGER user_device_touch_updated_at BEFORE UPDATE ON user_device
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Occupancy alerts: a threshold in percent of capacity or in people, quiet hours in the
-- user's time zone; deal alerts: which deal kinds.
ALTER TABLE user_notification_def
    ADD COLUMN threshold_count integer CHECK (threshold_count BETWEEN 0 AND 100000),
    ADD COLUMN quiet_start time,
    ADD COLUMN quiet_end time,
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    ADD COLUMN deal_kinds text[] NOT NULL DEFAULT '{}'
        CHECK (deal_kinds <@ ARRAY['discount', 'promotion', 'happy_hour', 'event']::text[]),
    DROP CONSTRAINT user_notification_def_threshold,
    DROP CONSTRAINT user_notification_def_unique,
    ADD CONSTRAINT user_notification_def_threshold CHECK (
        CASE WHEN kind IN ('occupancy_above', 'occupancy_below')
             THEN num_nonnulls(threshold_percent, threshold_count) = 1 AND hive_id IS NOT NULL
             ELSE threshold_percent IS NULL AND threshold_count IS NULL
        END),
    ADD CONSTRAINT user_notification_def_quiet CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    ADD CONSTRAINT user_notification_def_unique
        UNIQUE NULLS NOT DISTINCT (user_id, hive_id, kind, threshold_percent, threshold_count);

-- Feedback about a hive may carry a 1-5 rating.
ALTER TABLE user_message ADD COLUMN rating smallint CHECK (rating BETWEEN 1 AND 5);

-- "Delete my account" keeps usage events, without the person.
ALTER TABLE user_analytics
    ALTER COLUMN user_id DROP NOT NULL,
    DROP CONSTRAINT user_analytics_user_id_fkey,
    ADD CONSTRAINT user_analytics_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES app_user (id) ON DELETE SET NULL;

-- Which store product buys which plan (App Store product ids, Play product ids).
CREATE TABLE store_product (
    store                text NOT NULL CHECK (store IN ('apple', 'google', 'stripe')),
    product_id           text NOT NULL CHECK (length(product_id) BETWEEN 1 AND 200),
    subscription_type_id bigint NOT NULL REFERENCES subscription_type (id) ON DELETE RESTRICT,
    PRIMARY KEY (store, product_id)
);
COMMENT ON TABLE store_product IS 'Store products (e.g. App Store product ids) and the plan each buys.';

INSERT INTO store_product (store, product_id, subscription_type_id)
SELECT 'apple', p.product_id, t.id
FROM (VALUES ('app.bizzy.basic.monthly', 'basic'), ('app.bizzy.premium.monthly', 'premium'))
     AS p (product_id, code)
JOIN subscription_type t ON t.code = p.code;

-- Store notifications already applied (App Store notificationUUID): a replay changes nothing.
CREATE TABLE store_notification (
    store       text NOT NULL CHECK (store IN ('apple', 'google', 'stripe')),
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 200),
    kind        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, external_id)
);
COMMENT ON TABLE store_notification IS
    'Store server notifications applied, by the store''s id: replays are recognised.';
