"""`add_header`: extra response headers (nginx's headers module).

`add_header: [[NAME, VALUE], [NAME, VALUE, always], ...]` or a mapping
`{NAME: VALUE}`, in http, server or location context.  A header filter appends the
headers to responses with a 2xx or 3xx status; an entry marked `always` is added
to every response.  Inheritance is nginx's: a level that sets `add_header` replaces
everything it would inherit.  An empty value adds nothing (as in nginx); names
must be HTTP tokens and values cannot hold control characters, so a config cannot
split a response.

The filter never changes a response in place (the core may share one, such as its
404): it returns a copy with the headers added.  It runs late (order 800), after
`error_page` (order 100), so the headers are added to the error page served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...config.schema import HTTP, LOCATION, SERVER, Directive
from ...config.types import Custom
from ...module import Filter, Module
from ..phases import Request
from ..response import Response

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
ORDER = 800


@dataclass(frozen=True)
class AddHeaders:
    """The compiled list: every (name, value, always) entry, and the two header lists."""

    entries: tuple[tuple[str, str, bool], ...]
    success: tuple[tuple[str, str], ...]  # for 2xx/3xx responses
    always: tuple[tuple[str, str], ...]  # for the others

    def __bool__(self) -> bool:
        return bool(self.entries)


def _entry(item: Any) -> tuple[str, str, bool]:
    if not isinstance(item, list) or len(item) not in (2, 3) or \
            (len(item) == 3 and item[2] != "always"):
        raise ValueError(f"expected [NAME, VALUE] or [NAME, VALUE, always], got {item!r}")
    name, value = item[0], item[1]
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not an HTTP token")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"header {name}: expected a string value, got {value!r}")
    value = str(value)
    if _BAD_VALUE.search(value):
        raise ValueError(f"header {name}: the value has control characters")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name}: the value must be latin-1 text") from None
    return name, value, len(item) == 3


def parse_add_header(value: Any) -> AddHeaders:
    if value is None:
        value = []
    if isinstance(value, dict):
        value = [[k, v] for k, v in value.items()]
    if not isinstance(value, list):
        raise ValueError("expected a list of [NAME, VALUE, always?] or a mapping NAME: VALUE")
    entries = tuple(_entry(item) for item in value)
    return AddHeaders(entries,
                      tuple((n, v) for n, v, _ in entries if v),
                      tuple((n, v) for n, v, always in entries if v and always))


def _dump(spec: AddHeaders) -> list[list[str]]:
    return [[n, v] + (["always"] if always else []) for n, v, always in spec.entries]


def add_headers(request: Request, response: Response) -> Response | None:
    spec: AddHeaders = request.location.config["add_header"]
    extra = spec.success if 200 <= response.status < 400 else spec.always
    if not extra:
        return None
    return Response(response.status, response.body, response.headers + list(extra),
                    stream=response.stream, file=response.file)


module = Module(
    name="headers",
    directives=[
        Directive("add_header", Custom("list of [NAME, VALUE, always?] or mapping",
                                       parse_add_header, _dump), [], (HTTP, SERVER, LOCATION),
                  doc="Headers added to 2xx/3xx responses (`always`: to every response), "
                      "e.g. `[[X-Frame-Options, DENY], [Cache-Control, no-store, always]]` "
                      "or `{X-Frame-Options: DENY}`; a level that sets it replaces the "
                      "inherited list."),
    ],
    header_filters=[
        Filter(add_headers, order=ORDER, applies=lambda cfg: bool(cfg["add_header"])),
    ],
    doc="nginx's headers module: add_header.",
)
