"""Shared fixtures: a private prefix and port, and a way to run a real master."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bizzyd_proc import Bizzyd, base_config, free_port  # noqa: E402


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
