"""A content handler's `quick` hook: answered straight from the protocol for GET and
HEAD on a location with no handler or filter; everything else takes the full path.
The log phase runs for requests answered quickly or from a pre-rendered `return`,
for handlers that take the Request and for those that take a log record."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import httpx
import pytest

from bizzyd_proc import base_config, free_port, running, wait_for

QUICK_MODULE = '''
"""Test module: `item` answers quickly for even ids, through the handler for odd."""
import json
import time
from bizzyd.http.phases import LogRecord
from bizzyd.http.response import Response, StaticResponse
from bizzyd.module import Module, PhaseHandler

def item(request):
    return Response(200, "slow %s %s" % (request.method, request.captures["id"]),
                    content_type="text/plain")

def quick(process, location, captures):
    n = int(captures["id"])
    if n % 2:
        return None
    process.state["quick_calls"] = process.state.get("quick_calls", 0) + 1
    return StaticResponse(200, b"quick %d #%d" % (n, process.state["quick_calls"]),
                          "text/plain", b"Server: t\\r\\n")

item.quick = quick

def log(request):
    logged = request.process.state.setdefault("logged", [])
    logged.append([request.method, request.path, request.status,
                   len(request.response.body)])

def record(records):
    state = records[0][-1].state
    state["calls"] = call = state.get("calls", 0) + 1
    for r in map(LogRecord._make, records):
        state.setdefault("records", []).append(
            [r.method, r.path, r.raw_url.decode(), r.status, r.body_bytes,
             r.location.match if r.location else None, r.server.config["server_name"][0],
             r.client, r.version, 0 <= r.duration < 5, abs(r.time - time.time()) < 60,
             dict((k.decode(), v.decode()) for k, v in r.headers).get("X-Tag"), call])

def logged(request):
    key = "records" if request.query == "records" else "logged"
    return Response(200, json.dumps(request.process.state.get(key, [])),
                    content_type="application/json")

module = Module(name="quicktest", content_handlers={"item": item, "logged": logged},
                phase_handlers=[PhaseHandler("log", log),
                                PhaseHandler("log", record, records=True)])
'''


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quick")


@pytest.fixture(scope="module")
def client(prefix):
    folder = prefix / "thirdparty"
    folder.mkdir()
    (folder / "quicktest.py").write_text(textwrap.dedent(QUICK_MODULE))
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["quicktest"])
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, "ok"]},
        {"location": "~ ^/q/(?<id>[0-9]+)$", "content": "item"},
        {"location": "~ ^/guarded/(?<id>[0-9]+)$", "content": "item",
         "access": ["allow 127.0.0.1", "deny all"]},
        {"location": "~ ^/filtered/(?<id>[0-9]+)$", "content": "item",
         "add_header": [["X-Own", "1"]]},
        {"location": "~ ^/logged/(?<id>[0-9]+)$", "content": "item",
         "access_log": {"path": "logs/quick.log", "buffer": 0}},
        {"location": "= /logged", "content": "logged"},
    ]
    with running(Path(prefix), config, port, {"PYTHONPATH": str(folder)}) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{b.port}", timeout=5) as c:
        yield c


def test_quick_answers_get_and_head(client):
    first = client.get("/q/2")
    assert first.status_code == 200 and first.text.startswith("quick 2 #")
    assert first.headers["server"] == "t" and "date" in first.headers
    assert client.get("/q/2").text != first.text  # called again, not cached by the core
    head = client.head("/q/4")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len("quick 4 #3")


def test_none_falls_back_to_the_handler(client):
    assert client.get("/q/3").text == "slow GET 3"


def test_other_methods_and_bodies_take_the_full_path(client):
    assert client.post("/q/2", content=b"x").text == "slow POST 2"
    assert client.request("DELETE", "/q/2").text == "slow DELETE 2"


def test_a_location_with_handlers_never_answers_quickly(client):
    assert client.get("/guarded/2").text == "slow GET 2"
    filtered = client.get("/filtered/2")
    assert filtered.text == "slow GET 2" and filtered.headers["x-own"] == "1"


def test_the_log_phase_runs_for_quick_and_pre_rendered_answers(client):
    assert client.get("/health").text == "ok"  # a `return` location: pre-rendered
    assert client.get("/q/6").text.startswith("quick 6 #")
    assert client.head("/q/8").status_code == 200
    logged = client.get("/logged").json()
    assert ["GET", "/health", 200, 2] in logged
    assert any(entry[:3] == ["HEAD", "/q/8", 200] for entry in logged)
    assert any(entry[:3] == ["GET", "/q/6", 200] for entry in logged)


def test_the_access_log_logs_a_quick_answer(client, prefix):
    answer = client.get("/logged/10?x=1", headers={"User-Agent": "quick-agent"})
    assert answer.text.startswith("quick 10 #")
    log = prefix / "logs" / "quick.log"
    # log records are handed over after the loop iteration that sent the answer
    wait_for(lambda: log.exists() and "quick-agent" in log.read_text(), 5,
             what="the access log line")
    line = log.read_text().splitlines()[-1]
    assert line.endswith(f'"GET /logged/10?x=1 HTTP/1.1" 200 {len(answer.content)} "-" '
                         '"quick-agent"')


def test_a_record_log_handler_gets_every_kind_of_answer(client):
    """`records=True`: the handler gets log records (LOG_FIELDS) for pre-rendered,
    quick, phase-served, HEAD, location-less and rejected requests alike."""
    tag = {"X-Tag": "rec"}
    client.get("/health?a=1", headers=tag)
    quick = client.get("/q/12", headers=tag)
    client.head("/q/14", headers=tag)
    client.post("/q/5", content=b"xy", headers=tag)
    assert client.get("/nowhere", headers=tag).status_code == 404
    records = [r[:-1] for r in client.get("/logged?records").json() if r[-2] == "rec"]
    by_path = {r[1]: r for r in records}
    assert by_path["/health"] == ["GET", "/health", "/health?a=1", 200, 2, "= /health",
                                  "_", "127.0.0.1", "1.1", True, True, "rec"]
    assert by_path["/q/12"][3:5] == [200, len(quick.content)]
    assert by_path["/q/14"][0] == "HEAD" and by_path["/q/14"][4] == 0
    assert by_path["/q/5"][:5] == ["POST", "/q/5", "/q/5", 200, len("slow POST 5")]
    assert by_path["/q/5"][5] == "~ ^/q/(?<id>[0-9]+)$"
    assert by_path["/nowhere"][3] == 404 and by_path["/nowhere"][5] is None
    assert len(records) == 5


def test_a_record_log_handler_gets_a_rejected_request(client):
    with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=5) as s:
        s.sendall(b"GET /q/2 HTTP/1.1\r\nHost: x\r\nX-Tag: rejected\r\n"
                  b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    records = client.get("/logged?records").json()
    rejected = [r for r in records if r[-2] == "rejected"]
    # rejected before routing: no path and no location yet, the raw target is kept
    assert len(rejected) == 1 and rejected[0][:4] == ["GET", "", "/q/2", 400]
    assert rejected[0][4] > 0 and rejected[0][5] is None  # its error page; no location


def test_records_of_one_read_reach_the_handler_in_one_call(client):
    """Five pipelined requests are answered in one read: their records come in one
    call, at the end of that loop iteration."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Tag: pipelined\r\n\r\n"
    with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=5) as s:
        s.sendall(request * 5)
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 5 or not answers.endswith(b"ok"):
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            answers += chunk
    records = client.get("/logged?records").json()
    calls = [r[-1] for r in records if r[-2] == "pipelined"]
    assert len(calls) == 5 and len(set(calls)) == 1


def test_records_is_for_the_log_phase_only():
    from bizzyd.module import PhaseHandler
    with pytest.raises(ValueError, match="records=True is for the log phase"):
        PhaseHandler("access", print, records=True)
