"""The built-in error_page, through real requests: return and static-file targets,
`=CODE` and `=`, redirects, both YAML shapes, inheritance, and what is left alone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from bizzyd.config import ConfigError
from bizzyd.config.load import load_config
from bizzyd_proc import base_config, free_port, running

NOT_FOUND_PAGE = b'{"error": "no such page, sorry"}\n'


def answer(status: int, text: str = "original", **more: object) -> dict:
    return {"return": [status, text], **more}


LOCATIONS = [
    {"location": "= /health", "return": [200, '{"status":"ok"}']},
    {"location": "/errors/", "root": "www"},
    {"location": "= /err/text", "return": [200, "error text"]},
    {"location": "= /err/gone", "return": [410, "gone text"]},
    {"location": "= /err/redirect", "return": [302, "https://example.com/moved"]},
    {"location": "/dyn/"},
    {"location": "/static/", "root": "www", "error_page": {404: "/errors/404.json"}},
    {"location": "/ret/", **answer(404, error_page={404: "/err/text"})},
    {"location": "/override/", **answer(404, error_page={404: "=200 /err/text"})},
    {"location": "/own-status/", **answer(404, error_page={404: "= /err/gone"})},
    {"location": "/url/", **answer(404, error_page={404: "https://example.com/nf"})},
    {"location": "/url301/", **answer(404, error_page={404: "=301 https://example.com/nf"})},
    {"location": "/denied/", **answer(200, access=["deny all"],
                                      error_page={403: "/err/text"})},
    {"location": "/list/", **answer(503, error_page=[[500, 502, 503, "/err/text"]])},
    {"location": "/nginx-string/", **answer(502, error_page=["500 502 =200 /err/text"])},
    {"location": "/unservable/", **answer(404, error_page={404: "/dyn/x"})},
    {"location": "/missing-target/", **answer(404, error_page={404: "/errors/none.json"})},
    {"location": "/redirect-target/", **answer(404, error_page={404: "/err/redirect"})},
    {"location": "/success/", **answer(200, error_page={404: "/err/text"})},
    {"location": "/inherit/", **answer(500)},
    {"location": "/headers/", **answer(404, error_page={404: "/err/text"},
                                       add_header=[["X-Always", "1", "always"]])},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("errors")
    (prefix / "www" / "errors").mkdir(parents=True)
    (prefix / "www" / "errors" / "404.json").write_bytes(NOT_FOUND_PAGE)
    port = free_port()
    config = base_config(port, worker_processes=1)
    config["http"]["error_page"] = {500: "/err/text"}
    config["http"]["servers"][0]["locations"] = LOCATIONS
    with running(prefix, config, port) as b:
        yield b


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
        yield c


def result(client: httpx.Client, path: str) -> tuple[int, str]:
    response = client.get(path)
    return response.status_code, response.text


def test_return_target_keeps_the_original_status(client):
    assert result(client, "/ret/") == (404, "error text")


def test_equals_code_sets_the_status(client):
    assert result(client, "/override/") == (200, "error text")


def test_bare_equals_takes_the_target_status(client):
    assert result(client, "/own-status/") == (410, "gone text")


def test_static_file_target(client):
    response = client.get("/static/nothing-here")
    assert response.status_code == 404
    assert response.content == NOT_FOUND_PAGE
    assert response.headers["content-type"] == "application/json"


def test_url_target_redirects_with_302(client):
    response = client.get("/url/")
    assert (response.status_code, response.headers["location"]) == (302, "https://example.com/nf")


def test_url_target_with_a_3xx_code(client):
    assert client.get("/url301/").status_code == 301


def test_redirecting_target_location_redirects(client):
    response = client.get("/redirect-target/")
    assert (response.status_code, response.headers["location"]) == \
        (302, "https://example.com/moved")


def test_applies_to_errors_of_phase_handlers(client):
    assert result(client, "/denied/") == (403, "error text")


def test_list_shape_with_several_codes(client):
    assert result(client, "/list/") == (503, "error text")


def test_nginx_string_shape(client):
    assert result(client, "/nginx-string/") == (200, "error text")


def test_inherited_from_http(client):
    assert result(client, "/inherit/") == (500, "error text")


def test_success_is_left_alone(client):
    assert result(client, "/success/") == (200, "original")


def test_missing_static_target_keeps_the_original(client):
    assert result(client, "/missing-target/") == (404, "original")


def test_target_without_synchronous_content_keeps_the_original(server, client):
    assert result(client, "/unservable/") == (404, "original")
    server.wait_log("error_page /dyn/x: location '/dyn/' is neither a return nor")


def test_add_header_applies_to_the_error_page(client):
    response = client.get("/headers/")
    assert (response.status_code, response.text) == (404, "error text")
    assert response.headers["x-always"] == "1"


# -- config ---------------------------------------------------------------------------

def load_with(tmp_path: Path, value: object):
    config = base_config(8080)
    config["http"]["error_page"] = value
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path, tmp_path)


@pytest.mark.parametrize("value,words", [
    ({200: "/x"}, "300..599"),
    ({404: "x.html"}, "must be a URI starting with /"),
    ({404: "=999 /x"}, "status 100..599"),
    ({404: "=200 https://example.com/"}, "needs a 3xx"),
    ([[404]], "expected [CODE..., TARGET]"),
    ("404 /x", "expected a mapping"),
])
def test_bad_error_pages_are_config_errors(tmp_path, value, words):
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, value)
    assert info.value.key_path == "http.error_page"
    assert words in str(info.value)


def test_dumped_as_a_mapping(tmp_path):
    config = load_with(tmp_path, [["502", 503, "=503 /down"]])
    dumped = yaml.safe_load(config.dump_yaml())
    assert dumped["http"]["error_page"] == {502: "=503 /down", 503: "=503 /down"}
