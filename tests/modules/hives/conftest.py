"""A demo city in a database of its own, and a bizzyd serving its catalogue."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from bizzyd_proc import free_port, running, wait_for
from modules.database.testing import temporary_database_sync
from modules.hives.testing import catalogue_config, load_demo, wait_until_cached

HIVES = 300


def memcached_address() -> str:
    return os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211")


@pytest.fixture(scope="session")
def catalogue_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A migrated database with a demo city of 300 hives (one day of history)."""
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, HIVES))
        yield dsn


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory,
              catalogue_dsn: str) -> Iterator[httpx.Client]:
    """An HTTP client of a bizzyd (2 workers) serving the demo city's catalogue."""
    port = free_port()
    prefix = tmp_path_factory.mktemp("catalogue")
    config = catalogue_config(port, catalogue_dsn, memcached_address())
    config["occupancy"]["reconcile_interval"] = "1s"
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        client.bizzyd = b  # type: ignore[attr-defined]
        wait_until_cached(b.log_file, 2)
        yield client


class Memcached:
    """A memcached of the test's own (it gets stopped and killed)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(["/usr/bin/memcached", "-l", "127.0.0.1", "-p",
                                      str(self.port), "-U", "0", "-m", "32", "-u", "root"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def own_memcached() -> Iterator[Memcached]:
    m = Memcached()
    try:
        import socket
        wait_for(lambda: _connects(socket, m.port), timeout=5, what="memcached")
        yield m
    finally:
        m.close()


def _connects(socket, port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False

