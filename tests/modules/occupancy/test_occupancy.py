"""The occupancy endpoints and the cache processes, on a real master with real
Postgres, memcached and bus."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from occ_support import (
    MEMCACHED,
    Pusher,
    create_hives,
    get_json,
    occupancy_config,
    request,
    role_pids,
    set_occupancy,
    shm_segments,
    sql,
)
from pymemcache.client.base import Client

from bizzyd.bus import HIVE_REFRESH, Bus
from bizzyd_proc import running, wait_for
from modules.occupancy.replica import parse_address

pytestmark = pytest.mark.services
FRESHNESS = ("as_of", "sensors_reporting", "sensors_total", "stale")


def memcached_value(hive_id: int) -> dict | None:
    client = Client(parse_address(MEMCACHED), connect_timeout=1, timeout=1)
    try:
        data = client.get(f"bizzyd:occ:{hive_id}")
    finally:
        client.close()
    return json.loads(data) if data else None


def test_endpoints_serve_the_zone(tmp_path, port, database_dsn):
    ids = create_hives(database_dsn, 30)
    bare = create_hives(database_dsn, 1, capacity=7, occupancy=False)[0]
    with running(tmp_path, occupancy_config(port, database_dsn), port) as b:
        b.wait_log("cache loader: loaded")
        assert role_pids(b.pid, "cache loader") == []  # one-shot: exited 0, not respawned
        assert "cache loader process" in b.log() and "exited (code 0)" in b.log()
        status, headers, body = request(port, f"/v1/hives/{ids[3]}/occupancy")
        assert status == 200 and headers["content-type"] == "application/json"
        data = json.loads(body)
        occ = ids[3] % 50
        fresh = {k: data[k] for k in FRESHNESS}  # tests/modules/kpis/test_health.py
        assert data == {"hive_id": ids[3], "occupancy": occ, "capacity": 100,
                        "total_in": 1000 + occ, "total_out": 1000,
                        "updated_at": data["updated_at"], "source": "zone", **fresh}
        assert data["updated_at"].endswith("Z") and "T" in data["updated_at"]
        # a hive without any occupancy row yet
        bare_data = get_json(port, f"/v1/hives/{bare}/occupancy")[1]
        assert bare_data == {
            "hive_id": bare, "occupancy": 0, "capacity": 7, "total_in": 0, "total_out": 0,
            "updated_at": None, "source": "zone", **{k: bare_data[k] for k in FRESHNESS}}
        # unknown hives: 404 (after asking Postgres), also for absurd ids
        for path in ("/v1/hives/99999999/occupancy", "/v1/hives/0/occupancy",
                     "/v1/hives/123456789012345678901234/occupancy"):
            status, _, body = request(port, path)
            assert status == 404 and json.loads(body)["reason"] == "no such hive"
        # HEAD: the head only
        # many
        status, many = get_json(port, f"/v1/occupancy?ids={ids[0]},{ids[1]},424242,{ids[0]}")
        assert status == 200
        assert [h["hive_id"] for h in many["hives"]] == [ids[0], ids[1]]
        assert many["unknown"] == [424242]
        assert all(h["source"] == "zone" for h in many["hives"])
        too_many = ",".join(str(i) for i in range(1, 102))
        status, error = get_json(port, f"/v1/occupancy?ids={too_many}")
        assert status == 400 and error["reason"] == "at most 100 ids per request, got 101"
        assert get_json(port, "/v1/occupancy?ids=" + ",".join(str(i) for i in ids[:30]))[0] \
            == 200
        for query in ("", "?ids=", "?ids=1,x", "?ids=-3"):
            assert get_json(port, "/v1/occupancy" + query)[0] == 400
        # the replica in memcached
        wait_for(lambda: memcached_value(ids[3]), what="the memcached replica")
        value = memcached_value(ids[3])
        assert value["occupancy"] == occ and value["capacity"] == 100
        assert sorted(role_pids(b.pid, "cache manager")) != []
        master = b.pid
    assert shm_segments([master]) == []


def test_updates_reconcile_and_new_hives(tmp_path, port, database_dsn):
    ids = create_hives(database_dsn, 5)
    config = occupancy_config(port, database_dsn, reconcile_interval="1s")
    with running(tmp_path, config, port) as b:
        b.wait_log("cache manager: writing the occupancy zone")
        pusher = Pusher(tmp_path / "run")
        try:
            hive = ids[0]
            at = pusher.push(hive, 12, 5012, 5000)
            wait_for(lambda: get_json(port, f"/v1/hives/{hive}/occupancy")[1]["occupancy"]
                     == 12, what="the update in the zone")
            # an older update is ignored (absolute values, newest wins)
            pusher.push(hive, 99, 99, 0, at=at - 10)
            pusher.push(ids[1], 3, 3, 0)  # a marker behind it
            wait_for(lambda: get_json(port, f"/v1/hives/{ids[1]}/occupancy")[1]["occupancy"]
                     == 3, what="the marker")
            assert get_json(port, f"/v1/hives/{hive}/occupancy")[1]["occupancy"] == 12
            wait_for(lambda: (memcached_value(hive) or {}).get("occupancy") == 12,
                     what="memcached follows")
            # drift: Postgres changed behind the bus's back; the reconcile corrects it
            set_occupancy(database_dsn, ids[2], 40, 1040, 1000)
            wait_for(lambda: get_json(port, f"/v1/hives/{ids[2]}/occupancy")[1]["occupancy"]
                     == 40, timeout=5, what="reconciled")
            assert "corrected drift in 1 (behind 1)" in b.log() \
                or "corrected drift in" in b.log()
            sql(database_dsn, "UPDATE hive SET capacity = 55 WHERE id = $1", ids[3])
            wait_for(lambda: get_json(port, f"/v1/hives/{ids[3]}/occupancy")[1]["capacity"]
                     == 55, timeout=5, what="capacity reconciled")
            # a hive created after the load: its first update inserts it
            new = create_hives(database_dsn, 1, capacity=33, occupancy=False)[0]
            pusher.push(new, 2, 2, 0)
            wait_for(lambda: get_json(port, f"/v1/hives/{new}/occupancy")[1].get("source")
                     == "zone", what="the new hive in the zone")
            data = get_json(port, f"/v1/hives/{new}/occupancy")[1]
            assert (data["occupancy"], data["capacity"]) == (2, 33)
            # a deleted hive leaves the zone's answers
            gone = create_hives(database_dsn, 1)[0]
            wait_for(lambda: get_json(port, f"/v1/hives/{gone}/occupancy")[1].get("source")
                     == "zone", timeout=5, what="reconcile adds a new hive")
            sql(database_dsn, "DELETE FROM hive WHERE id = $1", gone)
            wait_for(lambda: get_json(port, f"/v1/hives/{gone}/occupancy")[0] == 404,
                     timeout=5, what="deleted hive 404")
        finally:
            pusher.close()


def schedule(dsn: str, hive_id: int, capacity: int, start: str, end: str) -> None:
    """A capacity schedule range [now + start, now + end) (SQL intervals)."""
    sql(dsn, """INSERT INTO hive_capacity_schedule (hive_id, during, capacity)
                VALUES ($1, tstzrange(now() + $2::text::interval,
                                      now() + $3::text::interval), $4)""",
        hive_id, start, end, capacity)


def test_the_capacity_in_force_is_loaded_refreshed_and_served_from_postgres(
        tmp_path, port, database_dsn):
    ids = create_hives(database_dsn, 3)
    schedule(database_dsn, ids[0], 180, "-1 hour", "1 hour")  # in force
    schedule(database_dsn, ids[1], 90, "-2 hours", "-1 hour")  # over
    with running(tmp_path, occupancy_config(port, database_dsn), port) as b:
        b.wait_log("cache loader: loaded")
        served = get_json(port, f"/v1/occupancy?ids={ids[0]},{ids[1]},{ids[2]}")[1]["hives"]
        assert [(h["capacity"], h["source"]) for h in served] == [
            (180, "zone"), (100, "zone"), (100, "zone")]
        wait_for(lambda: (memcached_value(ids[0]) or {}).get("capacity") == 180,
                 what="the replica's capacity in force")
        # a hive the zone does not have yet: Postgres answers with the capacity in force
        late = create_hives(database_dsn, 1)[0]
        schedule(database_dsn, late, 250, "-1 minute", "1 hour")
        data = get_json(port, f"/v1/hives/{late}/occupancy")[1]
        assert (data["source"], data["capacity"]) == ("database", 250)
        # a schedule changed behind the manager's back: HIVE_REFRESH makes it re-read
        schedule(database_dsn, ids[2], 60, "-1 minute", "1 hour")
        bus = Bus(tmp_path / "run")
        try:
            bus.pusher("occupancy.updates", linger_ms=500).send(HIVE_REFRESH.encode(ids[2]))
            wait_for(lambda: get_json(port, f"/v1/hives/{ids[2]}/occupancy")[1]["capacity"]
                     == 60, timeout=2, what="the refreshed capacity")
        finally:
            bus.close()
        assert get_json(port, f"/v1/hives/{ids[2]}/occupancy")[1]["source"] == "zone"
        b.wait_log("capacity in force changed for 1 hive(s)")


def test_kill_9_cache_manager(tmp_path, port, database_dsn):
    ids = create_hives(database_dsn, 10)
    with running(tmp_path, occupancy_config(port, database_dsn), port) as b:
        b.wait_log("cache manager: writing the occupancy zone")
        pusher = Pusher(tmp_path / "run")
        try:
            pusher.push(ids[0], 21, 1021, 1000)
            wait_for(lambda: get_json(port, f"/v1/hives/{ids[0]}/occupancy")[1]["occupancy"]
                     == 21, what="update before the kill")
            before = {i: get_json(port, f"/v1/hives/{i}/occupancy")[1] for i in ids}
            [manager] = role_pids(b.pid, "cache manager")
            b.seen_pids.add(manager)
            os.kill(manager, signal.SIGKILL)
            wait_for(lambda: role_pids(b.pid, "cache manager")
                     and role_pids(b.pid, "cache manager") != [manager],
                     what="the cache manager respawned")
            b.seen_pids.update(role_pids(b.pid, "cache manager"))
            # the zone survived (shared memory): same answers, still from the zone
            assert {i: get_json(port, f"/v1/hives/{i}/occupancy")[1] for i in ids} == before
            assert f"cache manager process {manager} exited (signal SIGKILL)" in b.log()
            # updates flow again (the pusher reconnects to the new manager by itself)
            pusher.push(ids[0], 22, 1022, 1000)
            wait_for(lambda: get_json(port, f"/v1/hives/{ids[0]}/occupancy")[1]["occupancy"]
                     == 22, what="updates flow after the respawn")
            assert role_pids(b.pid, "cache loader") == []  # the loader is not run again
        finally:
            pusher.close()


def test_full_zone_falls_back(tmp_path, port, fresh_database):
    ids = create_hives(fresh_database, 12)
    config = occupancy_config(port, fresh_database, zone_capacity=8, reconcile_interval="1s")
    with running(tmp_path, config, port) as b:
        b.wait_log("cache manager: writing the occupancy zone")
        sources = {}
        for i in ids:
            status, data = get_json(port, f"/v1/hives/{i}/occupancy")
            assert status == 200 and data["occupancy"] == i % 50
            sources[i] = data["source"]
        assert list(sources.values()).count("zone") == 7  # 90% of 8 slots
        assert set(sources.values()) <= {"zone", "memcached", "database"}
        # the overflowing hives get updates too (through memcached)
        outside = [i for i, s in sources.items() if s != "zone"]
        pusher = Pusher(tmp_path / "run")
        try:
            pusher.push(outside[0], 44, 1044, 1000)
            wait_for(lambda: get_json(port, f"/v1/hives/{outside[0]}/occupancy")[1]
                     == {**get_json(port, f"/v1/hives/{outside[0]}/occupancy")[1],
                         "occupancy": 44, "source": "memcached"},
                     what="an overflow hive's update via memcached")
        finally:
            pusher.close()
        time.sleep(2.5)  # two more reconciles: still logged once
        assert b.log().count("occupancy zone full") == 1
