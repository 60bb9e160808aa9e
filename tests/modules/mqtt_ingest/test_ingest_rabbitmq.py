"""The end-to-end ground-truth run against RabbitMQ's MQTT plugin (MQTT 3.1.1 only,
10 unacknowledged messages in flight), on a private node of the test's own."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from bizzyd_proc import Bizzyd, free_port, wait_for
from modules.mqtt_ingest.testing import (
    ingest_config,
    settle,
    sim_command,
    temporary_database_sync,
)

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    state = tmp_path_factory.mktemp("rabbit")
    ports = {"BIZZYD_RABBIT_MQTT_PORT": free_port(), "BIZZYD_RABBIT_NODE_PORT": free_port(),
             "BIZZYD_RABBIT_DIST_PORT": free_port(), "BIZZYD_RABBIT_EPMD_PORT": free_port()}
    env = {**os.environ, "BIZZYD_STATE_DIR": str(state),
           **{k: str(v) for k, v in ports.items()}}

    def services(action: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "services"), action, "rabbitmq"], env=env,
                       check=True, timeout=180, capture_output=True)

    services("start")
    try:
        yield ports["BIZZYD_RABBIT_MQTT_PORT"]
    finally:
        services("stop")


def test_ground_truth_through_rabbitmq_with_mqtt_3_1_1(tmp_path, rabbit):
    tag = "t" + secrets.token_hex(4)
    port = free_port()
    with temporary_database_sync() as dsn:
        b = Bizzyd(tmp_path, port)
        b.write_config(ingest_config(port, dsn, {
            "port": rabbit, "protocol": "3.1.1", "topic_prefix": tag, "client_id": tag}))
        try:
            b.start()
            wait_for(lambda: "connected to 127.0.0.1" in b.log(), timeout=15,
                     what="ingest connected to RabbitMQ")
            command = sim_command(dsn, rabbit, tag, str(tmp_path / "truth.json"),
                                  "--protocol", "3.1.1", "--create-fleet", "5:2",
                                  "--client-id", f"{tag}-sim", "--duration", "5", "--speed",
                                  "900", "--rate", "200", "--hours", "flat", "--restarts", "20",
                                  "--wrap-share", "0.5", "--loss", "0.03", "--dup", "0.03",
                                  "--reorder", "0.02", "--v2-share", "0.4")
            done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            truth = json.loads((tmp_path / "truth.json").read_text())
            settle(dsn, truth, timeout=60, step=0.5)
            assert "(MQTT 3.1.1)" in b.log()
            assert b.stop() == 0
            assert not b.leftovers()
        finally:
            b.kill_everything()
