"""`conditional`: answer 304 Not Modified to conditional GET/HEAD (nginx's
not_modified filter), and compute weak ETags for `etag: on`.

Theory of operation
-------------------
One header filter, order 150 (the core sorts each chain by `order`, lowest
first): after `error_page` (100), before `cors` (300), `add_header` (800), `gzip`
(900) and the access log's (10000), so validators are compared on the uncompressed
response, a 304 is never compressed, and it still gets CORS and add_header fields.

For a 200 response:

1. `etag: on` and a bytes body without an ETag: add `ETag: W/"<hash>"`, 16 hex
   digits of blake2b (8-byte digest) of the body.
2. Only GET and HEAD are answered with 304 (RFC 9110 13.1; the filter runs after
   the handler, so for an unsafe method the change is already made: a handler that
   wants If-Match / 412 must check before it acts; this module does not).
3. If-None-Match, when present, decides alone: `*` or any listed tag equal to the
   response's ETag under weak comparison (`W/` ignored on both sides) gives 304.
4. Otherwise If-Modified-Since against Last-Modified, by `if_modified_since`:
   `exact` (the default, as nginx) when the dates are equal, `before` when the
   Last-Modified is not later than it (RFC 9110 13.1.3), `off` never.

The 304 keeps the response's headers (ETag, Last-Modified, Cache-Control, Vary,
Set-Cookie, ...) but not the ones that describe its body (Content-Type,
Content-Length, Content-Encoding, Content-Range, Transfer-Encoding); a file body's
file is closed, a stream is not started.

`applies`: a location whose `return` is fixed never carries validators, so the
filter is compiled into it only with `etag: on`; such locations keep the core's
pre-rendered fast path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from email.utils import mktime_tz, parsedate_tz
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Directive
from bizzyd.config.types import Bool, Enum
from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd.module import Filter, Module

ORDER = 150
HSL = (HTTP, SERVER, LOCATION)
CONDITIONAL_METHODS = frozenset({"GET", "HEAD"})
BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding",
                          "content-range", "transfer-encoding"})
_OPAQUE_TAG = re.compile(r'"[^"]*"')

DIRECTIVES = (
    Directive("etag", Bool(), False, HSL,
              doc='Add `ETag: W/"<hash of the body>"` to 200 responses with a bytes body '
                  "and no ETag of their own."),
    Directive("if_modified_since", Enum("off", "exact", "before"), "exact", HSL,
              doc="How If-Modified-Since is compared with Last-Modified for a 304: "
                  "`exact` (equal dates), `before` (not modified since), `off`."),
)


def weak_etag(body: bytes) -> str:
    return f'W/"{hashlib.blake2b(body, digest_size=8).hexdigest()}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of an If-None-Match value (a list, or `*`) with an ETag."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag == opaque for tag in _OPAQUE_TAG.findall(if_none_match))


def http_date(value: str) -> int | None:
    """Seconds since the epoch of an HTTP date, or None when it is not one."""
    parts = parsedate_tz(value)
    if parts is None:
        return None
    try:
        return mktime_tz(parts)
    except (OverflowError, ValueError):
        return None


def not_modified_since(if_modified_since: str, last_modified: str, mode: str) -> bool:
    if if_modified_since == last_modified:
        return mode != "off"
    since, modified = http_date(if_modified_since), http_date(last_modified)
    if since is None or modified is None or mode == "off":
        return False
    return modified == since if mode == "exact" else modified <= since


def not_modified(response: Response) -> Response:
    """The 304 for a response (its file closed, its body headers dropped)."""
    if response.file is not None:
        response.file.file.close()
    headers = [(k, v) for k, v in response.headers if k.lower() not in BODY_HEADERS]
    return Response(304, b"", headers)


def _preconditions(request: Request) -> tuple[str | None, str | None]:
    """(If-None-Match, If-Modified-Since) in one pass over the request headers."""
    inm = ims = None
    for name, value in request.headers:
        lname = name.lower()
        if lname == b"if-none-match" and inm is None:
            inm = value.decode("latin-1")
        elif lname == b"if-modified-since" and ims is None:
            ims = value.decode("latin-1")
    return inm, ims


def conditional_filter(request: Request, response: Response) -> Response | None:
    if response.status != 200:
        return None
    config = request.location.config
    if config["etag"] and response.stream is None and response.file is None \
            and response.header("etag") is None:
        response.headers.append(("ETag", weak_etag(response.body)))
    if request.method not in CONDITIONAL_METHODS:
        return None
    inm, ims = _preconditions(request)
    if inm is not None:
        etag = response.header("etag")
        return not_modified(response) if etag and etag_matches(inm, etag) else None
    if ims is None:
        return None
    last_modified = response.header("last-modified")
    if last_modified and not_modified_since(ims, last_modified, config["if_modified_since"]):
        return not_modified(response)
    return None


def _applies(config: Mapping[str, Any]) -> bool:
    return bool(config["etag"]) or config["return"] is None


module = Module(
    name="conditional",
    directives=DIRECTIVES,
    header_filters=[Filter(conditional_filter, ORDER, _applies)],
    doc="304 Not Modified for If-None-Match / If-Modified-Since; weak ETags (`etag: on`).",
)

__all__ = ["etag_matches", "module", "not_modified_since", "weak_etag"]
