"""The `notifier` process: occupancy alerts from the bus, deal and subscription
notifications from the outbox and scans, and the sender, on one event loop.

    bus hive.<id> ──▶ Alerts ──┐
    outbox / scans ──▶ Events ─┼─▶ queue `notifications` ──▶ Sender ──▶ FCM, inbox
                               │                (dead letters: `notifications-dlq`)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from typing import Any

import asyncpg
import firebase_admin
import uvloop
from firebase_admin import credentials, messaging
from google.auth.credentials import AnonymousCredentials

from bizzyd.bus import OCCUPANCY_CHANGE, Bus, BusError
from bizzyd.module import ProcessContext
from modules.database import Database
from modules.queue import open_queues
from modules.queue.store import QueueNameExists

from . import occupancy
from .events import Events
from .fcm import FcmClient
from .jobs import enqueue
from .sender import Sender, send_forever

NAME = "notifier"


class _Anonymous(credentials.Base):
    """No credentials: for a local fake of the FCM endpoint only."""

    def get_credential(self) -> Any:
        return AnonymousCredentials()


def firebase_app(ctx: ProcessContext) -> tuple[firebase_admin.App, str]:
    """A firebase_admin app of this process (its credentials), and the URL to push to:
    FCM's, or `fcm_url` (a fake, without credentials) when that is set."""
    settings = ctx.config[NAME]
    project = settings["project_id"] or (ctx.config.get("firebase") or {}).get("project_id")
    options = {"projectId": project, "httpTimeout": settings["send_timeout"]}
    name = f"bizzyd-notifier-{os.getpid()}"
    if settings["fcm_url"]:
        url = settings["fcm_url"].replace("{project}", project)
        ctx.log.warning("notifier: Cloud Messaging is a FAKE at %s: no push reaches a "
                        "phone (notifier.fcm_url; empty it for the real FCM)", url)
        return firebase_admin.initialize_app(_Anonymous(), options, name=name), url
    cred = credentials.Certificate(settings["credentials"]) if settings["credentials"] \
        else credentials.ApplicationDefault()
    return (firebase_admin.initialize_app(cred, options, name=name),
            messaging._MessagingService.FCM_URL.format(project))  # noqa: SLF001


