"""The gzip module over real sockets: negotiation, types, lengths, Vary, HEAD, streams."""

from __future__ import annotations

import asyncio
import http.client
import textwrap
import time
import zlib
from types import SimpleNamespace

import pytest

from bizzyd.http.engine import HttpEngine
from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd_proc import ROOT, Bizzyd, base_config, free_port
from bizzyd_proc import fetch_raw as fetch
from modules.gzip import gzip_body_filter, gzip_header_filter

TEXT = "hello, compressible world! " * 40
GZIP_TEST_MODULE = '''
"""Content handlers for the gzip tests."""
import asyncio
from bizzyd.http.response import Response
from bizzyd.module import Module

async def events():
    for i in range(3):
        yield f"data: event {i}\\n\\n".encode()
        await asyncio.sleep(0.4)

def sse(request):
    return Response(200, content_type="text/event-stream", stream=events())

def tagged(request):
    return Response(200, "tagged " * 100, [("ETag", '"v1"')], content_type="text/plain")

def encoded(request):
    return Response(200, b"x" * 1000, [("Content-Encoding", "br")], content_type="text/plain")

def no_transform(request):
    return Response(200, b"x" * 1000, [("Cache-Control", "no-transform")],
                    content_type="text/plain")

module = Module(name="gziptest", content_handlers={
    "sse": sse, "tagged": tagged, "encoded": encoded, "no_transform": no_transform})
'''
# Until bizzyd/http/protocol.py writes streamed bodies, the streaming test cannot run.
STREAMING_WRITER = "response.stream" in (ROOT / "bizzyd/http/protocol.py").read_text()


def _engine_filters_streams() -> bool:
    """Whether HttpEngine.output can run body filters over a stream: it could not while
    `_filter_stream` read `response.stream` after `output` had replaced it (the chain
    then iterates itself: "asynchronous generator is already running")."""
    async def source():
        yield b"x"

    async def drain(stream):
        return [chunk async for chunk in stream]

    loc = SimpleNamespace(filtered=True, header_filters=(),
                          body_filters=(lambda request, response, chunk, last: chunk,))
    response = Response(200, stream=source())
    engine = SimpleNamespace(_filter_stream=HttpEngine._filter_stream)
    try:
        HttpEngine.output(engine, SimpleNamespace(location=loc), response)
        return asyncio.run(drain(response.stream)) == [b"x"]
    except (RuntimeError, TypeError, AttributeError):
        return False


ENGINE_FILTERS_STREAMS = _engine_filters_streams()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("gzip")
    (prefix / "thirdparty").mkdir()
    (prefix / "thirdparty" / "gziptest.py").write_text(textwrap.dedent(GZIP_TEST_MODULE))
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["modules.gzip", "gziptest"])
    on = {"gzip": True}
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, '{"status":"ok"}']},
        {"location": "= /text", "return": [200, TEXT], **on},
        {"location": "= /short", "return": [200, "tiny"], **on},
        {"location": "= /png", "return": [200, TEXT], "default_type": "image/png", **on},
        {"location": "= /any", "return": [200, TEXT], "default_type": "image/png",
         "gzip_types": ["*"], **on},
        {"location": "= /best", "return": [200, TEXT], "gzip_comp_level": 9, **on},
        {"location": "= /off", "return": [200, TEXT]},
        {"location": "= /tagged", "content": "tagged", **on},
        {"location": "= /encoded", "content": "encoded", **on},
        {"location": "= /no-transform", "content": "no_transform", **on},
        {"location": "= /events", "content": "sse", "gzip_types": ["text/event-stream"], **on},
        {"location": "= /headers", "return": [200, TEXT], "add_header": {"X-Extra": "yes"},
         **on},
    ]
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(prefix / "thirdparty")})
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


GZIP = {"Accept-Encoding": "gzip"}

NEGOTIATION = [
    ("gzip", True),
    ("GZIP;Q=1.0", True),
    ("x-gzip", True),
    ("deflate, gzip;q=0.5, br", True),
    ("*", True),
    ("br;q=1, *;q=0.1", True),
    ("gzip;q=0", False),
    ("gzip;q=0.000, deflate", False),
    ("gzip;q=0, *", False),
    ("*;q=0", False),
    ("br, deflate", False),
    ("identity", False),
    ("gzip;q=nonsense", False),
]


@pytest.mark.parametrize(("accept", "compressed"), NEGOTIATION)
def test_accept_encoding_q_values_decide(server, accept, compressed):
    status, headers, body = fetch(server.port, "/text", {"Accept-Encoding": accept})
    assert status == 200
    assert (headers["Content-Encoding"] == "gzip") is compressed
    assert (zlib.decompress(body, 31) if compressed else body) == TEXT.encode()


def test_compressed_body_has_its_own_content_length(server):
    _, headers, body = fetch(server.port, "/text", GZIP)
    assert int(headers["Content-Length"]) == len(body) < len(TEXT)
    assert headers.get_all("Content-Length") == [headers["Content-Length"]]


