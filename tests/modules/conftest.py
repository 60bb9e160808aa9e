"""Fixtures shared by the module tests."""

import os
import subprocess

import pytest

from bizzyd_proc import ROOT, free_port
from modules.database.testing import check_server, server_dsn


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """DSN of the Postgres server (its maintenance database); fail if none is running."""
    dsn = server_dsn()
    problem = check_server(dsn)
    if problem:
        pytest.fail(problem)
    return dsn


@pytest.fixture
def private_postgres(tmp_path):
    """A Postgres of this test's own (stopping the shared one would disturb others)."""
    env = {**os.environ, "BIZZYD_STATE_DIR": str(tmp_path / "state"),
           "BIZZYD_PG_PORT": str(free_port()), "BIZZYD_PG_FAST": "1"}

    def services(*args: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "services"), *args, "postgres"], env=env,
                       check=True, timeout=120, capture_output=True)

    services("start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{env['BIZZYD_PG_PORT']}/bizzyd", services
    finally:
        services("stop")
