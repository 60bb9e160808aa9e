"""`cors`: Cross-Origin Resource Sharing headers and preflight answers.

Theory of operation
-------------------
CORS is on where `cors_allow_origins` is not empty (http, server or location,
inherited downward); elsewhere neither the filter nor the handler is compiled in
(`applies`), so other locations pay nothing.

Origins are exact (`https://app.example.com`, compared case-insensitively, without
a trailing slash), a wildcard subdomain (`https://*.example.com` matches
`https://a.example.com`, not `https://example.com`), or `*` (any origin).  An
allowed origin is answered with `Access-Control-Allow-Origin: <origin>`, or `*`
when only `*` let it in; `*` is never combined with credentials (browsers refuse
that), so with `cors_allow_credentials: on` list the origins.  Unless the list is
only `*`, every response of the location gets `Vary: Origin` (a cache must not hand
one origin's answer to another), with or without a matching Origin.

Preflight (OPTIONS with Origin and Access-Control-Request-Method): a phase handler
in `preaccess`, order 50, answers it with 204 before the `access` phase (auth,
address rules) and before `limit_req` (preaccess, order 100): browsers send
preflights without credentials, and a page's preflights should not use up its
rate.  An allowed preflight (origin, method and every
requested header allowed) gets Allow-Origin, Allow-Methods, Allow-Headers
(`cors_allow_headers: ['*']` echoes the requested ones), Allow-Credentials and
Max-Age; a refused one gets a bare 204, which the browser treats as a refusal.  A
plain OPTIONS (no Access-Control-Request-Method) goes on to the location.

Actual requests: the header filter, order 300 (after `error_page` 100 and
`conditional` 150, so error pages and 304s carry the headers too; before
`add_header` 800 and `gzip` 900), adds Allow-Origin, Allow-Credentials and
Expose-Headers for an allowed Origin, unless the handler set its own Allow-Origin.
The policy of a location is compiled on its first request into `location.state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Directive
from bizzyd.config.types import Bool, Custom, Duration, ListOf, Optional, Str
from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd.module import Filter, Module, PhaseHandler

FILTER_ORDER = 300
PREFLIGHT_ORDER = 50
HSL = (HTTP, SERVER, LOCATION)
STATE_KEY = "cors"
PREFLIGHT_KEY = "cors.preflight"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


# -- origins ---------------------------------------------------------------------

@dataclass(frozen=True)
class Origins:
    """`cors_allow_origins`, compiled: exact origins, wildcard subdomains, `*`."""

    items: tuple[str, ...] = ()
    exact: frozenset[str] = frozenset()
    suffixes: tuple[tuple[str, str], ...] = ()  # (scheme://, .domain[:port])
    any: bool = False

    def __bool__(self) -> bool:
        return bool(self.items)

    def allow(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for an Origin, or None."""
        lowered = origin.lower()
        if lowered in self.exact:
            return origin
        for scheme, suffix in self.suffixes:
            if lowered.startswith(scheme) and lowered.endswith(suffix) \
                    and len(lowered) > len(scheme) + len(suffix):
                return origin
        return "*" if self.any else None


def parse_origins(value: Any) -> Origins:
    items = value if isinstance(value, list) else [value]
    exact, suffixes = set(), []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"expected origins such as https://app.example.com, got {item!r}")
        origin = item.lower().rstrip("/")
        if origin == "*":
            continue
        scheme, sep, host = origin.partition("://")
        if not sep or not host or "/" in host:
            raise ValueError(f"{item!r} is not an origin (scheme://host[:port]) or '*'")
        if host.startswith("*."):
            suffixes.append((scheme + "://", host[1:]))
        elif "*" in host:
            raise ValueError(f"{item!r}: a wildcard is only allowed as `*.` before a domain")
        else:
            exact.add(origin)
    return Origins(tuple(items), frozenset(exact), tuple(suffixes), "*" in items)


def dump_origins(origins: Origins) -> list[str]:
    return list(origins.items)


DIRECTIVES = (
    Directive("cors_allow_origins", Custom("list of origins", parse_origins, dump_origins),
              [], HSL,
              doc="Origins allowed to read responses: `https://app.example.com`, "
                  "`https://*.example.com` or `*`; empty turns CORS off."),
    Directive("cors_allow_methods", ListOf(Str(pattern=_TOKEN)), ["GET", "HEAD", "POST"], HSL,
              doc="Methods a preflight may ask for (Access-Control-Allow-Methods)."),
    Directive("cors_allow_headers", ListOf(Str(pattern=_TOKEN)), [], HSL,
              doc="Request headers a preflight may ask for; `*` allows (and echoes) any."),
    Directive("cors_expose_headers", ListOf(Str(pattern=_TOKEN)), [], HSL,
              doc="Response headers scripts may read (Access-Control-Expose-Headers)."),
    Directive("cors_allow_credentials", Bool(), False, HSL,
              doc="Allow cookies and HTTP auth (Access-Control-Allow-Credentials: true); "
                  "applies to listed origins, never to `*`."),
    Directive("cors_max_age", Optional(Duration()), None, HSL,
              doc="How long browsers may cache a preflight answer (Access-Control-Max-Age)."),
)


