"""stub_status and Prometheus metrics summed over workers through shared memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from bizzyd_proc import base_config, http_get, running, wait_for


def status_config(port: int) -> dict:
    config = base_config(port, modules=["modules.status"])
    config["http"]["servers"][0]["locations"] += [
        {"location": "= /status", "content": "stub_status"},
        {"location": "= /metrics", "content": "metrics"},
    ]
    return config


def requests_total(port: int, location: str, status: str = "2xx") -> int:
    text = http_get(port, "/metrics")[1].decode()
    pattern = (r'bizzyd_http_requests_total\{server="_",location="' + re.escape(location)
               + r'",status="' + status + r'"\} (\d+)')
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def stub(port: int) -> dict[str, int]:
    text = http_get(port, "/status")[1].decode()
    lines = text.splitlines()
    accepted, handled, requests = map(int, lines[2].split())
    assert lines[0].startswith("Active connections: ")
    numbers = dict(re.findall(r"(\w+): (\d+)", lines[3]))
    return {"accepted": accepted, "handled": handled, "requests": requests,
            "active": int(lines[0].split(": ")[1]),
            **{k.lower(): int(v) for k, v in numbers.items()}}


def test_counts_are_summed_over_workers_and_survive_a_worker_kill(tmp_path, port):
    with running(tmp_path, status_config(port), port) as b:
        wait_for(lambda: len(b.workers()) == 2, what="2 workers")
        time.sleep(1.2)  # every worker has flushed its row once
        before = requests_total(port, "= /health")
        for _ in range(200):
            assert http_get(port)[0] == 200
        wait_for(lambda: requests_total(port, "= /health") - before == 200, timeout=5,
                 what="200 more /health requests counted")
        for _ in range(3):
            http_get(port, "/nothing-here")
        wait_for(lambda: requests_total(port, "/", "4xx") == 3, timeout=5, what="3 404s")
        victim = b.workers()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(b.workers()) == 2 and victim not in b.workers(), what="respawn")
        # the dead worker's row was folded into row 0: nothing is lost
        time.sleep(1.5)
        assert requests_total(port, "= /health") - before == 200
        text = http_get(port, "/metrics")[1].decode()
        restarts = sum(int(n) for n in re.findall(r"bizzyd_worker_restarts_total\{slot=\"\d+\"\} "
                                                 r"(\d+)", text))
        assert restarts == 1


def test_stub_status_page(tmp_path, port):
    with running(tmp_path, status_config(port), port):
        time.sleep(1.2)
        first = stub(port)
        for _ in range(50):
            http_get(port)
        # rows are refreshed every second
        second = wait_for(lambda: (s := stub(port))["requests"] - first["requests"] >= 51 and s,
                          timeout=5, what="the other worker's row")
        assert second["requests"] - first["requests"] >= 51
        assert second["accepted"] - first["accepted"] >= 51
        assert second["handled"] == second["accepted"]
        assert second["active"] >= 1 and second["writing"] >= 1


def stub_on(sock: socket.socket) -> dict[str, int]:
    """stub_status read on an open keep-alive connection (no new connection counted)."""
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"Content-Length: (\d+)", data, re.I).group(1)):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed"
        data += chunk
    accepted, handled, _ = map(int, data.partition(b"\r\n\r\n")[2].split(b"\n")[2].split())
    return {"accepted": accepted, "handled": handled}


def test_a_connection_over_worker_connections_is_accepted_not_handled(tmp_path, port):
    """As nginx's stub_status: a connection refused for worker_connections (503) counts
    in accepts and not in handled."""
    config = status_config(port)
    config.update(worker_processes=1, worker_connections=16)
    with running(tmp_path, config, port):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(16)]
        try:
            first = stub_on(held[0])  # each is in the worker's set once it is answered
            assert first["handled"] == first["accepted"]
            for s in held[1:]:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                assert s.recv(1000).startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                assert extra.recv(1000).startswith(b"HTTP/1.1 503")
            # the worker's row is flushed every second
            after = wait_for(lambda: (c := stub_on(held[0]))["accepted"] > c["handled"] and c,
                             timeout=5, what="the refused connection counted")
            assert after["accepted"] - after["handled"] == 1
        finally:
            for s in held:
                s.close()


def test_metrics_exposition_is_well_formed(tmp_path, port):
    with running(tmp_path, status_config(port), port):
        for _ in range(20):
            http_get(port)
        wait_for(lambda: requests_total(port, "= /health") >= 20, timeout=5, what="counts")
        status, body = http_get(port, "/metrics")
        text = body.decode()
        assert status == 200
        sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? [0-9.e+-]+$')
        for line in text.splitlines():
            assert line.startswith("# ") or sample.match(line), line
        assert '# TYPE bizzyd_http_request_duration_seconds histogram' in text
        assert 'location="= /health",le="+Inf"}' in text
        assert 'bizzyd_connections{state="active"}' in text


METRICS_MODULE = '''
from bizzyd.module import Module
from bizzyd.shm import ZoneSpec

SPEC = ZoneSpec("metrics.widgets", (("made_total", "q"), ('rejects_total{reason="odd"}', "q"),
                                    ("queue", "q")), 4)

def init_worker(ctx):
    zone = ctx.zones["metrics.widgets"]
    zone.write(ctx.slot, (5, 1, 3))

module = Module(name="widgets", zones=lambda config: [SPEC], init_worker=init_worker)
'''


def test_module_metric_zones_are_exported(tmp_path, port):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "widgets.py").write_text(METRICS_MODULE)
    config = status_config(port)
    config["modules"].append("widgets")
    with running(tmp_path, config, port, {"PYTHONPATH": str(folder)}):
        # /health answers once one worker is up: wait for both workers' rows
        def both() -> str | None:
            text = http_get(port, "/metrics")[1].decode()
            return text if "bizzyd_widgets_made_total 10" in text else None

        text = wait_for(both, timeout=10, what="both workers' widget rows")
        assert "# TYPE bizzyd_widgets_made_total counter\nbizzyd_widgets_made_total 10" in text
        assert 'bizzyd_widgets_rejects_total{reason="odd"} 2' in text
        assert "# TYPE bizzyd_widgets_queue gauge\nbizzyd_widgets_queue 6" in text



def get_from(source: str, port: int, path: str) -> int:
    import socket
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def test_default_config_protects_status_and_metrics_with_allow_deny(tmp_path, port):
    """The shipped conf/bizzyd.yaml, on a test port: loopback 127.0.0.1 only."""
    import yaml

    from bizzyd_proc import ROOT

    config = yaml.safe_load((ROOT / "conf" / "bizzyd.yaml").read_text())
    config["http"]["servers"][0]["listen"] = [f"127.0.0.1:{port}"]
    config["worker_processes"] = 1
    with running(tmp_path, config, port):
        for path in ("/status", "/metrics"):
            assert get_from("127.0.0.1", port, path) == 200
            assert get_from("127.0.0.2", port, path) == 403
        assert get_from("127.0.0.2", port, "/health") == 200
