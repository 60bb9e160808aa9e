"""Servers and locations, compiled from the config and matched like nginx.

Location matching, for a decoded, normalized path:
1. an exact location (`= /health`) that equals the path wins at once;
2. otherwise the longest matching prefix is remembered; if it is a `^~` prefix it wins;
3. otherwise regex locations (`~` case-sensitive, `~*` case-insensitive) are tried in
   config order, and the first that matches wins (its named groups become captures);
4. otherwise the remembered longest prefix wins, if any (else: no location, 404).

Server selection: a connection arrives on a listen address; among the servers that
listen there, the one whose `server_name` matches the Host header is used, else the
first (the default server).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from ..stats import empty_counters
from .response import StaticResponse

_PCRE_NAMED = re.compile(r"\(\?<(?![=!])")
CACHE_SIZE = 4096


@dataclass
class Location:
    """One compiled location: its match, merged config and what serves it."""

    match: str
    config: Mapping[str, Any]
    kind: str = "prefix"  # exact | prefix | caret | regex
    pattern: str = ""
    regex: re.Pattern[str] | None = None
    static: StaticResponse | None = None
    handlers: tuple[tuple[int, Callable[..., Any]], ...] = ()
    log_handlers: bool = False  # the log phase has a handler here: one of
    log_requests: tuple[Callable[..., Any], ...] = ()  # those taking the Request,
    log_records: tuple[Callable[..., Any], ...] = ()  # those taking batches of records
    location_start: int = 0  # index of the first location-phase handler
    header_filters: tuple[Callable[..., Any], ...] = ()
    body_filters: tuple[Callable[..., Any], ...] = ()
    content: Callable[..., Any] | None = None
    # the content handler's `quick(process, location, captures)`, usable here: no
    # handler or filter in the way (set by `seal`)
    quick: Callable[..., StaticResponse | None] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    stats: list[int] = field(default_factory=empty_counters)

    fast: bool = False  # served from `static` with no handler or filter: set by `seal`

    @property
    def filtered(self) -> bool:
        return bool(self.header_filters or self.body_filters)

    def seal(self) -> None:
        """Compute `fast` once the handlers, filters and static response are set."""
        plain = not self.handlers and not self.filtered
        self.fast = self.static is not None and plain
        self.quick = getattr(self.content, "quick", None) if plain else None


def parse_match(match: str) -> tuple[str, str, re.Pattern[str] | None]:
    """'= /x' → exact, '^~ /x' → caret, '~ re' / '~* re' → regex, '/x' → prefix."""
    op, _, rest = match.partition(" ")
    rest = rest.strip()
    if op == "=":
        return "exact", rest, None
    if op == "^~":
        return "caret", rest, None
    if op in ("~", "~*"):
        flags = re.IGNORECASE if op == "~*" else 0
        try:
            return "regex", rest, re.compile(_PCRE_NAMED.sub("(?P<", rest), flags)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {rest!r}: {exc}") from None
    if not match.startswith("/") and match != "@":
        raise ValueError(f"a location match starts with '/', '=', '^~', '~' or '~*': {match!r}")
    return "prefix", match, None


class Server:
    """A virtual server: its names and its locations."""

    def __init__(self, config: Mapping[str, Any], locations: Sequence[Location],
                 handlers: tuple[tuple[int, Callable[..., Any]], ...] = ()) -> None:
        self.config = config
        self.handlers = handlers
        # the log phase of requests that have no location (404, rejected requests)
        self.log_handlers = False
        self.log_requests: tuple[Callable[..., Any], ...] = ()
        self.log_records: tuple[Callable[..., Any], ...] = ()
        self.state: dict[str, Any] = {}  # like Location.state, for those requests
        self.names = [n.lower() for n in config["server_name"]]
        self.locations = list(locations)
        self.exact = {loc.pattern: loc for loc in locations if loc.kind == "exact"}
        self.prefixes = sorted((loc for loc in locations if loc.kind in ("prefix", "caret")),
                               key=lambda loc: len(loc.pattern), reverse=True)
        self.regexes = [loc for loc in locations if loc.kind == "regex"]
        self._cache: dict[str, tuple[Location | None, dict[str, str]]] = {}

    def find(self, path: str) -> tuple[Location | None, dict[str, str]]:
        """The location for a normalized path, with its regex captures (cached)."""
        hit = self._cache.get(path)
        if hit is None:
            hit = self._find(path)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[path] = hit
        return hit

    def _find(self, path: str) -> tuple[Location | None, dict[str, str]]:
        loc = self.exact.get(path)
        if loc is not None:
            return loc, {}
        best = next((p for p in self.prefixes if path.startswith(p.pattern)), None)
        if best is not None and best.kind == "caret":
            return best, {}
        for loc in self.regexes:
            m = loc.regex.search(path) if loc.regex else None
            if m:
                return loc, {k: v for k, v in m.groupdict().items() if v is not None}
        return best, {}

    def matches_name(self, host: str) -> bool:
        for name in self.names:
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return True
        return False


class Router:
    """Servers grouped by listen key; picks the server for a connection and Host."""

    def __init__(self, servers_by_key: Mapping[tuple, Sequence[Server]],
                 default: Server, servers: Sequence[Server] = ()) -> None:
        self.by_key = dict(servers_by_key)
        self.default = default
        self.servers = list(servers)
        self.unrouted = Location("(none)", {})

    def locations(self) -> list[Location]:
        """Every location in stats order: the unrouted holder first."""
        return [self.unrouted] + [loc for s in self.servers for loc in s.locations]

    def servers_for(self, key: tuple) -> Sequence[Server]:
        return self.by_key.get(key) or [self.default]

    @staticmethod
    def pick(servers: Sequence[Server], host: bytes | None) -> Server:
        if len(servers) == 1 or not host:
            return servers[0]
        name = host.decode("latin-1").lower()
        name = name.rsplit("]", 1)[0] + "]" if name.startswith("[") else name.rsplit(":", 1)[0]
        name = name.rstrip(".")
        for server in servers:
            if server.matches_name(name):
                return server
        return servers[0]


def normalize_path(raw: bytes) -> str | None:
    """Decode %XX, merge slashes, resolve `.` and `..`; None when it climbs above /."""
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
        if b"\0" in raw:
            return None
    path = raw.decode("utf-8", "surrogateescape")
    if "//" not in path and "/." not in path:
        return path
    parts: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if not parts:
                return None
            parts.pop()
        elif seg and seg != ".":
            parts.append(seg)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and parts else ""
    return "/" + "/".join(parts) + trailing
