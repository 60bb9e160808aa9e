"""Request phases and the request object handlers see.

Phases run in this order (as in nginx):

    post_read → server_rewrite → find_config → rewrite → preaccess → access
    → precontent → content → log

`post_read` and `server_rewrite` handlers run for every request of a server, before
its location is known; `find_config` is the core's location match; the others run
for the matched location.  A handler is called as `handler(request)` and returns:

    None (or DECLINED)  next handler of the same phase
    DONE                this phase is finished: go to the next phase
    REROUTE             the handler changed `request.path`: find the location again
                        and run its handlers (rewrite ... last, internal redirects;
                        at most MAX_REROUTES times, then 500)
    a Response          the request is answered (later phases up to `log` are skipped)
    an awaitable        of any of the above: the request continues asynchronously

A location's handler list is compiled once per config: a `PhaseHandler` whose
`applies(location_config)` is false for a location is not in its list, so a plain
`return` location runs no handler at all.  `log` handlers run after the response
is written; their return value is ignored.  A log handler declared with
`records=True` is given log records (LOG_FIELDS, below) in batches instead.
"""

from __future__ import annotations

import inspect
import time
from collections import namedtuple
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .response import Response

PHASES = ("post_read", "server_rewrite", "find_config", "rewrite", "preaccess", "access",
          "precontent", "content", "log")
PHASE_INDEX = {name: i for i, name in enumerate(PHASES)}
SERVER_PHASES = frozenset({"post_read", "server_rewrite"})
DECLINED = None


class _Done:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


DONE = _Done()


class _Reroute:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REROUTE"


REROUTE = _Reroute()
MAX_REROUTES = 10
Handler = Callable[["Request"], Any]


class Request:
    """One HTTP request as handlers see it."""

    __slots__ = ("method", "path", "query", "raw_url", "version", "headers", "body",
                 "keep_alive", "server", "location", "captures", "ctx", "conn_id",
                 "client", "status", "response", "process", "start")

    def __init__(self, method: str, path: str, query: str, raw_url: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool,
                 conn_id: int, client: str) -> None:
        self.method, self.path, self.query, self.raw_url = method, path, query, raw_url
        self.version, self.headers, self.body = version, headers, body
        self.keep_alive, self.conn_id, self.client = keep_alive, conn_id, client
        self.server: Any = None
        self.location: Any = None
        self.captures: dict[str, str] = {}
        self.ctx: dict[str, Any] = {}
        self.status = 0
        self.response: Any = None  # the final response, set before the log phase
        self.process: Any = None  # the worker's ProcessContext (config, log, state)
        self.start = 0.0

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive name), or None."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None


# A log record: what the log phase knows of an answered request, as a plain tuple
# (cheaper to build than any object: the core builds one per logged request, also on
# paths that build no Request).  `LogRecord(*record)` names the fields.
LOG_FIELDS = ("client", "method", "raw_url", "path", "version", "headers", "status",
              "body_bytes", "conn_id", "server", "location", "duration", "time", "process")
LogRecord = namedtuple("LogRecord", LOG_FIELDS)
Record = tuple


def record_of(request: Request, response: Any, duration: float) -> Record:
    """The log record of a request answered through the phases."""
    return (request.client, request.method, request.raw_url, request.path, request.version,
            request.headers, response.status, body_bytes(response, request.method == "HEAD"),
            request.conn_id, request.server, request.location, duration, time.time(),
            request.process)


def body_bytes(response: Any, head: bool) -> int:
    """Best effort: a bytes body's length, a file range's count; 0 for HEAD and streams."""
    if head:
        return 0
    if isinstance(response, Response):
        if response.file is not None:
            return response.file.count
        if response.stream is not None:
            return 0
    return len(response.body)  # a StaticResponse too


def compile_handlers(handlers: Sequence[Any], phases: Sequence[str],
                     location_config: Any) -> tuple[tuple[int, Handler], ...]:
    """The (phase index, handler) list for some phases, in phase then `order` order."""
    out = []
    for ph in sorted(handlers, key=lambda h: (PHASE_INDEX[h.phase], h.order)):
        if ph.phase not in phases:
            continue
        if ph.applies is not None and not ph.applies(location_config):
            continue
        out.append((PHASE_INDEX[ph.phase], ph.handler))
    return tuple(out)


def compile_log_handlers(handlers: Sequence[Any],
                         config: Any) -> tuple[tuple[Handler, ...], tuple[Handler, ...]]:
    """A location's or a server's log phase, in `order` order: the handlers that take
    the Request, and those that take batches of records."""
    def compiled(records: bool) -> tuple[Handler, ...]:
        chosen = [h for h in handlers if h.phase == "log" and h.records == records]
        return tuple(handler for _, handler in compile_handlers(chosen, ("log",), config))

    return compiled(False), compiled(True)


def run_handlers(request: Request, handlers: Sequence[tuple[int, Handler]],
                 start: int = 0) -> Response | Awaitable[Response | None] | None:
    """Run compiled handlers from `start`; a Response, None, or an awaitable of those."""
    skip_phase = -1
    for i in range(start, len(handlers)):
        phase, handler = handlers[i]
        if phase == skip_phase:
            continue
        result = handler(request)
        if result is None:
            continue
        if result is DONE:
            skip_phase = phase
        elif isinstance(result, Response) or result is REROUTE:
            return result
        elif inspect.isawaitable(result):
            return _continue(request, handlers, i, result)
        else:
            raise TypeError(f"phase handler {handler!r} returned {result!r}")
    return None


async def _continue(request: Request, handlers: Sequence[tuple[int, Handler]], index: int,
                    pending: Awaitable[Any]) -> Any:
    result = await pending
    if isinstance(result, Response) or result is REROUTE:
        return result
    if result is not None and result is not DONE:
        raise TypeError(f"phase handler {handlers[index][1]!r} returned {result!r}")
    phase, index = handlers[index][0], index + 1
    while result is DONE and index < len(handlers) and handlers[index][0] == phase:
        index += 1
    rest = run_handlers(request, handlers, index)
    return await rest if inspect.isawaitable(rest) else rest
