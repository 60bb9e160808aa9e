"""Helpers shared by the ingest tests, the simulator's self-test and the benchmark.

Nothing here runs in bizzyd itself: a throw-away migrated database, a bizzyd config
with ingest, a PULL socket standing in for the cache manager, and readers of the
tables the tests compare.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import asyncpg

from bizzyd.bus import OCCUPANCY_UPDATE, Bus
from modules.database.testing import (  # noqa: F401  (re-exported for the ingest tests)
    DEFAULT_PG,
    create_database,
    drop_database,
    server_dsn,
    temporary_database,
    temporary_database_sync,
    with_database,
)

# the brokers `scripts/services` started (its `env` exports these)
DEFAULT_MQTT_PORT = int(os.environ.get("BIZZYD_MQTT_PORT", "21883"))
RABBIT_MQTT_PORT = int(os.environ.get("BIZZYD_RABBIT_MQTT_PORT", "21884"))


def ingest_config(http_port: int, dsn: str, mqtt: dict[str, Any], **extra: Any) -> dict:
    """A bizzyd config (as a dict) with database + ingest + the config push location."""
    config: dict[str, Any] = {
        "worker_processes": 1,
        "error_log_level": "info",
        "worker_shutdown_timeout": "5s",
        "modules": ["modules.database", "modules.mqtt_ingest"],
        "database": {"dsn": dsn, "connect_timeout": "1s", "reconnect_max_backoff": "1s",
                     "pool_max_size": 2},
        "mqtt": {"host": "127.0.0.1", "port": DEFAULT_MQTT_PORT,
                 "reconnect_max_backoff": "1s", **mqtt},
        "http": {"servers": [{
            "listen": [f"127.0.0.1:{http_port}"],
            "locations": [
                {"location": "= /health", "return": [200, '{"status":"ok"}']},
                {"location": r"~ ^/v1/sensors/(?<sensor>[A-Za-z0-9_.-]{1,64})/config$",
                 "content": "sensor_config", "access": ["allow 127.0.0.1", "deny all"]},
                {"location": "/", "return": [404, "nope"]},
            ],
        }]},
    }
    config.update(extra)
    return config


class BusListener:
    """Binds the cache manager's end of `occupancy.updates` and collects updates."""

    def __init__(self, run_dir: str) -> None:
        self.bus = Bus(run_dir)
        self.sock = self.bus.puller("occupancy.updates")
        self.updates: list[tuple] = []

    def poll(self, timeout_ms: int = 0) -> list[tuple]:
        got = []
        while self.sock.poll(timeout_ms):
            got.append(OCCUPANCY_UPDATE.decode(self.sock.recv()))
            timeout_ms = 0
        self.updates += got
        return got

    def latest(self) -> dict[int, tuple]:
        self.poll()
        return {u[0]: u for u in self.updates}

    def close(self) -> None:
        self.bus.close()


