"""A content handler's `quick` hook: answered straight from the protocol for GET and
HEAD on a location with no handler or filter; everything else takes the full path.
The log phase runs for requests answered quickly or from a pre-rendered `return`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from bizzyd_proc import base_config, free_port, running

QUICK_MODULE = '''
"""Test module: `item` answers quickly for even ids, through the handler for odd."""
import json
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

def logged(request):
    return Response(200, json.dumps(request.process.state.get("logged", [])),
                    content_type="application/json")

module = Module(name="quicktest", content_handlers={"item": item, "logged": logged},
                phase_handlers=[PhaseHandler("log", log)])
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
    line = log.read_text().splitlines()[-1]
    assert line.endswith(f'"GET /logged/10?x=1 HTTP/1.1" 200 {len(answer.content)} "-" '
                         '"quick-agent"')
