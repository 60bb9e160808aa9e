"""The built-in access module, through real requests over IPv4, IPv6 and a unix
socket: rules in order, first match wins, CIDR networks, inheritance, 403."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from bizzyd.config import ConfigError
from bizzyd.config.load import load_config
from bizzyd_proc import base_config, free_port, running


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def ok(text: str) -> dict:
    return {"return": [200, text]}


LOCATIONS = [
    {"location": "= /health", "access": [], "return": [200, '{"status":"ok"}']},
    {"location": "/allow-local/", "access": ["allow 127.0.0.1", "allow ::1", "deny all"],
     **ok("in")},
    {"location": "/deny-net/", "access": ["deny 127.0.0.0/8", "allow all"], **ok("in")},
    {"location": "/first-wins/", "access": ["deny 127.0.0.1", "allow 127.0.0.1"], **ok("in")},
    {"location": "/no-match/", "access": ["deny 10.0.0.0/8"], **ok("in")},
    {"location": "/v6-rule/", "access": ["deny ::/0"], **ok("in")},
    {"location": "/deny-v6/", "access": ["deny ::1/128", "allow all"], **ok("in")},
    {"location": "/unix-only/", "access": ["allow unix:", "deny all"], **ok("in")},
    {"location": "/inherited/", **ok("in")},
    {"location": "/open/", "access": ["allow all"], **ok("in")},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("access")
    port = free_port()
    listen = [f"127.0.0.1:{port}", "unix:run/access.sock"]
    port6 = free_port() if has_ipv6() else None
    if port6:
        listen.append(f"[::1]:{port6}")
    config = base_config(port, worker_processes=1)
    config["http"]["servers"][0].update(listen=listen, locations=LOCATIONS,
                                        access=["allow 10.0.0.0/8", "deny all"])
    with running(prefix, config, port) as b:
        b.port6 = port6
        yield b


def get(server, path: str, family: str = "ipv4") -> int:
    if family == "unix":
        s = socket.socket(socket.AF_UNIX)
        address: object = str(server.prefix / "run" / "access.sock")
    elif family == "ipv6":
        if not server.port6:
            pytest.skip("no IPv6 loopback")
        s = socket.socket(socket.AF_INET6)
        address = ("::1", server.port6)
    else:
        s = socket.socket()
        address = ("127.0.0.1", server.port)
    with s:
        s.settimeout(5)
        s.connect(address)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_allowed_address_passes(server):
    assert get(server, "/allow-local/") == 200


def test_deny_all_refuses_others_with_403(server, tmp_path):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /inherited/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert json.loads(body) == {"status": 403, "error": "Forbidden"}


def test_cidr_network_matches(server):
    assert get(server, "/deny-net/") == 403


def test_first_matching_rule_wins(server):
    assert get(server, "/first-wins/") == 403


def test_no_matching_rule_allows(server):
    assert get(server, "/no-match/") == 200


def test_ipv6_rule_does_not_match_an_ipv4_client(server):
    assert get(server, "/v6-rule/") == 200


def test_ipv6_client_is_allowed_by_its_address(server):
    assert get(server, "/allow-local/", "ipv6") == 200


def test_ipv6_client_is_denied_by_a_network(server):
    assert get(server, "/deny-v6/", "ipv6") == 403
    assert get(server, "/deny-v6/") == 200


def test_unix_socket_client_is_allowed_by_allow_unix(server):
    assert get(server, "/unix-only/", "unix") == 200
    assert get(server, "/unix-only/") == 403


def test_unix_socket_client_counts_as_loopback(server):
    assert get(server, "/allow-local/", "unix") == 200
    assert get(server, "/deny-net/", "unix") == 403


def test_location_inherits_the_server_rules(server):
    assert get(server, "/inherited/") == 403


def test_location_rules_replace_the_inherited_ones(server):
    assert get(server, "/open/") == 200


def test_denial_is_logged(server):
    get(server, "/first-wins/")
    server.wait_log("access forbidden by rule, client: 127.0.0.1")


# -- config ---------------------------------------------------------------------------

def load_with(tmp_path: Path, rules: object):
    config = base_config(8080)
    config["http"]["access"] = rules
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path, tmp_path)


@pytest.mark.parametrize("rules,words", [
    (["allow 10.0.0.300"], "is not an address"),
    (["permit all"], "expected 'allow ADDRESS'"),
    (["deny"], "expected 'allow ADDRESS'"),
    ([["allow", "all"]], "expected 'allow ADDRESS'"),
])
def test_bad_rules_are_config_errors(tmp_path, rules, words):
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, rules)
    assert info.value.key_path == "http.access"
    assert words in str(info.value)


def test_rules_are_dumped_in_config_syntax(tmp_path):
    config = load_with(tmp_path, ["allow 10.1.2.3/8", "allow unix:", "deny all"])
    dumped = yaml.safe_load(config.dump_yaml())
    assert dumped["http"]["access"] == ["allow 10.0.0.0/8", "allow unix:", "deny all"]
