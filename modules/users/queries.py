"""SQL of the signed-in endpoints. $1 is always the signed-in user's app_user id."""

RECENT_KEEP = 50  # recents kept per user

ME = "SELECT firebase_uid, nickname, created_at, store_account_token FROM app_user " \
     "WHERE id = $1"
SET_NICKNAME = "UPDATE app_user SET nickname = $2 WHERE id = $1"

# "Delete my data": subscriptions and payments stay (billing history, RESTRICT); so does
# the app_user row then, its uid replaced so that the person is no longer linked.
DELETE_ME = (
    "DELETE FROM user_hive WHERE user_id = $1",
    "DELETE FROM user_notification_def WHERE user_id = $1",
    "DELETE FROM user_message WHERE user_id = $1",
    "DELETE FROM user_inbox WHERE user_id = $1",
    "DELETE FROM user_device WHERE user_id = $1",
    "UPDATE user_analytics SET user_id = NULL WHERE user_id = $1",
    "UPDATE app_user SET firebase_uid = 'deleted:' || id, nickname = NULL, "
    "store_account_token = NULL "
    "WHERE id = $1 AND EXISTS (SELECT 1 FROM subscription WHERE user_id = $1)",
    "DELETE FROM app_user WHERE id = $1 "
    "AND NOT EXISTS (SELECT 1 FROM subscription WHERE user_id = $1)",
)

_USER_HIVES = """
SELECT uh.hive_id, h.name, {at} AS at
FROM user_hive uh JOIN hive h ON h.id = uh.hive_id
WHERE uh.user_id = $1 AND uh.kind = '{kind}'
ORDER BY {at} DESC, uh.hive_id
LIMIT 500
"""
FAVOURITES = _USER_HIVES.format(at="uh.created_at", kind="favourite")
RECENT = _USER_HIVES.format(at="uh.last_seen_at", kind="recent")

# true when the hive exists (added now or already a favourite)
ADD_FAVOURITE = """
WITH h AS (SELECT id FROM hive WHERE id = $2),
     ins AS (INSERT INTO user_hive (user_id, hive_id, kind)
             SELECT $1, id, 'favourite' FROM h ON CONFLICT DO NOTHING)
SELECT EXISTS (SELECT 1 FROM h)
"""
REMOVE_FAVOURITE = "DELETE FROM user_hive WHERE user_id = $1 AND hive_id = $2 " \
                   "AND kind = 'favourite'"

# Recents, written in batches (users.buffer): $1 user ids, $2 hive ids, $3 times; a
# deleted hive is skipped, a user's recents beyond RECENT_KEEP are dropped.
RECORD_RECENTS = f"""
WITH seen AS (
    SELECT DISTINCT ON (u, hv) u, hv, t
    FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS x (u, hv, t)
    ORDER BY u, hv, t DESC),
ins AS (
    INSERT INTO user_hive (user_id, hive_id, kind, created_at, last_seen_at)
    SELECT seen.u, seen.hv, 'recent', seen.t, seen.t FROM seen
    JOIN hive ON hive.id = seen.hv JOIN app_user ON app_user.id = seen.u
    ON CONFLICT (user_id, kind, hive_id)
    DO UPDATE SET last_seen_at = greatest(user_hive.last_seen_at, EXCLUDED.last_seen_at)
    RETURNING user_id)
DELETE FROM user_hive uh
USING (SELECT DISTINCT user_id FROM ins) AS touched
WHERE uh.user_id = touched.user_id AND uh.kind = 'recent'
  AND uh.hive_id NOT IN (SELECT r.hive_id FROM user_hive r
                         WHERE r.user_id = touched.user_id AND r.kind = 'recent'
                         ORDER BY r.last_seen_at DESC LIMIT {RECENT_KEEP})
"""

_NOTE_COLUMNS = """id, kind, hive_id, threshold_percent, threshold_count, quiet_start,
    quiet_end, time_zone, deal_kinds, enabled, updated_at, margin, cooldown_seconds"""
NOTIFICATIONS = f"SELECT {_NOTE_COLUMNS} FROM user_notification_def WHERE user_id = $1 " \
                "ORDER BY id LIMIT 1000"
NOTIFICATION = f"SELECT {_NOTE_COLUMNS} FROM user_notification_def " \
               "WHERE user_id = $1 AND id = $2"
ADD_NOTIFICATION = f"""
INSERT INTO user_notification_def (user_id, hive_id, kind, threshold_percent,
    threshold_count, quiet_start, quiet_end, time_zone, deal_kinds, enabled, margin,
    cooldown_seconds)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING {_NOTE_COLUMNS}
"""
UPDATE_NOTIFICATION = f"""
UPDATE user_notification_def SET hive_id = $3, kind = $4, threshold_percent = $5,
    threshold_count = $6, quiet_start = $7, quiet_end = $8, time_zone = $9,
    deal_kinds = $10, enabled = $11, margin = $12, cooldown_seconds = $13
WHERE user_id = $1 AND id = $2
RETURNING {_NOTE_COLUMNS}
"""
DELETE_NOTIFICATION = "DELETE FROM user_notification_def WHERE user_id = $1 AND id = $2 " \
                      "RETURNING id"

# A token moves to the user who registers it last (a phone changes hands).
PUT_DEVICE = """
INSERT INTO user_device (fcm_token, user_id, platform) VALUES ($1, $2, $3)
ON CONFLICT (fcm_token) DO UPDATE SET user_id = EXCLUDED.user_id,
    platform = EXCLUDED.platform
"""
DELETE_DEVICE = "DELETE FROM user_device WHERE fcm_token = $1 AND user_id = $2"

_MESSAGE_COLUMNS = "id, hive_id, direction, kind, content, rating, created_at, read_at"
ADD_MESSAGE = f"""
INSERT INTO user_message (user_id, hive_id, direction, kind, content, rating, sentiment)
VALUES ($1, $2, 'from_user', CASE WHEN $2::bigint IS NULL THEN 'support' ELSE 'feedback' END,
        $3, $4, $5)
RETURNING {_MESSAGE_COLUMNS}
"""
MESSAGES = f"SELECT {_MESSAGE_COLUMNS} FROM user_message WHERE user_id = $1 " \
           "ORDER BY created_at DESC, id DESC LIMIT 200"

# Analytics events, written in batches of (user_id, page_identifier, action, data json);
# a user deleted meanwhile leaves an anonymous event
RECORD_EVENTS = """
INSERT INTO user_analytics (user_id, page_identifier, action, data)
SELECT a.id, x.p, x.a, x.d::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS x (u, p, a, d)
LEFT JOIN app_user a ON a.id = x.u
"""

PLANS = """
SELECT t.code, t.name, t.price_cents, t.currency, t.billing_period,
       coalesce(array_agg(f.code ORDER BY f.code) FILTER (WHERE f.code IS NOT NULL), '{}')
           AS features
FROM subscription_type t
LEFT JOIN subscription_type_feature tf ON tf.subscription_type_id = t.id
LEFT JOIN feature f ON f.id = tf.feature_id
WHERE t.audience = 'user' AND t.active
GROUP BY t.id ORDER BY t.price_cents, t.code
"""
