"""The worker process: one uvloop event loop serving HTTP on the inherited sockets.

Signals (from the master, or an operator):
    QUIT   graceful: stop accepting, finish in-flight requests, close idle
           keep-alives after a grace, exit (bounded by worker_shutdown_timeout)
    TERM, INT  fast: close every connection and exit
    USR1   reopen the error log
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import signal
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import uvloop

from .http.engine import HttpEngine
from .http.protocol import HttpProtocol
from .process import set_title

if TYPE_CHECKING:
    from .http.router import Router
    from .module import ProcessContext

HEARTBEAT_INTERVAL = 1.0
FAST_SETTLE = 0.5  # seconds a fast stop gives aborted responses to finish
EXIT_HOOK_TIMEOUT = 10.0  # seconds each module's exit_worker may take


class Worker:
    """Runs in the child after fork; `run()` returns the exit code."""

    def __init__(self, ctx: ProcessContext, router: Router,
                 listeners: Sequence[tuple[tuple, socket.socket]], backlogs: dict[tuple, int],
                 beat: Callable[[], None]) -> None:
        self.ctx, self.router, self.listeners, self.backlogs = ctx, router, listeners, backlogs
        self.beat = beat
        self.stopping: asyncio.Future[str] | None = None

    def run(self) -> int:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self.ctx.loop = loop
        try:
            return loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = loop.create_future()
        self._signals(loop)
        log = self.ctx.log
        await self._hooks("init_worker")
        engine = HttpEngine(self.ctx, self.router, HttpProtocol)
        await engine.start(self.listeners, self.backlogs)
        # what start-up made (config, routes, modules' tables) lives as long as the
        # worker: out of the collector's generations, a full collection after a burst
        # of requests does not walk it again
        gc.freeze()
        self._heartbeat(loop)
        how = await self.stopping
        if how == "graceful":
            set_title("worker process is shutting down")
            self._retiring()
            await engine.retire(self.ctx.config["worker_shutdown_timeout"])
        else:
            engine.close_listeners()
            engine.abort_all()
            if engine.tasks:  # aborted responses finish (and are logged) before exit hooks
                await asyncio.wait(list(engine.tasks), timeout=FAST_SETTLE)
        engine.drain_log()
        await self._exit_hooks()
        log.info("worker process exiting (%s stop)", how)
        return 0

    def _signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGQUIT, self._stop, "graceful")
        loop.add_signal_handler(signal.SIGTERM, self._stop, "fast")
        loop.add_signal_handler(signal.SIGINT, self._stop, "fast")
        loop.add_signal_handler(signal.SIGUSR1, self._reopen)
        for sig in (signal.SIGHUP, signal.SIGWINCH, signal.SIGUSR2, signal.SIGTTIN,
                    signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)

    def _reopen(self) -> None:
        self.ctx.log.reopen()  # type: ignore[attr-defined]
        for module in self.ctx.config.modules:
            if module.reopen_logs is not None:
                try:
                    module.reopen_logs(self.ctx)
                except Exception:
                    self.ctx.log.exception("module %s: reopening logs failed", module.name)

    def _retiring(self) -> None:
        self.ctx.retiring = True
        for callback in self.ctx.on_retire:
            try:
                callback()
            except Exception:
                self.ctx.log.exception("on_retire callback %r failed", callback)

    def _stop(self, how: str) -> None:
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result(how)

    def _heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        self.beat()
        loop.call_later(HEARTBEAT_INTERVAL, self._heartbeat, loop)

    async def _hooks(self, name: str) -> None:
        modules = self.ctx.config.modules
        for module in modules:
            hook = getattr(module, name)
            if hook is not None and inspect.isawaitable(result := hook(self.ctx)):
                await result

    async def _exit_hooks(self) -> None:
        """`exit_worker` in reverse module order (a module closes before those it
        uses: the users' buffers flush before the database pool closes), each bounded
        by EXIT_HOOK_TIMEOUT so that one stuck hook cannot keep the worker alive."""
        for module in reversed(self.ctx.config.modules):
            hook = module.exit_worker
            if hook is None:
                continue
            try:
                result = hook(self.ctx)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, EXIT_HOOK_TIMEOUT)
            except TimeoutError:
                self.ctx.log.error("%s: exit_worker did not finish in %.0f s; going on",
                                   module.name, EXIT_HOOK_TIMEOUT)
            except Exception:  # noqa: BLE001 - the other modules still get to close
                self.ctx.log.exception("%s: exit_worker failed", module.name)
