"""Fixtures of the occupancy tests (helpers in occ_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from occ_support import temporary_database  # noqa: E402


@pytest.fixture(scope="module")
def database_dsn():
    """A migrated database shared by one test module."""
    with temporary_database() as dsn:
        yield dsn


@pytest.fixture
def fresh_database():
    with temporary_database() as dsn:
        yield dsn
