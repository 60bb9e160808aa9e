"""Limits and timeouts over real sockets: slow clients (header, body), the client
that stops reading, EOF after a request, worker_connections, and 10,000 idle
keep-alive connections held by one worker."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port, running

SLOW_MODULE = '''
import asyncio
from bizzyd.http.response import Response
from bizzyd.module import Module

async def slow(request):
    await asyncio.sleep(0.3)
    return Response(200, b"slow done")

def size(request):
    return Response(200, str(len(request.body)).encode())

module = Module(name="limitstest", content_handlers={"slow": slow, "size": size})
'''


def limits_config(port: int) -> dict:
    config = base_config(port, worker_processes=1, modules=["limitstest"])
    config["http"].update({"client_header_timeout": "2s", "client_body_timeout": "2s",
                           "keepalive_timeout": "10s", "keepalive_requests": 1_000_000})
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, "ok"]},
        {"location": "= /slow", "content": "slow"},
        {"location": "= /size", "content": "size"},
    ]
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("limits")
    modules = prefix / "modules"
    modules.mkdir()
    (modules / "limitstest.py").write_text(SLOW_MODULE)
    port = free_port()
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(modules)})
    b.write_config(limits_config(port))
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def trickle(sock: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send `data` one byte per `every` seconds until the server answers; the time taken."""
    started = time.monotonic()
    for byte in data:
        readable, _, _ = select.select([sock], [], [], every)
        if readable or time.monotonic() - started > limit:
            break
        with contextlib.suppress(OSError):
            sock.send(bytes([byte]))
    return time.monotonic() - started


# -- slow clients ------------------------------------------------------------------

def test_slowloris_headers_are_cut_at_client_header_timeout(server):
    with connect(server.port) as s:
        request = b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 100 + b"\r\n\r\n"
        took = trickle(s, request, every=0.5, limit=8)
        data = read_all(s)
    assert status_of(data) == 408 and b"header" in data
    assert 0.9 < took < 4.5, took  # deadlines use the engine tick's clock: +-1s


def test_a_stalled_body_is_cut_at_client_body_timeout(server):
    with connect(server.port) as s:
        s.sendall(b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        started = time.monotonic()
        data = read_all(s)
    assert status_of(data) == 408 and b"body" in data
    assert 0.9 < time.monotonic() - started < 4.5


def test_client_body_timeout_is_between_two_reads(server):
    with connect(server.port) as s:
        s.sendall(b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":  # 4.8s in all, each gap under the 2s timeout
            time.sleep(1.2)
            s.sendall(bytes([byte]))
        assert s.recv(1000).endswith(b"\r\n\r\n4")


def test_an_idle_connection_that_never_sends_is_closed(server):
    with connect(server.port) as s:
        started = time.monotonic()
        assert read_all(s) == b""  # nothing to answer: closed without a response
        assert 0.9 < time.monotonic() - started < 4.5  # the tick's clock: +-1s


# -- EOF and back-pressure ---------------------------------------------------------

def test_a_request_followed_by_eof_is_still_answered(server):
    with connect(server.port) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data = read_all(s)
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"slow done" in data


def server_rx_queue(port: int, client_port: int) -> int:
    """Bytes received by the server's socket that the server has not read yet."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (port, client_port):
            return int(fields[4].split(":")[1], 16)
    raise AssertionError("server socket not found")


def test_the_server_stops_reading_from_a_client_that_does_not_read(server):
    n = 100_000
    request = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(30)
    s.connect(("127.0.0.1", server.port))
    with s:
        sender = threading.Thread(target=s.sendall, args=(request * n,), daemon=True)
        sender.start()
        # a server that kept reading would keep its receive queue short; one that
        # stopped lets it fill (how fast depends on the machine's load: poll) up to
        # its receive buffer (480-1000 KB here, as the kernel tunes it), and there
        # it stays
        deadline, unread = time.monotonic() + 10, 0
        while unread <= 200_000 and time.monotonic() < deadline:
            time.sleep(0.2)
            unread = server_rx_queue(server.port, s.getsockname()[1])
        assert unread > 200_000, f"the server kept reading ({unread} bytes unread)"
        time.sleep(0.5)
        later = server_rx_queue(server.port, s.getsockname()[1])
        assert later >= unread, f"the server read on ({unread} → {later} bytes unread)"
        seen, tail = 0, b""
        while seen < n:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {seen} responses"
            data = tail + chunk
            seen += data.count(b"HTTP/1.1 200 OK")
            tail = data[-14:]  # shorter than the marker: never counted twice
        sender.join(10)
    assert seen == n


# -- worker_connections ------------------------------------------------------------

def test_worker_connections_caps_the_connections_of_a_worker(tmp_path):
    port = free_port()
    config = base_config(port, worker_processes=1, worker_connections=16)
    with running(tmp_path, config, port) as b:
        held = []
        try:
            time.sleep(0.2)  # the readiness probe's connection is gone
            for _ in range(16):
                s = connect(port)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                assert s.recv(1000).startswith(b"HTTP/1.1 200")
                held.append(s)
            with connect(port) as extra:
                data = read_all(extra)
            assert status_of(data) == 503
            assert json.loads(data.partition(b"\r\n\r\n")[2])["reason"] == "too many connections"
            held.pop().close()
            time.sleep(0.2)
            with connect(port) as again:
                again.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                assert status_of(read_all(again)) == 200
        finally:
            for s in held:
                s.close()
        assert "16 worker_connections are not enough" in b.log()


# -- 10,000 idle keep-alive connections ---------------------------------------------

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_one_worker_holds_10000_idle_keep_alive_connections(tmp_path):
    count, batch = 10_000, 250
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    config = base_config(port, worker_processes=1, worker_rlimit_nofile=20000,
                         worker_connections=12000, error_log_level="warn")
    config["http"].update({"keepalive_timeout": "120s", "client_header_timeout": "120s"})
    request = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    held: list[socket.socket] = []
    started = time.monotonic()
    try:
        with running(tmp_path, config, port) as b:
            worker = b.workers()[0]
            before = rss_kib(worker)
            for _ in range(0, count, batch):
                group = [connect(port, timeout=10) for _ in range(batch)]
                for s in group:
                    s.sendall(request)
                for s in group:
                    assert s.recv(4096).endswith(b"\r\n\r\n{\"status\":\"ok\"}"), "no response"
                held += group
            after = rss_kib(worker)
            print(f"\nworker RSS: {before} KiB before, {after} KiB with {count} idle keep-alive "
                  f"connections (+{(after - before) / count * 1024:.0f} bytes each); "
                  f"opened in {time.monotonic() - started:.1f}s")
            assert after - before <= 60 * 1024, "10,000 idle connections took over 60 MiB"
            for s in held[::50]:  # every connection still answers: a sample
                s.sendall(request)
            for s in held[::50]:
                assert s.recv(4096).endswith(b"\r\n\r\n{\"status\":\"ok\"}")
            assert b.workers() == [worker], "the worker was replaced"
            assert "worker_connections are not enough" not in b.log()
            assert "Traceback" not in b.log()
            for s in held:  # reset, not FIN: no 10,000 sockets in TIME_WAIT
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            held = []
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert time.monotonic() - started < 30
