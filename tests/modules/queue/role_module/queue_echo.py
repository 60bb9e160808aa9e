"""A test module whose process role consumes a queue through the queue module's Python
API (`open_queues`), as the notifier will: it long-polls `echo-in`, sends each body
upper-cased to `echo-out`, and deletes what it handled."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from bizzyd.module import Module, ProcessContext, ProcessRole
from modules.queue import open_queues
from modules.queue.store import SendEntry


async def serve(ctx: ProcessContext) -> int:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    q, wakeups = open_queues(ctx)
    try:
        await q.create("echo-in")
        await q.create("echo-out")
        while not stop.done():
            polling = asyncio.ensure_future(q.receive("echo-in", 10, wait_seconds=20))
            await asyncio.wait([polling, stop], return_when=asyncio.FIRST_COMPLETED)
            if not polling.done():
                polling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await polling
                break
            got = polling.result()
            if got:
                await q.send_batch("echo-out", [SendEntry(m.body.upper()) for m in got])
                await q.delete_batch("echo-in", [m.receipt_handle for m in got])
    finally:
        await wakeups.close()
        await q.db.close()
    return 0


def main(ctx: ProcessContext) -> int:
    return asyncio.run(serve(ctx))


module = Module(name="queue_echo", roles=(ProcessRole("queue echo", main),))
