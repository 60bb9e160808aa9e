"""The request corpus (after gunicorn's tests/requests): raw requests and what must
happen to them, against a real server whose locations echo what it parsed.

Each case is one file, `requests/valid/NNN.http` or `requests/invalid/NNN.http`:

    # what: Content-Length and Transfer-Encoding together (CL.TE smuggling)
    # rule: RFC 9112 6.1 (a server MAY reject CL with TE, and MUST close)
    # status: 400
    # reason: Transfer-Encoding
    POST /echo HTTP/1.1\\r\\n
    Host: example\\r\\n
    ...

The leading `#` lines are YAML (the expectations); `what` says what the case is and
`rule` which RFC 9110/9112/3986 section or nginx behaviour it follows (every case has
both).  The rest is the request, sent in one write: physical newlines are ignored,
`\\r \\n \\t \\0 \\xHH \\\\` are escapes, and `{{N*text}}` stands for `text` repeated
N times.

Expectations of a valid case: `requests`, a list of what the echo handler must have
seen, in order (method, path, query, version, body, server, `headers` as a subset
with lower-case names, `absent` header names); `continue: true/false` (a 100
Continue came before that response); `closed: true` when the server must close after
the last response (otherwise a follow-up request on the same connection must work).
A request whose method is HEAD is only checked for its status.
Expectations of an invalid case: `status`, `reason` (a substring of the JSON body's
`reason`), `before` (how many good responses come first); the server must close.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from bizzyd_proc import Bizzyd, base_config, free_port

CORPUS = Path(__file__).parent / "requests"
VALID = sorted((CORPUS / "valid").glob("*.http"))
INVALID = sorted((CORPUS / "invalid").glob("*.http"))

ECHO_MODULE = '''
"""Content handlers that answer with what the server parsed."""
import asyncio
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def _seen(request):
    return Response(200, json.dumps({
        "method": request.method, "path": request.path, "query": request.query,
        "version": request.version, "raw_url": request.raw_url.decode("latin-1"),
        "headers": [[k.decode("latin-1").lower(), v.decode("latin-1")]
                    for k, v in request.headers],
        "body": request.body.decode("latin-1"), "server": request.server.names[0],
        "conn": request.conn_id,
    }), content_type="application/json")

async def echo_async(request):
    await asyncio.sleep(0.01)
    return _seen(request)

module = Module(name="corpusecho",
                content_handlers={"echo": _seen, "echo_async": echo_async})
'''


def echo_config(port: int) -> dict:
    """One worker; a default server and `a.example`, both echoing."""
    config = base_config(port, worker_processes=1, modules=["corpusecho"])
    config["http"].update({"client_max_body_size": "1k", "client_max_header_size": "4k",
                           "client_max_request_line": "1k", "client_max_header_line": "1k",
                           "client_max_header_fields": 20, "client_header_timeout": "5s"})
    echo = [{"location": "= /health", "return": [200, "ok"]},
            {"location": "/async", "content": "echo_async"},
            {"location": "/", "content": "echo"}]
    config["http"]["servers"] = [
        {"listen": [f"127.0.0.1:{port}"], "server_name": ["_"], "locations": echo},
        {"listen": [f"127.0.0.1:{port}"], "server_name": ["a.example"], "locations": echo},
    ]
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("corpus")
    modules = prefix / "modules"
    modules.mkdir()
    (modules / "corpusecho.py").write_text(ECHO_MODULE)
    port = free_port()
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(modules)})
    b.write_config(echo_config(port))
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
        assert "Traceback" not in b.log(), b.log()
    finally:
        b.kill_everything()


# -- reading a case ----------------------------------------------------------------

def load_case(path: Path) -> tuple[dict, bytes]:
    lines = path.read_text(encoding="latin-1").splitlines()
    header = [line[1:] for line in lines if line.startswith("#")]
    raw = "".join(line for line in lines if not line.startswith("#"))
    raw = re.sub(r"\{\{(\d+)\*(.*?)\}\}", lambda m: m.group(2) * int(m.group(1)), raw)
    return yaml.safe_load("\n".join(header)) or {}, codecs.escape_decode(raw.encode("latin-1"))[0]


# -- reading responses -----------------------------------------------------------

class Reader:
    """Reads HTTP/1.1 responses off a socket, strictly."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; unread: {bytes(self.buf)[:200]!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf[:] = rest
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes, list[int]]:
        """(status, headers, body, interim statuses seen before it)."""
        interim = []
        while True:
            status_line = self._line()
            m = re.fullmatch(rb"HTTP/1\.1 ([1-5]\d\d) [^\r\n]*", status_line)
            assert m, f"bad status line {status_line!r}"
            status = int(m.group(1))
            headers: dict[str, str] = {}
            while line := self._line():
                name, sep, value = line.decode("latin-1").partition(": ")
                assert sep, f"bad header line {line!r}"
                headers[name.lower()] = value
            if status >= 200:
                break
            interim.append(status)
        if head or status in (204, 304):
            return status, headers, b"", interim
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._exactly(size)
                assert self._exactly(2) == b"\r\n"
            assert self._line() == b""
            return status, headers, body, interim
        return status, headers, self._exactly(int(headers["content-length"])), interim

    def closed(self) -> bool:
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def send(server, data: bytes) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(data)
    return sock, Reader(sock)


# -- the cases ---------------------------------------------------------------------

def test_every_case_says_what_and_which_rule():
    assert len(VALID) + len(INVALID) >= 120
    assert len(VALID) >= 50 and len(INVALID) >= 70
    for path in VALID + INVALID:
        expect, _ = load_case(path)
        for key in ("what", "rule"):
            assert isinstance(expect.get(key), str) and expect[key].strip(), (path, key)


@pytest.mark.parametrize("path", VALID, ids=lambda p: f"valid/{p.stem}")
def test_valid_request(server, path):
    expect, data = load_case(path)
    sock, reader = send(server, data)
    with sock:
        for want in expect["requests"]:
            head = want.get("method") == "HEAD"
            status, headers, body, interim = reader.response(head=head)
            assert status == want.get("status", 200), (expect["what"], body)
            if "continue" in want:
                assert (interim == [100]) == want["continue"], interim
            if head:
                continue
            seen = json.loads(body)
            for key in ("method", "path", "query", "version", "body", "server", "raw_url"):
                if key in want:
                    assert seen[key] == want[key], (expect["what"], key, seen)
            names = [name for name, _ in seen["headers"]]
            for name, value in (want.get("headers") or {}).items():
                assert [v for n, v in seen["headers"] if n == name][0] == value, seen
            for name in want.get("absent", ()):
                assert name not in names, seen
        if expect.get("closed"):
            assert reader.closed(), expect["what"]
        else:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: example\r\n\r\n")
            assert reader.response()[0] == 200, "the connection did not survive"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: f"invalid/{p.stem}")
def test_invalid_request(server, path):
    expect, data = load_case(path)
    sock, reader = send(server, data)
    with sock:
        for _ in range(expect.get("before", 0)):
            assert reader.response()[0] == 200
        status, headers, body, _ = reader.response()
        assert status == expect["status"], (expect["what"], body)
        assert headers["connection"] == "close"
        reason = json.loads(body)["reason"]
        assert expect.get("reason", "").lower() in reason.lower(), (expect["what"], reason)
        assert reader.closed(), expect["what"]
