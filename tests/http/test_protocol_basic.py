"""The first piece of the HTTP engine over real sockets: keep-alive, pipelining,
HEAD, HTTP/1.0, limits and errors with reasons."""

from __future__ import annotations

import json
import socket
import time

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    config = base_config(port, worker_processes=1)
    config["http"].update({"keepalive_requests": 5, "keepalive_timeout": "1s",
                           "client_max_body_size": "1k", "client_max_header_size": "2k"})
    config["http"]["servers"][0]["locations"] += [
        {"location": "= /moved", "return": [301, "https://example.invalid/new"]},
        {"location": "= /empty", "return": 204},
    ]
    b = Bizzyd(tmp_path_factory.mktemp("http"), port)
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def connect(server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return s


def read_response(s: socket.socket, buf: bytearray, head_only: bool = False) -> tuple:
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", 0))
    while len(rest) < length:
        rest += s.recv(65536)
    del buf[:len(head) + 4 + length]
    return int(lines[0].split()[1]), headers, rest[:length]


def exchange(server, raw: bytes, head_only: bool = False) -> tuple:
    with connect(server) as s:
        s.sendall(raw)
        return read_response(s, bytearray(), head_only)


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with connect(server) as s:
        buf = bytearray()
        for _ in range(3):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, body = read_response(s, buf)
            assert (status, body) == (200, b'{"status":"ok"}')
            assert "connection" not in headers
            assert headers["server"].startswith("bizzyd/")
            assert headers["date"].endswith(" GMT")


def test_pipelined_requests_are_answered_in_order(server):
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        buf = bytearray()
        assert [read_response(s, buf)[0] for _ in range(3)] == [200, 404, 200]


def test_keepalive_requests_limit_closes_the_connection(server):
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n" * 6)
        buf = bytearray()
        answers = [read_response(s, buf) for _ in range(5)]
        assert answers[-1][1]["connection"] == "close"
        assert s.recv(100) == b""


def test_idle_keep_alive_connection_is_closed_after_keepalive_timeout(server):
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        read_response(s, bytearray())
        started = time.monotonic()
        s.settimeout(5)
        assert s.recv(100) == b""
        assert 0.5 < time.monotonic() - started < 3.5


def test_head_has_headers_but_no_body(server):
    status, headers, body = exchange(server, b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n",
                                     head_only=True)
    assert status == 200 and headers["content-length"] == "15"


def test_http10_closes_unless_keep_alive_is_asked(server):
    status, headers, _ = exchange(server, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    status, headers, _ = exchange(server, b"GET /health HTTP/1.0\r\n"
                                          b"Connection: keep-alive\r\n\r\n")
    assert headers["connection"] == "keep-alive"


def test_return_redirect_and_no_content(server):
    status, headers, _ = exchange(server, b"GET /moved HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 301 and headers["location"] == "https://example.invalid/new"
    status, headers, body = exchange(server, b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 204 and body == b"" and "content-length" not in headers


@pytest.mark.parametrize("raw,status,reason", [
    (b"GARBAGE\r\n\r\n", 400, "Invalid method"),
    (b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n", 400, ""),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "too long"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n", 431, "too large"),
    (b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 413,
     "client_max_body_size"),
    (b"GET /../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid path"),
    (b"GET /health HTTP/1.1\r\nHost: a\r\nExpect: telepathy\r\n\r\n", 417, "Expect"),
])
def test_bad_requests_get_a_status_with_a_reason_and_a_close(server, raw, status, reason):
    got, headers, body = exchange(server, raw)
    assert got == status
    assert headers["connection"] == "close"
    assert reason in json.loads(body).get("reason", "")


def test_expect_100_continue_gets_an_interim_response(server):
    with connect(server) as s:
        s.sendall(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"data")
        assert read_response(s, bytearray())[0] == 200


def test_the_server_survives_bad_requests(server):
    for _ in range(3):
        exchange(server, b"\x00\x01\x02\r\n\r\n")
    assert exchange(server, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")[0] == 200
