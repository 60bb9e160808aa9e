"""Differential fuzzing of the request parser against h11's.

Mutations of valid requests (hypothesis) are fed, in-process, to a connection of a
real worker engine whose only location echoes what it parsed, and to an h11 server
connection.  Each parser's verdict on the first request is `accept` (a whole request
parsed), `refuse` (a 4xx/5xx, or h11's RemoteProtocolError) or `incomplete`.

Properties:
- where h11 refuses and bizzyd accepts, the case must match an entry of ALLOWED, each
  with the reason bizzyd is laxer there (nginx compatibility);
- where both accept, they parsed the same method, target and body (two parsers that
  frame a request differently are how requests are smuggled).

The run is reproducible: it prints its seed, and BIZZYD_FUZZ_SEED=N replays a run
(BIZZYD_FUZZ_EXAMPLES=N for a longer one by hand).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import h11
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bizzyd.http.testing import InProcessWorker, module_worker

SEED = int(os.environ.get("BIZZYD_FUZZ_SEED", "20261204"))
EXAMPLES = int(os.environ.get("BIZZYD_FUZZ_EXAMPLES", "1500"))

SEEDS = [
    b"GET /echo?a=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /echo/a%20b HTTP/1.1\r\nHost: a.example:8080\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 2\r\n\r\nhi",
    b"GET http://a.example/echo HTTP/1.1\r\nHost: b.example\r\n\r\n",
]
# Bytes and lines that sit on the parsers' decisions.
TOKENS = [b"\r", b"\n", b"\r\n", b"\0", b" ", b"\t", b":", b";", b",", b"0", b"f", b"\x7f",
          b"\x07", b"\xc3\xa9", b"\xff", b"/", b"?", b"#", b"%", b"%00", b"_", b"-", b"\"",
          b"[", b"]", b"@", b"..", b"HTTP/1.1", b"1.0", b"chunked", b"Host"]
LINES = [b"Content-Length: 3", b"Content-Length: 0", b"Content-Length: 5", b"Content-Length:",
         b"Content-Length: +3", b"Content-Length: 3, 3", b"Content_Length: 3",
         b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
         b"Transfer-Encoding: chunked, gzip", b"Transfer_Encoding: chunked",
         b"Transfer-Encoding : chunked", b"Host: other", b"Host:", b"Host: a:99999",
         b"Host: [::1]", b"Host: a b", b"Content-Type: a", b"Expect: 100-continue",
         b"Connection: close", b" folded", b"\tfolded", b"X: \x01", b"X\x00Y: 1",
         b"Upgrade: h2c", b"Authorization: a", b"X-Long: " + b"x" * 300]


@st.composite
def mutated(draw: Callable) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "line", "dup", "case"]))
        at = draw(st.integers(0, len(data)))
        if kind == "replace" and data:
            at = min(at, len(data) - 1)
            data[at:at + 1] = draw(st.sampled_from(TOKENS))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "line":
            end = data.find(b"\r\n") + 2
            data[end:end] = draw(st.sampled_from(LINES)) + b"\r\n"
        elif kind == "dup":
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif kind == "case":
            data[at:at + 6] = bytes(data[at:at + 6]).swapcase()
    return bytes(data)


# -- the two verdicts ----------------------------------------------------------------

ECHO = '''
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def echo(request):
    return Response(200, json.dumps({"method": request.method,
        "target": request.raw_url.decode("latin-1"),
        "body": request.body.decode("latin-1")}), content_type="application/json")

module = Module(name="h11echo", content_handlers={"echo": echo})
'''


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with module_worker(tmp_path_factory.mktemp("h11fuzz"), "h11echo", ECHO,
                       [{"location": "/", "content": "echo"}],
                       client_max_body_size="64k") as w:
        yield w


def bizzyd_verdict(worker: InProcessWorker, data: bytes) -> tuple[str, dict | None]:
    conn, transport = worker.connect()
    conn.data_received(data)
    conn.connection_lost(None)
    out = b"".join(transport.written or ()).removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    if not out:
        return "incomplete", None
    status = int(out.split(b" ", 2)[1])
    if status >= 400:
        return "refuse", None
    body = out.split(b"\r\n\r\n", 1)[1]
    length = int(re.search(rb"Content-Length: (\d+)", out).group(1))
    return "accept", json.loads(body[:length])


def h11_verdict(data: bytes) -> tuple[str, dict | None]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    seen: dict = {"body": b""}
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return "incomplete", None
            if isinstance(event, h11.Request):
                seen["method"] = event.method.decode()
                seen["target"] = event.target.decode("latin-1")
            elif isinstance(event, h11.Data):
                seen["body"] += event.data
            elif isinstance(event, h11.EndOfMessage):
                seen["body"] = seen["body"].decode("latin-1")
                return "accept", seen
    except h11.RemoteProtocolError:
        return "refuse", None


# Where bizzyd accepts what h11 refuses, on purpose: (name, test on the bytes, reason).
ALLOWED: list[tuple[str, Callable[[bytes], bool], str]] = [
    ("raw bytes in the target",
     lambda d: not d.split(b"\n", 1)[0].isascii(),
     "nginx serves a target with raw bytes >= 0x80, as their percent-encoded form"),
    ("spaces after the method",
     lambda d: re.match(rb"\s*[A-Z]+  ", d) is not None,
     "nginx (and llhttp) accept several spaces between method and target"),
    ("empty lines before the request line",
     lambda d: d.startswith((b"\r\n", b"\n")),
     "RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request"),
]


def allowed(data: bytes) -> str | None:
    for name, applies, _reason in ALLOWED:
        if applies(data):
            return name
    return None


def normal_target(target: str) -> str:
    """bizzyd's raw_url is the origin-form part; h11 keeps an absolute-form target."""
    return re.sub(r"^https?://[^/?]*", "", target, flags=re.I) or "/"


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated())
def test_bizzyd_is_never_laxer_than_h11_unless_allowed(worker, data):
    mine, parsed = bizzyd_verdict(worker, data)
    theirs, expected = h11_verdict(data)
    context = f"seed {SEED} (BIZZYD_FUZZ_SEED={SEED} to replay): {data!r}"
    if mine == "accept" and theirs == "refuse":
        assert allowed(data), f"bizzyd accepts what h11 refuses: {context}"
    if mine == "accept" and theirs == "accept" and not allowed(data):
        assert parsed["method"] == expected["method"], context
        assert parsed["body"] == expected["body"], context
        assert parsed["target"] == normal_target(expected["target"]), context


def test_the_harness_tells_accept_from_refuse(worker):
    good = SEEDS[1]
    assert bizzyd_verdict(worker, good)[0] == h11_verdict(good)[0] == "accept"
    bad = good.replace(b"Content-Length: 5", b"Content-Length: 5\r\nContent-Length: 6")
    assert bizzyd_verdict(worker, bad)[0] == h11_verdict(bad)[0] == "refuse"
    assert bizzyd_verdict(worker, good[:-2])[0] == h11_verdict(good[:-2])[0] == "incomplete"
