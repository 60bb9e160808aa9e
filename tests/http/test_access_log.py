"""The access log over real sockets: exact lines (combined, json, custom), escaping,
buffering and the flush interval, USR1 reopen, `off`, the flush on exit, and requests
that have no location or were rejected."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port, wait_for

MODULE = "bizzyd.http.builtin.access_log"
LOG_FORMATS = {
    "custom": "$request_method $uri $args $status $http_x_custom $server_name $host",
    "ua_json": {"template": '{"ua":"$http_user_agent","uri":"$uri"}', "escape": "json"},
}
TIME_LOCAL = re.compile(r"\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]")


def unbuffered(path: str, **extra: object) -> dict:
    return {"path": path, "buffer": 0, **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    config = base_config(port, worker_processes=1, modules=[])
    config["http"]["log_format"] = LOG_FORMATS
    config["http"]["servers"][0].update({
        "server_name": ["test.example"],
        "access_log": unbuffered("logs/server.log"),
        "locations": [
            {"location": "= /health", "return": [200, '{"status":"ok"}'], "access_log": "off"},
            {"location": "/combined/", "return": [200, "hello"],
             "access_log": unbuffered("logs/combined.log")},
            {"location": "/json/", "return": [200, "hello"],
             "access_log": unbuffered("logs/json.log", format="json")},
            {"location": "/custom/", "return": [200, "hello"],
             "access_log": unbuffered("logs/custom.log", format="custom")},
            {"location": "/ua/", "return": [200, "hello"],
             "access_log": unbuffered("logs/ua.log", format="ua_json")},
            {"location": "/both/", "return": [200, "hello"],
             "access_log": [unbuffered("logs/both-a.log"),
                            unbuffered("logs/both-b.log", format="json")]},
            {"location": "/buffered/", "return": [200, "hello"],
             "access_log": {"path": "logs/buffered.log", "flush": "1s"}},
            {"location": "/batch/", "return": [200, "hello"],
             "access_log": {"path": "logs/batch.log", "buffer": 400, "flush": "1h"}},
            {"location": "/rotate/", "return": [200, "hello"],
             "access_log": unbuffered("logs/rotate.log")},
            {"location": "/off/", "return": [200, "hello"], "access_log": False},
            {"location": "/unknown/", "return": [200, "hello"],
             "access_log": unbuffered("logs/unknown.log", format="nosuch")},
            {"location": "/elsewhere", "return": [404, "nope"]},
        ],
    })
    b = Bizzyd(tmp_path_factory.mktemp("access_log"), port)
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def fetch(port: int, path: str, headers: dict[str, str | bytes] | None = None,
          method: str = "GET") -> int:
    """One request with exactly these headers (plus Host); its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "t")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def lines(server: Bizzyd, name: str) -> list[str]:
    path = server.prefix / "logs" / name
    return path.read_text().splitlines() if path.exists() else []


def line_with(server: Bizzyd, name: str, marker: str) -> str:
    """The line of a log file that contains `marker`, once it is written."""
    found = wait_for(lambda: [line for line in lines(server, name) if marker in line],
                     timeout=5, what=f"a line with {marker!r} in {name}")
    return found[-1]


def test_combined_line_is_nginx_combined(server):
    fetch(server.port, "/combined/x?a=1&b=%20",
          {"Referer": "https://ref.example/", "User-Agent": "test-agent/1.0"})
    line = line_with(server, "combined.log", "/combined/x")
    stamp = TIME_LOCAL.search(line).group(1)
    assert line == (f'127.0.0.1 - - [{stamp}] "GET /combined/x?a=1&b=%20 HTTP/1.1" 200 5 '
                    '"https://ref.example/" "test-agent/1.0"')
    logged = datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z")
    assert abs(logged.timestamp() - time.time()) < 5


def test_remote_user_comes_from_basic_auth(server):
    token = base64.b64encode(b"alice:secret").decode()
    fetch(server.port, "/combined/user", {"Authorization": f"Basic {token}"})
    assert line_with(server, "combined.log", "/combined/user").startswith("127.0.0.1 - alice [")


