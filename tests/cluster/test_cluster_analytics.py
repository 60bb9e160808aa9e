"""Corrections and capacity schedules in a cluster: what a manager changes through one
node's API reaches every node's occupancy zone at once (the cache manager relays it on
the fanout exchange), not at the next commit or reconciliation."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bizzyd_proc import Bizzyd, wait_for
from cluster_support import Services, node_config, node_port, running_nodes
from modules.analytics.testing import add_analytics
from modules.auth.testing import emulator_token
from modules.business.testing import business_config

pytestmark = [pytest.mark.services, pytest.mark.cluster]

WRITE_LIMIT = {"rate": "1000r/s", "burst": 5000, "address_rate": "1000r/s",
               "address_burst": 5000}
HIVE = {"name": "Cluster Bar", "type": "bar", "capacity": 100, "timezone": "Europe/Berlin",
        "status": "active", "description": "a test bar",
        "address": {"street": "Hauptstr. 1", "city": "Berlin", "country": "DE",
                    "zip": "10115", "latitude": 52.53, "longitude": 13.38}}


def analytics_node(tmp: Path, services: Services, node: int, dsn: str, tag: str,
                   emulator: str) -> dict[str, Any]:
    """A business + analytics node ingesting over AMQP, with a reconciliation too rare
    to hide a missed correction (each node its own memcached prefix: no node can serve
    another's entries)."""
    firebase = {"project_id": "demo-bizzy", "emulator": emulator, "features_ttl": "0s"}
    images = tmp / f"images{node}"
    images.mkdir()
    port = node_port(services, node)
    config = add_analytics(business_config(port, dsn, services.memcached(), firebase,
                                           WRITE_LIMIT, str(images), workers=1), WRITE_LIMIT)
    cluster = node_config(services, node, 2, dsn, tag)
    config["mqtt"], config["amqp"] = cluster["mqtt"], cluster["amqp"]
    config["occupancy"].update(memcached=services.memcached(), peers=services.amqp_urls(node),
                               peer_exchange=f"{tag}.occupancy", reconcile_interval="10m")
    return config


@contextlib.contextmanager
def two_nodes(tmp: Path, services: Services, dsn: str, tag: str) -> Iterator[list[Bizzyd]]:
    emulator = os.environ.get("BIZZYD_FIREBASE_EMULATOR")
    if not emulator:
        pytest.fail("BIZZYD_FIREBASE_EMULATOR is not set: scripts/services start and "
                    'eval "$(scripts/services env)"')
    configs = [analytics_node(tmp, services, n, dsn, tag, emulator) for n in (1, 2)]
    with running_nodes(tmp, services, configs,
                       ("receiving other nodes' occupancy updates",)) as masters:
        yield masters


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def live(port: int, hive: int) -> dict[str, Any]:
    return expect(httpx.get(f"http://127.0.0.1:{port}/v1/hives/{hive}/occupancy"), 200)


def in_zone(port: int, hive: int, **want: int) -> dict[str, Any] | None:
    """The node's live occupancy of the hive if its zone serves `want`."""
    body = live(port, hive)
    ok = body["source"] == "zone" and all(body[k] == v for k, v in want.items())
    return body if ok else None


def test_a_correction_and_a_schedule_on_one_node_reach_the_other_nodes_zone(
        tmp_path, services, dsn, tag):
    with two_nodes(tmp_path, services, dsn, tag) as (a, b):
        api = httpx.Client(base_url=f"http://127.0.0.1:{a.port}", timeout=10)
        token = emulator_token(os.environ["BIZZYD_FIREBASE_EMULATOR"],
                               f"c{secrets.token_hex(6)}@example.com")
        m = {"Authorization": f"Bearer {token}"}
        expect(api.get("/v1/me", headers=m), 200)
        account = expect(api.post("/v1/accounts", json={"name": "Cluster GmbH"}, headers=m),
                         201)["id"]
        hive = expect(api.post(f"/v1/accounts/{account}/hives", json=HIVE, headers=m),
                      201)["id"]
        # a new hive: neither zone has it; the correction brings it into both
        expect(api.post(f"/v1/hives/{hive}/corrections", headers=m,
                        json={"occupancy": 12, "reason": "opening count"}), 201)
        for node in (a, b):
            wait_for(lambda p=node.port: in_zone(p, hive, occupancy=12), timeout=5,
                     what=f"node :{node.port} to serve the correction from its zone")
        # a hive both zones have: a correction on A is B's live count within a moment
        expect(api.post(f"/v1/hives/{hive}/corrections", headers=m,
                        json={"occupancy": 30, "reason": "recount"}), 201)
        wait_for(lambda: in_zone(b.port, hive, occupancy=30), timeout=3,
                 what="node B to serve the correction made on node A")
        # a capacity schedule put on A: B's live capacity follows it, and goes back
        now = dt.datetime.now(dt.UTC)
        night = {"from": (now - dt.timedelta(hours=1)).isoformat(),
                 "to": (now + dt.timedelta(hours=1)).isoformat(), "capacity": 400}
        url = f"/v1/hives/{hive}/capacity-schedule"
        expect(api.put(url, json={"entries": [night]}, headers=m), 200)
        wait_for(lambda: in_zone(b.port, hive, capacity=400, occupancy=30), timeout=3,
                 what="node B's live capacity to follow the schedule put on node A")
        expect(api.put(url, json={"entries": []}, headers=m), 200)
        wait_for(lambda: in_zone(b.port, hive, capacity=100), timeout=3,
                 what="node B's live capacity back to the hive's")
        assert "peer updates: not connected" not in a.log()
        api.close()
