"""The queue in conf/demo.yaml: the seed's curl examples (docs/api.md) and boto3 with
the demo's key pair, against the demo config itself (in a private prefix, with this
test's port and database)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from queue_support import boto_client

from bizzyd_proc import ROOT, free_port, running

pytestmark = pytest.mark.services


def demo_config(port: int, dsn: str) -> dict:
    config = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
    config.pop("include", None)
    assert "modules.queue" in config["modules"]
    config.update(worker_processes=2, pid="run/bizzyd.pid", error_log="logs/error.log",
                  error_log_level="info", worker_shutdown_timeout="5s")
    config["database"]["dsn"] = dsn
    if os.environ.get("BIZZYD_MC_PORT"):
        config["occupancy"]["memcached"] = f"127.0.0.1:{os.environ['BIZZYD_MC_PORT']}"
    if os.environ.get("BIZZYD_MQTT_PORT"):
        config["mqtt"]["port"] = int(os.environ["BIZZYD_MQTT_PORT"])
    (server,) = config["http"]["servers"]
    server["listen"] = [f"127.0.0.1:{port}"]
    return config


def curl(*args: str) -> tuple[int, str]:
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True,
                          text=True, timeout=30, check=True)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_seed_curl_examples_and_boto3_against_the_demo_config(tmp_path: Path, queue_dsn: str):
    port = free_port()
    config = demo_config(port, queue_dsn)
    with running(tmp_path, config, port):
        base = f"http://127.0.0.1:{port}"
        json_type = ["-H", "Content-Type: application/json"]
        assert curl("-X", "POST", "-d", '{"message": ""}', *json_type,
                    f"{base}/send-message") == (400, "Message content required.")
        code, body = curl("-X", "POST", "-d", '{"message": "job-details-01"}', *json_type,
                          f"{base}/send-message")
        assert code == 200
        key = json.loads(body)["key"]
        code, body = curl("-X", "GET", f"{base}/receive-message?count=4")
        got = json.loads(body)
        assert got["message"] == "Fewer messages available than requested."
        assert [m["key"] for m in got["messages"]] == [key]
        assert json.loads(curl("-X", "GET", f"{base}/receive-message")[1])["message"] == \
            "No messages available in queue."
        assert curl("-X", "DELETE", f"{base}/delete-message/{key}") == \
            (200, '{"status":"okay"}')
        stats = json.loads(curl("-X", "GET", f"{base}/get-stats")[1])
        assert stats == {"status": "okay", "stats": {
            "queue_length": 0, "checkouts_count": 0, "checkout_lifetime": "120s",
            "rescue_interval": "2s"}}
        assert curl(f"{base}/queues/")[0] == 200

        access, secret = config["queue"]["sqs_credentials"][0].split(":", 1)
        sqs = boto_client(port, access, secret)
        url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        (m,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        assert m["Body"] == "hello"
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
