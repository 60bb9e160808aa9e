"""Several bizzyd nodes on a RabbitMQ cluster: ingest over AMQP, occupancy on every
node, and faults (a node killed, a broker node killed, a memcached server stopped)."""

from __future__ import annotations

import time

import pytest

from cluster_support import RABBIT_NODES, bizzyd_nodes, sim, wait_served
from modules.mqtt_ingest.testing import settle

pytestmark = [pytest.mark.services, pytest.mark.cluster]

TRAFFIC = ("--create-fleet", "12:2", "--duration", "6", "--speed", "900", "--rate", "300",
           "--hours", "flat", "--restarts", "4", "--loss", "0.02", "--dup", "0.02",
           "--reorder", "0.02", "--v2-share", "0.4")


def test_three_nodes_share_the_shards_and_each_serves_the_truth(tmp_path, services, dsn, tag):
    with bizzyd_nodes(tmp_path, services, dsn, tag) as nodes:
        truth = sim(dsn, [services.mqtt_port(n) for n in range(1, RABBIT_NODES + 1)], tag,
                    tmp_path / "truth.json", *TRAFFIC)
        settle(dsn, truth, timeout=60)
        for b in nodes:
            wait_served(b.port, truth)
        # every node was active on its preferred shards (2 of 6 each)
        for b in nodes:
            assert "consuming 2 shard(s) first" in b.log()
        assert truth["messages"]["duplicated"] > 0
        time.sleep(0)
