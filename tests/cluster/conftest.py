"""Fixtures of the cluster tests (helpers in cluster_support.py)."""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "modules" / "occupancy")]  # occ_support

from cluster_support import Services  # noqa: E402
from modules.mqtt_ingest.testing import temporary_database_sync  # noqa: E402


@pytest.fixture(scope="session")
def services():
    """A 3-node RabbitMQ cluster and a 2-server memcached pool for the session.

    Its state is not under pytest's basetemp: pytest deletes old basetemp directories
    of the same user at the start of a session, and another session started meanwhile
    would delete the brokers' data under them."""
    state = Path(tempfile.mkdtemp(prefix="bizzyd-cluster-services."))
    s = Services(state)
    try:
        s.start()
        yield s
    finally:
        try:
            s.stop()
        finally:
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def dsn():
    with temporary_database_sync() as dsn:
        yield dsn


@pytest.fixture
def tag() -> str:
    return "c" + secrets.token_hex(4)
