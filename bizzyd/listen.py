"""Listening sockets: the `listen` directive, binding, and sockets handed over by
a parent master (binary upgrade) or by systemd (socket activation).

A listener is identified by its `ListenSpec.key` (family, address, reuseport).  The
master keeps a `ListenerSet`: one shared socket per key, or, with `reuseport`, one
socket per worker slot (each bound with SO_REUSEPORT), so a new generation of
workers takes over the very same sockets and no queued connection is lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INHERIT_ENV = "BIZZYD_INHERIT_FDS"
DEFAULT_BACKLOG = 511


@dataclass(frozen=True)
class ListenSpec:
    """One `listen` entry: `127.0.0.1:8080`, `[::1]:8080`, `unix:run/b.sock`, `8080`."""

    family: int
    address: str | tuple[str, int]
    backlog: int = DEFAULT_BACKLOG
    reuseport: bool = False

    @property
    def key(self) -> tuple[int, Any, bool]:
        return (self.family, self.address, self.reuseport)

    def __str__(self) -> str:
        return format_address(self.family, self.address)


def format_address(family: int, address: Any) -> str:
    if family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def parse_listen(value: Any, prefix: Path | None = None) -> ListenSpec:
    """Parse `ADDRESS [reuseport] [backlog=N]` or a mapping {address, backlog, reuseport}."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, dict):
        opts = dict(value)
        address = opts.pop("address", None)
        backlog, reuseport = opts.pop("backlog", DEFAULT_BACKLOG), opts.pop("reuseport", False)
        if opts:
            raise ValueError(f"unknown listen option(s): {', '.join(map(str, opts))}")
    elif isinstance(value, str):
        address, *words = value.split()
        backlog, reuseport = DEFAULT_BACKLOG, False
        for word in words:
            if word == "reuseport":
                reuseport = True
            elif word.startswith("backlog="):
                backlog = _int(word[8:], "backlog")
            else:
                raise ValueError(f"unknown listen option {word!r}")
    else:
        raise ValueError("expected an address such as 127.0.0.1:8080, [::1]:8080 or unix:PATH")
    if not isinstance(address, str):
        raise ValueError("listen needs an address")
    family, addr = _parse_address(address, prefix)
    backlog = _int(backlog, "backlog")
    if family == socket.AF_UNIX and reuseport:
        raise ValueError("reuseport does not apply to unix sockets")
    return ListenSpec(family, addr, backlog, bool(reuseport))


def _int(value: Any, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be positive")
    return n


def _parse_address(text: str, prefix: Path | None) -> tuple[int, Any]:
    if text.startswith("unix:"):
        path = Path(text[5:])
        if not path.is_absolute() and prefix is not None:
            path = prefix / path
        return socket.AF_UNIX, str(path)
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return socket.AF_INET6, (host, _port(port))
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "0.0.0.0", text
    if ":" in host:
        raise ValueError(f"IPv6 addresses need brackets: [{host}]:{port}")
    return socket.AF_INET, (host or "0.0.0.0", _port(port))


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port {text!r}")
    return int(text)


def bind(spec: ListenSpec) -> socket.socket:
    """Create, bind and listen a socket for a spec (non-blocking, close-on-exec)."""
    sock = socket.socket(spec.family, socket.SOCK_STREAM)
    try:
        if spec.family == socket.AF_UNIX:
            Path(spec.address).parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_unix(str(spec.address))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if spec.reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if spec.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(spec.address)
        sock.listen(spec.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _remove_stale_unix(path: str) -> None:
    """Remove a unix socket file nothing listens on (left by a killed master)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


def socket_address(sock: socket.socket) -> tuple[int, Any]:
    """(family, address) of a bound socket, comparable with `ListenSpec.address`."""
    addr = sock.getsockname()
    if sock.family == socket.AF_INET6:
        addr = (addr[0], addr[1])
    return sock.family, addr


def reuseport_of(sock: socket.socket) -> bool:
    if sock.family == socket.AF_UNIX:
        return False
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def adopt_fds(fds: Iterable[int]) -> list[socket.socket]:
    """Wrap inherited listening fds as socket objects (non-blocking, close-on-exec)."""
    socks = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        socks.append(sock)
    return socks


def inherited_fds(environ: dict[str, str]) -> list[int]:
    """Fds passed by a parent master in `BIZZYD_INHERIT_FDS` (`5;6;7`)."""
    value = environ.pop(INHERIT_ENV, "")
    return [int(x) for x in value.replace(",", ";").split(";") if x.strip().isdigit()]


def close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class ListenerSet:
    """The master's listening sockets, keyed by `ListenSpec.key`.

    Sockets adopted from a parent master or from systemd wait in `adopted` until a
    spec claims them by address; systemd sockets nobody claims are served by the
    default server (key `("activated", fd)`).
    """

    def __init__(self) -> None:
        self.specs: dict[tuple, ListenSpec] = {}
        self.sockets: dict[tuple, list[socket.socket]] = {}
        self.adopted: list[socket.socket] = []

    def adopt(self, socks: Iterable[socket.socket]) -> None:
        self.adopted.extend(socks)

    def update(self, specs: Iterable[ListenSpec], slots: int) -> list[socket.socket]:
        """Make the set match `specs` for `slots` workers; return the sockets removed.

        Binding errors propagate (OSError) before anything is removed, so a reload
        that cannot bind keeps the old set intact.
        """
        wanted = {s.key: s for s in specs}
        for spec in wanted.values():
            self._ensure(spec, slots if spec.reuseport else 1)
        removed = [s for key in list(self.sockets) if key not in wanted
                   and key[0] != "activated" for s in self.sockets.pop(key)]
        for spec in wanted.values():
            socks = self.sockets[spec.key]
            if spec.reuseport and len(socks) > slots:
                removed += socks[slots:]
                del socks[slots:]
        self.specs = {**wanted, **{k: v for k, v in self.specs.items() if k[0] == "activated"}}
        return removed

    def keep_unclaimed_activated(self) -> None:
        """systemd sockets that no `listen` matched are served by the default server."""
        for sock in self.adopted:
            key = ("activated", sock.fileno(), False)
            self.sockets[key] = [sock]
        self.adopted = []

    def _ensure(self, spec: ListenSpec, count: int) -> None:
        socks = self.sockets.setdefault(spec.key, [])
        while len(socks) < count:
            socks.append(self._claim(spec) or bind(spec))

    def _claim(self, spec: ListenSpec) -> socket.socket | None:
        for sock in self.adopted:
            if socket_address(sock) == (spec.family, spec.address):
                self.adopted.remove(sock)
                return sock
        return None

    def for_slot(self, slot: int) -> list[tuple[tuple, socket.socket]]:
        """The (key, socket) pairs a worker in `slot` serves."""
        out = []
        for key, socks in self.sockets.items():
            if len(socks) == 1 and not key[2]:
                out.append((key, socks[0]))
            elif slot < len(socks):
                out.append((key, socks[slot]))
        return out

    def all(self) -> list[socket.socket]:
        return [s for socks in self.sockets.values() for s in socks]

    def close_all(self, unlink: bool = True) -> None:
        for sock in self.all():
            close_socket(sock, unlink)
        self.sockets.clear()


def close_socket(sock: socket.socket, unlink: bool = True) -> None:
    """Close a listener; a unix socket's file is removed when `unlink`."""
    path = None
    if sock.family == socket.AF_UNIX and unlink:
        with contextlib.suppress(OSError):
            path = sock.getsockname()
    close_quietly(sock)
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)
