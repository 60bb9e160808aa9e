"""The built-in static module, through real requests: root, alias, index, try_files,
ETag/Last-Modified and 304, Range (206/416), Content-Type, and paths that must not
escape the root."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
import yaml

from bizzyd.config import ConfigError
from bizzyd.config.load import load_config
from bizzyd_proc import base_config, free_port, running

TEN = b"0123456789"
BIG_SIZE = 5 * 1024 * 1024 + 123
MTIME = 1_700_000_000


def big_content() -> bytes:
    return hashlib.sha256(b"seed").digest() * (BIG_SIZE // 32) + b"x" * (BIG_SIZE % 32)


def make_tree(prefix: Path) -> None:
    files = {
        "www/index.html": b"<h1>home</h1>\n",
        "www/ten.txt": TEN,
        "www/data.json": b'{"a": 1}',
        "www/blob.unknownext": b"?",
        "www/empty.txt": b"",
        "www/docs/index.html": b"docs index\n",
        "www/docs/page.html": b"docs page\n",
        "www/noindex/file.txt": b"x",
        "www/spa/index.html": b"spa shell\n",
        "www/spa/real.txt": b"real file\n",
        "www/fallback.html": b"fallback\n",
        "www/secret-sibling/file.txt": b"must not leak\n",
        "images/logo.png": b"\x89PNG fake",
        "images-outside.txt": b"must not leak either\n",
        "outside/linked.txt": b"through a symlink\n",
    }
    for name, data in files.items():
        path = prefix / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.utime(prefix / "www" / "ten.txt", (MTIME, MTIME))
    (prefix / "www" / "big.bin").write_bytes(big_content())
    (prefix / "www" / "link.txt").symlink_to(prefix / "outside" / "linked.txt")
    os.mkfifo(prefix / "www" / "fifo")


LOCATIONS = [
    {"location": "= /health", "return": [200, '{"status":"ok"}']},
    {"location": "/", "root": "www"},
    {"location": "/img/", "alias": "images/"},
    {"location": "/imgs", "alias": "images/"},  # the classic "no trailing slash" trap
    {"location": "~ ^/photo/(?<name>[a-z]+)\\.png$", "alias": "images/$name.png"},
    {"location": "/spa/", "root": "www", "try_files": ["$uri", "$uri/", "/spa/index.html"]},
    {"location": "/strict/", "root": "www", "try_files": ["$uri", "=404"]},
    {"location": "/tf-dir/", "root": "www", "try_files": ["$uri/", "/fallback.html"]},
    {"location": "/other-index/", "alias": "www/docs/", "index": ["missing.html", "page.html"]},
    {"location": "/typed/", "alias": "www/", "default_type": "application/octet-stream"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("static")
    make_tree(prefix)
    port = free_port()
    config = base_config(port, worker_processes=1)
    config["http"]["servers"][0]["locations"] = LOCATIONS
    with running(prefix, config, port) as b:
        yield b


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield c


def raw_get(server, target: str) -> tuple[int, bytes]:
    """A request with the target exactly as written (no client-side normalizing)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- files and types --------------------------------------------------------------------

def test_root_serves_a_file(client):
    response = client.get("/ten.txt")
    assert (response.status_code, response.content) == (200, TEN)
    assert response.headers["content-length"] == "10"


def test_content_type_from_the_extension(client):
    assert client.get("/ten.txt").headers["content-type"] == "text/plain"
    assert client.get("/data.json").headers["content-type"] == "application/json"


def test_unknown_extension_gets_default_type(client):
    assert client.get("/blob.unknownext").headers["content-type"] == "text/plain"
    assert client.get("/typed/blob.unknownext").headers["content-type"] == \
        "application/octet-stream"


def test_empty_file(client):
    response = client.get("/empty.txt")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == "0"


def test_big_file_is_sent_whole(client):
    response = client.get("/big.bin")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == BIG_SIZE
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(big_content()).digest()


def test_head_sends_headers_only(client):
    response = client.head("/ten.txt")
    assert response.status_code == 200
    assert response.headers["content-length"] == "10" and response.content == b""


