"""The built-in add_header, through real requests: which statuses get the headers,
`always`, both YAML shapes, and nginx's inheritance (a level that sets it replaces)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from bizzyd.config import ConfigError
from bizzyd.config.load import load_config
from bizzyd_proc import base_config, free_port, running

LOCATIONS = [
    {"location": "= /health", "return": [200, '{"status":"ok"}']},
    {"location": "/inherit/", "return": [200, "inherited"]},
    {"location": "/own/", "return": [200, "own"],
     "add_header": [["X-Own", "1"], ["X-Always", "yes", "always"]]},
    {"location": "/own-404/", "return": [404, "missing"],
     "add_header": [["X-Own", "1"], ["X-Always", "yes", "always"]]},
    {"location": "/redirect/", "return": [301, "https://example.com/"],
     "add_header": [["X-Own", "1"]]},
    {"location": "/mapping/", "return": [200, "mapped"],
     "add_header": {"X-Frame-Options": "DENY", "X-Number": 7}},
    {"location": "/repeat/", "return": [200, "twice"],
     "add_header": [["Link", "</a>"], ["Link", "</b>"]]},
    {"location": "/empty/", "return": [200, "empty"], "add_header": [["X-Empty", ""]]},
    {"location": "/", "return": [204]},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("headers")
    port = free_port()
    config = base_config(port, worker_processes=1)
    config["http"]["add_header"] = [["X-Http", "level"]]
    config["http"]["servers"][0].update(add_header=[["X-Server", "s"]], locations=LOCATIONS)
    with running(prefix, config, port) as b:
        yield b


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
        yield c


def test_location_inherits_the_server_headers(client):
    response = client.get("/inherit/")
    assert (response.status_code, response.text) == (200, "inherited")
    assert response.headers["x-server"] == "s"


def test_server_level_replaces_the_http_level(client):
    assert "x-http" not in client.get("/inherit/").headers


def test_location_level_replaces_the_inherited_list(client):
    headers = client.get("/own/").headers
    assert headers["x-own"] == "1" and headers["x-always"] == "yes"
    assert "x-server" not in headers


def test_headers_are_added_to_204(client):
    assert client.get("/anything").headers["x-server"] == "s"


def test_headers_are_added_to_redirects(client):
    response = client.get("/redirect/")
    assert response.status_code == 301
    assert response.headers["x-own"] == "1"


def test_error_status_gets_only_always_headers(client):
    response = client.get("/own-404/")
    assert response.status_code == 404
    assert response.headers["x-always"] == "yes"
    assert "x-own" not in response.headers


def test_mapping_shape(client):
    headers = client.get("/mapping/").headers
    assert headers["x-frame-options"] == "DENY" and headers["x-number"] == "7"


def test_a_name_can_be_added_twice(client):
    assert client.get("/repeat/").headers.get_list("link") == ["</a>", "</b>"]


def test_empty_value_adds_nothing(client):
    assert "x-empty" not in client.get("/empty/").headers


def test_body_is_unchanged(client):
    response = client.get("/own/")
    assert response.text == "own" and response.headers["content-length"] == "3"


def test_plain_return_location_keeps_the_fast_path(tmp_path):
    from bizzyd.http.engine import build_router
    config = base_config(8080)
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config))
    router = build_router(load_config(path, tmp_path))
    assert all(loc.fast for loc in router.default.locations)


@pytest.mark.parametrize("value,words", [
    ([["Bad Name", "x"]], "not an HTTP token"),
    ([["X-A", "a\r\nX-B: b"]], "control characters"),
    ([["X-A", "b", "sometimes"]], "expected [NAME, VALUE]"),
    ("X-A: b", "expected a list"),
])
def test_bad_headers_are_config_errors(tmp_path: Path, value, words):
    config = base_config(8080)
    config["http"]["add_header"] = value
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path, tmp_path)
    assert info.value.key_path == "http.add_header"
    assert words in str(info.value)
