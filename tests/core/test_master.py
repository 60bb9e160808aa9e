"""The master and its workers, driven with real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bizzyd_proc import Bizzyd, alive, base_config, http_get, running, wait_for

pytestmark = pytest.mark.slow

SLOW_MODULE = '''
"""A test module: a content handler that answers after a delay."""
import asyncio
import os
from bizzyd.config.schema import LOCATION, Directive
from bizzyd.config.types import Duration
from bizzyd.http.response import Response
from bizzyd.module import Module

async def slow(request):
    await asyncio.sleep(request.location.config["slow_delay"])
    return Response(200, b"slow done")

module = Module(
    name="slowtest",
    directives=[Directive("slow_delay", Duration(), "1s", (LOCATION,))],
    content_handlers={"slow": slow},
)
'''

CRASH_MODULE = '''
from bizzyd.module import Module

def boom(ctx):
    raise RuntimeError("worker init fails on purpose")

module = Module(name="crashtest", init_worker=boom)
'''


def module_dir(tmp_path: Path, name: str, source: str) -> Path:
    """A module in a directory outside the repository (a third party's)."""
    d = tmp_path / "thirdparty"
    d.mkdir(exist_ok=True)
    (d / f"{name}.py").write_text(textwrap.dedent(source))
    return d


def slow_config(port: int, delay: str = "1s") -> dict:
    config = base_config(port, modules=["slowtest"])
    config["http"]["servers"][0]["locations"].append(
        {"location": "/slow", "content": "slow", "slow_delay": delay})
    return config


# -- starting, titles, respawn ---------------------------------------------------

def test_two_workers_start_with_titles_and_answer(bizzyd):
    workers = wait_for(lambda: len(bizzyd.workers()) == 2 and bizzyd.workers(), what="2 workers")
    assert len(workers) == 2
    title = Path(f"/proc/{bizzyd.pid}/cmdline").read_bytes().decode()
    assert title.startswith("bizzyd: master process")
    assert bizzyd.titles() == ["bizzyd: worker process"] * 2
    assert http_get(bizzyd.port) == (200, b'{"status":"ok"}')
    assert http_get(bizzyd.port, "/other")[0] == 404


def test_killed_worker_is_replaced_within_two_seconds(bizzyd):
    victim = wait_for(lambda: bizzyd.workers(), what="workers")[0]
    bizzyd.send  # noqa: B018 (the master is alive)
    killed_at = time.monotonic()
    import os
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in bizzyd.workers() and len(bizzyd.workers()) == 2,
             timeout=2, what="a replacement worker")
    assert time.monotonic() - killed_at < 2
    for _ in range(20):
        assert http_get(bizzyd.port)[0] == 200
    bizzyd.wait_log(f"worker process {victim} exited (signal SIGKILL)")


def test_crash_loop_backs_off(tmp_path, port):
    config = base_config(port, modules=["crashtest"], worker_processes=1)
    b = Bizzyd(tmp_path, port, {"PYTHONPATH": str(module_dir(tmp_path, "crashtest",
                                                                 CRASH_MODULE))})
    b.write_config(config)
    try:
        b.start(wait=False)
        time.sleep(6)
        starts = b.log().count("started worker process")
        assert 3 <= starts <= 8, b.log()
        assert "keeps dying; respawning slot 0 in" in b.log()
        assert "worker init fails on purpose" in b.log()
        assert b.stop() == 0
    finally:
        b.kill_everything()


# -- stale and live pid files ------------------------------------------------------

def test_stale_pid_file_is_cleaned(tmp_path, port):
    b = Bizzyd(tmp_path, port)
    b.write_config(base_config(port))
    b.pid_file.parent.mkdir(parents=True)
    b.pid_file.write_text("999999\n")
    try:
        b.start()
        assert int(b.pid_file.read_text()) == b.pid
        assert "removing stale pid file" in b.log()
        b.stop()
    finally:
        b.kill_everything()


def test_second_master_refuses_a_live_pid_file(bizzyd):
    other = Bizzyd(bizzyd.prefix, bizzyd.port)
    try:
        other.start(wait=False)
        assert other.proc.wait(10) == 1
        assert f"bizzyd is already running (pid {bizzyd.pid}" in bizzyd.log()
        assert int(bizzyd.pid_file.read_text()) == bizzyd.pid
    finally:
        other.kill_everything()


# -- HUP ------------------------------------------------------------------------

