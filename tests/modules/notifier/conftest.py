"""A bizzyd with the notifier against a fake FCM (modules.notifier.testing), on a demo
city of 12 hives of capacity 100; helpers to make users, devices and alert settings and
to move a hive's occupancy over the bus (as ingest does)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "occupancy"))

from occ_support import Pusher  # noqa: E402

from bizzyd_proc import Bizzyd, free_port, running, wait_for  # noqa: E402
from modules.auth.testing import emulator_address  # noqa: E402
from modules.database.testing import fetch_sync, temporary_database_sync  # noqa: E402
from modules.hives.testing import load_demo  # noqa: E402
from modules.notifier.testing import FakeFCM  # noqa: E402
from modules.users.testing import users_config  # noqa: E402

RELOADED = re.compile(r"alert settings reloaded \(([0-9,]*)")
PROJECT = "demo-bizzy"
QUEUE = "notifications"
SETTINGS = {"enabled": True, "fcm_url": "", "visibility_timeout": "3s", "retry_base": "1s",
            "retry_max": "2s", "max_attempts": 3, "scan_interval": "1s", "batch_size": 5,
            "senders": 2, "sender_processes": 0}


def sql(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    return fetch_sync(dsn, query, *args)


@dataclass
class Stack:
    bizzyd: Bizzyd
    dsn: str
    fcm: FakeFCM
    port: int
    emulator: str
    pusher: Pusher
    hives: list[int]
    totals: dict[int, int] = field(default_factory=dict)
    clock: Any = field(default_factory=lambda: itertools.count(1))

    def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        return sql(self.dsn, query, *args)

    def user(self, *tokens: str) -> int:
        """A new app user with these push devices (tokens made unique)."""
        uid = sql(self.dsn, "INSERT INTO app_user (firebase_uid) VALUES ($1) RETURNING id",
                  f"t{secrets.token_hex(8)}")[0]["id"]
        for t in tokens:
            sql(self.dsn, "INSERT INTO user_device (fcm_token, user_id, platform) "
                          "VALUES ($1, $2, 'android')", t, uid)
        return uid

    def alert(self, user: int, hive: int, percent: int, above: bool = True, margin: int = 5,
              cooldown: int = 0, quiet: tuple | None = None, tz: str = "UTC",
              enabled: bool = True) -> int:
        return sql(self.dsn, """
            INSERT INTO user_notification_def (user_id, hive_id, kind, threshold_percent,
                margin, cooldown_seconds, quiet_start, quiet_end, time_zone, enabled)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
            user, hive, "occupancy_above" if above else "occupancy_below", percent, margin,
            cooldown, *(quiet or (None, None)), tz, enabled)[0]["id"]

    def wait_loaded(self, *alert_ids: int) -> None:
        """Wait until the notifier reloaded these alert settings (after their NOTIFY)."""
        def loaded() -> bool:
            seen: set[int] = set()
            for m in RELOADED.finditer(self.bizzyd.log()):
                seen.update(int(i) for i in m.group(1).split(",") if i.isdigit())
            return set(alert_ids) <= seen
        wait_for(loaded, 15, what=f"the notifier to load alerts {alert_ids}")

    def occupancy(self, hive: int, value: int) -> None:
        """Set a hive's occupancy through the cache manager, as ingest would."""
        total_out = self.totals.get(hive, 1000)
        self.pusher.push(hive, value, total_out + value, total_out,
                         at=time.time() + next(self.clock) * 1e-4)

    def current(self, hive: int) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(f"GET /v1/hives/{hive}/occupancy HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.partition(b"\r\n\r\n")[2])["occupancy"]

    def baseline(self, hive: int, value: int) -> None:
        """Put a hive at `value` (away from the thresholds of the alerts made next), in
        Postgres and in the zone, as ingest would: an alert takes the hive's occupancy
        when it is loaded as its baseline (only a crossing from there alerts)."""
        self.sql("INSERT INTO hive_occupancy (hive_id, occupancy, total_in, total_out, "
                 "updated_at) VALUES ($1, $2, $3, 0, now()) ON CONFLICT (hive_id) DO UPDATE "
                 "SET occupancy = $2, updated_at = now()", hive, value, value)
        self.occupancy(hive, value)
        wait_for(lambda: self.current(hive) == value, 10, what="the zone")

    def state(self, alert_id: int) -> asyncpg.Record:
        return sql(self.dsn, "SELECT armed, fired_count FROM user_notification_def "
                             "WHERE id = $1", alert_id)[0]

    def wait_state(self, alert_id: int, timeout: float = 15, **want: Any) -> None:
        wait_for(lambda: all(self.state(alert_id)[k] == v for k, v in want.items()),
                 timeout, what=f"alert {alert_id} to have {want}")

    def inbox(self, user: int) -> list[asyncpg.Record]:
        return sql(self.dsn, "SELECT * FROM user_inbox WHERE user_id = $1 ORDER BY id", user)

    def queue_empty(self) -> bool:
        return not sql(self.dsn, "SELECT 1 FROM queue_message m JOIN queue q "
                                 "ON q.id = m.queue_id WHERE q.name = $1 LIMIT 1", QUEUE)

    def pushes(self, token: str) -> list[str]:
        """The idempotency keys of the pushes FCM accepted for a token."""
        return [p.key for p in self.fcm.ok(token)]


def _stack(tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str,
           settings: dict) -> Iterator[Stack]:
    emulator = emulator_address()
    with temporary_database_sync(pg_server_dsn) as dsn, FakeFCM() as fcm:
        asyncio.run(load_demo(dsn, 12))
        sql(dsn, "UPDATE hive SET capacity = 100")
        hives = [r["id"] for r in sql(dsn, "SELECT id FROM hive ORDER BY id")]
        port = free_port()
        config = users_config(port, dsn, os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211"),
                              {"project_id": PROJECT, "emulator": emulator,
                               "features_ttl": "0s"})
        config["notifier"] = {**settings, "fcm_url": fcm.url}
        prefix = tmp_path_factory.mktemp("notifier")
        with running(prefix, config, port) as b:
            wait_for(lambda: "notifier: " in b.log() and "occupancy alerts loaded" in b.log(),
                     15, what="the notifier to start")
            pusher = Pusher(prefix / "run")
            try:
                yield Stack(b, dsn, fcm, port, emulator, pusher, hives)
            finally:
                pusher.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str) -> Iterator[Stack]:
    """The notifier process sends (sender_processes: 0)."""
    yield from _stack(tmp_path_factory, pg_server_dsn, SETTINGS)


@pytest.fixture(scope="module")
def sender_stack(tmp_path_factory: pytest.TempPathFactory,
                 pg_server_dsn: str) -> Iterator[Stack]:
    """A separate `notifier sender` process sends (sender_processes: 1)."""
    yield from _stack(tmp_path_factory, pg_server_dsn, {**SETTINGS, "sender_processes": 1})
