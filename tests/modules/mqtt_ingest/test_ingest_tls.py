"""TLS and username/password to the broker: a private mosquitto with a test CA and a
password file (the shared services run neither)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bizzyd_proc import Bizzyd, free_port, wait_for
from modules.mqtt_ingest.client import publish_once
from modules.mqtt_ingest.codec import (
    Event,
    EventReport,
    EventType,
    encode_event_report,
    sensor_topic,
)
from modules.mqtt_ingest.testing import fetch, ingest_config, sim_command, temporary_database_sync

pytestmark = [pytest.mark.services,
              pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("mosquitto_passwd")),
                                 reason="needs openssl and mosquitto_passwd")]
ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "s3cret-" + secrets.token_hex(4)


def run(*command: str, cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=bizzyd test CA", cwd=d)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    run("mosquitto_passwd", "-c", "-b", "passwd", "ingest", PASSWORD, cwd=d)
    port = free_port()
    (d / "mosquitto.conf").write_text(f"""user root
persistence false
log_dest file {d}/mosquitto.log
per_listener_settings false
allow_anonymous false
password_file {d}/passwd
max_inflight_messages 1000
listener {port} 127.0.0.1
cafile {d}/ca.pem
certfile {d}/server.pem
keyfile {d}/server.key
""")
    proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _open(port), what="mosquitto with TLS")
        yield port, d
    finally:
        proc.terminate()
        proc.wait(10)


def _open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def mqtt_settings(port: int, d: Path, password: str = PASSWORD) -> dict:
    return {"host": "127.0.0.1", "port": port, "protocol": "5", "username": "ingest",
            "password": password, "password_file": None, "connect_timeout": 3.0,
            "tls": {"enabled": True, "ca_file": str(d / "ca.pem"), "cert_file": None,
                    "key_file": None, "insecure": False}}


def test_ingest_over_tls_with_a_password_file(tmp_path, broker):
    port, d = broker
    tag = "t" + secrets.token_hex(4)
    (tmp_path / "mqtt.pass").write_text(PASSWORD + "\n")
    with temporary_database_sync() as dsn:
        subprocess.run(sim_command(dsn, port, tag, str(tmp_path / "t.json"), "--dry-run",
                                   "--create-fleet", "1:1", "--v2-share", "1"),
                       check=True, capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        http = free_port()
        b = Bizzyd(tmp_path / "b", http)
        (tmp_path / "b").mkdir()
        b.write_config(ingest_config(http, dsn, {
            "port": port, "topic_prefix": tag, "client_id": tag, "username": "ingest",
            "password_file": str(tmp_path / "mqtt.pass"),
            "tls": {"enabled": True, "ca_file": str(d / "ca.pem")}}))
        try:
            b.start()
            wait_for(lambda: "connected to 127.0.0.1" in b.log(), timeout=15,
                     what="ingest connected over TLS")
            t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
            events = tuple(Event(EventType.ENTRY, 900, c, t + timedelta(seconds=c))
                           for c in range(3))
            publish_once(mqtt_settings(port, d), f"{tag}-dev",
                         sensor_topic("sim-0-0", "events", tag),
                         encode_event_report(EventReport(events)), retain=False)
            query = "SELECT total_in FROM hive_occupancy"
            wait_for(lambda: asyncio.run(fetch(dsn, query)) == [{"total_in": 3}], timeout=10,
                     what="three entries stored")
            # the configuration push goes through TLS and the password too
            body = json.dumps({"threshold_cm": 100, "reporting_interval_min": 10,
                               "status_interval_min": 60, "event_threshold": 5}).encode()
            with socket.create_connection(("127.0.0.1", http), timeout=10) as c:
                c.sendall(b"PUT /v1/sensors/sim-0-0/config HTTP/1.1\r\nHost: t\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                reply = c.recv(65536)
            assert reply.startswith(b"HTTP/1.1 201"), reply
            assert b.stop() == 0
        finally:
            b.kill_everything()


def test_wrong_password_and_unknown_ca_are_refused(broker):
    port, d = broker
    with pytest.raises(RuntimeError, match="refused"):
        publish_once(mqtt_settings(port, d, password="wrong"), "t-wrong", "x/y", b"1",
                     retain=False, timeout=5)
    settings = mqtt_settings(port, d)
    settings["tls"] = {**settings["tls"], "ca_file": None}  # system CAs do not know ours
    with pytest.raises(ssl.SSLError):
        publish_once(settings, "t-ca", "x/y", b"1", retain=False, timeout=5)
    # and anonymous clients are not let in at all
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="t-anon", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(d / "ca.pem"))
    refused = []
    client.on_connect = lambda c, u, f, reason, p: refused.append(reason.is_failure)
    client.connect("127.0.0.1", port)
    for _ in range(50):
        client.loop(0.1)
        if refused:
            break
    assert refused == [True]
