"""Migration 0005 on a database that already has hives: points backfilled, kept in step
with the coordinates, shown by `migrate status`, and changes announced by NOTIFY."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from modules.database.migrate import MIGRATIONS_DIR, status, up
from modules.database.testing import create_database, drop_database

pytestmark = pytest.mark.services


async def _upgrade(tmp_path: Path, server: str) -> None:
    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("000[1-4]_*.sql")):
        shutil.copy(f, old / f.name)
    dsn = await create_database(server, migrate=False)
    try:
        await up(dsn, directory=old, report=lambda line: None)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("""
                WITH acc AS (INSERT INTO account (name) VALUES ('a') RETURNING id),
                adr AS (INSERT INTO address (street, city, country, latitude, longitude)
                        VALUES ('Unter den Linden 1', 'Berlin', 'DE', 52.517, 13.389)
                        RETURNING id)
                INSERT INTO hive (account_id, address_id, hive_type_id, status_id, name,
                                  timezone, capacity)
                SELECT acc.id, adr.id, (SELECT id FROM hive_type WHERE code = 'bar'),
                       (SELECT id FROM hive_status WHERE code = 'active'), 'Old Bar',
                       'Europe/Berlin', 50 FROM acc, adr""")
            later = len(list(MIGRATIONS_DIR.glob("*.sql"))) - 4
            assert await up(dsn, report=lambda line: None) == later  # 0005 and after
            states = {s.version: s.state for s in await status(dsn)}
            assert states[5] == "applied"
            lonlat = await conn.fetchrow("SELECT ST_X(geog::geometry) AS x, "
                                         "ST_Y(geog::geometry) AS y FROM address")
            assert (round(lonlat["x"], 6), round(lonlat["y"], 6)) == (13.389, 52.517)
            await conn.execute("UPDATE address SET latitude = 48.137, longitude = 11.575")
            moved = await conn.fetchval(
                "SELECT round(ST_Distance(geog, ST_MakePoint(13.389, 52.517)::geography))"
                " FROM address")
            assert 500_000 < moved < 510_000  # Berlin to Munich, in metres
            heard: asyncio.Queue[str] = asyncio.Queue()
            listener = await asyncpg.connect(dsn)
            try:
                await listener.add_listener("bizzyd_catalogue",
                                            lambda c, pid, ch, payload: heard.put_nowait(payload))
                hive_id = await conn.fetchval("SELECT id FROM hive")
                await conn.execute(
                    "INSERT INTO deal (hive_id, title, valid_from, valid_until) VALUES "
                    "($1, 'x', now(), now() + interval '1 day')", hive_id)
                payload = await asyncio.wait_for(heard.get(), 5)
                entity, version = map(int, payload.split())
                assert entity == hive_id and version >= 1
                await conn.execute("UPDATE hive SET name = 'New Bar'")
                later = await asyncio.wait_for(heard.get(), 5)
                assert int(later.split()[1]) > version
            finally:
                await listener.close()
        finally:
            await conn.close()
    finally:
        await drop_database(dsn, server)


def test_0005_upgrades_a_database_in_place(tmp_path, pg_server_dsn):
    asyncio.run(_upgrade(tmp_path, pg_server_dsn))
