"""`rewrite`: change the request path with regular expressions (nginx's rewrite module).

Theory of operation
-------------------
`rewrite: [[REGEX, REPLACEMENT, FLAG?], ...]` (or nginx-style strings
`"REGEX REPLACEMENT FLAG"`) is allowed in server and location contexts.  Rules
are compiled at config time; `$1`..`$9`, `$name` and `${name}` in the replacement
must name groups of the regex (PCRE's `(?<name>...)` is accepted).

The rules of a set are tried in order against `request.path` (decoded and
normalized); a matching rule replaces the path and then, by its flag:

    (none)     go on with the next rule; when the set is done and the path changed,
               the location is looked up again (REROUTE)
    last       stop, look the location up again (REROUTE)
    break      stop, stay in this location with the new path
    redirect   answer 302 with `Location:` the replacement
    permanent  answer 301

A replacement starting with `http://` or `https://` always redirects (302 unless
`permanent`).  The query string is kept: arguments in the replacement come first
and the original ones are appended after `&`, unless the replacement ends with
`?`, which drops them.  Captures are percent-encoded where they land in a URL
(redirects, arguments) and inserted as they are into the decoded path.

Server-level rules run in the `server_rewrite` phase, once per request (the core
finds a location before server_rewrite and again after a REROUTE, which runs the
server's handlers again; a flag in `request.ctx` keeps them from running twice).
Because the server block's `rewrite` is inherited by its locations, the location
handler skips a rule set that is the server's own object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ...config.schema import LOCATION, SERVER, Directive
from ...config.types import Custom
from ...module import Module, PhaseHandler
from ..phases import REROUTE, Request
from ..response import Response, error_body
from ._template import Template, clean_path

FLAGS = ("last", "break", "redirect", "permanent")
_PCRE_NAMED = re.compile(r"\(\?<(?![=!])")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_ARG_SAFE = "/:@!$'()*,;-._~"


@dataclass(frozen=True)
class Rule:
    """One compiled `rewrite` rule."""

    source: str  # the regex as written (for `-T`)
    regex: re.Pattern[str]
    replacement: str
    path: Template
    args: Template | None  # the part after '?', when the replacement has one
    drop_args: bool  # the replacement ends with '?'
    flag: str
    redirect: int  # 0, 301 or 302

    def lookup(self, match: re.Match[str]) -> Any:
        def value(name: str) -> str:
            return match.group(int(name) if name.isdigit() else name) or ""
        return value


def parse_rule(item: Any) -> Rule:
    words = item.split() if isinstance(item, str) else item
    if not isinstance(words, list) or not 2 <= len(words) <= 3 \
            or not all(isinstance(w, str) for w in words):
        raise ValueError("a rule is [REGEX, REPLACEMENT] or [REGEX, REPLACEMENT, FLAG], "
                         f"got {item!r}")
    source, replacement, flag = words[0], words[1], words[2] if len(words) == 3 else ""
    if flag and flag not in FLAGS:
        raise ValueError(f"flag must be one of {', '.join(FLAGS)}, got {flag!r}")
    try:
        regex = re.compile(_PCRE_NAMED.sub("(?P<", source))
    except re.error as exc:
        raise ValueError(f"invalid regular expression {source!r}: {exc}") from None
    if _BAD_CHARS.search(replacement) or not replacement:
        raise ValueError(f"replacement {replacement!r} is empty or has spaces/control chars")
    return _rule(source, regex, replacement, flag)


def _rule(source: str, regex: re.Pattern[str], replacement: str, flag: str) -> Rule:
    text, drop_args = (replacement[:-1], True) if replacement.endswith("?") else \
        (replacement, False)
    path_text, has_args, args_text = text.partition("?")
    path, args = Template(path_text), Template(args_text) if has_args else None
    for name in path.names + (args.names if args else ()):
        known = int(name) <= regex.groups if name.isdigit() else name in regex.groupindex
        if not known:
            raise ValueError(f"${name} in {replacement!r} is not a group of {source!r}")
    is_url = replacement.startswith(("http://", "https://"))
    redirect = 301 if flag == "permanent" else 302 if flag == "redirect" or is_url else 0
    if redirect and not replacement.isascii():
        raise ValueError(f"a redirect target must be ASCII (percent-encode it): {replacement!r}")
    return Rule(source, regex, replacement, path, args, drop_args, flag, redirect)


def parse_rules(value: Any) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("expected a list of [REGEX, REPLACEMENT, FLAG?] rules")
    return tuple(parse_rule(v) for v in value)


def dump_rules(rules: tuple[Rule, ...]) -> list[list[str]]:
    return [[r.source, r.replacement] + ([r.flag] if r.flag else []) for r in rules]


# -- running the rules --------------------------------------------------------------

def run_rules(rules: tuple[Rule, ...], request: Request, server_level: bool) -> Any:
    """Apply a rule set: None, REROUTE, or a redirect/error Response."""
    changed = False
    for rule in rules:
        match = rule.regex.search(request.path)
        if match is None:
            continue
        if rule.redirect:
            return _redirect(rule, match, request.query)
        path, query = _rewritten(rule, match, request.query)
        if path is None:
            return Response(400, error_body(400, "rewrite climbs above the root"),
                            content_type="application/json")
        changed = changed or (path, query) != (request.path, request.query)
        request.path, request.query = path, query
        if rule.flag == "last":
            return REROUTE
        if rule.flag == "break":
            return REROUTE if server_level and changed else None
    return REROUTE if changed else None


def _rewritten(rule: Rule, match: re.Match[str], query: str) -> tuple[str | None, str]:
    lookup = rule.lookup(match)
    return clean_path(rule.path.render(lookup)), _query(rule, lookup, query)


def _query(rule: Rule, lookup: Any, query: str) -> str:
    new = rule.args.render(lookup, _escape_arg) if rule.args is not None else None
    if rule.drop_args:
        return new or ""
    if new is None:
        return query
    return f"{new}&{query}" if new and query else new or query


def _redirect(rule: Rule, match: re.Match[str], query: str) -> Response:
    lookup = rule.lookup(match)
    url = rule.path.render(lookup, _escape_path)
    query = _query(rule, lookup, query)
    if query:
        url = f"{url}?{query}"
    return Response(rule.redirect, b"", [("Location", url)])


def _escape_path(value: str) -> str:
    return quote(value.encode("utf-8", "surrogateescape"), safe=_PATH_SAFE)


def _escape_arg(value: str) -> str:
    return quote(value.encode("utf-8", "surrogateescape"), safe=_ARG_SAFE)


# -- phase handlers ---------------------------------------------------------------

def server_rewrite(request: Request) -> Any:
    return run_rules(request.server.config["rewrite"], request, server_level=True)


def location_rewrite(request: Request) -> Any:
    return run_rules(request.location.config["rewrite"], request, server_level=False)


module = Module(
    name="rewrite",
    directives=[
        Directive("rewrite", Custom("list of [REGEX, REPLACEMENT, FLAG?]", parse_rules,
                                    dump_rules), [], (SERVER, LOCATION), inherit=False,
                  doc="Rewrite the path: `[[REGEX, REPLACEMENT, FLAG?], ...]`, FLAG one "
                      "of last, break, redirect (302), permanent (301); `$1`, `$name` "
                      "captures; a replacement ending in `?` drops the query string; an "
                      "http(s):// replacement redirects. Server-level rules run before "
                      "the location is chosen."),
    ],
    phase_handlers=[
        PhaseHandler("server_rewrite", server_rewrite,
                     applies=lambda cfg: bool(cfg["rewrite"])),
        PhaseHandler("rewrite", location_rewrite, applies=lambda cfg: bool(cfg["rewrite"])),
    ],
    doc="nginx's rewrite module: regex rewrites, internal and external redirects.",
)
