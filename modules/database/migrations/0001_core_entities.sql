-- 0001_core_entities: app users, subscriptions and payments, venue-owner accounts,
-- addresses, hives and everything that hangs off a hive (images, deals, networks, user
-- links, notification definitions).
--
-- Conventions used by every migration:
--   * surrogate keys are `id bigint GENERATED ALWAYS AS IDENTITY`; insert with RETURNING id;
--   * every point in time is timestamptz;
--   * closed vocabularies the code branches on are text columns with a CHECK (a later
--     migration can widen a CHECK inside a transaction, unlike ALTER TYPE ... ADD VALUE);
--     vocabularies operators may extend (hive types, statuses, plans, features) are lookup
--     tables with a stable `code`;
--   * ON DELETE: CASCADE for rows that mean nothing without their parent (images, links,
--     a user's personal data), RESTRICT for money and history (subscriptions, payments,
--     hives with reports), SET NULL for loose references.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION touch_updated_at() IS
    'BEFORE UPDATE trigger: keeps updated_at current so caches can reconcile by it.';

-- ---------------------------------------------------------------------------------------
-- Accounts and users
-- ---------------------------------------------------------------------------------------

CREATE TABLE account (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL CHECK (btrim(name) <> '' AND length(name) <= 200),
    billing_email text CHECK (billing_email ~ '^[^@\s]+@[^@\s]+$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE account IS
    'A business (venue owner) that operates hives and may hold a business subscription.';
CREATE TRIGGER account_touch_updated_at BEFORE UPDATE ON account
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Named app_user because USER is a reserved word. The app keeps no personal data: the
-- Firebase uid is the only link to the person (Firebase holds the profile).
CREATE TABLE app_user (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    firebase_uid text NOT NULL UNIQUE
                 CHECK (length(firebase_uid) BETWEEN 1 AND 128 AND firebase_uid !~ '\s'),
    nickname     text CHECK (btrim(nickname) <> '' AND length(nickname) <= 50),
    user_role    text NOT NULL DEFAULT 'user' CHECK (user_role IN ('user', 'operator')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE app_user IS
    'An app user, identified by the Firebase uid; user_role operator = Bizzy staff.';
CREATE TRIGGER app_user_touch_updated_at BEFORE UPDATE ON app_user
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Not in the seed's diagram, but "account admin" roles need to say which account.
CREATE TABLE account_member (
    account_id  bigint NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    member_role text NOT NULL DEFAULT 'staff' CHECK (member_role IN ('owner', 'admin', 'staff')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, user_id)
);
COMMENT ON TABLE account_member IS
    'Which app users manage which account, and with what role (owner, admin, staff).';
CREATE INDEX account_member_user_idx ON account_member (user_id);

-- ---------------------------------------------------------------------------------------
-- Plans, features, subscriptions, payments
-- ---------------------------------------------------------------------------------------

CREATE TABLE subscription_type (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code           text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]{0,39}$'),
    name           text NOT NULL,
    audience       text NOT NULL CHECK (audience IN ('user', 'account')),
    price_cents    integer NOT NULL DEFAULT 0 CHECK (price_cents >= 0),
    currency       text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    billing_period text NOT NULL DEFAULT 'none' CHECK (billing_period IN ('none', 'month', 'year')),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE subscription_type IS
    'A plan (free, basic, premium for users; business for accounts) and its price.';

CREATE TABLE feature (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]{0,39}$'),
    name        text NOT NULL,
    description text
);
COMMENT ON TABLE feature IS 'A capability a plan can grant; code is what the API checks.';

CREATE TABLE subscription_type_feature (
    subscription_type_id bigint NOT NULL REFERENCES subscription_type (id) ON DELETE CASCADE,
    feature_id           bigint NOT NULL REFERENCES feature (id) ON DELETE CASCADE,
    PRIMARY KEY (subscription_type_id, feature_id)
);
COMMENT ON TABLE subscription_type_feature IS 'Which features each plan grants (many-to-many).';
CREATE INDEX subscription_type_feature_feature_idx ON subscription_type_feature (feature_id);

-- A subscription belongs to exactly one user or one account (the seed has both relations).
-- Owners cannot be deleted while they have subscriptions: billing history is kept.
CREATE TABLE subscription (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_type_id bigint NOT NULL REFERENCES subscription_type (id) ON DELETE RESTRICT,
    user_id              bigint REFERENCES app_user (id) ON DELETE RESTRICT,
    account_id           bigint REFERENCES account (id) ON DELETE RESTRICT,
    status               text NOT NULL DEFAULT 'active'
                         CHECK (status IN ('pending', 'active', 'cancelled', 'expired')),
    store                text NOT NULL DEFAULT 'manual'
                         CHECK (store IN ('apple', 'google', 'stripe', 'manual')),
    external_ref         text,
    started_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    cancelled_at         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscription_one_owner CHECK (num_nonnulls(user_id, account_id) = 1),
    CONSTRAINT subscription_expiry_after_start CHECK (expires_at > started_at),
    CONSTRAINT subscription_cancel_after_start CHECK (cancelled_at >= started_at),
    -- store receipts are replayed by webhooks; the same purchase must map to one row
    CONSTRAINT subscription_store_ref_unique UNIQUE (store, external_ref)
);
COMMENT ON TABLE subscription IS
    'A plan held by one user or one account over a period, as bought in a store.';
CREATE INDEX subscription_user_idx ON subscription (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX subscription_account_idx ON subscription (account_id) WHERE account_id IS NOT NULL;

-- The seed calls this "transaction"; TRANSACTION is an SQL keyword, so it is
-- payment_transaction here to spare every query from quoting it.
CREATE TABLE payment_transaction (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES subscription (id) ON DELETE RESTRICT,
    kind            text NOT NULL
                    CHECK (kind IN ('purchase', 'renewal', 'refund', 'cancellation')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider        text NOT NULL CHECK (provider IN ('apple', 'google', 'stripe', 'manual')),
    provider_ref    text,
    period_start    timestamptz,
    period_end      timestamptz,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_transaction_period CHECK (period_end > period_start),
    CONSTRAINT payment_transaction_provider_ref_unique UNIQUE (provider, provider_ref)
);
COMMENT ON TABLE payment_transaction IS
    'Money movements of a subscription (purchase, renewal, refund, cancellation); the '
    'seed''s "transaction". period_end is the expiry the payment bought.';
CREATE INDEX payment_transaction_subscription_idx
    ON payment_transaction (subscription_id, occurred_at);

-- ---------------------------------------------------------------------------------------
-- Addresses and hives
-- ---------------------------------------------------------------------------------------

CREATE TABLE address (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    street     text NOT NULL CHECK (btrim(street) <> ''),
    city       text NOT NULL CHECK (btrim(city) <> ''),
    zip        text CHECK (zip ~ '^[A-Za-z0-9][A-Za-z0-9 -]{0,15}$'),
    country    text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),   -- ISO 3166-1 alpha-2
    latitude   double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude  double precision CHECK (longitude BETWEEN -180 AND 180),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- a half-geocoded address would silently drop out of map searches
    CONSTRAINT address_coordinates_paired CHECK ((latitude IS NULL) = (longitude IS NULL))
);
COMMENT ON TABLE address IS
    'A postal address with optional WGS84 coordinates (degrees); one per hive.';
CREATE TRIGGER address_touch_updated_at BEFORE UPDATE ON address
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE INDEX address_zip_idx ON address (zip);
-- Map searches: WHERE point(longitude, latitude) <@ box(point(w, s), point(e, n)), and
-- nearest-first ORDER BY point(longitude, latitude) <-> point($lon, $lat). No PostGIS: at
-- city scale a flat lon/lat box is precise enough.
CREATE INDEX address_geo_idx ON address USING gist (point(longitude, latitude))
    WHERE latitude IS NOT NULL;

CREATE TABLE hive_type (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]{0,39}$'),
    name text NOT NULL
);
COMMENT ON TABLE hive_type IS 'Kind of venue (bar, restaurant, store ...), filterable in search.';

-- The seed's "hive status" is split in two: the venue's lifecycle state lives here and in
-- hive.status_id; its live occupancy lives in hive_occupancy (migration 0003).
CREATE TABLE hive_status (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code   text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]{0,39}$'),
    name   text NOT NULL,
    listed boolean NOT NULL   -- whether hives in this state appear in public listings
);
COMMENT ON TABLE hive_status IS
    'Lifecycle state of a hive (draft, active, temporarily closed, closed).';

CREATE FUNCTION is_iana_timezone(name text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- pg_timezone_names also lists the posix/ copies and a few file-system artefacts that
    -- Python's zoneinfo would not load the same way; keep to plain IANA names.
    SELECT $1 !~ '^(posix|right)/'
       AND $1 NOT IN ('localtime', 'posixrules', 'Factory')
       AND EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = $1)
$$;
COMMENT ON FUNCTION is_iana_timezone(text) IS
    'True for an IANA zone name known to this server (exact spelling, e.g. Europe/Berlin).';

-- Validating against pg_timezone_names needs a query, which a CHECK must not contain, and
-- the zone list changes with tzdata upgrades (not immutable). A trigger checks on write
-- and raises a check_violation, so clients see the same error class as for a CHECK.
CREATE FUNCTION hive_check_timezone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.timezone IS NOT DISTINCT FROM OLD.timezone THEN
        RETURN NEW;
    END IF;
    IF NOT is_iana_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'hive timezone % is not an IANA time zone name',
                        quote_literal(NEW.timezone)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'hive_timezone_valid',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'timezone';
    END IF;
    RETURN NEW;
END
$$;

CREATE TABLE hive (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES account (id) ON DELETE RESTRICT,
    address_id   bigint NOT NULL UNIQUE REFERENCES address (id) ON DELETE RESTRICT,
    hive_type_id bigint NOT NULL REFERENCES hive_type (id) ON DELETE RESTRICT,
    status_id    bigint NOT NULL REFERENCES hive_status (id) ON DELETE RESTRICT,
    name         text NOT NULL CHECK (btrim(name) <> '' AND length(name) <= 200),
    description  text,
    -- IANA name; v1 sensors send hive-local wall-clock time without a zone
    timezone     text NOT NULL CHECK (timezone ~ '^[A-Za-z][A-Za-z0-9_+/-]{0,63}$'),
    capacity     integer NOT NULL CHECK (capacity > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE hive IS
    'A venue (bar, shop, restaurant ...) with sensors counting people in and out.';
CREATE TRIGGER hive_touch_updated_at BEFORE UPDATE ON hive
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER hive_timezone_valid BEFORE INSERT OR UPDATE OF timezone ON hive
    FOR EACH ROW EXECUTE FUNCTION hive_check_timezone();
-- Name search: lower(name) LIKE '%' || lower($1) || '%' or lower(name) % lower($1).
CREATE INDEX hive_name_trgm_idx ON hive USING gin (lower(name) gin_trgm_ops);
CREATE INDEX hive_type_idx ON hive (hive_type_id);
CREATE INDEX hive_account_idx ON hive (account_id);

CREATE TABLE hive_network (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hive_id    bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('gprs', 'wifi', 'ethernet', 'lora')),
    name       text NOT NULL,   -- SSID, mobile operator, ...
    details    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE hive_network IS
    'Connectivity available at a hive for its sensors (mobile operator, Wi-Fi ...). '
    'Keep secrets out of details.';
CREATE INDEX hive_network_hive_idx ON hive_network (hive_id);

CREATE TABLE hive_image (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hive_id    bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('cover', 'secondary')),
    url        text NOT NULL CHECK (url ~ '^https?://'),
    position   smallint NOT NULL DEFAULT 0 CHECK (position >= 0),
    caption    text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE hive_image IS 'Images of a hive: at most one cover, any number of secondary.';
CREATE UNIQUE INDEX hive_image_one_cover ON hive_image (hive_id) WHERE kind = 'cover';
CREATE INDEX hive_image_hive_idx ON hive_image (hive_id, position);

CREATE TABLE deal (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hive_id     bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    kind        text NOT NULL DEFAULT 'promotion'
                CHECK (kind IN ('discount', 'promotion', 'happy_hour', 'event')),
    title       text NOT NULL CHECK (btrim(title) <> '' AND length(title) <= 200),
    description text,
    terms       text,
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deal_valid_period CHECK (valid_until > valid_from)
);
COMMENT ON TABLE deal IS 'An offer a hive runs between valid_from and valid_until.';
CREATE TRIGGER deal_touch_updated_at BEFORE UPDATE ON deal
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE INDEX deal_hive_idx ON deal (hive_id, valid_until);
CREATE INDEX deal_valid_until_idx ON deal (valid_until);   -- "expires soon" notifications

-- ---------------------------------------------------------------------------------------
-- What users do with hives
-- ---------------------------------------------------------------------------------------

CREATE TABLE user_hive (
    user_id      bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    hive_id      bigint NOT NULL REFERENCES hive (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('favourite', 'recent')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),   -- bumped on each visit (recent)
    PRIMARY KEY (user_id, kind, hive_id)
);
COMMENT ON TABLE user_hive IS 'A user''s favourite and recently viewed hives.';
CREATE INDEX user_hive_recent_idx ON user_hive (user_id, kind, last_seen_at DESC);
CREATE INDEX user_hive_hive_idx ON user_hive (hive_id, kind);   -- who follows this hive

CREATE TABLE user_notification_def (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    hive_id           bigint REFERENCES hive (id) ON DELETE CASCADE,   -- NULL: my favourites
    kind              text NOT NULL CHECK (kind IN ('occupancy_above', 'occupancy_below',
                                                    'new_deal', 'deal_expiring')),
    threshold_percent smallint CHECK (threshold_percent BETWEEN 0 AND 100),
    enabled           boolean NOT NULL DEFAULT true,
    last_fired_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- occupancy alerts need a hive and a threshold (percent of capacity); deal alerts none
    CONSTRAINT user_notification_def_threshold CHECK (
        CASE WHEN kind IN ('occupancy_above', 'occupancy_below')
             THEN threshold_percent IS NOT NULL AND hive_id IS NOT NULL
             ELSE threshold_percent IS NULL
        END),
    CONSTRAINT user_notification_def_unique
        UNIQUE NULLS NOT DISTINCT (user_id, hive_id, kind, threshold_percent)
);
COMMENT ON TABLE user_notification_def IS
    'What a user wants to be told: occupancy crossing a threshold, new or expiring deals.';
CREATE TRIGGER user_notification_def_touch_updated_at BEFORE UPDATE ON user_notification_def
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
-- occupancy changes fan out per hive: find the definitions to check
CREATE INDEX user_notification_def_hive_idx ON user_notification_def (hive_id) WHERE enabled;

CREATE TABLE user_message (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    hive_id    bigint REFERENCES hive (id) ON DELETE SET NULL,   -- feedback about a venue
    direction  text NOT NULL CHECK (direction IN ('from_user', 'to_user')),
    kind       text NOT NULL CHECK (kind IN ('feedback', 'support', 'notice')),
    content    text NOT NULL CHECK (btrim(content) <> '' AND length(content) <= 10000),
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz
);
COMMENT ON TABLE user_message IS
    'Messages a user sends (feedback, support) or receives (notices), newest via created_at.';
CREATE INDEX user_message_user_idx ON user_message (user_id, created_at);
CREATE INDEX user_message_hive_idx ON user_message (hive_id, created_at)
    WHERE hive_id IS NOT NULL;

CREATE TABLE user_analytics (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    page_identifier text NOT NULL,
    action          text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE user_analytics IS
    'App usage events of a user (page, action, free-form data) for product analytics.';
CREATE INDEX user_analytics_user_idx ON user_analytics (user_id, created_at);
CREATE INDEX user_analytics_page_idx ON user_analytics (page_identifier, action, created_at);

-- ---------------------------------------------------------------------------------------
-- Reference data the code relies on (codes are stable; names may be edited)
-- ---------------------------------------------------------------------------------------

INSERT INTO hive_type (code, name) VALUES
    ('bar', 'Bar'), ('restaurant', 'Restaurant'), ('cafe', 'Cafe'), ('club', 'Club'),
    ('store', 'Store'), ('gym', 'Gym'), ('other', 'Other');

INSERT INTO hive_status (code, name, listed) VALUES
    ('draft', 'Draft', false),
    ('active', 'Active', true),
    ('temporarily_closed', 'Temporarily closed', true),
    ('closed', 'Closed', false);

INSERT INTO subscription_type (code, name, audience, price_cents, billing_period) VALUES
    ('free', 'Free', 'user', 0, 'none'),
    ('basic', 'Basic', 'user', 299, 'month'),
    ('premium', 'Premium', 'user', 599, 'month'),
    ('business', 'Business', 'account', 2900, 'month');

INSERT INTO feature (code, name, description) VALUES
    ('live_occupancy', 'Live occupancy', 'See how busy a hive is right now'),
    ('favourites', 'Favourites', 'Keep a list of favourite hives'),
    ('occupancy_alerts', 'Occupancy alerts', 'Be notified when a hive crosses a threshold'),
    ('deal_alerts', 'Deal alerts', 'Be notified of new and expiring deals'),
    ('occupancy_history', 'Occupancy history', 'Hourly occupancy of past days'),
    ('analytics_dashboard', 'Analytics dashboard', 'Business analytics for own hives');

INSERT INTO subscription_type_feature (subscription_type_id, feature_id)
SELECT t.id, f.id
FROM subscription_type t
JOIN feature f ON (t.code, f.code) IN (
    ('free', 'live_occupancy'),
    ('basic', 'live_occupancy'), ('basic', 'favourites'), ('basic', 'deal_alerts'),
    ('premium', 'live_occupancy'), ('premium', 'favourites'), ('premium', 'deal_alerts'),
    ('premium', 'occupancy_alerts'), ('premium', 'occupancy_history'),
    ('business', 'live_occupancy'), ('business', 'occupancy_history'),
    ('business', 'analytics_dashboard'));
