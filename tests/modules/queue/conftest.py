"""Fixtures of the queue tests (helpers in queue_support.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from queue_support import queue_config, run_queues  # noqa: E402

from modules.database.testing import temporary_database_sync  # noqa: E402


@pytest.fixture(scope="module")
def queue_dsn(pg_server_dsn: str) -> Iterator[str]:
    with temporary_database_sync(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture
def run(queue_dsn: str) -> Callable[..., Any]:
    return lambda scenario, **kw: run_queues(queue_dsn, scenario, **kw)


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory, queue_dsn: str):
    """A bizzyd (2 workers) serving the queue on a migrated database, for one module."""
    from bizzyd_proc import free_port, running

    port, denied = free_port(), free_port()
    prefix = tmp_path_factory.mktemp("queue")
    with running(prefix, queue_config(port, queue_dsn, denied), port) as b:
        b.denied_port = denied
        yield b


