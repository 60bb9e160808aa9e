"""Postgres goes away under a running bizzyd and comes back: 503 with Retry-After
while it is down, 200 again afterwards, without restarting bizzyd."""

from __future__ import annotations

from pathlib import Path

import pytest

from bizzyd_proc import base_config, free_port, http_get, running, wait_for

pytestmark = pytest.mark.services


def status_and_headers(port: int) -> tuple[int, str]:
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /health/db HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode()
    return int(head.split()[1]), head


def test_postgres_outage_gives_503_then_recovers(tmp_path: Path, private_postgres):
    dsn, services = private_postgres
    port = free_port()
    config = base_config(port, modules=["modules.database"],
                         database={"dsn": dsn, "connect_timeout": "1s",
                                   "reconnect_max_backoff": "2s"})
    config["http"]["servers"][0]["locations"].append(
        {"location": "= /health/db", "content": "db_health"})
    with running(tmp_path, config, port) as b:
        assert http_get(port, "/health/db") == (200, b'{"database":"ok"}\n')
        services("stop")
        status, head = status_and_headers(port)
        assert status == 503 and "Retry-After: " in head
        statuses = {status_and_headers(port)[0] for _ in range(20)}
        assert statuses == {503}
        assert http_get(port)[0] == 200  # what needs no database keeps working
        services("start")
        wait_for(lambda: status_and_headers(port)[0] == 200, timeout=15,
                 what="service to resume by itself")
        for _ in range(10):
            assert status_and_headers(port)[0] == 200
        assert len(b.workers()) == 2
        assert "database: connection restored" in b.log()
        assert "retrying in" in b.log()
