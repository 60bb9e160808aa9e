"""The two pieces of systemd's protocol bizzyd speaks, without a systemd library:
`sd_notify` (datagrams to $NOTIFY_SOCKET) and socket activation ($LISTEN_FDS)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends state changes to systemd; does nothing when not under systemd."""

    def __init__(self, environ: MutableMapping[str, str]) -> None:
        self.address = environ.get("NOTIFY_SOCKET") or None
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]

    def __call__(self, *fields: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(fields).encode(), self.address)
            except OSError:
                return False
        return True


def listen_fds(environ: MutableMapping[str, str], unset: bool = True) -> list[int]:
    """The fds systemd passed us (`LISTEN_FDS` for our pid), or an empty list."""
    try:
        pid = int(environ.get("LISTEN_PID", "0"))
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    if unset:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    for fd in fds:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
    return fds
