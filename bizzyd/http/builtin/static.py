"""Static files: `root`, `alias`, `index`, `try_files` (nginx's static, index and
try_files modules).

Theory of operation
-------------------
A location with `root` or `alias` set and neither `return` nor `content` is served
from the filesystem; other locations compile none of these handlers.

Mapping a path to a file: `root` + path, or, with `alias`, the alias + the path
minus the location's prefix (`/img/` with alias `/data/images/` maps `/img/a.png`
to `/data/images/a.png`; the alias of a prefix ending in `/` is a directory, with
or without its own trailing slash).  In a regex location the alias is the whole
file path and may use the location's named captures (`$name`).  The result is
normalized and must stay under the root (or the alias): what leaves it is 404,
which also closes nginx's "location without a trailing slash" alias traversal
(`/img` + `/data/images/` cannot reach `/data/secret` through `/img../secret`).
Symbolic links are followed, as nginx does by default (`disable_symlinks off`):
whoever can create a link in the document root already controls what it serves.

Serving (content phase, GET and HEAD only, else 405):
- a path ending in `/` is a directory: the first `index` name that is a file is an
  internal redirect to it (the location is looked up again, as in nginx); with none,
  403 if the directory exists (there is no autoindex), else 404;
- a directory without the trailing slash is a 301 to the path with it;
- a missing file is 404, an unreadable one 403, anything but a regular file 404;
- a file gets `ETag: "<mtime hex>-<size hex>"` and `Last-Modified`, answers
  `If-None-Match` (which takes precedence) and `If-Modified-Since` with 304, and one
  `Range` (`bytes=a-b`, `a-`, `-n`) with 206 and Content-Range, honouring
  `If-Range`; an unsatisfiable range gets 416 `Content-Range: bytes */SIZE`; several
  ranges get the whole file (200).  Content-Type comes from the extension (Python's
  built-in table, the same on every host) or `default_type`.

The body is a `FileBody`: the protocol's writer sends it (`loop.sendfile`, or in
pieces where the loop has none) and closes it, also when it is not sent (HEAD).
Files are opened (non-blocking, so a FIFO cannot stall the loop) and stat'ed
synchronously, as nginx does without aio; this module never reads them.

`try_files: [$uri, $uri/, /index.html]` (precontent phase) checks each entry but the
last, in order: an entry ending in `/` must be a directory, others a regular file;
the first that exists becomes the request path, in this location.  When none does,
the last entry decides: `=CODE` answers with that status, a URI is an internal
redirect (its `?args` replace the query string, else it is kept).  Entries may use
`$uri`, `$args`, `$is_args` and the location's named captures.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from ...config.schema import HTTP, LOCATION, SERVER, Directive
from ...config.types import Custom, ListOf, Optional, Str
from ...module import Module, PhaseHandler
from ..phases import REROUTE, Request
from ..response import FileBody, Response, error_body
from ..router import Location
from ._template import Template, clean_path

MIME_TYPES: Mapping[str, str] = mimetypes.MimeTypes().types_map[True]
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
UNSATISFIABLE = (-1, -1)
DIRECTORY = 301


# -- directives ---------------------------------------------------------------------

@dataclass(frozen=True)
class TryFiles:
    """A compiled `try_files`: the entries to check, then the fallback."""

    texts: tuple[str, ...]
    entries: tuple[Template, ...]
    status: int  # the fallback `=CODE`, or 0
    fallback: Template | None


def parse_try_files(value: Any) -> TryFiles | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) < 2 \
            or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of at least two entries, e.g. "
                         "[$uri, $uri/, /index.html] or [$uri, =404]")
    *entries, last = value
    if last.startswith("="):
        if not last[1:].isdigit() or not 100 <= int(last[1:]) <= 599:
            raise ValueError(f"the last entry {last!r} must be =CODE (100..599) or a URI")
        return TryFiles(tuple(value), tuple(map(Template, entries)), int(last[1:]), None)
    if not last.startswith("/"):
        raise ValueError(f"the last entry {last!r} must be =CODE or a URI starting with /")
    return TryFiles(tuple(value), tuple(map(Template, entries)), 0, Template(last))


def _dump_try_files(spec: TryFiles | None) -> list[str]:
    return list(spec.texts) if spec else []


def serves_files(cfg: Mapping[str, Any]) -> bool:
    """Whether a location is served by this module."""
    return (cfg["root"] is not None or cfg["alias"] is not None) \
        and cfg["return"] is None and not cfg["content"]


# -- paths ----------------------------------------------------------------------------

def file_path(loc: Location, uri: str, captures: Mapping[str, str]) -> str | None:
    """The filesystem path of a URI in a location; None when it leaves the root/alias."""
    cfg = loc.config
    alias = cfg["alias"]
    if alias is None:
        base = cfg["root"].rstrip("/")
        return _inside(base + uri, base)
    if loc.kind == "regex":
        template = loc.state.get("static.alias")
        if template is None:
            template = loc.state["static.alias"] = Template(alias)
        base = alias.split("$", 1)[0].rsplit("/", 1)[0]
        return _inside(template.render(lambda name: captures.get(name, "")), base)
    if not uri.startswith(loc.pattern):
        return None
    # `/img/` → `images` is `images/` (the config loader drops the trailing slash of
    # relative paths); `/img` → `images/` cannot reach `images../` (checked by _inside)
    base = alias.rstrip("/")
    joint = "/" if loc.pattern.endswith("/") else ""
    return _inside(base + joint + uri[len(loc.pattern):], base)


def _inside(path: str, base: str) -> str | None:
    norm = os.path.normpath(path)
    if norm != base and not norm.startswith(base + "/"):
        return None
    return norm + "/" if path.endswith("/") and norm != "/" else norm


def content_type(path: str, default: str) -> str:
    ext = os.path.splitext(path)[1]
    return MIME_TYPES.get(ext) or MIME_TYPES.get(ext.lower()) or default


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_file(path: str) -> tuple[Any, os.stat_result] | int:
    """The open regular file and its stat, or a status: 404, 403, DIRECTORY (301)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except PermissionError:
        return 403
    except (OSError, ValueError):
        return 404
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return open(fd, "rb", buffering=0), st
    os.close(fd)
    return DIRECTORY if stat.S_ISDIR(st.st_mode) else 404