async def occupancy(dsn: str) -> dict[int, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM hive_occupancy ORDER BY hive_id")
    finally:
        await conn.close()
    return {r["hive_id"]: dict(r) for r in rows}


async def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def consistency_problems(dsn: str, params: Any = None) -> list[str]:
    """The invariants ingest keeps, checked from the tables:

    * every hive's day_in/day_out equal the sums of its rows' deltas since day_start,
      and its totals the sums over all its rows;
    * occupancy = greatest(day_in - day_out, 0);
    * each sensor's stored tally equals the replay of its stored rows.
    """
    from .codec import CounterReport, Event, EventType, ReportType
    from .counting import (
        DEFAULT_PARAMS,
        CounterTally,
        EventTally,
        replay_events,
        replay_reports,
    )

    params = params or DEFAULT_PARAMS
    problems = []
    conn = await asyncpg.connect(dsn)
    try:
        for row in await conn.fetch("""
            SELECT o.*, coalesce(a.ti, 0) AS ti, coalesce(a.tout, 0) AS tout,
                   coalesce(a.di, 0) AS di, coalesce(a.dout, 0) AS dout
            FROM hive_occupancy o LEFT JOIN (
                SELECT r.hive_id, sum(delta_in) ti, sum(delta_out) tout,
                       sum(delta_in) FILTER (WHERE r.reported_at >= o2.day_start) di,
                       sum(delta_out) FILTER (WHERE r.reported_at >= o2.day_start) dout
                FROM sensor_report r JOIN hive_occupancy o2 ON o2.hive_id = r.hive_id
                GROUP BY r.hive_id) a ON a.hive_id = o.hive_id"""):
            h = row["hive_id"]
            if (row["total_in"], row["total_out"]) != (row["ti"], row["tout"]):
                problems.append(f"hive {h}: totals {row['total_in']}/{row['total_out']} "
                                f"!= rows {row['ti']}/{row['tout']}")
            if (row["day_in"], row["day_out"]) != (row["di"], row["dout"]):
                problems.append(f"hive {h}: day {row['day_in']}/{row['day_out']} "
                                f"!= rows {row['di']}/{row['dout']}")
            if row["occupancy"] != max(0, row["day_in"] - row["day_out"]):
                problems.append(f"hive {h}: occupancy {row['occupancy']} != net")
        for state in await conn.fetch("SELECT sensor_id, v1_tally::text, v2_tally::text "
                                      "FROM sensor_ingest_state"):
            rows = await conn.fetch("SELECT * FROM sensor_report WHERE sensor_id = $1",
                                    state["sensor_id"])
            v1 = [CounterReport(r["total_in"], r["total_out"], r["sensor_local_time"],
                                ReportType(r["report_type"]))
                  for r in rows if r["protocol"] == "v1"]
            v2 = [Event(EventType(r["event_type"]), r["distance_mm"], r["counter"],
                        r["reported_at"]) for r in rows if r["protocol"] == "v2"]
            if state["v1_tally"]:
                stored = CounterTally.from_dict(json.loads(state["v1_tally"]))
                if stored != replay_reports(v1, params):
                    problems.append(f"sensor {state['sensor_id']}: v1 tally != replay")
                sums = (sum(r["delta_in"] for r in rows if r["protocol"] == "v1"),
                        sum(r["delta_out"] for r in rows if r["protocol"] == "v1"))
                if sums != (stored.entries, stored.exits):
                    problems.append(f"sensor {state['sensor_id']}: v1 row deltas {sums} "
                                    f"!= tally {(stored.entries, stored.exits)}")
            if state["v2_tally"]:
                stored2 = EventTally.from_dict(json.loads(state["v2_tally"]))
                if stored2 != replay_events(v2):
                    problems.append(f"sensor {state['sensor_id']}: v2 tally != replay")
    finally:
        await conn.close()
    return problems


def sim_command(dsn: str, port: int, topic_prefix: str, truth: str, *extra: str) -> list[str]:
    """The simulator as a subprocess (python -m modules.mqtt_ingest.sim ...)."""
    import sys

    return [sys.executable, "-m", "modules.mqtt_ingest.sim", "--dsn", dsn, "--port", str(port),
            "--topic-prefix", topic_prefix, "--truth", truth, "--no-progress", *extra]


async def truth_mismatches(dsn: str, truth: dict[str, Any]) -> list[str]:
    """Where bizzyd's hive_occupancy differs from the simulator's ground truth."""
    occ = await occupancy(dsn)
    out = []
    for hive, want in truth["hives"].items():
        row = occ.get(int(hive), {})
        got = (row.get("occupancy", 0), row.get("total_in", 0), row.get("total_out", 0))
        exp = (want["expected_occupancy"], want["expected_total_in"],
               want["expected_total_out"])
        if got != exp:
            out.append(f"hive {hive}: bizzyd occupancy/in/out {got}, truth {exp}")
        elif row and row["day_start"] is not None \
                and row["day_start"].isoformat() != want["day_start"]:
            out.append(f"hive {hive}: day starts {row['day_start']}, truth {want['day_start']}"
                       " (a reset boundary passed during the run?)")
    return out


def settle(dsn: str, truth: dict[str, Any], timeout: float = 40.0, step: float = 0.25) -> None:
    """Wait (bounded) until Postgres matches the ground truth, then check consistency;
    AssertionError listing the differences otherwise."""
    deadline = time.monotonic() + timeout
    while last := asyncio.run(truth_mismatches(dsn, truth)):
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f}s bizzyd still differs from the "
                                 "ground truth:\n" + "\n".join(last))
        time.sleep(step)
    problems = asyncio.run(consistency_problems(dsn))
    assert problems == [], problems


async def execute(dsn: str, sql: str) -> None:
    """Run SQL (several statements allowed) on a fresh connection."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
