"""Responses and their serialization.

A `Response` is what handlers return.  `StaticResponse` is a response rendered once
at config time (the `return` directive): only the Date and Connection lines are
added per request, so the hot path is one join.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from http import HTTPStatus

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
REASONS.setdefault(499, b"Client Closed Request")
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))

Headers = list[tuple[str, str]]


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))


class Response:
    """Status, headers and a body (bytes, or an async iterator of bytes to stream)."""

    __slots__ = ("status", "headers", "body", "stream")

    def __init__(self, status: int = 200, body: bytes | str = b"",
                 headers: Iterable[tuple[str, str]] = (), content_type: str | None = None,
                 stream: AsyncIterator[bytes] | None = None) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers: Headers = list(headers)
        if content_type:
            self.headers.append(("Content-Type", content_type))
        self.stream = stream

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def render_head(self, server: bytes, date: bytes, connection: bytes,
                    default_type: str) -> bytes:
        """Status line and headers, ending with the blank line."""
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
            parts.append(b"Content-Length: %d\r\n" % len(self.body))
        parts.append(connection)
        parts.append(b"\r\n")
        return b"".join(parts)


class StaticResponse:
    """A response rendered at config time; `render` adds Date and Connection."""

    __slots__ = ("status", "prefix", "body")

    def __init__(self, status: int, body: bytes, content_type: str, server: bytes,
                 extra: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        lines = [status_line(status), server]
        lines += [f"{k}: {v}\r\n".encode("latin-1") for k, v in extra]
        if status not in NO_BODY_STATUSES:
            if body:
                lines.append(f"Content-Type: {content_type}\r\n".encode("latin-1"))
            lines.append(b"Content-Length: %d\r\n" % len(body))
        self.prefix = b"".join(lines)
        self.body = body

    def render(self, date: bytes, connection: bytes, head_only: bool) -> bytes:
        body = b"" if head_only else self.body
        return b"".join((self.prefix, date, connection, b"\r\n", body))


def error_body(status: int, reason: str | None = None) -> bytes:
    """A small JSON error body: {"status": 413, "error": "Payload Too Large", ...}."""
    body: dict[str, object] = {"status": status, "error": REASONS.get(status, b"Error").decode()}
    if reason:
        body["reason"] = reason
    return json.dumps(body).encode() + b"\n"
