"""Responses and their serialization.

A `Response` is what handlers return.  `StaticResponse` is a response rendered once
at config time (the `return` directive): only the Date and Connection lines are
added per request, so the hot path is one join.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from http import HTTPStatus
from typing import BinaryIO

from .. import __version__

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
REASONS.setdefault(499, b"Client Closed Request")
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))

Headers = list[tuple[str, str]]


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))


class FileBody:
    """A byte range of an open file, sent with `loop.sendfile` (the writer closes it)."""

    __slots__ = ("file", "offset", "count")

    def __init__(self, file: BinaryIO, offset: int, count: int) -> None:
        self.file, self.offset, self.count = file, offset, count


class Response:
    """Status, headers and a body: bytes, an async iterator of bytes to stream
    (`stream`), or a file range (`file`)."""

    __slots__ = ("status", "headers", "body", "stream", "file", "origin")

    def __init__(self, status: int = 200, body: bytes | str = b"",
                 headers: Iterable[tuple[str, str]] = (), content_type: str | None = None,
                 stream: AsyncIterator[bytes] | None = None,
                 file: FileBody | None = None) -> None:
        self.origin: StaticResponse | None = None  # set by StaticResponse.to_response
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers: Headers = list(headers)
        if content_type:
            self.headers.append(("Content-Type", content_type))
        self.stream = stream
        self.file = file

    def set_header(self, name: str, value: str) -> None:
        """Replace every header of that name with one value."""
        lname = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != lname]
        self.headers.append((name, value))

    def remove_header(self, name: str) -> None:
        lname = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != lname]

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def render_head(self, server: bytes, date: bytes, connection: bytes,
                    default_type: str) -> bytes:
        """Status line and headers, ending with the blank line."""
        origin = self.origin
        if origin is not None and origin.renders_as(self, server):
            return b"".join((origin.head_start, date, origin.head_end, connection, b"\r\n"))
        parts = [status_line(self.status), server, date]
        has_type = False
        for name, value in self.headers:
            has_type = has_type or name.lower() == "content-type"
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not has_type and self.status not in NO_BODY_STATUSES:
            parts.append(f"Content-Type: {default_type}\r\n".encode("latin-1"))
        if self.stream is not None:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.status not in NO_BODY_STATUSES:
            length = self.file.count if self.file is not None else len(self.body)
            parts.append(b"Content-Length: %d\r\n" % length)
        parts.append(connection)
        parts.append(b"\r\n")
        return b"".join(parts)


class StaticResponse:
    """A response rendered at config time; `render` adds Date and Connection."""

    __slots__ = ("status", "prefix", "body", "content_type", "extra", "status_index",
                 "_date", "_keep_alive", "server", "headers", "head_start", "head_end")

    def __init__(self, status: int, body: bytes, content_type: str, server: bytes,
                 extra: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        self.status_index = status // 100 - 1  # its class in a location's stats
        self.content_type = content_type
        self.extra = list(extra)
        lines = [status_line(status), server]
        lines += [f"{k}: {v}\r\n".encode("latin-1") for k, v in extra]
        if status not in NO_BODY_STATUSES:
            if body:
                lines.append(f"Content-Type: {content_type}\r\n".encode("latin-1"))
            lines.append(b"Content-Length: %d\r\n" % len(body))
        self.prefix = b"".join(lines)
        self.body = body
        self._date: bytes | None = None
        self._keep_alive = b""
        self.server = server
        self._response_head()

    def _response_head(self) -> None:
        """What `to_response().render_head(...)` writes around the Date line, while the
        response is unchanged; not when it would add the default Content-Type."""
        response = self.to_response()
        self.headers = list(response.headers)
        names = {name.lower() for name, _ in self.headers}
        self.head_start = status_line(self.status) + self.server
        self.head_end = None
        if "content-type" in names or self.status in NO_BODY_STATUSES:
            head = response.render_head(b"", b"", b"", "")
            self.head_end = head[len(status_line(self.status)):-2]

    def renders_as(self, response: Response, server: bytes) -> bool:
        """Whether `response` (from `to_response`) would still render as pre-rendered."""
        return (self.head_end is not None and response.body is self.body
                and response.status == self.status and server == self.server
                and response.headers == self.headers and response.stream is None
                and response.file is None)

    def to_response(self) -> Response:
        """A fresh, mutable Response with the same status, headers and body."""
        kind = self.content_type if self.body else None
        response = Response(self.status, self.body, self.extra, content_type=kind)
        response.origin = self
        return response

    def render(self, date: bytes, connection: bytes, head_only: bool) -> bytes:
        body = b"" if head_only else self.body
        return b"".join((self.prefix, date, connection, b"\r\n", body))

    def keep_alive_bytes(self, date: bytes) -> bytes:
        """`render(date, b"", False)` (HTTP/1.1 keep-alive), kept while `date` is."""
        if date is not self._date:
            self._keep_alive = self.render(date, b"", False)
            self._date = date
        return self._keep_alive


class HTTPError(Exception):
    """Raised by a handler to answer with an error status (and extra headers)."""

    def __init__(self, status: int, reason: str = "",
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(reason or REASONS.get(status, b"").decode())
        self.status, self.reason, self.headers = status, reason, list(headers)

    def response(self) -> Response:
        return Response(self.status, error_body(self.status, self.reason), self.headers,
                        content_type="application/json")


def error_body(status: int, reason: str | None = None) -> bytes:
    """A small JSON error body: {"status": 413, "error": "Payload Too Large", ...}."""
    body: dict[str, object] = {"status": status, "error": REASONS.get(status, b"Error").decode()}
    if reason:
        body["reason"] = reason
    return json.dumps(body).encode() + b"\n"


def server_header(tokens: bool) -> bytes:
    """The `Server` header line: with the version (`server_tokens on`) or without."""
    return f"Server: bizzyd/{__version__}\r\n".encode() if tokens else b"Server: bizzyd\r\n"
