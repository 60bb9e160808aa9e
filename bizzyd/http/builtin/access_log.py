"""`access_log`: one line per request, buffered per worker (nginx's log module).

Theory of operation
-------------------
`log_format` (http) names templates of literal text and `$variables` (VARIABLES,
plus `$http_<name>` for any request header); `combined` (nginx's) and `json` (one
JSON object per line) are built in.  `access_log` (http, server, location) is
`off` (the default), a path (logged in `combined`), a mapping {path, format,
buffer, flush}, or a list of those.  Relative paths are under the prefix.

Config time: a template is parsed once; an unknown variable is a config error.
Worker start (init_worker): each log file is opened once (O_APPEND) and each
format used is compiled into one function that builds the whole line with a single
`str.join` over its literals and small expressions (its source is generated from
the VARIABLES table and `repr()`s of the literals, nothing else, and exec'd once).
Values a client controls are escaped: nginx's `\\xHH` for `"`, `\\` and bytes
outside 0x20..0x7e (`escape: default`), or JSON string escaping (`escape: json`,
used by `json`); a missing value is `-` (default) or empty (json).

Per request: the core builds the request's log record (a plain tuple of LOG_FIELDS;
no Request on the pre-rendered and quick paths) and hands the records of each loop
iteration to the log phase handler in one call (`records=True`).  For each record,
the handler looks up the location's (line, file) pairs in `location.state` (filled
on its first request), formats the line and buffers it in the file.  A request
without a location (404) uses its server's `access_log` and `Server.state`; a
rejected request (400, 408, 413, ...) is logged with what was read of it.  The record
carries what the variables need: the body size, the duration (`$request_time`, from
the engine's loop clock) and the wall time of the answer (`$time_local`), so
formatting can wait.

So a loop iteration's lines are formatted together (about 60 per call under 64 busy
connections): the line function runs with warm caches, where one line between two
requests ran with the caches the kernel and the request had left.  On `return 200`
with the `combined` log the log's cost per request fell from 3.8-4.0 to 2.1-2.4 µs
of CPU (bench/RESULTS.md).  A record that fails to format is logged as an error and
dropped; the others are kept.

Buffers: one per file per worker, written with one `os.write` (O_APPEND: the lines
of different workers never interleave) when it holds `buffer` bytes, `flush` after
its first line (a loop timer armed only while something is buffered), on USR1
(`reopen_logs`: flush, then reopen the path, for logrotate) and on exit_worker.
`buffer: 0` writes every line at once.  The first `access_log` naming a file
decides its buffer and flush.  The master (init_master) creates the files, owned
by `user`, so that unprivileged workers can open them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config.schema import HTTP, LOCATION, SERVER, Directive
from ...config.types import Custom, format_duration, format_size, parse_duration, parse_size
from ...module import Module, PhaseHandler, ProcessContext
from ...process import resolve_user
from ..phases import LOG_FIELDS, Record

STATE_KEY = "access_log"
DEFAULT_PATH = "logs/access.log"
DEFAULT_BUFFER = 64 * 1024
DEFAULT_FLUSH = 1.0
HSL = (HTTP, SERVER, LOCATION)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_VAR = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_FIELD = re.compile(r"\br\.([a-z_]+)")  # in a line's source: r.<field> → r[<index>]
FIELD_INDEX = {name: i for i, name in enumerate(LOG_FIELDS)}
CONN_ID, SERVER, LOCATION, PROCESS = (FIELD_INDEX[f] for f in
                                      ("conn_id", "server", "location", "process"))


# -- variables -------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    """A variable: Python expressions (one or more, comma-separated) that become items
    of the line's `str.join`.  They read `r.<field>` (of the log record, LOG_FIELDS),
    `clock`, and `{h}`: the value (bytes or None) of the request header named by
    `header`.  What a client controls is escaped with `eB` (bytes), `eL` (a str of
    latin-1 bytes) or `eU` (a decoded str), the escapers of the format's `escape`
    mode; each maps None to the mode's "missing" mark."""

    code: str
    header: bytes | None = None
    clock: bool = False


VARIABLES: dict[str, Var] = {
    "remote_addr": Var("r.client"),
    "remote_user": Var("eL(remote_user({h}))", b"authorization"),
    "time_local": Var("clock.local", clock=True),
    "time_iso8601": Var("clock.iso", clock=True),
    "request": Var("r.method, ' ', eB(r.raw_url), ' HTTP/', r.version"),
    "request_method": Var("r.method"),
    "uri": Var("eU(r.path)"),
    "args": Var("eL(query(r.raw_url))"),
    "status": Var("str(r.status)"),
    "body_bytes_sent": Var("str(r.body_bytes)"),
    "request_time": Var("'%.3f' % r.duration"),
    "connection": Var("str(r.conn_id)"),
    "pid": Var("pid"),
    "server_name": Var("eU(r.server.config['server_name'][0])"),
    "host": Var("eB({h})", b"host"),
}


