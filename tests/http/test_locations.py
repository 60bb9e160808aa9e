"""Location matching and virtual servers, through real requests: exact, `^~`, longest
prefix, regexes in order (`~`, `~*`), named captures, and server_name selection."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import httpx
import pytest

from bizzyd_proc import base_config, free_port, running

ECHO_MODULE = '''
"""Test module: answers with what the engine made of the request."""
import json
from bizzyd.http.response import Response
from bizzyd.module import Module

def echo(request):
    body = {"location": request.location.match, "path": request.path,
            "query": request.query, "captures": request.captures}
    return Response(200, json.dumps(body), content_type="application/json")

module = Module(name="echotest", content_handlers={"echo": echo})
'''


def echo_module_dir(tmp: Path) -> Path:
    folder = tmp / "thirdparty"
    folder.mkdir(exist_ok=True)
    (folder / "echotest.py").write_text(textwrap.dedent(ECHO_MODULE))
    return folder


def says(text: str) -> dict:
    return {"return": [200, text]}


LOCATIONS = [
    {"location": "= /health", "return": [200, '{"status":"ok"}']},
    {"location": "= /exact", **says("exact")},
    {"location": "/exact", **says("prefix /exact")},
    {"location": "/static/", **says("prefix /static/")},
    {"location": "^~ /static/keep/", **says("caret /static/keep/")},
    {"location": "/static/long/", **says("prefix /static/long/")},
    {"location": "~ \\.png$", **says("regex png")},
    {"location": "~ ^/static/.*\\.(png|gif)$", **says("second regex")},
    {"location": "~* \\.JPG$", **says("regex jpg, any case")},
    {"location": "~ \\.TXT$", **says("regex TXT, exact case")},
    {"location": "~ ^/users/(?<id>\\d+)/posts/(?<post>[a-z]+)$", "content": "echo"},
    {"location": "/api/", "content": "echo"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("locations")
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["echotest"])
    config["http"]["servers"] = [
        {"listen": [f"127.0.0.1:{port}"], "server_name": ["default.test"],
         "locations": LOCATIONS},
        {"listen": [f"127.0.0.1:{port}"], "server_name": ["api.example.com", "api2.test"],
         "locations": [{"location": "/", **says("exact name")}]},
        {"listen": [f"127.0.0.1:{port}"], "server_name": ["*.example.com"],
         "locations": [{"location": "/", **says("wildcard name")}]},
    ]
    env = {"PYTHONPATH": str(echo_module_dir(prefix))}
    with running(prefix, config, port, env) as b:
        yield b


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
        yield c


def served_by(client: httpx.Client, path: str, host: str = "default.test") -> tuple[int, str]:
    response = client.get(path, headers={"Host": host})
    return response.status_code, response.text


# -- locations ----------------------------------------------------------------------

def test_exact_location_matches_only_its_path(client):
    assert served_by(client, "/exact") == (200, "exact")


def test_exact_location_does_not_match_longer_paths(client):
    assert served_by(client, "/exact/more") == (200, "prefix /exact")


def test_longest_prefix_wins(client):
    assert served_by(client, "/static/long/a") == (200, "prefix /static/long/")
    assert served_by(client, "/static/a") == (200, "prefix /static/")


def test_regex_beats_a_plain_prefix(client):
    assert served_by(client, "/static/long/a.png") == (200, "regex png")


def test_caret_prefix_stops_the_regex_search(client):
    assert served_by(client, "/static/keep/a.png") == (200, "caret /static/keep/")


def test_regexes_are_tried_in_config_order(client):
    # both png regexes match; the first in the config wins
    assert served_by(client, "/static/x.png") == (200, "regex png")
    assert served_by(client, "/static/x.gif") == (200, "second regex")


def test_tilde_star_is_case_insensitive(client):
    assert served_by(client, "/photo.jpg") == (200, "regex jpg, any case")
    assert served_by(client, "/photo.JpG") == (200, "regex jpg, any case")


def test_tilde_is_case_sensitive(client):
    assert served_by(client, "/notes.TXT") == (200, "regex TXT, exact case")
    assert served_by(client, "/notes.txt")[0] == 404


def test_no_matching_location_is_404(client):
    status, body = served_by(client, "/nowhere")
    assert status == 404
    assert json.loads(body)["status"] == 404


def test_named_captures_reach_the_handler(client):
    response = client.get("/users/42/posts/draft", headers={"Host": "default.test"})
    data = response.json()
    assert data["location"] == "~ ^/users/(?<id>\\d+)/posts/(?<post>[a-z]+)$"
    assert data["captures"] == {"id": "42", "post": "draft"}


def test_prefix_locations_have_no_captures(client):
    data = client.get("/api/things?x=1", headers={"Host": "default.test"}).json()
    assert data == {"location": "/api/", "path": "/api/things", "query": "x=1", "captures": {}}


def test_matching_uses_the_decoded_normalized_path(client):
    data = client.get("/api/a/../b%2Fc", headers={"Host": "default.test"}).json()
    assert data["path"] == "/api/b/c"


# -- virtual servers ------------------------------------------------------------------

def test_exact_server_name(client):
    assert served_by(client, "/", host="api.example.com") == (200, "exact name")


def test_second_name_of_a_server(client):
    assert served_by(client, "/", host="api2.test") == (200, "exact name")


def test_wildcard_server_name(client):
    assert served_by(client, "/", host="www.example.com") == (200, "wildcard name")
    assert served_by(client, "/", host="a.b.example.com") == (200, "wildcard name")


def test_wildcard_does_not_match_the_bare_domain(client):
    assert served_by(client, "/exact", host="example.com") == (200, "exact")


def test_unknown_host_goes_to_the_default_server(client):
    assert served_by(client, "/exact", host="unknown.test") == (200, "exact")


def test_host_with_a_port(client):
    assert served_by(client, "/", host="api.example.com:8080") == (200, "exact name")


def test_host_is_case_insensitive(client):
    assert served_by(client, "/", host="API.Example.COM") == (200, "exact name")


def test_request_without_host_goes_to_the_default_server(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /exact HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nexact")
