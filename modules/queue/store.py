"""The queue's storage and semantics on Postgres: the Python API of modules/queue.

`Queues` is what every front end (AweQ routes, the SQS protocol, the console) and any
other module or process role uses. It needs a `modules.database.Database` (the
process's pool) and, for long polling, a `Wakeups` (LISTEN on Postgres).

Theory of operation (the tables are in migration 0007_queue):
* A message row lives until it is deleted, purged or expires (retention). It is
  visible when `visible_at <= now()`. Receiving picks visible rows in
  (visible_at, seq) order with FOR UPDATE SKIP LOCKED, so concurrent consumers never
  get the same message, and moves them `visibility_timeout` ahead with a fresh
  `receipt` token. A consumer that dies simply never deletes: the row becomes
  visible again when its visibility runs out and goes to the end of the line.
* A message already received `max_receives` times is moved to the dead-letter queue
  (the same row gets the DLQ's id) by the receive that would have handed it out again.
* FIFO queues: receiving holds a per-queue advisory lock and hands out a message only
  if no earlier message of its group is invisible (in flight), in `seq` order. Sends
  take the same lock, check `queue_dedup` (5 minutes) and insert.
* Every send runs `pg_notify('bizzyd_queue', queue id)`; long pollers of that queue
  in any process wake up and try again.
* Durability: a send returns after a synchronous commit. Receives and deletes commit
  asynchronously (set by their own statement): a Postgres crash can only undo them,
  which makes a message deliverable again, as at-least-once allows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

CHANNEL = "bizzyd_queue"
MAX_BATCH = 10
MAX_WAIT = 20
DEDUP_SECONDS = 300
INFO_TTL = 1.0  # seconds a process trusts its cached copy of a queue's settings
LOCK_CLASS = 0x51554555  # advisory lock namespace of FIFO queues ("QUEU")

# attribute: (minimum, maximum, default) of the integer settings
LIMITS: dict[str, tuple[int, int, int]] = {
    "visibility_timeout": (0, 43200, 30),
    "delay_seconds": (0, 900, 0),
    "retention_seconds": (60, 1209600, 345600),
    "max_message_size": (1024, 262144, 262144),
    "receive_wait_seconds": (0, 20, 0),
    "max_receives": (1, 1000, 0),
}
SETTINGS = (*LIMITS, "content_dedup", "dead_letter_queue")


class QueueError(Exception):
    """A request the queue refuses; `code` is the SQS error code (docs/modules.md)."""

    code = "InvalidParameterValue"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QueueDoesNotExist(QueueError):
    code = "QueueDoesNotExist"


class QueueNameExists(QueueError):
    code = "QueueNameExists"


class InvalidParameterValue(QueueError):
    code = "InvalidParameterValue"


class MessageNotInflight(QueueError):
    code = "MessageNotInflight"


class ReceiptHandleIsInvalid(QueueError):
    code = "ReceiptHandleIsInvalid"


@dataclass(frozen=True)
class QueueInfo:
    """A queue and its settings (durations in seconds)."""

    id: int
    name: str
    fifo: bool
    visibility_timeout: int
    delay_seconds: int
    retention_seconds: int
    max_message_size: int
    receive_wait_seconds: int
    content_dedup: bool
    dead_letter_queue: str | None
    dead_letter_id: int | None
    max_receives: int | None
    created_at: float
    updated_at: float


@dataclass
class SendEntry:
    """One message to send; group and dedup ids are for FIFO queues."""

    body: str
    delay_seconds: int | None = None
    group_id: str | None = None
    dedup_id: str | None = None
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True)
class Sent:
    id: str
    md5: str
    seq: int
    duplicate: bool = False


@dataclass
class Message:
    """A received (or peeked) message. `receipt_handle` is what delete needs."""

    id: str
    body: str
    receipt_handle: str
    receive_count: int
    sent_at: float
    first_received_at: float | None
    visible_at: float
    seq: int
    group_id: str | None = None
    dedup_id: str | None = None
    attributes: dict[str, Any] | None = None
    md5: str = field(init=False)

    def __post_init__(self) -> None:
        self.md5 = md5_of(self.body)

    @property
    def received(self) -> bool:
        """Whether it has a receipt (a receive handed it out since it was last moved)."""
        return not self.receipt_handle.endswith("0" * 32)


@dataclass(frozen=True)
class Stats:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def md5_of(body: str) -> str:
    return hashlib.md5(body.encode()).hexdigest()


def receipt_handle(message_id: uuid.UUID, receipt: uuid.UUID | None) -> str:
    return message_id.hex + (receipt.hex if receipt else "0" * 32)


def parse_receipt(handle: str) -> tuple[uuid.UUID, uuid.UUID]:
    if not isinstance(handle, str) or len(handle) != 64:
        raise ReceiptHandleIsInvalid(f"the receipt handle {str(handle)[:80]!r} is invalid")
    try:
        return uuid.UUID(handle[:32]), uuid.UUID(handle[32:])
    except ValueError:
        raise ReceiptHandleIsInvalid(f"the receipt handle {handle!r} is invalid") from None


def _ts(value: Any) -> float:
    return value.timestamp() if value is not None else 0.0


def check_int(name: str, value: Any) -> int:
    low, high, _ = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterValue(f"{name} must be an integer from {low} to {high}, "
                                    f"got {value!r}")
    return value


def check_name(name: Any) -> str:
    ok = isinstance(name, str) and 0 < len(name) <= 80 and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in name.removesuffix(".fifo"))
    if not ok:
        raise InvalidParameterValue(
            "a queue name has 1 to 80 characters: letters, digits, - and _ "
            f"(a FIFO queue's ends in .fifo); got {str(name)[:100]!r}")
    return name


class Wakeups:
    """One LISTEN connection per process that wakes long pollers when a send to their
    queue commits (anywhere). While it is disconnected, pollers re-check every
    `rescue_interval`; it reconnects by itself with back-off."""

    def __init__(self, dsn: str, log: Any, max_backoff: float = 10.0) -> None:
        self.dsn, self.log, self.max_backoff = dsn, log, max_backoff
        self.waiters: dict[int, set[asyncio.Future]] = {}
        self.connected = asyncio.Event()
        self.closing = False
        self._task: asyncio.Task | None = None
        self._conn: asyncpg.Connection | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = 0.5
        while not self.closing:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                if conn is not None:
                    conn.terminate()
                self.log.error("queue: LISTEN connection failed: %s; retrying in %.1fs",
                               exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            self._conn, backoff = conn, 0.5
            self.connected.set()
            self._wake_all()  # sends may have been missed while disconnected
            await lost.wait()
            self.connected.clear()
            self._conn = None

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            queue_id = int(payload)
        except ValueError:
            return
        for fut in self.waiters.pop(queue_id, ()):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        waiters, self.waiters = self.waiters, {}
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    def register(self, queue_id: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if self.closing:
            fut.set_result(None)
        self.waiters.setdefault(queue_id, set()).add(fut)
        return fut

    def unregister(self, queue_id: int, fut: asyncio.Future) -> None:
        futs = self.waiters.get(queue_id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self.waiters[queue_id]

    def retire(self) -> None:
        """End every long poll now (the worker is stopping gracefully)."""
        self.closing = True
        self._wake_all()

    async def close(self) -> None:
        self.retire()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await asyncio.gather(self._conn.close(timeout=2), return_exceptions=True)


QUEUE_COLUMNS = """q.id, q.name, q.fifo, q.visibility_timeout, q.delay_seconds,
q.retention_seconds, q.max_message_size, q.receive_wait_seconds, q.content_dedup,
d.name AS dead_letter_queue, q.dead_letter_queue AS dead_letter_id, q.max_receives,
q.created_at, q.updated_at"""
QUEUE_FROM = "queue q LEFT JOIN queue d ON d.id = q.dead_letter_queue"

SEND_SQL = """
WITH ins AS (
    INSERT INTO queue_message (id, queue_id, body, attributes, group_id, dedup_id,
                               visible_at, expires_at)
    SELECT i, $1, b, a::jsonb, g, d, now() + make_interval(secs => w),
           now() + make_interval(secs => $2)
    FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[])
         AS t(i, b, a, g, d, w)
    RETURNING id, seq
), n AS (SELECT pg_notify('""" + CHANNEL + """', $1::text))
SELECT ins.id, ins.seq FROM ins, n
"""

# Receives and deletes commit asynchronously (synchronous_commit off for their own
# transaction, set by the statement itself): if Postgres crashes before the WAL
# reaches the disk, the message is delivered again, which at-least-once allows.
# Sends always wait for the flush: a send acknowledged is never lost.
CANDIDATES_STANDARD = """
    SELECT m.id, m.receive_count, m.visible_at FROM queue_message m
    WHERE m.queue_id = $1 AND m.visible_at <= now() AND m.expires_at > now()
      AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
    ORDER BY m.visible_at, m.seq LIMIT $2 FOR UPDATE SKIP LOCKED"""

CANDIDATES_FIFO = """
    SELECT m.id, m.receive_count, m.visible_at FROM queue_message m
    WHERE m.queue_id = $1 AND m.visible_at <= now() AND m.expires_at > now()
      AND NOT EXISTS (SELECT 1 FROM queue_message o
                      WHERE o.queue_id = $1 AND o.group_id = m.group_id AND o.seq < m.seq
                        AND o.visible_at > now())
      AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
    ORDER BY m.seq LIMIT $2 FOR UPDATE"""

# $3 visibility timeout, $4 dead-letter queue id (or NULL), $5 max receives
RECEIVE_SQL = """
WITH cand AS ({candidates}),
dead AS (
    UPDATE queue_message m SET queue_id = $4, visible_at = now(), receipt = NULL,
        source_queue = $1, expires_at = m.sent_at + make_interval(
            secs => (SELECT retention_seconds FROM queue WHERE id = $4))
    FROM cand WHERE m.id = cand.id AND $4::bigint IS NOT NULL AND cand.receive_count >= $5
    RETURNING m.id
), got AS (
    UPDATE queue_message m SET visible_at = now() + make_interval(secs => $3),
        receive_count = m.receive_count + 1, receipt = gen_random_uuid(),
        first_received_at = coalesce(m.first_received_at, now())
    FROM cand WHERE m.id = cand.id AND NOT ($4::bigint IS NOT NULL AND cand.receive_count >= $5)
    RETURNING m.id, m.body, m.attributes, m.group_id, m.dedup_id, m.seq, m.sent_at,
        m.receive_count, m.first_received_at, m.receipt, m.visible_at, cand.visible_at AS prev
)
SELECT got.*, d.n AS dead FROM (SELECT count(*) AS n FROM dead) d LEFT JOIN got ON true
"""

MESSAGE_COLUMNS = """id, body, attributes, group_id, dedup_id, seq, sent_at, receive_count,
first_received_at, receipt, visible_at"""

STATS_SQL = """
SELECT count(*) FILTER (WHERE visible_at <= now()) AS visible,
       count(*) FILTER (WHERE visible_at > now() AND receipt IS NOT NULL) AS in_flight,
       count(*) FILTER (WHERE visible_at > now() AND receipt IS NULL) AS delayed
