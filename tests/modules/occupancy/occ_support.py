"""Helpers for the occupancy tests: a migrated database, hives, a bizzyd config,
HTTP and bus helpers, private services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bizzyd.bus import OCCUPANCY_UPDATE, Bus
from bizzyd_proc import ROOT, base_config, children_of, free_port
from modules.database.migrate import up

SERVER_DSN = os.environ.get("BIZZYD_PG_DSN", "postgresql://postgres@127.0.0.1:25432/bizzyd")
MEMCACHED = os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211")

LOCATIONS = [
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy$", "content": "occupancy"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$",
     "content": "occupancy_stream"},
    {"location": "= /v1/occupancy", "content": "occupancy_many"},
    {"location": "= /v1/occupancy/stream", "content": "occupancy_stream_many"},
]


def run(coro):
    return asyncio.run(coro)


async def _execute(dsn: str, sql: str, *args) -> list:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def sql(dsn: str, text: str, *args) -> list:
    return run(_execute(dsn, text, *args))


@contextlib.contextmanager
def temporary_database(server_dsn: str = SERVER_DSN) -> Iterator[str]:
    """A new database with every migration applied; dropped afterwards."""
    name = f"bizzyd_t_{secrets.token_hex(6)}"
    sql(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))
    try:
        run(up(dsn, report=lambda line: None))
        yield dsn
    finally:
        sql(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_hives(dsn: str, n: int, capacity: int = 100, occupancy: bool = True) -> list[int]:
    """n hives (with a hive_occupancy row each when `occupancy`); their ids."""
    rows = sql(dsn, """
        WITH acc AS (INSERT INTO account (name) VALUES ('test') RETURNING id),
        addr AS (INSERT INTO address (street, city, country)
                 SELECT 'Street ' || g, 'City', 'DE' FROM generate_series(1, $1) g
                 RETURNING id)
        INSERT INTO hive (account_id, address_id, hive_type_id, status_id, name, timezone,
                          capacity)
        SELECT (SELECT id FROM acc), addr.id,
               (SELECT id FROM hive_type WHERE code = 'bar'),
               (SELECT id FROM hive_status WHERE code = 'active'),
               'Hive ' || addr.id, 'Europe/Berlin', $2
        FROM addr RETURNING id""", n, capacity)
    ids = sorted(r["id"] for r in rows)
    if occupancy:
        sql(dsn, """INSERT INTO hive_occupancy (hive_id, occupancy, total_in, total_out,
                                                updated_at)
                    SELECT id, id % 50, 1000 + id % 50, 1000, now() - interval '1 minute'
                    FROM unnest($1::bigint[]) id""", ids)
    return ids


def set_occupancy(dsn: str, hive_id: int, occupancy: int, total_in: int, total_out: int,
                  at: float | None = None) -> float:
    """Write a hive's occupancy row in Postgres (as ingest would); returns updated_at."""
    rows = sql(dsn, """
        INSERT INTO hive_occupancy (hive_id, occupancy, total_in, total_out, updated_at)
        VALUES ($1, $2, $3, $4, COALESCE(to_timestamp($5), now()))
        ON CONFLICT (hive_id) DO UPDATE SET occupancy = $2, total_in = $3, total_out = $4,
            updated_at = COALESCE(to_timestamp($5), now())
        RETURNING updated_at""", hive_id, occupancy, total_in, total_out, at)
    return rows[0]["updated_at"].timestamp()


def occupancy_config(port: int, dsn: str, workers: int = 2, **settings: object) -> dict:
    config = base_config(port, modules=["modules.database", "modules.occupancy"],
                         worker_processes=workers,
                         database={"dsn": dsn, "connect_timeout": "1s",
                                   "reconnect_max_backoff": "2s"},
                         occupancy={"memcached": MEMCACHED, **settings})
    locations = config["http"]["servers"][0]["locations"]
    locations[:0] = [dict(loc) for loc in LOCATIONS]
    return config


