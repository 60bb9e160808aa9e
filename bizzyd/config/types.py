"""Value types of config directives.

Each type converts a raw YAML value into what the code uses (sizes to bytes,
durations to seconds) and formats it back for `bizzyd -T`.  A type raises
`ValueError` with a short reason; the schema adds the file, line and key path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """`512k` → 524288; plain integers are bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512, 64k or 1m")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size such as 512, 64k or 1m, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_duration(value: Any) -> float:
    """`1m30s` → 90.0, `10ms` → 0.01; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10ms, 75s or 1m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = str(value).strip()
    parts = _DURATION_RE.findall(text)
    if not parts or _DURATION_RE.sub("", text).strip():
        raise ValueError(f"expected a duration such as 10ms, 75s or 1m, got {value!r}")
    return sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)


def format_size(n: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def format_duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


class Type:
    """Base of directive value types."""

    name = "value"

    def convert(self, value: Any) -> Any:
        return value

    def dump(self, value: Any) -> Any:
        return value


class Str(Type):
    name = "string"

    def __init__(self, pattern: str | None = None, allow_empty: bool = False) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.allow_empty = allow_empty

    def convert(self, value: Any) -> str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        text = str(value)
        if not text and not self.allow_empty:
            raise ValueError("must not be empty")
        if self.pattern and not self.pattern.fullmatch(text):
            raise ValueError(f"{text!r} does not match {self.pattern.pattern}")
        return text


class Int(Type):
    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min}, got {value}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be at most {self.max}, got {value}")
        return value


class Bool(Type):
    name = "boolean"
    _WORDS = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}

    def convert(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in self._WORDS:
            return self._WORDS[value.lower()]
        raise ValueError(f"expected on/off (a boolean), got {value!r}")


class Size(Type):
    name = "size"

    def convert(self, value: Any) -> int:
        return parse_size(value)

    def dump(self, value: Any) -> Any:
        return format_size(value)


class Duration(Type):
    name = "duration"

    def convert(self, value: Any) -> float:
        return parse_duration(value)

    def dump(self, value: Any) -> Any:
        return format_duration(value)


class Enum(Type):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.name = "one of " + ", ".join(choices)

    def convert(self, value: Any) -> str:
        if value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        return value


class Auto(Type):
    """`auto` (resolved by a function at load time) or a value of the inner type."""

    def __init__(self, inner: Type, resolve: Callable[[], Any]) -> None:
        self.inner, self.resolve = inner, resolve
        self.name = f"auto or {inner.name}"

    def convert(self, value: Any) -> Any:
        return self.resolve() if value == "auto" else self.inner.convert(value)


class Optional(Type):
    """The inner type, or null for "not set"."""

    def __init__(self, inner: Type) -> None:
        self.inner = inner
        self.name = f"{inner.name} or null"

    def convert(self, value: Any) -> Any:
        return None if value is None else self.inner.convert(value)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)


class ListOf(Type):
    """A list of the inner type; a single value is taken as a list of one."""

    def __init__(self, inner: Type, min_len: int = 0) -> None:
        self.inner, self.min_len = inner, min_len
        self.name = f"list of {inner.name}"

    def items(self, value: Any) -> Sequence[Any]:
        items = value if isinstance(value, list) else [value]
        if len(items) < self.min_len:
            raise ValueError(f"needs at least {self.min_len} item(s)")
        return items

    def convert(self, value: Any) -> list[Any]:
        return [self.inner.convert(v) for v in self.items(value)]

    def dump(self, value: Any) -> Any:
        return [self.inner.dump(v) for v in value]


class Custom(Type):
    """A type given by a converter function (for one-off shapes such as `return`)."""

    def __init__(self, name: str, convert: Callable[[Any], Any],
                 dump: Callable[[Any], Any] | None = None) -> None:
        self.name = name
        self._convert, self._dump = convert, dump

    def convert(self, value: Any) -> Any:
        return self._convert(value)

    def dump(self, value: Any) -> Any:
        return self._dump(value) if self._dump else value
