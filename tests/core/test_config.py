"""Config: units, validation errors (file, line, key), includes, -t and -T."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bizzyd.config import ConfigError
from bizzyd.config.core import CORE_DIRECTIVES
from bizzyd.config.load import load_config
from bizzyd.config.types import format_duration, format_size, parse_duration, parse_size
from bizzyd.http.engine import build_router
from bizzyd_proc import BIZZYD, ROOT

MINIMAL = """\
http:
  servers:
    - listen: ["127.0.0.1:8080"]
      locations:
        - location: = /health
          return: [200, ok]
"""


def write(tmp_path: Path, text: str, name: str = "bizzyd.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config = load_config(write(tmp_path, text), tmp_path)
        build_router(config)
    return info.value


@pytest.mark.parametrize("text,expected", [
    ("512", 512), ("64k", 65536), ("1m", 1048576), ("2G", 2 * 1024**3), (100, 100),
])
def test_sizes_take_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("10ms", 0.01), ("75s", 75), ("1m", 60), ("1m30s", 90), ("1h", 3600), ("1d", 86400),
    (5, 5.0), ("2.5s", 2.5),
])
def test_durations_take_units(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["ten", "5x", "-1", "", "1 m s", True])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=2**40))
def test_size_format_round_trips(n):
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_format_round_trips(ms):
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)


def test_minimal_config_gets_every_default(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), tmp_path)
    assert config["worker_timeout"] == 30.0
    assert config["pid"] == str(tmp_path / "run" / "bizzyd.pid")
    location = config.servers[0]["locations"][0]
    assert location["keepalive_timeout"] == 75.0
    assert location["return"].status == 200


def test_location_inherits_from_server_and_http(tmp_path):
    config = load_config(write(tmp_path, """\
        http:
          client_max_body_size: 2m
          servers:
            - listen: ["127.0.0.1:8080"]
              client_max_body_size: 4k
              locations:
                - {location: /a, return: 204}
                - {location: /b, return: 204, client_max_body_size: 10m}
            - listen: ["127.0.0.1:8081"]
              locations: [{location: /, return: 204}]
        """), tmp_path)
    first, second = config.servers
    assert first["locations"][0]["client_max_body_size"] == 4096
    assert first["locations"][1]["client_max_body_size"] == 10 * 1024**2
    assert second["locations"][0]["client_max_body_size"] == 2 * 1024**2


@pytest.mark.parametrize("text,key,line,words", [
    ("worker_processes: many\n", "worker_processes", 1, "expected an integer"),
    ("worker_timeout: soon\n", "worker_timeout", 1, "duration"),
    ("\nworker_procesess: 2\n", "worker_procesess", 2, "did you mean 'worker_processes'"),
    ("error_log_level: loud\n", "error_log_level", 1, "expected one of"),
    ("keepalive_timeout: 5s\n", "keepalive_timeout", 1, "not allowed here"),
    ("http:\n  servers:\n    - listen: ['10.0.0.1:99999']\n",
     "http.servers[0].listen", 3, "invalid port"),
    ("http:\n  servers:\n    - listen: ['::1:80']\n", "http.servers[0].listen", 3, "brackets"),
    ("http:\n  servers:\n    - locations:\n        - location: /\n          return: [700]\n",
     "http.servers[0].locations[0].return", 5, "100..599"),
    ("http:\n  servers:\n    - locations:\n        - location: /\n          return: 301\n",
     "http.servers[0].locations[0].return", 5, "needs a URL"),
    ("http:\n  client_max_body_size: lots\n", "http.client_max_body_size", 2, "size"),
    ("http:\n  servers:\n    - locations:\n        - return: 200\n",
     "http.servers[0].locations[0]", 4, "needs `location:`"),
    ("http:\n  servers:\n    - locations:\n        - {location: '~ ^/(x', return: 200}\n",
     "http.servers[0].locations[0].location", 4, "invalid regular expression"),
    ("http:\n  servers:\n    - locations:\n        - {location: /, content: nothing}\n",
     "http.servers[0].locations[0].content", 4, "unknown content handler"),
    ("modules: [no.such.module]\n", "modules[0]", 1, "cannot import module"),
    ("pid: a\npid: b\n", "pid", 2, "duplicate key"),
])
def test_errors_name_file_line_and_key(tmp_path, text, key, line, words):
    err = error_of(tmp_path, text)
    assert err.key_path == key
    assert err.where is not None and err.where[1] == line, str(err)
    assert words in str(err)
    assert str(err).startswith(f"{tmp_path / 'bizzyd.yaml'}:{line}: {key}: ")


def test_invalid_yaml_names_the_line(tmp_path):
    err = error_of(tmp_path, "http:\n  servers: [\n    - x\n")
    assert err.where is not None and err.where[0].endswith("bizzyd.yaml")
    assert "invalid YAML" in str(err)


def test_includes_merge_lists_and_maps(tmp_path):
    write(tmp_path, """\
        http:
          servers:
            - listen: ["127.0.0.1:9001"]
              locations: [{location: /, return: 204}]
        """, "conf.d/extra.yaml")
    write(tmp_path, """\
        worker_timeout: 9s
        """, "conf.d/more.yaml")
    main = write(tmp_path, "include: [conf.d/*.yaml]\n" + MINIMAL)
    config = load_config(main, tmp_path)
    assert [s["listen"][0].address[1] for s in config.servers] == [8080, 9001]
    assert config["worker_timeout"] == 9.0


def test_included_errors_point_into_the_included_file(tmp_path):
    write(tmp_path, "worker_connections: few\n", "conf.d/bad.yaml")
    err = error_of(tmp_path, "include: conf.d/*.yaml\n")
    assert err.where == (str(tmp_path / "conf.d" / "bad.yaml"), 1)


def test_scalar_set_in_two_files_is_refused(tmp_path):
    write(tmp_path, "worker_timeout: 9s\n", "conf.d/a.yaml")
    err = error_of(tmp_path, "worker_timeout: 5s\ninclude: [conf.d/a.yaml]\n")
    assert "set twice" in str(err) and "bizzyd.yaml:1" in str(err)


def test_missing_include_file_is_an_error(tmp_path):
    err = error_of(tmp_path, "include: [nothere.yaml]\n")
    assert "does not exist" in str(err)


def test_default_config_documents_every_core_directive():
    text = (ROOT / "conf" / "bizzyd.yaml").read_text()
    undocumented = [d.name for d in CORE_DIRECTIVES
                    if f"{d.name}:" not in text and d.name not in ("return", "content")]
    assert not undocumented


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BIZZYD, *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT)


def test_dash_t_accepts_the_default_config():
    result = run_cli("-t", "-p", str(ROOT), "-c", str(ROOT / "conf" / "bizzyd.yaml"))
    assert result.returncode == 0, result.stderr
    assert f"configuration file {ROOT / 'conf' / 'bizzyd.yaml'} test is successful" \
        in result.stderr


def test_dash_t_reports_the_key_and_fails(tmp_path):
    path = write(tmp_path, "worker_processes: -3\n")
    result = run_cli("-t", "-p", str(tmp_path), "-c", str(path))
    assert result.returncode == 1
    assert f"{path}:1: worker_processes: must be at least 1" in result.stderr
    assert "test failed" in result.stderr


def test_dash_big_t_prints_the_effective_config(tmp_path):
    path = write(tmp_path, MINIMAL)
    result = run_cli("-T", "-p", str(tmp_path), "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "worker_shutdown_timeout: 10s" in result.stdout
    assert "client_max_body_size: 1m" in result.stdout


def test_version_and_help():
    assert run_cli("-v").stdout.startswith("bizzyd/")
    help_text = run_cli("--help").stdout
    for flag in ("-t", "-T", "-c FILE", "-p PREFIX", "-s", "USR2", "WINCH"):
        assert flag in help_text


def test_config_reference_is_generated_from_the_directives():
    from bizzyd.config.docs import SHIPPED_MODULES, render
    assert (ROOT / "docs" / "config.md").read_text() == render(SHIPPED_MODULES), \
        "docs/config.md is stale: run `make docs`"
