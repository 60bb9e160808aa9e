"""Fixtures shared by the module tests."""

import pytest

from modules.database.testing import check_server, server_dsn


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """DSN of the Postgres server (its maintenance database); fail if none is running."""
    dsn = server_dsn()
    problem = check_server(dsn)
    if problem:
        pytest.fail(problem)
    return dsn
