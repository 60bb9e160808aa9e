"""A cluster on one host for the tests and the benchmark: a RabbitMQ cluster and a
memcached pool started by `scripts/services` into a private state directory, N bizzyd
nodes (each its own prefix, port and shared-memory names) ingesting over AMQP, and
optionally HAProxy in front.

Ports: BIZZYD_PORT_BASE (default 27100) .. +99, so that parallel checkouts do not
collide: RabbitMQ epmd +9, node I at +10*I (AMQP), +10*I+1 (MQTT), +10*I+2
(distribution); memcached pool +40, +41; HAProxy +50 (stats +51); bizzyd node I at
+60+I.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bizzyd_proc import ROOT, Bizzyd, base_config, children_of, wait_for

PORT_BASE = int(os.environ.get("BIZZYD_PORT_BASE", "27100"))
RABBIT_NODES = 3
MC_SERVERS = 2

LOCATIONS = [
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy$", "content": "occupancy"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$",
     "content": "occupancy_stream"},
    {"location": "= /v1/occupancy", "content": "occupancy_many"},
    {"location": r"~ ^/v1/sensors/(?<sensor>[A-Za-z0-9_.-]{1,64})/config$",
     "content": "sensor_config"},
]


@dataclass
class Services:
    """The RabbitMQ cluster and memcached pool of one test session."""

    state: Path
    base: int = PORT_BASE
    env: dict[str, str] = field(default_factory=dict)
    heartbeat: int | None = None  # AMQP heartbeat of the nodes' URLs (None: bizzyd's 5 s)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "BIZZYD_STATE_DIR": str(self.state),
                    "BIZZYD_RABBIT_CLUSTER_NODES": str(RABBIT_NODES),
                    "BIZZYD_RABBIT_CLUSTER_PORT_BASE": str(self.base + 10),
                    "BIZZYD_RABBIT_CLUSTER_EPMD_PORT": str(self.base + 9),
                    "BIZZYD_MC_POOL_SIZE": str(MC_SERVERS),
                    "BIZZYD_MC_POOL_PORT_BASE": str(self.base + 40)}

    def run(self, action: str, *names: str, timeout: float = 240) -> str:
        out = subprocess.run([str(ROOT / "scripts" / "services"), action, *names],
                             env=self.env, timeout=timeout, capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError(f"scripts/services {action} {' '.join(names)} failed:\n"
                                 f"{out.stdout}\n{out.stderr}")
        return out.stdout

    def start(self) -> None:
        self.run("start", "rabbitmq-cluster", "memcached-pool")

    def stop(self) -> None:
        self.run("stop", "rabbitmq-cluster", "memcached-pool")

    def amqp_port(self, node: int) -> int:
        return self.base + 10 * node

    def mqtt_port(self, node: int) -> int:
        return self.base + 10 * node + 1

    def amqp_urls(self, first: int = 1) -> list[str]:
        order = [(first - 1 + k) % RABBIT_NODES + 1 for k in range(RABBIT_NODES)]
        query = f"?heartbeat={self.heartbeat}" if self.heartbeat is not None else ""
        return [f"amqp://guest:guest@127.0.0.1:{self.amqp_port(n)}/{query}" for n in order]

    def memcached(self) -> str:
        return ",".join(f"127.0.0.1:{self.base + 40 + i}" for i in range(MC_SERVERS))

    def memcached_pid_file(self, server: int) -> Path:
        return self.state / "memcached-pool" / str(server) / "memcached.pid"

    def rabbit_pid(self, node: int) -> int:
        path = self.state / "rabbitmq-cluster" / f"node{node}" / "rabbitmq.pid"
        return int(path.read_text().split()[0])


def node_config(services: Services, node: int, nodes: int, dsn: str, tag: str, *,
                shards: int = 6, **occupancy: object) -> dict:
    """bizzyd node `node` (1-based) of `nodes`, ingesting over AMQP from the cluster."""
    port = services.base + 60 + node
    config = base_config(
        port, worker_processes=1,
        modules=["modules.database", "modules.mqtt_ingest", "modules.occupancy"],
        database={"dsn": dsn, "connect_timeout": "1s", "reconnect_max_backoff": "1s",
                  "pool_max_size": 3},
        mqtt={"ingest": "amqp", "protocol": "3.1.1", "topic_prefix": tag,
              "client_id": f"{tag}-n{node}", "reconnect_max_backoff": "1s",
              "batch_size": 200, "port": services.mqtt_port(1)},
        amqp={"urls": services.amqp_urls(), "shards": shards,  # amqp.node picks the first
              "exchange": f"{tag}.sensors", "queue_prefix": f"{tag}.sensors.",
              "occupancy_exchange": f"{tag}.occupancy", "node": node - 1, "nodes": nodes,
              "takeover_delay": "5s", "prefetch": 400},
        occupancy={"memcached": services.memcached(), "peers": services.amqp_urls(node),
                   "peer_exchange": f"{tag}.occupancy", "memcached_prefix": f"{tag}:occ:",
                   **occupancy})
    config["error_log_level"] = "info"
    config["http"]["servers"][0]["locations"][:0] = [dict(loc) for loc in LOCATIONS]
    return config


def node_port(services: Services, node: int) -> int:
    return services.base + 60 + node


def bizzyd_nodes(tmp: Path, services: Services, dsn: str, tag: str, nodes: int = 3,
                 **occupancy: object) -> contextlib.AbstractContextManager[list[Bizzyd]]:
    """`nodes` running bizzyd masters ingesting over AMQP."""
    configs = [node_config(services, n, nodes, dsn, tag, **occupancy)
               for n in range(1, nodes + 1)]
    return running_nodes(tmp, services, configs, ("amqp ingest: connected to",
                                                  "receiving other nodes' occupancy updates"))


@contextlib.contextmanager
def running_nodes(tmp: Path, services: Services, configs: list[dict[str, Any]],
                  logs: tuple[str, ...]) -> Iterator[list[Bizzyd]]:
    """Masters, node n with configs[n - 1], ready when /health answers and each has
    logged `logs`; stopped (and killed if need be) after."""
    masters = []
    try:
        for n, config in enumerate(configs, 1):
            b = Bizzyd(tmp / f"node{n}", node_port(services, n))
            b.write_config(config)
            masters.append(b)
            b.start(wait=False)  # together: each takes its preferred shards first
        for b in masters:
            wait_for(b.ready, timeout=30, what="bizzyd to answer /health")
            for line in logs:
                b.wait_log(line, timeout=20)
        yield masters
    finally:
        for b in masters:
            with contextlib.suppress(Exception):
                b.stop()
            b.kill_everything()


def kill_node(b: Bizzyd) -> list[int]:
    """kill -9 of a whole node: its children first, then the master."""
    everyone = [p for p, _ in children_of(b.pid)] + [b.pid]
    b.seen_pids.update(everyone)
    for pid in everyone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert b.proc is not None
    b.proc.wait(5)
    return everyone


def sim(dsn: str, ports: list[int], tag: str, truth: Path, *extra: str,
        background: bool = False) -> subprocess.Popen | dict:
    """The simulator publishing over MQTT 3.1.1 to the given broker nodes."""
    from modules.mqtt_ingest.testing import sim_command

    command = sim_command(dsn, ",".join(map(str, ports)), tag, str(truth), "--protocol",
                          "3.1.1", "--client-id", f"{tag}-sim", *extra)  # type: ignore[arg-type]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if background:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(truth.read_text())


def served_mismatches(port: int, truth: dict) -> list[str]:
    """Where a node's HTTP API differs from the ground truth (any source)."""
    from bizzyd_proc import http_get

    ids = ",".join(truth["hives"])
    status, body = http_get(port, f"/v1/occupancy?ids={ids}")
    if status != 200:
        return [f"status {status}: {body[:200]!r}"]
    served = {item["hive_id"]: item for item in json.loads(body)["hives"]}
    out = []
    for hive, want in truth["hives"].items():
        item = served.get(int(hive), {})
        got = (item.get("occupancy"), item.get("total_in"), item.get("total_out"))
        exp = (want["expected_occupancy"], want["expected_total_in"],
               want["expected_total_out"])
        if got != exp:
            out.append(f"hive {hive}: served {got}, truth {exp}")
    return out


