"""Route declarations: one record per endpoint, used to validate, serve and document it.

    HIVE = Route("GET", "/v1/hives/{id}", "A hive's details", response=HiveDetail,
                 params=(Param("id", Int(min=1), where="path"),), errors=(404,))

    @endpoint(HIVE)
    async def hive(call: Call) -> Reply | msgspec.Struct:
        ...

`endpoint` turns such a function into a bizzyd content handler (name it in a
location's `content:`) and attaches the route to it (`handler.route`), where the
OpenAPI generator finds it.  The wrapper:

* parses the query string and the path captures against `route.params` (unknown,
  repeated or malformed parameters → 400 problem+json naming the parameter);
* calls the function with a `Call` (the validated `params`, the `request`, the
  worker's `process` context);
* encodes what it returns: a msgspec Struct (JSON via msgspec), or a ready `Reply`
  (body bytes, e.g. from a cache);
* adds `Cache-Control: public, max-age=<route.max_age>` to 200 answers;
* turns `Problem` and the core's `HTTPError` (e.g. the database's 503 with
  Retry-After) into problem+json.

ETag/304, gzip and CORS are the `conditional`, `gzip` and `cors` modules' filters,
configured on the locations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import msgspec

from bizzyd.http.phases import Request
from bizzyd.http.response import HTTPError, Response

from .params import Param
from .problem import Problem, from_http_error

JSON = "application/json"
MAX_QUERY_FIELDS = 64
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Route:
    """An endpoint: method, OpenAPI path template, parameters, response schema."""

    method: str
    path: str
    summary: str
    response: type
    params: Sequence[Param] = ()
    description: str = ""
    tags: Sequence[str] = ()
    errors: Sequence[int] = (400,)  # statuses besides 200, each problem+json
    max_age: int = 60  # Cache-Control max-age of 200 answers (0: no-cache)
    operation_id: str = ""
    # request bodies and signed-in endpoints (issue 16): a msgspec Struct the JSON body
    # must decode to (422 naming the field otherwise), the bearer token requirement
    # (documented as a security requirement; enforced by modules.auth on the location),
    # and the status of a success (202, 204: `response` None, no body)
    body: type | None = None
    auth: bool = False
    status: int = 200
    # the status of a parameter whose value is refused (malformed or out of range);
    # the analytics endpoints (issue 18) answer 422 there, as for a refused body field
    invalid_status: int = 400
    by_name: Mapping[str, Param] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})


@dataclass
class Call:
    """One request to an endpoint, with its validated parameters."""

    route: Route
    request: Request
    params: dict[str, Any]
    body: Any = None  # the decoded `route.body`

    @property
    def process(self) -> Any:
        return self.request.process

    def canonical(self, skip: Sequence[str] = ()) -> str:
        """The query in normal form: every query parameter with a value (defaults
        filled), sorted by name, values in canonical text; for cache keys and links."""
        parts = []
        for p in sorted(self.route.params, key=lambda p: p.name):
            value = self.params.get(p.name)
            if p.where != "query" or p.name in skip or value is None or value == []:
                continue
            parts.append(f"{p.name}={quote(p.canonical(value), safe=',.-_:')}")
        return "&".join(parts)


@dataclass(frozen=True)
class Reply:
    """A ready JSON body (bytes), for endpoints that render their own (e.g. cached)."""

    body: bytes
    status: int = 200
    headers: Sequence[tuple[str, str]] = ()


def parse_params(route: Route, query: str, captures: Mapping[str, str]) -> dict[str, Any]:
    """Validated parameters (defaults filled) or a Problem naming the parameter: 400
    for an unknown one, `route.invalid_status` for a refused value."""
    try:
        given = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS,
                         errors="strict") if query else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"malformed query string: {exc}") from None
    for name in given:
        p = route.by_name.get(name)
        if p is None or p.where != "query":
            raise Problem(400, "unknown parameter", param=name[:60])
    out: dict[str, Any] = {}
    for p in route.params:
        texts = [captures[p.name]] if p.where == "path" else given.get(p.name)
        if not texts:
            out[p.name] = p.default
            continue
        try:
            out[p.name] = p.parse(texts)
        except ValueError as exc:
            raise Problem(route.invalid_status, str(exc), param=p.name) from None
    return out


def parse_body(route: Route, body: bytes) -> Any:
    """The request body decoded to `route.body`, or a 400 (not JSON) / 422 (a field
    refused, named by its JSON path) Problem."""
    if not body:
        raise Problem(400, "a JSON request body is required")
    try:
        return msgspec.json.decode(body, type=route.body)
    except msgspec.ValidationError as exc:
        reason, param = _refused(str(exc))
        raise Problem(422, reason, param=param) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"malformed JSON body: {exc}") from None


def _refused(text: str) -> tuple[str, str | None]:
    """msgspec's message split into the reason and the refused field's path: "Expected
    `int` - at `$.a.b`" → a.b; "Object contains unknown field `x`" → x."""
    reason, _, where = text.rpartition(" - at `")
    if not reason:
        reason, where = text, ""
    where = where.rstrip("`").removeprefix("$").removeprefix(".")
    unknown = _UNKNOWN.search(reason)
    if unknown is not None:
        where = f"{where}.{unknown[1]}" if where else unknown[1]
    return reason, where or None


