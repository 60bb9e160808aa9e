"""`bizzyd demo-data`: a deterministic, plausible city, loaded into a fresh database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess

import asyncpg
import pytest
import yaml

from bizzyd_proc import BIZZYD, ROOT

pytestmark = pytest.mark.services
NOW = "2026-11-02T00:00:00Z"
TABLES = ("hive", "address", "sensor", "sensor_report", "sensor_ingest_state",
          "hive_occupancy", "hive_occupancy_hourly", "deal", "app_user", "user_hive")


def demo(tmp_path, dsn: str, *args: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "demo.yaml"
    conf.write_text(yaml.safe_dump({"modules": ["modules.database", "modules.demo_data"],
                                    "database": {"dsn": dsn}}))
    return subprocess.run([*BIZZYD, "-p", str(tmp_path), "-c", str(conf), "demo-data",
                           "--hives", "25", "--now", NOW, *args],
                          capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def _fingerprint(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT t::text FROM {table} t ORDER BY t::text")
            out[table] = hashlib.sha256("\n".join(r[0] for r in rows).encode()).hexdigest()
        return out
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def fingerprint(dsn: str) -> dict[str, str]:
    return asyncio.run(_fingerprint(dsn))


def fetch(dsn: str, sql: str) -> list:
    return asyncio.run(_fetch(dsn, sql))


def test_same_seed_gives_the_same_city(tmp_path, fresh_dsn, other_fresh_dsn):
    first = demo(tmp_path, fresh_dsn, "--seed", "7")
    assert first.returncode == 0, first.stderr
    assert demo(tmp_path, other_fresh_dsn, "--seed", "7").returncode == 0
    assert fingerprint(fresh_dsn) == fingerprint(other_fresh_dsn)
    assert "done in" in first.stdout + first.stderr
    assert "sensor_report" in first.stdout + first.stderr  # row counts per table


def test_another_seed_gives_another_city(tmp_path, fresh_dsn, other_fresh_dsn):
    assert demo(tmp_path, fresh_dsn, "--seed", "1").returncode == 0
    assert demo(tmp_path, other_fresh_dsn, "--seed", "2").returncode == 0
    a, b = fingerprint(fresh_dsn), fingerprint(other_fresh_dsn)
    assert a["hive"] != b["hive"] and a["sensor_report"] != b["sensor_report"]


def test_the_city_is_plausible(tmp_path, fresh_dsn):
    assert demo(tmp_path, fresh_dsn, "--seed", "3").returncode == 0
    assert fetch(fresh_dsn, "SELECT count(*) FROM hive")[0][0] == 25
    bad = fetch(fresh_dsn, """SELECT o.hive_id FROM hive_occupancy o JOIN hive h ON h.id = o.hive_id
                              WHERE o.occupancy < 0 OR o.occupancy > h.capacity * 1.2""")
    assert bad == []
    kinds = {r[0] for r in fetch(fresh_dsn, "SELECT DISTINCT firmware FROM sensor")}
    assert kinds == {"v1", "v2"}
    days = fetch(fresh_dsn, "SELECT count(DISTINCT date_trunc('day', reported_at)) "
                            "FROM sensor_report")[0][0]
    assert days >= 7
    soon = fetch(fresh_dsn, "SELECT count(*) FROM deal WHERE valid_until > timestamptz "
                            f"'{NOW}' AND valid_until <= timestamptz '{NOW}' + interval '48 h'")
    assert soon[0][0] > 0
    # totals per hive agree with the reports' applied deltas
    mismatch = fetch(fresh_dsn, """
        SELECT o.hive_id FROM hive_occupancy o
        LEFT JOIN (SELECT s.hive_id, sum(r.delta_in) AS d_in, sum(r.delta_out) AS d_out
                   FROM sensor_report r JOIN sensor s ON s.id = r.sensor_id
                   GROUP BY s.hive_id) t ON t.hive_id = o.hive_id
        WHERE o.total_in <> coalesce(t.d_in, 0) OR o.total_out <> coalesce(t.d_out, 0)""")
    assert mismatch == []


def test_refuses_a_database_with_hives_unless_forced(tmp_path, fresh_dsn):
    assert demo(tmp_path, fresh_dsn).returncode == 0
    again = demo(tmp_path, fresh_dsn)
    assert again.returncode != 0 and "--force" in again.stderr + again.stdout
    quiet = demo(tmp_path, fresh_dsn, "--if-empty")
    assert quiet.returncode == 0 and quiet.stdout.strip() == ""
    assert demo(tmp_path, fresh_dsn, "--force", "--seed", "9").returncode == 0
