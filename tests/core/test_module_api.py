"""A third-party module, loaded by import path from outside the repository, with
every hook of the module API driven through a real master."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bizzyd_proc import ROOT, Bizzyd, alive, base_config, http_get, wait_for


@pytest.fixture
def outside(tmp_path):
    """The example module copied into a directory that is not part of the repo."""
    folder = tmp_path / "site"
    folder.mkdir()
    shutil.copy(ROOT / "docs" / "examples" / "bizzyd_hello.py", folder / "bizzyd_hello.py")
    return folder


def hello_config(port: int, **location: object) -> dict:
    config = base_config(port, modules=["bizzyd_hello"])
    config["http"]["servers"][0]["locations"].append(
        {"location": "~ ^/hello/(?<name>[a-z]+)$", "content": "hello",
         "hello_greeting": "Hi", **location})
    return config


def events(b: Bizzyd) -> list[str]:
    path = b.prefix / "hello" / "events.log"
    return path.read_text().splitlines() if path.exists() else []


def test_every_hook_of_a_third_party_module(tmp_path, port, outside):
    b = Bizzyd(tmp_path, port, {"PYTHONPATH": str(outside)})
    b.write_config(hello_config(port, hello_shout=True))
    try:
        b.start()
        # process role + zone: the ticker process counts in shared memory
        titles = wait_for(lambda: "bizzyd: hello ticker process" in b.titles() and b.titles(),
                          what="the role process")
        assert titles.count("bizzyd: worker process") == 2
        status, body = http_get(port, "/hello/ada")
        data = json.loads(body.lower())  # the body filter upper-cased it
        assert status == 200
        assert data["greeting"] == "hi" and data["name"] == "ada"
        first = data["ticks"]
        time.sleep(0.5)
        assert json.loads(http_get(port, "/hello/ada")[1].lower())["ticks"] > first
        # header filter and access-phase handler
        with __import__("socket").create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /hello/bob HTTP/1.1\r\nHost: x\r\nX-Hello-Deny: 1\r\n"
                      b"Connection: close\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 403") and b"hello says no" in reply.lower()
        with __import__("socket").create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /hello/bob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"\r\nX-Hello: 1\r\n" in s.recv(4096)
        # a location that is not the module's is untouched (and stays on the fast path)
        assert http_get(port) == (200, b'{"status":"ok"}')
        # USR1 reaches the module's reopen_logs in the workers
        b.send(signal.SIGUSR1)
        wait_for(lambda: sum("reopen_logs worker" in e for e in events(b)) == 2,
                 what="reopen_logs in both workers")
        assert b.stop(signal.SIGQUIT) == 0
        log = events(b)
        assert sum(e.startswith("init_master master") for e in log) == 1
        assert sum(e.startswith("init_worker worker") for e in log) == 2
        assert sum(e.startswith("exit_worker served=") for e in log) == 2
        assert log[-1].startswith("exit_master master")
        assert "hello: master ready" in b.log()
        assert not b.leftovers()
    finally:
        b.kill_everything()


def test_module_command_and_check(tmp_path, port, outside):
    b = Bizzyd(tmp_path, port, {"PYTHONPATH": str(outside)})
    b.write_config(hello_config(port))
    env = {"PYTHONPATH": f"{outside}:{ROOT}"}
    run = subprocess.run(b.command("hello"), capture_output=True, text=True, timeout=30,
                         env={**__import__("os").environ, **env})
    assert run.returncode == 0 and run.stdout.strip() == "Hi"
    b.write_config(hello_config(port, hello_greeting="  "))
    run = subprocess.run(b.command("-t"), capture_output=True, text=True, timeout=30,
                         env={**__import__("os").environ, **env})
    assert run.returncode == 1
    assert "locations[2].hello_greeting: must not be blank" in run.stderr


EXITING = '''
import asyncio, os
from bizzyd.module import Module

def _exit(ctx):
    with open(os.environ["EXIT_LOG"], "a") as f:
        f.write("{name}\\n")
    if {hang}:
        return asyncio.sleep(3600)  # a stuck close: awaited, bounded by the worker

module = Module(name="{name}", exit_worker=_exit)
'''


def test_exit_hooks_run_in_reverse_order_and_a_stuck_one_is_bounded(tmp_path, port):
    """A module closes before the modules listed ahead of it (which it may use), and a
    hook that never finishes costs the worker EXIT_HOOK_TIMEOUT, not its exit: with
    the master killed nothing else would ever stop it."""
    site = tmp_path / "site"
    site.mkdir()
    for name, hang in (("first_mod", False), ("second_mod", True)):
        (site / f"{name}.py").write_text(EXITING.format(name=name, hang=hang))
    exit_log = tmp_path / "exits.log"
    b = Bizzyd(tmp_path / "prefix", port, {"PYTHONPATH": str(site),
                                           "EXIT_LOG": str(exit_log)})
    b.prefix.mkdir()
    config = base_config(port, modules=["first_mod", "second_mod"])
    config["worker_processes"] = 1
    b.write_config(config)
    try:
        b.start()
        (worker,) = b.workers()
        started = time.monotonic()
        b.proc.kill()  # kill -9: the worker stops by itself (parent-death signal)
        b.proc.wait()
        wait_for(lambda: not alive(worker), timeout=25, what="the orphaned worker to exit")
        took = time.monotonic() - started
        assert exit_log.read_text().split() == ["second_mod", "first_mod"]
        assert "second_mod: exit_worker did not finish in 10 s" in b.log()
        assert 9 < took < 20, took
    finally:
        b.kill_everything()
        for segment in Path("/dev/shm").glob(f"bizzyd.{b.proc.pid}.*"):
            segment.unlink()  # the killed master could not remove its zones
