"""limit_req: one leaky bucket per key, shared by all workers."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from bizzyd.config import ConfigError
from bizzyd.config.load import load_config
from bizzyd.http.builtin.limit_req import parse_rate
from bizzyd_proc import BIZZYD, base_config, http_get, running


def limited_config(port: int, burst: int = 0, nodelay: bool = True) -> dict:
    config = base_config(port)
    config["http"]["limit_req_zones"] = {"per_ip": {"key": "$remote_addr", "rate": "5r/s",
                                                    "size": 1024}}
    config["http"]["servers"][0]["locations"].append(
        {"location": "/limited", "return": [200, "ok"], "limit_req_status": 429,
         "limit_req": {"zone": "per_ip", "burst": burst, "nodelay": nodelay}})
    return config


def statuses(port: int, n: int, threads: int = 4) -> list[int]:
    out: list[int] = []
    lock = threading.Lock()

    def run(count: int) -> None:
        for _ in range(count):
            status = http_get(port, "/limited")[0]
            with lock:
                out.append(status)

    workers = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    return out


def test_rates_parse():
    assert parse_rate("10r/s") == 10 and parse_rate("30r/m") == 0.5
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_the_limit_holds_across_both_workers(tmp_path, port):
    with running(tmp_path, limited_config(port), port) as b:
        assert len(b.workers()) == 2
        started = time.monotonic()
        got = statuses(port, 80)
        elapsed = time.monotonic() - started
        allowed = got.count(200)
        # 5 r/s, burst 0: one now, then one per 200 ms (shared, not per worker)
        assert allowed <= 1 + 5 * elapsed + 1, (allowed, elapsed)
        assert got.count(429) == 80 - allowed and allowed >= 1
        assert http_get(port)[0] == 200  # other locations are not limited


def test_burst_without_nodelay_delays_instead_of_refusing(tmp_path, port):
    with running(tmp_path, limited_config(port, burst=5, nodelay=False), port):
        started = time.monotonic()
        got = [http_get(port, "/limited")[0] for _ in range(6)]
        assert got == [200] * 6
        assert time.monotonic() - started >= 0.8  # five waited ~200 ms each


def test_unknown_zone_is_a_config_error(tmp_path, port):
    config = limited_config(port)
    config["http"]["servers"][0]["locations"][-1]["limit_req"]["zone"] = "nope"
    import yaml
    path = tmp_path / "bizzyd.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path, tmp_path)
    assert "limit_req zone 'nope' is not declared" in str(info.value)
    assert info.value.key_path == "http.servers[0].locations[2].limit_req.zone"
    result = subprocess.run([*BIZZYD, "-t", "-c", str(path), "-p", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "limit_req zone 'nope'" in result.stderr
