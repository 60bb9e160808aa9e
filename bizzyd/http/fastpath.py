"""What every request runs through: httptools' callbacks, the checks made on a
request's head, routing (remembered per connection), and the answer of a location
with a pre-rendered response (see protocol.py's theory of operation).

`FastPath` is the base class of `HttpProtocol`, which adds the rest: connection
events, handlers and the response pipeline, timeouts, errors.  This module is plain
Python.  `make` also compiles it with Cython (`bizzyd/http/build.py`; fastpath.pxd
types the attributes): the class becomes an extension type whose attributes are C
fields and whose callbacks httptools calls without a Python frame.  Both builds run
the same code; the tests run the HTTP suites on each (tests/http/conftest.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httptools

from .. import stats
from .response import CLOSE, KEEP_ALIVE

_HIST = stats.HIST  # a location's first latency bucket (a C constant when compiled)
_QUICK = (b"GET", b"HEAD")  # methods a location's quick content hook may answer
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_SLASH, _HASH = 0x2F, 0x23
NO_CAPTURES: Mapping[str, str] = MappingProxyType({})
# Header fields looked at when the header section is complete, as bits.  All but
# Upgrade are singletons: a second one is refused (RFC 9110 5.3: fields that are not
# lists; nginx refuses duplicates of most of these too).
_F_HOST = 1
_F_LENGTH = 2
_F_TE = 4
_F_EXPECT = 8
_F_UPGRADE = 16
_F_SINGLE = 32
# a request with any of these (or an Upgrade) is not replayed (HttpProtocol._replay)
F_NO_REPLAY = _F_LENGTH | _F_TE | _F_EXPECT | (1 << 30)
_FIELDS = {b"host": _F_HOST, b"content-length": _F_LENGTH, b"transfer-encoding": _F_TE,
           b"expect": _F_EXPECT, b"upgrade": _F_UPGRADE} | {
    name: _F_SINGLE << i for i, name in enumerate((
        b"content-type", b"content-range", b"authorization", b"proxy-authorization",
        b"if-modified-since", b"if-unmodified-since", b"if-range", b"range"))}
# bit n set: a field above has an n-byte name (the others are passed over unlowered)
_FIELD_SIZES = sum({1 << len(name) for name in _FIELDS})
_MAX_FIELD_SIZE = max(len(name) for name in _FIELDS)
# RFC 9110 6.5.1: fields a sender must not put in a trailer section (framing, routing,
# request modifiers, authentication, content format)
_NOT_IN_TRAILERS = frozenset((
    b"host", b"content-length", b"transfer-encoding", b"trailer", b"te", b"expect",
    b"authorization", b"proxy-authorization", b"cookie", b"set-cookie",
    b"content-type", b"content-encoding", b"content-range", b"cache-control", b"pragma",
    b"range", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
    b"if-range", b"max-forwards", b"connection", b"keep-alive", b"upgrade"))


class Reject(Exception):
    """Raised inside parser callbacks to answer with an error status and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Discard(Exception):
    """Raised when a request begins after the connection's last one: stop parsing."""


class Clock:
    """The worker's coarse time and Date line, which its engine's tick sets and every
    request reads (a C struct in the compiled build: no attribute lookup)."""

    __slots__ = ("now", "date")

    def __init__(self) -> None:
        self.now = 0.0
        self.date = b""


