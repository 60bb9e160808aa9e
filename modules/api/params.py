"""Request parameters, declared as data: how each is parsed, checked and documented.

A `Param` names a query or path parameter and its `Kind`.  A kind turns the text into a
value or raises `ValueError("reason")` (the reason goes into the 400's problem
details, naming the parameter), and describes itself as a JSON Schema for the OpenAPI
document, so validation and documentation cannot drift.  `canonical(value)` is the
value's normal text form, used to build cache keys and `next` links.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class Kind:
    """A parameter type: `convert(text) -> value`, `schema()`, `canonical(value)`."""

    def convert(self, text: str) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def canonical(self, value: Any) -> str:
        return str(value)


_INTEGER = re.compile(r"[+-]?[0-9]{1,19}").fullmatch


@dataclass(frozen=True)
class Int(Kind):
    min: int | None = None
    max: int | None = None
    unit: str = ""

    def convert(self, text: str) -> int:
        if not _INTEGER(text):
            raise ValueError(f"expected an integer, got {text[:40]!r}")
        value = int(text)
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and value < self.min:
            raise ValueError(f"at least {self.min}{unit}, got {value}")
        if self.max is not None and value > self.max:
            raise ValueError(f"at most {self.max}{unit}, got {value}")
        return value

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "integer"}
        if self.min is not None:
            s["minimum"] = self.min
        if self.max is not None:
            s["maximum"] = self.max
        return s


@dataclass(frozen=True)
class Bool(Kind):
    def convert(self, text: str) -> bool:
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text[:40]!r}")
        return text == "true"

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def canonical(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class Str(Kind):
    min_length: int = 1
    max_length: int = 100
    pattern: str | None = None
    strip: bool = True

    def convert(self, text: str) -> str:
        value = " ".join(text.split()) if self.strip else text
        if len(value) < self.min_length:
            raise ValueError(f"at least {self.min_length} characters")
        if len(value) > self.max_length:
            raise ValueError(f"at most {self.max_length} characters")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"does not match {self.pattern}")
        return value

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "string", "minLength": self.min_length,
                             "maxLength": self.max_length}
        if self.pattern is not None:
            s["pattern"] = f"^{self.pattern}$"
        return s


@dataclass(frozen=True)
class Enum(Kind):
    values: tuple[str, ...] = ()

    def convert(self, text: str) -> str:
        if text not in self.values:
            raise ValueError(f"must be one of {', '.join(self.values)}; got {text[:40]!r}")
        return text

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}


_NUMBER = r"[+-]?(?:[0-9]{1,3}(?:\.[0-9]{1,12})?)"


def _float(text: str, what: str, low: float, high: float) -> float:
    if not re.fullmatch(_NUMBER, text.strip()):
        raise ValueError(f"{what} must be a decimal number, got {text[:40]!r}")
    value = float(text)
    if not (low <= value <= high) or math.isnan(value):
        raise ValueError(f"{what} must be between {low:g} and {high:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class LatLon(Kind):
    """`lat,lon` in WGS84 degrees."""

    def convert(self, text: str) -> tuple[float, float]:
        parts = text.split(",")
        if len(parts) != 2:
            raise ValueError(f"expected LAT,LON, got {text[:40]!r}")
        return (_float(parts[0], "latitude", -90, 90), _float(parts[1], "longitude", -180, 180))

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_NUMBER},{_NUMBER}$",
                "examples": ["52.52,13.405"]}

    def canonical(self, value: Any) -> str:
        return f"{value[0]!r},{value[1]!r}"


@dataclass(frozen=True)
class BBox(Kind):
    """`min_lon,min_lat,max_lon,max_lat`; no box across the antimeridian."""

    max_span: float = 2.0  # degrees of longitude and of latitude

    def convert(self, text: str) -> tuple[float, float, float, float]:
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(f"expected MIN_LON,MIN_LAT,MAX_LON,MAX_LAT, got {text[:60]!r}")
        west = _float(parts[0], "min_lon", -180, 180)
        south = _float(parts[1], "min_lat", -90, 90)
        east = _float(parts[2], "max_lon", -180, 180)
        north = _float(parts[3], "max_lat", -90, 90)
        if west >= east or south >= north:
            raise ValueError("min_lon must be below max_lon and min_lat below max_lat")
        if east - west > self.max_span or north - south > self.max_span:
            raise ValueError(f"a box spans at most {self.max_span:g} degrees each way")
        return (west, south, east, north)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$",
                "examples": ["13.3,52.48,13.45,52.55"]}

    def canonical(self, value: Any) -> str:
        return ",".join(repr(v) for v in value)


_DURATION = re.compile(r"([1-9][0-9]{0,3})(m|h|d)")
_SECONDS = {"m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Duration(Kind):
    """`30m`, `24h`, `7d` (1 to 9999 minutes, hours or days) → seconds."""

    def convert(self, text: str) -> int:
        m = _DURATION.fullmatch(text)
        if not m:
            raise ValueError("expected a duration of 1 to 9999 minutes, hours or days "
                             f"such as 30m, 24h or 7d, got {text[:40]!r}")
        return int(m.group(1)) * _SECONDS[m.group(2)]

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_DURATION.pattern}$", "examples": ["24h"]}


@dataclass(frozen=True)
class Param:
    """A query (`where="query"`) or path (`where="path"`) parameter."""

    name: str
    kind: Kind
    doc: str = ""
    where: str = "query"
    default: Any = None
    repeated: int = 0  # > 0: may be given up to this many times (a list, sorted, unique)
    examples: Sequence[Any] = field(default_factory=tuple)

    def parse(self, texts: list[str]) -> Any:
        if self.repeated:
            texts = [t for text in texts for t in text.split(",")]
            if len(texts) > self.repeated:
                raise ValueError(f"at most {self.repeated} values")
            return sorted({self.kind.convert(t) for t in texts})
        if len(texts) > 1:
            raise ValueError("given more than once")
        return self.kind.convert(texts[0])

    def canonical(self, value: Any) -> str:
        if self.repeated:
            return ",".join(self.kind.canonical(v) for v in value)
        return self.kind.canonical(value)

    def schema(self) -> dict[str, Any]:
        s = self.kind.schema()
        if self.repeated:
            s = {"type": "array", "items": s, "maxItems": self.repeated}
        if self.default is not None:
            s["default"] = self.default
        return s
