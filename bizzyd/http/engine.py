"""The HTTP engine of one worker: compiled servers, the cached clock, connections.

`build_router` compiles the config's servers and locations once per config (the
master does it while validating, so a bad regex or an unknown content handler is a
config error, and workers inherit the compiled tables).  `HttpEngine` runs in a
worker: it serves the listening sockets, keeps the cached Date header and clock
(updated by a tick, which also enforces connection deadlines), dispatches requests
through the phases, and retires gracefully.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Protocol

from ..config.schema import ConfigError
from ..stats import BUCKETS, DURATION_US, HIST, bucket_of
from .build import fastpath
from .phases import (
    MAX_REROUTES,
    REROUTE,
    SERVER_PHASES,
    Record,
    Request,
    compile_handlers,
    compile_log_handlers,
    record_of,
    run_handlers,
)
from .response import Response, StaticResponse, error_body, server_header
from .router import Location, Router, Server, parse_match

if TYPE_CHECKING:
    from ..config.load import Config
    from ..module import ProcessContext

TICK = 1.0
RETIRING_TICK = 0.1
LOCATION_PHASES = ("rewrite", "preaccess", "access", "precontent", "content")
NOT_FOUND_BODY = error_body(404)
FIRST_BUCKET = BUCKETS[0]


def build_router(config: Config) -> Router:
    """Compile servers and locations; raises ConfigError for a bad location."""
    handlers = [h for m in config.modules for h in m.phase_handlers]
    content = {name: fn for m in config.modules for name, fn in m.content_handlers.items()}
    by_key: dict[tuple, list[Server]] = {}
    servers = []
    for i, scfg in enumerate(config.servers):
        server_handlers = compile_handlers(handlers, SERVER_PHASES, scfg)
        locations = [_location(config, (i, j), lcfg, handlers, server_handlers, content)
                     for j, lcfg in enumerate(scfg["locations"])]
        server = Server(scfg, locations, server_handlers)
        set_log_handlers(server, handlers, scfg)
        servers.append(server)
        for spec in scfg["listen"]:
            by_key.setdefault(spec.key, []).append(server)
    default = servers[0] if servers else Server(_empty_server(config), [], ())
    return Router(by_key, default, servers)


def _location(config: Config, index: tuple[int, int], lcfg: dict[str, Any],
              handlers: Sequence[Any], server_handlers: tuple, content: dict) -> Location:
    key = ("http", "servers", index[0], "locations", index[1])
    match = lcfg.get("location")
    if match is None:
        raise ConfigError("a location needs `location:` (its match)", key, config.mark(key))
    try:
        kind, pattern, regex = parse_match(match)
    except ValueError as exc:
        raise ConfigError(str(exc), key + ("location",),
                          config.mark(key + ("location",))) from None
    loc = Location(match, lcfg, kind, pattern, regex)
    loc.handlers = server_handlers + compile_handlers(handlers, LOCATION_PHASES, lcfg)
    loc.location_start = len(server_handlers)
    set_log_handlers(loc, handlers, lcfg)
    loc.header_filters = compile_filters(config, "header_filters", lcfg)
    loc.body_filters = compile_filters(config, "body_filters", lcfg)
    if lcfg["return"] is not None:
        loc.static = _static(lcfg)
    elif lcfg.get("content"):
        if lcfg["content"] not in content:
            known = ", ".join(sorted(content)) or "none loaded"
            raise ConfigError(f"unknown content handler {lcfg['content']!r} (known: {known})",
                              key + ("content",), config.mark(key + ("content",)))
        loc.content = content[lcfg["content"]]
    loc.seal()
    return loc


def set_log_handlers(scope: Location | Server, handlers: Sequence[Any],
                     config: Mapping[str, Any]) -> None:
    """A location's or a server's log phase: its handlers, by what they are given."""
    scope.log_requests, scope.log_records = compile_log_handlers(handlers, config)
    scope.log_handlers = bool(scope.log_requests or scope.log_records)


def compile_filters(config: Config, kind: str, lcfg: dict[str, Any]) -> tuple:
    """A location's header or body filter chain, in ascending `order`."""
    filters = sorted((f for m in config.modules for f in getattr(m, kind)),
                     key=lambda f: f.order)
    return tuple(f.filter for f in filters if f.applies is None or f.applies(lcfg))


def _static(lcfg: dict[str, Any]) -> StaticResponse:
    spec = lcfg["return"]
    header = server_header(lcfg["server_tokens"])
    if 300 <= spec.status < 400 and spec.text:
        return StaticResponse(spec.status, b"", lcfg["default_type"], header,
                              [("Location", spec.text)])
    body = (spec.text or "").encode()
    return StaticResponse(spec.status, body, lcfg["default_type"], header)