# -- the content handler --------------------------------------------------------------

def serve(request: Request) -> Any:
    if request.method not in ("GET", "HEAD"):
        return _error(405, [("Allow", "GET, HEAD")])
    loc = request.location
    path = file_path(loc, request.path, request.captures)
    if path is None:
        return _error(404)
    if path.endswith("/"):
        return _index(request, path)
    opened = open_file(path)
    if opened == DIRECTORY:
        return _slash_redirect(request)
    if isinstance(opened, int):
        return _error(opened)
    return file_response(request, *opened, content_type(path, loc.config["default_type"]))


def _index(request: Request, directory: str) -> Any:
    for name in request.location.config["index"]:
        if name.startswith("/"):
            request.path = name
            return REROUTE
        if _is_file(directory + name):
            request.path += name
            return REROUTE
    return _error(403 if _is_dir(directory) else 404)


def _slash_redirect(request: Request) -> Response:
    url = quote(request.path.encode("utf-8", "surrogateescape"), safe="/:@!$&'()*+,;=-._~")
    url += "/" + (f"?{request.query}" if request.query else "")
    return Response(301, b"", [("Location", url)])


def file_response(request: Request, file: Any, st: os.stat_result, ctype: str) -> Response:
    """200, 206, 304 or 416 for an open file, by the request's conditional headers."""
    etag = f'"{int(st.st_mtime):x}-{st.st_size:x}"'
    headers = [("Last-Modified", formatdate(st.st_mtime, usegmt=True)), ("ETag", etag)]
    if _not_modified(request, etag, int(st.st_mtime)):
        file.close()
        return Response(304, b"", headers)
    size = st.st_size
    headers.append(("Accept-Ranges", "bytes"))
    header = request.header("Range")
    span = parse_range(header, size) if header and size else None
    if span is not None and _if_range(request, etag, int(st.st_mtime)):
        if span == UNSATISFIABLE:
            file.close()
            return _error(416, [("Content-Range", f"bytes */{size}")])
        start, end = span
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        return Response(206, b"", headers, ctype, file=FileBody(file, start, end - start + 1))
    return Response(200, b"", headers, ctype, file=FileBody(file, 0, size))


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of one range, UNSATISFIABLE, or None to ignore the header
    (invalid, or several ranges: the whole file is sent)."""
    m = _RANGE.fullmatch(value)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    first, last = m.groups()
    if not first:
        n = int(last)
        return (max(0, size - n), size - 1) if n else UNSATISFIABLE
    start, end = int(first), int(last) if last else size - 1
    if last and end < start:
        return None
    return (start, min(end, size - 1)) if start < size else UNSATISFIABLE


def _not_modified(request: Request, etag: str, mtime: int) -> bool:
    tags = request.header("If-None-Match")
    if tags is not None:
        weak = etag.removeprefix("W/")
        return any(t.strip() in ("*", etag) or t.strip().removeprefix("W/") == weak
                   for t in tags.split(","))
    since = request.header("If-Modified-Since")
    if since is None:
        return False
    when = _http_date(since)
    return when is not None and mtime <= when


def _if_range(request: Request, etag: str, mtime: int) -> bool:
    value = request.header("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    return _http_date(value) == mtime


def _http_date(text: str) -> int | None:
    try:
        return int(parsedate_to_datetime(text).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _error(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, error_body(status), headers or (), content_type="application/json")


# -- try_files ------------------------------------------------------------------------

def try_files(request: Request) -> Any:
    loc = request.location
    spec: TryFiles = loc.config["try_files"]
    lookup = _variables(request)
    for entry in spec.entries:
        uri = clean_path(entry.render(lookup))
        if uri is not None and _exists(loc, uri, request.captures):
            request.path = uri
            return None
    if spec.fallback is None:
        return _error(spec.status)
    uri, has_query, query = spec.fallback.render(lookup).partition("?")
    path = clean_path(uri)
    if path is None:
        return _error(404)
    request.path = path
    if has_query:
        request.query = query
    return REROUTE


def _variables(request: Request) -> Any:
    def lookup(name: str) -> str:
        if name == "uri":
            return request.path
        if name in ("args", "query_string"):
            return request.query
        if name == "is_args":
            return "?" if request.query else ""
        return request.captures.get(name, "")
    return lookup


def _exists(loc: Location, uri: str, captures: Mapping[str, str]) -> bool:
    path = file_path(loc, uri, captures)
    if path is None:
        return False
    return _is_dir(path) if uri.endswith("/") else _is_file(path)


# -- for error_page: a file served as-is -----------------------------------------------

def error_file(loc: Location, uri: str, status: int) -> Response | None:
    """The file a static location serves for `uri`, with `status`; None when there is
    none (no conditionals, no ranges, index files looked up directly)."""
    path = file_path(loc, uri, {})
    if path is None:
        return None
    if path.endswith("/"):
        names = [n for n in loc.config["index"] if not n.startswith("/")]
        path = next((path + n for n in names if _is_file(path + n)), "")
    opened = open_file(path) if path else 404
    if isinstance(opened, int):
        return None
    file, st = opened
    return Response(status, b"", content_type=content_type(path, loc.config["default_type"]),
                    file=FileBody(file, 0, st.st_size))


module = Module(
    name="static",
    directives=[
        Directive("root", Optional(Str()), None, (HTTP, SERVER, LOCATION), path=True,
                  doc="Serve files from this directory: the file is root + path (relative "
                      "roots are under the prefix). Locations with `return` or `content` "
                      "ignore it. Symbolic links are followed."),
        Directive("alias", Optional(Str()), None, (LOCATION,), path=True,
                  doc="Serve files from this path in place of the location's prefix "
                      "(`/img/` + alias `/data/images/`: `/img/a.png` is "
                      "`/data/images/a.png`); in a regex location, the whole file path, "
                      "with `$name` captures."),
        Directive("index", ListOf(Str()), ["index.html"], (HTTP, SERVER, LOCATION),
                  doc="Files tried for a path ending in `/` (an internal redirect to the "
                      "first that exists; a name starting with `/` always matches). No "
                      "index: 403 (there is no autoindex)."),
        Directive("try_files", Custom("list of files, then =CODE or a URI", parse_try_files,
                                      _dump_try_files), [], (LOCATION,),
                  doc="Check files (`$uri`, `$uri/`, `/x.html`; `/` at the end means a "
                      "directory) in order and serve the first that exists; else the last "
                      "entry: `=404` answers that status, a URI is an internal redirect."),
    ],
    phase_handlers=[
        PhaseHandler("precontent", try_files,
                     applies=lambda cfg: serves_files(cfg) and bool(cfg["try_files"])),
        PhaseHandler("content", serve, applies=serves_files),
    ],
    doc="Static files: root, alias, index, try_files, ETag/Last-Modified, Range.",
)
