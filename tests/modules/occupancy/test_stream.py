"""Server-Sent Events: live changes from the bus, on every worker, across reloads."""

from __future__ import annotations

import contextlib
import signal
import statistics
import time

import pytest
from occ_support import Pusher, SSEClient, create_hives, occupancy_config, request

from bizzyd_proc import running, wait_for

pytestmark = pytest.mark.services
LATENCY_BOUND = 0.100


def streams_on_two_workers(port: int, path: str, attempts: int = 60) -> list[SSEClient]:
    """Connect until two streams are served by different worker processes."""
    kept: dict[int, SSEClient] = {}
    extra = []
    for _ in range(attempts):
        client = SSEClient(port, path)
        assert client.status == 200 and client.pid
        if client.pid in kept:
            extra.append(client)
        else:
            kept[client.pid] = client
        if len(kept) == 2:
            break
        time.sleep(0.01)
    for client in extra:
        client.close()
    assert len(kept) == 2, "every stream landed on the same worker"
    return list(kept.values())


def test_two_workers_get_each_change_fast(tmp_path, port, database_dsn, capsys):
    hive = create_hives(database_dsn, 3)[1]
    with running(tmp_path, occupancy_config(port, database_dsn, workers=2), port) as b:
        b.wait_log("cache manager: writing the occupancy zone")
        path = f"/v1/hives/{hive}/occupancy/stream"
        status, headers, _ = request(port, f"/v1/hives/{hive}/occupancy")
        clients = streams_on_two_workers(port, path)
        pusher = Pusher(tmp_path / "run")
        latencies = []
        try:
            for client in clients:
                first = client.next_event()  # the current state, at once
                assert first["event"] == "occupancy" and first["json"]["source"] == "zone"
                assert client.headers["content-type"] == "text/event-stream"
                assert f"worker {client.pid}" in client.comments
            time.sleep(0.3)  # subscriptions have reached the publisher
            sequences = []
            for n in range(20):
                sent = pusher.push(hive, n + 1, 2000 + n + 1, 2000)
                for client in clients:
                    ev = client.next_event(timeout=2)
                    assert ev["json"]["occupancy"] == n + 1 and ev["json"]["source"] == "bus"
                    latencies.append(ev["at"] - sent)
                    sequences.append(int(ev["id"]))
                time.sleep(0.02)
            assert sequences == sorted(sequences)
            with capsys.disabled():
                print(f"\nSSE latency push → client, 2 workers × 20 changes: "
                      f"median {statistics.median(latencies) * 1000:.1f} ms, "
                      f"max {max(latencies) * 1000:.1f} ms")
            assert max(latencies) < LATENCY_BOUND
            assert len({c.pid for c in clients}) == 2
        finally:
            pusher.close()
            for client in clients:
                client.close()


def test_last_event_id_and_heartbeats(tmp_path, port, database_dsn):
    hive = create_hives(database_dsn, 1)[0]
    config = occupancy_config(port, database_dsn, workers=1, sse_heartbeat="300ms")
    with running(tmp_path, config, port) as b:
        b.wait_log("cache manager: writing the occupancy zone")
        path = f"/v1/hives/{hive}/occupancy/stream"
        client = SSEClient(port, path)
        current = client.next_event()
        client.close()
        # up to date: nothing is sent at once, then heartbeats
        client = SSEClient(port, path, last_event_id=current["id"])
        wait_for(lambda: client.comments.count("heartbeat") >= 2, timeout=3,
                 what="heartbeats")
        assert client.events == []
        client.close()
        # older (or foreign) id: the current state at once
        for stale in (str(int(current["id"]) - 2), "garbage"):
            client = SSEClient(port, path, last_event_id=stale)
            assert client.next_event(timeout=1)["id"] == current["id"]
            client.close()
        assert request(port, "/v1/hives/999999/occupancy/stream")[0] == 404


def test_reload_ends_streams_cleanly_and_clients_resume(tmp_path, port, database_dsn):
    hive = create_hives(database_dsn, 1)[0]
    with running(tmp_path, occupancy_config(port, database_dsn, workers=2), port) as b:
        b.wait_log("cache manager: writing the occupancy zone")
        path = f"/v1/hives/{hive}/occupancy/stream"
        clients = streams_on_two_workers(port, path)
        old = {c.pid for c in clients}
        pusher = Pusher(tmp_path / "run")
        resumed = []
        try:
            last = {c.pid: c.next_event()["id"] for c in clients}
            b.send(signal.SIGHUP)
            for client in clients:  # ended with the last chunk, not a reset
                assert client.ended.wait(10), "the stream did not end"
                assert any("reconnect (worker retiring)" in c for c in client.comments)
            # reconnect as EventSource does, with Last-Event-ID: a new-generation worker
            for client in clients:
                resumed.append(wait_for(
                    lambda c=client: _reconnect(port, path, last[c.pid], old), timeout=10,
                    what="a stream on a new worker"))
            assert all(r.events == [] for r in resumed)  # nothing changed meanwhile
            time.sleep(0.3)
            sent = pusher.push(hive, 8, 1008, 1000)
            for client in resumed:
                ev = client.next_event(timeout=2)
                assert ev["json"]["occupancy"] == 8 and ev["at"] - sent < LATENCY_BOUND
        finally:
            pusher.close()
            for client in clients + resumed:
                client.close()


def _reconnect(port: int, path: str, last_id: str, old: set[int]) -> SSEClient | None:
    with contextlib.suppress(OSError):
        client = SSEClient(port, path, last_event_id=last_id)
        if client.status == 200 and client.pid not in old:
            return client
        client.close()
    return None


def test_one_stream_carries_several_hives(tmp_path, port, database_dsn):
    """GET /v1/occupancy/stream?ids=: the state of every known hive at once (no `id:`),
    then each hive's changes; unknown ids are left out, bad ids are 400."""
    a, b, c = create_hives(database_dsn, 3)
    with running(tmp_path, occupancy_config(port, database_dsn, workers=1), port) as bz:
        bz.wait_log("cache manager: writing the occupancy zone")
        assert request(port, "/v1/occupancy/stream?ids=1,x")[0] == 400
        assert request(port, "/v1/occupancy/stream?ids=999999998,999999999")[0] == 404
        client = SSEClient(port, f"/v1/occupancy/stream?ids={a},{b},999999999,{c}")
        pusher = Pusher(tmp_path / "run")
        try:
            assert client.status == 200
            first = [client.next_event() for _ in range(3)]
            assert [e["json"]["hive_id"] for e in first] == [a, b, c]
            assert all(e.get("id") is None for e in first)
            time.sleep(0.3)  # the subscriptions have reached the publisher
            for n, hive in enumerate((b, a, c, b)):
                pusher.push(hive, 10 + n, 100 + n, 90)
                ev = client.next_event(timeout=2)
                assert (ev["json"]["hive_id"], ev["json"]["occupancy"]) == (hive, 10 + n)
                assert ev["json"]["source"] == "bus"
        finally:
            client.close()
            pusher.close()
