"""The catalogue cache on real memcached and Postgres: one fill for concurrent misses
across workers, invalidation within a second, memcached stopped or gone, Postgres
stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from bizzyd_proc import ROOT, free_port, running, wait_for
from modules.database.testing import create_database
from modules.hives.testing import catalogue_config, load_demo, metric, wait_until_cached

from .conftest import memcached_address

pytestmark = pytest.mark.services


async def _get(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return int(head.split()[1]), await reader.readexactly(length)


async def _held_fill(port: int, dsn: str, url: str, n: int,
                     seen: Callable[[], int]) -> tuple[list[tuple[int, bytes]], int]:
    """`n` concurrent GETs of `url` (on `n` connections opened first) while the table
    the fill reads is locked; returns the (status, body) answers and how many bizzyd
    queries were waiting on the lock once all `n` requests had arrived."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE hive_image IN ACCESS EXCLUSIVE MODE")
        request = f"GET {url} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        for _, writer in streams:
            writer.write(request)
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(seen) < n:
            assert time.monotonic() < deadline, f"{seen()} of {n} requests arrived"
            await asyncio.sleep(0.02)
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'bizzyd' AND wait_event_type = 'Lock'")
        await tx.commit()
        answers = await asyncio.wait_for(
            asyncio.gather(*(_get(reader) for reader, _ in streams)), 20)
        return answers, waiting
    finally:
        await conn.close()
        for _, writer in streams:
            writer.close()


def test_concurrent_misses_on_one_key_make_one_query(catalogue, catalogue_dsn):
    url = "/v1/hives/7"
    names = ("misses_total", "coalesced_total", "fills_total")
    before = {n: metric(catalogue, n) for n in names}

    def seen() -> int:  # requests that missed or joined another's lookup so far
        return sum(metric(catalogue, n) - before[n] for n in names[:2])

    answers, waiting = asyncio.run(_held_fill(catalogue.base_url.port, catalogue_dsn, url,
                                              100, seen))
    assert waiting == 1  # one query of the 100 requests reached Postgres
    assert {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    assert metric(catalogue, "fill_lock_timeouts_total") == 0
    assert metric(catalogue, "fills_total") - before["fills_total"] == 1


def _deal(dsn: str, hive_id: int, title: str) -> float:
    """Insert an active deal; the time of its commit."""
    async def run() -> float:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO deal (hive_id, kind, title, valid_from, valid_until) "
                "VALUES ($1, 'event', $2, now() - interval '1 hour', now() + interval '1 day')",
                hive_id, title)
            return time.monotonic()
        finally:
            await conn.close()
    return asyncio.run(run())


def test_a_new_deal_shows_in_the_next_reads_within_a_second(catalogue, catalogue_dsn):
    hive_id = 11
    url = f"/v1/hives/{hive_id}"
    first = catalogue.get(url).json()
    fills = metric(catalogue, "fills_total")
    assert catalogue.get(url).json() == first  # cached now
    assert metric(catalogue, "fills_total") == fills
    committed = _deal(catalogue_dsn, hive_id, "Invalidation test night")

    def shown() -> bool:
        titles = [d["title"] for d in catalogue.get(url).json()["deals"]]
        return "Invalidation test night" in titles
    wait_for(shown, timeout=5, step=0.01, what="the new deal in the detail")
    assert time.monotonic() - committed < 1.0
    assert catalogue.get(url).json()["active_deals"] == first["active_deals"] + 1
    deals = catalogue.get(f"{url}/deals").json()["items"]
    assert "Invalidation test night" in [d["title"] for d in deals]
    feed = catalogue.get("/v1/deals", params={"limit": 100, "sort": "ending"}).json()
    assert feed["items"]  # listings moved on too (they depend on every hive)


def test_a_renamed_hive_is_found_by_its_new_name_within_a_second(catalogue, catalogue_dsn):
    assert catalogue.get("/v1/hives", params={"q": "Zyxwvut Palace"}).json()["items"] == []

    async def rename() -> float:
        conn = await asyncpg.connect(catalogue_dsn)
        try:
            await conn.execute("UPDATE hive SET name = 'Zyxwvut Palace' WHERE id = 12")
            return time.monotonic()
        finally:
            await conn.close()
    committed = asyncio.run(rename())
    wait_for(lambda: [i["id"] for i in catalogue.get(
        "/v1/hives", params={"q": "Zyxwvut Palace"}).json()["items"]] == [12],
        timeout=5, step=0.01, what="the renamed hive in the search")
    assert time.monotonic() - committed < 1.0


def _own_catalogue(tmp_path: Path, dsn: str, memcached: str, **api: object):
    port = free_port()
    config = catalogue_config(port, dsn, memcached, workers=1, api=api)
    return port, running(tmp_path, config, port)


