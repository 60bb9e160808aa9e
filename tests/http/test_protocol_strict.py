"""Strict request parsing at nginx's default limits, over real sockets: the request
line, header line, header count and header section limits at their boundaries
(exactly at the limit passes, one byte over fails), a header that never ends, raw
UTF-8 in the target, and clients that half-close their side."""

from __future__ import annotations

import contextlib
import json
import select
import socket

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port, wait_for

ECHO_MODULE = '''
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def echo(request):
    return Response(200, json.dumps({
        "path": request.path, "raw_url": request.raw_url.decode("latin-1"),
        "headers": [k.decode("latin-1").lower() for k, _ in request.headers],
        "body": len(request.body)}), content_type="application/json")

module = Module(name="strictecho", content_handlers={"echo": echo})
'''

LINE = 8192  # client_max_request_line and client_max_header_line: nginx's 8k
FIELDS = 100  # client_max_header_fields
SECTION = 32768  # client_max_header_size


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("strict")
    (prefix / "modules").mkdir()
    (prefix / "modules" / "strictecho.py").write_text(ECHO_MODULE)
    port = free_port()
    config = base_config(port, worker_processes=1,
                         modules=["strictecho"])
    config["http"]["servers"][0]["access_log"] = {"path": "logs/access.log", "buffer": 0}
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, "ok"]},
        {"location": "/", "content": "echo"},
    ]
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(prefix / "modules")})
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
        assert "Traceback" not in b.log(), b.log()
    finally:
        b.kill_everything()


def exchange(server, data: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        else:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def first_status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def body_of(data: bytes) -> dict:
    return json.loads(data.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1", 1)[0])


def request_line_of(length: int) -> bytes:
    """`GET /xxx HTTP/1.1`, `length` bytes long without its CRLF."""
    return b"GET /" + b"x" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"


def header_line_of(length: int) -> bytes:
    return b"X-Long: " + b"v" * (length - len(b"X-Long: "))


# -- limits ------------------------------------------------------------------------

@pytest.mark.parametrize(("length", "status"), [(LINE, 200), (LINE + 1, 414)])
def test_the_request_line_limit(server, length, status):
    data = exchange(server, request_line_of(length) + b"\r\nHost: t\r\n\r\n")
    assert first_status(data) == status
    if status == 414:
        assert b"request line too long" in data


@pytest.mark.parametrize(("length", "status"), [(LINE, 200), (LINE + 1, 431)])
def test_the_header_line_limit(server, length, status):
    data = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n" + header_line_of(length)
                    + b"\r\n\r\n")
    assert first_status(data) == status
    if status == 431:
        assert b"header line too long" in data


@pytest.mark.parametrize(("count", "status"), [(FIELDS, 200), (FIELDS + 1, 431)])
def test_the_header_field_count_limit(server, count, status):
    fields = b"Host: t\r\n" + b"".join(b"X-F%d: 1\r\n" % i for i in range(count - 1))
    data = exchange(server, b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert first_status(data) == status
    if status == 431:
        assert b"too many header fields" in data


def section_of(size: int) -> bytes:
    """A request line and headers whose size, as the limit counts it (the target,
    then name + value + 4 per field), is `size`."""
    target = b"/"
    fields = [b"Host: t\r\n"]
    left = size - len(target) - (4 + 1 + 4)
    while left > 0:
        value = min(LINE - 8, left - len(b"X-Fill") - 4)
        fields.append(b"X-Fill: " + b"f" * value + b"\r\n")
        left -= len(b"X-Fill") + value + 4
    assert left == 0
    return b"GET " + target + b" HTTP/1.1\r\n" + b"".join(fields) + b"\r\n"


@pytest.mark.parametrize(("size", "status"), [(SECTION, 200), (SECTION + 1, 431)])
def test_the_header_section_limit(server, size, status):
    data = exchange(server, section_of(size))
    assert first_status(data) == status


def test_a_header_line_that_never_ends_is_cut_at_the_section_limit(server):
    """httptools keeps a header line until it ends: the bytes read are counted."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        while sent < 50 * SECTION and not select.select([s], [], [], 0.01)[0]:
            s.sendall(b"e" * 4096)  # bounded: a server that keeps reading fails below
            sent += 4096
        data = s.recv(65536)
    assert first_status(data) == 431
    assert sent < 4 * SECTION, sent  # the section limit and one read, not the 1.6 MB


# -- targets -----------------------------------------------------------------------

def test_raw_utf8_in_the_target_is_routed_as_its_percent_encoded_form(server):
    data = exchange(server, "GET /à%20k?q=é HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert first_status(data) == 200
    seen = body_of(data)
    assert seen["path"] == "/à k"
    assert seen["raw_url"] == "/%C3%A0%20k?q=%C3%A9"


def test_underscored_look_alikes_of_framing_headers_never_reach_a_handler(server):
    data = exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent_Length: 5\r\n"
                            b"Transfer_Encoding: chunked\r\nContent-Length: 2\r\n\r\nok")
    seen = body_of(data)
    assert seen["headers"] == ["host", "content-length"] and seen["body"] == 2
    assert data.count(b"HTTP/1.1 200 OK") == 2  # the follow-up request was framed right


# -- half-closed clients -------------------------------------------------------------

def test_a_complete_request_then_a_half_close_is_answered(server):
    data = exchange(server, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                            b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n", half_close=True)
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_a_fixed_response_is_sent_though_the_body_ended_early(server):
    """nginx answers `return` without reading the body."""
    data = exchange(server, b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
                            b"\r\nonly some", half_close=True)
    assert first_status(data) == 200 and data.endswith(b"ok")
    assert b"Connection: close" in data


def test_a_body_that_ends_early_is_answered_and_logged_as_400(server):
    data = exchange(server, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
                            b"\r\nonly some", half_close=True)
    assert first_status(data) == 400 and b"request body" in data
    log = server.prefix / "logs" / "access.log"
    assert wait_for(lambda: log.exists() and '"POST /upload HTTP/1.1" 400' in log.read_text())


def test_a_header_section_that_ends_early_is_answered_400(server):
    data = exchange(server, b"GET /x HTTP/1.1\r\nHost: t\r\nX-Half: ", half_close=True)
    assert first_status(data) == 400 and b"request header" in data
