"""`gzip`: compress responses on the fly (nginx's gzip module).

Theory of operation
-------------------
The header filter decides once per response; a response is *eligible* when

    the location has `gzip: on`          (`applies` keeps other locations' chains clean)
    its status is in COMPRESSIBLE        (never 204, 206, 304 or 1xx)
    it has no Content-Encoding and no `Cache-Control: no-transform`
    its body is bytes or a stream        (file bodies go out by sendfile: skipped)
    its media type is in `gzip_types`    (`*` is every type, `text/*` a whole type;
                                          no Content-Type means `default_type`)
    it is long enough                    (bytes: `gzip_min_length`; a stream: its
                                          Content-Length header if it has one, else
                                          its length is unknown and it is compressed)

An eligible response gets `Vary: Accept-Encoding` whether or not this client takes
gzip (a cache must know the response depends on it).  When the client accepts gzip
(Accept-Encoding with q-values: `gzip;q=0` refuses, `*` counts when gzip is not
named; parsed values are cached), the response also gets `Content-Encoding: gzip`,
loses Content-Length (the writer counts a bytes body; a stream is chunked) and its
strong ETag becomes weak (the bytes differ, the representation does not).  The
decision is kept in `request.ctx` with the response it is for, so the body filter
compresses exactly that response: a bytes body in one `zlib.compress` call, a stream
chunk by chunk through one compressor, each chunk followed by Z_SYNC_FLUSH so that
every chunk (a Server-Sent Event, say) can be decoded as soon as it arrives; the
last call adds the gzip trailer.

HEAD gets the headers a GET would get; a bytes body is compressed all the same, so
its Content-Length is the GET's (the writer sends no body for HEAD).

Filter order (the core sorts each chain by `order`, lowest first): gzip is 900 in
both chains.  Before it in the header chain: `error_page` 100, `conditional` 150 (a
304 is decided on the uncompressed response's validators and is never compressed),
`cors` 300, `add_header` 800 (it returns a copy of the response, and the body filter
compresses only the response the header filter saw, so gzip must come after every
filter that replaces the response).  After it: the access log's 10000.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Directive
from bizzyd.config.types import Bool, Custom, Int, Size
from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd.module import Filter, Module

ORDER = 900
HSL = (HTTP, SERVER, LOCATION)
CTX_KEY = "gzip"
GZIP_WBITS = 31  # deflate with a gzip header and trailer
COMPRESSIBLE = frozenset({200, 201, 202, 203, 403, 404})
DEFAULT_TYPES = "application/json text/plain text/css application/javascript text/html"
ACCEPT_CACHE_SIZE = 256


# -- directives ----------------------------------------------------------------

def parse_types(value: Any) -> frozenset[str]:
    """`gzip_types`: a list (or a space-separated string) of MIME types, `*`, `type/*`."""
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ValueError("expected a list of MIME types such as [text/html, application/json]")
    types = frozenset(i.strip().lower() for i in items)
    for t in types:
        if t != "*" and t.count("/") != 1:
            raise ValueError(f"{t!r} is not a MIME type (type/subtype), `type/*` or `*`")
    return types


def dump_types(types: frozenset[str]) -> list[str]:
    return sorted(types)


DIRECTIVES = (
    Directive("gzip", Bool(), False, HSL,
              doc="Compress responses with gzip for clients that accept it."),
    Directive("gzip_types", Custom("list of MIME types", parse_types, dump_types),
              DEFAULT_TYPES, HSL,
              doc="Media types to compress (`*` for all, `text/*` for a whole type); "
                  "a response without Content-Type has `default_type`."),
    Directive("gzip_min_length", Size(), 256, HSL,
              doc="Bodies shorter than this are sent as they are (a stream of unknown "
                  "length is always compressed)."),
    Directive("gzip_comp_level", Int(min=1, max=9), 1, HSL,
              doc="zlib compression level, 1 (fastest) to 9 (smallest)."),
)


# -- Accept-Encoding --------------------------------------------------------------

def _qvalue(params: str) -> float:
    """The q of `;q=0.5` parameters (1 when absent, 0 when unreadable)."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def parse_accepts_gzip(value: str) -> bool:
    """Whether an Accept-Encoding value accepts gzip (RFC 9110 12.5.3)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in value.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            q = _qvalue(params)
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            star_q = _qvalue(params)
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


@functools.lru_cache(maxsize=ACCEPT_CACHE_SIZE)
def accepts_gzip(value: str) -> bool:
    """`parse_accepts_gzip`, cached: clients send few distinct values."""
    return parse_accepts_gzip(value)


# -- filters -----------------------------------------------------------------------

def add_vary(response: Response, token: str) -> None:
    """Add a field name to Vary unless it is there (or Vary is `*`)."""
    current = response.header("vary")
    if current is None:
        response.headers.append(("Vary", token))
        return
    names = [t.strip().lower() for t in current.split(",")]
    if "*" not in names and token.lower() not in names:
        response.set_header("Vary", f"{current}, {token}")


def type_matches(types: frozenset[str], content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return (media in types or "*" in types
            or media.partition("/")[0] + "/*" in types)


def _long_enough(response: Response, min_length: int) -> bool:
    if response.stream is None:
        return len(response.body) >= min_length
    declared = response.header("content-length")
    return declared is None or not declared.isdigit() or int(declared) >= min_length


def eligible(response: Response, config: Mapping[str, Any]) -> bool:
    """Whether the response may be compressed at all (see the module docstring)."""
    if response.status not in COMPRESSIBLE or response.file is not None:
        return False
    encoding = transform = None
    content_type = config["default_type"]
    for name, value in response.headers:
        lname = name.lower()
        if lname == "content-type":
            content_type = value
        elif lname == "content-encoding":
            encoding = value
        elif lname == "cache-control":
            transform = value
    if encoding or (transform and "no-transform" in transform.lower()):
        return False
    return (type_matches(config["gzip_types"], content_type)
            and _long_enough(response, config["gzip_min_length"]))


def gzip_header_filter(request: Request, response: Response) -> None:
    config = request.location.config
    if not eligible(response, config):
        return
    add_vary(response, "Accept-Encoding")
    accept = request.header("accept-encoding")
    if not accept or not accepts_gzip(accept):
        return
    response.remove_header("Content-Length")
    response.headers.append(("Content-Encoding", "gzip"))
    etag = response.header("etag")
    if etag is not None and not etag.startswith("W/"):
        response.set_header("ETag", "W/" + etag)
    level = config["gzip_comp_level"]
    compressor = (zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)
                  if response.stream is not None else None)
    request.ctx[CTX_KEY] = (response, level, compressor)


def gzip_body_filter(request: Request, response: Response, chunk: bytes, last: bool) -> bytes:
    state = request.ctx.get(CTX_KEY)
    if state is None or state[0] is not response:
        return chunk
    _, level, compressor = state
    if compressor is None:
        return zlib.compress(chunk, level, GZIP_WBITS)
    out = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH) if chunk else b""
    if last:
        out += compressor.flush(zlib.Z_FINISH)
    return out


def _enabled(config: Mapping[str, Any]) -> bool:
    return bool(config["gzip"])


module = Module(
    name="gzip",
    directives=DIRECTIVES,
    header_filters=[Filter(gzip_header_filter, ORDER, _enabled)],
    body_filters=[Filter(gzip_body_filter, ORDER, _enabled)],
    doc="Compress responses with gzip (nginx's gzip module); streams are flushed per chunk.",
)

__all__ = ["accepts_gzip", "eligible", "module", "parse_accepts_gzip"]