# -- the compiled policy of a location ----------------------------------------------

@dataclass(frozen=True)
class Policy:
    """A location's CORS settings with the header values joined once."""

    origins: Origins
    methods: frozenset[str]
    methods_value: str
    headers: frozenset[str]  # lowercase
    any_header: bool  # `*` in cors_allow_headers: echo what is asked for
    headers_value: str
    expose_value: str
    credentials: bool
    max_age: str | None
    vary: bool  # responses depend on Origin (the list is not only `*`)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        origins: Origins = config["cors_allow_origins"]
        methods, headers = config["cors_allow_methods"], config["cors_allow_headers"]
        named = [h for h in headers if h != "*"]
        max_age = config["cors_max_age"]
        return cls(origins=origins, methods=frozenset(methods),
                   methods_value=", ".join(methods),
                   headers=frozenset(h.lower() for h in named), any_header="*" in headers,
                   headers_value=", ".join(named),
                   expose_value=", ".join(config["cors_expose_headers"]),
                   credentials=bool(config["cors_allow_credentials"]),
                   max_age=None if max_age is None else str(int(max_age)),
                   vary=bool(origins.exact or origins.suffixes))

    def origin_headers(self, allow: str) -> list[tuple[str, str]]:
        headers = [("Access-Control-Allow-Origin", allow)]
        if self.credentials and allow != "*":
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def preflight_headers(self, method: str, requested: str | None) -> list[tuple[str, str]]:
        """Allow-Methods/Headers/Max-Age for a preflight; [] when it is refused."""
        names = [h.strip() for h in (requested or "").split(",") if h.strip()]
        if method not in self.methods:
            return []
        if not self.any_header and any(n.lower() not in self.headers for n in names):
            return []
        out = [("Access-Control-Allow-Methods", self.methods_value)]
        allowed = ", ".join(names) if self.any_header else self.headers_value
        if allowed:
            out.append(("Access-Control-Allow-Headers", allowed))
        if self.max_age is not None:
            out.append(("Access-Control-Max-Age", self.max_age))
        return out


def policy(request: Request) -> Policy:
    state = request.location.state
    found = state.get(STATE_KEY)
    if found is None:
        found = state[STATE_KEY] = Policy.from_config(request.location.config)
    return found


def add_vary(response: Response, token: str) -> None:
    """Add a field name to Vary unless it is there (or Vary is `*`)."""
    current = response.header("vary")
    if current is None:
        response.headers.append(("Vary", token))
        return
    names = [t.strip().lower() for t in current.split(",")]
    if "*" not in names and token.lower() not in names:
        response.set_header("Vary", f"{current}, {token}")


# -- the preflight handler and the header filter ------------------------------------

def _preflight_fields(request: Request) -> tuple[str | None, str | None, str | None]:
    origin = method = headers = None
    for name, value in request.headers:
        lname = name.lower()
        if lname == b"origin":
            origin = value.decode("latin-1")
        elif lname == b"access-control-request-method":
            method = value.decode("latin-1").strip()
        elif lname == b"access-control-request-headers":
            headers = value.decode("latin-1") if headers is None \
                else f"{headers},{value.decode('latin-1')}"
    return origin, method, headers


def cors_preflight(request: Request) -> Response | None:
    """preaccess, order 50: answer a preflight with 204."""
    if request.method != "OPTIONS":
        return None
    origin, method, requested = _preflight_fields(request)
    if origin is None or method is None:
        return None
    request.ctx[PREFLIGHT_KEY] = True
    pol = policy(request)
    headers = [("Vary", "Origin, Access-Control-Request-Method, "
                        "Access-Control-Request-Headers")]
    allow = pol.origins.allow(origin)
    granted = pol.preflight_headers(method, requested) if allow is not None else []
    if granted:
        headers += pol.origin_headers(allow) + granted
    return Response(204, b"", headers)


def cors_header_filter(request: Request, response: Response) -> None:
    """Header filter, order 300: CORS headers for an allowed Origin."""
    if PREFLIGHT_KEY in request.ctx:
        return
    pol = policy(request)
    if pol.vary:
        add_vary(response, "Origin")
    origin = request.header("origin")
    if origin is None or response.header("access-control-allow-origin") is not None:
        return
    allow = pol.origins.allow(origin)
    if allow is None:
        return
    response.headers += pol.origin_headers(allow)
    if pol.expose_value:
        response.headers.append(("Access-Control-Expose-Headers", pol.expose_value))


def _enabled(config: Mapping[str, Any]) -> bool:
    return bool(config["cors_allow_origins"])


module = Module(
    name="cors",
    directives=DIRECTIVES,
    phase_handlers=[PhaseHandler("preaccess", cors_preflight, PREFLIGHT_ORDER, _enabled)],
    header_filters=[Filter(cors_header_filter, FILTER_ORDER, _enabled)],
    doc="CORS response headers and preflight answers, per location.",
)

__all__ = ["Origins", "Policy", "module", "parse_origins"]