class LoadClient:
    """Keep-alive clients that count every request that did not get a full response."""

    def __init__(self, port: int, clients: int = 4, path: str = "/health") -> None:
        self.port, self.clients, self.path = port, clients, path
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: list[tuple[float, bytes]] = []
        self.stop = False

    async def _one(self) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        reader = writer = None
        while not self.stop:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(request)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                self.failures.append(repr(exc))
                writer.close()
                writer = None
                continue
            if not head.startswith(b"HTTP/1.1 200"):
                self.failures.append(head.decode())
            self.ok += 1
            self.bodies.append((time.monotonic(), body))
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def run(self, seconds: float) -> None:
        tasks = [asyncio.create_task(self._one()) for _ in range(self.clients)]
        await asyncio.sleep(seconds)
        self.stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_reloads_under_load_fail_no_request(tmp_path, port):
    config = base_config(port)
    with running(tmp_path, config, port) as b:
        load = LoadClient(port, clients=4)
        changed_at: list[float] = []

        def reload_loop() -> None:
            for i in range(11):
                time.sleep(1.2)
                if i == 5:
                    config["http"]["servers"][0]["locations"][0]["return"] = [200, "v2"]
                    b.write_config(config)
                    changed_at.append(time.monotonic())
                b.send(signal.SIGHUP)

        reloader = in_thread(reload_loop)
        asyncio.run(load.run(15))
        reloader.join(5)
        assert load.failures == [], load.failures[:5]
        assert load.ok > 1000
        assert b.log().count("configuration reloaded") >= 10
        late = [body for t, body in load.bodies if t > changed_at[0] + 3]
        assert late and all(body == b"v2" for body in late)
        assert len(b.workers()) == 2


def test_reload_with_broken_config_keeps_serving_the_old_one(bizzyd):
    workers = sorted(bizzyd.workers())
    bizzyd.conf.write_text(bizzyd.conf.read_text() + "\nworker_timeout: whenever\n")
    bizzyd.send(signal.SIGHUP)
    bizzyd.wait_log("reload failed, still running the old configuration")
    assert "worker_timeout: expected a duration" in bizzyd.log()
    time.sleep(0.5)
    assert sorted(bizzyd.workers()) == workers
    assert http_get(bizzyd.port) == (200, b'{"status":"ok"}')


def test_reload_adds_and_removes_listeners(bizzyd):
    import yaml

    from bizzyd_proc import free_port
    extra = free_port()
    config = yaml.safe_load(bizzyd.conf.read_text())
    config["http"]["servers"][0]["listen"] = [f"127.0.0.1:{extra}"]
    bizzyd.write_config(config)
    bizzyd.send(signal.SIGHUP)
    wait_for(lambda: _answers(extra), what="the new listener")
    wait_for(lambda: not _answers(bizzyd.port), what="the old listener to close")
    bizzyd.port = extra


def _answers(port: int) -> bool:
    try:
        return http_get(port, timeout=1)[0] == 200
    except OSError:
        return False


# -- QUIT, TERM ----------------------------------------------------------------

def test_quit_under_load_completes_every_in_flight_request(tmp_path, port):
    env = {"PYTHONPATH": str(module_dir(tmp_path, "slowtest", SLOW_MODULE))}
    with running(tmp_path, slow_config(port, "1500ms"), port, env, signal.SIGQUIT) as b:
        results: list[object] = []

        def one() -> None:
            try:
                results.append(http_get(port, "/slow", timeout=10))
            except OSError as exc:
                results.append(exc)

        threads = [in_thread(one) for _ in range(12)]
        time.sleep(0.5)
        b.send(signal.SIGQUIT)
        for t in threads:
            t.join(10)
        assert results == [(200, b"slow done")] * 12
        assert b.proc.wait(10) == 0
        assert "exit (graceful shutdown)" in b.log()


def test_term_stops_within_its_timeout_despite_slow_requests(tmp_path, port):
    env = {"PYTHONPATH": str(module_dir(tmp_path, "slowtest", SLOW_MODULE))}
    config = slow_config(port, "30s")
    config["fast_shutdown_timeout"] = "3s"
    with running(tmp_path, config, port, env) as b:
        threads = [in_thread(lambda: _swallow(lambda: http_get(port, "/slow", timeout=40)))
                   for _ in range(4)]
        time.sleep(0.5)
        started = time.monotonic()
        b.send(signal.SIGTERM)
        assert b.proc.wait(10) == 0
        assert time.monotonic() - started < 3.5
        assert "exit (fast shutdown)" in b.log()
        for t in threads:
            t.join(5)


def _swallow(fn) -> None:
    """Run a request whose connection the fast shutdown is expected to cut."""
    try:
        fn()
    except (OSError, IndexError):
        pass


# -- USR1, TTIN/TTOU, WINCH ------------------------------------------------------

