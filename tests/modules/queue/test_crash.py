"""Crash safety: a consumer killed holding messages, bizzyd reloaded and killed -9 under
producers, and Postgres restarting under a running bizzyd."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from queue_support import boto_client, queue_config, run_queues

from bizzyd_proc import alive, free_port, running, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

CONSUMER = """
import json, sys, http.client
port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
conn.request("GET", "/receive-message?count=5")
doc = json.loads(conn.getresponse().read())
print(json.dumps([m["key"] for m in doc["messages"]]), flush=True)
sys.stdin.read()  # hold the messages until killed
"""


def request(port: int, method: str, path: str, body: dict | None = None,
            timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def send(port: int, text: str) -> str:
    status, _, body = request(port, "POST", "/send-message", {"message": text})
    assert status == 200, body
    return json.loads(body)["key"]


def test_a_killed_consumer_s_messages_come_back_after_the_visibility_timeout(
        tmp_path: Path, queue_dsn: str):
    port = free_port()
    config = queue_config(port, queue_dsn, aweq_checkout_lifetime="2s",
                          rescue_interval="200ms")
    for loc in config["http"]["servers"][0]["locations"]:
        if "content" in loc and loc["content"].startswith("aweq"):
            loc["aweq_queue"] = "crash-consumer"
    with running(tmp_path, config, port):
        keys = {send(port, f"job {i}") for i in range(5)}
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(port)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            held = set(json.loads(consumer.stdout.readline()))
            assert held == keys
            consumer.kill()
            consumer.wait(5)
        finally:
            consumer.kill()
        status, _, body = request(port, "GET", "/receive-message?count=5")
        assert json.loads(body)["messages"] == []  # still invisible right after the kill
        start = time.monotonic()
        status, _, body = request(port, "GET", "/receive-message?count=5&wait=10", timeout=15)
        again = json.loads(body)["messages"]
        assert {m["key"] for m in again} == keys
        assert all(m["retry_count"] == 1 for m in again)
        assert time.monotonic() - start < 4


class Producer(threading.Thread):
    """Sends numbered messages until stopped; remembers the keys bizzyd acknowledged."""

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.port, self.tag = port, tag
        self.acked: dict[str, str] = {}
        self.failed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            text = f"{self.tag}-{i}"
            i += 1
            try:
                status, _, body = request(self.port, "POST", "/send-message",
                                          {"message": text}, timeout=5)
            except OSError:
                self.failed += 1
                time.sleep(0.01)
                continue
            if status == 200:
                self.acked[json.loads(body)["key"]] = text
            else:
                self.failed += 1


def stored_keys(dsn: str) -> set[str]:
    async def scenario(q):
        async with q.db.connection() as conn:
            rows = await conn.fetch("SELECT id FROM queue_message")
        return {str(r["id"]) for r in rows}

    return run_queues(dsn, scenario, listen=False)


def test_reload_and_kill_9_lose_no_acknowledged_message(tmp_path: Path, queue_dsn: str):
    port = free_port()
    config = queue_config(port, queue_dsn)
    for loc in config["http"]["servers"][0]["locations"]:
        if "content" in loc and loc["content"].startswith("aweq"):
            loc["aweq_queue"] = "crash-producers"
    with running(tmp_path, config, port) as b:
        producers = [Producer(port, f"p{i}") for i in range(3)]
        for p in producers:
            p.start()
        wait_for(lambda: sum(len(p.acked) for p in producers) > 100, 20, what="sends")
        b.send(signal.SIGHUP)
        b.wait_log("configuration reloaded")
        wait_for(lambda: sum(len(p.acked) for p in producers) > 300, 20, what="more sends")
        workers = b.workers()
        for pid in [b.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        b.proc.wait(5)
        wait_for(lambda: not any(alive(w) for w in workers), 5, what="workers to die")
        for p in producers:
            p.stopping.set()
        for p in producers:
            p.join(10)
        b.pid_file.unlink(missing_ok=True)
        b.start()
        acked = {k for p in producers for k in p.acked}
        assert len(acked) > 300
        missing = acked - stored_keys(queue_dsn)
        assert not missing, f"{len(missing)} acknowledged messages lost"
        send(port, "after restart")  # and it serves again


def test_postgres_restart_gives_503_with_retry_after_then_resumes(tmp_path: Path,
                                                                    private_postgres):
    import asyncio

    from modules.database.migrate import up

    dsn, services = private_postgres
    asyncio.run(up(dsn, report=lambda line: None))
    port = free_port()
    # rescue_interval is long: after the restart only the re-established LISTEN
    # connection can wake the long poll below quickly
    config = queue_config(port, dsn, rescue_interval="30s")
    with running(tmp_path, config, port):
        before = send(port, "before")
        sqs = boto_client(port)
        url = sqs.create_queue(QueueName="outage")["QueueUrl"]
        services("stop")
        status, headers, _ = request(port, "POST", "/send-message", {"message": "during"})
        assert status == 503 and int(headers["retry-after"]) >= 1
        status, headers, _ = request(port, "GET", "/get-stats")
        assert status == 503 and "retry-after" in headers
        from botocore.exceptions import ClientError
        with pytest.raises(ClientError) as exc:
            sqs.send_message(QueueUrl=url, MessageBody="during")
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert exc.value.response["Error"]["Code"] == "ServiceUnavailable"
        services("start")
        wait_for(lambda: request(port, "GET", "/get-stats")[0] == 200, 20,
                 what="the queue to serve again")
        # every worker's pool may not be back yet: a 503 receives nothing, ask again
        answers: list = []
        wait_for(lambda: answers.append(request(port, "GET", "/receive-message?count=5"))
                 or answers[-1][0] == 200, 20, what="a receive to be served")
        assert [m["key"] for m in json.loads(answers[-1][2])["messages"]] == [before]
        result: list = []
        poller = threading.Thread(target=lambda: result.append(sqs.receive_message(
            QueueUrl=url, WaitTimeSeconds=15)), daemon=True)

        def listening() -> bool:  # each worker's LISTEN connection is back
            import asyncpg

            async def count() -> int:
                conn = await asyncpg.connect(dsn)
                try:
                    return await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
                finally:
                    await conn.close()
            return asyncio.run(count()) >= 2

        wait_for(listening, 20, what="the LISTEN connections to come back")
        poller.start()
        time.sleep(0.5)  # the poll is waiting inside bizzyd (nothing to await from here)
        start = time.monotonic()
        sqs.send_message(QueueUrl=url, MessageBody="after")
        poller.join(20)
        assert [m["Body"] for m in result[0]["Messages"]] == ["after"]
        assert time.monotonic() - start < 3


def test_a_reload_ends_waiting_long_polls_at_once(tmp_path: Path, queue_dsn: str):
    """A long poll on a retiring worker answers (empty) right away, so the client polls
    again on the new generation instead of holding the old one for up to 20 s."""
    port = free_port()
    config = queue_config(port, queue_dsn, rescue_interval="30s")
    with running(tmp_path, config, port) as b:
        sqs = boto_client(port)
        url = sqs.create_queue(QueueName="retire")["QueueUrl"]
        result: list = []
        poller = threading.Thread(target=lambda: result.append(sqs.receive_message(
            QueueUrl=url, WaitTimeSeconds=20)), daemon=True)
        poller.start()
        time.sleep(0.5)  # the poll is waiting inside bizzyd (nothing to await from here)
        start = time.monotonic()
        b.send(signal.SIGHUP)
        poller.join(25)
        assert result and "Messages" not in result[0]
        assert time.monotonic() - start < 5
        sqs.send_message(QueueUrl=url, MessageBody="new generation")
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]["Body"] == \
            "new generation"