FROM queue_message WHERE queue_id = $1 AND expires_at > now()
"""


def _message(row: Mapping[str, Any]) -> Message:
    attrs = row["attributes"]
    return Message(
        id=str(row["id"]), body=row["body"],
        receipt_handle=receipt_handle(row["id"], row["receipt"]),
        receive_count=row["receive_count"], sent_at=_ts(row["sent_at"]),
        first_received_at=_ts(row["first_received_at"]) or None,
        visible_at=_ts(row["visible_at"]), seq=row["seq"], group_id=row["group_id"],
        dedup_id=row["dedup_id"], attributes=json.loads(attrs) if attrs else None)


class Queues:
    """The queue API of one process (see the module docstring and docs/modules.md).

    `db` is a `modules.database.Database`; `wakeups` a started `Wakeups`, or None (long
    polls then re-check every `rescue_interval`). Methods raise `QueueError`s for bad
    requests and `DatabaseUnavailable` (503) while Postgres is down.
    """

    def __init__(self, db: Any, wakeups: Wakeups | None = None,
                 rescue_interval: float = 2.0) -> None:
        self.db, self.wakeups, self.rescue_interval = db, wakeups, rescue_interval
        self._infos: dict[str, tuple[float, QueueInfo]] = {}

    # -- queues -------------------------------------------------------------------

    async def create(self, name: str, **settings: Any) -> QueueInfo:
        """Create a queue, or return the existing one if `settings` agree with it
        (else QueueNameExists). Settings: see `SETTINGS`."""
        check_name(name)
        values = await self._settings(settings, fifo=name.endswith(".fifo"), name=name)
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "INSERT INTO queue (name, fifo) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING "
                "RETURNING id", name, name.endswith(".fifo"))
            if row is not None and values:
                await self._update(conn, row["id"], values)
        info = await self.get(name, fresh=True)
        if row is None:
            clash = [k for k, v in values.items() if getattr(info, _attr(k)) != v]
            if clash:
                raise QueueNameExists(f"a queue named {name} already exists with different "
                                      f"{', '.join(clash)}")
        return info

    async def get(self, name: str, fresh: bool = False) -> QueueInfo:
        """The queue's settings (cached for INFO_TTL unless `fresh`)."""
        now = time.monotonic()
        cached = self._infos.get(name)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {QUEUE_COLUMNS} FROM {QUEUE_FROM} WHERE q.name = $1", name)
        if row is None:
            self._infos.pop(name, None)
            raise QueueDoesNotExist(f"the queue {str(name)[:100]} does not exist")
        info = _info(row)
        self._infos[name] = (now + INFO_TTL, info)
        return info

    async def list(self, prefix: str = "", limit: int = 1000) -> list[QueueInfo]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {QUEUE_COLUMNS} FROM {QUEUE_FROM} WHERE starts_with(q.name, $1) "
                "ORDER BY q.name LIMIT $2", prefix, limit)
        return [_info(r) for r in rows]

    async def configure(self, name: str, **settings: Any) -> QueueInfo:
        info = await self.get(name, fresh=True)
        values = await self._settings(settings, fifo=info.fifo, name=name)
        async with self.db.connection() as conn:
            await self._update(conn, info.id, values)
        return await self.get(name, fresh=True)

    async def delete_queue(self, name: str) -> None:
        async with self.db.connection() as conn:
            found = await conn.fetchval("DELETE FROM queue WHERE name = $1 RETURNING id", name)
        self._infos.pop(name, None)
        if found is None:
            raise QueueDoesNotExist(f"the queue {str(name)[:100]} does not exist")

    async def purge(self, name: str) -> int:
        info = await self.get(name)
        async with self.db.connection() as conn:
            status = await conn.execute("DELETE FROM queue_message WHERE queue_id = $1", info.id)
        return int(status.split()[-1])

    async def _settings(self, settings: Mapping[str, Any], fifo: bool,
                        name: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in SETTINGS:
                raise InvalidParameterValue(f"unknown queue setting {key!r}")
            if key == "max_receives" and value in (0, None):
                values[key] = None
            elif key in LIMITS:
                values[key] = check_int(key, value)
            elif key == "content_dedup":
                if not isinstance(value, bool):
                    raise InvalidParameterValue("content_dedup must be true or false")
                values[key] = value
            else:
                values[key] = await self._dead_letter_id(value, fifo, name)
        return values

    async def _dead_letter_id(self, dlq_name: Any, fifo: bool, name: str) -> int | None:
        if dlq_name is None or dlq_name == "":
            return None
        dlq = await self.get(dlq_name)
        if dlq.fifo != fifo or dlq.name == name:
            raise InvalidParameterValue("a dead-letter queue must be another queue of the "
                                        "same type (standard or FIFO)")
        return dlq.id

    @staticmethod
    async def _update(conn: asyncpg.Connection, queue_id: int, values: Mapping[str, Any]) -> None:
        if not values:
            return
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(values, start=2))
        await conn.execute(f"UPDATE queue SET {sets}, updated_at = now() WHERE id = $1",
                           queue_id, *values.values())

    # -- messages -----------------------------------------------------------------

    async def send(self, name: str, body: str, delay_seconds: int | None = None,
                   group_id: str | None = None, dedup_id: str | None = None,
                   attributes: dict[str, Any] | None = None) -> Sent:
        entry = SendEntry(body, delay_seconds, group_id, dedup_id, attributes)
        return (await self.send_batch(name, [entry]))[0]

    async def send_batch(self, name: str, entries: Sequence[SendEntry]) -> list[Sent]:
        """Send up to 10 messages in one transaction (all or none)."""
        if not 1 <= len(entries) <= MAX_BATCH:
            raise InvalidParameterValue(f"a batch has 1 to {MAX_BATCH} entries")
        info = await self.get(name)
        for e in entries:
            self.check_entry(info, e)
        if info.fifo:
            return await self._send_fifo(info, entries)
        ids = [uuid.uuid4() for _ in entries]
        delays = [float(info.delay_seconds if e.delay_seconds is None else e.delay_seconds)
                  for e in entries]
        attrs = [json.dumps(e.attributes) if e.attributes else None for e in entries]
        async with self.db.connection() as conn:
            rows = await self._insert(conn, info, ids, [e.body for e in entries], attrs,
                                      [None] * len(entries), [None] * len(entries), delays)
        seqs = {r["id"]: r["seq"] for r in rows}
        return [Sent(str(i), md5_of(e.body), seqs[i]) for i, e in zip(ids, entries, strict=True)]

    @staticmethod
    async def _insert(conn: asyncpg.Connection, info: QueueInfo, ids: list, bodies: list,
                      attrs: list, groups: list, dedups: list, delays: list) -> list:
        try:
            return await conn.fetch(SEND_SQL, info.id, float(info.retention_seconds), ids,
                                    bodies, attrs, groups, dedups, delays)
        except asyncpg.ForeignKeyViolationError:
            raise QueueDoesNotExist(f"the queue {info.name} does not exist") from None

    @staticmethod
    def check_entry(info: QueueInfo, e: SendEntry) -> None:
        """Raise InvalidParameterValue if `e` cannot be sent to the queue."""
        if not isinstance(e.body, str) or not e.body:
            raise InvalidParameterValue("the message body must be a non-empty string")
        if "\x00" in e.body:
            raise InvalidParameterValue("the message body contains a NUL character")
        if len(e.body.encode()) > info.max_message_size:
            raise InvalidParameterValue(
                f"the message is longer than {info.max_message_size} bytes")
        if e.delay_seconds is not None:
            if info.fifo:
                raise InvalidParameterValue("FIFO queues take no per-message delay")
            check_int("delay_seconds", e.delay_seconds)
        if info.fifo and not e.group_id:
            raise InvalidParameterValue("a message to a FIFO queue needs a MessageGroupId")
        if not info.fifo and (e.group_id or e.dedup_id):
            raise InvalidParameterValue(
                "MessageGroupId and MessageDeduplicationId are for FIFO queues only")
        if info.fifo and not e.dedup_id and not info.content_dedup:
            raise InvalidParameterValue(
                "the queue has no content-based deduplication: give a MessageDeduplicationId")
        for text in (e.group_id, e.dedup_id):
            if text is not None and not (0 < len(text) <= 128 and text.isascii()
                                         and text.isprintable()):
                raise InvalidParameterValue("group and deduplication ids have 1 to 128 "
                                            "printable ASCII characters")

    async def _send_fifo(self, info: QueueInfo, entries: Sequence[SendEntry]) -> list[Sent]:
        out: list[Sent] = []
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, info.id)
            for e in entries:
                dedup = e.dedup_id or hashlib.sha256(e.body.encode()).hexdigest()
                seen = await conn.fetchrow(
                    "SELECT message_id, seq FROM queue_dedup WHERE queue_id = $1 "
                    "AND dedup_id = $2 AND expires_at > now()", info.id, dedup)
                if seen is not None:
                    out.append(Sent(str(seen["message_id"]), md5_of(e.body), seen["seq"], True))
                    continue
                mid = uuid.uuid4()
                attrs = json.dumps(e.attributes) if e.attributes else None
                row = (await self._insert(conn, info, [mid], [e.body], [attrs], [e.group_id],
                                          [dedup], [float(info.delay_seconds)]))[0]
                await conn.execute(
                    "INSERT INTO queue_dedup (queue_id, dedup_id, message_id, seq, expires_at) "
                    "VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) "
                    "ON CONFLICT (queue_id, dedup_id) DO UPDATE SET message_id = $3, seq = $4, "
                    "expires_at = EXCLUDED.expires_at", info.id, dedup, mid, row["seq"],
                    float(DEDUP_SECONDS))
                out.append(Sent(str(mid), md5_of(e.body), row["seq"]))
        return out

    async def receive(self, name: str, max_messages: int = 1,
                      visibility_timeout: int | None = None,
                      wait_seconds: int | None = None, limit: int = MAX_BATCH) -> list[Message]:
        """Receive up to `max_messages` (1..`limit`), waiting up to `wait_seconds`
        (default: the queue's receive_wait_seconds) for the first one to arrive."""
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) \
                or not 1 <= max_messages <= limit:
            raise InvalidParameterValue(f"the number of messages must be from 1 to {limit}")
        info = await self.get(name)
        timeout = info.visibility_timeout if visibility_timeout is None \
            else check_int("visibility_timeout", visibility_timeout)
        wait = info.receive_wait_seconds if wait_seconds is None else wait_seconds
        if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT:
            raise InvalidParameterValue(f"the wait time must be from 0 to {MAX_WAIT} seconds")
        deadline = time.monotonic() + wait
        while True:
            fut = self.wakeups.register(info.id) if wait and self.wakeups else None
            try:
                found = await self._receive_once(info, max_messages, timeout)
                left = deadline - time.monotonic()
                if found or left <= 0 or (self.wakeups and self.wakeups.closing):
                    return found
                await self._sleep(fut, min(left, self.rescue_interval))
            finally:
                if fut is not None:
                    self.wakeups.unregister(info.id, fut)  # type: ignore[union-attr]

    @staticmethod
    async def _sleep(fut: asyncio.Future | None, seconds: float) -> None:
        if fut is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), seconds)
        except TimeoutError:
            pass

    async def _receive_once(self, info: QueueInfo, count: int, timeout: int) -> list[Message]:
        args = (info.id, count, float(timeout), info.dead_letter_id if info.max_receives
                else None, info.max_receives or 0)
        async with self.db.connection() as conn:
            if info.fifo:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS,
                                       info.id)
                    rows = await conn.fetch(RECEIVE_SQL.format(candidates=CANDIDATES_FIFO), *args)
            else:
                rows = await conn.fetch(RECEIVE_SQL.format(candidates=CANDIDATES_STANDARD), *args)
        got = [r for r in rows if r["id"] is not None]
        if any(r["dead"] for r in rows) and info.dead_letter_id is not None:
            await self._notify(info.dead_letter_id)
        got.sort(key=(lambda r: r["seq"]) if info.fifo else (lambda r: (r["prev"], r["seq"])))
        return [_message(r) for r in got]

    async def _notify(self, *queue_ids: int) -> None:
        async with self.db.connection() as conn:
            for qid in queue_ids:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(qid))

    async def delete(self, name: str, receipt: str) -> bool:
        """Acknowledge a received message. False if the handle is stale (the message
        was received again since, or is gone): that is not an error, as in SQS."""
        return (await self.delete_batch(name, [receipt]))[0]

    async def delete_batch(self, name: str, receipts: Sequence[str]) -> list[bool]:
        """Delete by receipt handles; raises ReceiptHandleIsInvalid for a malformed one
        (use `parse_receipt` first to report per entry)."""
        if not 1 <= len(receipts) <= MAX_BATCH:
            raise InvalidParameterValue(f"a batch has 1 to {MAX_BATCH} entries")
        info = await self.get(name)
        pairs = [parse_receipt(r) for r in receipts]
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                # a primary-key lookup: with a join on unnest(), or with an indexable
                # queue_id test and stale statistics, it was planned as a scan of the queue
                "WITH s AS (SELECT set_config('synchronous_commit', 'off', true)), d AS ("
                "DELETE FROM queue_message m WHERE m.id = ANY($2::uuid[]) AND m.queue_id + 0 = $1 "
                "AND m.receipt = ($3::uuid[])[array_position($2::uuid[], m.id)] RETURNING m.id) "
                "SELECT d.id FROM d, s",
                info.id, [p[0] for p in pairs], [p[1] for p in pairs])
        if info.fifo and rows:
            await self._notify(info.id)  # the groups of these messages are free again
        gone = {r["id"] for r in rows}
        return [p[0] in gone for p in pairs]

    async def delete_id(self, name: str, message_id: str) -> bool:
        """Delete a message by its id, whoever holds it (AweQ's delete-message)."""
        info = await self.get(name)
        try:
            mid = uuid.UUID(message_id)
        except (ValueError, TypeError, AttributeError):
            raise InvalidParameterValue(f"{str(message_id)[:80]!r} is not a message id") \
                from None
        async with self.db.connection() as conn:
            found = await conn.fetchval(
                "DELETE FROM queue_message WHERE queue_id = $1 AND id = $2 RETURNING id",
                info.id, mid)
        if info.fifo and found:
            await self._notify(info.id)
        return found is not None

    async def change_visibility(self, name: str, receipt: str, timeout: int) -> None:
        """Make an in-flight message visible again `timeout` seconds from now."""
        info = await self.get(name)
        check_int("visibility_timeout", timeout)
        mid, token = parse_receipt(receipt)
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "WITH u AS (UPDATE queue_message "
                "  SET visible_at = now() + make_interval(secs => $4) "
                "  WHERE queue_id = $1 AND id = $2 AND receipt = $3 AND visible_at > now() "
                "  RETURNING id) "
                "SELECT (SELECT count(*) FROM u) AS changed, "
                "  (SELECT count(*) FROM queue_message WHERE queue_id = $1 AND id = $2 "
                "   AND receipt = $3) AS held", info.id, mid, token, float(timeout))
        if not row["changed"]:
            if row["held"]:
                raise MessageNotInflight("the message is not in flight")
            raise ReceiptHandleIsInvalid(
                "the message does not exist or the receipt handle is stale")
        if timeout == 0:
            await self._notify(info.id)

    async def stats(self, name: str) -> Stats:
        info = await self.get(name)
        async with self.db.connection() as conn:
            row = await conn.fetchrow(STATS_SQL, info.id)
        return Stats(row["visible"], row["in_flight"], row["delayed"])

    async def peek(self, name: str, limit: int = 50) -> list[Message]:
        """Messages in receive order, without receiving them (for operators)."""
        info = await self.get(name)
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM queue_message WHERE queue_id = $1 "
                "AND expires_at > now() ORDER BY visible_at, seq LIMIT $2", info.id, limit)
        return [_message(r) for r in rows]

    async def redrive(self, dead_letter_queue: str, to: str | None = None) -> int:
        """Move the dead-letter queue's messages that are not in flight back to the
        queue each came from (or to `to`); returns how many moved."""
        dlq = await self.get(dead_letter_queue)
        target = (await self.get(to)).id if to else None
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                "UPDATE queue_message m SET queue_id = coalesce($2, m.source_queue), "
                "  visible_at = now(), receive_count = 0, receipt = NULL, source_queue = NULL, "
                "  expires_at = m.sent_at + make_interval(secs => q.retention_seconds) "
                "FROM queue q WHERE m.queue_id = $1 AND q.id = coalesce($2, m.source_queue) "
                "  AND (m.receipt IS NULL OR m.visible_at <= now()) RETURNING m.queue_id",
                dlq.id, target)
        if rows:
            await self._notify(*{r["queue_id"] for r in rows})
        return len(rows)

    async def sweep(self) -> int:
        """Delete expired messages and deduplication ids; returns messages deleted."""
        async with self.db.connection() as conn:
            status = await conn.execute("DELETE FROM queue_message WHERE expires_at <= now()")
            await conn.execute("DELETE FROM queue_dedup WHERE expires_at <= now()")
        return int(status.split()[-1])


def _attr(setting: str) -> str:
    return "dead_letter_id" if setting == "dead_letter_queue" else setting


def _info(row: Mapping[str, Any]) -> QueueInfo:
    values = dict(row)
    values["created_at"] = _ts(values["created_at"])
    values["updated_at"] = _ts(values["updated_at"])
    return QueueInfo(**values)
