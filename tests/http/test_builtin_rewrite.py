"""The built-in rewrite module (nginx semantics), through real requests: flags, captures,
query strings, redirects, server-level rules, cycles, and config errors."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml

from bizzyd.config import ConfigError
from bizzyd.config.load import load_config
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

SERVER_RULES = [
    ["^/old-api/(.*)$", "/api/$1"],
    ["^/double/(.*)$", "/double/x$1"],
    ["^/gone$", "https://example.org/", "permanent"],
]

LOCATIONS = [
    {"location": "= /health", "return": [200, '{"status":"ok"}']},
    {"location": "/api/", "content": "echo"},
    {"location": "/double/", "content": "echo"},
    {"location": "/r/last/", "rewrite": [["^/r/last/(.*)$", "/api/last/$1", "last"]]},
    {"location": "/r/break/", "content": "echo",
     "rewrite": [["^/r/break/(.*)$", "/r/break-target/$1", "break"],
                 ["^/r/break-target/(.*)$", "/api/never", "last"]]},
    {"location": "/r/chain/", "rewrite": [["^/r/chain/a$", "/r/chain/b"],
                                          ["^/r/chain/b$", "/api/chained"]]},
    {"location": "/r/noflag/", "rewrite": ["^/r/noflag/(.*)$ /api/noflag/$1"]},
    {"location": "/r/redir/", "rewrite": [["^/r/redir/(.*)$", "/new/$1", "redirect"]]},
    {"location": "/r/esc/", "rewrite": [["(?s)^/r/esc/(.*)$", "/new/$1", "redirect"]]},
    {"location": "/r/perm/", "rewrite": [["^/r/perm/(.*)$", "/new/$1", "permanent"]]},
    {"location": "/r/url/", "rewrite": [["^/r/url/(.*)$", "https://example.com/$1"]]},
    {"location": "/r/urlperm/",
     "rewrite": [["^/r/urlperm/(.*)$", "https://example.com/$1", "permanent"]]},
    {"location": "/r/args/", "rewrite": [["^/r/args/(.*)$", "/api/args?id=$1", "last"]]},
    {"location": "/r/drop/", "rewrite": [["^/r/drop/(.*)$", "/api/drop/$1?", "last"]]},
    {"location": "/r/replace/", "rewrite": [["^/r/replace/(.*)$", "/api/r?x=$1?", "last"]]},
    {"location": "/r/named/", "rewrite": [
        ["^/r/named/(?<year>\\d{4})/(?<slug>[a-z-]+)$", "/api/posts/$slug/${year}", "last"]]},
    {"location": "/loop/", "rewrite": [["^/loop/(.*)$", "/loop/$1", "last"]]},
    {"location": "/ret/", "return": [200, "ret"],
     "rewrite": [["^/ret/go$", "/api/went", "last"]]},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("rewrite")
    folder = prefix / "thirdparty"
    folder.mkdir()
    (folder / "echotest.py").write_text(textwrap.dedent(ECHO_MODULE))
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["echotest"])
    config["http"]["servers"][0].update(rewrite=SERVER_RULES, locations=LOCATIONS)
    with running(prefix, config, port, {"PYTHONPATH": str(folder)}) as b:
        yield b


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
        yield c


def echoed(client: httpx.Client, url: str) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


# -- flags ------------------------------------------------------------------------------

def test_last_finds_the_location_again(client):
    data = echoed(client, "/r/last/x")
    assert (data["location"], data["path"]) == ("/api/", "/api/last/x")


def test_break_stays_in_the_location_and_stops_rewriting(client):
    data = echoed(client, "/r/break/x")
    assert (data["location"], data["path"]) == ("/r/break/", "/r/break-target/x")


def test_rules_without_flag_chain_then_find_the_location(client):
    data = echoed(client, "/r/chain/a")
    assert (data["location"], data["path"]) == ("/api/", "/api/chained")


def test_nginx_style_string_rule(client):
    assert echoed(client, "/r/noflag/y")["path"] == "/api/noflag/y"


def test_redirect_flag_answers_302(client):
    response = client.get("/r/redir/a")
    assert response.status_code == 302
    assert response.headers["location"] == "/new/a"


def test_permanent_flag_answers_301(client):
    response = client.get("/r/perm/a")
    assert response.status_code == 301
    assert response.headers["location"] == "/new/a"


def test_absolute_url_replacement_redirects_302(client):
    response = client.get("/r/url/p/q")
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.com/p/q"


def test_absolute_url_with_permanent_answers_301(client):
    response = client.get("/r/urlperm/p")
    assert response.status_code == 301
    assert response.headers["location"] == "https://example.com/p"


def test_rewrite_runs_before_a_return(client):
    assert echoed(client, "/ret/go")["path"] == "/api/went"
    assert client.get("/ret/other").text == "ret"


# -- captures and query strings ---------------------------------------------------------

def test_named_captures_in_the_replacement(client):
    assert echoed(client, "/r/named/2024/hello-world")["path"] == "/api/posts/hello-world/2024"


def test_query_string_is_kept(client):
    assert echoed(client, "/r/last/x?a=1&b=2")["query"] == "a=1&b=2"


def test_replacement_arguments_come_before_the_original_ones(client):
    assert echoed(client, "/r/args/7?a=1")["query"] == "id=7&a=1"


def test_trailing_question_mark_drops_the_query_string(client):
    data = echoed(client, "/r/drop/z?a=1")
    assert (data["path"], data["query"]) == ("/api/drop/z", "")


def test_trailing_question_mark_keeps_only_the_new_arguments(client):
    assert echoed(client, "/r/replace/v?a=1")["query"] == "x=v"


def test_redirect_keeps_the_query_string(client):
    assert client.get("/r/redir/a?q=1").headers["location"] == "/new/a?q=1"


def test_captures_are_escaped_in_a_redirect(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /r/esc/a%20b%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: t\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode()
    assert "\r\nLocation: /new/a%20b%0D%0AX-Injected:%201\r\n" in head
    assert "\r\nX-Injected" not in head


def test_captures_are_escaped_in_new_arguments(client):
    assert echoed(client, "/r/args/a%26b=c")["query"] == "id=a%26b%3Dc"


# -- server level, cycles ---------------------------------------------------------------

def test_server_rules_run_before_the_location_is_chosen(client):
    data = echoed(client, "/old-api/thing")
    assert (data["location"], data["path"]) == ("/api/", "/api/thing")


def test_server_rules_run_once_per_request(client):
    # the location inherits the server's rules; neither set may run twice
    assert echoed(client, "/double/a")["path"] == "/double/xa"


def test_server_rule_can_redirect(client):
    response = client.get("/gone")
    assert (response.status_code, response.headers["location"]) == (301, "https://example.org/")


def test_rewrite_cycle_ends_with_500(server, client):
    assert client.get("/loop/x").status_code == 500
    server.wait_log("rewrite or internal redirection cycle")


# -- config errors ----------------------------------------------------------------------

def config_error(tmp_path: Path, rules: object, where: str = "location") -> ConfigError:
    port = 8080
    config = base_config(port)
    server = config["http"]["servers"][0]
    target = server if where == "server" else server["locations"][1]
    target["rewrite"] = rules
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path, tmp_path)
    return info.value


@pytest.mark.parametrize("rules,words", [
    ([["^/(x", "/y"]], "invalid regular expression"),
    ([["^/(x)$", "/y/$2"]], "$2"),
    ([["^/(?<a>x)$", "/y/$b"]], "$b"),
    ([["^/x$", "/y", "sometimes"]], "flag must be one of"),
    ([["^/x$"]], "a rule is"),
    ([["^/x$", "/a b"]], "spaces"),
    ("^/x$ /y", "expected a list"),
    ([["^/x$", "/caf\u00e9", "redirect"]], "must be ASCII"),
])
def test_bad_rules_are_config_errors(tmp_path, rules, words):
    err = config_error(tmp_path, rules)
    assert err.key_path == "http.servers[0].locations[1].rewrite"
    assert words in str(err)


def test_rewrite_is_not_allowed_in_http(tmp_path):
    config = base_config(8080)
    config["http"]["rewrite"] = [["^/a$", "/b"]]
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="not allowed here"):
        load_config(path, tmp_path)
