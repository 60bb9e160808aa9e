"""The conditional module over real sockets: 304 for If-None-Match / If-Modified-Since,
weak ETags with `etag: on`, and its order before gzip."""

from __future__ import annotations

import textwrap
import zlib

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port
from bizzyd_proc import fetch_raw as fetch

LAST_MODIFIED = "Mon, 23 Nov 2026 09:00:00 GMT"
BODY = "a document that does not change " * 20
CONDITIONAL_TEST_MODULE = f'''
"""A content handler whose response carries validators."""
from bizzyd.http.response import Response
from bizzyd.module import Module

def validated(request):
    return Response(200, {BODY!r}, [("ETag", '"v1"'), ("Last-Modified", {LAST_MODIFIED!r}),
                                     ("Cache-Control", "max-age=60")],
                    content_type="text/plain")

module = Module(name="conditionaltest", content_handlers={{"validated": validated}})
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("conditional")
    (prefix / "thirdparty").mkdir()
    (prefix / "thirdparty" / "conditionaltest.py").write_text(
        textwrap.dedent(CONDITIONAL_TEST_MODULE))
    port = free_port()
    config = base_config(port, worker_processes=1,
                         modules=["modules.conditional", "modules.gzip", "conditionaltest"])
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, '{"status":"ok"}']},
        {"location": "= /doc", "content": "validated"},
        {"location": "= /doc-before", "content": "validated", "if_modified_since": "before"},
        {"location": "= /doc-ims-off", "content": "validated", "if_modified_since": "off"},
        {"location": "= /doc-gzip", "content": "validated", "gzip": True},
        {"location": "= /auto", "return": [200, BODY], "etag": True},
        {"location": "= /plain", "return": [200, BODY]},
    ]
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(prefix / "thirdparty")})
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


IF_NONE_MATCH = [
    ('"v1"', 304),
    ('W/"v1"', 304),
    ('"v0", W/"v1"', 304),
    ('"a,b", "v1"', 304),
    ("*", 304),
    ('"v2"', 200),
    ('"v10"', 200),
    ("v1", 200),
]


@pytest.mark.parametrize(("if_none_match", "status"), IF_NONE_MATCH)
def test_if_none_match_uses_weak_comparison(server, if_none_match, status):
    assert fetch(server.port, "/doc", {"If-None-Match": if_none_match})[0] == status


def test_304_keeps_validators_and_drops_the_body(server):
    status, headers, body = fetch(server.port, "/doc", {"If-None-Match": '"v1"'})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == '"v1"' and headers["Last-Modified"] == LAST_MODIFIED
    assert headers["Cache-Control"] == "max-age=60"
    assert headers["Content-Type"] is None and headers["Content-Length"] is None


def test_if_modified_since_the_last_modified_date_gives_304(server):
    assert fetch(server.port, "/doc", {"If-Modified-Since": LAST_MODIFIED})[0] == 304


def test_exact_mode_answers_a_later_date_with_the_document(server):
    later = "Tue, 24 Nov 2026 09:00:00 GMT"
    assert fetch(server.port, "/doc", {"If-Modified-Since": later})[0] == 200


def test_before_mode_answers_a_later_date_with_304(server):
    later = "Tue, 24 Nov 2026 09:00:00 GMT"
    earlier = "Sun, 22 Nov 2026 09:00:00 GMT"
    assert fetch(server.port, "/doc-before", {"If-Modified-Since": later})[0] == 304
    assert fetch(server.port, "/doc-before", {"If-Modified-Since": earlier})[0] == 200


def test_if_modified_since_off_always_sends_the_document(server):
    assert fetch(server.port, "/doc-ims-off", {"If-Modified-Since": LAST_MODIFIED})[0] == 200


def test_invalid_if_modified_since_is_ignored(server):
    assert fetch(server.port, "/doc", {"If-Modified-Since": "yesterday"})[0] == 200


def test_if_none_match_decides_when_both_are_sent(server):
    headers = {"If-None-Match": '"v2"', "If-Modified-Since": LAST_MODIFIED}
    assert fetch(server.port, "/doc", headers)[0] == 200


def test_head_is_answered_with_304_too(server):
    assert fetch(server.port, "/doc", {"If-None-Match": '"v1"'}, "HEAD")[0] == 304


def test_unsafe_method_is_never_answered_with_304(server):
    assert fetch(server.port, "/doc", {"If-None-Match": '"v1"'}, "POST")[0] == 200


def test_etag_on_adds_a_weak_etag_of_the_body(server):
    _, headers, _ = fetch(server.port, "/auto")
    etag = headers["ETag"]
    assert etag.startswith('W/"') and len(etag) == len('W/""') + 16
    assert fetch(server.port, "/auto")[1]["ETag"] == etag
    assert fetch(server.port, "/auto", {"If-None-Match": etag})[0] == 304


def test_response_without_validators_is_always_sent(server):
    _, headers, _ = fetch(server.port, "/plain", {"If-None-Match": "*"})
    status = fetch(server.port, "/plain", {"If-Modified-Since": LAST_MODIFIED})[0]
    assert headers["ETag"] is None and status == 200


def test_conditional_runs_before_gzip(server):
    gzip = {"Accept-Encoding": "gzip"}
    _, headers, body = fetch(server.port, "/doc-gzip", gzip)
    assert headers["Content-Encoding"] == "gzip" and headers["ETag"] == 'W/"v1"'
    assert zlib.decompress(body, 31) == BODY.encode()
    status, headers, body = fetch(server.port, "/doc-gzip", {**gzip, "If-None-Match": 'W/"v1"'})
    assert (status, body) == (304, b"")
    assert headers["Content-Encoding"] is None and headers["ETag"] == '"v1"'
