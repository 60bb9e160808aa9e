"""Strings with `$name` variables, parsed once at config time (rewrite, try_files,
alias), and the normalization of the paths they render to.

`$1`..`$9` are numbered captures (one digit, as in nginx: `$10` is `$1` then "0"),
`$name` and `${name}` are named ones or request variables such as `$uri`.  A `$`
that starts no name is literal.  Rendering looks every variable up with a function
given per request; an unknown variable renders empty, as in nginx.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..router import normalize_path

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\d)|([A-Za-z_]\w*))")

Lookup = Callable[[str], str]


class Template:
    """A parsed string: literal parts and variable names, in order."""

    __slots__ = ("text", "parts", "names")

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[str | tuple[str]] = []
        pos = 0
        for m in _VAR.finditer(text):
            if m.start() > pos:
                parts.append(text[pos:m.start()])
            parts.append((m.group(1) or m.group(2) or m.group(3),))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        self.parts = tuple(parts)
        self.names = tuple(p[0] for p in parts if isinstance(p, tuple))

    def render(self, lookup: Lookup, escape: Callable[[str], str] | None = None) -> str:
        """The string with every variable replaced (and escaped, when `escape` is given)."""
        if not self.names:
            return self.text
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = lookup(part[0])
                out.append(escape(value) if escape and value else value)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def clean_path(path: str) -> str | None:
    """A rendered (already decoded) path made absolute and normalized, as the core
    normalizes request paths; None when it climbs above `/`."""
    if not path.startswith("/"):
        path = "/" + path
    if "//" not in path and "/." not in path:
        return path
    # normalize_path decodes %XX: protect the '%' of the already decoded path
    return normalize_path(path.replace("%", "%25").encode("utf-8", "surrogateescape"))
