"""`access`: allow or deny clients by address (nginx's access module).

`access: ["allow 127.0.0.1", "allow 10.0.0.0/8", "allow ::1", "deny all"]` in http,
server or location context.  The rules are checked in order and the first that
matches the client decides; when none matches the client is allowed (so a list
usually ends with `deny all`).  A denied request gets 403.  A level that sets
`access` replaces the rules it would inherit, as in nginx.

Addresses are IPv4 or IPv6, with an optional `/prefix` (host bits are ignored, as
nginx does with a warning); `all` matches everyone; `unix:` matches clients on a
unix socket.  A unix-socket client is otherwise checked as 127.0.0.1.  An IPv6
client that is an IPv4-mapped address (`::ffff:10.1.2.3`) is checked as the IPv4
address.  Networks are compiled to (version, network, mask) integers at config time.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any

from ...config.schema import HTTP, LOCATION, SERVER, Directive
from ...config.types import Custom
from ...module import Module, PhaseHandler
from ..phases import Request
from ..response import Response, error_body

UNIX = "unix:"
ALL = "all"
LOOPBACK = (4, int(ipaddress.IPv4Address("127.0.0.1")))


@dataclass(frozen=True)
class Rule:
    """`allow`/`deny` of one network (`version` 0: all, -1: unix sockets)."""

    allow: bool
    text: str
    version: int
    network: int = 0
    mask: int = 0

    def matches(self, address: tuple[int, int] | None, unix: bool) -> bool:
        if self.version == 0:
            return True
        if self.version == -1:
            return unix
        return address is not None and address[0] == self.version \
            and address[1] & self.mask == self.network


def parse_rule(item: Any) -> Rule:
    words = item.split() if isinstance(item, str) else []
    if len(words) != 2 or words[0] not in ("allow", "deny"):
        raise ValueError(f"expected 'allow ADDRESS' or 'deny ADDRESS', got {item!r}")
    allow, what = words[0] == "allow", words[1]
    if what == ALL:
        return Rule(allow, item, 0)
    if what == UNIX:
        return Rule(allow, item, -1)
    try:
        net = ipaddress.ip_network(what, strict=False)
    except ValueError:
        raise ValueError(f"{what!r} is not an address, a CIDR network, 'all' or 'unix:'") \
            from None
    shown = str(net) if "/" in what else what  # host bits dropped, as they are ignored
    return Rule(allow, f"{words[0]} {shown}", net.version, int(net.network_address),
                int(net.netmask))


def parse_rules(value: Any) -> tuple[Rule, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(parse_rule(item) for item in items)


def dump_rules(rules: tuple[Rule, ...]) -> list[str]:
    return [r.text for r in rules]


@functools.lru_cache(maxsize=4096)
def client_address(client: str) -> tuple[int, int] | None:
    """(IP version, address as an integer) of a peer string; None if unparsable."""
    if client == UNIX:
        return LOOPBACK
    try:
        addr = ipaddress.ip_address(client)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def allowed(rules: tuple[Rule, ...], client: str) -> bool:
    address, unix = client_address(client), client == UNIX
    for rule in rules:
        if rule.matches(address, unix):
            return rule.allow
    return True


def check_access(request: Request) -> Any:
    if allowed(request.location.config["access"], request.client):
        return None
    if request.process is not None:
        request.process.log.error("*%d access forbidden by rule, client: %s, path: %s",
                                  request.conn_id, request.client, request.path)
    return Response(403, error_body(403), content_type="application/json")


module = Module(
    name="access",
    directives=[
        Directive("access", Custom("list of 'allow|deny ADDRESS'", parse_rules, dump_rules),
                  [], (HTTP, SERVER, LOCATION),
                  doc="Client access rules in order, first match wins, e.g. "
                      "`['allow 10.0.0.0/8', 'allow ::1', 'allow unix:', 'deny all']` "
                      "(IPv4/IPv6 addresses or CIDR networks, `all`, `unix:`); "
                      "denied requests get 403; no match allows."),
    ],
    phase_handlers=[
        PhaseHandler("access", check_access, applies=lambda cfg: bool(cfg["access"])),
    ],
    doc="nginx's access module: allow/deny by client address.",
)
