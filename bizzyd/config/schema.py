"""The config schema: directives declared as data, validated with precise errors.

Theory of operation
-------------------
The config is one YAML tree with four contexts, as in nginx:

    main        top-level keys (worker_processes, pid, a module's own block, ...)
    http        keys under `http:`
    server      keys of each item of `http.servers`
    location    keys of each item of a server's `locations` (plus `location`, the match)

The core and every loaded module declare `Directive` records: a name, a value type,
a default, the contexts it may appear in, and a line of documentation.  Validation
walks the tree, converts each value with its type, and fills the defaults.  A
directive allowed in several of http/server/location is inherited downward: a
location gets its own value, else its server's, else the http block's, else the
default.  Every error names the file, line and key path.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .types import Type

MAIN, HTTP, SERVER, LOCATION = "main", "http", "server", "location"
CONTEXTS = (MAIN, HTTP, SERVER, LOCATION)
_STRUCTURE = {MAIN: ("http", HTTP), HTTP: ("servers", SERVER), SERVER: ("locations", LOCATION)}

KeyPath = tuple[str | int, ...]
Marks = dict[KeyPath, tuple[str, int]]


class ConfigError(Exception):
    """A config problem, located: `file:line: key.path: what is wrong`."""

    def __init__(self, message: str, key: KeyPath = (), where: tuple[str, int] | None = None):
        super().__init__(message)
        self.message, self.key, self.where = message, key, where

    @property
    def key_path(self) -> str:
        return format_key(self.key)

    def __str__(self) -> str:
        where = f"{self.where[0]}:{self.where[1]}: " if self.where else ""
        key = f"{self.key_path}: " if self.key else ""
        return f"{where}{key}{self.message}"


def format_key(key: KeyPath) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class Block:
    """A directive whose value is a mapping of sub-directives (a module's section)."""

    directives: tuple[Directive, ...]
    name: str = "block"


@dataclass(frozen=True)
class Directive:
    """One config option: its name, type, default, contexts and documentation."""

    name: str
    type: Type | Block
    default: Any = None
    context: tuple[str, ...] = (MAIN,)
    doc: str = ""
    path: bool = False  # a filesystem path resolved against the prefix
    required: bool = False
    inherit: bool = True  # False: a level that does not set it gets the default


@dataclass
class Validator:
    """Walks a raw tree against the directives; one per load."""

    directives: Iterable[Directive]
    marks: Marks = field(default_factory=dict)
    prefix: Path = Path(".")

    def __post_init__(self) -> None:
        self.by_context: dict[str, dict[str, Directive]] = {c: {} for c in CONTEXTS}
        for d in self.directives:
            for ctx in d.context:
                self.by_context[ctx][d.name] = d

    def error(self, key: KeyPath, message: str) -> ConfigError:
        return ConfigError(message, key, self._mark(key))

    def _mark(self, key: KeyPath) -> tuple[str, int] | None:
        for n in range(len(key), -1, -1):
            if key[:n] in self.marks:
                return self.marks[key[:n]]
        return None

    def validate(self, raw: Any) -> dict[str, Any]:
        """Validate the whole tree; returns it converted, defaults filled, inherited."""
        tree = self._context(MAIN, raw, (), {})
        return tree

    def _context(self, ctx: str, raw: Any, key: KeyPath, parent: Mapping[str, Any]) -> dict:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.error(key, f"expected a mapping, got {type(raw).__name__}")
        known = self.by_context[ctx]
        child = _STRUCTURE.get(ctx)
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if child and name == child[0]:
                continue
            if name == "location" and ctx == LOCATION:
                out[name] = self._location_match(value, key + (name,))
                continue
            if name not in known:
                raise self.error(key + (name,), self._unknown(name, ctx))
            out[name] = self._value(known[name], value, key + (name,))
        self._fill(ctx, out, key, parent)
        if child:
            out[child[0]] = self._children(child, raw.get(child[0]), key, out)
        return out

    def _fill(self, ctx: str, out: dict, key: KeyPath, parent: Mapping[str, Any]) -> None:
        for name, d in self.by_context[ctx].items():
            if name in out:
                continue
            if name in parent and d.inherit:
                out[name] = parent[name]
            elif d.required:
                raise self.error(key, f"missing required directive {name!r}")
            else:
                out[name] = self._default(d, key + (name,))

    def _children(self, child: tuple[str, str], raw: Any, key: KeyPath, parent: dict) -> Any:
        name, ctx = child
        if ctx == HTTP:
            return self._context(HTTP, raw, key + (name,), {})
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise self.error(key + (name,), f"expected a list of {ctx} blocks")
        inherit = {k: v for k, v in parent.items() if k in self.by_context[ctx]}
        return [self._context(ctx, item, key + (name, i), inherit) for i, item in enumerate(raw)]

    def _value(self, d: Directive, value: Any, key: KeyPath) -> Any:
        if isinstance(d.type, Block):
            return self._block(d.type, value, key)
        try:
            converted = d.type.convert(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        return self._resolve_path(converted) if d.path else converted

    def _block(self, block: Block, raw: Any, key: KeyPath) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.error(key, f"expected a mapping, got {type(raw).__name__}")
        known = {d.name: d for d in block.directives}
        out = {}
        for name, value in raw.items():
            if name not in known:
                raise self.error(key + (name,), self._unknown_in(name, known))
            out[name] = self._value(known[name], value, key + (name,))
        for name, d in known.items():
            if name not in out:
                if d.required:
                    raise self.error(key, f"missing required directive {name!r}")
                out[name] = self._default(d, key + (name,))
        return out

    def _default(self, d: Directive, key: KeyPath) -> Any:
        if isinstance(d.type, Block):
            return self._block(d.type, {}, key)
        return None if d.default is None else self._value(d, d.default, key)

    def _resolve_path(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._resolve_path(v) for v in value]
        if not isinstance(value, str) or value in ("stderr", "off", "") or value.startswith("/"):
            return value
        return str(self.prefix / value) + ("/" if value.endswith("/") else "")

    def _location_match(self, value: Any, key: KeyPath) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "expected a location match such as '/api/', '= /health' "
                             "or '~ ^/v1/(?<id>\\d+)$'")
        return value.strip()

    def _unknown(self, name: str, ctx: str) -> str:
        elsewhere = [c for c in CONTEXTS if name in self.by_context[c]]
        if elsewhere:
            return f"directive {name!r} is not allowed here (allowed in: {', '.join(elsewhere)})"
        return self._unknown_in(name, self.by_context[ctx])

    @staticmethod
    def _unknown_in(name: str, known: Mapping[str, Any]) -> str:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown directive {name!r}{hint}"


def dump(directives: Iterable[Directive], tree: Mapping[str, Any]) -> dict[str, Any]:
    """The validated tree in config syntax (sizes and durations with units)."""
    by_context: dict[str, dict[str, Directive]] = {c: {} for c in CONTEXTS}
    for d in directives:
        for ctx in d.context:
            by_context[ctx][d.name] = d
    return _dump_context(by_context, MAIN, tree)


def _dump_context(by_context: dict, ctx: str, tree: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    child = _STRUCTURE.get(ctx)
    for name, value in tree.items():
        if child and name == child[0]:
            out[name] = (_dump_context(by_context, HTTP, value) if child[1] == HTTP else
                         [_dump_context(by_context, child[1], v) for v in value])
        elif name in by_context[ctx]:
            out[name] = _dump_value(by_context[ctx][name].type, value)
        else:
            out[name] = value
    return out


def _dump_value(t: Type | Block, value: Any) -> Any:
    if isinstance(t, Block):
        known = {d.name: d for d in t.directives}
        return {k: _dump_value(known[k].type, v) if k in known else v for k, v in value.items()}
    return t.dump(value)
