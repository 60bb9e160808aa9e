"""The `insights job` process role: on a fresh database it profiles and forecasts every
hive with rollups by itself, and the workers pick the forecast up for expected_now;
and `bizzyd insights`, which runs the jobs once."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest
import yaml
from insights_support import insights_config, sql

from bizzyd_proc import BIZZYD, free_port, running, wait_for
from modules.database.testing import temporary_database_sync
from modules.hives.testing import load_demo

pytestmark = pytest.mark.services


def test_the_job_process_profiles_and_forecasts(tmp_path, pg_server_dsn):
    with temporary_database_sync(pg_server_dsn) as dsn:
        asyncio.run(load_demo(dsn, 10, days=8))  # every weekday
        with_rollups = sql(dsn, "SELECT count(DISTINCT hive_id) AS n "
                                "FROM hive_occupancy_hourly")[0]["n"]
        assert with_rollups > 0
        port = free_port()
        with running(tmp_path, insights_config(port, dsn, job_on=True), port) as b:
            b.wait_log("insights: forecast of", timeout=30)
            assert "bizzyd: insights job process" in b.titles()
            runs = {r["job"]: r for r in sql(dsn, "SELECT * FROM insights_run")}
            assert runs["profile"]["hives"] == with_rollups
            assert runs["forecast"]["hives"] == with_rollups
            assert sql(dsn, "SELECT count(*) AS n FROM hive_occupancy_profile")[0]["n"] == \
                with_rollups * 7 * 24
            hive = sql(dsn, "SELECT hive_id FROM hive_occupancy_forecast "
                            "WHERE hour = date_trunc('hour', now()) LIMIT 1")[0]["hive_id"]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                wait_for(lambda: client.get(f"/v1/hives/{hive}/occupancy").json()
                         ["expected_now"] is not None, timeout=10, what="expected_now")
            # the next check finds nothing due: no second run within the intervals
            b.wait_log("cache loader: loaded")
            assert b.log().count("insights: profile of") == 1


def test_the_insights_command_runs_the_jobs_once(tmp_path, insights_dsn):
    port = free_port()
    config = insights_config(port, insights_dsn)
    (tmp_path / "bizzyd.yaml").write_text(yaml.safe_dump(config))
    before = {r["job"]: r["finished_at"] for r in sql(insights_dsn,
                                                       "SELECT * FROM insights_run")}

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*BIZZYD, "-p", str(tmp_path), "-c",
                               str(tmp_path / "bizzyd.yaml"), "insights", *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    done = command("forecast")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "insights: forecast of" in done.stdout and "profile" not in done.stdout
    after = {r["job"]: r["finished_at"] for r in sql(insights_dsn,
                                                      "SELECT * FROM insights_run")}
    assert after["forecast"] > before["forecast"] and after["profile"] == before["profile"]
    done = command("all")
    assert done.returncode == 0 and "insights: profile of" in done.stdout
    assert command("everything").returncode == 2
