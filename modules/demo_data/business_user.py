"""The demo business user: who signs in to the dashboard (docs/dashboard.md) under `make demo`.

`bizzyd demo-data --business-user` makes, after the city (also when `--if-empty` finds
one):
- in the database: the app user `DEMO_UID`, admin of the lowest-id account that has 2 to 4
  hives, all active and with sensors (few enough that the overview streams every one
  live), with a premium plan (manual, no expiry) so that the history of past days is
  open to it;
- feedback on those hives when they have little from the last 30 days (the demo city's
  feedback is sparse and up to 60 days old): a few messages of demo users per hive over
  the last two weeks, with ratings and their sentiment, so the dashboard has some to show;
- in the Firebase Auth emulator (only when the config's `firebase.emulator` is set): the
  user `DEMO_EMAIL` / `DEMO_PASSWORD` with that uid. The emulator keeps its users in
  memory, so this is redone at every run; an existing user is kept.

Both steps are idempotent. Never against a real Firebase project: only the emulator
accepts the owner credentials used here.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from modules.users.sentiment import Sentiment

from .city import FEEDBACK

DEMO_EMAIL = "demo@business.example"
DEMO_PASSWORD = "bizzy-demo"
DEMO_UID = "demo-business-admin"
DEMO_NICKNAME = "Demo business"

CHOOSE_ACCOUNT = """
WITH per_hive AS (
    SELECT h.account_id, s.code = 'active' AS active,
           EXISTS (SELECT 1 FROM sensor x WHERE x.hive_id = h.id) AS sensed
    FROM hive h JOIN hive_status s ON s.id = h.status_id)
SELECT account_id FROM per_hive GROUP BY account_id
HAVING count(*) BETWEEN 2 AND 4 AND bool_and(active AND sensed)
ORDER BY account_id LIMIT 1"""
# a rerun changes nothing (not even updated_at): what an admin changed since stays
USER_UPSERT = """
WITH new AS (INSERT INTO app_user (firebase_uid, nickname) VALUES ($1, $2)
             ON CONFLICT (firebase_uid) DO NOTHING RETURNING id)
SELECT id FROM new UNION ALL SELECT id FROM app_user WHERE firebase_uid = $1 LIMIT 1"""
MEMBER_UPSERT = """
INSERT INTO account_member (account_id, user_id, member_role) VALUES ($1, $2, 'admin')
ON CONFLICT (account_id, user_id) DO NOTHING"""
PREMIUM = """
INSERT INTO subscription (subscription_type_id, user_id, status, store, external_ref)
SELECT t.id, $1, 'active', 'manual', 'demo-business-admin'
FROM subscription_type t WHERE t.code = 'premium'
ON CONFLICT (store, external_ref) DO NOTHING"""
RECENT_FEEDBACK = """
SELECT count(*) FROM user_message
WHERE hive_id = ANY($1::bigint[]) AND kind = 'feedback'
  AND created_at > now() - interval '30 days'"""
FEEDBACK_INSERT = """
INSERT INTO user_message (user_id, hive_id, direction, kind, content, rating, sentiment,
                          created_at)
SELECT u.id, $2, 'from_user', 'feedback', $3, $4, $5, $6
FROM app_user u WHERE u.id = $1"""
FEEDBACK_PER_HIVE = 6


@dataclass(frozen=True)
class BusinessUser:
    user_id: int
    account_id: int
    hive_ids: tuple[int, ...]
    in_emulator: bool


async def ensure_business_user(dsn: str, emulator: str = "",
                               project: str = "demo-bizzy") -> BusinessUser | None:
    """The demo business user in the database (and the emulator when given); None when
    no account fits (a city too small)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            account = await conn.fetchval(CHOOSE_ACCOUNT)
            if account is None:
                return None
            user = await conn.fetchval(USER_UPSERT, DEMO_UID, DEMO_NICKNAME)
            await conn.execute(MEMBER_UPSERT, account, user)
            await conn.execute(PREMIUM, user)
            hives = await conn.fetch("SELECT id FROM hive WHERE account_id = $1 ORDER BY id",
                                     account)
            await _feedback(conn, account, [r["id"] for r in hives], user)
    finally:
        await conn.close()
    if emulator:
        emulator_user(emulator, project)
    return BusinessUser(user, account, tuple(r["id"] for r in hives), bool(emulator))


async def _feedback(conn: asyncpg.Connection, account: int, hives: list[int],
                    business_user: int) -> None:
    if await conn.fetchval(RECENT_FEEDBACK, hives) >= len(hives):
        return
    rng, analyser = random.Random(account), Sentiment()
    authors = [r["id"] for r in await conn.fetch(
        "SELECT id FROM app_user WHERE id <> $1 ORDER BY id LIMIT 50", business_user)]
    now = datetime.now(UTC).replace(microsecond=0)
    for hive in hives:
        for text, rating in rng.sample(FEEDBACK, min(FEEDBACK_PER_HIVE, len(FEEDBACK))):
            at = now - timedelta(minutes=rng.randint(60, 14 * 24 * 60))
            await conn.execute(FEEDBACK_INSERT, rng.choice(authors), hive, text, rating,
                               analyser.score(text), at)


def emulator_user(emulator: str, project: str, uid: str = DEMO_UID, email: str = DEMO_EMAIL,
                  password: str = DEMO_PASSWORD) -> None:
    """Create the user in the Firebase Auth emulator (owner credentials: the emulator's
    admin API); an existing one is kept."""
    url = f"http://{emulator}/identitytoolkit.googleapis.com/v1/projects/{project}/accounts"
    payload = json.dumps({"localId": uid, "email": email, "password": password,
                          "displayName": DEMO_NICKNAME}).encode()
    request = urllib.request.Request(url, payload, {"Content-Type": "application/json",
                                                    "Authorization": "Bearer owner"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        if "DUPLICATE_LOCAL_ID" in text or "EMAIL_EXISTS" in text:
            return
        raise OSError(f"the Firebase Auth emulator at {emulator} refused the demo user: "
                      f"{exc.code} {text[:200]}") from exc
