"""HTTP/1.x over one connection: an `asyncio.Protocol` on httptools.

Theory of operation
-------------------
httptools calls back as bytes arrive: on_message_begin, on_url, on_header(s),
on_headers_complete, on_body, on_message_complete.  Limits are checked in those
callbacks (URI and header bytes: 414/431; body: 413) by raising `Reject`, which
httptools wraps; `data_received` unwraps it and answers with the status.

Routing happens when the headers are complete (server by Host, location by path),
so per-location limits apply to the body.  A request is dispatched when its message
is complete.  A location served by a pre-rendered response costs one join; other
requests run through the phase handlers (sync, or async as a task).

Responses leave in request order.  While `data_received` runs, responses are
collected in `self.out` and written once at its end (pipelined requests get one
write).  When a response is still being computed asynchronously, the ones after it
wait in `self.pending` until it is done.

Timeouts use one deadline per connection, checked by the engine's tick (nginx's
cached clock): header, body, keep-alive idle, send, and the idle grace of a
retiring worker.  A connection is closed by half-closing (write EOF) and then
discarding input until the peer closes or a short linger expires, so the last
response is not destroyed by a reset.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httptools

from ..stats import HIST
from .phases import Request
from .response import CLOSE, KEEP_ALIVE, HTTPError, Response, StaticResponse, error_body
from .router import Location, Router, Server, normalize_path

if TYPE_CHECKING:
    from .engine import HttpEngine

LINGER = 2.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Reject(Exception):
    """Raised inside parser callbacks to answer with an error status and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class _Slot:
    """A response place in the pipeline, filled when its (async) handler is done."""

    __slots__ = ("data", "keep_alive")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.keep_alive = False


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, engine: HttpEngine, servers: Sequence[Server]) -> None:
        self.engine = engine
        self.servers = servers
        self.default: Server = servers[0]
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.id = engine.next_connection_id()
        self.client = ""
        # connection state
        self.requests = 0
        self.deadline = 0.0
        self.timeout_kind = ""
        self.out: list[bytes] | None = None
        self.pending: collections.deque[_Slot] = collections.deque()
        self.in_request = False
        self.closing = False
        self.retiring = False
        self.reading_paused = False
        self.writing_paused = False
        limits = self.default.config
        self.max_header = limits["client_max_header_size"]
        self.keepalive_timeout = limits["keepalive_timeout"]
        # request state
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_size = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.max_body = 0
        self.server: Server = self.default
        self.location: Location | None = None
        self.captures: dict[str, str] = {}
        self.path = ""

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        engine = self.engine
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else "unix:"
        if len(engine.connections) >= engine.max_connections:
            engine.log.error("%d worker_connections are not enough, closing *%d",
                             engine.max_connections, self.id)
            self.closing = True
            self._write(self._error_response(503, "too many connections"))
            self._close()
            return
        engine.connections.add(self)
        engine.counters["accepted"] += 1
        self._set_deadline(self.default.config["client_header_timeout"], "header")
        if engine.retiring:
            self.retire()

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.connections.discard(self)
        self.closing = True
        self.deadline = 0.0

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._set_deadline(self.server.config["send_timeout"], "send")
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.deadline = 0.0
        if not self.pending:
            self._resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.out = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(Reject(400, "protocol upgrade is not supported"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, Reject):
                self.engine.log.exception("*%d parser callback failed", self.id)
                cause = Reject(500, "internal error")
            self._reject(cause)
        except httptools.HttpParserError as exc:
            self._reject(Reject(400, _parser_reason(exc)))
        out, self.out = self.out, None
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if self.closing:
            self._close()

    # -- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_request = True
        if self.timeout_kind != "header":
            self._set_deadline(self.default.config["client_header_timeout"], "header")

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_size += len(url)
        if self.header_size > self.max_header:
            raise Reject(414, "request URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.max_header:
            raise Reject(431, "request header fields too large")

    def on_headers_complete(self) -> None:
        host = expect = None
        length = 0
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"host":
                host = value
            elif lname == b"content-length":
                length = _content_length(value)
            elif lname == b"expect":
                expect = value
        self._route(host)
        if length > self.max_body:
            raise Reject(413, "request body larger than client_max_body_size")
        if expect is not None:
            self._expect(expect)
        self._set_deadline(self.server.config["client_body_timeout"], "body")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise Reject(413, "request body larger than client_max_body_size")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        self.deadline = 0.0
        self.requests += 1
        self.engine.counters["requests"] += 1
        loc = self.location
        keep_alive = self._keep_alive(loc)
        if loc is not None and loc.fast:
            head = self.parser.get_method() == b"HEAD"
            self._respond_bytes(loc.static.render(self.engine.date, self._conn_header(keep_alive),
                                                  head), keep_alive)
            stats = loc.stats  # served in microseconds: the first duration bucket
            stats[loc.static.status // 100 - 1] += 1
            stats[HIST] += 1
        else:
            self._dispatch(keep_alive)
        self._reset_request()

    # -- routing and dispatch ---------------------------------------------------

    def _route(self, host: bytes | None) -> None:
        url = self.url
        raw_path, _, _ = url.partition(b"?")
        if not raw_path.startswith(b"/"):
            raise Reject(400, "request target must be an absolute path")
        path = normalize_path(raw_path)
        if path is None:
            raise Reject(400, "invalid path")
        self.path = path
        server = self.server = Router.pick(self.servers, host) if len(self.servers) > 1 \
            else self.default
        self.location, self.captures = server.find(path)
        config = self.location.config if self.location else server.config
        self.max_body = config["client_max_body_size"]
        self.keepalive_timeout = config["keepalive_timeout"]

    def _expect(self, expect: bytes) -> None:
        if expect.lower() != b"100-continue":
            raise Reject(417, "unsupported Expect")
        if self.out is not None:
            self.out.append(CONTINUE)
        else:
            self.transport.write(CONTINUE)

    def _keep_alive(self, loc: Location | None) -> bool:
        limit = (loc.config if loc else self.server.config)["keepalive_requests"]
        return (self.parser.should_keep_alive() and not self.retiring
                and self.requests < limit)

    def _conn_header(self, keep_alive: bool) -> bytes:
        if not keep_alive:
            return CLOSE
        return KEEP_ALIVE if self.parser.get_http_version() == "1.0" else b""

    def _dispatch(self, keep_alive: bool) -> None:
        request = self._make_request(keep_alive)
        try:
            result = self.engine.handle(request)
        except HTTPError as exc:
            result = exc.response()
        except Exception:
            self.engine.log.exception("*%d unhandled error in a handler", self.id)
            result = Response(500, error_body(500), content_type="application/json")
        if isinstance(result, Response | StaticResponse):
            self._respond(request, result, keep_alive)
            return
        slot = _Slot()
        self.pending.append(slot)
        self._pause_reading()
        task = self.engine.loop.create_task(self._finish_async(request, result, slot, keep_alive))
        self.engine.tasks.add(task)
        task.add_done_callback(self.engine.tasks.discard)

    def _make_request(self, keep_alive: bool) -> Request:
        method = self.parser.get_method().decode("ascii")
        _, _, query = self.url.partition(b"?")
        request = Request(method, self.path, query.decode("latin-1"), self.url,
                          self.parser.get_http_version(), self.headers,
                          b"".join(self.body), keep_alive, self.id, self.client)
        request.server, request.location, request.captures = \
            self.server, self.location, self.captures
        request.process = self.engine.ctx
        return request

    async def _finish_async(self, request: Request, pending: Any, slot: _Slot,
                            keep_alive: bool) -> None:
        try:
            response = await pending
        except HTTPError as exc:
            response = exc.response()
        except Exception:
            self.engine.log.exception("*%d unhandled error in a handler", self.id)
            response = Response(500, error_body(500), content_type="application/json")
        if isinstance(response, Response):
            response = self.engine.output(request, response)
        slot.data = self._render(request, response, keep_alive)
        slot.keep_alive = keep_alive
        self.engine.finish(request, response)
        self._flush_pending()

    def _respond(self, request: Request, response: Response | StaticResponse,
                 keep_alive: bool) -> None:
        if isinstance(response, Response):
            response = self.engine.output(request, response)
        self._respond_bytes(self._render(request, response, keep_alive), keep_alive)
        self.engine.finish(request, response)

    def _render(self, request: Request, response: Response | StaticResponse,
                keep_alive: bool) -> bytes:
        if isinstance(response, StaticResponse):
            request.status = response.status
            self.engine.status_counts[response.status // 100] += 1
            return response.render(self.engine.date, self._conn_header(keep_alive),
                                   request.method == "HEAD")
        config = request.location.config if request.location else request.server.config
        head = response.render_head(self.engine.server_header(config), self.engine.date,
                                    self._conn_header(keep_alive), config["default_type"])
        request.status = response.status
        self.engine.status_counts[response.status // 100] += 1
        return head if request.method == "HEAD" else head + response.body

    def _respond_bytes(self, data: bytes, keep_alive: bool) -> None:
        if self.pending:
            slot = _Slot()
            slot.data, slot.keep_alive = data, keep_alive
            self.pending.append(slot)
            return
        self._write(data)
        self._after_response(keep_alive)

    def _flush_pending(self) -> None:
        while self.pending and self.pending[0].data is not None:
            slot = self.pending.popleft()
            self._write(slot.data)
            self._after_response(slot.keep_alive)
        if not self.pending:
            if self.closing:
                self._close()
            elif not self.writing_paused:
                self._resume_reading()

    def _after_response(self, keep_alive: bool) -> None:
        if not keep_alive:
            self.closing = True
            self.pending.clear()
            return
        if not self.pending:
            self.in_request = False
            self._set_deadline(self.keepalive_timeout, "keepalive")
            if self.retiring:
                self._set_deadline(self.engine.idle_grace, "retire")

    # -- writing, closing, timeouts ---------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.out is not None:
            self.out.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def _reject(self, exc: Reject) -> None:
        if exc.status >= 500:
            self.engine.log.error("*%d %s", self.id, exc.reason)
        else:
            self.engine.log.info("*%d client %s sent a bad request: %s", self.id, self.client,
                                 exc.reason)
        self.engine.router.unrouted.stats[exc.status // 100 - 1] += 1
        self.pending.clear()
        self.closing = True
        self._write(self._error_response(exc.status, exc.reason))

    def _error_response(self, status: int, reason: str) -> bytes:
        response = Response(status, error_body(status, reason), content_type="application/json")
        return response.render_head(self.engine.server_header(self.default.config),
                                    self.engine.date, CLOSE, "") + response.body

    def _close(self) -> None:
        """Half-close, then let the peer close; the engine tick ends a long linger."""
        transport = self.transport
        self.closing = True
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
            self._resume_reading()
            self._set_deadline(LINGER, "linger")
        else:
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _set_deadline(self, seconds: float, kind: str) -> None:
        self.deadline = self.engine.now + seconds
        self.timeout_kind = kind

    def expire(self) -> None:
        """Called by the engine tick when the deadline has passed."""
        kind = self.timeout_kind
        self.deadline = 0.0
        if kind in ("linger", "send"):
            self.transport.abort() if kind == "send" else self.transport.close()
        elif kind in ("header", "body") and self.in_request:
            self.engine.log.info("*%d client timed out reading the request %s", self.id, kind)
            self._reject(Reject(408, f"client timed out sending the request {kind}"))
            self._close()
        elif not self.in_request and not self.pending:
            self._close()

    def retire(self) -> None:
        """Graceful stop: finish what is in flight, close once idle past the grace."""
        self.retiring = True
        if not self.in_request and not self.pending and not self.closing:
            self._set_deadline(self.engine.idle_grace, "retire")

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()


def _content_length(value: bytes) -> int:
    if not value.strip().isdigit():
        raise Reject(400, "invalid Content-Length")
    return int(value)


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.replace("\r", " ").replace("\n", " ")[:120]
