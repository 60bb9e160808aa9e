"""Deal and subscription notifications: the outbox of migration 0012 (new deals,
subscription renewals, written by triggers in the same transaction as their cause) and
two scheduled scans (deals about to expire, subscriptions about to end).

Who gets a deal notification: a user with an enabled setting of that kind (`new_deal`,
`deal_expiring`) for the deal's hive, or without a hive ("my favourites") when the hive is
one of the user's favourites (`user_hive` kind favourite); its `deal_kinds`, if any,
must include the deal's kind. In the setting's quiet hours the notification goes to the
inbox without a push. Subscription notices go to the subscription's user, always pushed.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from .jobs import Job, enqueue, in_quiet_hours

OUTBOX = "SELECT id, kind, ref_id FROM notifier_event ORDER BY id LIMIT 200 " \
         "FOR UPDATE SKIP LOCKED"
OUTBOX_DONE = "DELETE FROM notifier_event WHERE id = ANY($1::bigint[])"

_RECIPIENTS = """
SELECT DISTINCT ON (d.id, n.user_id) d.id AS deal_id, d.hive_id, d.kind AS deal_kind,
       d.title, d.valid_until, h.name AS hive_name, n.user_id, n.quiet_start, n.quiet_end,
       n.time_zone
FROM deal d
JOIN hive h ON h.id = d.hive_id
JOIN user_notification_def n ON n.kind = '{kind}' AND n.enabled
     AND (cardinality(n.deal_kinds) = 0 OR d.kind = ANY(n.deal_kinds))
     AND (n.hive_id = d.hive_id OR (n.hive_id IS NULL AND EXISTS (
            SELECT 1 FROM user_hive f WHERE f.user_id = n.user_id
            AND f.kind = 'favourite' AND f.hive_id = d.hive_id)))
WHERE {where}
ORDER BY d.id, n.user_id, n.hive_id NULLS LAST
LIMIT 20000
"""
NEW_DEAL = _RECIPIENTS.format(kind="new_deal",
                              where="d.id = ANY($1::bigint[]) AND d.valid_until > now()")
EXPIRING_DEALS = _RECIPIENTS.format(kind="deal_expiring", where="""
d.valid_from <= now() AND d.valid_until > now()
AND d.valid_until <= now() + make_interval(secs => $1)
AND NOT EXISTS (SELECT 1 FROM user_inbox i
                WHERE i.idempotency_key = 'dexp:' || d.id || ':' || n.user_id)""")
RENEWALS = """
SELECT p.id, s.user_id, t.name AS plan, COALESCE(p.period_end, s.expires_at) AS until
FROM payment_transaction p
JOIN subscription s ON s.id = p.subscription_id
JOIN subscription_type t ON t.id = s.subscription_type_id
WHERE p.id = ANY($1::bigint[]) AND s.user_id IS NOT NULL
"""
# An App Store plan renews by itself unless its renewal failed (pending); a manual one
# just ends.
EXPIRING_SUBSCRIPTIONS = """
SELECT s.id, s.user_id, t.name AS plan, s.expires_at
FROM subscription s JOIN subscription_type t ON t.id = s.subscription_type_id
WHERE s.user_id IS NOT NULL AND s.expires_at > now()
  AND s.expires_at <= now() + make_interval(secs => $1)
  AND (s.status = 'pending' OR (s.status = 'active' AND s.store = 'manual'))
  AND NOT EXISTS (SELECT 1 FROM user_inbox i WHERE i.idempotency_key =
                  'subx:' || s.id || ':' || extract(epoch FROM s.expires_at)::bigint)
LIMIT 20000
"""


def _day(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def deal_jobs(rows: list[Any], kind: str, now: float) -> list[Job]:
    jobs = []
    for r in rows:
        push = not in_quiet_hours(r["quiet_start"], r["quiet_end"], r["time_zone"], now)
        if kind == "new_deal":
            key, title = f"deal:{r['deal_id']}:{r['user_id']}", f"New at {r['hive_name']}"
            body = f"{r['title']} (until {_day(r['valid_until'])})"
        else:
            key, title = f"dexp:{r['deal_id']}:{r['user_id']}", \
                f"Ends soon at {r['hive_name']}"
            body = f"{r['title']} ends {_day(r['valid_until'])}"
        jobs.append(Job(key, r["user_id"], kind, title[:200], body[:1000], push,
                        r["hive_id"], r["deal_id"], now))
    return jobs


def renewal_jobs(rows: list[Any], now: float) -> list[Job]:
    return [Job(f"subr:{r['id']}", r["user_id"], "subscription_renewed",
                f"Your {r['plan']} plan was renewed",
                f"It now runs until {_day(r['until'])}." if r["until"] else "Thank you!",
                True, None, None, now) for r in rows]


def expiring_subscription_jobs(rows: list[Any], now: float) -> list[Job]:
    return [Job(f"subx:{r['id']}:{int(r['expires_at'].timestamp())}", r["user_id"],
                "subscription_expiring", f"Your {r['plan']} plan ends soon",
                f"It ends {_day(r['expires_at'])}.", True, None, None, now) for r in rows]


class Events:
    """Turns the outbox and the scans into jobs on the queue."""

    def __init__(self, db: Any, queues: Any, settings: Any, log: Any) -> None:
        self.db, self.queues, self.settings, self.log = db, queues, settings, log
        self.queue = settings["queue"]

    async def drain(self) -> int:
        """Handle the outbox until it is empty; the number of events handled. The events
        are deleted in the transaction that locked them, after their jobs are queued."""
        handled = 0
        while True:
            async with self.db.connection() as conn, conn.transaction():
                rows = await conn.fetch(OUTBOX)
                if not rows:
                    return handled
                now = time.time()
                deals = [r["ref_id"] for r in rows if r["kind"] == "new_deal"]
                payments = [r["ref_id"] for r in rows if r["kind"] == "subscription_renewed"]
                jobs = deal_jobs(await conn.fetch(NEW_DEAL, deals), "new_deal", now) \
                    if deals else []
                if payments:
                    jobs += renewal_jobs(await conn.fetch(RENEWALS, payments), now)
                await enqueue(self.queues, self.queue, jobs)
                await conn.execute(OUTBOX_DONE, [r["id"] for r in rows])
            handled += len(rows)
            if jobs:
                self.log.info("notifier: %d events, %d notifications queued", len(rows),
                              len(jobs))

    async def scan(self) -> int:
        """Deals ending within `deal_expiring_within` and subscriptions ending within
        `subscription_expiring_within`, not notified yet; the number of jobs queued."""
        now = time.time()
        async with self.db.connection() as conn:
            deals = await conn.fetch(EXPIRING_DEALS,
                                     float(self.settings["deal_expiring_within"]))
            subs = await conn.fetch(EXPIRING_SUBSCRIPTIONS,
                                    float(self.settings["subscription_expiring_within"]))
        jobs = deal_jobs(deals, "deal_expiring", now) + expiring_subscription_jobs(subs, now)
        await enqueue(self.queues, self.queue, jobs)
        if jobs:
            self.log.info("notifier: scan queued %d notifications", len(jobs))
        return len(jobs)
