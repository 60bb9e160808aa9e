"""Bounded fuzzing of the request parser against a real server.

Three generators: mutations of valid requests, random header bytes, and a valid
request cut into several writes.  Properties: every byte the server sends back is a
sequence of well-formed HTTP/1.1 responses; client garbage never gets a 5xx (but
505, the answer to an HTTP version we do not speak); the server survives (a fresh
connection is answered, the worker is the same process, nothing is logged as a
crash); and how a request is cut into writes does not change what is parsed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bizzyd_proc import Bizzyd, base_config, free_port

ECHO_MODULE = '''
import asyncio
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def echo(request):
    return Response(200, json.dumps({
        "method": request.method, "path": request.path, "query": request.query,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers],
        "body": request.body.decode("latin-1")}), content_type="application/json")

async def echo_async(request):
    await asyncio.sleep(0)
    return echo(request)

module = Module(name="fuzzecho", content_handlers={"echo": echo, "echo_async": echo_async})
'''

SEEDS = [
    b"GET /echo?a=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /async HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"GET /echo/1 HTTP/1.1\r\nHost: example\r\n\r\nGET /async/2 HTTP/1.1\r\nHost: example\r\n\r\n"
    b"PUT /echo/3 HTTP/1.1\r\nHost: example\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /echo HTTP/1.0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: example\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
]
SPECIAL = [b"\r", b"\n", b"\r\n", b"\0", b" ", b"\t", b":", b";", b",", b"0", b"f", b"\x7f",
           b"\xff", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n", b"\r\n\r\n"]
# BIZZYD_FUZZ_EXAMPLES=5000 for a deeper run by hand; the default keeps CI bounded
EXAMPLES = int(os.environ.get("BIZZYD_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("fuzz")
    modules = prefix / "modules"
    modules.mkdir()
    (modules / "fuzzecho.py").write_text(ECHO_MODULE)
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["fuzzecho"])
    config["http"].update({"client_max_body_size": "4k", "client_max_header_size": "4k",
                           "client_header_timeout": "3s", "client_body_timeout": "3s"})
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, "ok"]},
        {"location": "/async", "content": "echo_async"},
        {"location": "/", "content": "echo"},
    ]
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(modules)})
    b.write_config(config)
    try:
        b.start()
        worker = b.workers()
        yield b
        assert b.workers() == worker, "the worker died and was replaced"
        log = b.log()
        assert "Traceback" not in log and "parser callback failed" not in log, log[-3000:]
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def exchange(port: int, writes: list[bytes], pause: float = 0.0) -> bytes:
    """Send the writes, half-close, read everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for data in writes:
                s.sendall(data)
                if pause:
                    time.sleep(pause)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after an error: what it sent is still readable
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5]\d\d) [^\r\n]*\r\n")


def parse_responses(out: bytes) -> list[tuple[int, bytes]]:
    """Split what the server sent into (status, body); fail on anything malformed."""
    responses = []
    pos = 0
    while pos < len(out):
        m = STATUS_LINE.match(out, pos)
        assert m, f"not a status line at {pos}: {out[pos:pos + 80]!r}"
        end = out.index(b"\r\n\r\n", m.end() - 2)
        headers = dict(line.split(b": ", 1) for line in out[m.end():end].split(b"\r\n") if line)
        pos = end + 4
        status = int(m.group(1))
        if status < 200:
            responses.append((status, b""))
            continue
        if headers.get(b"Transfer-Encoding") == b"chunked":
            body = b""
            while True:
                line_end = out.index(b"\r\n", pos)
                size = int(out[pos:line_end], 16)
                body += out[line_end + 2:line_end + 2 + size]
                pos = line_end + 4 + size
                if not size:
                    break
        else:
            length = int(headers[b"Content-Length"])
            body = out[pos:pos + length]
            assert len(body) == length, "a truncated body"
            pos += length
        responses.append((status, body))
    return responses


def check_garbage_answer(server, writes: list[bytes]) -> None:
    responses = parse_responses(exchange(server.port, writes))
    for status, body in responses:
        assert status < 500 or status == 505, (status, body)
        if 400 <= status < 500:
            assert "reason" in json.loads(body)
    assert exchange(server.port, [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]).startswith(
        b"HTTP/1.1 200 OK\r\n"), "the server did not survive"


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(SPECIAL) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_requests_get_well_formed_answers(server, data):
    check_garbage_answer(server, [data])


@FUZZ
@given(st.binary(max_size=24), st.binary(max_size=48))
def test_random_header_bytes_get_well_formed_answers(server, name, value):
    check_garbage_answer(server, [b"POST /echo HTTP/1.1\r\nHost: example\r\n" + name + b": "
                                  + value + b"\r\nContent-Length: 2\r\n\r\nok"])


@settings(FUZZ, max_examples=max(60, EXAMPLES // 3))
@given(st.sampled_from(SEEDS), st.lists(st.integers(1, 400), min_size=1, max_size=6))
def test_how_a_request_is_cut_into_writes_does_not_change_it(server, seed, cuts):
    whole = parse_responses(exchange(server.port, [seed]))
    points = sorted({c % len(seed) for c in cuts} - {0})
    pieces = [seed[a:b] for a, b in zip([0, *points], [*points, len(seed)], strict=True)]
    split = parse_responses(exchange(server.port, pieces, pause=0.002))
    assert [s for s, _ in split] == [s for s, _ in whole]
    assert [_parsed(b) for _, b in split] == [_parsed(b) for _, b in whole]


def _parsed(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return body