def variable(name: str) -> Var:
    """The Var of `$name`; `$http_user_agent` reads the User-Agent header."""
    var = VARIABLES.get(name)
    if var is not None:
        return var
    if name.startswith("http_") and len(name) > 5:
        header = name[5:].replace("_", "-").lower().encode("ascii")
        return Var("eB({h})", header)
    known = ", ".join(f"${v}" for v in VARIABLES)
    raise ValueError(f"unknown variable ${name} (known: {known}, $http_NAME)")


def remote_user(authorization: bytes | None) -> str | None:
    """The user name of `Authorization: Basic ...`."""
    if not authorization or authorization[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, _ = decoded.decode("latin-1").partition(":")
    return user if sep and user else None


def query(raw_url: bytes) -> str | None:
    """$args: the query string of a request target, or None."""
    return raw_url.partition(b"?")[2].decode("latin-1") or None


class Clock:
    """$time_local and $time_iso8601, formatted once per second."""

    __slots__ = ("start", "next", "local", "iso")

    def __init__(self) -> None:
        self.start = self.next = 0.0
        self.local = self.iso = ""

    def set(self, now: float) -> None:
        """Called by a line function when `now` is not in [start, next)."""
        second = int(now)
        tm = time.localtime(second)
        offset = abs(tm.tm_gmtoff) // 60
        zone = f"{'-' if tm.tm_gmtoff < 0 else '+'}{offset // 60:02d}{offset % 60:02d}"
        clock = f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        self.local = f"{tm.tm_mday:02d}/{MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:{clock} {zone}"
        self.iso = (f"{tm.tm_year}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{clock}"
                    f"{zone[:3]}:{zone[3:]}")
        self.start, self.next = second, second + 1


# -- escaping --------------------------------------------------------------------

_HEX_ESCAPES = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}


def _plain(s: str) -> bool:
    return s.isascii() and s.isprintable() and '"' not in s and "\\" not in s


def escape_bytes(b: bytes | None) -> str:
    if b is None:
        return "-"
    s = b.decode("latin-1")
    return s if _plain(s) else s.translate(_HEX_ESCAPES)


def escape_latin1(s: str | None) -> str:
    if s is None:
        return "-"
    return s if _plain(s) else s.translate(_HEX_ESCAPES)


def escape_text(s: str | None) -> str:
    if s is None:
        return "-"
    if _plain(s):
        return s
    return s.encode("utf-8", "surrogateescape").decode("latin-1").translate(_HEX_ESCAPES)


def _json(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)[1:-1]


def json_bytes(b: bytes | None) -> str:
    if b is None:
        return ""
    s = b.decode("latin-1")
    return s if _plain(s) else _json(b.decode("utf-8", "replace"))


def json_latin1(s: str | None) -> str:
    if s is None:
        return ""
    return s if _plain(s) else _json(s.encode("latin-1").decode("utf-8", "replace"))


