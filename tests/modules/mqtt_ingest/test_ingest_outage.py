"""Postgres and the broker restarted under a running ingest (private instances, so the
shared services are not disturbed): nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from bizzyd_proc import Bizzyd, free_port, http_get, wait_for
from modules.mqtt_ingest.testing import (
    DEFAULT_MQTT_PORT,
    create_database,
    drop_database,
    ingest_config,
    settle,
    sim_command,
)

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[3]
TRAFFIC = ("--duration", "6", "--speed", "900", "--rate", "400", "--hours", "flat",
           "--restarts", "20", "--wrap-share", "0.5", "--loss", "0.01", "--dup", "0.02",
           "--create-fleet", "6:2")


class Private:
    """One service of scripts/services in a state dir of the test's own."""

    def __init__(self, tmp: Path, name: str, port_var: str) -> None:
        self.name, self.port = name, free_port()
        self.env = {**os.environ, "BIZZYD_STATE_DIR": str(tmp / f"state-{name}"),
                    port_var: str(self.port), "BIZZYD_PG_FAST": "1"}

    def __call__(self, action: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "services"), action, self.name], env=self.env,
                       check=True, timeout=120, capture_output=True)


@pytest.fixture
def private(tmp_path):
    started: list[Private] = []

    def make(name: str, port_var: str) -> Private:
        service = Private(tmp_path, name, port_var)
        service("start")
        started.append(service)
        return service

    try:
        yield make
    finally:
        for service in started:
            service("stop")


def metric(port: int, name: str, default: float | None = None) -> float:
    for line in http_get(port, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    if default is not None:
        return default
    raise AssertionError(f"no metric {name}")


def publishing(port: int, sim: subprocess.Popen) -> bool:
    """The simulator's messages reach ingest (or the simulator has already exited)."""
    return sim.poll() is not None or metric(port, "bizzyd_mqtt_ingest_received_total", 0) > 0


def run(tmp: Path, dsn: str, mqtt_port: int, outage) -> tuple[Bizzyd, dict]:
    tag = "t" + secrets.token_hex(4)
    port = free_port()
    b = Bizzyd(tmp, port)
    config = ingest_config(port, dsn, {"topic_prefix": tag, "client_id": tag, "port": mqtt_port,
                                       "session_expiry": "120s"})
    config["modules"].append("modules.status")
    config["http"]["servers"][0]["locations"].insert(
        0, {"location": "= /metrics", "content": "metrics"})
    b.write_config(config)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim = None
    try:
        b.start()
        # subscribed before the simulator publishes: the broker drops what no one subscribed
        wait_for(lambda: metric(port, "bizzyd_mqtt_ingest_connected", 0) == 1, timeout=30,
                 what="ingest connected and subscribed")
        sim = subprocess.Popen(sim_command(dsn, mqtt_port, tag, str(tmp / "truth.json"),
                                           "--client-id", f"{tag}-sim", "--drain", "60",
                                           *TRAFFIC),
                               env=env, stdout=subprocess.DEVNULL,
                               stderr=open(tmp / "sim.log", "w"))  # noqa: SIM115
        # the outage must hit while the simulator publishes, not while it starts (its
        # connect would be refused) nor after it is done
        wait_for(lambda: publishing(port, sim), timeout=60, step=0.05,
                 what="the simulator's first messages at ingest")
        outage()
        assert sim.wait(90) == 0, (tmp / "sim.log").read_text()
        truth = json.loads((tmp / "truth.json").read_text())
        # what no subscription matched, the broker dropped: no subscriber can count it
        assert truth["run"]["unrouted"] == 0, (tmp / "sim.log").read_text()
        settle(dsn, truth, timeout=60, step=0.5)
        return b, truth
    except BaseException:
        if sim is not None and sim.poll() is None:
            sim.kill()
        b.kill_everything()
        raise


def test_postgres_restarted_during_ingest(tmp_path, private):
    pg = private("postgres", "BIZZYD_PG_PORT")
    dsn = asyncio.run(create_database(f"postgresql://postgres@127.0.0.1:{pg.port}/bizzyd"))

    def outage() -> None:
        pg("stop")
        time.sleep(2.0)  # the broker keeps what arrives meanwhile (nothing is acked)
        pg("start")

    b, _ = run(tmp_path, dsn, DEFAULT_MQTT_PORT, outage)
    try:
        assert metric(b.port, "bizzyd_mqtt_ingest_db_errors_total") > 0
        assert "database: connection restored" in b.log() or "retrying in" in b.log()
        assert b.stop() == 0
    finally:
        b.kill_everything()


def test_broker_restarted_during_ingest(tmp_path, private):
    broker = private("mosquitto", "BIZZYD_MQTT_PORT")
    dsn = asyncio.run(create_database())

    def outage() -> None:
        broker("stop")
        time.sleep(1.5)
        broker("start")

    try:
        b, _ = run(tmp_path, dsn, broker.port, outage)
        try:
            assert metric(b.port, "bizzyd_mqtt_ingest_connects_total") >= 2
            assert metric(b.port, "bizzyd_mqtt_ingest_connected") == 1
            assert "retrying in" in b.log()
            assert b.stop() == 0
        finally:
            b.kill_everything()
    finally:
        asyncio.run(drop_database(dsn))
