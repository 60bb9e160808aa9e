"""The queue's semantics (modules/queue/store.py) against a real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

import pytest

from modules.queue.store import (
    InvalidParameterValue,
    MessageNotInflight,
    QueueDoesNotExist,
    QueueNameExists,
    ReceiptHandleIsInvalid,
    SendEntry,
)

pytestmark = pytest.mark.services


def fresh(suffix: str = "") -> str:
    return f"q{secrets.token_hex(5)}{suffix}"


def test_create_list_configure_delete(run):
    name = fresh()

    async def scenario(q):
        info = await q.create(name, visibility_timeout=45)
        assert (info.name, info.fifo, info.visibility_timeout) == (name, False, 45)
        assert (await q.create(name, visibility_timeout=45)).id == info.id  # idempotent
        with pytest.raises(QueueNameExists, match="visibility_timeout"):
            await q.create(name, visibility_timeout=46)
        assert name in [i.name for i in await q.list(prefix=name[:6])]
        changed = await q.configure(name, delay_seconds=3, retention_seconds=120)
        assert (changed.delay_seconds, changed.retention_seconds) == (3, 120)
        with pytest.raises(InvalidParameterValue, match="from 0 to 900"):
            await q.configure(name, delay_seconds=901)
        with pytest.raises(InvalidParameterValue, match="unknown queue setting"):
            await q.configure(name, colour="blue")
        with pytest.raises(InvalidParameterValue, match="queue name"):
            await q.create("bad name!")
        await q.delete_queue(name)
        with pytest.raises(QueueDoesNotExist):
            await q.get(name, fresh=True)
        with pytest.raises(QueueDoesNotExist):
            await q.delete_queue(name)

    run(scenario)


def test_send_receive_delete_and_batches(run):
    name = fresh()

    async def scenario(q):
        await q.create(name)
        sent = await q.send(name, "one")
        assert sent.md5 == hashlib.md5(b"one").hexdigest()
        batch = await q.send_batch(name, [SendEntry(f"b{i}") for i in range(10)])
        assert len({s.id for s in batch}) == 10
        with pytest.raises(InvalidParameterValue, match="1 to 10"):
            await q.send_batch(name, [SendEntry("x")] * 11)
        with pytest.raises(InvalidParameterValue, match="non-empty"):
            await q.send(name, "")
        first = await q.receive(name, 10, visibility_timeout=60)
        second = await q.receive(name, 10, visibility_timeout=60)
        assert [m.body for m in first] == ["one"] + [f"b{i}" for i in range(9)]
        assert [m.body for m in second] == ["b9"]  # disjoint batches
        assert await q.receive(name, 10) == []
        assert (await q.stats(name)).in_flight == 11
        assert await q.delete(name, first[0].receipt_handle) is True
        assert await q.delete(name, first[0].receipt_handle) is False  # already gone
        assert await q.delete_batch(name, [m.receipt_handle for m in first[1:]]) == [True] * 9
        with pytest.raises(ReceiptHandleIsInvalid):
            await q.delete(name, "not-a-handle")
        stats = await q.stats(name)
        assert (stats.visible, stats.in_flight, stats.delayed) == (0, 1, 0)
        with pytest.raises(InvalidParameterValue, match="from 1 to 10"):
            await q.receive(name, 11)

    run(scenario)


def test_visibility_timeout_redelivers_with_receive_count(run):
    """A consumer that never deletes: the message comes back after the timeout, with a
    new receipt handle; the old handle can no longer delete it."""
    name = fresh()

    async def scenario(q):
        await q.create(name, visibility_timeout=1)
        await q.send(name, "job")
        got = await q.receive(name)
        assert got[0].receive_count == 1
        assert await q.receive(name) == []
        start = time.monotonic()
        again = await q.receive(name, wait_seconds=5)
        assert 0.5 < time.monotonic() - start < 3
        assert again[0].id == got[0].id and again[0].receive_count == 2
        assert again[0].receipt_handle != got[0].receipt_handle
        assert await q.delete(name, got[0].receipt_handle) is False  # stale handle
        assert (await q.stats(name)).in_flight == 1
        assert await q.delete(name, again[0].receipt_handle) is True

    run(scenario)


def test_change_visibility(run):
    name = fresh()

    async def scenario(q):
        await q.create(name, visibility_timeout=300)
        await q.send(name, "m")
        (m,) = await q.receive(name)
        await q.change_visibility(name, m.receipt_handle, 0)  # release it at once
        (again,) = await q.receive(name)
        assert again.id == m.id and again.receive_count == 2
        with pytest.raises(ReceiptHandleIsInvalid):
            await q.change_visibility(name, m.receipt_handle, 10)  # stale
        await q.change_visibility(name, again.receipt_handle, 0)
        with pytest.raises(MessageNotInflight):
            await q.change_visibility(name, again.receipt_handle, 10)  # visible now

    run(scenario)


def test_delay_seconds(run):
    name = fresh()

    async def scenario(q):
        await q.create(name, delay_seconds=1)
        await q.send(name, "late")
        await q.send(name, "now", delay_seconds=0)
        assert [m.body for m in await q.receive(name, 10)] == ["now"]
        stats = await q.stats(name)
        assert stats.delayed == 1
        start = time.monotonic()
        got = await q.receive(name, 10, wait_seconds=5)
        assert [m.body for m in got] == ["late"] and time.monotonic() - start > 0.3

    run(scenario)


def test_dead_letter_queue_and_redrive(run):
    name, dlq = fresh(), fresh("-dlq")

    async def scenario(q):
        await q.create(dlq)
        await q.create(name, visibility_timeout=0, dead_letter_queue=dlq, max_receives=2)
        await q.send(name, "poison")
        assert (await q.receive(name))[0].receive_count == 1
        assert (await q.receive(name))[0].receive_count == 2
        assert await q.receive(name) == []  # third receive moves it instead
        (dead,) = await q.peek(dlq)
        assert dead.body == "poison"
        assert (await q.stats(name)).total == 0
        assert await q.redrive(dlq) == 1
        (back,) = await q.receive(name)
        assert back.body == "poison" and back.receive_count == 1
        with pytest.raises(InvalidParameterValue, match="same type"):
            await q.configure(name, dead_letter_queue=name)
        with pytest.raises(InvalidParameterValue, match="same type"):
            await q.create(fresh(".fifo"), dead_letter_queue=dlq, max_receives=1)
        with pytest.raises(QueueDoesNotExist):
            await q.configure(name, dead_letter_queue=fresh())

    run(scenario)


def test_retention_and_purge(run, queue_dsn):
    import asyncpg
    name = fresh()

    async def scenario(q):
        info = await q.create(name, retention_seconds=60)
        await q.send_batch(name, [SendEntry("old"), SendEntry("new")])
        conn = await asyncpg.connect(queue_dsn)
        try:  # the clock cannot be moved: age one message past its retention instead
            await conn.execute("UPDATE queue_message SET expires_at = now() - interval '1s' "
                               "WHERE queue_id = $1 AND body = 'old'", info.id)
        finally:
            await conn.close()
        assert (await q.stats(name)).visible == 1
        assert [m.body for m in await q.peek(name)] == ["new"]
        assert await q.sweep() >= 1
        assert [m.body for m in await q.receive(name, 10, visibility_timeout=0)] == ["new"]
        assert await q.purge(name) == 1
        assert (await q.stats(name)).total == 0

    run(scenario)


def test_fifo_orders_per_group_and_blocks_a_group_in_flight(run):
    name = fresh(".fifo")

    async def scenario(q):
        await q.create(name, content_dedup=True, visibility_timeout=30)
        for i in range(3):
            await q.send(name, f"a{i}", group_id="A")
            await q.send(name, f"b{i}", group_id="B")
        first = await q.receive(name, 2)
        assert [m.body for m in first] == ["a0", "b0"]
        assert await q.receive(name, 10) == []  # both groups have a message in flight
        await q.delete(name, first[0].receipt_handle)
        assert [m.body for m in await q.receive(name, 10)] == ["a1", "a2"]
        await q.change_visibility(name, first[1].receipt_handle, 0)  # b0 comes back first
        assert [m.body for m in await q.receive(name, 10)] == ["b0", "b1", "b2"]
        with pytest.raises(InvalidParameterValue, match="MessageGroupId"):
            await q.send(name, "x")
        with pytest.raises(InvalidParameterValue, match="no per-message delay"):
            await q.send(name, "x", group_id="A", delay_seconds=1)

    run(scenario)


def test_fifo_deduplication(run):
    name, plain = fresh(".fifo"), fresh(".fifo")

    async def scenario(q):
        await q.create(name, content_dedup=True)
        one = await q.send(name, "same", group_id="g")
        two = await q.send(name, "same", group_id="g")  # content-based: a duplicate
        three = await q.send(name, "same", group_id="g", dedup_id="other")
        assert two.duplicate and two.id == one.id and two.seq == one.seq
        assert not three.duplicate and three.id != one.id
        assert (await q.stats(name)).visible == 2
        await q.create(plain)
        with pytest.raises(InvalidParameterValue, match="MessageDeduplicationId"):
            await q.send(plain, "x", group_id="g")
        a = await q.send(plain, "x", group_id="g", dedup_id="d1")
        b = await q.send(plain, "y", group_id="g", dedup_id="d1")  # same id, other body
        assert b.duplicate and b.id == a.id
        (m,) = await q.receive(plain, 10)
        await q.delete(plain, m.receipt_handle)
        c = await q.send(plain, "x", group_id="g", dedup_id="d1")  # still within 5 min
        assert c.duplicate

    run(scenario)


def test_long_poll_wakes_on_send_without_polling(run):
    """rescue_interval is 30 s here, so only the NOTIFY of the send can wake the
    receiver before its 10 s wait ends."""
    name = fresh()

    async def scenario(q):
        await q.create(name)
        waiting = asyncio.ensure_future(q.receive(name, 10, wait_seconds=10))
        await asyncio.sleep(0.3)  # let it start waiting (nothing to await from outside)
        assert not waiting.done()
        start = time.monotonic()
        await q.send(name, "wake up")
        got = await asyncio.wait_for(waiting, 5)
        assert [m.body for m in got] == ["wake up"]
        return time.monotonic() - start

    assert run(scenario, rescue_interval=30) < 1.0


def test_long_poll_times_out_empty(run):
    name = fresh()

    async def scenario(q):
        await q.create(name)
        start = time.monotonic()
        assert await q.receive(name, wait_seconds=1) == []
        return time.monotonic() - start

    assert 0.9 < run(scenario) < 3


def test_concurrent_consumers_never_share_a_message(run):
    name = fresh()

    async def scenario(q):
        await q.create(name, visibility_timeout=60)
        for i in range(10):
            await q.send_batch(name, [SendEntry(f"{i}-{j}") for j in range(10)])

        async def consume() -> list[str]:
            got: list[str] = []
            while batch := await q.receive(name, 10):
                got += [m.id for m in batch]
                await q.delete_batch(name, [m.receipt_handle for m in batch])
            return got

        results = await asyncio.gather(*(consume() for _ in range(4)))
        ids = [i for r in results for i in r]
        assert len(ids) == 100 and len(set(ids)) == 100
        assert (await q.stats(name)).total == 0

    run(scenario)


def test_sends_commit_synchronously_receives_and_deletes_asynchronously(queue_dsn):
    """The durability trade-off of store.py: a send's transaction keeps the session's
    synchronous_commit (on), a receive's and a delete's turn it off for themselves."""
    import contextlib

    import asyncpg

    from modules.queue.store import Queues

    class OneConnection:  # a Database stand-in that hands out one open connection
        def __init__(self, conn):
            self.conn = conn

        @contextlib.asynccontextmanager
        async def connection(self):
            yield self.conn

    async def scenario():
        conn = await asyncpg.connect(queue_dsn)
        try:
            await conn.execute("SET synchronous_commit = on")
            q = Queues(OneConnection(conn))
            name = fresh()
            await q.create(name)

            async def mode_after(call) -> str:
                async with conn.transaction():
                    result = await call()
                    mode = await conn.fetchval("SHOW synchronous_commit")
                mode_after.result = result
                return mode

            assert await mode_after(lambda: q.send(name, "m")) == "on"
            assert await mode_after(lambda: q.receive(name)) == "off"
            (m,) = mode_after.result
            assert await mode_after(lambda: q.delete(name, m.receipt_handle)) == "off"
            assert mode_after.result is True
            assert await conn.fetchval("SHOW synchronous_commit") == "on"  # not leaked
        finally:
            await conn.close()

    asyncio.run(scenario())