def json_text(s: str | None) -> str:
    if s is None:
        return ""
    if _plain(s):
        return s
    return _json(s.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


MISSING = {"default": "-", "json": ""}  # what each escape mode writes for None
ESCAPES: dict[str, dict[str, Callable[[Any], str]]] = {
    "default": {"eB": escape_bytes, "eL": escape_latin1, "eU": escape_text},
    "json": {"eB": json_bytes, "eL": json_latin1, "eU": json_text},
}


# -- formats -----------------------------------------------------------------------

@dataclass(frozen=True)
class LogFormat:
    """A parsed template: literal strings and Vars, in order."""

    name: str
    template: str
    escape: str
    parts: tuple[str | Var, ...]

    @classmethod
    def parse(cls, name: str, template: str, escape: str = "default") -> LogFormat:
        if escape not in ESCAPES:
            raise ValueError(f"log_format {name!r}: escape must be one of "
                             f"{', '.join(ESCAPES)}, got {escape!r}")
        parts: list[str | Var] = []
        pos = 0
        for m in _VAR.finditer(template):
            if m.start() > pos:
                parts.append(template[pos:m.start()])
            try:
                parts.append(variable(m.group(1) or m.group(2)))
            except ValueError as exc:
                raise ValueError(f"log_format {name!r}: {exc}") from None
            pos = m.end()
        if pos < len(template):
            parts.append(template[pos:])
        return cls(name, template, escape, tuple(parts))

    def source(self) -> str:
        """The Python source of `line(r)`, `r` a log record."""
        parts = list(self.parts)
        if parts and isinstance(parts[-1], str):
            parts[-1] += "\n"
        else:
            parts.append("\n")
        variables = [p for p in parts if isinstance(p, Var)]
        headers = sorted({v.header for v in variables if v.header is not None})
        slots = {name: f"h{i}" for i, name in enumerate(headers)}
        body = ["def line(r):"]
        if any(v.clock for v in variables):
            body += ["    now = r.time", "    if not clock.start <= now < clock.next:",
                     "        clock.set(now)"]
        if headers:
            body += _header_loop(headers, slots)
        missing = repr(MISSING[self.escape])
        exprs = [repr(p) if isinstance(p, str) else
                 _guarded(p.code, slots[p.header], missing) if p.header is not None else
                 p.code
                 for p in parts]
        body.append(f"    return ''.join(({', '.join(exprs)},))")
        return _FIELD.sub(lambda m: f"r[{FIELD_INDEX[m.group(1)]}]", "\n".join(body) + "\n")


def _guarded(code: str, slot: str, missing: str) -> str:
    """A header variable's code, skipped when the header is absent (most are)."""
    return f"({missing} if {slot} is None else {code.format(h=slot)})"


def _header_loop(headers: list[bytes], slots: dict[bytes, str]) -> list[str]:
    """One pass over the request headers that keeps the first value of each wanted
    one in a local; only names of a wanted length are lowercased."""
    lengths = sorted({len(name) for name in headers})
    lines = ["    " + " = ".join(slots.values()) + " = None",
             "    for name, value in r.headers:",
             f"        if len(name) in {set(lengths)!r}:",
             "            name = name.lower()"]
    for i, name in enumerate(headers):
        slot = slots[name]
        lines += [f"            {'if' if i == 0 else 'elif'} name == {name!r}:",
                  f"                if {slot} is None:",
                  f"                    {slot} = value"]
    return lines


COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')
JSON_FIELDS = ("time_local", "time_iso8601", "remote_addr", "connection", "pid",
               "server_name", "request", "request_method", "uri", "args", "status",
               "body_bytes_sent", "request_time", "http_referer", "http_user_agent")
JSON_NUMBERS = frozenset({"connection", "pid", "status", "body_bytes_sent", "request_time"})
JSON = "{" + ",".join(f'"{f}":${f}' if f in JSON_NUMBERS else f'"{f}":"${f}"'
                      for f in JSON_FIELDS) + "}"
BUILTIN_FORMATS = {
    "combined": LogFormat.parse("combined", COMBINED),
    "json": LogFormat.parse("json", JSON, "json"),
}


def line_env() -> dict[str, Any]:
    """What a worker's line functions share: one clock, the helpers, the pid."""
    return {"clock": Clock(), "remote_user": remote_user, "query": query,
            "pid": str(os.getpid())}


def compile_format(fmt: LogFormat, env: Mapping[str, Any]) -> Callable[[Record], str]:
    """`line(record) -> str` for a format, bound to a worker's clock and functions."""
    namespace = {**env, **ESCAPES[fmt.escape]}
    # the source holds only VARIABLES' code and repr()s (see LogFormat.source)
    exec(compile(fmt.source(), f"<log_format {fmt.name}>", "exec"), namespace)
    return namespace["line"]


def parse_formats(value: Any) -> dict[str, LogFormat]:
    """`log_format`: {name: template} or {name: {template, escape}}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of format names to templates")
    formats = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"format name {name!r} must be letters, digits and _")
        if name in BUILTIN_FORMATS:
            raise ValueError(f"log_format {name!r} is built in and cannot be redefined")
        if isinstance(spec, dict) and set(spec) <= {"template", "escape"} \
                and isinstance(spec.get("template"), str):
            formats[name] = LogFormat.parse(name, spec["template"],
                                            spec.get("escape", "default"))
        elif isinstance(spec, str):
            formats[name] = LogFormat.parse(name, spec)
        else:
            raise ValueError(f"log_format {name!r}: expected a template string or "
                             "{template: ..., escape: default|json}")
    return formats


def dump_formats(formats: Mapping[str, LogFormat]) -> dict[str, Any]:
    return {name: f.template if f.escape == "default" else
            {"template": f.template, "escape": f.escape} for name, f in formats.items()}


# -- access_log values ---------------------------------------------------------------

@dataclass(frozen=True)
class LogSpec:
    """One `access_log` target."""

    path: str
    format: str = "combined"
    buffer: int = DEFAULT_BUFFER
    flush: float = DEFAULT_FLUSH


def _spec(item: Any) -> LogSpec:
    if isinstance(item, str) and item != "off":
        return LogSpec(item)
    if not isinstance(item, dict):
        raise ValueError(f"expected a path or {{path, format, buffer, flush}}, got {item!r}")
    unknown = sorted(set(item) - {"path", "format", "buffer", "flush"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: path, format, buffer, flush)")
    path, fmt = item.get("path"), item.get("format", "combined")
    if not isinstance(path, str) or not path or path == "off":
        raise ValueError("an access_log mapping needs `path`")
    if not isinstance(fmt, str) or not _NAME.fullmatch(fmt):
        raise ValueError(f"`format` must name a log_format, got {fmt!r}")
    return LogSpec(path, fmt, parse_size(item.get("buffer", DEFAULT_BUFFER)),
                   parse_duration(item.get("flush", DEFAULT_FLUSH)))


def parse_access_log(value: Any) -> tuple[LogSpec, ...]:
    """`off` (YAML's false too) → (); `on` → the default path; else the targets."""
    if value is None or value is False or value == "off":
        return ()
    if value is True:
        return (LogSpec(DEFAULT_PATH),)
    items = value if isinstance(value, list) else [value]
    return tuple(_spec(item) for item in items)


def dump_access_log(specs: tuple[LogSpec, ...]) -> Any:
    out: list[Any] = [
        s.path if s == LogSpec(s.path) else
        {"path": s.path, "format": s.format, "buffer": format_size(s.buffer),
         "flush": format_duration(s.flush)}
        for s in specs]
    return "off" if not out else out[0] if len(out) == 1 else out


def resolve(path: str, prefix: Path) -> str:
    """A log path as the core resolves `path=True` strings: relative → under the prefix."""
    return path if path.startswith("/") else str(prefix / path)


def all_specs(config: Any) -> Iterator[LogSpec]:
    """Every target named anywhere in the config (inherited ones repeat)."""
    http = config["http"]
    yield from http["access_log"]
    for server in http["servers"]:
        yield from server["access_log"]
        for location in server["locations"]:
            yield from location["access_log"]


# -- files ----------------------------------------------------------------------------

class LogFile:
    """One access log of one worker: buffered lines, written with one os.write."""

    def __init__(self, path: str, buffer: int, flush: float, ctx: ProcessContext) -> None:
        self.path, self.buffer, self.interval = path, buffer, flush
        self.loop, self.log = ctx.loop, ctx.log
        self.lines: list[str] = []
        self.size = 0
        self.timer: Any = None
        self.failing = False
        self.fd = self._open()

    def _open(self) -> int:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o644)
        except OSError as exc:
            self.log.error("cannot open access log %s: %s", self.path, exc.strerror)
            return -1

    def write(self, text: str) -> None:
        self.lines.append(text)
        self.size += len(text)
        if self.size >= self.buffer:
            self.flush()
        elif self.timer is None and self.loop is not None:
            self.timer = self.loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lines:
            return
        data = "".join(self.lines).encode("utf-8", "replace")
        self.lines.clear()
        self.size = 0
        if self.fd >= 0:
            self._write(memoryview(data))

    def _write(self, view: memoryview) -> None:
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            if not self.failing:
                self.log.error("writing access log %s failed: %s (lines are lost until it "
                               "works again)", self.path, exc.strerror)
            self.failing = True
            return
        if self.failing:
            self.log.notice("writing access log %s works again", self.path)
            self.failing = False

    def reopen(self) -> None:
        self.flush()
        fd = self._open()
        if fd >= 0:
            old, self.fd = self.fd, fd
            if old >= 0:
                os.close(old)

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class AccessLogs:
    """A worker's access logs: open files, compiled formats, loggers per target list."""

    def __init__(self, ctx: ProcessContext) -> None:
        self.ctx = ctx
        self.formats = {**BUILTIN_FORMATS, **ctx.config["http"]["log_format"]}
        self.files: dict[str, LogFile] = {}
        self.lines: dict[str, Callable[[Record], str]] = {}
        self.loggers: dict[tuple[LogSpec, ...], tuple] = {}
        self.env = line_env()

    def open_all(self) -> None:
        for spec in all_specs(self.ctx.config):
            self.loggers_for((spec,))

    def loggers_for(self, specs: tuple[LogSpec, ...]) -> tuple:
        """(line function, LogFile) for each target of an `access_log` value."""
        found = self.loggers.get(specs)
        if found is None:
            found = self.loggers[specs] = tuple((self._line(s.format), self._file(s))
                                                for s in specs)
        return found

    def _line(self, name: str) -> Callable[[Record], str]:
        line = self.lines.get(name)
        if line is None:
            fmt = self.formats.get(name) or self.formats["combined"]  # init_master warned
            line = self.lines[name] = compile_format(fmt, self.env)
        return line

    def _file(self, spec: LogSpec) -> LogFile:
        path = resolve(spec.path, self.ctx.config.prefix)
        found = self.files.get(path)
        if found is None:
            found = self.files[path] = LogFile(path, spec.buffer, spec.flush, self.ctx)
        return found

    def reopen(self) -> None:
        for f in self.files.values():
            f.reopen()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


# -- hooks, handler and filter ---------------------------------------------------------

def init_master(ctx: ProcessContext) -> None:
    """Warn about unknown format names (combined is used); create the files."""
    formats = {**BUILTIN_FORMATS, **ctx.config["http"]["log_format"]}
    for spec in set(all_specs(ctx.config)):
        if spec.format not in formats:
            ctx.log.error("access_log %s: unknown log_format %r, using combined",
                          spec.path, spec.format)
    create_files(ctx)


def create_files(ctx: ProcessContext) -> None:
    """Create every log file (and its directory), owned by `user` when the master runs
    as root, so that workers that dropped privileges can open it."""
    config = ctx.config
    ids = None
    with contextlib.suppress(KeyError):
        ids = resolve_user(config["user"], config["group"])
    for path in {resolve(spec.path, config.prefix) for spec in all_specs(config)}:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o644))
            if ids is not None:
                os.chown(path, *ids)
        except OSError as exc:
            ctx.log.error("cannot create access log %s: %s", path, exc.strerror)


