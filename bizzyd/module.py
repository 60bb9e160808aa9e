"""The module API: how a module describes itself to the core.

A module is any importable Python module (or package) with an attribute `module`
holding a `Module`.  The config's `modules:` list names them by import path, in
order.  The core never knows a module by name: it reads the directives a module
declares, calls its hooks at the right moments, runs its process roles, and plugs
its phase handlers, content handlers and filters into the HTTP engine.

Hooks receive a context object (`MasterContext`, `WorkerContext`, `ProcessContext`)
that holds everything the process has: its config, its logger, its event loop, and a
`state` dict where each module keeps its per-process objects under its own name
(e.g. a database pool).  There is no global state.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config.schema import ConfigError, Directive, Marks
from .shm import Zone, ZoneSpec

if TYPE_CHECKING:
    import asyncio


class Config(Protocol):
    """What a module's hooks may read of the loaded configuration (the loader's
    `bizzyd.config.load.Config` is one): directives by name, where files resolve,
    the modules loaded, and where a key was written."""

    path: Path
    prefix: Path
    tree: dict[str, Any]
    modules: list[Module]

    def __getitem__(self, key: str) -> Any: ...

    def get(self, key: str, default: Any = None) -> Any: ...

    def mark(self, key: tuple) -> tuple[str, int] | None: ...


Hook = Callable[[Any], Awaitable[None] | None]
Command = Callable[[list[str], Config], int]


@dataclass
class ProcessContext:
    """What a process has: passed to every hook and role entry point."""

    config: Config
    log: logging.Logger
    role: str
    slot: int = 0
    generation: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    state: dict[str, Any] = field(default_factory=dict)
    zones: dict[str, Zone] = field(default_factory=dict)
    stats_row: int = 0
    flush_stats: Callable[[], None] | None = None  # a worker's: refresh its stats row
    router: Any = None  # a worker's compiled servers and locations
    # a worker's graceful stop: `retiring` turns True and each callback of `on_retire`
    # runs once, before in-flight requests are waited for (end long streams there)
    retiring: bool = False
    on_retire: list[Callable[[], None]] = field(default_factory=list)


MasterContext = ProcessContext
WorkerContext = ProcessContext


@dataclass(frozen=True)
class ProcessRole:
    """A dedicated process a module adds; the master forks and supervises it.

    `main(ctx)` runs in the child and returns the exit code.  It must return when the
    process receives SIGTERM or SIGQUIT.  `count(config)` says how many to run.
    """

    name: str
    main: Callable[[ProcessContext], int]
    count: Callable[[Config], int] = lambda config: 1
    respawn: bool = True


@dataclass(frozen=True)
class PhaseHandler:
    """A handler for one request phase; lower `order` runs first within the phase.

    `applies(config)` (the location's merged config, or the server's for the
    post_read and server_rewrite phases) says whether the handler is compiled into
    that location's list at all; None means everywhere.

    `records=True` (log phase only): instead of `handler(request)` per request, the
    handler is called as `handler(records)` once per event-loop iteration, with the
    log records of the requests answered in it (a list of plain tuples in the order
    of `bizzyd.http.phases.LOG_FIELDS`; `LogRecord(*record)` names them), and once
    more before `exit_worker`.  On the pre-rendered and quick paths no Request is
    built for it: a per-request logger or counter costs a tuple per request, and
    does its work in a batch, with warm caches.
    """

    phase: str
    handler: Callable[..., Any]
    order: int = 500
    applies: Callable[[Mapping[str, Any]], bool] | None = None
    records: bool = False

    def __post_init__(self) -> None:
        if self.records and self.phase != "log":
            raise ValueError(f"PhaseHandler {self.handler!r}: records=True is for the log "
                             f"phase, not {self.phase!r}")


@dataclass(frozen=True)
class Filter:
    """A header or body filter; each chain runs in ascending `order`.

    Header filter: `filter(request, response)`; it may change the response in place
    or return a replacement Response (None keeps it).
    Body filter: `filter(request, response, chunk: bytes, last: bool) -> bytes`; for
    a bytes body it is called once with the whole body and last=True, for a streamed
    body once per chunk.  File bodies (`response.file`) bypass body filters.
    `applies(location_config)` as for PhaseHandler.
    """

    filter: Callable[..., Any]
    order: int = 500
    applies: Callable[[Mapping[str, Any]], bool] | None = None


@dataclass(frozen=True)
class Module:
    """Everything a module contributes.  Every field is optional but `name`."""

    name: str
    directives: Sequence[Directive] = ()
    init_master: Hook | None = None
    exit_master: Hook | None = None
    init_worker: Hook | None = None
    exit_worker: Hook | None = None
    reopen_logs: Hook | None = None  # USR1, in every process that ran init_worker
    roles: Sequence[ProcessRole] = ()
    zones: Callable[[Config], Sequence[ZoneSpec]] | None = None
    check: Callable[[Config], None] | None = None  # cross-directive checks; ConfigError
    phase_handlers: Sequence[PhaseHandler] = ()
    content_handlers: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    header_filters: Sequence[Filter] = ()
    body_filters: Sequence[Filter] = ()
    commands: Mapping[str, Command] = field(default_factory=dict)
    # import paths of modules this one needs: loaded right after it unless listed
    requires: Sequence[str] = ()
    doc: str = ""


def import_modules(names: Sequence[str], marks: Marks | None = None,
                   loaded: Sequence[Module] = ()) -> list[Module]:
    """Import the modules named in the config, in order, each followed by the modules
    it requires that are not listed; errors point at the entry."""
    listed = [_import_module(name, ("modules", i), marks) for i, name in enumerate(names)]
    modules: list[Module] = list(loaded)
    for i, desc in enumerate(listed):
        if any(m.name == desc.name for m in modules):
            key = ("modules", i)
            raise ConfigError(f"module {desc.name!r} is listed twice", key,
                              (marks or {}).get(key))
        modules.append(desc)
        for name in desc.requires:
            need = _import_module(name, ("modules", i), marks)
            if not any(m.name == need.name for m in modules + listed):
                modules.append(need)
    return modules[len(loaded):]


def _import_module(name: str, key: tuple, marks: Marks | None) -> Module:
    where = (marks or {}).get(key)
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # an import can fail in any way: report it, don't crash
        raise ConfigError(f"cannot import module {name!r}: {exc}", key, where) from None
    desc = getattr(mod, "module", None)
    if not isinstance(desc, Module):
        raise ConfigError(f"{name!r} has no `module` attribute of type bizzyd.Module",
                          key, where)
    return desc
