"""A notification job: what the triggers put on the queue and the sender consumes.

A job names one user and carries its idempotency key (the inbox's unique key), so that a
job the queue hands out twice, or a trigger that runs twice after a crash, notifies once.
Keys: `occ:<setting>:<n>` (the n-th firing of an occupancy alert), `deal:<deal>:<user>`,
`dexp:<deal>:<user>`, `subr:<payment>`, `subx:<subscription>:<expiry epoch>`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from modules.queue.store import SendEntry

KINDS = ("occupancy_above", "occupancy_below", "new_deal", "deal_expiring",
         "subscription_renewed", "subscription_expiring")


class Job(msgspec.Struct, frozen=True):
    key: str
    user_id: int
    kind: str
    title: str
    body: str
    push: bool = True              # False: inbox only (quiet hours)
    hive_id: int | None = None
    deal_id: int | None = None
    at: float = 0.0                # when the cause happened (epoch s): latency figures


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Job)


def encode(job: Job) -> str:
    return ENCODER.encode(job).decode()


def decode(body: str) -> Job:
    """A job, or msgspec.ValidationError / DecodeError for a body that is none."""
    job = DECODER.decode(body)
    if job.kind not in KINDS or not 0 < len(job.key) <= 64:
        raise msgspec.ValidationError(f"not a notification job: kind {job.kind!r}")
    return job


async def enqueue(queues: Any, queue: str, jobs: Sequence[Job], parallel: int = 12) -> None:
    """Send `jobs` to the queue in batches of 10, `parallel` batches at a time; returns
    once every one is committed (raises if any batch failed: the caller retries, and
    the idempotency keys make a repeat harmless)."""
    batches = [jobs[i:i + 10] for i in range(0, len(jobs), 10)]
    for i in range(0, len(batches), parallel):
        await asyncio.gather(*(queues.send_batch(queue, [SendEntry(encode(j)) for j in b])
                               for b in batches[i:i + parallel]))


def in_quiet_hours(start: dt.time | None, end: dt.time | None, zone: str | ZoneInfo,
                   now: float) -> bool:
    """Whether `now` (epoch s) falls in [start, end) on the user's clock; a period whose
    end is before its start runs over midnight."""
    if start is None or end is None:
        return False
    tz = zone if isinstance(zone, ZoneInfo) else _zone(zone)
    local = dt.datetime.fromtimestamp(now, tz).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):
        return ZoneInfo("UTC")
