"""A read that is byte for byte the connection's last read, when that was exactly one
complete request without a body, reuses that request's parse (HttpProtocol._replay):
the same answer, without feeding llhttp again.  Anything else is parsed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bizzyd.http.testing import InProcessWorker, module_worker

ECHO = '''
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def echo(request):
    seen = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers]
    request.headers.append((b"x-added", b"by the handler"))  # must not leak to a replay
    return Response(200, json.dumps({"method": request.method, "path": request.path,
        "target": request.raw_url.decode("latin-1"), "headers": seen,
        "body": request.body.decode("latin-1")}), content_type="application/json")

module = Module(name="replayecho", content_handlers={"echo": echo})
'''


class Spy:
    """The connection's parser, counting the reads fed to it."""

    def __init__(self, parser: Any) -> None:
        self.parser, self.fed = parser, 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessWorker]:
    locations = [{"location": "= /fixed", "return": [200, "fixed"]},
                 {"location": "/", "content": "echo"}]
    with module_worker(tmp_path_factory.mktemp("replay"), "replayecho", ECHO,
                       locations) as w:
        yield w


def exchange(worker: InProcessWorker, reads: list[bytes]) -> tuple[list[bytes], int]:
    """Each read's answer on one connection, and how many reads llhttp was fed."""
    conn, transport = worker.connect()
    spy = Spy(conn.parser)
    conn.parser_feed = spy.feed_data
    answers = []
    for data in reads:
        before = len(transport.written)
        conn.data_received(data)
        answers.append(b"".join(transport.written[before:]))
    conn.connection_lost(None)
    return answers, spy.fed


GET = b"GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [
    GET,
    b"GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    b"DELETE /thing HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /à%20k HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
    b"GET http://h/abs HTTP/1.1\r\nHost: h\r\n\r\n",
], ids=["get", "return", "head", "http10", "delete", "raw-utf8", "absolute-form"])
def test_an_identical_read_is_answered_identically_without_parsing(worker, request_bytes):
    answers, fed = exchange(worker, [request_bytes] * 3)
    assert answers[0].startswith(b"HTTP/1.1 200") or answers[0].startswith(b"HTTP/1.0 200")
    assert answers[0] == answers[1] == answers[2]
    assert fed == 1
    if b"/a?" in request_bytes:  # the handler's append to the headers did not leak
        assert answers[1].count(b"x-added") == 0


@pytest.mark.parametrize("reads", [
    [b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"] * 2,
    [b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"] * 2,
    [b"GET /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n"] * 2,
    [b"GET /a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"] * 1,
    [GET + GET] * 2,                                   # two requests in one read
    [GET + GET[:10], GET[10:] + GET[:10], GET[10:]],   # requests across reads
    [GET, GET.replace(b"example.com", b"example.org")],
], ids=["content-length", "chunked", "expect", "upgrade", "pipelined", "split", "other-host"])
def test_other_reads_are_parsed(worker, reads):
    answers, fed = exchange(worker, reads)
    assert fed == len(reads)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers


def test_the_keep_alive_wish_is_the_original_requests(worker):
    """llhttp forgets a message's Connection flags once it is done: a replay must not."""
    close = b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    answers, fed = exchange(worker, [close, close])
    assert b"\r\nConnection: close\r\n" in answers[0] and answers[1] == b""
    old = b"GET /a HTTP/1.0\r\nHost: h\r\n\r\n"  # HTTP/1.0 without keep-alive
    answers, fed = exchange(worker, [old, old])
    assert answers[1] == b"" and fed == 1


CORPUS = sorted((Path(__file__).parent / "requests").glob("*/*"))


def test_every_corpus_case_is_answered_the_same_when_sent_again(worker):
    """The request corpus (valid and invalid cases) sent twice in two reads on one
    connection: a replayed second read gets the first one's answer, byte for byte."""
    from .test_corpus import load_case

    replayed = []
    for path in CORPUS:
        data = load_case(path)[1]
        answers, fed = exchange(worker, [data, data])
        if fed == 1 and answers[1]:
            assert answers[1] == answers[0], path
            replayed.append(path)
    assert len(replayed) >= 50, len(replayed)  # the corpus does exercise replays


def test_a_refused_request_is_never_replayed(worker):
    bad = b"GET /a HTTP/1.1\r\nHost: bad host\r\n\r\n"
    answers, fed = exchange(worker, [bad, bad])
    assert answers[0].startswith(b"HTTP/1.1 400") and answers[1] == b""
    assert fed == 1  # the first refusal closed the connection: the second read is dropped
    conn, _ = worker.connect()
    conn.data_received(bad)
    assert conn.replay is None and conn.replay_data == b""


@pytest.mark.parametrize(("request_bytes", "status", "closes"), [
    (b"GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n", b"200", False),
    (b"\r\nGET /fixed HTTP/1.1\r\nHost: h\r\n\r\n", b"200", False),
    (b"\r\n\r\nGET /fixed HTTP/1.1\r\n\r\n", b"400", True),  # 1.1 without Host
    (b"\r\nGET /fixed HTTP/1.0\r\n\r\n", b"200", True),
    (b"GET /fixed HTTP/1.0\r\nX: a HTTP/1.1\r\n\r\n", b"200", True),
    (b"POST /fixed HTTP/1.0\r\nX: GET /fixed HTTP/1.1\r\n\r\n", b"200", True),
], ids=["plain", "crlf-1.1", "crlf-1.1-no-host", "crlf-1.0", "1.1-in-a-field",
        "request-line-in-a-field"])
def test_the_version_is_the_request_lines(worker, request_bytes, status, closes):
    """The request line's version, also after empty lines and with a header field that
    looks like a request line: HTTP/1.1 needs a Host and keeps the connection open,
    HTTP/1.0 neither."""
    (answer,), _ = exchange(worker, [request_bytes])
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert (b"\r\nConnection: close\r\n" in answer) == closes, answer


def test_a_fast_answer_follows_the_clock_and_is_counted(worker):
    """A `return` location's keep-alive answer is kept per connection while the Date
    line is unchanged: a tick with a new Date changes the next answer, parsed or
    replayed, and every answer is counted in the location's stats (2xx and the
    first histogram bucket)."""
    from bizzyd.stats import HIST

    fixed = b"GET /fixed HTTP/1.1\r\nHost: h\r\n\r\n"
    other = b"GET /fixed HTTP/1.1\r\nHost: h\r\nX-N: 1\r\n\r\n"
    engine = worker.engine
    loc = next(loc for loc in engine.locations if loc.static is not None)
    before = list(loc.stats)
    conn, transport = worker.connect()
    answers = []
    for i, data in enumerate([fixed, fixed, other, fixed, fixed, other]):
        if i == 3:  # what the engine's tick does when the second changes
            engine.date = engine.clock.date = b"Date: Thu, 01 Jan 2037 00:00:00 GMT\r\n"
        written = len(transport.written)
        conn.data_received(data)
        answers.append(b"".join(transport.written[written:]))
    conn.connection_lost(None)
    engine._tick()
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"fixed") for a in answers)
    assert len(set(answers[:3])) == 1 and len(set(answers[3:])) == 1
    assert b"2037" not in answers[2] and b"\r\nDate: Thu, 01 Jan 2037 00:00:00 GMT\r\n" \
        in answers[3]
    assert loc.stats[1] - before[1] == 6 and loc.stats[HIST] - before[HIST] == 6
