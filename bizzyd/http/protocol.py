"""HTTP/1.x over one connection: an `asyncio.Protocol` on httptools.

Theory of operation
-------------------
Code layout.  What every request runs through (`data_received`, the parser callbacks
up to `on_message_complete`, the route memo, pre-rendered answers) is in `FastPath`
(fastpath.py), this class's base, which `make` compiles with Cython (build.py says
which build runs); the rest is here.

Parsing.  httptools (llhttp, strict mode) calls back as bytes arrive:
on_message_begin, on_url, on_header(s), on_headers_complete, on_body (decoded
chunks), on_chunk_header, on_message_complete.  Limits are checked in those
callbacks (URI and header bytes: 414/431; body: 413) by raising `Reject`, which
httptools wraps; `data_received` unwraps it and answers with the status.

Framing is strict, because a front proxy that reads a request differently from us
is how requests are smuggled.  llhttp already rejects: Content-Length together with
Transfer-Encoding, duplicate or non-decimal Content-Length, a Transfer-Encoding
whose last coding is not chunked, bad chunk sizes and extensions, bare CR or LF,
obs-fold, whitespace before the colon, CTLs and NUL in names and values.  We add
(`on_headers_complete`, `_route`): HTTP/1.1 without exactly one Host, an invalid
Host, Transfer-Encoding other than exactly `chunked` (one header, one coding) or in
an HTTP/1.0 request, versions other than 1.0/1.1 (505; llhttp accepts 0.9 and 2.0),
RTSP/ICE request lines (llhttp reports them as 1.0), fragments in the target, a
target that is neither origin-form nor an absolute http(s) URI (no CONNECT, no
`OPTIONS *`), and chunk framing (size lines, extensions) above MAX_CHUNK_FRAMING
bytes per chunk.  Every rejection answers 4xx with a JSON `reason`, then closes.
Trailer fields are counted against the header limit and dropped.

Routing happens when the headers are complete (server by Host, location by path),
so per-location limits apply to the body.  A request is dispatched when its message
is complete.  A location served by a pre-rendered response costs one join; other
requests run through the phase handlers (sync, or async as a task).

Responses leave in request order.  While `data_received` runs, responses are
collected in `self.out` and written once at its end (pipelined requests get one
write).  A response that is not ready (async handler) or whose body is still being
sent (a stream, a file) holds a `_Slot` in `self.pending`; everything answered
after it waits there, and reading is paused until the pipeline is empty again.
A stream is sent chunked on HTTP/1.1 (close-delimited on 1.0), a file in pieces;
both await `flow.drain()` when the transport pauses writing.  A retiring worker
ends a stream at the next chunk boundary.

Once the last request of a connection has been read (Connection: close, HTTP/1.0,
keepalive_requests, an upgrade we decline, a rejection), input is discarded.

Timeouts use one deadline per connection, set from and checked by the engine's
tick (nginx's cached clock; so a timeout fires up to one tick early or late, and no
timer is created per request); `timeout_kind` names what the connection waits for: the request
header (from its first byte), the body (between two reads), keep-alive idle, a
send (while the transport is paused for writing), the idle grace of a retiring
worker, or the linger of a closing connection.  While responses are pending no
read deadline runs.  A connection is closed by half-closing (write EOF) and then
discarding input until the peer closes or a short linger expires, so the last
response is not destroyed by a reset.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ..stats import HIST
from .build import fastpath
from .flow import FlowControl
from .phases import Request, body_bytes
from .response import (
    CLOSE,
    NO_BODY_STATUSES,
    FileBody,
    HTTPError,
    Response,
    StaticResponse,
    error_body,
)
from .router import Location, Router, Server, normalize_path

if TYPE_CHECKING:
    from .engine import HttpEngine

Reject, Discard = fastpath.Reject, fastpath.Discard

LINGER = 2.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
FILE_PIECE = 256 * 1024
# Bytes of chunked framing (size line with extensions, CRLFs) allowed per chunk,
# on average over a request body; a longer chunk-size line is rejected.
MAX_CHUNK_FRAMING = 1024
_time = time.time
_RESPONSES = (Response, StaticResponse)
_SLASH, _HASH, _QUESTION = 0x2F, 0x23, 0x3F
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
# RFC 3986 3.2.2-3.2.3: IP-literal / IPv4address / reg-name, then an optional port
_HOST = re.compile(rb"(?:\[(?:([0-9A-Fa-f:.]+)|v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+)\]"
                   rb"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::([0-9]*))?").fullmatch
# Request targets that are neither origin-form nor absolute-form, by their look.
_TARGET_ERRORS = (
    (b"*", "asterisk-form targets (OPTIONS *) are not supported"),
    (b"", "request target must be an absolute path or an http(s) URI"),
)


class _Slot:
    """A place in the response pipeline.

    `data` is None until the (async) handler is done; then the bytes to write (the
    whole response, or the head of one whose `body`, a stream or a file, follows).
    """

    __slots__ = ("data", "keep_alive", "final", "body", "framed", "request", "response")

    def __init__(self, data: bytes | None = None, keep_alive: bool = True,
                 final: bool = True) -> None:
        self.data = data
        self.keep_alive = keep_alive
        self.final = final  # False for an interim 100 Continue
        self.body: AsyncIterator[bytes] | FileBody | None = None
        self.framed = False  # chunked encoding for a stream
        self.request: Request | None = None
        self.response: Response | None = None


class HttpProtocol(fastpath.FastPath, asyncio.Protocol):
    """One client connection (what every request runs through: FastPath)."""

    __slots__ = (
        "servers", "flow", "id", "client", "body_timeout", "header_timeout", "sender",
        "at_boundary", "lingering", "peer_eof", "good_host", "chunks",
    )

    def __init__(self, engine: HttpEngine, servers: Sequence[Server]) -> None:
        super().__init__(engine, servers[0])
        self.servers = servers
        self.flow: FlowControl = None  # type: ignore[assignment]  # set in connection_made
        self.id = engine.next_connection_id()
        self.client = ""
        limits = self.default.config
        self.header_timeout = limits["client_header_timeout"]
        self.body_timeout = limits["client_body_timeout"]
        self.sender: asyncio.Task[None] | None = None
        self.at_boundary = False  # the sender waits for the stream's next chunk
        self.lingering = False
        self.peer_eof = False
        self.good_host = b""  # the last Host value found valid
        self.chunks = 0

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.transport_write = transport.write
        self.flow = FlowControl(transport)
        engine = self.engine
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else "unix:"
        counters = engine.counters
        counters["accepted"] += 1
        if len(engine.connections) >= engine.max_connections:
            engine.log.error("%d worker_connections are not enough, closing *%d",
                             engine.max_connections, self.id)
            counters["dropped"] += 1  # accepted, not handled (stub_status, as nginx's)
            self.closing = self.discarding = True
            transport.write(self._error_response(503, "too many connections"))
            transport.close()  # not tracked by the engine's tick: no linger
            return
        engine.connections.add(self)
        self._set_deadline(self.default.config["client_header_timeout"], "header")
        if engine.retiring:
            self.retire()

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.connections.discard(self)
        self.closing = self.discarding = True
        self.deadline = 0.0
        if self.flow is not None:
            self.flow.connection_lost()
        if self.sender is not None and self.at_boundary:
            self.sender.cancel()  # a stream waiting for its next chunk: nobody listens

    def eof_received(self) -> bool:
        """The peer will send no more: answer what it asked, then close.  A stream
        (Server-Sent Events) is not answered to the end: a client that closed its side
        during one has gone away (nginx's 499), so it ends at its next chunk boundary."""
        if self.in_request and not self.discarding:
            self._ended_early()
        self.discarding = self.peer_eof = True
        if self.sender is not None and not isinstance(self.pending[0].body, FileBody):
            self.engine.log.info("*%d client closed the connection during a stream", self.id)
            self.closing = True
            if self.at_boundary:
                self.transport.close()
                self.sender.cancel()
            return True
        if self.pending and not self.closing:
            self.closing = True
            return True  # keep the transport open for the pending responses
        return False

    def _ended_early(self) -> None:
        """The client closed its side inside a request.  A location answered by a
        fixed response does not need the body: it is answered (nginx answers `return`
        before reading the body).  Otherwise the request is refused with 400 (and so
        logged), for a client that half-closed may still read."""
        loc = self.location
        if self.path and loc is not None and loc.fast:
            self.out = []
            self.in_request = False
            self.must_close = True
            self.on_message_complete()
            out, self.out = self.out, None
            self.transport.write(b"".join(out))
            return
        part = "body" if self.path else "header"
        self._reject(Reject(400, f"the client closed the connection inside the request {part}"))

    def check_peer(self) -> None:
        """Called by the engine tick for a stream waiting for its next chunk: reading
        is paused while a response is owed, so look for the client's FIN with a peek
        (as nginx's test_reading does) and end the stream if it came."""
        transport = self.transport
        if transport.is_closing():
            return
        sock = socket.socket(fileno=transport.get_extra_info("socket").fileno())
        try:
            gone = not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            gone = False  # nothing to read: the client is still there
        except OSError:
            gone = True  # reset
        finally:
            sock.detach()
        if gone and not self.peer_eof:
            self.eof_received()

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self.flow.pause_reading()
        self._set_deadline(self.server.config["send_timeout"], "send")

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self.timeout_kind == "send":
            self._rearm()
        if not self.pending:
            self.flow.resume_reading()

    def _request_pending(self) -> None:
        """A request is incomplete at the end of a read: its header deadline runs from
        the read in which it began (the clock is the engine's, cached per tick).

        httptools holds a header line until it ends, so the header limits are also
        checked on the bytes read: those of every read after the one in which the
        request began (that one is bounded by the read size)."""
        if self.chunked_body:
            self._check_framing()
        if self.path:
            return
        if self.head_read < 0:  # the request began in this read
            self.head_read = 0
        else:
            self.head_read += len(self.read)
            if self.head_read > self.max_header:
                self._reject(Reject(431, "request header fields too large"))
                return
        if self.timeout_kind != "header":
            self.deadline = self.engine.now + self.header_timeout
            self.timeout_kind = "header"

    def _callback_failed(self, cause: BaseException | None) -> None:
        if isinstance(cause, Discard):
            return
        if not isinstance(cause, Reject):
            self.engine.log.error("*%d parser callback failed", self.id, exc_info=cause)
            cause = Reject(500, "internal error")
        self._reject(cause)

    # -- httptools callbacks ---------------------------------------------------

    def on_chunk_header(self) -> None:
        self.chunks += 1

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise Reject(413, "request body larger than client_max_body_size")
        self.body.append(body)  # type: ignore[union-attr]
        self.deadline = self.engine.now + self.body_timeout
        self.read = b""  # only the header section needs the raw bytes

    def _respond_static(self, loc: Location, static: StaticResponse, keep_alive: bool,
                        method: bytes) -> None:
        self._respond_bytes(static.render(self.engine.date, self._conn_header(keep_alive),
                                          method == b"HEAD"), keep_alive)
        stats = loc.stats  # served in microseconds: the first duration bucket
        stats[static.status_index] += 1
        stats[HIST] += 1
        if loc.log_handlers:
            self._log_answered(loc, static, keep_alive)

    def _log_answered(self, scope: Location | Server, response: Response | StaticResponse,
                      keep_alive: bool) -> None:
        """The log phase of a request answered without the phases (pre-rendered, quick
        or rejected): what its log handlers take is built only now, a record (a tuple)
        or a Request."""
        if scope.log_records:
            raw = self.parser_method()
            record = (self.client, _METHODS.get(raw) or raw.decode("ascii"), self.url,
                      self.path, self.version, self.headers, response.status,
                      body_bytes(response, raw == b"HEAD"), self.id, self.server,
                      self.location, 0.0, _time(), self.engine.ctx)
            self.engine.queue_record(scope.log_records, record)
        if scope.log_requests:
            request = self._make_request(keep_alive)
            request.status, request.response = response.status, response
            request.start = self.engine.loop.time()
            self.engine.log_phase(scope.log_requests, request)

    # -- request checks (what llhttp lets through) -------------------------------

    def _start_chunked(self, te: bytes, version: str) -> None:
        if version == "1.0":
            raise Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te.strip(b" \t").lower() != b"chunked":
            raise Reject(400, "Transfer-Encoding other than chunked is not supported")
        self.chunked_body = True
        self.chunks = 0
        self.header_count = len(self.headers)
        # Framing bytes are counted from here (see _check_framing).  In this read the
        # body starts after the header section; when no other request ended earlier
        # in this read, the header section is about `header_size` bytes of it.
        first = not self.out and not self.pending
        self.wire = len(self.read) - self.header_size if first else 0

    def _check_framing(self) -> None:
        """Reject a chunked body whose framing outgrows MAX_CHUNK_FRAMING per chunk.

        `wire` counts the bytes read since the body started (a lower bound: a read in
        which the body starts after another request is not counted), so the
        difference to the decoded bytes is the framing: size lines, extensions and
        CRLFs.  Checked at the end of a read while the body is still incomplete.
        """
        trailers = sum(len(n) + len(v) + 4 for n, v in self.headers[self.header_count:])
        framing = self.wire - self.body_size - trailers
        if framing > (self.chunks + 1) * MAX_CHUNK_FRAMING:
            self._reject(Reject(400, "chunk-size line too long"))

    def _find_route(self, raw: bytes, host: bytes | None) -> tuple[Any, ...]:
        """Check the target and Host, pick the server and location (then remembered)."""
        url, raw_host = raw, host
        if url[0] != _SLASH:  # llhttp never reports an empty target
            host, url = _absolute_form(url)
            self.url = url  # the origin-form part, as nginx's $request_uri
        if _HASH in url:  # (an int `in` bytes is a memchr; b"#" in url is slower)
            raise Reject(400, "fragment in the request target")
        if host is not None and host != self.good_host:
            _check_host(host)
            self.good_host = host
        path = normalize_path(url.partition(b"?")[0])
        if path is None:
            raise Reject(400, "invalid path")
        self.path = path
        server = self.server = Router.pick(self.servers, host) if len(self.servers) > 1 \
            else self.default
        self.location, self.captures = server.find(path)
        config = self.location.config if self.location else server.config
        loc = self.location
        static = loc.static if loc is not None and loc.fast else None
        self.routed = (raw, raw_host, url, path, server, loc, self.captures, config,
                       config["client_max_body_size"], config["keepalive_timeout"],
                       config["keepalive_requests"], static,
                       loc.stats if static is not None else None,
                       static.status_index if static is not None else 0,
                       static is not None and loc.log_handlers)
        return self.routed

    def _announce_body(self, config: Any, version: str, length: int, te: bytes | None,
                       expect: bytes | None) -> None:
        """The head of a request with a body (or an Expect) is complete: framing,
        the body timeout, and the answer to Expect."""
        if te is not None:
            self._start_chunked(te, version)
        if length or te is not None:
            self.body = []
            self.body_timeout = config["client_body_timeout"]
            self._set_deadline(self.body_timeout, "body")
            if expect is not None and version == "1.1":
                self._expect(expect)
        elif expect is not None and version == "1.1" and expect.lower() != b"100-continue":
            raise Reject(417, "unsupported Expect")

    def _expect(self, expect: bytes) -> None:
        if expect.lower() != b"100-continue":
            raise Reject(417, "unsupported Expect")
        if self.pending:  # earlier responses first
            self._queue(_Slot(CONTINUE, final=False))
        else:
            self._write(CONTINUE)

    # -- dispatch ----------------------------------------------------------------

    def _dispatch(self, keep_alive: bool) -> None:
        request = self._make_request(keep_alive)
        try:
            result = self.engine.handle(request)
        except HTTPError as exc:
            result = exc.response()
        except Exception:
            self.engine.log.exception("*%d unhandled error in a handler", self.id)
            result = _error(500)
        if isinstance(result, _RESPONSES):
            self._respond(request, result, keep_alive)
            return
        slot = _Slot()
        self._queue(slot)
        self._spawn(self._finish_async(request, result, slot, keep_alive))

    def _make_request(self, keep_alive: bool) -> Request:
        raw = self.parser_method()
        method = _METHODS.get(raw) or raw.decode("ascii")
        url = self.url
        query = url.partition(b"?")[2].decode("latin-1") if _QUESTION in url else ""
        request = Request(method, self.path, query, url, self.version, self.headers,
                          b"".join(self.body) if self.body else b"", keep_alive,
                          self.id, self.client)
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
            response = _error(500)
        if not isinstance(response, Response | StaticResponse):
            self.engine.log.error("*%d handler returned %r, not a Response", self.id, response)
            response = _error(500)
        try:
            self._respond(request, response, keep_alive, slot)
        except Exception:
            self.engine.log.exception("*%d cannot render the response", self.id)
            self._respond(request, _error(500), keep_alive, slot)

    # -- responses -----------------------------------------------------------------

    def _respond(self, request: Request, response: Response | StaticResponse,
                 keep_alive: bool, slot: _Slot | None = None) -> None:
        """Render a response into the pipeline (into its slot, if it holds one)."""
        if isinstance(response, Response):
            response = self.engine.output(request, response)
            if response.stream is not None or response.file is not None:
                self._respond_with_body(request, response, keep_alive, slot)
                return
        data = self._render(request, response, keep_alive)
        if slot is None:
            self._respond_bytes(data, keep_alive)
        else:
            slot.data, slot.keep_alive = data, keep_alive
            self._flush_pending()
        self.engine.finish(request, response)

    def _render(self, request: Request, response: Response | StaticResponse,
                keep_alive: bool) -> bytes:
        if isinstance(response, StaticResponse):
            request.status = response.status
            return response.render(self.engine.date, self._conn_header(keep_alive),
                                   request.method == "HEAD")
        head = self._head(request, response, keep_alive)
        return head if request.method == "HEAD" else head + response.body

    def _head(self, request: Request, response: Response, keep_alive: bool) -> bytes:
        config = request.location.config if request.location else request.server.config
        request.status = response.status
        return response.render_head(self.engine.server_header(config), self.engine.date,
                                    self._conn_header(keep_alive), config["default_type"])

    def _respond_with_body(self, request: Request, response: Response, keep_alive: bool,
                           slot: _Slot | None) -> None:
        """A streamed or file body: the head now, the body by a sender task."""
        stream = response.stream
        no_body = request.method == "HEAD" or response.status in NO_BODY_STATUSES
        framed = stream is not None and request.version == "1.1" \
            and response.status not in NO_BODY_STATUSES
        if stream is not None and request.version != "1.1":
            keep_alive = False  # close-delimited
        head = self._head(request, response, keep_alive)
        if stream is not None and not framed:
            head = head.replace(TE_CHUNKED, b"", 1)
        if no_body:
            self._drop_body(stream if stream is not None else response.file)
            if slot is None:
                self._respond_bytes(head, keep_alive)
            else:
                slot.data, slot.keep_alive = head, keep_alive
                self._flush_pending()
            self.engine.finish(request, response)
            return
        if slot is None:
            slot = _Slot()
            self._queue(slot)
        slot.data, slot.keep_alive, slot.framed = head, keep_alive, framed
        slot.body = stream if stream is not None else response.file
        slot.request, slot.response = request, response
        self._flush_pending()

    def _respond_bytes(self, data: bytes, keep_alive: bool) -> None:
        if self.pending:
            self._queue(_Slot(data, keep_alive))
            return
        if self.out is not None:
            self.out.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)
        self._after_response(keep_alive)

    def _queue(self, slot: _Slot) -> None:
        self.pending.append(slot)
        self.flow.pause_reading()

    def _flush_pending(self) -> None:
        pending = self.pending
        while pending:
            slot = pending[0]
            if slot.data is None or self.sender is not None:
                return
            self._write(slot.data)
            if slot.body is not None:
                self.sender = self._spawn(self._send_body(slot))
                return
            pending.pop(0)
            if slot.final:
                self._after_response(slot.keep_alive)
        self._pipeline_empty()

    def _pipeline_empty(self) -> None:
        if self.closing:
            self._close()
            return
        self._rearm()
        if not self.flow.write_paused:
            self.flow.resume_reading()

    def _after_response(self, keep_alive: bool) -> None:
        if not keep_alive:
            self.closing = self.discarding = True
            return
        if not self.pending and not self.in_request:
            if self.retiring:
                self._set_deadline(self.engine.idle_grace, "retire")
            else:
                self.deadline = self.engine.now + self.keepalive_timeout
                self.timeout_kind = "keepalive"

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.engine.loop.create_task(coro)
        self.engine.tasks.add(task)
        task.add_done_callback(self.engine.tasks.discard)
        return task

    # -- streamed and file bodies ---------------------------------------------------

    async def _send_body(self, slot: _Slot) -> None:
        """Send the body that follows a head, then let the pipeline go on."""
        try:
            if isinstance(slot.body, FileBody):
                ok = await self._send_file(slot.body)
            else:
                ok = await self._send_stream(slot)
        finally:
            self.sender = None
            self.engine.finish(slot.request, slot.response)
        self.pending.pop(0)
        if not ok:  # the head has gone out: no status can be sent any more
            self.pending.clear()
            self.closing = self.discarding = True
            self.transport.abort()
            return
        self._after_response(slot.keep_alive)
        self._flush_pending()

    async def _send_stream(self, slot: _Slot) -> bool:
        stream: Any = slot.body
        transport, framed = self.transport, slot.framed
        try:
            while not self.retiring:
                if self.peer_eof:
                    return False  # the client has gone (eof_received)
                self.at_boundary = True
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if not (self.retiring or transport.is_closing()):
                        raise
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    break
                finally:
                    self.at_boundary = False
                if transport.is_closing():
                    return False
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if framed else chunk)
                    if self.flow.write_paused:
                        await self.flow.drain()
        except Exception:
            self.engine.log.exception("*%d response stream failed", self.id)
            return False
        finally:
            await _aclose(stream, self.engine.log)
        if transport.is_closing():
            return False
        if self.retiring:
            slot.keep_alive = False
        if framed:
            transport.write(LAST_CHUNK)
        return True

    async def _send_file(self, body: FileBody) -> bool:
        file, offset, count = body.file, body.offset, body.count
        transport = self.transport
        try:
            try:
                await self.engine.loop.sendfile(transport, file, offset, count)
                return True
            except NotImplementedError:
                pass  # uvloop has no loop.sendfile: copy through the transport
            file.seek(offset)
            while count > 0:
                data = file.read(min(count, FILE_PIECE))
                if not data:
                    raise EOFError(f"the file ended {count} bytes early")
                count -= len(data)
                if transport.is_closing():
                    return False
                transport.write(data)
                if self.flow.write_paused:
                    await self.flow.drain()
            return True
        except Exception:
            self.engine.log.exception("*%d sending a file failed", self.id)
            return False
        finally:
            file.close()

    def _drop_body(self, body: Any) -> None:
        """A body that will not be sent (HEAD, 204, 304): release it."""
        if isinstance(body, FileBody):
            body.file.close()
        elif hasattr(body, "aclose"):
            self._spawn(_aclose(body, self.engine.log))

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
        self.discarding = True
        response = _error(exc.status, exc.reason)
        data = self._render_error(response)
        self._log_reject(response)
        if self.pending:  # after the responses still owed
            self._queue(_Slot(data, keep_alive=False))
            return
        self._write(data)
        self.closing = True

    def _log_reject(self, response: Response) -> None:
        """The log phase of a rejected request (nginx logs its 400s too), with what was
        read of it: the location's handlers if it was routed, else the server's."""
        scope = self.location or self.server
        if scope.log_handlers and self.in_request:
            self._log_answered(scope, response, False)

    def _error_response(self, status: int, reason: str) -> bytes:
        return self._render_error(_error(status, reason))

    def _render_error(self, response: Response) -> bytes:
        return response.render_head(self.engine.server_header(self.default.config),
                                    self.engine.date, CLOSE, "") + response.body

    def _close(self) -> None:
        """Half-close, then let the peer close; the engine tick ends a long linger."""
        transport = self.transport
        self.closing = self.discarding = True
        if self.out is not None or self.lingering:
            return  # data_received closes after writing what it collected
        if transport is None or transport.is_closing():
            return
        if self.peer_eof or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self.lingering = True
        self.flow.resume_reading()
        self._set_deadline(LINGER, "linger")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _set_deadline(self, seconds: float, kind: str) -> None:
        self.deadline = self.engine.now + seconds
        self.timeout_kind = kind

    def _rearm(self) -> None:
        """Set the deadline for what the connection waits for now (after a pause)."""
        if self.flow.write_paused:
            self._set_deadline(self.server.config["send_timeout"], "send")
        elif self.lingering:
            self._set_deadline(LINGER, "linger")
        elif self.pending:
            self.deadline = 0.0  # a handler or a body sender is at work
        elif self.in_request and self.path:  # routed: the headers are in
            self._set_deadline(self.body_timeout, "body")
        elif self.in_request:
            self._set_deadline(self.default.config["client_header_timeout"], "header")
        elif self.retiring:
            self._set_deadline(self.engine.idle_grace, "retire")
        else:
            self._set_deadline(self.keepalive_timeout, "keepalive")

    def expire(self) -> None:
        """Called by the engine tick when the deadline has passed."""
        kind = self.timeout_kind
        self.deadline = 0.0
        if kind == "send":
            self.engine.log.info("*%d client timed out reading the response", self.id)
            self.transport.abort()
        elif kind == "linger":
            self.transport.close()
        elif self.pending or self.sender is not None:
            return  # busy: the deadline is set again when the pipeline is empty
        elif kind in ("header", "body") and self.in_request:
            self.engine.log.info("*%d client timed out sending the request %s", self.id, kind)
            self._reject(Reject(408, f"client timed out sending the request {kind}"))
            self._close()
        elif not self.in_request:
            self._close()

    def retire(self) -> None:
        """Graceful stop: finish what is in flight (a stream ends at its next chunk
        boundary), close once idle past the grace."""
        self.retiring = True
        if self.sender is not None and self.at_boundary:
            self.sender.cancel()
        elif not self.in_request and not self.pending and not self.closing:
            self._set_deadline(self.engine.idle_grace, "retire")


