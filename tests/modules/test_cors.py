"""The cors module over real sockets: simple requests, preflights, origins that do not
match, and preflights answered before the access phase."""

from __future__ import annotations

import http.client
import textwrap

import pytest

from bizzyd_proc import Bizzyd, base_config, free_port
from bizzyd_proc import fetch_raw as fetch

APP = "https://app.example.com"
AUTH_TEST_MODULE = '''
"""An access-phase handler that refuses everything, like an auth module would."""
from bizzyd.config.schema import LOCATION, Directive
from bizzyd.config.types import Bool
from bizzyd.http.response import Response
from bizzyd.module import Module, PhaseHandler

def refuse(request):
    return Response(401, b"who are you?", [("WWW-Authenticate", "Bearer")])

module = Module(
    name="authtest",
    directives=[Directive("auth_required", Bool(), False, (LOCATION,))],
    phase_handlers=[PhaseHandler("access", refuse, applies=lambda c: c["auth_required"])],
)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("cors")
    (prefix / "thirdparty").mkdir()
    (prefix / "thirdparty" / "authtest.py").write_text(textwrap.dedent(AUTH_TEST_MODULE))
    port = free_port()
    config = base_config(port, worker_processes=1, modules=["modules.cors", "authtest"])
    api = {
        "cors_allow_origins": [APP, "https://*.example.org"],
        "cors_allow_methods": ["GET", "POST", "PUT"],
        "cors_allow_headers": ["Content-Type", "X-Token"],
        "cors_expose_headers": ["X-Request-Id"],
        "cors_allow_credentials": True,
        "cors_max_age": "10m",
    }
    config["http"]["servers"][0]["locations"] = [
        {"location": "= /health", "return": [200, '{"status":"ok"}']},
        {"location": "/api/", "return": [200, '{"ok":true}'], **api},
        {"location": "/private/", "return": [200, "secret"], "auth_required": True, **api},
        {"location": "/echo/", "return": [200, "echo"], "cors_allow_origins": [APP],
         "cors_allow_headers": ["*"]},
        {"location": "/public/", "return": [200, "public"], "cors_allow_origins": "*"},
        {"location": "/plain/", "return": [200, "plain"]},
    ]
    b = Bizzyd(prefix, port, {"PYTHONPATH": str(prefix / "thirdparty")})
    b.write_config(config)
    try:
        yield b.start()
        b.stop()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def preflight(port: int, path: str, origin: str, method: str,
              headers: str | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    fields = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        fields["Access-Control-Request-Headers"] = headers
    return fetch(port, path, fields, "OPTIONS")


def test_allowed_origin_gets_the_cors_headers(server):
    status, headers, body = fetch(server.port, "/api/x", {"Origin": APP})
    assert (status, body) == (200, b'{"ok":true}')
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    assert headers["Vary"] == "Origin"


def test_wildcard_subdomain_matches_subdomains_only(server):
    sub = fetch(server.port, "/api/x", {"Origin": "https://eu.example.org"})[1]
    bare = fetch(server.port, "/api/x", {"Origin": "https://example.org"})[1]
    assert sub["Access-Control-Allow-Origin"] == "https://eu.example.org"
    assert bare["Access-Control-Allow-Origin"] is None


def test_other_origin_gets_no_cors_headers_but_vary(server):
    status, headers, _ = fetch(server.port, "/api/x", {"Origin": "https://evil.example.net"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] is None
    assert headers["Access-Control-Allow-Credentials"] is None
    assert headers["Vary"] == "Origin"


def test_request_without_origin_gets_vary_only(server):
    _, headers, _ = fetch(server.port, "/api/x")
    assert headers["Access-Control-Allow-Origin"] is None and headers["Vary"] == "Origin"


def test_preflight_is_answered_with_204_and_the_policy(server):
    status, headers, body = preflight(server.port, "/api/x", APP, "PUT", "content-type, x-token")
    assert (status, body) == (204, b"")
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, PUT"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, X-Token"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Max-Age"] == "600"
    assert headers["Access-Control-Expose-Headers"] is None


@pytest.mark.parametrize(("origin", "method", "headers"), [
    ("https://evil.example.net", "GET", None),
    (APP, "DELETE", None),
    (APP, "POST", "X-Other"),
])
def test_refused_preflight_gets_a_bare_204(server, origin, method, headers):
    status, fields, _ = preflight(server.port, "/api/x", origin, method, headers)
    assert status == 204
    assert fields["Access-Control-Allow-Origin"] is None
    assert fields["Access-Control-Allow-Methods"] is None


def test_preflight_is_answered_before_the_access_phase(server):
    status, headers, _ = preflight(server.port, "/private/x", APP, "GET")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == APP
    status, headers, _ = fetch(server.port, "/private/x", {"Origin": APP})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == APP


def test_star_allowed_headers_echo_the_requested_ones(server):
    _, headers, _ = preflight(server.port, "/echo/x", APP, "GET", "X-Anything, X-Else")
    assert headers["Access-Control-Allow-Headers"] == "X-Anything, X-Else"


def test_star_origin_allows_everyone_without_vary(server):
    _, headers, _ = fetch(server.port, "/public/x", {"Origin": "https://anyone.example"})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Vary"] is None and headers["Access-Control-Allow-Credentials"] is None


def test_plain_options_goes_on_to_the_location(server):
    status, headers, body = fetch(server.port, "/api/x", {"Origin": APP}, "OPTIONS")
    assert (status, body) == (200, b'{"ok":true}')
    assert headers["Access-Control-Allow-Origin"] == APP


def test_location_without_cors_is_untouched(server):
    status, headers, body = preflight(server.port, "/plain/x", APP, "PUT")
    assert (status, body) == (200, b"plain")
    assert headers["Access-Control-Allow-Origin"] is None and headers["Vary"] is None
