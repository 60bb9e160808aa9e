"""`error_page`: answer error statuses with another page (nginx's error_page).

Shapes (http, server or location context; a level that sets it replaces the
inherited map):

    error_page: {404: /errors/404.json, "500 502 503": /errors/50x.json}
    error_page: [[500, 502, 503, /errors/50x.json], "403 =200 /errors/soft.json"]

A target is `URI`, `=CODE URI` (answer with CODE instead of the original status),
`= URI` (answer with the target's own status) or a full `http(s)://` URL, which
redirects (302, or `=CODE` with a 3xx code).

Theory of operation
-------------------
A header filter (order 100, before add_header) sees the final status of every
response of the location.  Header filters cannot await, so a target URI is looked
up in the server's locations and served synchronously when its location is
- a `return` location: its text (a 3xx return is sent as it is), or
- a static location (root/alias): the file, as a file body, without conditionals
  or ranges.
A target served otherwise (a module's content handler) is not used: the original
response is sent and a warning logged once for that location.  The target
location's phase handlers (access, rewrite) and filters do not run, and an error
page is never itself replaced by another (nginx's `recursive_error_pages off`).
Errors the protocol answers before routing (400, 413, 431 ...) and 404s for paths
that match no location never reach a filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...config.schema import HTTP, LOCATION, SERVER, Directive
from ...config.types import Custom
from ...module import Filter, Module
from ..phases import Request
from ..response import Response
from ._template import clean_path
from .static import error_file, serves_files

ORDER = 100
WARNED = "errors.warned"


@dataclass(frozen=True)
class ErrorPage:
    """One target: a URI (path and query) or a URL, and the status to answer with."""

    text: str
    target: str
    status: int | None  # `=CODE`; None keeps the original (302 for a URL)
    own_status: bool  # `= URI`: the target's status
    url: bool

    def respond(self, request: Request, status: int) -> Response | None:
        if self.url:
            return Response(self.status or 302, b"", [("Location", self.target)])
        loc, _ = request.server.find(self.target)
        if loc is None:
            return None
        if loc.static is not None:
            response = loc.static.to_response()
            if not 300 <= response.status < 400:
                response.status = self.status or (response.status if self.own_status
                                                  else status)
            return response
        if serves_files(loc.config):
            return error_file(loc, self.target, self.status or (200 if self.own_status
                                                                else status))
        if not loc.state.get(WARNED) and request.process is not None:
            loc.state[WARNED] = True
            request.process.log.warning("error_page %s: location %r is neither a return nor "
                                        "a static location; not used", self.text, loc.match)
        return None


@dataclass(frozen=True)
class ErrorPages:
    """The compiled directive: a page per status."""

    pages: Mapping[int, ErrorPage]

    def __bool__(self) -> bool:
        return bool(self.pages)


def parse_target(text: Any) -> ErrorPage:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a URI, '=CODE URI' or a URL, got {text!r}")
    words = text.split()
    status, own = None, False
    if words[0].startswith("=") and len(words) == 2:
        code = words[0][1:]
        own = not code
        if code and (not code.isdigit() or not 100 <= int(code) <= 599):
            raise ValueError(f"{words[0]!r}: expected =CODE with a status 100..599")
        status = int(code) if code else None
        words = words[1:]
    if len(words) != 1:
        raise ValueError(f"expected a URI, '=CODE URI' or a URL, got {text!r}")
    target = words[0]
    if target.startswith(("http://", "https://")):
        if status is not None and status not in (301, 302, 303, 307, 308):
            raise ValueError(f"a redirect needs a 3xx status, got ={status}")
        return ErrorPage(text, target, status, False, True)
    path = clean_path(target.partition("?")[0]) if target.startswith("/") else None
    if path is None:
        raise ValueError(f"the target {target!r} must be a URI starting with / or a URL")
    return ErrorPage(text, path, status, own, False)


def _codes(values: list[Any]) -> list[int]:
    codes = []
    for v in values:
        for word in (v.split() if isinstance(v, str) else [v]):
            code = word if isinstance(word, int) and not isinstance(word, bool) else \
                int(word) if isinstance(word, str) and word.isdigit() else None
            if code is None or not 300 <= code <= 599:
                raise ValueError(f"expected status codes 300..599, got {v!r}")
            codes.append(code)
    return codes


def _items(value: Any) -> list[tuple[list[Any], Any]]:
    if isinstance(value, dict):
        return [([k], v) for k, v in value.items()]
    if not isinstance(value, list):
        raise ValueError("expected a mapping {CODE: TARGET} or a list of [CODE..., TARGET]")
    out = []
    for item in value:
        words = item.split() if isinstance(item, str) else item
        if not isinstance(words, list) or len(words) < 2:
            raise ValueError(f"expected [CODE..., TARGET] or 'CODE... TARGET', got {item!r}")
        if isinstance(words[-2], str) and words[-2].startswith("="):
            out.append((words[:-2], f"{words[-2]} {words[-1]}"))
        else:
            out.append((words[:-1], words[-1]))
    return out


def parse_error_page(value: Any) -> ErrorPages:
    pages: dict[int, ErrorPage] = {}
    for codes, target in _items(value if value is not None else {}):
        page = parse_target(target)
        for code in _codes(codes):
            pages[code] = page
    return ErrorPages(pages)


def _dump(spec: ErrorPages) -> dict[int, str]:
    return {code: page.text for code, page in spec.pages.items()}


def error_page(request: Request, response: Response) -> Response | None:
    page = request.location.config["error_page"].pages.get(response.status)
    if page is None:
        return None
    replacement = page.respond(request, response.status)
    if replacement is not None and response.file is not None:
        response.file.file.close()
    return replacement


module = Module(
    name="errors",
    directives=[
        Directive("error_page", Custom("mapping {CODE: TARGET} or list of [CODE..., TARGET]",
                                       parse_error_page, _dump), [], (HTTP, SERVER, LOCATION),
                  doc="Answer error statuses with a `return` or static location's content, "
                      "e.g. `{404: /errors/404.json, '502 503': '=503 /errors/down.json'}`; "
                      "the status stays unless `=CODE` (or `=` for the target's); an "
                      "http(s):// target redirects (302)."),
    ],
    header_filters=[
        Filter(error_page, order=ORDER, applies=lambda cfg: bool(cfg["error_page"])),
    ],
    doc="nginx's error_page: internal error pages and error redirects.",
)
