"""The error log: nginx-style lines, levels, reopened on SIGUSR1 (logrotate).

    2026/11/23 09:30:00 [notice] 4242: worker process 4250 started

Each process builds its own `Logger` (not registered in `logging`'s global
registry) and passes it explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

NOTICE = 25
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
          "warn": logging.WARNING, "error": logging.ERROR, "crit": logging.CRITICAL}
_NAMES = {v: k for k, v in LEVELS.items()}


class Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = _NAMES.get(record.levelno, record.levelname.lower())
        text = f"{stamp} [{level}] {record.process}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class ReopenableHandler(logging.StreamHandler):
    """Writes to a file (or stderr) and reopens the file on demand."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.owner: tuple[int, int] | None = None  # (uid, gid) to hand new files to
        # the directory, held open: a child that dropped privileges reopens the file
        # relative to it, whether or not its new user may traverse the path above
        self.dir_fd = -1
        super().__init__(self._open())

    def _open(self) -> TextIO:
        if self.target == "stderr":
            return sys.stderr
        path = Path(self.target)
        if self.dir_fd < 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644,
                     dir_fd=self.dir_fd)
        if self.owner is not None:
            with contextlib.suppress(OSError):
                os.fchown(fd, *self.owner)
        return open(fd, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def reopen(self) -> None:
        if self.target == "stderr":
            return
        self.acquire()
        try:
            old = self.stream
            try:
                self.stream = self._open()
            except OSError as exc:  # e.g. a worker's `user` may not create the file
                with contextlib.suppress(OSError):
                    old.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} [error] {os.getpid()}: "
                              f"cannot reopen {self.target}: {exc}; still writing to the "
                              f"old file\n")
                return
            with contextlib.suppress(OSError):
                old.close()
        finally:
            self.release()

    def close(self) -> None:
        if self.target != "stderr":
            with contextlib.suppress(OSError):
                self.stream.close()
        if self.dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.dir_fd)
            self.dir_fd = -1
        super().close()


class Logger(logging.Logger):
    """A logger with `notice` and `reopen`."""

    def notice(self, msg: str, *args: object) -> None:
        if self.isEnabledFor(NOTICE):
            self._log(NOTICE, msg, args)

    def reopen(self) -> None:
        for handler in self.handlers:
            if isinstance(handler, ReopenableHandler):
                handler.reopen()

    def hand_files_to(self, owner: tuple[int, int] | None) -> None:
        """Files this logger creates from now on (USR1) go to `owner` (uid, gid): the
        master's, so that children running as `user` can reopen them."""
        for handler in self.handlers:
            if isinstance(handler, ReopenableHandler):
                handler.owner = owner

    def close(self) -> None:
        for handler in list(self.handlers):
            handler.close()
            self.removeHandler(handler)


def open_log(target: str, level: str = "notice", name: str = "bizzyd") -> Logger:
    """A logger writing to `target` (a path or `stderr`) at `level` and above."""
    log = Logger(name, LEVELS.get(level, NOTICE))
    handler = ReopenableHandler(target)
    handler.setFormatter(Formatter())
    log.addHandler(handler)
    log.propagate = False
    return log


def stderr_log(level: str = "notice") -> Logger:
    return open_log("stderr", level)


def chown_log(target: str, uid: int, gid: int) -> None:
    """Let unprivileged workers reopen a log the root master created."""
    if target != "stderr" and os.path.exists(target):
        with contextlib.suppress(OSError):
            os.chown(target, uid, gid)