def test_vary_is_sent_even_to_a_client_without_gzip(server):
    _, headers, body = fetch(server.port, "/text")
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Encoding"] is None
    assert body == TEXT.encode()


def test_type_not_in_gzip_types_is_left_alone(server):
    _, headers, body = fetch(server.port, "/png", GZIP)
    assert headers["Content-Encoding"] is None and headers["Vary"] is None
    assert body == TEXT.encode()


def test_star_in_gzip_types_compresses_every_type(server):
    _, headers, body = fetch(server.port, "/any", GZIP)
    assert headers["Content-Encoding"] == "gzip"
    assert zlib.decompress(body, 31) == TEXT.encode()


def test_body_shorter_than_min_length_is_left_alone(server):
    _, headers, body = fetch(server.port, "/short", GZIP)
    assert headers["Content-Encoding"] is None and body == b"tiny"


def test_comp_level_changes_the_output(server):
    fast = fetch(server.port, "/text", GZIP)[2]
    best = fetch(server.port, "/best", GZIP)[2]
    assert zlib.decompress(best, 31) == zlib.decompress(fast, 31)
    assert len(best) <= len(fast)


def test_gzip_off_location_is_left_alone(server):
    _, headers, body = fetch(server.port, "/off", GZIP)
    assert headers["Content-Encoding"] is None and headers["Vary"] is None
    assert body == TEXT.encode()


def test_already_encoded_response_is_not_compressed_again(server):
    _, headers, body = fetch(server.port, "/encoded", GZIP)
    assert headers["Content-Encoding"] == "br" and body == b"x" * 1000


def test_no_transform_response_is_not_compressed(server):
    _, headers, body = fetch(server.port, "/no-transform", GZIP)
    assert headers["Content-Encoding"] is None and body == b"x" * 1000


def test_strong_etag_becomes_weak_when_compressed(server):
    assert fetch(server.port, "/tagged", GZIP)[1]["ETag"] == 'W/"v1"'
    assert fetch(server.port, "/tagged")[1]["ETag"] == '"v1"'


def test_gzip_runs_after_add_header_which_copies_the_response(server):
    _, headers, body = fetch(server.port, "/headers", GZIP)
    assert headers["X-Extra"] == "yes" and headers["Content-Encoding"] == "gzip"
    assert zlib.decompress(body, 31) == TEXT.encode()


def test_head_gets_the_headers_of_get_without_a_body(server):
    _, get_headers, body = fetch(server.port, "/text", GZIP)
    status, headers, head_body = fetch(server.port, "/text", GZIP, method="HEAD")
    assert status == 200 and head_body == b""
    assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Length"] == get_headers["Content-Length"] == str(len(body))


@pytest.mark.skipif(not STREAMING_WRITER,
                    reason="bizzyd/http/protocol.py does not write streamed bodies yet")
@pytest.mark.xfail(not ENGINE_FILTERS_STREAMS, strict=True,
                   reason="bizzyd/http/engine.py _filter_stream iterates itself (core bug)")
def test_streamed_events_decode_as_they_arrive(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/events", headers=GZIP)
    response = conn.getresponse()
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] is None
    decoder = zlib.decompressobj(31)
    started, seen = time.monotonic(), []
    while chunk := response.read1(65536):
        text = decoder.decompress(chunk).decode()
        if text:
            seen.append((round(time.monotonic() - started, 1), text))
    conn.close()
    assert "".join(t for _, t in seen) == "".join(f"data: event {i}\n\n" for i in range(3))
    assert seen[0][0] < 0.3  # the first event did not wait for the others
    assert decoder.eof


# -- the filters on their own (no writer involved) ----------------------------------

def _request(config: dict, accept: str) -> Request:
    request = Request("GET", "/s", "", b"/s", "1.1", [(b"Accept-Encoding", accept.encode())],
                      b"", True, 1, "127.0.0.1")
    request.location = type("Loc", (), {"config": config})()
    return request


def test_each_streamed_chunk_is_decodable_on_its_own_in_process():
    config = {"gzip": True, "gzip_types": frozenset({"*"}), "gzip_min_length": 256,
              "gzip_comp_level": 1, "default_type": "text/event-stream"}

    async def source():
        yield b""

    request = _request(config, "gzip")
    response = Response(200, stream=source())
    gzip_header_filter(request, response)
    decoder = zlib.decompressobj(31)
    for i in range(3):
        event = f"data: {i}\n\n".encode()
        assert decoder.decompress(gzip_body_filter(request, response, event, False)) == event
    assert decoder.decompress(gzip_body_filter(request, response, b"", True)) == b""
    assert decoder.eof
    asyncio.run(response.stream.aclose())


def test_bytes_body_of_another_response_is_left_alone_in_process():
    config = {"gzip": True, "gzip_types": frozenset({"*"}), "gzip_min_length": 0,
              "gzip_comp_level": 1, "default_type": "text/plain"}
    request = _request(config, "gzip")
    gzip_header_filter(request, Response(200, b"first"))
    assert gzip_body_filter(request, Response(200, b"other"), b"other", True) == b"other"

