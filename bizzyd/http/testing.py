"""Driving a worker's HTTP engine in-process, without sockets: for tests (the
differential fuzzing of the parser) and benchmarks (bench/hotpath.py).  Nothing here
runs in a server."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop
import yaml

from ..config.load import load_config
from ..module import ProcessContext
from .engine import HttpEngine, build_router
from .protocol import HttpProtocol


class Transport:
    """Just enough of a uvloop TCP transport: counts the writes, keeps the last one
    (and all of them with `keep=True`)."""

    def __init__(self, keep: bool = False) -> None:
        self.last = b""
        self.writes = 0
        self.written: list[bytes] | None = [] if keep else None
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1
        if self.written is not None:
            self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class InProcessWorker:
    """A worker's engine on a config dict (written under `prefix`), with its modules'
    worker hooks run; `connect()` gives a new connection on a fake transport."""

    def __init__(self, config: dict, prefix: Path) -> None:
        (prefix / "conf").mkdir(parents=True, exist_ok=True)
        conf = prefix / "conf" / "bizzyd.yaml"
        conf.write_text(yaml.safe_dump(config, sort_keys=False))
        self.config = load_config(conf, prefix)
        self.loop = uvloop.new_event_loop()
        self.ctx = ProcessContext(self.config, logging.getLogger("inprocess"), "worker",
                                  loop=self.loop)
        for module in self.config.modules:
            if module.init_worker is not None:
                module.init_worker(self.ctx)
        self.engine = HttpEngine(self.ctx, build_router(self.config), HttpProtocol)
        self.engine._tick()
        self.servers = self.engine.router.servers_for(next(iter(self.engine.router.by_key)))

    def connect(self, keep: bool = True) -> tuple[HttpProtocol, Transport]:
        transport = Transport(keep)
        conn = HttpProtocol(self.engine, self.servers)
        conn.connection_made(transport)
        return conn, transport

    def close(self) -> None:
        for conn in list(self.engine.connections):
            conn.abort()
        for module in self.config.modules:
            if module.exit_worker is not None:
                module.exit_worker(self.ctx)
        self.loop.close()


@contextlib.contextmanager
def module_worker(prefix: Path, name: str, source: str, locations: list[dict],
                  **http: Any) -> Iterator[InProcessWorker]:
    """An InProcessWorker with one module, `name`, written from `source` into `prefix`
    (importable while the block runs), and one server with `locations`."""
    (prefix / f"{name}.py").write_text(source)
    sys.path.insert(0, str(prefix))
    config = {"worker_processes": 1, "error_log": "logs/error.log", "modules": [name],
              "http": {**http, "servers": [{"listen": ["127.0.0.1:8080"],
                                            "server_name": ["_"], "locations": locations}]}}
    worker = InProcessWorker(config, prefix)
    try:
        yield worker
    finally:
        worker.close()
        sys.path.remove(str(prefix))
