"""Streamed and file bodies over real sockets: chunked on HTTP/1.1, close-delimited
on 1.0, back-pressure, errors mid-stream, ordering behind a stream, the log phase,
a retiring worker, send_timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port, wait_for

STREAM_MODULE = '''
"""Test handlers: streams, a failing stream, endless events, a file."""
import asyncio
import json
import os
from urllib.parse import parse_qs
from bizzyd.http.response import FileBody, Response
from bizzyd.module import Module, PhaseHandler

DATA = os.path.join(os.path.dirname(__file__), "data.bin")
LOGGED = []   # paths whose log phase ran, in order
STATE = {"produced": 0}

def _arg(request, name, default):
    return int(parse_qs(request.query).get(name, [default])[0])

async def stream(request):
    n, ms, size = _arg(request, "n", 3), _arg(request, "ms", 0), _arg(request, "size", 0)
    async def chunks():
        for i in range(n):
            if ms:
                await asyncio.sleep(ms / 1000)
            STATE["produced"] = i + 1
            yield b"x" * size if size else f"chunk{i};".encode()
    return Response(200, stream=chunks(), content_type="text/plain")

async def broken(request):
    async def chunks():
        yield b"first;"
        await asyncio.sleep(0.05)
        raise RuntimeError("the stream fails on purpose")
    return Response(200, stream=chunks())

async def events(request):
    async def chunks():
        i = 0
        while True:
            yield f"data: {i}\\n\\n".encode()
            i += 1
            await asyncio.sleep(0.1)
    return Response(200, stream=chunks(), content_type="text/event-stream")

def file(request):
    f = open(DATA, "rb")
    size = os.fstat(f.fileno()).st_size
    offset = _arg(request, "offset", 0)
    count = _arg(request, "count", size - offset)
    return Response(200, file=FileBody(f, offset, count), content_type="application/octet-stream")

def state(request):
    return Response(200, json.dumps({"logged": LOGGED, **STATE}), content_type="application/json")

def log(request):
    LOGGED.append(request.path)

module = Module(
    name="streamtest",
    content_handlers={"stream": stream, "broken": broken, "events": events, "file": file,
                      "state": state},
    phase_handlers=[PhaseHandler("log", log)],
)
'''

DATA_SIZE = 3 * 1024 * 1024 + 17


def stream_config(port: int) -> dict:
    config = base_config(port, worker_processes=1, modules=["streamtest"],
                         worker_shutdown_timeout="10s")
    config["http"]["send_timeout"] = "2s"
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, "ok"]},
        {"location": "/stream", "content": "stream"},
        {"location": "/broken", "content": "broken"},
        {"location": "/events", "content": "events"},
        {"location": "/file", "content": "file"},
        {"location": "= /state", "content": "state"},
    ]
    return config


def start_server(prefix) -> Bizzyd:
    modules = prefix / "modules"
    modules.mkdir()
    (modules / "streamtest.py").write_text(STREAM_MODULE)
    (modules / "data.bin").write_bytes(os.urandom(DATA_SIZE))
    port = free_port()
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(modules)})
    b.write_config(stream_config(port))
    return b.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    b = start_server(tmp_path_factory.mktemp("streams"))
    try:
        yield b
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


# -- a strict little client ------------------------------------------------------------

class Conn:
    def __init__(self, server, rcvbuf: int = 0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", server.port))
        self.buf = bytearray()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str, version: str = "1.1", method: str = "GET") -> None:
        self.send(f"{method} {path} HTTP/{version}\r\nHost: t\r\n\r\n".encode())

    def _fill(self) -> bool:
        chunk = self.sock.recv(262144)
        self.buf += chunk
        return bool(chunk)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("closed mid-line")
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf[:] = rest
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed mid-body")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        status = int(self.line().split()[1])
        headers = {}
        while line := self.line():
            name, _, value = line.decode().partition(": ")
            headers[name.lower()] = value
        return status, headers

    def chunks(self):
        """The chunks of a chunked body, up to and including the last (empty) one."""
        while True:
            size = int(self.line(), 16)
            data = self.exactly(size)
            assert self.exactly(2) == b"\r\n"
            yield data
            if not size:
                return

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if head_only:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            return status, headers, b"".join(self.chunks())
        if "content-length" in headers:
            return status, headers, self.exactly(int(headers["content-length"]))
        while self._fill():
            pass
        body, self.buf = bytes(self.buf), bytearray()
        return status, headers, body

    def until_closed(self) -> bytes:
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        return bytes(self.buf)


def state(server) -> dict:
    with Conn(server) as c:
        c.get("/state")
        return json.loads(c.response()[2])


# -- streams -------------------------------------------------------------------------

def test_a_stream_is_chunked_on_http11_and_the_connection_stays_open(server):
    with Conn(server) as c:
        c.get("/stream?n=3")
        status, headers, body = c.response()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers and "connection" not in headers
        assert body == b"chunk0;chunk1;chunk2;"
        c.get("/health")
        assert c.response()[:1] == (200,)


def test_a_stream_on_http10_is_close_delimited(server):
    with Conn(server) as c:
        c.get("/stream?n=3", version="1.0")
        status, headers = c.head()
        assert status == 200 and headers["connection"] == "close"
        assert "transfer-encoding" not in headers and "content-length" not in headers
        assert c.until_closed() == b"chunk0;chunk1;chunk2;"


def test_head_of_a_stream_sends_no_body_and_keeps_the_connection(server):
    with Conn(server) as c:
        c.get("/stream?n=3", method="HEAD")
        status, headers, _ = c.response(head_only=True)
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        c.get("/health")
        assert c.response()[0] == 200


def test_an_error_mid_stream_aborts_the_connection(server):
    with Conn(server) as c:
        c.get("/broken")
        status, headers = c.head()
        assert status == 200
        rest = c.until_closed()
        assert rest.startswith(b"6\r\nfirst;\r\n")
        assert not rest.endswith(b"0\r\n\r\n"), "an aborted stream must not look complete"
    assert "the stream fails on purpose" in server.log()


def test_a_pipelined_request_waits_for_the_stream_before_it(server):
    with Conn(server) as c:
        c.send(b"GET /stream?n=4&ms=50 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /stream?n=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.response()[2] == b"chunk0;chunk1;chunk2;chunk3;"
        assert c.response()[:1] == (200,)
        assert c.response()[2] == b"chunk0;chunk1;"


def test_a_stream_waits_for_the_client_to_read(server):
    with Conn(server, rcvbuf=65536) as c:
        c.get("/stream?n=400&size=65536")
        time.sleep(0.7)  # not reading: the stream must stop at the drain
        produced = state(server)["produced"]
        print(f"chunks produced while the client did not read: {produced} of 400")
        assert produced < 200, f"{produced} chunks produced for a client that does not read"
        status, headers, body = c.response()
        assert len(body) == 400 * 65536
    assert state(server)["produced"] == 400


def test_the_log_phase_runs_when_the_stream_is_done(server):
    with Conn(server) as c:
        c.get("/stream/logged?n=3&ms=300")
        c.head()
        assert "/stream/logged" not in state(server)["logged"]
        assert b"".join(c.chunks()) == b"chunk0;chunk1;chunk2;"
    wait_for(lambda: "/stream/logged" in state(server)["logged"], timeout=5,
             what="the log phase of the stream")


def test_a_client_that_closes_its_side_ends_an_event_stream(server):
    with Conn(server) as c:
        c.get("/events/closed")
        assert c.head()[0] == 200
        assert c.line() == b"9"  # the first event's chunk: "data: 0\n\n"
        c.sock.shutdown(socket.SHUT_WR)  # as a browser closing an EventSource does
        started = time.monotonic()
        c.until_closed()
        assert time.monotonic() - started < 3.0, "the stream outlived its client"
    wait_for(lambda: "/events/closed" in state(server)["logged"], timeout=5,
             what="the log phase of the ended stream")
    server.wait_log("client closed the connection during a stream", timeout=5)


def test_send_timeout_aborts_a_client_that_stops_reading(server):
    with Conn(server, rcvbuf=16384) as c:
        c.get("/stream/endless?n=100000&size=65536")
        time.sleep(4.5)  # send_timeout is 2s, checked by a 1s tick
        started = time.monotonic()
        received = len(c.until_closed())
        assert received < 100000 * 65536
        assert time.monotonic() - started < 5
    server.wait_log("timed out reading the response", timeout=5)


# -- files ---------------------------------------------------------------------------

def data_file(server) -> bytes:
    return (server.prefix / "modules" / "data.bin").read_bytes()


def test_a_file_body_is_sent_whole(server):
    with Conn(server) as c:
        c.get("/file")
        status, headers, body = c.response()
        assert status == 200 and int(headers["content-length"]) == DATA_SIZE
        assert body == data_file(server)
        c.get("/health")
        assert c.response()[0] == 200


def test_a_file_range_is_sent(server):
    with Conn(server) as c:
        c.get("/file?offset=1000&count=300000")
        status, headers, body = c.response()
        assert headers["content-length"] == "300000"
        assert body == data_file(server)[1000:301000]


def test_head_of_a_file_sends_no_body(server):
    with Conn(server) as c:
        c.get("/file", method="HEAD")
        status, headers, _ = c.response(head_only=True)
        assert int(headers["content-length"]) == DATA_SIZE
        c.get("/health")
        assert c.response()[0] == 200


def test_files_are_closed_after_sending(server):
    for method in ("GET", "HEAD", "GET"):
        with Conn(server) as c:
            c.get("/file?count=10", method=method)
            c.response(head_only=method == "HEAD")
    worker = server.workers()[0]
    fd_dir = f"/proc/{worker}/fd"
    open_files = [os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)]
    assert not [f for f in open_files if f.endswith("data.bin")]


def test_pipelined_files_and_streams_keep_their_order(server):
    with Conn(server) as c:
        c.send(b"GET /file?count=100000 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /stream?n=2&ms=20 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /file?offset=5&count=7 HTTP/1.1\r\nHost: t\r\n\r\n")
        data = data_file(server)
        assert c.response()[2] == data[:100000]
        assert c.response()[2] == b"chunk0;chunk1;"
        assert c.response()[2] == data[5:12]


# -- a retiring worker ---------------------------------------------------------------

def test_a_retiring_worker_ends_a_stream_at_a_chunk_boundary(tmp_path):
    b = start_server(tmp_path)
    try:
        with Conn(b) as c:
            c.get("/events")
            status, headers = c.head()
            assert headers["content-type"] == "text/event-stream"
            chunks = c.chunks()
            assert next(chunks) == b"data: 0\n\n"
            b.send(signal.SIGQUIT)
            started = time.monotonic()
            rest = list(chunks)  # ends with the last (empty) chunk: a clean end
            assert rest[-1] == b"" and all(x.startswith(b"data: ") for x in rest[:-1])
            assert c.until_closed() == b""
            assert time.monotonic() - started < 3
        assert b.proc.wait(10) == 0
        assert not b.leftovers()
    finally:
        b.kill_everything()