def _empty_server(config: Config) -> dict[str, Any]:
    return {**config["http"], "server_name": ["_"], "listen": []}


class Connection(Protocol):
    """What the engine needs of a client connection (`protocol.HttpProtocol`): its
    deadline and pipeline state, for the tick and the worker's status row."""

    id: int
    deadline: float
    in_request: bool
    pending: list[Any]
    sender: asyncio.Task[None] | None
    at_boundary: bool
    flow: Any

    def expire(self) -> None: ...

    def check_peer(self) -> None: ...

    def retire(self) -> None: ...

    def abort(self) -> None: ...


class HttpEngine:
    """Serves HTTP in one worker process."""

    def __init__(self, ctx: ProcessContext, router: Router,
                 protocol: Callable[[HttpEngine, Sequence[Server]], Connection]) -> None:
        self.ctx = ctx
        self.protocol = protocol
        self.log = ctx.log
        self.loop: asyncio.AbstractEventLoop = ctx.loop  # type: ignore[assignment]
        self.router = router
        config = ctx.config
        self.max_connections = config["worker_connections"]
        self.idle_grace = config["worker_shutdown_idle_grace"]
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.counters = {"accepted": 0, "dropped": 0}
        # `now` and `date` (below) as the fast path reads them; both set by _tick only
        self.clock = fastpath.Clock()
        self.retiring = False
        self.now = self.clock.now = self.loop.time()
        self.log_queue: dict[tuple, list[Record]] = {}
        self.date = b""
        self._headers = {True: server_header(True), False: server_header(False)}
        self._servers: list[asyncio.AbstractServer] = []
        self._conn_seq = 0
        self._tick_handle: asyncio.TimerHandle | None = None
        self.stats_zone = ctx.zones.get("stats")
        self.processing: set[int] = set()  # connection ids with a request in a handler
        ctx.flush_stats = self.flush_stats
        ctx.router = router
        self.locations = router.locations()
        self.pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------

    async def start(self, listeners: Sequence[tuple[tuple, socket.socket]],
                    backlogs: dict[tuple, int]) -> None:
        self._tick()
        for key, sock in listeners:
            servers = self.router.servers_for(key)
            def factory(servers: Sequence[Server] = servers) -> Connection:
                return self.protocol(self, servers)
            backlog = backlogs.get(key, 511)
            if sock.family == socket.AF_UNIX:
                srv = await self.loop.create_unix_server(factory, sock=sock, backlog=backlog)
            else:
                srv = await self.loop.create_server(factory, sock=sock, backlog=backlog)
            self._servers.append(srv)

    async def retire(self, timeout: float) -> None:
        """Stop accepting, finish in-flight requests, close idle connections."""
        self.retiring = True
        self.close_listeners()
        for conn in list(self.connections):
            conn.retire()
        self._reschedule_tick(RETIRING_TICK)
        deadline = self.loop.time() + timeout
        while (self.connections or self.tasks) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.connections:
            self.log.warning("worker_shutdown_timeout: closing %d connection(s)",
                             len(self.connections))
        self.abort_all()

    def close_listeners(self) -> None:
        for srv in self._servers:
            srv.close()
        self._servers = []

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()
        for task in list(self.tasks):
            task.cancel()
        if self._tick_handle:
            self._tick_handle.cancel()

    # -- the cached clock and deadlines ----------------------------------------

    def _tick(self) -> None:
        self.now = self.clock.now = now = self.loop.time()
        self.date = self.clock.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        for conn in [c for c in self.connections if c.deadline and c.deadline <= now]:
            conn.expire()
        for conn in [c for c in self.connections if c.sender is not None and c.at_boundary]:
            conn.check_peer()
        self.flush_stats()
        self._tick_handle = self.loop.call_later(RETIRING_TICK if self.retiring else TICK,
                                                 self._tick)

    def flush_stats(self) -> None:
        """Copy this worker's counters into its row of the shared `stats` zone."""
        zone = self.stats_zone
        if zone is None:
            return
        reading = writing = waiting = 0
        busy = self.processing
        for conn in self.connections:
            if conn.id in busy or conn.pending or conn.sender is not None \
                    or conn.flow.write_paused:
                writing += 1  # being processed or written, as nginx counts it
            elif conn.in_request:
                reading += 1  # still receiving the request
            else:
                waiting += 1
        accepted = self.counters["accepted"]
        values = [self.pid, len(self.connections), reading, writing, waiting, accepted,
                  accepted - self.counters["dropped"]]
        for loc in self.locations:
            values += loc.stats
        zone.write(self.ctx.stats_row, values)

    def _reschedule_tick(self, delay: float) -> None:
        if self._tick_handle:
            self._tick_handle.cancel()
        self._tick_handle = self.loop.call_later(delay, self._tick)

    def next_connection_id(self) -> int:
        self._conn_seq += 1
        return self._conn_seq

    def server_header(self, config: Any) -> bytes:
        return self._headers[bool(config["server_tokens"])]

    # -- requests --------------------------------------------------------------

    def handle(self, request: Request, reroutes: int = 0) -> Any:
        """Run the phases for a request: a response, or an awaitable of one.

        After a reroute only the location phases run again (as nginx's `last`).
        """
        loc = request.location
        if not reroutes:
            request.start = self.loop.time()
            self.processing.add(request.conn_id)
        handlers = loc.handlers if loc is not None else request.server.handlers
        start = loc.location_start if loc is not None and reroutes else 0
        result = run_handlers(request, handlers, start) if len(handlers) > start else None
        if result is None:
            return self.content(request)
        if isinstance(result, Response):
            return result
        if result is REROUTE:
            return self._reroute(request, reroutes)
        return self._then_content(request, result, reroutes)

    def _reroute(self, request: Request, reroutes: int) -> Any:
        if reroutes >= MAX_REROUTES:
            self.log.error("*%d rewrite or internal redirection cycle on %s",
                           request.conn_id, request.path)
            return Response(500, error_body(500, "rewrite cycle"),
                            content_type="application/json")
        request.location, request.captures = request.server.find(request.path)
        return self.handle(request, reroutes + 1)

    async def _then_content(self, request: Request, pending: Awaitable[Any],
                            reroutes: int) -> Any:
        result = await pending
        if result is None:
            result = self.content(request)
        elif result is REROUTE:
            result = self._reroute(request, reroutes)
        return await result if inspect.isawaitable(result) else result

    @staticmethod
    def content(request: Request) -> Any:
        loc = request.location
        if loc is not None and loc.static is not None:
            return loc.static.to_response() if loc.filtered else loc.static
        if loc is not None and loc.content is not None:
            return loc.content(request)
        return Response(404, NOT_FOUND_BODY, content_type="application/json")

    def output(self, request: Request, response: Response) -> Response:
        """Run the location's header filters, then its body filters."""
        loc = request.location
        if loc is None or not loc.filtered:
            return response
        for header_filter in loc.header_filters:
            response = header_filter(request, response) or response
        if not loc.body_filters or response.file is not None:
            return response
        if response.stream is not None:
            response.stream = self._filter_stream(request, response, response.stream,
                                                  loc.body_filters)
            return response
        body = response.body
        for body_filter in loc.body_filters:
            body = body_filter(request, response, body, True)
        response.body = body
        return response

    @staticmethod
    async def _filter_stream(request: Request, response: Response,
                             source: AsyncIterator[bytes], filters: tuple) -> AsyncIterator[bytes]:
        async for chunk in source:
            for body_filter in filters:
                chunk = body_filter(request, response, chunk, False)
            if chunk:
                yield chunk
        last = b""
        for body_filter in filters:
            last = body_filter(request, response, last, True)
        if last:
            yield last

    def finish(self, request: Request, response: Any) -> None:
        """Count the request, then the log phase (after the response is queued)."""
        self.processing.discard(request.conn_id)
        loc = request.location
        stats = (loc or self.router.unrouted).stats
        seconds = self.loop.time() - request.start
        stats[response.status // 100 - 1] += 1
        stats[HIST if seconds <= FIRST_BUCKET else bucket_of(seconds)] += 1
        stats[DURATION_US] += int(seconds * 1_000_000)
        scope = loc if loc is not None else request.server
        if scope.log_records:
            self.queue_record(scope.log_records, record_of(request, response, seconds))
        if scope.log_requests:
            request.response = response
            self.log_phase(scope.log_requests, request)

    def log_phase(self, handlers: tuple, request: Request) -> None:
        """Run the log handlers that take the Request (`status`, `response` set)."""
        for handler in handlers:
            try:
                handler(request)
            except Exception:
                self.log.exception("*%d log phase handler %r failed", request.conn_id,
                                   handler)

    def queue_record(self, handlers: tuple, record: Record) -> None:
        """A record for the log handlers that take records: they are given this loop
        iteration's records in one call, once the iteration's I/O is done."""
        queue = self.log_queue
        if not queue:
            self.loop.call_soon(self.drain_log)
        records = queue.get(handlers)
        if records is None:
            records = queue[handlers] = []
        records.append(record)

    def drain_log(self) -> None:
        """Hand the queued records to their handlers (also called before exit_worker)."""
        queue, self.log_queue = self.log_queue, {}
        for handlers, records in queue.items():
            for handler in handlers:
                try:
                    handler(records)
                except Exception:
                    self.log.exception("log phase handler %r failed on %d record(s)",
                                       handler, len(records))