def test_usr1_reopens_logs_in_master_and_workers(bizzyd):
    rotated = bizzyd.log_file.with_name("error.log.1")
    bizzyd.log_file.rename(rotated)
    bizzyd.send(signal.SIGUSR1)
    wait_for(bizzyd.log_file.exists, what="a new error.log")
    time.sleep(0.3)  # the workers reopen on the same signal, relayed by the master
    with socket.create_connection(("127.0.0.1", bizzyd.port)) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        s.recv(1024)
    bizzyd.wait_log("sent a bad request")
    assert "reopening logs (SIGUSR1)" in rotated.read_text()


def test_ttin_and_ttou_change_the_worker_count(bizzyd):
    wait_for(lambda: len(bizzyd.workers()) == 2, what="2 workers")
    bizzyd.send(signal.SIGTTIN)
    wait_for(lambda: len(bizzyd.workers()) == 3, what="3 workers")
    bizzyd.send(signal.SIGTTOU)  # identical pending signals coalesce: one at a time
    wait_for(lambda: len(bizzyd.workers()) == 2, what="2 workers")
    bizzyd.send(signal.SIGTTOU)
    wait_for(lambda: len(bizzyd.workers()) == 1, what="1 worker")
    bizzyd.send(signal.SIGTTOU)
    bizzyd.wait_log("one worker is the minimum")
    assert http_get(bizzyd.port)[0] == 200


def test_winch_stops_workers_and_hup_brings_them_back(bizzyd):
    bizzyd.send(signal.SIGWINCH)
    wait_for(lambda: not bizzyd.workers(), what="no workers")
    assert alive(bizzyd.pid)
    bizzyd.send(signal.SIGHUP)
    wait_for(lambda: len(bizzyd.workers()) == 2, what="workers again")
    wait_for(bizzyd.ready, what="answers again")


# -- USR2 binary upgrade ---------------------------------------------------------

def test_binary_upgrade_then_quit_old_master_refuses_no_connection(bizzyd):
    old_pid = bizzyd.pid
    refused: list[str] = []
    served = [0]
    stop = threading.Event()

    def prober() -> None:
        while not stop.is_set():
            try:
                assert http_get(bizzyd.port, timeout=5)[0] == 200
                served[0] += 1
            except (OSError, AssertionError) as exc:
                refused.append(repr(exc))

    threads = [in_thread(prober) for _ in range(2)]
    bizzyd.send(signal.SIGUSR2)
    oldbin = bizzyd.pid_file.with_name("bizzyd.pid.oldbin")
    wait_for(lambda: oldbin.exists() and bizzyd.pid_file.exists(), what="both pid files")
    new_pid = int(bizzyd.pid_file.read_text())
    assert new_pid != old_pid
    wait_for(lambda: len(bizzyd.workers(new_pid)) == 2, what="new master's workers")
    time.sleep(0.5)
    bizzyd.send(signal.SIGQUIT)
    assert bizzyd.proc.wait(10) == 0
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
    assert refused == []
    assert served[0] > 50
    assert not oldbin.exists()
    assert alive(new_pid)
    bizzyd.seen_pids.add(new_pid)
    import os
    os.kill(new_pid, signal.SIGQUIT)
    wait_for(lambda: not alive(new_pid), what="the new master to stop")
    assert not bizzyd.pid_file.exists()


def test_failed_upgrade_restores_the_pid_file(bizzyd):
    bizzyd.conf.write_text(bizzyd.conf.read_text() + "\nworker_timeout: broken\n")
    bizzyd.send(signal.SIGUSR2)
    bizzyd.wait_log("binary upgrade: new master")
    bizzyd.wait_log("pid file restored")
    assert int(bizzyd.pid_file.read_text()) == bizzyd.pid
    assert http_get(bizzyd.port)[0] == 200


def test_signal_command_uses_the_pid_file(bizzyd):
    import subprocess
    result = subprocess.run(bizzyd.command("-s", "reload"), timeout=30, capture_output=True)
    assert result.returncode == 0, result.stderr
    bizzyd.wait_log("reconfiguring (SIGHUP)")
    result = subprocess.run(bizzyd.command("-s", "quit"), timeout=30, capture_output=True)
    assert result.returncode == 0
    assert bizzyd.proc.wait(15) == 0


def test_reuseport_gives_each_worker_its_own_socket_across_reloads(tmp_path, port):
    config = base_config(port)
    config["http"]["servers"][0]["listen"] = [f"127.0.0.1:{port} reuseport"]
    with running(tmp_path, config, port) as b:
        workers = wait_for(lambda: len(b.workers()) == 2 and b.workers(), what="workers")
        inodes = [_listening_inodes(w) for w in workers]
        assert all(len(i) == 1 for i in inodes) and inodes[0] != inodes[1]
        load = LoadClient(port, clients=4)
        reloader = in_thread(lambda: [time.sleep(1) or b.send(signal.SIGHUP) for _ in range(3)])
        asyncio.run(load.run(5))
        reloader.join(5)
        assert load.failures == [] and load.ok > 100
        b.send(signal.SIGTTIN)
        wait_for(lambda: len(b.workers()) == 3, what="3 workers")
        assert len({i for w in b.workers() for i in _listening_inodes(w)}) == 3