class Notifier:
    """The `notifier` process (triggers, and the sender unless `sender_processes`), or
    with `senders_only` a `notifier sender` process."""

    def __init__(self, ctx: ProcessContext, senders_only: bool = False) -> None:
        self.ctx, self.log, self.senders_only = ctx, ctx.log, senders_only
        self.settings = ctx.config[NAME]
        # its own pool: sender rounds, queued alerts and saves run at once
        self.db = Database({**ctx.config["database"],
                            "pool_max_size": self.settings["pool_max_size"]}, ctx.log)
        self.alerts = occupancy.Alerts()
        self.lock = asyncio.Lock()      # alert evaluation vs. reloads of settings
        self.changed_defs: set[int] = set()
        self.dirty: dict[int, occupancy.Alert] = {}   # alerts whose state is not saved
        self.dirty_wake = asyncio.Event()
        self.defs_wake = asyncio.Event()
        self.events_wake = asyncio.Event()
        self.queues: Any = None
        self.tasks: list[asyncio.Task] = []
        self.app: firebase_admin.App | None = None

    # -- start and stop ------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        self.queues, wakeups = open_queues(self.ctx, self.db)
        self.app, url = firebase_app(self.ctx)
        fcm = FcmClient(self.app, url, self.settings["send_timeout"],
                        self.settings["connections"])
        bus = Bus(self.ctx.config["run_dir"], self.ctx.config["bus_hwm"], asyncio=True)
        try:
            sender = Sender(self.db, self.queues, fcm, self.settings, self.log)
            rounds = self.settings["senders"]
            await self._create_queues()
            if self.senders_only:
                self.tasks = [asyncio.ensure_future(send_forever(sender, self.log))
                              for _ in range(rounds)]
            else:
                if self.settings["sender_processes"]:
                    rounds = 0  # the `notifier sender` processes send
                events = Events(self.db, self.queues, self.settings, self.log)
                sub = bus.subscriber("occupancy.changes")
                self.tasks = [asyncio.ensure_future(c) for c in (
                    self._listen(), self._bus_loop(sub), self._defs_loop(),
                    self._save_loop(), self._events_loop(events),
                    *(send_forever(sender, self.log) for _ in range(rounds)))]
            await asyncio.wait([stop, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in self.tasks:
                if t.done() and not t.cancelled() and t.exception():
                    raise t.exception()
            return 0
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            while self.dirty and await self._save_some():  # a stop keeps the state
                pass
            bus.close()
            await wakeups.close()
            await self.db.close()
            await fcm.close()

    async def _create_queues(self) -> None:
        """Create the queues, or bring their settings to the config's (a reload may
        have changed them)."""
        s = self.settings
        for name, settings in (
                (s["dead_letter_queue"], {"retention_seconds": 14 * 86400}),
                (s["queue"], {"visibility_timeout": int(s["visibility_timeout"]),
                              "dead_letter_queue": s["dead_letter_queue"],
                              "max_receives": s["max_attempts"]})):
            try:
                await self.queues.create(name, **settings)
            except QueueNameExists:
                await self.queues.configure(name, **settings)

    # -- settings of occupancy alerts ------------------------------------------------

    async def _reload_all(self) -> None:
        async with self.lock:
            async with self.db.connection() as conn:
                rows = await conn.fetch(occupancy.ALL_DEFS)
            self.alerts.replace_all(rows)
        self.log.notice("notifier: %d occupancy alerts loaded", len(self.alerts))

    async def _defs_loop(self) -> None:
        while True:
            await self.defs_wake.wait()
            self.defs_wake.clear()
            await asyncio.sleep(0.1)  # gather a burst of changes into one query
            ids, self.changed_defs = self.changed_defs, set()
            try:
                async with self.lock:
                    async with self.db.connection() as conn:
                        rows = await conn.fetch(occupancy.SOME_DEFS, sorted(ids))
                    self.alerts.update(ids, rows)
                shown = ",".join(map(str, sorted(ids)[:50]))
                self.log.info("notifier: %d alert settings reloaded (%s%s)", len(ids), shown,
                              ",…" if len(ids) > 50 else "")
            except Exception as exc:  # noqa: BLE001 - try again shortly
                self.log.error("notifier: reloading %d alert settings: %s", len(ids), exc)
                self.changed_defs |= ids
                await asyncio.sleep(1)
                self.defs_wake.set()

    async def _listen(self) -> None:
        """LISTEN for changed settings and new outbox events; after a (re)connection,
        reload every setting and drain the outbox (notifications may have been missed)."""
        pause = 0.5
        while True:
            try:
                await self._listen_once(self.ctx.config["database"]["dsn"])
                pause = 0.5
            except (TimeoutError, OSError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                self.log.error("notifier: listener: %s; reconnecting in %.1fs", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _listen_once(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        lost = asyncio.get_running_loop().create_future()
        try:
            conn.add_termination_listener(lambda _c: lost.done() or lost.set_result(None))
            await conn.add_listener("bizzyd_notifier_defs", self._on_def)
            await conn.add_listener("bizzyd_notifier_events",
                                    lambda *_: self.events_wake.set())
            await self._reload_all()
            self.events_wake.set()
            while not lost.done():  # a dead peer is noticed by the next query
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lost), 10)
                if not lost.done():
                    await conn.execute("SELECT 1")
        finally:
            conn.terminate()

    def _on_def(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.changed_defs.add(int(payload))
            self.defs_wake.set()

    # -- occupancy changes ---------------------------------------------------------------

    async def _bus_loop(self, sub: Any) -> None:
        while True:
            frames = [await sub.recv_multipart()]
            while len(frames) < 2000 and await sub.poll(0):
                frames.append(await sub.recv_multipart())
            latest: dict[int, list[tuple[int, int, float]]] = {}
            for f in frames:
                try:
                    hive, occ, cap, _, _, at, _ = OCCUPANCY_CHANGE.decode(f[-1])
                except BusError as exc:
                    self.log.error("notifier: bad bus frame: %s", exc)
                    continue
                latest.setdefault(hive, []).append((occ, cap, at))
            await self._changes(latest)

    async def _changes(self, changes: dict[int, list[tuple[int, int, float]]]) -> None:
        """Apply each hive's changes in order; queue the jobs (until it works), then save
        the state."""
        async with self.lock:
            jobs, changed = [], []
            now = time.time()
            for hive, values in changes.items():
                for occ, cap, at in values:
                    j, c = self.alerts.change(hive, occ, cap, now, at)
                    jobs += j
                    changed += c
        if not jobs and not changed:
            return
        pause, started = 0.2, time.monotonic()
        while True:
            try:
                await enqueue(self.queues, self.settings["queue"], jobs)
                self.log.debug("notifier: %d changes, %d alerts queued in %.0f ms",
                               sum(map(len, changes.values())), len(jobs),
                               (time.monotonic() - started) * 1000)
                break
            except Exception as exc:  # noqa: BLE001 - Postgres down: keep the jobs
                self.log.error("notifier: queueing %d alerts: %s; retrying in %.1fs",
                               len(jobs), exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        for alert in changed:
            self.dirty[alert.id] = alert
        self.dirty_wake.set()

    async def _save_loop(self) -> None:
        """Write the state of changed alerts, at most 5,000 rows a statement, off the
        bus loop (a failure keeps them for the next try: a restart would re-fire with
        the same keys)."""
        while True:
            await self.dirty_wake.wait()
            self.dirty_wake.clear()
            while self.dirty:
                if not await self._save_some():
                    await asyncio.sleep(1)

    async def _save_some(self) -> bool:
        batch = dict(itertools.islice(self.dirty.items(), 5000))
        for i in batch:
            del self.dirty[i]
        try:
            async with self.db.connection() as conn:
                await conn.execute(occupancy.SAVE_STATE, *occupancy.state_rows(batch.values()))
            return True
        except Exception as exc:  # noqa: BLE001
            self.log.error("notifier: saving the state of %d alerts: %s", len(batch), exc)
            for i, a in batch.items():
                self.dirty.setdefault(i, a)
            return False

    # -- deals and subscriptions ---------------------------------------------------------

    async def _events_loop(self, events: Events) -> None:
        interval = self.settings["scan_interval"]
        next_scan = 0.0
        while True:
            try:
                await events.drain()
                if time.monotonic() >= next_scan:
                    await events.scan()
                    next_scan = time.monotonic() + interval
            except Exception as exc:  # noqa: BLE001 - the outbox keeps them
                self.log.error("notifier: events: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.events_wake.wait(),
                                       max(0.05, next_scan - time.monotonic()))
            self.events_wake.clear()


def main(ctx: ProcessContext) -> int:
    """Entry point of the `notifier` role."""
    return _run(Notifier(ctx))


def sender_main(ctx: ProcessContext) -> int:
    """Entry point of the `notifier sender` role."""
    return _run(Notifier(ctx, senders_only=True))


def _run(notifier: Notifier) -> int:
    try:
        return uvloop.run(notifier.run())
    finally:
        if notifier.app is not None:
            # delete_app closes the async HTTP client with asyncio.run(): outside the loop
            with contextlib.suppress(Exception):
                firebase_admin.delete_app(notifier.app)
