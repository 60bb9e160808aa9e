"""database.replicas: reads that may lag go to a streaming standby (pg_basebackup by
scripts/services), writes stay on the primary, a dead standby falls back to it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bizzyd_proc import ROOT
from cluster_support import PORT_BASE
from modules.database import Database

pytestmark = [pytest.mark.services, pytest.mark.cluster]


class Log:
    def __getattr__(self, name: str):
        return lambda *a, **k: None


def services(env: dict, action: str, *names: str) -> None:
    done = subprocess.run([str(ROOT / "scripts" / "services"), action, *names], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


async def in_recovery(db: Database, read: bool) -> bool:
    opened = db.read_connection() if read else db.connection()
    async with opened as conn:
        return await conn.fetchval("SELECT pg_is_in_recovery()")


async def scenario(primary: str, standby: str, env: dict) -> None:
    settings = {"dsn": primary, "replicas": [standby], "pool_min_size": 0, "pool_max_size": 2,
                "statement_timeout": 5.0, "connect_timeout": 1.0,
                "reconnect_max_backoff": 1.0}
    db = Database(settings, Log())
    try:
        assert await in_recovery(db, read=False) is False  # writes: the primary
        assert await in_recovery(db, read=True) is True  # lagging reads: the standby
        async with db.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS replica_probe (v int); "
                               "INSERT INTO replica_probe VALUES (42)")
        for _ in range(100):  # streamed within a moment
            async with db.read_connection() as conn:
                if await conn.fetchval("SELECT to_regclass('replica_probe') IS NOT NULL"):
                    assert await conn.fetchval("SELECT max(v) FROM replica_probe") == 42
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the standby never showed the primary's write")
        await asyncio.to_thread(services, env, "stop", "postgres-standby")
        assert await in_recovery(db, read=True) is False  # all standbys down: the primary
    finally:
        await db.close()


def test_reads_go_to_the_standby_writes_to_the_primary():
    state = Path(tempfile.mkdtemp(prefix="bizzyd-replica."))
    env = {**os.environ, "BIZZYD_STATE_DIR": str(state), "BIZZYD_PG_FAST": "1",
           "BIZZYD_PG_PORT": str(PORT_BASE + 45), "BIZZYD_PG_STANDBY_PORT": str(PORT_BASE + 47)}
    try:
        services(env, "start", "postgres", "postgres-standby")
        asyncio.run(scenario(f"postgresql://postgres@127.0.0.1:{PORT_BASE + 45}/bizzyd",
                             f"postgresql://postgres@127.0.0.1:{PORT_BASE + 47}/bizzyd", env))
    finally:
        services(env, "stop", "postgres-standby", "postgres")
        subprocess.run(["rm", "-rf", str(state)], check=False)