def wait_served(port: int, truth: dict, timeout: float = 20.0) -> None:
    last: list[str] = []

    def ok() -> bool:
        last[:] = served_mismatches(port, truth)
        return not last

    try:
        wait_for(ok, timeout=timeout, step=0.25, what=f"node :{port} to serve the truth")
    except AssertionError:
        raise AssertionError(f"node :{port}:\n" + "\n".join(last[:20])) from None


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def haproxy(tmp: Path, services: Services, nodes: int = 3) -> Iterator[int]:
    """HAProxy on conf/haproxy.cfg in front of the nodes; yields its port."""
    port = services.base + 50
    env = {**os.environ, "BIZZYD_LB_BIND": f"127.0.0.1:{port}",
           "BIZZYD_LB_STATS": f"127.0.0.1:{services.base + 51}", "BIZZYD_LB_RUN": str(tmp),
           **{f"BIZZYD_NODE{n}": f"127.0.0.1:{node_port(services, n)}" for n in (1, 2, 3)}}
    log = open(tmp / "haproxy.log", "ab")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(["haproxy", "-f", str(ROOT / "conf" / "haproxy.cfg"), "-db"],
                            env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: len(servers_up(services)) >= nodes, timeout=20, step=0.2,
                 what="HAProxy to see the nodes up")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def servers_up(services: Services) -> list[str]:
    """The backend servers HAProxy has UP (its stats page as CSV)."""
    from bizzyd_proc import http_get

    try:
        status, body = http_get(services.base + 51, "/;csv", timeout=1)
    except OSError:
        return []
    if status != 200:
        return []
    rows = [line.split(",") for line in body.decode().splitlines()[1:]]
    return [r[1] for r in rows if len(r) > 17 and r[0] == "bizzyd" and r[1].startswith("n")
            and r[17].startswith("UP")]


class Load:
    """Clients sending GETs through HAProxy in threads; statuses and errors counted."""

    def __init__(self, port: int, path: str, clients: int = 4) -> None:
        import threading

        self.port, self.path = port, path
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.retried = 0  # GETs retried once after a kept-alive connection closed
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)

    def _run(self) -> None:
        import http.client

        conn, used = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5), 0
        while not self.stopping.is_set():
            try:
                status, close = self._get(conn)
                used += 1
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection closed before any answer: like browsers and
                # HTTP libraries (RFC 9112 9.3.1), retry the GET once on a new one.
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                if not used:
                    self._error("closed without an answer on a new connection")
                    continue
                with self.lock:
                    self.retried += 1
                used = 0
                try:
                    status, close = self._get(conn)
                    used += 1
                except (OSError, http.client.HTTPException) as exc:
                    self._error(f"{type(exc).__name__}: {exc} (after a retry)")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    continue
            except (OSError, http.client.HTTPException) as exc:
                self._error(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn, used = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5), 0
                continue
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if close:
                conn.close()
                used = 0
        conn.close()

    def _get(self, conn: object) -> tuple[int, bool]:
        conn.request("GET", self.path)  # type: ignore[attr-defined]
        response = conn.getresponse()  # type: ignore[attr-defined]
        response.read()
        return response.status, response.getheader("connection", "").lower() == "close"

    def _error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)
