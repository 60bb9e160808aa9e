"""A local fake of the FCM HTTP v1 send endpoint for tests and benchmarks (Cloud
Messaging has no emulator): it answers as FCM does, records every push, and can fail or
hold pushes on request. Nothing here runs in bizzyd.

Behaviour by registration token prefix: `gone-` → 404 UNREGISTERED, `badtoken-` → 400
INVALID_ARGUMENT "not a valid FCM registration token", `quota-` → 429 QUOTA_EXCEEDED,
`refused-` → 400 INVALID_ARGUMENT about the payload (a permanent failure), `flaky-` →
503 for its first FLAKY_FAILURES requests, then 200; any other token → 200.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
ERRORS = {
    "gone-": (404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    "badtoken-": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                  "The registration token is not a valid FCM registration token"),
    "quota-": (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded."),
    "refused-": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                 "Invalid value at 'message.data' (Map), Invalid data payload key"),
    "flaky-": (503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
}
FLAKY_FAILURES = 5   # a `flaky-` token's first requests that get 503


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024   # the client opens up to 100 connections at once


@dataclass(frozen=True)
class Push:
    token: str
    key: str           # data.notification_id
    kind: str
    at: float          # data.at: when the cause happened
    received: float    # when the fake got it
    status: int
    message: dict


class FakeFCM:
    """`with FakeFCM() as fcm:` serves on 127.0.0.1:`fcm.port`; `fcm.url` is the value
    for `notifier.fcm_url`."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.hold_after: int | None = None   # answer this many, then hold the rest
        self.held = 0                        # requests waiting for release()
        self.answered: set[tuple[str, str]] = set()   # (token, key) answered 200
        self.held_pairs: set[tuple[str, str]] = set()  # (token, key) of held pushes
        self._release = threading.Event()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/projects/{{project}}/messages:send"

    def __enter__(self) -> FakeFCM:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- for tests ---------------------------------------------------------------------

    def hold(self, after: int) -> None:
        """Answer `after` more pushes, then hold every further one until release()."""
        with self.lock:
            self._release.clear()
            self.hold_after = len(self.pushes) + after

    def release(self) -> None:
        with self.lock:
            self.hold_after = None
        self._release.set()

    def wait(self, predicate: Any, timeout: float = 20.0, what: str = "pushes") -> None:
        """Wait until `predicate(fcm)` is true (woken by each push); fail after timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                         f"{len(self.pushes)} pushes so far")
                self.changed.wait(left)

    def ok(self, token: str | None = None) -> list[Push]:
        """The pushes answered 200 (to `token`)."""
        with self.lock:
            return [p for p in self.pushes if p.status == 200
                    and (token is None or p.token == token)]

    # -- the endpoint ------------------------------------------------------------------

    def _record(self, message: dict) -> tuple[int, bool]:
        token = str(message.get("token", ""))
        data = message.get("data") or {}
        status = next((e[0] for prefix, e in ERRORS.items() if token.startswith(prefix)), 200)
        with self.changed:
            if token.startswith("flaky-") and sum(
                    p.token == token for p in self.pushes) >= FLAKY_FAILURES:
                status = 200
            hold = self.hold_after is not None and len(self.pushes) >= self.hold_after
            self.pushes.append(Push(token, data.get("notification_id", ""),
                                    data.get("kind", ""), float(data.get("at", 0)),
                                    time.time(), status, message))
            if hold:
                self.held += 1
                self.held_pairs.add((token, data.get("notification_id", "")))
            self.changed.notify_all()
        return status, hold

    def _answered(self, message: dict) -> None:
        with self.changed:
            data = message.get("data") or {}
            self.answered.add((str(message.get("token")), data.get("notification_id", "")))
            self.changed.notify_all()

    def _handler(self) -> type:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # head and body are two writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    message = json.loads(body)["message"]
                except (ValueError, KeyError):
                    self._send(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}})
                    return
                status, hold = fake._record(message)
                if hold:
                    fake._release.wait(60)
                    with fake.lock:
                        fake.held -= 1
                if status == 200:
                    self._send(200, {"name": f"projects/fake/messages/{len(fake.pushes)}"})
                    fake._answered(message)
                    return
                token = str(message.get("token"))
                prefix = next(p for p in ERRORS if token.startswith(p))
                code, state, fcm_code, text = ERRORS[prefix]
                self._send(code, {"error": {"code": code, "message": text, "status": state,
                                            "details": [{"@type": FCM_ERROR,
                                                         "errorCode": fcm_code}]}})

            def _send(self, status: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        return Handler