def test_head_then_get_on_one_connection(client):
    assert client.head("/big.bin").status_code == 200
    assert client.get("/ten.txt").content == TEN


def test_post_is_not_allowed(client):
    response = client.post("/ten.txt", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_missing_file_is_404(client):
    assert client.get("/nope.txt").status_code == 404


def test_fifo_is_404_without_blocking(client):
    started = time.monotonic()
    assert client.get("/fifo").status_code == 404
    assert time.monotonic() - started < 2


def test_symlink_inside_the_root_is_followed(client):
    assert client.get("/link.txt").content == b"through a symlink\n"


# -- validators -------------------------------------------------------------------------

def test_etag_and_last_modified(client):
    headers = client.get("/ten.txt").headers
    assert headers["etag"] == f'"{MTIME:x}-a"'
    assert headers["last-modified"] == formatdate(MTIME, usegmt=True)
    assert headers["accept-ranges"] == "bytes"


def test_if_none_match_gives_304(client):
    response = client.get("/ten.txt", headers={"If-None-Match": f'"{MTIME:x}-a"'})
    assert (response.status_code, response.content) == (304, b"")
    assert response.headers["etag"] == f'"{MTIME:x}-a"'
    assert "content-length" not in response.headers


def test_if_none_match_in_a_list_and_weak(client):
    tags = f'"other", W/"{MTIME:x}-a"'
    assert client.get("/ten.txt", headers={"If-None-Match": tags}).status_code == 304


def test_if_none_match_other_tag_gives_200(client):
    response = client.get("/ten.txt", headers={"If-None-Match": '"other"'})
    assert (response.status_code, response.content) == (200, TEN)


def test_if_modified_since_gives_304(client):
    since = formatdate(MTIME, usegmt=True)
    assert client.get("/ten.txt", headers={"If-Modified-Since": since}).status_code == 304


def test_if_modified_since_older_gives_200(client):
    since = formatdate(MTIME - 60, usegmt=True)
    assert client.get("/ten.txt", headers={"If-Modified-Since": since}).status_code == 200


def test_if_none_match_takes_precedence(client):
    headers = {"If-None-Match": '"other"', "If-Modified-Since": formatdate(MTIME, usegmt=True)}
    assert client.get("/ten.txt", headers=headers).status_code == 200


# -- ranges -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec,body,content_range", [
    ("bytes=2-4", b"234", "bytes 2-4/10"),
    ("bytes=7-", b"789", "bytes 7-9/10"),
    ("bytes=-3", b"789", "bytes 7-9/10"),
    ("bytes=8-100", b"89", "bytes 8-9/10"),
    ("bytes=-100", TEN, "bytes 0-9/10"),
])
def test_single_range_gives_206(client, spec, body, content_range):
    response = client.get("/ten.txt", headers={"Range": spec})
    assert (response.status_code, response.content) == (206, body)
    assert response.headers["content-range"] == content_range
    assert response.headers["content-length"] == str(len(body))


@pytest.mark.parametrize("spec", ["bytes=10-", "bytes=50-60", "bytes=-0"])
def test_unsatisfiable_range_gives_416(client, spec):
    response = client.get("/ten.txt", headers={"Range": spec})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"


@pytest.mark.parametrize("spec", ["bytes=0-1,4-5", "bytes=5-2", "items=0-1", "bytes=x-"])
def test_several_or_invalid_ranges_give_the_whole_file(client, spec):
    response = client.get("/ten.txt", headers={"Range": spec})
    assert (response.status_code, response.content) == (200, TEN)


def test_range_in_a_big_file(client):
    start = BIG_SIZE - 1000
    response = client.get("/big.bin", headers={"Range": f"bytes={start}-"})
    assert response.status_code == 206
    assert response.content == big_content()[start:]


def test_if_range_with_the_current_etag_honours_the_range(client):
    headers = {"Range": "bytes=0-1", "If-Range": f'"{MTIME:x}-a"'}
    assert client.get("/ten.txt", headers=headers).status_code == 206