_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
Handler = Callable[[Call], Awaitable[Any] | Any]


def endpoint(route: Route) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Make `fn(call)` a content handler serving `route` (see the module docstring)."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        cache_control = (f"public, max-age={route.max_age}" if route.max_age
                         else "no-cache")
        if route.auth:
            cache_control = "private, no-store"

        allowed = ", ".join(sorted({route.method, "HEAD"}))

        @functools.wraps(fn)
        async def handler(request: Request) -> Response:
            if request.method != route.method and request.method != "HEAD":
                return Problem(405, f"{request.method} is not allowed here (only "
                                    f"{allowed})", headers=[("Allow", allowed)]
                               ).response(request.path)
            try:
                call = Call(route, request, parse_params(route, request.query,
                                                         request.captures))
                if route.body is not None:
                    call.body = parse_body(route, request.body)
                result = fn(call)
                if isinstance(result, Awaitable):
                    result = await result
            except Problem as exc:
                return exc.response(request.path)
            except HTTPError as exc:
                return from_http_error(exc).response(request.path)
            if isinstance(result, Reply):
                response = Response(result.status, result.body, result.headers,
                                    content_type=JSON)
            elif result is None:
                response = Response(route.status, b"")
            else:
                response = Response(route.status, _ENCODER.encode(result), content_type=JSON)
            if response.status == 200 or route.auth:
                response.headers.append(("Cache-Control", cache_control))
            return response

        handler.route = route  # type: ignore[attr-defined]
        return handler

    return wrap


def methods(*handlers: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """One content handler for several endpoints of one path (GET, PATCH, DELETE /v1/me):
    dispatched by method (HEAD → GET), 405 with Allow for the others."""
    by_method = {h.route.method: h for h in handlers}  # type: ignore[attr-defined]
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]
    allowed = ", ".join(sorted(by_method))

    async def dispatch(request: Request) -> Response:
        handler = by_method.get(request.method)
        if handler is None:
            return Problem(405, f"{request.method} is not allowed here (only {allowed})",
                           headers=[("Allow", allowed)]).response(request.path)
        return await handler(request)

    dispatch.routes = [h.route for h in handlers]  # type: ignore[attr-defined]
    return dispatch


def not_found(request: Request) -> Response:
    """Content handler `api_not_found`: a problem+json 404 for paths under an API
    prefix that no endpoint serves (e.g. `location: /v1/`)."""
    return Problem(404, "no such endpoint").response(request.path)


def routes_of(handlers: Sequence[Any]) -> list[Route]:
    """The routes of the endpoint handlers among `handlers` (each once, in order)."""
    seen: dict[tuple[str, str], Route] = {}
    for h in handlers:
        for route in (getattr(h, "route", None), *getattr(h, "routes", ())):
            if isinstance(route, Route):
                seen.setdefault((route.method, route.path), route)
    return list(seen.values())
