"""Pushes to the FCM HTTP v1 API over a pool of keep-alive HTTP/1.1 connections on the
event loop.

firebase-admin still provides the credentials and their access tokens and encodes each
`messaging.Message` into the v1 JSON; only the transport is ours: `send_each` spends a
thread and a `requests` call per message, ~1 ms of CPU each, which bounded a notifier
to ~200 pushes/s. Behaviour kept from firebase-admin 7.7 (pinned): its headers, its
retries (a 500 or 503 up to 4 more times after 0, 1, 2, 4 s or the Retry-After; a
connection or read error once more), its mapping of an error response to a
`FirebaseError` (the FCM error code first, then the status), a timeout →
DeadlineExceededError, a transport error → UnavailableError, and one credential refresh
on a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import firebase_admin
import httptools
import msgspec
from firebase_admin import _utils, exceptions, messaging
from google.auth.transport.requests import Request as AuthRequest

RETRY_STATUS = (500, 503)
STATUS_RETRIES = 4
BACKOFF = 0.5     # urllib3's backoff_factor: 0, 1, 2, 4 s
ENCODE = msgspec.json.Encoder().encode
Result = tuple[bool, Exception | None]   # (FCM accepted it, else the error)


class _Gone(Exception):
    """The connection broke before the response (a retry uses a new one)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.retry_after: bytes | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(_Gone(f"connection closed: {exc}" if exc else "connection closed"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Gone(f"bad response: {exc}"))
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status, keep = self.parser.get_status_code(), self.parser.should_keep_alive()
        if not keep:
            self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, b"".join(self.body), self.retry_after))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes, bytes | None]:
        if self.closed or self.transport is None:
            raise _Gone("connection closed")
        self.body, self.retry_after = [], None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, timeout)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class FcmClient:
    """`await client.send_each(messages)` → one Result per message, in order."""

    def __init__(self, app: firebase_admin.App, url: str, timeout: float,
                 connections: int) -> None:
        self.credential = app.credential.get_credential()
        self.url, self.timeout = url, timeout
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Type: application/json; charset=UTF-8\r\n"
                     "X-GOOG-API-FORMAT-VERSION: 2\r\n"
                     f"X-FIREBASE-CLIENT: fire-admin-python/{firebase_admin.__version__}"
                     "\r\n").encode()
        self.auth = b""                # the Authorization header line of the token in use
        self.auth_lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(connections)
        self.idle: list[_Connection] = []

    async def send_each(self, messages: Sequence[messaging.Message]) -> list[Result]:
        bodies = [ENCODE({"message": messaging._MessagingService.encode_message(m)})  # noqa: SLF001
                  for m in messages]
        await self._authorize()
        return list(await asyncio.gather(*(self._send(b) for b in bodies)))

    async def close(self) -> None:
        while self.idle:
            self.idle.pop().close()

    # -- one message ---------------------------------------------------------------------

    async def _send(self, body: bytes) -> Result:
        status_retries, transport_retries, refreshed = 0, 1, False
        while True:
            try:
                status, answer, retry_after = await self._exchange(body)
            except TimeoutError:
                return False, exceptions.DeadlineExceededError(
                    f"Timed out while making an API call after {self.timeout}s")
            except (OSError, _Gone) as exc:
                if transport_retries:
                    transport_retries -= 1
                    continue
                return False, exceptions.UnavailableError(
                    f"Failed to establish a connection: {exc}", cause=exc)
            if status < 300:
                return True, None
            if status == 401 and not refreshed:
                refreshed = True
                await self._authorize(force=True)
                continue
            if status in RETRY_STATUS and status_retries < STATUS_RETRIES:
                status_retries += 1
                await asyncio.sleep(_backoff(status_retries, retry_after))
                continue
            return False, error_of(status, answer)

    async def _exchange(self, body: bytes) -> tuple[int, bytes, bytes | None]:
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (
            self.head, self.auth, len(body), body)
        async with self.slots:
            while self.idle and self.idle[-1].closed:
                self.idle.pop()
            conn = self.idle.pop() if self.idle else await self._connect()
            try:
                answer = await conn.exchange(request, self.timeout)
            except BaseException:
                conn.close()
                raise
            if not conn.closed:
                self.idle.append(conn)
            return answer

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(
            _Connection, self.host, self.port, ssl=self.ssl), self.timeout)
        return conn

    # -- access tokens ---------------------------------------------------------------------

    async def _authorize(self, force: bool = False) -> None:
        """The Authorization header of a valid access token (google-auth refreshes it,
        blocking: in a thread); none for anonymous credentials (a fake FCM)."""
        if self.auth and self.credential.valid and not force:
            return
        async with self.auth_lock:
            if self.auth and self.credential.valid and not force:
                return
            self.auth = await asyncio.to_thread(self._headers, force)

    def _headers(self, force: bool) -> bytes:
        request, headers = AuthRequest(), {}
        if force:
            with contextlib.suppress(Exception):  # the next 401 is reported
                self.credential.refresh(request)
        self.credential.before_request(request, "POST", self.url, headers)
        return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()


def _backoff(retry: int, retry_after: bytes | None) -> float:
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return min(max(float(retry_after), 0.0), 120.0)
    return 0.0 if retry <= 1 else BACKOFF * 2 ** (retry - 1)


def error_of(status: int, body: bytes) -> exceptions.FirebaseError:
    """The FirebaseError firebase-admin raises for this FCM error response."""
    error, message = _utils._parse_platform_error(  # noqa: SLF001
        body.decode(errors="replace"), status)
    kind = messaging._MessagingService._build_fcm_error(error)  # noqa: SLF001
    if kind is None:
        code = error.get("status") or _utils._http_status_to_error_code(status)  # noqa: SLF001
        kind = _utils._error_code_to_exception_type(code)  # noqa: SLF001
    return kind(message)