def init_worker(ctx: ProcessContext) -> None:
    logs = ctx.state[STATE_KEY] = AccessLogs(ctx)
    logs.open_all()


def exit_worker(ctx: ProcessContext) -> None:
    logs = ctx.state.pop(STATE_KEY, None)
    if logs is not None:
        logs.close()


def reopen_logs(ctx: ProcessContext) -> None:
    """USR1: a worker flushes and reopens its files; the master (should the core call
    this hook there too, before it signals the workers) creates the new files."""
    if ctx.role == "master":
        create_files(ctx)
        return
    logs = ctx.state.get(STATE_KEY)
    if logs is not None:
        logs.reopen()


def log_records(records: list[Record]) -> None:
    """Log phase, for a loop iteration's records: format each for each target of its
    location (or server) and buffer the lines."""
    for record in records:
        scope = record[LOCATION] or record[SERVER]  # the server's: no location
        loggers = scope.state.get(STATE_KEY)
        if loggers is None:
            logs: AccessLogs | None = record[PROCESS].state.get(STATE_KEY)
            if logs is None:  # the worker has already closed its logs (a late fast stop)
                return
            loggers = scope.state[STATE_KEY] = logs.loggers_for(scope.config["access_log"])
        for line, log_file in loggers:
            try:
                log_file.write(line(record))
            except Exception:
                log_file.log.exception("*%s access log %s: cannot format a record",
                                       record[CONN_ID], log_file.path)


