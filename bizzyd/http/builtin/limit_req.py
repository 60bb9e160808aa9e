"""limit_req: request rate limiting with a leaky bucket shared by all workers.

    http:
      limit_req_zones:
        per_ip: {key: $remote_addr, rate: 10r/s, size: 16384}
      servers:
        - locations:
            - location: /v1/
              limit_req: {zone: per_ip, burst: 20, nodelay: true}
              limit_req_status: 429

Theory of operation (nginx's algorithm): each key (here a hash of the client
address, a header or the server name) has an `excess`, in requests, that drains at
`rate` and grows by one per request.  A request whose excess would exceed `burst` is
refused with `limit_req_status` (503 by default, as in nginx; 429 is common).
Within the burst, a request is delayed until its excess has drained, unless
`nodelay`.  The state lives in a shared-memory zone per `limit_req_zones` entry
(an open-addressed table of `size` keys; when the probe window is full the least
recently seen key is replaced), updated under the zone's cross-process lock, so
the limit holds for the whole server, not per worker.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Mapping
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Block, ConfigError, Directive
from bizzyd.config.types import Bool, Custom, Int, Optional, Str
from bizzyd.http.phases import Request
from bizzyd.http.response import HTTPError
from bizzyd.module import Module, PhaseHandler
from bizzyd.shm import Zone, ZoneSpec

PROBES = 8
FIELDS = (("key", "Q"), ("excess", "d"), ("last", "d"))
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*r/([sm])\s*$")


def parse_rate(value: Any) -> float:
    """`10r/s` → 10.0 requests per second; `30r/m` → 0.5."""
    m = _RATE.match(str(value))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a rate such as 10r/s or 30r/m, got {value!r}")
    return float(m.group(1)) / (60.0 if m.group(2) == "m" else 1.0)


def _format_rate(rate: float) -> str:
    return f"{rate:g}r/s" if rate >= 1 else f"{rate * 60:g}r/m"


def parse_key(value: Any) -> str:
    text = str(value)
    if text not in ("$remote_addr", "$binary_remote_addr", "$server_name") and \
            not text.startswith("$http_"):
        raise ValueError("key must be $remote_addr, $server_name or $http_<header>")
    return text


ZONE_FIELDS = (
    Directive("key", Custom("key variable", parse_key), "$remote_addr"),
    Directive("rate", Custom("rate", parse_rate, _format_rate), "10r/s"),
    Directive("size", Int(min=16, max=1 << 22), 16384, doc="Keys the zone holds."),
)


def _zones_type(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of zone name → {key, rate, size}")
    out = {}
    for name, spec in value.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):
            raise ValueError(f"zone name {name!r}: letters, digits and _ only")
        out[str(name)] = _zone_settings(name, spec or {})
    return out


def _zone_settings(name: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError(f"zone {name}: expected {{key, rate, size}}")
    known = {d.name: d for d in ZONE_FIELDS}
    unknown = set(spec) - set(known)
    if unknown:
        raise ValueError(f"zone {name}: unknown setting(s) {', '.join(sorted(unknown))}")
    return {d.name: d.type.convert(spec.get(d.name, d.default)) for d in ZONE_FIELDS}


def _dump_zones(zones: dict[str, Any]) -> dict[str, Any]:
    return {n: {**z, "rate": _format_rate(z["rate"])} for n, z in zones.items()}


DIRECTIVES = (
    Directive("limit_req_zones", Custom("limit_req zones", _zones_type, _dump_zones), {},
              (HTTP,), doc="Named shared rate-limit zones: {name: {key, rate, size}}."),
    Directive("limit_req", Block((
        Directive("zone", Optional(Str()), None, doc="A zone of limit_req_zones."),
        Directive("burst", Int(min=0), 0, doc="Requests allowed above the rate."),
        Directive("nodelay", Bool(), False, doc="Serve burst requests at once."),
    )), None, (HTTP, SERVER, LOCATION), doc="Apply a limit_req zone: {zone, burst, nodelay}."),
    Directive("limit_req_status", Int(min=400, max=599), 503, (HTTP, SERVER, LOCATION),
              doc="Status for refused requests (nginx's default 503; 429 is common)."),
)


def zone_specs(config: Any) -> list[ZoneSpec]:
    zones = config["http"]["limit_req_zones"]
    return [ZoneSpec(f"limit_req.{name}", FIELDS, z["size"]) for name, z in zones.items()]


def _key(request: Request, variable: str) -> int:
    if variable == "$server_name":
        raw = str(request.server.names[0] if request.server else "")
    elif variable.startswith("$http_"):
        raw = request.header(variable[6:].replace("_", "-")) or ""
    else:
        raw = request.client
    return zlib.crc32(raw.encode("utf-8", "surrogateescape")) | 1 << 32  # never 0 (= free)


def account(zone: Zone, key: int, rate: float, burst: int, now: float) -> float | None:
    """One request for `key`: the excess after it, or None when it must be refused."""
    capacity = zone.spec.capacity
    start = key % capacity
    with zone.locked():
        victim, oldest = start, None
        for i in range(PROBES):
            index = (start + i) % capacity
            k, excess, last = zone.read(index)
            if k == key:
                excess = max(0.0, excess - rate * (now - last)) + 1.0
                if excess > burst + 1.0:
                    return None
                zone.write(index, (key, excess, now))
                return excess - 1.0
            if k == 0:
                victim, oldest = index, -1.0
                break
            if oldest is None or last < oldest:
                victim, oldest = index, last
        zone.write(victim, (key, 1.0, now))
        return 0.0


def _applies(config: Mapping[str, Any]) -> bool:
    return config["limit_req"]["zone"] is not None


def limit_req(request: Request) -> Any:
    config = request.location.config
    settings = config["limit_req"]
    zone_conf = request.process.config["http"]["limit_req_zones"].get(settings["zone"])
    zone = request.process.zones.get(f"limit_req.{settings['zone']}")
    if zone_conf is None or zone is None:
        return None
    rate = zone_conf["rate"]
    excess = account(zone, _key(request, zone_conf["key"]), rate, settings["burst"],
                     time.monotonic())
    if excess is None:
        raise HTTPError(config["limit_req_status"], "request rate limit exceeded",
                        [("Retry-After", str(max(1, round(1 / rate))))])
    if excess > 0 and not settings["nodelay"]:
        return _delay(excess / rate)
    return None


async def _delay(seconds: float) -> None:
    await asyncio.sleep(seconds)


def check(config: Any) -> None:
    """Every `limit_req.zone` must name a declared zone."""
    zones = config["http"]["limit_req_zones"]
    for i, server in enumerate(config.servers):
        for j, location in enumerate(server["locations"]):
            zone = location["limit_req"]["zone"]
            if zone is not None and zone not in zones:
                key = ("http", "servers", i, "locations", j, "limit_req", "zone")
                where = config.mark(key) or config.mark(key[:-1]) or config.mark(key[:-2])
                raise ConfigError(f"limit_req zone {zone!r} is not declared in "
                                  "http.limit_req_zones", key, where)


module = Module(
    name="limit_req",
    directives=DIRECTIVES,
    zones=zone_specs,
    check=check,
    phase_handlers=(PhaseHandler("preaccess", limit_req, order=100, applies=_applies),),
    doc=__doc__ or "",
)