def _listening_inodes(pid: int) -> set[str]:
    """Socket inodes of a process that are listening TCP sockets."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            listening.add(fields[9])
    mine = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    return mine & listening


# -- listeners, privileges, limits, heartbeats -------------------------------------

BLOCK_MODULE = '''
import time
from bizzyd.http.response import Response
from bizzyd.module import Module

def block(request):
    time.sleep(120)  # blocks the event loop: the heartbeat stops
    return Response(200, b"never")

module = Module(name="blocktest", content_handlers={"block": block})
'''


def unix_get(path: Path, target: str = "/health") -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_ipv4_ipv6_and_unix_listeners(tmp_path, port):
    from bizzyd_proc import free_port
    port6 = free_port()
    config = base_config(port)
    config["http"]["servers"][0]["listen"] = [
        f"127.0.0.1:{port}", f"[::1]:{port6} backlog=128", "unix:run/bizzyd.sock"]
    with running(tmp_path, config, port) as b:
        assert http_get(port6, host="::1") == (200, b'{"status":"ok"}')
        sock_path = tmp_path / "run" / "bizzyd.sock"
        assert unix_get(sock_path) == (200, b'{"status":"ok"}')
        assert "listening on [::1]:" in b.log() and "listening on unix:" in b.log()
    assert not sock_path.exists()


def test_unresponsive_worker_is_killed_after_worker_timeout(tmp_path, port):
    env = {"PYTHONPATH": str(module_dir(tmp_path, "blocktest", BLOCK_MODULE))}
    config = base_config(port, modules=["blocktest"], worker_processes=1, worker_timeout="2s")
    config["http"]["servers"][0]["locations"].append({"location": "/block",
                                                       "content": "block"})
    with running(tmp_path, config, port, env) as b:
        victim = wait_for(lambda: b.workers(), what="a worker")[0]
        in_thread(lambda: _swallow(lambda: http_get(port, "/block", timeout=30)))
        b.wait_log(f"worker process {victim} is unresponsive", timeout=10)
        wait_for(lambda: b.workers() and victim not in b.workers(), what="a new worker")
        wait_for(b.ready, what="service again")


def test_workers_drop_privileges_and_raise_nofile(tmp_path, port):
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    config = base_config(port, user="nobody", group="nogroup", worker_rlimit_nofile=4096)
    with running(tmp_path, config, port) as b:
        for pid in wait_for(lambda: len(b.workers()) == 2 and b.workers(), what="workers"):
            status = Path(f"/proc/{pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
            assert uid_line.split()[1:] == ["65534"] * 4
            assert gid_line.split()[1:] == ["65534"] * 4
            limits = Path(f"/proc/{pid}/limits").read_text()
            line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
            assert line.split()[3] == "4096"
        master = Path(f"/proc/{b.pid}/status").read_text()
        assert "Uid:\t0\t0\t0\t0" in master
        assert http_get(port)[0] == 200
        # a dropped worker reopens its log after logrotate, though its user cannot
        # traverse the test's prefix (0700) nor create files in logs/
        log = b.prefix / "logs" / "error.log"
        log.rename(log.with_suffix(".log.1"))
        b.send(signal.SIGUSR1)
        wait_for(log.exists, what="the master's new log")
        assert log.stat().st_uid == 65534  # handed to the workers' user

        def reopened() -> bool:
            targets = {os.readlink(fd) for pid in b.workers()
                       for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.is_symlink()}
            return str(log) in targets and str(log.with_suffix(".log.1")) not in targets

        wait_for(reopened, timeout=5, what="every worker on the new log file")
        assert "cannot reopen" not in log.with_suffix(".log.1").read_text() + log.read_text()


def test_children_stop_when_the_master_is_killed(tmp_path, port):
    from bizzyd.shm import SHM_DIR
    with running(tmp_path, base_config(port), port) as b:
        workers = wait_for(lambda: len(b.workers()) == 2 and b.workers(), what="workers")
        segments = list(SHM_DIR.glob(f"bizzyd.{b.pid}.*"))
        assert segments
        b.send(signal.SIGKILL)
        b.proc.wait(5)
        wait_for(lambda: not any(alive(w) for w in workers), timeout=5,
                 what="the orphaned workers to exit")
        b.pid_file.unlink()  # what a kill -9 leaves; the next start removes the rest
        b.start()
        assert "removed 2 stale shared memory segment(s)" in b.log()
        assert not any(p.exists() for p in segments)
