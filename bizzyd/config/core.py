"""The core's own directives (the process model, logs, and the HTTP engine's basics)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..listen import parse_listen
from .schema import HTTP, LOCATION, SERVER, Directive
from .types import (
    Auto,
    Bool,
    Custom,
    Duration,
    Enum,
    Int,
    ListOf,
    Optional,
    Size,
    Str,
)

LEVELS = ("debug", "info", "notice", "warn", "error", "crit")
HSL = (HTTP, SERVER, LOCATION)


@dataclass(frozen=True)
class ReturnSpec:
    """`return: CODE`, `return: [CODE, TEXT]` or `return: [3xx, URL]`."""

    status: int
    text: str | None = None


def parse_return(value: Any) -> ReturnSpec:
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 2 or isinstance(items[0], bool) or not isinstance(items[0], int):
        raise ValueError("expected CODE or [CODE, TEXT], e.g. [200, '{\"ok\":true}']")
    status = items[0]
    if not 100 <= status <= 599:
        raise ValueError(f"status code must be 100..599, got {status}")
    text = items[1] if len(items) == 2 else None
    if text is not None and not isinstance(text, str):
        raise ValueError("the response text must be a string")
    if status in (301, 302, 303, 307, 308) and not text:
        raise ValueError(f"a {status} return needs a URL")
    return ReturnSpec(status, text)


def _dump_return(spec: ReturnSpec) -> Any:
    return spec.status if spec.text is None else [spec.status, spec.text]


def _listen_dump(spec: Any) -> str:
    words = [str(spec)]
    if spec.reuseport:
        words.append("reuseport")
    if spec.backlog != 511:
        words.append(f"backlog={spec.backlog}")
    return " ".join(words)


CORE_DIRECTIVES: tuple[Directive, ...] = (
    Directive("modules", ListOf(Str()), [],
              doc="Modules to load, by import path, in order."),
    Directive("user", Optional(Str()), None,
              doc="Workers drop privileges to this user when the master runs as root."),
    Directive("group", Optional(Str()), None,
              doc="Group for the workers (default: the user's primary group)."),
    Directive("worker_processes", Auto(Int(min=1, max=256), lambda: os.cpu_count() or 1),
              "auto", doc="Number of worker processes; `auto` is the number of CPUs."),
    Directive("worker_connections", Int(min=16), 10240,
              doc="Connections a worker holds at most; more get 503 and are closed."),
    Directive("worker_rlimit_nofile", Optional(Int(min=64)), None,
              doc="Open-files limit set for workers (RLIMIT_NOFILE); null leaves it."),
    Directive("worker_timeout", Duration(), "30s",
              doc="A worker whose heartbeat is older than this is killed and respawned."),
    Directive("worker_shutdown_timeout", Duration(), "10s",
              doc="Graceful stop (QUIT, reload) waits at most this for in-flight work."),
    Directive("worker_shutdown_idle_grace", Duration(), "1s",
              doc="On graceful stop, an idle keep-alive connection is closed after it stays "
                  "idle this long (a request arriving meanwhile is served with "
                  "Connection: close)."),
    Directive("fast_shutdown_timeout", Duration(), "5s",
              doc="TERM/INT: children still alive after this are killed."),
    Directive("pid", Str(), "run/bizzyd.pid", path=True,
              doc="The master's pid file (relative paths are under the prefix)."),
    Directive("run_dir", Str(), "run", path=True,
              doc="Directory for runtime files (bus endpoints, sockets)."),
    Directive("error_log", Str(), "logs/error.log", path=True,
              doc="Error log file, or `stderr`."),
    Directive("error_log_level", Enum(*LEVELS), "notice",
              doc="Lowest level written to the error log."),
    Directive("bus_hwm", Int(min=1), 10000,
              doc="High-water mark (messages) of each internal bus socket."),
    # http context
    Directive("keepalive_timeout", Duration(), "75s", HSL,
              doc="An idle keep-alive connection is closed after this."),
    Directive("keepalive_requests", Int(min=1), 1000, HSL,
              doc="Requests served on one connection before it is closed."),
    Directive("client_header_timeout", Duration(), "60s", (HTTP, SERVER),
              doc="Time allowed to receive a request's line and headers."),
    Directive("client_body_timeout", Duration(), "60s", HSL,
              doc="Time allowed between two reads of a request body."),
    Directive("send_timeout", Duration(), "60s", HSL,
              doc="Time allowed between two successful writes of a response."),
    Directive("client_max_body_size", Size(), "1m", HSL,
              doc="Largest request body accepted; larger gets 413."),
    Directive("client_max_header_size", Size(), "32k", (HTTP, SERVER),
              doc="Largest request line plus headers accepted; larger gets 431 (414 for "
                  "the URI alone)."),
    Directive("client_max_request_line", Size(), "8k", (HTTP, SERVER),
              doc="Longest request line (method, target and version) accepted; longer "
                  "gets 414 (nginx: one of large_client_header_buffers, 8k)."),
    Directive("client_max_header_line", Size(), "8k", (HTTP, SERVER),
              doc="Longest header line (name, colon and value) accepted; longer gets 431."),
    Directive("client_max_header_fields", Int(min=1), 100, (HTTP, SERVER),
              doc="Most header fields in a request (trailer fields included); more gets "
                  "431 (gunicorn's limit_request_fields)."),
    Directive("underscores_in_headers", Bool(), False, (HTTP, SERVER),
              doc="Off (nginx's default): header fields whose name has an underscore "
                  "(`Content_Length`, look-alikes of framing headers) are dropped before "
                  "any handler sees them. On: they are passed on."),
    Directive("server_tokens", Bool(), True, HSL,
              doc="Send `Server: bizzyd/VERSION` (off: `Server: bizzyd`)."),
    Directive("default_type", Str(), "text/plain", HSL,
              doc="Content-Type of responses that do not set one (e.g. `return`)."),
    # server context
    Directive("listen", ListOf(Custom("listen address", parse_listen, _listen_dump), 1),
              ["127.0.0.1:8080"], (SERVER,),
              doc="Addresses: `HOST:PORT`, `[IPV6]:PORT`, `unix:PATH`, with options "
                  "`reuseport` and `backlog=N`."),
    Directive("server_name", ListOf(Str()), ["_"], (SERVER,),
              doc="Host names this server answers; the first server of a listen address "
                  "is its default."),
    # location context
    Directive("return", Optional(Custom("return", parse_return, _dump_return)), None,
              (LOCATION,), doc="Answer with a fixed status and text (or a redirect URL)."),
    Directive("content", Optional(Str()), None, (LOCATION,),
              doc="The content handler (registered by a module) that serves this location."),
)
