"""A durable at-least-once queue on Postgres, with SQS semantics: AweQ's routes, the SQS
JSON protocol (boto3 works against it), an operators' console, and a Python API for
other modules and process roles (`queues(ctx)`, `open_queues(ctx)`; docs/modules.md).

    modules: [modules.database, modules.queue]
    queue:
      sqs_credentials: ["AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"]
    http:
      servers:
        - locations:
            - location: = /send-message
              content: aweq_send
              access: ["allow 127.0.0.1", "deny all"]
            - location: = /receive-message
              content: aweq_receive
            - location: ~ ^/delete-message/(?<key>[^/]+)$
              content: aweq_delete
            - location: = /get-stats
              content: aweq_stats
            - location: = /                  # the SQS endpoint (POST)
              content: sqs
            - location: /queues/
              content: queue_console

Pieces: store.py (tables of migration 0007_queue, the semantics, LISTEN/NOTIFY
wake-ups), aweq.py, sqs.py + sigv4.py, console.py. Needs `modules.database`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Block, ConfigError, Directive
from bizzyd.config.types import Bool, Custom, Duration, ListOf, Str
from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd.module import Module, ProcessContext

from . import aweq
from .console import queue_console
from .sigv4 import parse_keys
from .sqs import Sqs, error_response
from .store import QueueError, Queues, Wakeups

NAME = "queue"


def _credentials(value: Any) -> list[str]:
    items = ListOf(Str()).convert(value)
    parse_keys(items)
    return items


DIRECTIVES = (
    Directive(NAME, Block((
        Directive("aweq_checkout_lifetime", Duration(), "120s",
                  doc="Visibility timeout of an AweQ queue the routes create on first use "
                      "(AweQ's checkout_lifetime)."),
        Directive("rescue_interval", Duration(), "2s",
                  doc="A long poll re-checks its queue at least this often, for messages "
                      "whose visibility ran out (sends wake it at once)."),
        Directive("sweep_interval", Duration(), "10s",
                  doc="How often each worker deletes messages past their retention."),
        Directive("sqs_auth", Bool(), True,
                  doc="Require AWS SigV4 signatures from sqs_credentials on the SQS "
                      "endpoint."),
        Directive("sqs_credentials", Custom("list of 'ACCESS_KEY:SECRET'", _credentials),
                  [], doc="Key pairs SQS clients sign with (SigV4)."),
        Directive("sqs_account_id", Str(pattern=r"[0-9]{12}"), "000000000000",
                  doc="Account id in queue URLs and ARNs."),
        Directive("sqs_region", Str(), "us-east-1", doc="Region in queue ARNs."),
    )), doc="The durable queue: AweQ routes, SQS protocol, console."),
    Directive("aweq_queue", Str(pattern=r"[A-Za-z0-9_-]{1,80}"), "aweq",
              (HTTP, SERVER, LOCATION), doc="The queue AweQ's routes use."),
)


@dataclass
class QueueState:
    """A process's queue objects (`ctx.state["queue"]`)."""

    queues: Queues
    wakeups: Wakeups
    sqs: Sqs
    sweeper: asyncio.Task | None = None


def check(config: Any) -> None:
    if config.get("database") is None:
        raise ConfigError("the queue module needs modules.database (list it in `modules:`)",
                          ("modules",), config.mark(("modules",)))


def open_queues(ctx: ProcessContext, db: Any = None) -> tuple[Queues, Wakeups]:
    """A `Queues` for a process of its own (a module's process role): its own LISTEN
    connection, and `db` (default: the process's `modules.database` pool). Call in
    the role's event loop; `await wakeups.close()` when done."""
    from modules.database import Database

    if db is None:
        db = ctx.state.get("database") or Database(ctx.config["database"], ctx.log)
    wakeups = Wakeups(ctx.config["database"]["dsn"], ctx.log,
                      ctx.config["database"]["reconnect_max_backoff"])
    wakeups.start()
    return Queues(db, wakeups, ctx.config[NAME]["rescue_interval"]), wakeups


def queues(ctx: ProcessContext) -> Queues:
    """The worker's `Queues` (for other modules' handlers)."""
    return ctx.state[NAME].queues


async def _sweep(ctx: ProcessContext, q: Queues) -> None:
    interval = ctx.config[NAME]["sweep_interval"]
    while True:
        await asyncio.sleep(interval)
        try:
            if removed := await q.sweep():
                ctx.log.info("queue: %d messages past their retention deleted", removed)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            ctx.log.warning("queue: retention sweep failed: %s", exc)


def init_worker(ctx: ProcessContext) -> None:
    q, wakeups = open_queues(ctx)
    settings = ctx.config[NAME]
    state = ctx.state[NAME] = QueueState(q, wakeups,
                                         Sqs(q, settings, parse_keys(settings["sqs_credentials"])))
    state.sweeper = asyncio.get_running_loop().create_task(_sweep(ctx, q))
    ctx.on_retire.append(wakeups.retire)


async def exit_worker(ctx: ProcessContext) -> None:
    state: QueueState | None = ctx.state.pop(NAME, None)
    if state is None:
        return
    if state.sweeper is not None:
        state.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.sweeper
    await state.wakeups.close()


async def sqs(request: Request) -> Response:
    """The SQS endpoint (POST /)."""
    from modules.database import DatabaseUnavailable

    try:
        return await request.process.state[NAME].sqs.handle(request)
    except DatabaseUnavailable as exc:
        return error_response("ServiceUnavailable", "the queue's database is unavailable; "
                              "retry later", 503, headers=exc.headers)


def _guard(handler: Any) -> Any:
    """AweQ handlers: a QueueError that escaped is the client's fault (400)."""
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except QueueError as exc:
            return aweq._error(exc.status, exc.message)
    guarded.__doc__ = handler.__doc__
    return guarded


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    check=check,
    init_worker=init_worker,
    exit_worker=exit_worker,
    content_handlers={"aweq_send": _guard(aweq.send_message),
                      "aweq_receive": _guard(aweq.receive_message),
                      "aweq_delete": _guard(aweq.delete_message),
                      "aweq_stats": _guard(aweq.get_stats),
                      "sqs": sqs, "queue_console": queue_console},
    doc=__doc__ or "",
)

__all__ = ["Queues", "module", "open_queues", "queues"]
