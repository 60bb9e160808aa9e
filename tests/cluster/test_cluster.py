"""Several bizzyd nodes on a RabbitMQ cluster: ingest over AMQP, occupancy on every
node, and faults (a node killed, a broker node killed, a memcached server stopped)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime

import pytest
from occ_support import SSEClient

from bizzyd_proc import ROOT, http_get, wait_for
from cluster_support import (
    RABBIT_NODES,
    Load,
    bizzyd_nodes,
    haproxy,
    kill_node,
    served_mismatches,
    servers_up,
    sim,
    wait_served,
)
from modules.mqtt_ingest.testing import fetch, settle, temporary_database_sync

pytestmark = [pytest.mark.services, pytest.mark.cluster]

def traffic(seconds: float = 6) -> tuple[str, ...]:
    return ("--create-fleet", "12:2", "--duration", str(seconds), "--speed", "900", "--rate",
            "300", "--hours", "flat", "--restarts", "4", "--loss", "0.02", "--dup", "0.02",
            "--reorder", "0.02", "--v2-share", "0.4")


def test_three_nodes_share_the_shards_and_each_serves_the_truth(tmp_path, services, dsn, tag):
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes:
        # sensor ids with dots ("dotted.fleet-3-1"): the MQTT plugin keeps the dots in
        # the routing key, and ingest must still find the sensor
        truth = sim(dsn, [services.mqtt_port(n) for n in range(1, RABBIT_NODES + 1)], tag,
                    tmp_path / "truth.json", *traffic(), "--fleet-prefix", "dotted.fleet")
        settle(dsn, truth, timeout=60)
        for b in nodes:
            wait_served(b.port, truth)
        # every node was the active consumer of its preferred shards (i % 3 == node)
        for k, b in enumerate(nodes):
            assert "consuming 2 shard(s) first" in b.log()
            assert set(shards_delivering(b)) == {k, k + 3}, b.log()
        assert truth["messages"]["duplicated"] > 0
        rejects = asyncio.run(fetch(dsn, "SELECT reason, count(*) AS n FROM ingest_reject "
                                         "GROUP BY reason"))
        assert rejects == [], rejects


def test_kill_9_of_a_node_moves_its_shards_and_the_survivors_serve_the_truth(
        tmp_path, services, dsn, tag):
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes, \
            haproxy(tmp_path, services) as lb:
        truth_file = tmp_path / "truth.json"
        run = sim(dsn, [services.mqtt_port(n) for n in range(1, RABBIT_NODES + 1)], tag,
                  truth_file, *traffic(10), background=True)
        with Load(lb, "/health", clients=4) as load:
            wait_for(lambda: shards_delivering(nodes[1]), timeout=30, step=0.2,
                     what="traffic on node 2's shards")
            time.sleep(1.5)  # the simulator's traffic reaches every shard
            before = load.total()
            held = shards_delivering(nodes[1])
            killed = time.time()
            kill_node(nodes[1])

            def moved() -> dict[int, float]:
                since = [shards_delivering(b, after=killed) for b in (nodes[0], nodes[2])]
                taken = {k: v for d in since for k, v in d.items() if k in held}
                return taken if len(taken) == len(held) else {}

            taken = wait_for(moved, timeout=15, step=0.2, what="node 2's shards to deliver "
                             "to the survivors")
            took = max(taken.values()) + 1 - killed  # + 1: log stamps are whole seconds
            assert run.wait(120) == 0, run.stderr.read() if run.stderr else ""
            time.sleep(1.0)
        print(f"\nnode 2 held shards {sorted(held)}; they delivered to a survivor less than "
              f"{took:.1f}s after the kill; through HAProxy: "
              f"{load.total()} requests ({before} before the kill), statuses "
              f"{load.statuses}, {len(load.errors)} errors {load.errors[:3]}, "
              f"{load.retried} GET(s) retried on a new connection")
        assert took <= 10
        # only requests in flight on the dead node may fail (one per client at most)
        assert len(load.errors) + load.server_errors() <= 4
        truth = json.loads(truth_file.read_text())
        settle(dsn, truth, timeout=60)
        for b in (nodes[0], nodes[2]):
            wait_served(b.port, truth)


def test_kill_9_of_a_rabbitmq_node_loses_no_acknowledged_message(tmp_path, services, dsn, tag):
    """The simulator publishes to nodes 1 and 2; node 3 (where bizzyd node 3 and its
    cache manager are connected, and which holds a replica of every quorum queue) dies.
    """
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes:
        truth_file = tmp_path / "truth.json"
        run = sim(dsn, [services.mqtt_port(1), services.mqtt_port(2)], tag, truth_file,
                  *traffic(10), background=True)
        try:
            time.sleep(3.0)
            os.kill(services.rabbit_pid(3), signal.SIGKILL)
            assert run.wait(120) == 0, run.stderr.read() if run.stderr else ""
            truth = json.loads(truth_file.read_text())
            settle(dsn, truth, timeout=60)
            for b in nodes:
                wait_served(b.port, truth)
            nodes[2].wait_log("amqp ingest: connection to amqp://guest@127.0.0.1:"
                              f"{services.amqp_port(3)}/?heartbeat=5 lost")
            assert nodes[2].log().count("amqp ingest: connected to") >= 2
        finally:
            if run.poll() is None:
                run.kill()
            services.start()  # node 3 again (it rejoins: the cluster remembers it)


def test_a_stopped_memcached_server_costs_no_errors(tmp_path, services, dsn, tag):
    """A zone too small for the city: most hives are served from the memcached pool or
    Postgres. One pool server stops: every answer stays 200 and exact."""
    with bizzyd_nodes(tmp_path, services, dsn, tag, zone_capacity=8) as nodes:
        truth = sim(dsn, [services.mqtt_port(1)], tag, tmp_path / "truth.json", *traffic(4))
        settle(dsn, truth, timeout=60)
        for b in nodes:
            wait_served(b.port, truth)
        ids = ",".join(truth["hives"])
        wait_for(lambda: "memcached" in sources(nodes[0].port, ids), timeout=10,
                 what="hives served from the memcached pool")
        pid_file = services.memcached_pid_file(1)
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        try:
            with Load(nodes[0].port, f"/v1/occupancy?ids={ids}", clients=2) as load:
                for b in nodes:
                    for _ in range(20):
                        assert served_mismatches(b.port, truth) == []
            print(f"\nwith memcached-1 stopped: {load.statuses}, errors {load.errors[:3]}")
            assert load.errors == [] and set(load.statuses) == {200}
            assert load.total() > 20
        finally:
            services.start()


SHARD_LINE = re.compile(r"^(\S+ \S+) \[info\] \d+: amqp ingest: shard (\d+) delivering to",
                        re.M)


def shards_delivering(b, after: float = 0.0) -> dict[int, float]:
    """Shard → when it first delivered to this node (log time, whole seconds), counting
    only first deliveries from the second of `after` on."""
    out: dict[int, float] = {}
    for stamp, shard in SHARD_LINE.findall(b.log()):
        at = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S").timestamp()
        if at >= int(after):
            out.setdefault(int(shard), at)
    return out


def sources(port: int, ids: str) -> set[str]:
    status, body = http_get(port, f"/v1/occupancy?ids={ids}")
    assert status == 200
    return {item["source"] for item in json.loads(body)["hives"]}


def test_postgres_restart_answers_503_meanwhile_and_loses_nothing(tmp_path, services, tag):
    """A Postgres of the test's own (stopping the shared one would disturb others)."""
    pg = {**services.env, "BIZZYD_STATE_DIR": str(tmp_path / "pg"),
          "BIZZYD_PG_PORT": str(services.base + 45), "BIZZYD_PG_FAST": "1"}

    def postgres(action: str) -> None:
        done = subprocess.run([str(ROOT / "scripts" / "services"), action, "postgres"],
                              env=pg, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    postgres("start")
    server = f"postgresql://postgres@127.0.0.1:{services.base + 45}/postgres"
    try:
        with temporary_database_sync(server) as dsn, \
                bizzyd_nodes(tmp_path, services, dsn, tag, nodes=2) as nodes:
            truth_file = tmp_path / "truth.json"
            run = sim(dsn, [services.mqtt_port(1), services.mqtt_port(2)], tag, truth_file,
                      *traffic(10), background=True)
            try:
                time.sleep(3.0)
                postgres("stop")
                status, headers, _ = request(nodes[0].port, "/v1/sensors/nosuch/config")
                assert status == 503 and int(headers["retry-after"]) >= 1
                status, headers, _ = request(nodes[1].port, "/v1/sensors/nosuch/config")
                assert status == 503 and "retry-after" in headers
                time.sleep(2.0)
                postgres("start")
                wait_for(lambda: request(nodes[0].port, "/v1/sensors/nosuch/config")[0] == 404,
                         timeout=15, step=0.2, what="Postgres to be used again")
                assert run.wait(120) == 0, run.stderr.read() if run.stderr else ""
            finally:
                if run.poll() is None:
                    run.kill()
            truth = json.loads(truth_file.read_text())
            settle(dsn, truth, timeout=60)
            for b in nodes:
                wait_served(b.port, truth)
    finally:
        postgres("stop")


def request(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        conn.close()


def test_reload_and_graceful_stop_of_nodes_cost_no_errors_and_streams_move(
        tmp_path, services, dsn, tag):
    """Through HAProxy: a node reloads (HUP), another stops (QUIT) while clients send
    requests and hold occupancy streams; nothing fails, and the streams of the stopped
    node end and reconnect to the others."""
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes, \
            haproxy(tmp_path, services) as lb:
        truth = sim(dsn, [services.mqtt_port(1)], tag, tmp_path / "truth.json", *traffic(2))
        hive = next(iter(truth["hives"]))
        path = f"/v1/hives/{hive}/occupancy/stream"
        streams = [SSEClient(lb, path) for _ in range(6)]
        try:
            assert all(s.status == 200 for s in streams)
            node2 = set(nodes[1].workers())
            on_node2 = [s for s in streams if s.pid in node2]
            assert on_node2, "leastconn spread the streams over the nodes"
            with Load(lb, "/health", clients=4) as load:
                time.sleep(1.0)
                nodes[0].send(signal.SIGHUP)
                nodes[0].wait_log("reconfiguring", timeout=10)
                time.sleep(1.0)
                nodes[1].send(signal.SIGQUIT)
                assert nodes[1].proc.wait(30) == 0
                wait_for(lambda: servers_up(services) == ["n1", "n3"], timeout=10,
                         what="HAProxy to take n2 out")
                time.sleep(1.0)
            print(f"\nreload + graceful stop through HAProxy: {load.statuses}, "
                  f"errors {load.errors[:3]}, {load.retried} GET(s) retried on a new "
                  "connection after a kept-alive one closed")
            assert load.errors == [] and set(load.statuses) == {200}
            for s in on_node2:
                assert s.closed.wait(10), "a stream of the stopped node stayed open"
            again = SSEClient(lb, path)
            assert again.status == 200 and again.pid not in node2
            again.close()
        finally:
            for s in streams:
                s.close()

