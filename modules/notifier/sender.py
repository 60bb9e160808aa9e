"""Delivery: notification jobs from the queue → the inbox and Firebase Cloud Messaging.

A round takes up to `jobs_per_round` jobs, skips devices a job was already pushed to
(`user_inbox_delivery`), pushes the rest (fcm.py: firebase-admin's messages and
credentials over a pool of keep-alive connections; `batch_size` messages at a time) and
then, in one transaction, records the inbox rows and the deliveries and removes the
devices FCM called gone. Only then are the jobs deleted
from the queue: a notifier killed before that gets its jobs again after the visibility
timeout and pushes only to the devices whose delivery was not recorded (the pushes in
flight when it died; they carry the same collapse id, so the phone shows one).

FCM errors, per device:
- UNREGISTERED, SENDER_ID_MISMATCH, an invalid registration token → the device is removed;
- QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL (5xx), timeouts, transport errors → the job is
  retried after `retry_base` * 2^(receives-1) (at most `retry_max`), by changing its
  visibility; after `max_attempts` receives the queue moves it to the dead-letter queue;
- anything else (a payload FCM refuses, APNs auth errors) → the job goes to the
  dead-letter queue at once (after its other devices were served).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from firebase_admin import exceptions, messaging

from .fcm import FcmClient
from .jobs import Job, decode

INBOX = """
INSERT INTO user_inbox (user_id, idempotency_key, kind, title, body, hive_id, deal_id, pushed)
SELECT u.id, j.key, j.kind, j.title, j.body, h.id, d.id, j.pushed
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::bigint[], $8::boolean[]) AS j (user_id, key, kind, title, body, hive_id,
                                               deal_id, pushed)
JOIN app_user u ON u.id = j.user_id
LEFT JOIN hive h ON h.id = j.hive_id
LEFT JOIN deal d ON d.id = j.deal_id
ON CONFLICT (idempotency_key) DO NOTHING
"""
DELIVERED = """
SELECT i.idempotency_key AS key, d.fcm_token
FROM user_inbox i JOIN user_inbox_delivery d ON d.inbox_id = i.id
WHERE i.idempotency_key = ANY($1::text[])
"""
DEVICES = "SELECT user_id, fcm_token FROM user_device WHERE user_id = ANY($1::bigint[]) " \
          "ORDER BY user_id, fcm_token"
RECORD = """
INSERT INTO user_inbox_delivery (inbox_id, fcm_token)
SELECT i.id, t.token
FROM unnest($1::text[], $2::text[]) AS t (key, token)
JOIN user_inbox i ON i.idempotency_key = t.key
ON CONFLICT DO NOTHING
"""
FORGET_DEVICES = "DELETE FROM user_device WHERE fcm_token = ANY($1::text[])"

GONE, RETRY, FAIL = "gone", "retry", "fail"
RETRYABLE = (messaging.QuotaExceededError, exceptions.UnavailableError,
             exceptions.InternalError, exceptions.DeadlineExceededError,
             exceptions.ResourceExhaustedError, exceptions.UnknownError,
             exceptions.AbortedError)


def classify(exc: BaseException) -> str:
    """What to do about one device's FCM error."""
    if isinstance(exc, (messaging.UnregisteredError, messaging.SenderIdMismatchError)):
        return GONE
    if isinstance(exc, exceptions.InvalidArgumentError) \
            and "registration token" in str(exc).lower():
        return GONE
    if isinstance(exc, RETRYABLE):
        return RETRY
    return FAIL


def fcm_message(job: Job, token: str) -> messaging.Message:
    """The push of `job` to one device; the idempotency key is the collapse id on every
    platform and `notification_id` in the data, for the app to de-duplicate."""
    data = {"notification_id": job.key, "kind": job.kind, "at": f"{job.at:.6f}"}
    if job.hive_id is not None:
        data["hive_id"] = str(job.hive_id)
    if job.deal_id is not None:
        data["deal_id"] = str(job.deal_id)
    return messaging.Message(
        token=token, data=data,
        notification=messaging.Notification(title=job.title, body=job.body),
        android=messaging.AndroidConfig(collapse_key=job.key, priority="high"),
        apns=messaging.APNSConfig(headers={"apns-collapse-id": job.key}))


