"""Starting and driving a real bizzyd master for tests (real processes, real signals)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIZZYD = [sys.executable, "-m", "bizzyd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05,
             what: str = "condition") -> object:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def processes() -> Iterator[tuple[int, str, str]]:
    """(pid, /proc/pid/stat, command line with spaces) of every process still there."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        yield int(entry.name), stat, cmdline


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, title) of the live children of a process."""
    out = []
    for child, stat, cmdline in processes():
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append((child, cmdline))
    return sorted(out)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def http_get(port: int, path: str = "/health", host: str = "127.0.0.1",
             timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def base_config(port: int, **extra: object) -> dict:
    config = {
        "worker_processes": 2,
        "error_log_level": "info",
        "worker_shutdown_timeout": "5s",
        "http": {"servers": [{
            "listen": [f"127.0.0.1:{port}"],
            "locations": [
                {"location": "= /health", "return": [200, '{"status":"ok"}']},
                {"location": "/", "return": [404, "nope"]},
            ],
        }]},
    }
    config.update(extra)
    return config


@dataclass
class Bizzyd:
    """A running master started from a config dict in its own prefix directory."""

    prefix: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    seen_pids: set[int] = field(default_factory=set)

    @property
    def conf(self) -> Path:
        return self.prefix / "conf" / "bizzyd.yaml"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "run" / "bizzyd.pid"

    @property
    def log_file(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def write_config(self, config: dict) -> None:
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self, *args: str) -> list[str]:
        return [*BIZZYD, "-p", str(self.prefix), "-c", str(self.conf), *args]

    def start(self, wait: bool = True) -> Bizzyd:
        env = {**os.environ, "PYTHONPATH": _pythonpath(self.env.get("PYTHONPATH")),
               **{k: v for k, v in self.env.items() if k != "PYTHONPATH"}}
        with open(self.prefix / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(self.command(), env=env, cwd=self.prefix,
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        self.seen_pids.add(self.proc.pid)
        if wait:
            wait_for(self.ready, timeout=15, what="bizzyd to answer /health")
        return self

    def ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            stderr = (self.prefix / "stderr.log").read_text()
            raise AssertionError(f"bizzyd exited with {self.proc.returncode}: "
                                 f"{stderr}\n{self.log()}")
        try:
            return http_get(self.port, timeout=1)[0] == 200
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def workers(self, pid: int | None = None) -> list[int]:
        found = [p for p, title in children_of(pid or self.pid)
                 if title.startswith("bizzyd: worker process")]
        self.seen_pids.update(found)
        return found

    def titles(self) -> list[str]:
        return [t for _, t in children_of(self.pid)]

    def log(self) -> str:
        try:
            return self.log_file.read_text()
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        wait_for(lambda: self.log().count(text) >= count, timeout, what=f"log line {text!r}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the master and check nothing is left behind."""
        if self.proc is None:
            return 0
        self.workers()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"bizzyd did not stop within {timeout}s") from None
        return code

    def kill_everything(self) -> None:
        for pid in self.seen_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def leftovers(self) -> list[str]:
        problems = [f"process {p} still alive" for p in self.seen_pids if alive(p)]
        if self.pid_file.exists():
            problems.append(f"pid file {self.pid_file} left behind")
        problems += [f"{p} left behind" for p in (self.prefix / "run").glob("*.sock")]
        return problems


def _pythonpath(extra: str | None) -> str:
    parts = [str(ROOT)] + ([extra] if extra else [])
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


@contextlib.contextmanager
def running(prefix: Path, config: dict, port: int, env: dict | None = None,
            stop_signal: int = signal.SIGTERM) -> Iterator[Bizzyd]:
    """A master for the duration of a `with` block; checks for leftovers after."""
    b = Bizzyd(prefix, port, env or {})
    b.write_config(config)
    try:
        b.start()
        yield b
        b.stop(stop_signal)
        wait_for(lambda: not b.leftovers(), timeout=5, what="no leftovers")
    finally:
        b.kill_everything()


def fetch_raw(port: int, path: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request with exactly these headers (plus Host); the raw body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()