def test_status_and_body_size_of_the_response_are_logged(server):
    fetch(server.port, "/combined/head", method="HEAD")
    line = line_with(server, "combined.log", "/combined/head")
    assert line.endswith('"HEAD /combined/head HTTP/1.1" 200 0 "-" "-"')


def test_client_controlled_values_are_escaped_in_combined(server):
    fetch(server.port, "/custom/esc", {"X-Custom": 'say "hi" \\ caf\u00e9'.encode()})
    assert line_with(server, "custom.log", "/custom/esc") == \
        "GET /custom/esc - 200 say \\x22hi\\x22 \\x5C caf\\xC3\\xA9 test.example t"


def test_json_line_has_every_field(server):
    fetch(server.port, "/json/x?a=1", {"User-Agent": "test-agent/1.0"})
    record = json.loads(line_with(server, "json.log", "/json/x"))
    time_iso = record.pop("time_iso8601")
    assert datetime.fromisoformat(time_iso).tzinfo is not None
    assert TIME_LOCAL.fullmatch(f"[{record.pop('time_local')}]")
    assert isinstance(record.pop("connection"), int)
    assert 0 <= record.pop("request_time") < 5
    assert record.pop("pid") in server.workers()
    assert record == {
        "remote_addr": "127.0.0.1", "server_name": "test.example",
        "request": "GET /json/x?a=1 HTTP/1.1", "request_method": "GET", "uri": "/json/x",
        "args": "a=1", "status": 200, "body_bytes_sent": 5, "http_referer": "",
        "http_user_agent": "test-agent/1.0",
    }


def test_json_escaping_keeps_the_line_valid_json(server):
    agent = 'say "hi" \\ caf\u00e9'
    fetch(server.port, "/ua/caf%C3%A9", {"User-Agent": agent.encode()})
    assert json.loads(line_with(server, "ua.log", "/ua/")) == {"ua": agent, "uri": "/ua/caf\u00e9"}


def test_custom_format_renders_its_variables(server):
    fetch(server.port, "/custom/a%20b", {"X-Custom": "v1"})
    assert line_with(server, "custom.log", "/custom/a b") == \
        "GET /custom/a b - 200 v1 test.example t"


def test_a_list_logs_to_every_target(server):
    fetch(server.port, "/both/x")
    assert '"GET /both/x HTTP/1.1" 200 5' in line_with(server, "both-a.log", "/both/x")
    assert json.loads(line_with(server, "both-b.log", "/both/x"))["uri"] == "/both/x"


def test_off_location_is_not_logged_while_its_server_is(server):
    fetch(server.port, "/off/x")
    fetch(server.port, "/elsewhere")
    assert '"GET /elsewhere HTTP/1.1" 404 4' in line_with(server, "server.log", "/elsewhere")
    assert not any("/off/" in line for line in lines(server, "server.log"))
    assert not any("/health" in line for line in lines(server, "server.log"))


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(65536)


def test_a_request_with_no_location_is_logged_by_its_server(server):
    assert fetch(server.port, "/nowhere/x") == 404
    assert re.search(r'"GET /nowhere/x HTTP/1\.1" 404 \d+ "-" "-"$',
                     line_with(server, "server.log", "/nowhere/x"))