class FastPath:
    """The per-request state and hot path of a connection; `HttpProtocol` provides
    the methods called here that it defines (`_find_route`, `_announce_body`,
    `_dispatch`, `_respond_bytes`, `_reject`, ...)."""

    # the same names, typed, are C fields in the compiled build (fastpath.pxd)
    __slots__ = (
        "engine", "clock", "default", "parser", "transport", "transport_write", "out",
        "pending",
        # the parser's methods, bound once (a call skips the method lookup)
        "parser_feed", "parser_method", "parser_keep_alive",
        # the connection's flags
        "discarding", "in_request", "closing", "retiring", "must_close", "fresh",
        "requests", "deadline", "timeout_kind",
        # the request line and header section, and their limits
        "url", "method", "headers", "read", "version", "head_read", "header_size", "max_header",
        "max_line", "max_field", "max_fields", "underscores",
        # the body
        "chunked_body", "header_count", "wire", "body", "body_size", "max_body",
        # routing: the last one, and the current request's
        "routed", "path", "server", "location", "captures", "keepalive_timeout",
        "keepalive_requests",
        # the location's pre-rendered answer when it is `fast`, and what answering it
        # touches: its stats, the stats index of its status, whether it logs
        "static", "static_stats", "static_index", "static_logs",
        # the keep-alive rendering of the last static answered, and its Date line
        "answered", "answered_date", "answered_bytes",
        # the last read when it was exactly one simple request, and that request parsed
        "replay_data", "replay", "completed", "replay_keep_alive", "replaying",
    )

    def __init__(self, engine: Any, default: Any) -> None:
        self.engine = engine
        self.clock = engine.clock
        self.default = default  # the connection's default server
        self.parser: Any = httptools.HttpRequestParser(self)
        self.parser_feed = self.parser.feed_data
        self.parser_method = self.parser.get_method
        self.parser_keep_alive = self.parser.should_keep_alive
        self.transport: Any = None
        self.transport_write: Any = None  # its write method, bound once
        self.out: list[bytes] | None = None  # the responses of the current read
        # a list, not a deque (760 bytes each): it is short and mostly empty
        self.pending: list[Any] = []
        self.discarding = False  # the last request was read: ignore input
        self.in_request = False  # between a request's first byte and its end
        self.closing = False  # close once the pipeline is empty
        self.retiring = self.must_close = False
        self.fresh = False  # the current read began at a message boundary
        self.requests = 0
        # timeouts: one deadline, checked by the engine's tick
        self.deadline = 0.0
        self.timeout_kind = ""
        limits = default.config
        self.max_header = limits["client_max_header_size"]
        self.max_line = limits["client_max_request_line"]
        self.max_field = limits["client_max_header_line"]
        self.max_fields = limits["client_max_header_fields"]
        self.underscores = limits["underscores_in_headers"]
        self.keepalive_requests = limits["keepalive_requests"]
        self.keepalive_timeout = limits["keepalive_timeout"]
        self.read = b""  # the bytes data_received is parsing
        self.method = b""  # the request's, from on_headers_complete on
        self.version = "1.1"
        self.head_read = 0
        self.chunked_body = False
        self.header_count = self.wire = 0
        # the last routing: (url, host, origin-form url, path, server, location,
        # captures, config, its body size limit, keep-alive timeout and requests),
        # reused while a connection asks for the same target
        self.routed: tuple[Any, ...] | None = None
        self.answered = self.answered_date = None
        self.answered_bytes = b""
        self.replay_data = b""
        # (url, headers, version, host) of the last request read, when it may be replayed
        self.replay: tuple[bytes, tuple[tuple[bytes, bytes], ...], str, bytes | None
                           ] | None = None
        self.replay_keep_alive = self.replaying = False  # the replayed request's wish
        self.completed = 0
        self._reset_request()

    def on_message_begin(self) -> None:
        if self.discarding:
            raise Discard
        self.in_request = True  # the header deadline is set if the read ends before it
        self.head_read = -1

    def on_url(self, url: bytes) -> None:
        # in pieces when the target is split across reads
        self.url = self.url + url if self.url else url
        self.header_size = size = len(self.url)  # on_url comes before any header
        if size > self.max_header:
            raise Reject(414, "request URI too long")
        # the request line: method SP target SP HTTP/1.1 (a method has at most 7 bytes)
        if size + 17 > self.max_line and \
                len(self.parser_method()) + size + 10 > self.max_line:
            raise Reject(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if value and value[-1] in (0x20, 0x09):  # llhttp keeps trailing SP, HTAB
            value = value.rstrip(b" \t")
        size = len(name) + len(value)
        self.header_size += size + 4
        if self.header_size > self.max_header:
            raise Reject(431, "request header fields too large")
        if size + 2 > self.max_field:  # `name: value`
            raise Reject(431, "request header line too long")
        headers = self.headers
        if len(headers) >= self.max_fields:
            raise Reject(431, "too many header fields")
        if 0x5F in name and not self.underscores:  # "_"
            return  # nginx's underscores_in_headers off: dropped, never seen
        if self.chunked_body:
            check_trailer(name)
        headers.append((name, value))  # trailers too, dropped at the end

    def on_headers_complete(self) -> None:
        # When the message began this read, its request line is the read's first line
        # (unless empty lines came first): " HTTP/1.1" right after the target spares
        # get_http_version, which formats a new string.
        read = self.read
        fresh = self.fresh
        url = self.url
        self.method = method = self.parser_method()
        if fresh and read.startswith(b" HTTP/1.1\r\n", len(method) + 1 + len(url)):
            version = "1.1"
        else:
            version = self._http_version()
        self.fresh = False
        self.version = version
        self.replay = None
        self._check_head(version, fresh, url)

    def _check_head(self, version: str, fresh: bool, url: bytes) -> None:
        """The header fields looked at (framing, Host, the singletons), routing, and
        what the request may be replayed as."""
        host = expect = te = None
        length = 0
        seen = 0  # the singleton fields met, as bits
        for name, value in self.headers:
            size = len(name)
            if size > _MAX_FIELD_SIZE or not _FIELD_SIZES >> size & 1:
                continue
            if name == b"Host":
                field = _F_HOST
            else:
                known = _FIELDS.get(name.lower())
                if known is None:
                    continue
                field = known
            if field == _F_UPGRADE:
                if self.parser.should_upgrade():
                    self.must_close = True  # we do not switch protocols: answer, close
                seen |= F_NO_REPLAY
                continue
            if seen & field:
                raise Reject(400, f"duplicate {name.decode('latin-1')} header")
            seen |= field
            if field == _F_HOST:
                host = value
            elif field == _F_LENGTH:
                length = _content_length(value)
            elif field == _F_TE:
                te = value
            elif field == _F_EXPECT:
                expect = value
        if host is None and version == "1.1":
            raise Reject(400, "missing Host header")
        if version == "1.0":
            self._check_protocol()
        config = self._route(host)
        if length > self.max_body:
            raise Reject(413, "request body larger than client_max_body_size")
        if length or te is not None or expect is not None:
            self._announce_body(config, version, length, te, expect)
        if fresh and not seen & F_NO_REPLAY:
            self.replay = (url, tuple(self.headers), version, host)

    def _reset_request(self) -> None:
        self.url = b""
        self.headers = []
        self.header_size = 0
        self.body = ()  # a list once a body is announced
        self.body_size = 0
        self.max_body = 0
        self.server = self.default
        self.location = self.static = None
        self.captures = NO_CAPTURES
        self.path = ""

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        inside = self.in_request
        self.out = []
        if not inside and data == self.replay_data:
            self._replay()
        else:
            raw = data
            if self.chunked_body:
                self.wire += len(data)
            elif not inside and not data.isascii():
                data = _encode_target(data)
            self.read = data  # kept until the next read (on_body drops a large one)
            self.fresh = not inside
            self.completed = 0
            try:
                self.parser_feed(data)
            except httptools.HttpParserUpgrade:
                pass  # an upgrade we decline: its request was answered, and it is the last
            except httptools.HttpParserCallbackError as exc:
                self._callback_failed(exc.__context__)
            except httptools.HttpParserError as exc:
                if not self.discarding:  # else: bytes after the last request
                    self._reject(Reject(400, _parser_reason(exc)))
            if self.in_request:
                self.replay_data = b""
                if not self.discarding:
                    self._request_pending()
            else:  # a read of exactly one simple request parses the same way next time
                self.replay_data = raw if not inside and self.completed == 1 \
                    and self.replay is not None else b""
        out, self.out = self.out, None
        if out:
            self.transport_write(b"".join(out) if len(out) > 1 else out[0])
        if self.closing and not self.pending:
            self._close()

    def _replay(self) -> None:
        """The read is byte for byte the last one, which was one complete request
        without a body that began and ended with the read: llhttp, back at a message
        boundary, would report exactly the same (its method is still that request's;
        its keep-alive flags are cleared, so the verdict was kept), so the parse is
        reused."""
        url, headers, self.version, host = self.replay  # type: ignore[misc]
        self.url, self.headers = url, list(headers)
        self.replaying = True
        try:
            self._route(host)
            self.on_message_complete()
        except Reject as exc:
            self._reject(exc)
        finally:
            self.replaying = False

    def on_message_complete(self) -> None:
        if self.discarding:
            return
        self.in_request = False
        self.completed += 1
        if self.chunked_body:
            self.chunked_body = False
            del self.headers[self.header_count:]  # trailer fields are not merged
        if self.replaying:
            wanted = self.replay_keep_alive
        else:  # llhttp clears its flags once the message is done: kept for a replay
            wanted = self.replay_keep_alive = self.parser_keep_alive()
        self.requests += 1
        loc = self.location
        keep_alive = (wanted and not self.retiring
                      and self.requests < self.keepalive_requests and not self.must_close)
        if not keep_alive:
            self.discarding = True  # this was the connection's last request
        static = self.static
        if static is not None:  # the hottest path: `loc.fast`
            if keep_alive and self.version == "1.1" and not self.pending \
                    and self.method != b"HEAD":
                self.out.append(self._keep_alive_answer(static))
                self.deadline = self.clock.now + self.keepalive_timeout  # `_after_response`
                self.timeout_kind = "keepalive"
            else:
                self.deadline = 0.0
                self._respond_bytes(static.render(self.clock.date,
                                                  self._conn_header(keep_alive),
                                                  self.method == b"HEAD"),
                                    keep_alive)
            counts = self.static_stats
            counts[self.static_index] += 1
            counts[_HIST] += 1
            if self.static_logs:
                self._log_answered(loc, static, keep_alive)
        elif loc is None:
            self.deadline = 0.0
            self._dispatch(keep_alive)
        elif loc.quick is not None and (method := self.method) in _QUICK \
                and self.body == () \
                and (static := loc.quick(self.engine.ctx, loc, self.captures)) is not None:
            self.deadline = 0.0
            self._respond_static(loc, static, keep_alive, method)
        else:
            self.deadline = 0.0
            self._dispatch(keep_alive)
        self._reset_request()

    def _keep_alive_answer(self, static: Any) -> bytes:
        """`static`'s HTTP/1.1 keep-alive rendering with the current Date line,
        remembered while the connection asks for the same answer in the same second."""
        date = self.clock.date
        if static is not self.answered or date is not self.answered_date:
            self.answered, self.answered_date = static, date
            self.answered_bytes = static.keep_alive_bytes(date)
        return self.answered_bytes

    def _conn_header(self, keep_alive: bool) -> bytes:
        if not keep_alive:
            return CLOSE
        return KEEP_ALIVE if self.version == "1.0" else b""

    def _http_version(self) -> str:
        """"1.1" or "1.0" (else 505)."""
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Reject(505, f"HTTP/{version} is not supported")  # 0.9, 2.0
        return version

    def _check_protocol(self) -> None:
        """llhttp parses `RTSP/1.0` and `ICE/1.0` request lines as HTTP/1.0.

        httptools gives no byte offsets, so this looks for the request line in the
        current read; one split across two reads is not recognised (its framing is
        HTTP/1.0's anyway).
        """
        line = self.url + b" "
        if line + b"HTTP/" not in self.read and (line + b"RTSP/" in self.read
                                                 or line + b"ICE/" in self.read):
            raise Reject(400, "only HTTP is spoken here")

    def _route(self, host: bytes | None) -> Any:
        routed = self.routed
        if routed is None or self.url != routed[0] or host != routed[1]:
            routed = self._find_route(self.url, host)
        (_, _, self.url, self.path, self.server, self.location, self.captures, config,
         self.max_body, self.keepalive_timeout, self.keepalive_requests, self.static,
         self.static_stats, self.static_index, self.static_logs) = routed
        return config

    def _find_route(self, raw: bytes, host: bytes | None) -> tuple[Any, ...]:
        raise NotImplementedError

    def _announce_body(self, config: Any, version: str, length: int, te: bytes | None,
                       expect: bytes | None) -> None:
        raise NotImplementedError


def check_trailer(name: bytes) -> None:
    if name.lower() in _NOT_IN_TRAILERS:
        raise Reject(400, f"{name.decode('latin-1')} is not allowed in a trailer")


def _content_length(value: bytes) -> int:
    if not value.strip().isdigit():
        raise Reject(400, "invalid Content-Length")
    return int(value)


def _encode_target(data: bytes) -> bytes:
    """Bytes >= 0x80 in the request line that begins `data` are percent-encoded (nginx
    serves such targets; llhttp refuses them).  Only a request line that begins a read
    is seen here: one split across reads, or a later pipelined one, is refused."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2  # empty lines before a request line are allowed
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    line = data[start:end]
    if line.isascii():
        return data
    encoded = _NON_ASCII.sub(lambda m: b"%%%02X" % m.group()[0], line)
    return data[:start] + encoded + data[end:]


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.replace("\r", " ").replace("\n", " ")[:120]