def test_requests_keep_answering_while_memcached_is_stopped(tmp_path, catalogue_dsn,
                                                            own_memcached):
    # a long memcached timeout: a request that needs memcached is stuck that long
    port, server = _own_catalogue(tmp_path, catalogue_dsn, own_memcached.address,
                                  memcached_timeout="4s")
    with server as b, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_until_cached(b.log_file, 1)
        assert client.get("/v1/hives/3").status_code == 200
        own_memcached.proc.send_signal(signal.SIGSTOP)
        try:
            stuck: dict[str, object] = {}

            def slow() -> None:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/hives/4", timeout=15)
                stuck["status"], stuck["at"] = r.status_code, time.monotonic()
            thread = threading.Thread(target=slow)
            started = time.monotonic()
            thread.start()
            wait_for(lambda: metric(client, "misses_total") >= 0 and thread.is_alive(),
                     timeout=2, what="the request waiting on memcached")
            for _ in range(20):  # the worker's loop keeps serving meanwhile
                t0 = time.monotonic()
                assert client.get("/health").status_code == 200
                assert client.get("/v1/hives/3/occupancy").status_code == 200
                assert client.get("/v1/hives/3").status_code == 200  # worker's table
                assert time.monotonic() - t0 < 0.5
            assert thread.is_alive() and "status" not in stuck
            thread.join(15)
            assert stuck["status"] == 200  # filled from Postgres after the timeout
            assert stuck["at"] - started >= 3.5
            assert metric(client, "memcached_fallbacks_total") >= 1
        finally:
            own_memcached.proc.send_signal(signal.SIGCONT)


def test_memcached_down_falls_back_to_postgres_and_comes_back(tmp_path, catalogue_dsn,
                                                              own_memcached):
    port, server = _own_catalogue(tmp_path, catalogue_dsn, own_memcached.address,
                                  local_cache_size=0, memcached_retry="1s")
    with server as b, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_until_cached(b.log_file, 1)
        assert client.get("/v1/hives/5").status_code == 200
        hits = metric(client, "memcached_hits_total")
        assert client.get("/v1/hives/5").status_code == 200
        assert metric(client, "memcached_hits_total") == hits + 1
        own_memcached.close()
        fallbacks = metric(client, "memcached_fallbacks_total")
        urls = ["/v1/hives/5", "/v1/hives/6", "/v1/hives?limit=3", "/v1/hive-types"] * 5
        assert {client.get(u).status_code for u in urls} == {200}
        assert metric(client, "memcached_fallbacks_total") - fallbacks == len(urls)
        assert "memcached 127.0.0.1:" in (tmp_path / "logs" / "error.log").read_text()
        back = subprocess.Popen(["/usr/bin/memcached", "-l", "127.0.0.1", "-p",
                                 str(own_memcached.port), "-U", "0", "-u", "root"])
        try:
            def cached_again() -> bool:
                client.get("/v1/hives/5")
                before = metric(client, "memcached_hits_total")
                client.get("/v1/hives/5")
                return metric(client, "memcached_hits_total") == before + 1
            wait_for(cached_again, timeout=10, step=0.2, what="memcached to be used again")
        finally:
            back.kill()
            back.wait(5)


def _without_occupancy(body: dict) -> dict:
    """A body without its live parts (the zone may have been loaded in between)."""
    strip = lambda d: {k: v for k, v in d.items() if k != "occupancy"}  # noqa: E731
    body = strip(body)
    if "items" in body:
        body["items"] = [strip(i) for i in body["items"]]
    return body


@pytest.fixture
def private_postgres(tmp_path):
    """A Postgres of this test's own (stopping the shared one would disturb others)."""
    env = {**os.environ, "BIZZYD_STATE_DIR": str(tmp_path / "state"),
           "BIZZYD_PG_PORT": str(free_port()), "BIZZYD_PG_FAST": "1"}

    def services(*args: str, retry: bool = False) -> None:
        for attempt in (1, 2):
            done = subprocess.run([str(ROOT / "scripts" / "services"), *args, "postgres"],
                                  env=env, timeout=120, capture_output=True, text=True)
            if done.returncode == 0 or not retry or attempt == 2:
                break
            # initdb fails now and then on this shared machine (shared memory): once more
            shutil.rmtree(tmp_path / "state", ignore_errors=True)
        assert done.returncode == 0, done.stdout + done.stderr

    services("start", retry=True)
    try:
        server = f"postgresql://postgres@127.0.0.1:{env['BIZZYD_PG_PORT']}/postgres"
        dsn = asyncio.run(create_database(server))  # gone with the cluster
        asyncio.run(load_demo(dsn, 40))
        yield dsn, services
    finally:
        services("stop")


def test_postgres_down_serves_cached_answers_and_503_for_misses(tmp_path, private_postgres):
    dsn, services = private_postgres
    port, server = _own_catalogue(tmp_path, dsn, memcached_address(), local_cache_size=0)
    with server as b, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_until_cached(b.log_file, 1)
        cached = {u: client.get(u) for u in ("/v1/hives/1", "/v1/hives?limit=5",
                                             "/v1/hive-types")}
        assert {r.status_code for r in cached.values()} == {200}
        services("stop")
        for url, first in cached.items():
            r = client.get(url)
            assert r.status_code == 200, url
            assert _without_occupancy(r.json()) == _without_occupancy(first.json()), url
        miss = client.get("/v1/hives/2")
        assert miss.status_code == 503
        assert miss.headers["content-type"] == "application/problem+json"
        assert int(miss.headers["retry-after"]) >= 1
        assert miss.json()["status"] == 503
        services("start")
        wait_for(lambda: client.get("/v1/hives/2").status_code == 200, timeout=20,
                 step=0.25, what="the catalogue to recover")