def _enabled(config: Mapping[str, Any]) -> bool:
    return bool(config["access_log"])


module = Module(
    name="access_log",
    directives=(
        Directive("access_log",
                  Custom("off, a path, {path, format, buffer, flush} or a list of those",
                         parse_access_log, dump_access_log),
                  "off", HSL, path=True,
                  doc="Where requests are logged: `off`, a path (format `combined`), or "
                      "`{path, format, buffer: 64k, flush: 1s}`; a list logs to several. "
                      "Relative paths are under the prefix."),
        Directive("log_format", Custom("mapping of name to template", parse_formats,
                                       dump_formats),
                  {}, (HTTP,),
                  doc="Named line templates with `$variables` (`$remote_addr`, "
                      "`$time_local`, `$time_iso8601`, `$request`, `$request_method`, "
                      "`$uri`, `$args`, `$status`, `$body_bytes_sent`, `$request_time`, "
                      "`$connection`, `$pid`, `$server_name`, `$host`, `$remote_user`, "
                      "`$http_NAME`), or `{template, escape: default|json}`; `combined` "
                      "and `json` are built in."),
    ),
    init_master=init_master,
    init_worker=init_worker,
    exit_worker=exit_worker,
    reopen_logs=reopen_logs,
    phase_handlers=[PhaseHandler("log", log_records, applies=_enabled, records=True)],
    doc="nginx's access log: formats compiled at start, buffered per worker, USR1 reopens.",
)

__all__ = ["BUILTIN_FORMATS", "LogFormat", "LogSpec", "compile_format", "module"]