def request(port: int, path: str, headers: dict | None = None,
            timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection: (status, headers (lower-case names), body)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def get_json(port: int, path: str) -> tuple[int, dict]:
    status, _, body = request(port, path)
    return status, json.loads(body)


class Pusher:
    """Pushes OCCUPANCY_UPDATE messages on a running bizzyd's bus (as ingest does)."""

    def __init__(self, run_dir: Path) -> None:
        self.bus = Bus(run_dir)
        self.sock = self.bus.pusher("occupancy.updates", linger_ms=500)

    def push(self, hive_id: int, occupancy: int, total_in: int, total_out: int,
             at: float | None = None) -> float:
        at = time.time() if at is None else at
        self.sock.send(OCCUPANCY_UPDATE.encode(hive_id, occupancy, total_in, total_out,
                                               1, 0, at))
        return at

    def close(self) -> None:
        self.bus.close()


def role_pids(master: int, role: str) -> list[int]:
    return [p for p, title in children_of(master) if title == f"bizzyd: {role} process"]


@contextlib.contextmanager
def private_service(tmp_path: Path, name: str) -> Iterator[tuple[int, callable]]:
    """A private memcached or Postgres (stopping the shared one would disturb others)."""
    port = free_port()
    variable = {"memcached": "BIZZYD_MC_PORT", "postgres": "BIZZYD_PG_PORT"}[name]
    env = {**os.environ, "BIZZYD_STATE_DIR": str(tmp_path / "state"), variable: str(port),
           "BIZZYD_PG_FAST": "1"}

    def services(action: str) -> None:
        for attempt in range(3):
            out = subprocess.run([str(ROOT / "scripts" / "services"), action, name], env=env,
                                 timeout=120, capture_output=True, text=True)
            if out.returncode == 0:
                return
            if attempt < 2:
                time.sleep(1)  # e.g. the old postmaster was still releasing the port
        raise AssertionError(f"scripts/services {action} {name} failed:\n{out.stdout}\n"
                             f"{out.stderr}")

    services("start")
    try:
        yield port, services
    finally:
        services("stop")


def shm_segments(pids) -> list[str]:
    """Shared-memory segments in /dev/shm of the given master pids."""
    wanted = {str(p) for p in pids}
    return sorted(p.name for p in Path("/dev/shm").glob("bizzyd.*")
                  if p.name.split(".")[1] in wanted)


class SSEClient:
    """A Server-Sent Events client on a raw socket; a thread parses the chunked
    stream and timestamps every event and comment as it arrives."""

    def __init__(self, port: int, path: str, last_event_id: str | None = None) -> None:
        import queue
        import threading

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed before the head: {data!r}")
            data += chunk
        head, _, self._rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v for k, v in
                        (line.split(": ", 1) for line in lines[1:] if ": " in line)}
        self.pid = int(self.headers.get("x-bizzyd-worker", 0))
        self.items: queue.Queue = queue.Queue()
        self.ended = threading.Event()  # the last chunk (0) arrived
        self.closed = threading.Event()  # the connection closed
        self.events: list[dict] = []
        self.comments: list[str] = []
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf, text = self._rest, b""
        try:
            while True:
                while True:  # whole chunks in buf
                    line, sep, rest = buf.partition(b"\r\n")
                    if not sep:
                        break
                    size = int(line, 16)
                    if len(rest) < size + 2:
                        break
                    if size == 0:
                        self.ended.set()
                        buf = b""
                        break
                    text += rest[:size]
                    buf = rest[size + 2:]
                    text = self._parse(text)
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        finally:
            self.closed.set()

    def _parse(self, text: bytes) -> bytes:
        while b"\n\n" in text:
            block, _, text = text.partition(b"\n\n")
            now = time.time()
            fields: dict = {"at": now}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    self.items.put(("comment", line[1:].strip(), now))
                else:
                    name, _, value = line.partition(": ")
                    fields[name] = value
            if "data" in fields:
                fields["json"] = json.loads(fields["data"])
                self.events.append(fields)
                self.items.put(("event", fields, now))
        return text

    def next_event(self, timeout: float = 5.0) -> dict:
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, value, _ = self.items.get(timeout=max(0.01,
                                                            deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no event within {timeout}s") from None
            if kind == "event":
                return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
