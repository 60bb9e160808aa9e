"""systemd integration: units verify, socket activation, sd_notify messages."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bizzyd_proc import ROOT, Bizzyd, base_config, free_port, http_get, wait_for

pytestmark = pytest.mark.slow


def needs_systemd_tools() -> None:
    missing = [t for t in ("systemd-analyze", "systemd-socket-activate") if not shutil.which(t)]
    assert not missing, f"install Debian's systemd package (make deps): missing {missing}"


def test_units_pass_systemd_analyze_verify(tmp_path):
    needs_systemd_tools()
    bizzyd = Path(sys.executable).with_name("bizzyd")
    assert bizzyd.exists()
    for unit in ("bizzyd.service", "bizzyd.socket"):
        text = (ROOT / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/bizzyd/bin/bizzyd", str(bizzyd)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "bizzyd.service"),
                             str(tmp_path / "bizzyd.socket")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    service = (ROOT / "systemd" / "bizzyd.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGQUIT",
                 "RuntimeDirectory=bizzyd", "LimitNOFILE=", "TimeoutStopSec=",
                 "ExecStartPre=/opt/bizzyd/bin/bizzyd -t"):
        assert line in service


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def seen(self, field: str) -> bool:
        return any(field in m.split("\n") for m in self.drain())

    def close(self) -> None:
        self.sock.close()


def test_sd_notify_reports_ready_reloading_and_stopping(tmp_path, port):
    notify = NotifySocket(tmp_path / "notify.sock")
    b = Bizzyd(tmp_path, port, {"NOTIFY_SOCKET": str(notify.path)})
    b.write_config(base_config(port))
    try:
        b.start()
        wait_for(lambda: notify.seen("READY=1"), what="READY=1")
        assert any(f"MAINPID={b.pid}" in m for m in notify.messages)
        assert any(m.startswith("READY=1") and "STATUS=" in m for m in notify.messages)
        notify.messages.clear()
        b.send(signal.SIGHUP)
        wait_for(lambda: notify.seen("RELOADING=1"), what="RELOADING=1")
        wait_for(lambda: notify.seen("READY=1"), what="READY=1 after the reload")
        b.send(signal.SIGQUIT)
        wait_for(lambda: notify.seen("STOPPING=1"), what="STOPPING=1")
        assert b.proc.wait(15) == 0
    finally:
        b.kill_everything()
        notify.close()


def socket_activated(tmp_path: Path, config_port: int, activate_port: int) -> subprocess.Popen:
    b = Bizzyd(tmp_path, config_port)
    b.write_config(base_config(config_port))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "stderr.log", "ab") as err:
        return subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{activate_port}",
             "-E", "PYTHONPATH", "-E", "PATH", *b.command()],
            env=env, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.parametrize("same_address", [True, False])
def test_socket_activation_serves_the_passed_socket(tmp_path, same_address):
    needs_systemd_tools()
    activate_port = free_port()
    config_port = activate_port if same_address else free_port()
    proc = socket_activated(tmp_path, config_port, activate_port)
    try:
        # systemd-socket-activate starts the service at the first connection
        status = wait_for(lambda: _try_get(activate_port), timeout=20, what="an answer")
        assert status == 200
        log = (tmp_path / "logs" / "error.log").read_text()
        assert "using 0 inherited and 1 socket-activated listener(s)" in log
        if not same_address:
            assert http_get(config_port)[0] == 200
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "run" / "bizzyd.pid").exists()


def _try_get(port: int) -> int | None:
    try:
        return http_get(port, timeout=5)[0]
    except OSError:
        time.sleep(0.1)
        return None
