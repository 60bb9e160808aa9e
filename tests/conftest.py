"""Shared fixtures: a private prefix and port, and a way to run a real master."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bizzyd_proc import Bizzyd, base_config, free_port, processes  # noqa: E402


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def bizzyd(tmp_path: Path, port: int):
    """A started master on the base config (2 workers); stopped and checked after."""
    b = Bizzyd(tmp_path, port)
    b.write_config(base_config(port))
    try:
        b.start()
        yield b
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


SHM = Path("/dev/shm")


def _segments() -> set[str]:
    return {p.name for p in SHM.glob("bizzyd.*")}


def _ours(pid: int, basetemp: str) -> bool:
    """Whether a live process is a master this test run started (its prefix is ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return basetemp.encode() in cmdline


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _segments()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No shared-memory segment may outlive the tests: after every master the tests
    started (including the ones they killed with SIGKILL) /dev/shm must be clean."""
    before = session.config.stash.get(_BEFORE, set())
    basetemp = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    leaked = []
    for name in sorted(_segments() - before):
        pid = int(name.split(".")[1]) if name.split(".")[1].isdigit() else 0
        if not Path(f"/proc/{pid}").exists() or _ours(pid, basetemp):
            leaked.append(name)
    if leaked:
        print(f"\nshared-memory segments left behind by the tests: {', '.join(leaked)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    strays = _stray_masters(basetemp)
    if strays:
        print("\nmasters left running by the tests (killed now): "
              + "; ".join(f"{pid} {title}" for pid, title in strays))
        for pid, _ in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _stray_masters(basetemp: str) -> list[tuple[int, str]]:
    """Live masters whose prefix is in this run's temporary directory (a test that
    failed before its cleanup would leave one serving, holding ports and brokers)."""
    found = []
    for pid, _, cmdline in processes():
        if cmdline.startswith("bizzyd: master") and basetemp in cmdline:
            found.append((pid, cmdline))
    return found


_BEFORE = pytest.StashKey[set]()
