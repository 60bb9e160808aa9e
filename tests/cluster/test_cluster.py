"""Several bizzyd nodes on a RabbitMQ cluster: ingest over AMQP, occupancy on every
node, and faults (a node killed, a broker node killed, a memcached server stopped)."""

from __future__ import annotations

import json
import time

import pytest

from bizzyd_proc import wait_for
from cluster_support import (
    RABBIT_NODES,
    Load,
    bizzyd_nodes,
    haproxy,
    kill_node,
    sim,
    wait_served,
)
from modules.mqtt_ingest.testing import settle

pytestmark = [pytest.mark.services, pytest.mark.cluster]

def traffic(seconds: float = 6) -> tuple[str, ...]:
    return ("--create-fleet", "12:2", "--duration", str(seconds), "--speed", "900", "--rate",
            "300", "--hours", "flat", "--restarts", "4", "--loss", "0.02", "--dup", "0.02",
            "--reorder", "0.02", "--v2-share", "0.4")


def test_three_nodes_share_the_shards_and_each_serves_the_truth(tmp_path, services, dsn, tag):
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes:
        truth = sim(dsn, [services.mqtt_port(n) for n in range(1, RABBIT_NODES + 1)], tag,
                    tmp_path / "truth.json", *traffic())
        settle(dsn, truth, timeout=60)
        for b in nodes:
            wait_served(b.port, truth)
        # every node was active on its preferred shards (2 of 6 each)
        for b in nodes:
            assert "consuming 2 shard(s) first" in b.log()
        assert truth["messages"]["duplicated"] > 0


def test_kill_9_of_a_node_moves_its_shards_and_the_survivors_serve_the_truth(
        tmp_path, services, dsn, tag):
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes, \
            haproxy(tmp_path, services) as lb:
        truth_file = tmp_path / "truth.json"
        run = sim(dsn, [services.mqtt_port(n) for n in range(1, RABBIT_NODES + 1)], tag,
                  truth_file, *traffic(10), background=True)
        with Load(lb, "/health", clients=4) as load:
            time.sleep(2.0)
            before = load.total()
            kill_node(nodes[1])
            killed = time.monotonic()
            shards = 6

            def moved() -> bool:
                active = services.active_consumers(1, f"{tag}.sensors.")
                return len(active) == shards and all(n == 1 for n in active.values())

            wait_for(moved, timeout=10, step=0.2, what="every shard to have an active "
                     "consumer on a surviving node")
            took = time.monotonic() - killed
            assert run.wait(120) == 0, run.stderr.read() if run.stderr else ""
            time.sleep(1.0)
        print(f"\nshards moved {took:.1f}s after the kill; through HAProxy: "
              f"{load.total()} requests ({before} before the kill), statuses "
              f"{load.statuses}, {len(load.errors)} errors {load.errors[:3]}")
        assert took <= 10
        # only requests in flight on the dead node may fail (one per client at most)
        assert len(load.errors) + load.server_errors() <= 4
        truth = json.loads(truth_file.read_text())
        settle(dsn, truth, timeout=60)
        for b in (nodes[0], nodes[2]):
            wait_served(b.port, truth)
