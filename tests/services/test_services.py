"""End-to-end tests of ``scripts/services`` with the real PostgreSQL, memcached and mosquitto.

Every test runs the script with a private state directory (under ``tmp_path``) and private
free ports, so the developer's services (default ports, ``<checkout>/state``) are never
touched. Whatever a test starts is stopped by the fixture's finalizer. RabbitMQ is not
tested here (a node takes about 10 s to start); see docs/services.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services"
# The first run on a fresh machine may apt-get install the packages.
START_TIMEOUT = 600
STOP_TIMEOUT = 180
PORT_VARS = (
    "BIZZYD_PG_PORT",
    "BIZZYD_MC_PORT",
    "BIZZYD_MQTT_PORT",
    "BIZZYD_RABBIT_MQTT_PORT",
    "BIZZYD_RABBIT_NODE_PORT",
    "BIZZYD_RABBIT_DIST_PORT",
    "BIZZYD_RABBIT_EPMD_PORT",
    "BIZZYD_FIREBASE_PORT",
)
PID_FILES = (
    "postgres/data/postmaster.pid",
    "memcached/memcached.pid",
    "mosquitto/mosquitto.pid",
    "rabbitmq/rabbitmq.pid",
    "rabbitmq/epmd.pid",
)


def _free_ports(count: int) -> list[int]:
    """Distinct ports that are free right now (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


class Services:
    """Runs scripts/services with a private environment."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BIZZYD_")}
        ports = _free_ports(len(PORT_VARS))
        self.env.update(zip(PORT_VARS, map(str, ports), strict=True))
        self.env["BIZZYD_STATE_DIR"] = str(state)
        self.env["BIZZYD_PG_FAST"] = "1"
        # the checkout's firebase-tools install (about 70 s to make; shared, read only)
        checkout_state = Path(os.environ.get("BIZZYD_STATE_DIR", ROOT / "state"))
        self.env["BIZZYD_FIREBASE_TOOLS_DIR"] = os.environ.get(
            "BIZZYD_FIREBASE_TOOLS_DIR", str(checkout_state / "firebase" / "npm"))
        self.pg_port = int(self.env["BIZZYD_PG_PORT"])
        self.mc_port = int(self.env["BIZZYD_MC_PORT"])
        self.mqtt_port = int(self.env["BIZZYD_MQTT_PORT"])

    def run(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            cwd="/",  # the script must work from any directory
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = START_TIMEOUT) -> str:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, (
            f"services {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    def status(self) -> dict[str, list[str]]:
        lines = self.ok("status", timeout=60).splitlines()
        return {line.split()[0]: line.split()[1:] for line in lines}

    def psql(self, sql: str) -> str:
        psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
        proc = subprocess.run(
            [
                psql,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "-d",
                "bizzyd",
                "-tAc",
                sql,
            ],
            env={**self.env, "PGCONNECT_TIMEOUT": "10"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def cleanup(self) -> None:
        """Stop everything this state dir runs; kill leftovers if the script failed."""
        try:
            self.run("stop", timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for rel in PID_FILES:
            pidfile = self.state / rel
            try:
                pid = int(pidfile.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if str(self.state).encode() in cmdline:  # only our own processes
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def services(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("scripts/services runs the daemons as their own users: needs root")
    svc = Services(tmp_path / "state")
    yield svc
    svc.cleanup()


def test_help_and_env(services: Services) -> None:
    assert "Usage:" in services.ok("--help")
    env = dict(
        line.removeprefix("export ").split("=", 1) for line in services.ok("env").splitlines()
    )
    pg, mc, mqtt = services.pg_port, services.mc_port, services.mqtt_port
    assert env["BIZZYD_PG_DSN"] == f"postgresql://postgres@127.0.0.1:{pg}/bizzyd"
    assert env["BIZZYD_MEMCACHED"] == f"127.0.0.1:{mc}"
    assert env["BIZZYD_MQTT"] == f"127.0.0.1:{mqtt}"
    assert env["BIZZYD_RABBIT_MQTT"] == f"127.0.0.1:{services.env['BIZZYD_RABBIT_MQTT_PORT']}"
    assert env["BIZZYD_STATE_DIR"] == str(services.state)
    for var in PORT_VARS:
        assert env[var] == services.env[var]
    # env and status do not create the state dir.
    assert not services.state.exists()


def test_bad_arguments(services: Services) -> None:
    assert services.run("start", "nosuchservice", timeout=30).returncode != 0
    assert services.run("frobnicate", timeout=30).returncode != 0
    services.env["BIZZYD_PG_PORT"] = "70000"
    proc = services.run("status", timeout=30)
    assert proc.returncode != 0
    assert "BIZZYD_PG_PORT" in proc.stderr


@pytest.mark.timeout(START_TIMEOUT + 300)
def test_lifecycle_keeps_data(services: Services) -> None:
    pg, mc, mqtt = services.pg_port, services.mc_port, services.mqtt_port

    out = services.ok("start")
    assert f"postgres: started on 127.0.0.1:{pg}" in out
    assert "new cluster" in out
    assert f"memcached: started on 127.0.0.1:{mc}" in out
    assert f"mosquitto: started on 127.0.0.1:{mqtt}" in out
    fb = int(services.env["BIZZYD_FIREBASE_PORT"])
    assert f"firebase: auth emulator started on 127.0.0.1:{fb}" in out
    assert all(_port_open(port) for port in (pg, mc, mqtt, fb))

    # Idempotent: a second start finds each running.
    out = services.ok("start")
    for name, port in (("postgres", pg), ("memcached", mc), ("mosquitto", mqtt)):
        assert f"{name}: already running on 127.0.0.1:{port}" in out

    status = services.status()
    for name, port in (("postgres", pg), ("memcached", mc), ("mosquitto", mqtt)):
        assert status[name][0] == "running", status
        assert status[name][1] == f"127.0.0.1:{port}"
        assert status[name][3].isdigit()
    assert status["rabbitmq"][0] == "stopped"

    # The services work.
    services.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    _check_memcached(mc)
    _check_mqtt(mqtt)

    out = services.ok("stop", timeout=STOP_TIMEOUT)
    for name in ("postgres", "memcached", "mosquitto", "firebase"):
        assert f"{name}: stopped" in out
    assert not any(_port_open(port) for port in (pg, mc, mqtt, fb))
    assert all(fields[0] == "stopped" for fields in services.status().values())
    # Stopping what is stopped is fine.
    services.ok("stop", timeout=STOP_TIMEOUT)

    # Start again: the data survived (no new initdb).
    out = services.ok("start")
    assert f"postgres: started on 127.0.0.1:{pg} (data kept" in out
    assert services.psql("SELECT x FROM kept") == "42"

    services.ok("stop", timeout=STOP_TIMEOUT)
    assert not any(_port_open(port) for port in (pg, mc, mqtt))


def test_port_taken_fails_clearly(services: Services) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", services.mc_port))
        squatter.listen()
        proc = services.run("start", "memcached")
    assert proc.returncode != 0
    assert f"127.0.0.1:{services.mc_port} is already in use" in proc.stderr
    assert services.status()["memcached"][0] == "stopped"


def test_stale_pid_file(services: Services) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)
    pidfile = services.state / "memcached" / "memcached.pid"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(f"{gone.pid}\n")
    assert services.status()["memcached"][0] == "stopped"

    out = services.ok("start", "memcached")
    assert "stale pid file" in out
    assert f"memcached: started on 127.0.0.1:{services.mc_port}" in out
    assert services.status()["memcached"][0] == "running"
    services.ok("stop", "memcached", timeout=STOP_TIMEOUT)
    assert not pidfile.exists()


def _check_memcached(port: int) -> None:
    from pymemcache.client.base import Client

    client = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)
    try:
        assert client.set("services-test", b"v", noreply=False)
        assert client.get("services-test") == b"v"
    finally:
        client.close()


def _check_mqtt(port: int) -> None:
    """One QoS 1 message through mosquitto (anonymous, MQTT 3.1.1)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[bytes] = []
    subscribed, got = threading.Event(), threading.Event()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        received.append(msg.payload)
        got.set()

    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="services-test-sub", protocol=mqtt.MQTTv311
    )
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    pub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="services-test-pub", protocol=mqtt.MQTTv311
    )
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        sub.subscribe("services-test/#", qos=1)
        assert subscribed.wait(10)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        info = pub.publish("services-test/1", b"hello", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
        assert got.wait(10)
        assert received == [b"hello"]
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
