"""Real clients against a real server: httpx and Debian's curl (keep-alive reuse, HEAD,
chunked uploads, 100-continue, streamed responses, an h2c upgrade we decline)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest

from bizzyd_proc import Bizzyd, base_config, free_port

ECHO_MODULE = '''
import asyncio
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def echo(request):
    return Response(200, json.dumps({
        "method": request.method, "path": request.path, "version": request.version,
        "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers},
        "body": request.body.decode("latin-1"), "conn": request.conn_id,
    }), content_type="application/json")

async def stream(request):
    async def chunks():
        for i in range(5):
            await asyncio.sleep(0.01)
            yield f"part{i};".encode()
    return Response(200, stream=chunks(), content_type="text/plain")

module = Module(name="clientecho", content_handlers={"echo": echo, "stream": stream})
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("clients")
    modules = prefix / "modules"
    modules.mkdir()
    (modules / "clientecho.py").write_text(ECHO_MODULE)
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["clientecho"])
    config["http"]["client_max_body_size"] = "4m"
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, "ok"]},
        {"location": "/stream", "content": "stream"},
        {"location": "/", "content": "echo"},
    ]
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(modules)})
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def url(server, path: str = "/echo") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


# -- httpx ---------------------------------------------------------------------------

def test_httpx_reuses_one_keep_alive_connection(server):
    with httpx.Client(timeout=5) as client:
        conns = {client.get(url(server, f"/echo/{i}")).json()["conn"] for i in range(5)}
    assert len(conns) == 1


def test_httpx_head_has_the_headers_but_no_body(server):
    with httpx.Client(timeout=5) as client:
        response = client.head(url(server))
        assert response.status_code == 200 and response.content == b""
        assert int(response.headers["content-length"]) > 0
        assert client.get(url(server, "/health")).text == "ok"


def test_httpx_uploads_a_chunked_body(server):
    with httpx.Client(timeout=5) as client:
        seen = client.post(url(server), content=iter([b"abc", b"", b"def" * 1000])).json()
    assert seen["headers"]["transfer-encoding"] == "chunked"
    assert seen["body"] == "abc" + "def" * 1000


def test_httpx_reads_a_streamed_response(server):
    with httpx.Client(timeout=5) as client, client.stream("GET", url(server, "/stream")) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert b"".join(r.iter_raw()) == b"".join(b"part%d;" % i for i in range(5))


# -- curl ------------------------------------------------------------------------------

def curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/install-deps)")
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], input=stdin,
                          capture_output=True, timeout=20, check=True)


def test_curl_reuses_the_connection_for_two_urls(server):
    done = curl("-v", "-w", "\n", url(server, "/echo/1"), url(server, "/echo/2"))
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["conn"] == second["conn"]
    assert b"Re-using existing connection" in done.stderr


def test_curl_head(server):
    done = curl("-I", url(server))
    head = done.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n") and "Content-Length: " in head


def test_curl_uploads_stdin_chunked(server):
    done = curl("-T", "-", "-H", "Transfer-Encoding: chunked", url(server, "/echo/up"),
                stdin=b"streamed from stdin\n" * 100)
    seen = json.loads(done.stdout)
    assert seen["method"] == "PUT" and seen["headers"]["transfer-encoding"] == "chunked"
    assert seen["body"] == "streamed from stdin\n" * 100


def test_curl_waits_for_100_continue_and_gets_it_at_once(server, tmp_path):
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * 200_000)
    started = time.monotonic()
    done = curl("-v", "--expect100-timeout", "5", "-H", "Expect: 100-continue",
                "--data-binary", f"@{body}", url(server))
    assert b"< HTTP/1.1 100 Continue" in done.stderr
    assert time.monotonic() - started < 3, "curl waited for its expect100-timeout"
    assert len(json.loads(done.stdout)["body"]) == 200_000


def test_curl_http10(server):
    seen = json.loads(curl("-0", url(server)).stdout)
    assert seen["version"] == "1.0"


def test_curl_h2c_upgrade_is_declined_and_http11_answers(server):
    done = curl("-v", "--http2", url(server))
    assert json.loads(done.stdout)["headers"]["upgrade"] == "h2c"
    assert b"< HTTP/1.1 200 OK" in done.stderr