@dataclass
class Round:
    """The jobs of one round and what happened to each."""

    messages: list[Any]                                   # queue messages
    jobs: dict[str, tuple[Any, Job]] = field(default_factory=dict)   # key → (msg, job)
    delivered: list[tuple[str, str]] = field(default_factory=list)   # (key, token)
    gone: list[str] = field(default_factory=list)
    retry: set[str] = field(default_factory=set)          # keys
    failed: dict[str, str] = field(default_factory=dict)  # key → reason
    duplicates: list[Any] = field(default_factory=list)   # messages of a key seen twice
    malformed: list[Any] = field(default_factory=list)
    pushes: int = 0


class Sender:
    def __init__(self, db: Any, queues: Any, fcm: FcmClient, settings: Any, log: Any) -> None:
        self.db, self.queues, self.fcm, self.log = db, queues, fcm, log
        self.settings = settings
        self.queue, self.dlq = settings["queue"], settings["dead_letter_queue"]
        self.sent = 0  # pushes FCM accepted (for the log and the benchmark)
        self.in_flight: set[str] = set()   # keys of the jobs rounds are delivering

    async def run(self) -> None:
        while True:
            got = await self.queues.receive(self.queue, 10, wait_seconds=20)
            if len(got) == 10:  # more are waiting: take the rest of a round at once
                more = await asyncio.gather(*(
                    self.queues.receive(self.queue, 10, wait_seconds=0)
                    for _ in range((self.settings["jobs_per_round"] - 1) // 10)))
                got += [m for batch in more for m in batch]
            if got:
                await self.deliver(got)

    async def deliver(self, messages: list[Any]) -> Round:
        """One round. Rounds run concurrently (`senders`); a job whose key another round
        of this process is delivering waits (it is made visible again shortly), so that
        two copies of a job never push at the same time."""
        r = Round(messages)
        started, busy = time.time(), []
        for m in messages:
            try:
                job = decode(m.body)
            except (msgspec.ValidationError, msgspec.DecodeError):
                r.malformed.append(m)
                continue
            if job.key in r.jobs:
                r.duplicates.append(m)
            elif job.key in self.in_flight:
                busy.append(m)
            else:
                r.jobs[job.key] = (m, job)
        self.in_flight.update(r.jobs)
        marks = [time.monotonic()]
        keeper = asyncio.ensure_future(self._keep_invisible([m for m, _ in r.jobs.values()]))
        try:
            targets = await self._targets(r)
            marks.append(time.monotonic())
            await self._record_inbox(r)
            marks.append(time.monotonic())
            await self._push(r, targets)
            keeper.cancel()  # before _settle sets the retries' back-off
            marks.append(time.monotonic())
            await self._settle(r)
            marks.append(time.monotonic())
        finally:
            keeper.cancel()
            self.in_flight.difference_update(r.jobs)
        self.log.debug("notifier: round of %d jobs (oldest queued %.0f ms before), %d pushes "
                       "in %.0f ms (devices, inbox, push, settle: %s ms)", len(messages),
                       (started - min(m.sent_at for m in messages)) * 1000, r.pushes,
                       (time.time() - started) * 1000,
                       "/".join(f"{(b - a) * 1000:.0f}" for a, b in zip(marks, marks[1:],
                                                                        strict=False)))
        for m in busy:
            with contextlib.suppress(Exception):
                await self.queues.change_visibility(self.queue, m.receipt_handle, 2)
        return r

    async def _keep_invisible(self, messages: list[Any]) -> None:
        """While a round runs (FCM slow, firebase-admin retrying a 503 for seconds),
        keep its jobs invisible: else another round would take them again and count a
        receive. A dead process stops doing this, so its jobs come back in time."""
        timeout = max(1, int(self.settings["visibility_timeout"]))
        while True:
            await asyncio.sleep(timeout / 2)
            for m in messages:
                with contextlib.suppress(Exception):
                    await self.queues.change_visibility(self.queue, m.receipt_handle,
                                                        timeout)

    async def _targets(self, r: Round) -> list[tuple[Job, str]]:
        keys = list(r.jobs)
        users = sorted({job.user_id for _, job in r.jobs.values() if job.push})
        async with self.db.connection() as conn:
            done = await conn.fetch(DELIVERED, keys)
            devices = await conn.fetch(DEVICES, users) if users else []
        delivered = {(d["key"], d["fcm_token"]) for d in done}
        by_user: dict[int, list[str]] = defaultdict(list)
        for d in devices:
            by_user[d["user_id"]].append(d["fcm_token"])
        return [(job, token) for _, job in r.jobs.values() if job.push
                for token in by_user.get(job.user_id, ())
                if (job.key, token) not in delivered]

    async def _push(self, r: Round, targets: list[tuple[Job, str]]) -> None:
        """Push in calls of at most `batch_size` messages; each call's deliveries and
        gone devices are committed before the next call (a crash repeats one call)."""
        size = self.settings["batch_size"]
        for i in range(0, len(targets), size):
            chunk = targets[i:i + size]
            try:
                results = await self.fcm.send_each(
                    [fcm_message(job, token) for job, token in chunk])
            except Exception as exc:  # noqa: BLE001 - the whole call failed: retry all
                self.log.error("notifier: pushing to FCM failed: %s", exc)
                results = [(False, exc)] * len(chunk)
            r.pushes += len(chunk)
            delivered, gone = len(r.delivered), len(r.gone)
            for (job, token), (ok, exc) in zip(chunk, results, strict=True):
                self._outcome(r, job, token, ok, exc)
            await self._record(r.delivered[delivered:], r.gone[gone:])

    def _outcome(self, r: Round, job: Job, token: str, ok: bool, exc: Any) -> None:
        if ok:
            r.delivered.append((job.key, token))
            self.sent += 1
            return
        what = classify(exc) if isinstance(exc, exceptions.FirebaseError) else RETRY
        if what == GONE:
            r.gone.append(token)
            self.log.info("notifier: device %s… is gone (%s): removed", token[:12],
                          getattr(exc, "code", exc))
        elif what == RETRY:
            r.retry.add(job.key)
        else:
            r.failed[job.key] = f"{getattr(exc, 'code', '')}: {exc}"[:300]

    async def _record_inbox(self, r: Round) -> None:
        """The inbox rows of the round's jobs (a repeated job finds its row)."""
        jobs = [job for _, job in r.jobs.values()]
        if not jobs:
            return
        async with self.db.connection() as conn:
            await conn.execute(INBOX, [j.user_id for j in jobs], [j.key for j in jobs],
                               [j.kind for j in jobs], [j.title for j in jobs],
                               [j.body for j in jobs], [j.hive_id for j in jobs],
                               [j.deal_id for j in jobs], [j.push for j in jobs])

    async def _record(self, delivered: list[tuple[str, str]], gone: list[str]) -> None:
        """Deliveries and removed devices of one send_each call, in one transaction."""
        if not delivered and not gone:
            return
        async with self.db.connection() as conn, conn.transaction():
            if delivered:
                await conn.execute(RECORD, [k for k, _ in delivered],
                                   [t for _, t in delivered])
            if gone:
                await conn.execute(FORGET_DEVICES, gone)

    async def _settle(self, r: Round) -> None:
        """Delete what is done, delay what is retried, dead-letter what failed."""
        done, dead = [], []
        for key, (m, _) in r.jobs.items():
            if key in r.retry:
                delay = min(self.settings["retry_max"],
                            self.settings["retry_base"] * 2 ** max(m.receive_count - 1, 0))
                with contextlib.suppress(Exception):  # lost handle: visible again anyway
                    await self.queues.change_visibility(self.queue, m.receipt_handle,
                                                        max(1, int(delay)))
            elif key in r.failed:
                self.log.error("notifier: %s failed permanently (%s): dead-lettered", key,
                               r.failed[key])
                dead.append(m)
            else:
                done.append(m)
        for m in r.malformed:
            self.log.error("notifier: a message that is no notification job: "
                           "dead-lettered: %.200s", m.body)
            dead.append(m)
        for m in dead:
            await self.queues.send(self.dlq, m.body)
        done += dead + r.duplicates
        await asyncio.gather(*(self.queues.delete_batch(
            self.queue, [m.receipt_handle for m in done[i:i + 10]])
            for i in range(0, len(done), 10)))


async def send_forever(sender: Sender, log: Any) -> None:
    """The sender's loop, surviving Postgres outages (back-off) and bugs (logged)."""
    pause = 0.5
    while True:
        try:
            await sender.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the jobs stay on the queue
            log.error("notifier: sender: %s: %s; retrying in %.1fs", type(exc).__name__,
                      exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
