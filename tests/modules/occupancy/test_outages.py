"""memcached or Postgres goes away under a running bizzyd; the cache loader cannot
load; the master is killed: the occupancy zone keeps serving, and nothing is left in
/dev/shm."""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest
from occ_support import (
    MEMCACHED,
    Pusher,
    create_hives,
    get_json,
    occupancy_config,
    private_service,
    request,
    role_pids,
    shm_segments,
    temporary_database,
)
from pymemcache.client.base import Client

from bizzyd_proc import Bizzyd, running, wait_for
from modules.occupancy.replica import encode, parse_address

pytestmark = pytest.mark.services


def sources(port: int, ids: list[int]) -> dict[int, tuple[int, str | None]]:
    out = {}
    for i in ids:
        status, data = get_json(port, f"/v1/hives/{i}/occupancy")
        out[i] = (status, data.get("source"))
    return out


def test_memcached_down_keeps_serving(tmp_path, port, fresh_database):
    ids = create_hives(fresh_database, 12)
    with private_service(tmp_path, "memcached") as (mc_port, services):
        config = occupancy_config(port, fresh_database, zone_capacity=8,
                                  memcached=f"127.0.0.1:{mc_port}", memcached_retry="1s")
        with running(tmp_path, config, port) as b:
            b.wait_log("cache manager: writing the occupancy zone")
            in_zone = [i for i, (_, s) in sources(port, ids).items() if s == "zone"]
            outside = [i for i in ids if i not in in_zone]
            assert len(in_zone) == 7 and len(outside) == 5
            wait_for(lambda: {s for _, s in sources(port, outside).values()} == {"memcached"},
                     what="overflow hives from memcached")
            services("stop")
            for _ in range(3):
                got = sources(port, ids)
                assert {got[i] for i in in_zone} == {(200, "zone")}
                assert {got[i] for i in outside} == {(200, "database")}
            pusher = Pusher(tmp_path / "run")
            try:  # the manager keeps applying updates without memcached
                pusher.push(in_zone[0], 3, 1003, 1000)
                wait_for(lambda: get_json(port, f"/v1/hives/{in_zone[0]}/occupancy")[1]
                         ["occupancy"] == 3, what="an update while memcached is down")
                b.wait_log(f"cache manager: memcached 127.0.0.1:{mc_port} unavailable")
                time.sleep(2.5)  # a few retries: still one line per outage
                assert b.log().count(f"cache manager: memcached 127.0.0.1:{mc_port} unavailable") \
                    == 1
                services("start")
                b.wait_log(f"cache manager: memcached 127.0.0.1:{mc_port} reachable again")
                wait_for(lambda: {s for _, s in sources(port, outside).values()}
                         == {"memcached"}, timeout=10, what="memcached used again")
            finally:
                pusher.close()


def test_postgres_down_the_zone_keeps_answering(tmp_path, port):
    with private_service(tmp_path, "postgres") as (pg_port, services), \
            temporary_database(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres") as dsn:
        ids = create_hives(dsn, 6)
        config = occupancy_config(port, dsn, reconcile_interval="1s")
        with running(tmp_path, config, port) as b:
            b.wait_log("cache manager: writing the occupancy zone")
            assert {s for s in sources(port, ids).values()} == {(200, "zone")}
            services("stop")
            pusher = Pusher(tmp_path / "run")
            try:
                for _ in range(20):
                    assert {s for s in sources(port, ids).values()} == {(200, "zone")}
                many = get_json(port, "/v1/occupancy?ids=" + ",".join(map(str, ids)))
                assert many[0] == 200 and len(many[1]["hives"]) == 6
                status, headers, _ = request(port, "/v1/hives/987654/occupancy")
                assert status == 503 and "retry-after" in headers  # unknown: must ask
                pusher.push(ids[0], 17, 1017, 1000)
                wait_for(lambda: get_json(port, f"/v1/hives/{ids[0]}/occupancy")[1]
                         ["occupancy"] == 17, what="updates without Postgres")
                b.wait_log("cache manager: cannot reconcile the occupancy zone")
                services("start")
                b.wait_log("cache manager: reconciling again", timeout=20)
                assert get_json(port, "/v1/hives/987654/occupancy")[0] == 404
            finally:
                pusher.close()


def test_loader_cannot_load_then_the_manager_does(tmp_path, port):
    prefix = f"t{secrets.token_hex(4)}:"
    with private_service(tmp_path, "postgres") as (pg_port, services), \
            temporary_database(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres") as dsn:
        ids = create_hives(dsn, 4)
        client = Client(parse_address(MEMCACHED), connect_timeout=1, timeout=1)
        client.set(f"{prefix}{ids[0]}", encode(ids[0], 9, 100, 1009, 1000, time.time(), 2),
                   expire=60)
        client.close()
        services("stop")
        config = occupancy_config(port, dsn, load_timeout="2s", memcached_prefix=prefix)
        with running(tmp_path, config, port) as b:
            # not loaded: memcached answers what it has, the rest needs Postgres
            assert get_json(port, f"/v1/hives/{ids[0]}/occupancy")[1]["source"] == "memcached"
            assert request(port, f"/v1/hives/{ids[1]}/occupancy")[0] == 503
            b.wait_log("cache loader: cannot load the occupancy zone")
            b.wait_log("cache manager: the cache loader did not load the zone within 2s")
            services("start")
            b.wait_log("cache manager: loaded 4 hives into the occupancy zone", timeout=20)
            assert {s for s in sources(port, ids).values()} == {(200, "zone")}


def test_no_segments_left_even_after_kill_9_of_the_master(tmp_path, port, database_dsn):
    create_hives(database_dsn, 3)
    config = occupancy_config(port, database_dsn)
    b = Bizzyd(tmp_path, port)
    b.write_config(config)
    masters = []
    try:
        b.start()
        b.wait_log("cache manager: writing the occupancy zone")
        masters.append(b.pid)
        segments = shm_segments([b.pid])
        assert any(".occupancy." in s for s in segments)
        assert any(".occupancy.meta." in s for s in segments)
        children = [pid for pid in b.workers() + role_pids(b.pid, "cache manager")]
        b.seen_pids.update(children)
        os.kill(b.pid, signal.SIGKILL)
        b.proc.wait()
        for pid in children:  # an operator cleans up the orphans
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not b.leftovers() or all("pid file" in p for p in b.leftovers()),
                 what="the orphans to die")
        # a dead master cannot clean up (unless another bizzyd on this machine started
        # meanwhile: any master removes the segments of dead masters at start)
        left = shm_segments(masters)
        assert set(left) <= set(segments)
        b.start()
        masters.append(b.pid)
        assert shm_segments(masters[:1]) == []  # removed by the new master at start
        if left:
            b.wait_log("stale shared memory segment")
        b.wait_log("cache loader: loaded", count=2)
        assert b.stop() == 0
        assert shm_segments(masters) == []
    finally:
        b.kill_everything()