def test_a_rejected_request_is_logged_with_what_was_read(server):
    answer = raw_exchange(server.port, b"GET /rejected HTTP/1.1\r\nHost: t\r\n"
                                       b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert " 400 " in line_with(server, "server.log", "/rejected")
    big = raw_exchange(server.port, b"POST /combined/big HTTP/1.1\r\nHost: t\r\n"
                                    b"Content-Length: 999999999\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413 ")
    line = line_with(server, "combined.log", "/combined/big")  # routed: its location's log
    assert re.search(r'"POST /combined/big HTTP/1\.1" 413 \d+ ', line)


def test_buffered_lines_are_written_after_the_flush_interval(server):
    started = time.monotonic()
    fetch(server.port, "/buffered/x")
    time.sleep(0.3)
    assert lines(server, "buffered.log") == []
    line_with(server, "buffered.log", "/buffered/x")
    assert 0.8 < time.monotonic() - started < 2.5


def test_a_full_buffer_is_written_at_once(server):
    for i in range(4):  # 81-byte lines: four fit in 400 bytes
        fetch(server.port, f"/batch/{i}")
    time.sleep(0.3)
    assert lines(server, "batch.log") == []
    fetch(server.port, "/batch/4")
    wait_for(lambda: len(lines(server, "batch.log")) == 5, timeout=5, what="five lines")


def test_usr1_reopens_the_file_after_logrotate_renamed_it(server):
    fetch(server.port, "/rotate/before")
    line_with(server, "rotate.log", "/rotate/before")
    log = server.prefix / "logs" / "rotate.log"
    log.rename(log.with_name("rotate.log.1"))
    server.send(signal.SIGUSR1)
    wait_for(log.exists, timeout=5, what="a new rotate.log")  # made by the master

    def worker_reopened() -> bool:  # the worker handles USR1 a moment later
        fetch(server.port, "/rotate/after")
        time.sleep(0.05)
        return any("/rotate/after" in line for line in lines(server, "rotate.log"))

    wait_for(worker_reopened, timeout=10, what="the worker to write to the new file")
    old = lines(server, "rotate.log.1")
    assert "/rotate/before" in old[0]
    assert all("/rotate/before" not in line for line in lines(server, "rotate.log"))


def test_buffered_lines_are_written_when_the_worker_exits(tmp_path: Path, port):
    config = base_config(port, worker_processes=1, modules=[])
    config["http"]["access_log"] = {"path": "logs/access.log", "flush": "1h"}
    config["http"]["servers"][0]["locations"][0]["access_log"] = "off"
    b = Bizzyd(tmp_path, port)
    b.write_config(config)
    try:
        b.start()
        for i in range(3):
            assert fetch(port, f"/page/{i}") == 404
        time.sleep(0.3)
        assert lines(b, "access.log") == []
        assert b.stop(signal.SIGQUIT) == 0
        assert [line.split('"')[1] for line in lines(b, "access.log")] == [
            f"GET /page/{i} HTTP/1.1" for i in range(3)]
    finally:
        b.kill_everything()


ENDLESS_MODULE = """
import asyncio
from bizzyd.http.response import Response
from bizzyd.module import Module

async def forever():
    while True:
        yield b"tick\\n"
        await asyncio.sleep(0.05)

def endless(request):
    return Response(200, stream=forever(), content_type="text/plain")

module = Module(name="endless", content_handlers={"endless": endless})
"""


def test_a_fast_stop_logs_an_open_stream_without_errors(tmp_path: Path, port):
    """TERM while a response streams: the stream ends, its line is written, and the
    error log has no traceback (the log phase ran before the logs were closed)."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "endless.py").write_text(ENDLESS_MODULE)
    config = base_config(port, worker_processes=1, modules=["endless"])
    config["http"]["access_log"] = {"path": "logs/access.log", "flush": "1h"}
    config["http"]["servers"][0]["locations"].insert(
        0, {"location": "= /endless", "content": "endless"})
    b = Bizzyd(tmp_path, port, {"PYTHONPATH": str(folder)})
    b.write_config(config)
    try:
        b.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/endless")
        response = conn.getresponse()
        assert response.status == 200 and response.readline() == b"tick\n"
        assert b.stop(signal.SIGTERM) == 0
        conn.close()
        assert any('"GET /endless HTTP/1.1" 200' in line for line in lines(b, "access.log"))
        assert "Traceback" not in b.log() and "KeyError" not in b.log()
    finally:
        b.kill_everything()


def test_unknown_format_name_is_reported_and_combined_is_used(server):
    fetch(server.port, "/unknown/x")
    line = line_with(server, "unknown.log", "/unknown/")
    assert line.endswith('"GET /unknown/x HTTP/1.1" 200 5 "-" "-"')
    assert "unknown log_format 'nosuch', using combined" in server.log()


def test_unknown_variable_is_a_config_error_with_its_line(tmp_path: Path, port):
    config = base_config(port, modules=[])
    config["http"]["log_format"] = {"broken": "$remote_addr $no_such_thing"}
    b = Bizzyd(tmp_path, port)
    b.write_config(config)
    result = subprocess.run(b.command("-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "bizzyd.yaml:" in result.stderr
    assert "http.log_format: log_format 'broken': unknown variable $no_such_thing" \
        in result.stderr