def test_if_range_with_an_old_validator_sends_the_whole_file(client):
    headers = {"Range": "bytes=0-1", "If-Range": '"old"'}
    response = client.get("/ten.txt", headers=headers)
    assert (response.status_code, response.content) == (200, TEN)


# -- directories and index --------------------------------------------------------------

def test_index_file_for_a_directory(client):
    response = client.get("/")
    assert (response.status_code, response.text) == (200, "<h1>home</h1>\n")
    assert response.headers["content-type"] == "text/html"


def test_index_in_a_subdirectory(client):
    assert client.get("/docs/").text == "docs index\n"


def test_directory_without_slash_redirects(client):
    response = client.get("/docs?x=1")
    assert (response.status_code, response.headers["location"]) == (301, "/docs/?x=1")


def test_directory_without_index_is_403(client):
    assert client.get("/noindex/").status_code == 403


def test_missing_directory_is_404(client):
    assert client.get("/nodir/").status_code == 404


def test_index_names_are_tried_in_order(client):
    assert client.get("/other-index/").text == "docs page\n"


# -- alias ------------------------------------------------------------------------------

def test_alias_replaces_the_location_prefix(client):
    assert client.get("/img/logo.png").content == b"\x89PNG fake"
    assert client.get("/img/logo.png").headers["content-type"] == "image/png"


def test_alias_in_a_regex_location_uses_captures(client):
    assert client.get("/photo/logo.png").content == b"\x89PNG fake"


def test_alias_cannot_be_escaped_without_a_trailing_slash(server):
    assert raw_get(server, "/imgs/logo.png") == (200, b"\x89PNG fake")
    assert raw_get(server, "/imgs../images-outside.txt")[0] == 404


# -- escaping the root ------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/../images-outside.txt", "/%2e%2e/images-outside.txt", "/docs/../../images-outside.txt",
    "/%2E%2E%2Fimages-outside.txt",
])
def test_paths_above_the_root_are_refused(server, target):
    status, body = raw_get(server, target)
    assert status in (400, 404)
    assert b"leak" not in body


def test_dot_segments_inside_the_root_resolve(server):
    assert raw_get(server, "/docs/../ten.txt") == (200, TEN)


# -- try_files --------------------------------------------------------------------------

def test_try_files_serves_an_existing_file(client):
    assert client.get("/spa/real.txt").text == "real file\n"


def test_try_files_falls_back_to_the_last_uri(client):
    response = client.get("/spa/some/client/route")
    assert (response.status_code, response.text) == (200, "spa shell\n")


def test_try_files_directory_entry_uses_the_index(client):
    assert client.get("/spa/").text == "spa shell\n"


def test_try_files_code_fallback(client):
    assert client.get("/strict/missing").status_code == 404


def test_try_files_directory_entry_needs_a_directory(client):
    response = client.get("/tf-dir/nothing")
    assert (response.status_code, response.text) == (200, "fallback\n")


# -- config -----------------------------------------------------------------------------

def load_with(tmp_path: Path, **location: object):
    config = base_config(8080)
    config["http"]["servers"][0]["locations"].append({"location": "/x/", **location})
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path, tmp_path)


@pytest.mark.parametrize("value,words", [
    (["$uri"], "at least two entries"),
    (["$uri", "=abc"], "=CODE"),
    (["$uri", "fallback.html"], "URI starting with /"),
])
def test_bad_try_files_are_config_errors(tmp_path, value, words):
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, root="www", try_files=value)
    assert info.value.key_path == "http.servers[0].locations[2].try_files"
    assert words in str(info.value)


def test_relative_root_is_under_the_prefix(tmp_path):
    config = load_with(tmp_path, root="www")
    assert config.servers[0]["locations"][2]["root"] == str(tmp_path / "www")


def test_return_location_under_a_root_compiles_no_handler(tmp_path):
    from bizzyd.http.engine import build_router
    config = base_config(8080)
    config["http"]["root"] = "www"
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    health = build_router(load_config(path, tmp_path)).default.locations[0]
    assert health.fast
