"""Fixtures of the cluster tests (helpers in cluster_support.py)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_support import Services  # noqa: E402
from modules.mqtt_ingest.testing import temporary_database_sync  # noqa: E402


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """A 3-node RabbitMQ cluster and a 2-server memcached pool for the session."""
    s = Services(tmp_path_factory.mktemp("cluster-services"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def dsn():
    with temporary_database_sync() as dsn:
        yield dsn


@pytest.fixture
def tag() -> str:
    return "c" + secrets.token_hex(4)
