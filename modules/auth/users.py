"""app_user rows and plan features of signed-in users."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# The first call of a new uid creates its row; concurrent first calls agree on one.
# A row without a store account token (made by demo data, say) gets one.
UPSERT = """
WITH new AS (
    INSERT INTO app_user (firebase_uid, store_account_token) VALUES ($1, gen_random_uuid())
    ON CONFLICT (firebase_uid) DO NOTHING RETURNING id),
old AS (
    UPDATE app_user SET store_account_token = gen_random_uuid()
    WHERE firebase_uid = $1 AND store_account_token IS NULL RETURNING id)
SELECT id FROM new UNION ALL SELECT id FROM old
UNION ALL SELECT id FROM app_user WHERE firebase_uid = $1 LIMIT 1
"""

# The user's current plan: the newest active, unexpired user subscription, else free.
PLAN = """
SELECT t.code, s.id AS subscription_id, s.status, s.store, s.started_at, s.expires_at,
       coalesce(array_agg(f.code ORDER BY f.code) FILTER (WHERE f.code IS NOT NULL),
                '{}') AS features
FROM subscription_type t
LEFT JOIN LATERAL (
    SELECT * FROM subscription s
    WHERE s.user_id = $1 AND s.subscription_type_id = t.id AND s.status = 'active'
      AND (s.expires_at IS NULL OR s.expires_at > now())
    ORDER BY s.expires_at DESC NULLS FIRST LIMIT 1) s ON true
LEFT JOIN subscription_type_feature tf ON tf.subscription_type_id = t.id
LEFT JOIN feature f ON f.id = tf.feature_id
WHERE t.audience = 'user' AND (s.id IS NOT NULL OR t.code = 'free')
GROUP BY t.code, t.price_cents, s.id, s.status, s.store, s.started_at, s.expires_at
ORDER BY (s.id IS NOT NULL) DESC, t.price_cents DESC
LIMIT 1
"""


async def user_id_of(db: Any, uid: str) -> int:
    """The app_user id of a Firebase uid, creating the row on its first call."""
    async with db.connection() as conn:
        return await conn.fetchval(UPSERT, uid)


@dataclass(frozen=True)
class Plan:
    """A user's plan (free when no subscription is active) and what it grants."""

    code: str
    features: tuple[str, ...]
    subscription_id: int | None = None
    status: str | None = None
    store: str | None = None
    started_at: Any = None
    expires_at: Any = None


async def features_of(conn: Any, user_id: int) -> Plan:
    row = await conn.fetchrow(PLAN, user_id)
    if row is None:
        return Plan("free", ())
    return Plan(row["code"], tuple(row["features"]), row["subscription_id"], row["status"],
                row["store"], row["started_at"], row["expires_at"])


class UserCache:
    """Per-worker copies of per-user data, each valid for `ttl` seconds and while the
    user's change counter (modules.auth `user_version`) is what it was when read."""

    def __init__(self, ttl: float, size: int = 10000) -> None:
        self.ttl, self.size = ttl, size
        self.cache: dict[int, tuple[float, int, Any]] = {}

    def get(self, user_id: int, version: int) -> Any:
        hit = self.cache.get(user_id)
        if hit is not None and hit[1] == version and hit[0] > time.monotonic():
            return hit[2]
        return None

    def put(self, user_id: int, version: int, value: Any) -> None:
        if len(self.cache) >= self.size:
            self.cache.clear()
        self.cache[user_id] = (time.monotonic() + self.ttl, version, value)

    def forget(self, user_id: int) -> None:
        self.cache.pop(user_id, None)


class Features(UserCache):
    """Each worker's recent answers of `features_of`."""

    async def get(self, db: Any, user_id: int, version: int) -> Plan:  # type: ignore[override]
        plan = super().get(user_id, version)
        if plan is not None:
            return plan
        async with db.connection() as conn:
            plan = await features_of(conn, user_id)
        self.put(user_id, version, plan)
        return plan