def _absolute_form(url: bytes) -> tuple[bytes, bytes]:
    """`http://host[:port]/path?query` → (host, origin-form target).

    RFC 9112 3.2.2: the host of an absolute-form target replaces the Host header.
    """
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        for prefix, reason in _TARGET_ERRORS:
            if url.startswith(prefix):
                raise Reject(400, reason)
    end = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, target = rest[:end], rest[end:]
    if not authority or b"@" in authority:
        raise Reject(400, "invalid authority in the request target")
    return authority, target if target.startswith(b"/") else b"/" + target


def _check_host(host: bytes) -> None:
    """RFC 9112 3.2: a Host (or the authority of an absolute-form target) is a valid
    RFC 3986 host with an optional port; nginx also refuses `..` and a leading dot."""
    match = _HOST(host)
    if match is None or b".." in host or host.startswith(b"."):
        raise Reject(400, "invalid Host")
    literal, port = match.groups()  # an IPv6 literal (not IPvFuture), the port
    if port and int(port) > 65535:
        raise Reject(400, "invalid Host port")
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            raise Reject(400, "invalid IP literal in Host") from None


def _error(status: int, reason: str | None = None) -> Response:
    return Response(status, error_body(status, reason), content_type="application/json")


async def _aclose(stream: Any, log: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.exception("closing a response stream failed")
