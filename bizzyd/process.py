"""What every child process does first, and the heartbeat table.

The heartbeat table is an anonymous shared mapping the master creates before forking:
one 8-byte slot per child, where the child stores `time.monotonic()` every second
(CLOCK_MONOTONIC is system-wide, so the master can compare).  A slot of 0.0 means
"not started yet"; the master uses the first beat as "ready".
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import mmap
import os
import pwd
import resource
import signal
import struct
import time
from collections.abc import Iterable

import setproctitle

MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU,
                  signal.SIGCHLD)
_SLOT = struct.Struct("d")
PR_SET_PDEATHSIG = 1


class Heartbeats:
    """Shared table of last-beat times, one slot per child process."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.map = mmap.mmap(-1, capacity * _SLOT.size)
        self.free = list(range(capacity - 1, -1, -1))

    def allocate(self) -> int:
        if not self.free:
            raise RuntimeError("heartbeat table is full")
        index = self.free.pop()
        _SLOT.pack_into(self.map, index * _SLOT.size, 0.0)
        return index

    def release(self, index: int) -> None:
        _SLOT.pack_into(self.map, index * _SLOT.size, 0.0)
        self.free.append(index)

    def beat(self, index: int) -> None:
        _SLOT.pack_into(self.map, index * _SLOT.size, time.monotonic())

    def last(self, index: int) -> float:
        return _SLOT.unpack_from(self.map, index * _SLOT.size)[0]


def set_title(title: str) -> None:
    setproctitle.setproctitle(f"bizzyd: {title}")


def reset_signals() -> None:
    """In a fresh child: no master handlers, no wakeup fd, default dispositions."""
    signal.set_wakeup_fd(-1)
    for sig in MASTER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` when the master dies (even by SIGKILL).

    Without it, children of a killed master would keep running, orphaned.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the master died before the request took effect
        os.kill(os.getpid(), sig)


def raise_nofile(limit: int | None) -> str | None:
    """Set RLIMIT_NOFILE; returns a warning text when it could not be done."""
    if not limit:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
        except (ValueError, OSError) as exc:
            return f"worker_rlimit_nofile {limit}: {exc}"
        return f"worker_rlimit_nofile {limit} exceeds the hard limit {hard}; using {hard}"
    return None


def resolve_user(user: str | None, group: str | None) -> tuple[int, int] | None:
    """(uid, gid) to drop to, or None when not root or no user is configured."""
    if os.geteuid() != 0 or not user:
        return None
    pw = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    return pw.pw_uid, gid


def drop_privileges(ids: tuple[int, int] | None, user: str | None,
                    writable: Iterable[str] = ()) -> None:
    """Become `user` (root only); first hand it the files it must reopen."""
    if ids is None or not user:
        return
    uid, gid = ids
    for path in writable:
        with contextlib.suppress(OSError):
            os.chown(path, uid, gid)
    os.setgroups([])
    os.initgroups(user, gid)
    os.setgid(gid)
    os.setuid(uid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def looks_like_bizzyd(pid: int) -> bool:
    """A live pid whose command line mentions bizzyd (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"bizzyd" in f.read()
    except OSError:
        return pid_alive(pid)
