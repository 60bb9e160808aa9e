"""The master process: binds, forks, supervises, and acts on signals.

Theory of operation
-------------------
Signal handlers only record the signal (and wake the loop through the wakeup fd);
the loop (`run`) then calls one `handle_<signal>` method per recorded signal, reaps
children, checks heartbeats, runs due timers (respawns), and advances a reload.

A reload builds a new "cycle" (config + compiled router + listeners) beside the old
one.  Only when it is complete does a new generation of workers start; the old
generation is told QUIT once every new worker has sent its first heartbeat (or
after a bound), so there is always a worker accepting on every listener.

Children are `Child` records keyed by pid.  A child that dies unexpectedly is
respawned in the same slot, after a back-off that doubles while it keeps dying
young, so a crash loop cannot spin.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError
from .config.load import Config, load_config
from .http import build as http_build
from .http.engine import build_router
from .http.router import Router
from .listen import INHERIT_ENV, ListenerSet, adopt_fds, close_socket, inherited_fds
from .log import LEVELS, Logger, open_log
from .module import ProcessContext, ProcessRole
from .process import (
    Heartbeats,
    die_with_parent,
    drop_privileges,
    looks_like_bizzyd,
    pid_alive,
    raise_nofile,
    reset_signals,
    resolve_user,
    set_title,
)
from .shm import Zone, ZoneSet, ZoneSpec, remove_stale
from .stats import RESTART_SLOTS, RESTARTS, ROWS, fold_row, stats_spec
from .systemd import Notifier, listen_fds
from .worker import Worker

WORKER = "worker"
READY_BOUND = 10.0  # a reload retires the old generation at the latest after this
YOUNG = 5.0  # a child that dies younger than this counts towards back-off
MAX_BACKOFF = 30.0
LOOP_TICK = 0.5


class StartupError(Exception):
    """The master cannot start (pid file held, cannot bind, ...)."""


@dataclass
class Options:
    """What the command line said; kept to re-exec on binary upgrade."""

    conf: Path
    prefix: Path
    overrides: list[str] = field(default_factory=list)
    error_log: str | None = None

    def argv(self) -> list[str]:
        args = ["-c", str(self.conf), "-p", str(self.prefix)]
        for text in self.overrides:
            args += ["-g", text]
        if self.error_log:
            args += ["-e", self.error_log]
        return args


@dataclass
class Child:
    pid: int
    role: str
    slot: int
    generation: int
    beat_index: int
    started: float
    stats: Zone | None = None
    retiring: bool = False


@dataclass
class Cycle:
    """A config with everything built from it."""

    config: Config
    router: Router
    generation: int
    zones: dict[str, Zone] = field(default_factory=dict)


def zone_specs(config: Config, router: Router) -> list[ZoneSpec]:
    """The core's zones (statistics) and every loaded module's."""
    specs = [stats_spec(len(router.locations())), RESTARTS]
    for module in config.modules:
        if module.zones is not None:
            specs += module.zones(config)
    return specs


class Master:
    """One per running bizzyd: see the module docstring."""

    def __init__(self, options: Options, config: Config, log: Logger,
                 environ: dict[str, str] | None = None) -> None:
        self.options = options
        self.environ = environ if environ is not None else os.environ
        self.log = log
        self.cycle = Cycle(config, build_router(config), 1)
        self.listeners = ListenerSet()
        self.beats = Heartbeats(ROWS - 1)
        self.zones = ZoneSet()
        self.notify = Notifier(self.environ)
        self.children: dict[int, Child] = {}
        self.signals: deque[int] = deque()
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.failures: dict[tuple[str, int], int] = {}
        self.worker_count = config["worker_processes"]
        self.workers_stopped = False  # after WINCH
        self.retire_pending: tuple[int, float] | None = None
        self.stopping: str | None = None
        self.stop_deadline = 0.0
        self.upgrade_pid = 0
        self.pid_path = Path(config["pid"])
        self.is_upgrade_child = False
        self._wakeup_r = self._wakeup_w = -1

    # -- startup ---------------------------------------------------------------

    def run(self) -> int:
        """Start everything and supervise until stopped; returns the exit code."""
        try:
            self._start()
        except StartupError as exc:
            self.log.critical("%s", exc)
            self.log.notice("exiting: could not start")
            return 1
        try:
            self._loop()
        finally:
            self._cleanup()
        self.log.notice("exit (%s shutdown)", self.stopping or "unknown")
        return 0

    def _start(self) -> None:
        self._check_pid_file()
        Path(self.cycle.config["run_dir"]).mkdir(parents=True, exist_ok=True)
        self._open_listeners()
        self._open_zones(self.cycle)
        self._write_pid_file()
        self._install_signals()
        program = "bizzyd" if sys.argv[0].endswith("__main__.py") else sys.argv[0]
        set_title(f"master process {' '.join([program, *self.options.argv()])}")
        self._run_master_hooks("init_master", self.cycle.config)
        self.log.notice("bizzyd/%s master process %d started (%d worker(s)); "
                        "HTTP fast path: %s", __version__, os.getpid(), self.worker_count,
                        http_build.describe())
        self._spawn_generation(self.cycle)
        self.notify("READY=1", f"MAINPID={os.getpid()}", self._status())

    def _check_pid_file(self) -> None:
        path = self.pid_path
        try:
            pid = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            return
        if pid and pid != os.getpid() and looks_like_bizzyd(pid):
            raise StartupError(f"bizzyd is already running (pid {pid}, pid file {path})")
        self.log.notice("removing stale pid file %s (pid %d is gone)", path, pid)
        with contextlib.suppress(OSError):
            path.unlink()

    def _write_pid_file(self) -> None:
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_path.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.pid_path)

    def _open_listeners(self) -> None:
        inherited = inherited_fds(self.environ)
        self.is_upgrade_child = bool(inherited)
        activated = listen_fds(self.environ)
        self.listeners.adopt(adopt_fds(inherited + activated))
        try:
            self.listeners.update(self.cycle.config.listen_specs(), self.worker_count)
        except OSError as exc:
            raise StartupError(f"cannot listen: {exc}") from None
        self.listeners.keep_unclaimed_activated()
        for key, spec in self.listeners.specs.items():
            if key[0] != "activated":
                self.log.notice("listening on %s", spec)
        if inherited or activated:
            self.log.notice("using %d inherited and %d socket-activated listener(s)",
                            len(inherited), len(activated))

    def _open_zones(self, cycle: Cycle) -> None:
        stale = remove_stale(pid_alive)
        if stale:
            self.log.notice("removed %d stale shared memory segment(s) of dead masters: %s",
                            len(stale), ", ".join(stale))
        try:
            self.zones.update(zone_specs(cycle.config, cycle.router))
        except OSError as exc:
            raise StartupError(f"cannot create shared memory zones: {exc}") from None
        cycle.zones = dict(self.zones.zones)

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wait(self._next_timeout())
            while self.signals:
                self._dispatch(self.signals.popleft())
            self._reap()
            self._run_timers()
            self._check_heartbeats()
            self._advance_reload()
            if self.stopping and self._done_stopping():
                return

    def _wait(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self._wakeup_r], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wakeup_r, 4096)

    def _next_timeout(self) -> float:
        if self.signals:
            return 0.0
        due = min((t for t, _ in self.timers), default=time.monotonic() + LOOP_TICK)
        return max(0.0, min(LOOP_TICK, due - time.monotonic()))

    def _dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name[3:].lower()
        handler = getattr(self, f"handle_{name}", None)
        if handler is not None:
            handler()

    # -- signal handlers -------------------------------------------------------

    def handle_chld(self) -> None:
        """A child exited: reaped right after the signal handlers run."""

    def handle_term(self) -> None:
        """Fast shutdown: children are told TERM and killed after fast_shutdown_timeout."""
        self._begin_stop("fast", signal.SIGTERM, self.cycle.config["fast_shutdown_timeout"])

    handle_int = handle_term

    def handle_quit(self) -> None:
        """Graceful shutdown: children finish in-flight work (worker_shutdown_timeout)."""
        self._begin_stop("graceful", signal.SIGQUIT,
                         self.cycle.config["worker_shutdown_timeout"] + 2.0)

    def handle_hup(self) -> None:
        """Reload: validate the config; start a new generation; retire the old one."""
        if self.stopping:
            return
        self.log.notice("reconfiguring (SIGHUP)")
        try:
            config = self._load_config()
            router = build_router(config)
        except ConfigError as exc:
            self.log.error("reload failed, still running the old configuration: %s", exc)
            return
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(1) // 1000}")
        self._reload(config, router)

    def handle_usr1(self) -> None:
        """Reopen log files (after logrotate moved them) here and in every child."""
        self.log.notice("reopening logs (SIGUSR1)")
        config = self.cycle.config
        self.log.hand_files_to(resolve_user(config["user"], config["group"]))
        self.log.reopen()
        ctx = ProcessContext(self.cycle.config, self.log, "master", zones=self.cycle.zones)
        for module in self.cycle.config.modules:
            if module.reopen_logs is not None:
                try:
                    module.reopen_logs(ctx)
                except Exception:
                    self.log.exception("module %s: reopening logs failed", module.name)
        self._signal_children(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        """Binary upgrade: exec a new master that inherits the listening sockets."""
        if self.upgrade_pid or self.stopping:
            self.log.warning("binary upgrade ignored: %s",
                             "one is in progress" if self.upgrade_pid else "stopping")
            return
        self._upgrade()

    def handle_winch(self) -> None:
        """Stop the workers gracefully but keep the master (e.g. to roll back)."""
        self.log.notice("gracefully stopping workers (SIGWINCH)")
        self.workers_stopped = True
        for child in self.children.values():
            if child.role == WORKER:
                self._retire(child)

    def handle_ttin(self) -> None:
        """One worker more."""
        self.worker_count += 1
        self.log.notice("worker processes: %d (SIGTTIN)", self.worker_count)
        self.listeners.update(self.cycle.config.listen_specs(), self.worker_count)
        if not self.workers_stopped:
            self._spawn(WORKER, self.worker_count - 1, self.cycle)

    def handle_ttou(self) -> None:
        """One worker less (never fewer than one)."""
        if self.worker_count <= 1:
            self.log.notice("SIGTTOU ignored: one worker is the minimum")
            return
        self.worker_count -= 1
        self.log.notice("worker processes: %d (SIGTTOU)", self.worker_count)
        for child in self.children.values():
            if child.role == WORKER and child.slot >= self.worker_count and not child.retiring:
                self._retire(child)
        for sock in self.listeners.update(self.cycle.config.listen_specs(), self.worker_count):
            close_socket(sock)

    # -- reload ----------------------------------------------------------------

    def _load_config(self) -> Config:
        opts = self.options
        return load_config(opts.conf, opts.prefix, opts.overrides)

    def _reload(self, config: Config, router: Router) -> None:
        old = self.cycle
        count = config["worker_processes"]
        try:
            removed = self.listeners.update(config.listen_specs(), count)
        except OSError as exc:
            self.log.error("reload failed, still running the old configuration: "
                           "cannot listen: %s", exc)
            self.notify("READY=1", self._status())
            return
        self.cycle = Cycle(config, router, old.generation + 1)
        try:
            replaced = self.zones.update(zone_specs(config, router))
        except OSError as exc:
            self.log.error("reload: cannot create shared memory zones: %s", exc)
            replaced = []
        if replaced:
            self.log.notice("shared memory zone(s) %s changed size and were recreated",
                            ", ".join(z.spec.name for z in replaced))
        self.cycle.zones = dict(self.zones.zones)
        self.worker_count = count
        self.workers_stopped = False
        self._reopen_log_if_moved(old.config, config)
        self._run_master_hooks("init_master", config)
        self._spawn_generation(self.cycle)
        self.retire_pending = (self.cycle.generation, time.monotonic() + READY_BOUND)
        for sock in removed:
            close_socket(sock)
        self.log.notice("configuration reloaded; generation %d starting",
                        self.cycle.generation)

    def _advance_reload(self) -> None:
        if not self.retire_pending:
            return
        generation, bound = self.retire_pending
        new = [c for c in self.children.values()
               if c.generation == generation and c.role == WORKER]
        ready = all(self.beats.last(c.beat_index) > 0 for c in new)
        if not ready and time.monotonic() < bound:
            return
        self.retire_pending = None
        for child in self.children.values():
            if child.generation < generation:
                self._retire(child)
        self.notify("READY=1", self._status())

    def _reopen_log_if_moved(self, old: Config, new: Config) -> None:
        self.log.setLevel(LEVELS[new["error_log_level"]])
        if self.options.error_log or old["error_log"] == new["error_log"]:
            return
        fresh = open_log(new["error_log"], new["error_log_level"])
        self.log.close()
        for handler in fresh.handlers:
            self.log.addHandler(handler)

    # -- binary upgrade --------------------------------------------------------

    def _upgrade(self) -> None:
        oldbin = Path(str(self.pid_path) + ".oldbin")
        try:
            self.pid_path.replace(oldbin)
        except OSError as exc:
            self.log.error("binary upgrade: cannot rename %s: %s", self.pid_path, exc)
            return
        fds = [s.fileno() for s in self.listeners.all()]
        env = dict(self.environ)
        env[INHERIT_ENV] = ";".join(map(str, fds))
        argv = [sys.executable, "-m", "bizzyd", *self.options.argv()]
        pid = os.fork()
        if pid == 0:
            try:
                for fd in fds:
                    os.set_inheritable(fd, True)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.upgrade_pid = pid
        self.pid_path = oldbin
        self.log.notice("binary upgrade: new master process %d started", pid)

    def _upgrade_exited(self, status: int) -> None:
        self.log.error("binary upgrade: new master %d exited (%s); pid file restored",
                       self.upgrade_pid, _describe(status))
        self.upgrade_pid = 0
        original = Path(str(self.pid_path).removesuffix(".oldbin"))
        with contextlib.suppress(OSError):
            self.pid_path.replace(original)
            self.pid_path = original

    # -- children --------------------------------------------------------------

    def _spawn_generation(self, cycle: Cycle) -> None:
        for slot in range(self.worker_count):
            self._spawn(WORKER, slot, cycle)
        for role in self._roles(cycle.config):
            for slot in range(role.count(cycle.config)):
                self._spawn(role.name, slot, cycle)

    @staticmethod
    def _roles(config: Config) -> list[ProcessRole]:
        return [r for m in config.modules for r in m.roles]

    def _spawn(self, role: str, slot: int, cycle: Cycle) -> None:
        beat_index = self.beats.allocate()
        self.pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._child(role, slot, cycle, beat_index)
            except BaseException:
                self.log.exception("%s process %d failed", role, os.getpid())
            finally:
                os._exit(code)
        self.children[pid] = Child(pid, role, slot, cycle.generation, beat_index,
                                   time.monotonic(), cycle.zones.get("stats"))
        self.log.info("started %s process %d (slot %d, generation %d)", role, pid, slot,
                      cycle.generation)

    def _child(self, role: str, slot: int, cycle: Cycle, beat_index: int) -> int:
        reset_signals()
        die_with_parent(self.pid)
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)
        config = cycle.config
        set_title(f"{role} process")
        warning = raise_nofile(config["worker_rlimit_nofile"])
        if warning:
            self.log.warning("%s", warning)
        ctx = ProcessContext(config, self.log, role, slot, cycle.generation,
                             zones=cycle.zones, stats_row=beat_index + 1)
        self._close_foreign_listeners(slot if role == WORKER else -1)
        ids = resolve_user(config["user"], config["group"])
        drop_privileges(ids, config["user"], [config["error_log"]])
        if role != WORKER:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # relayed log reopen; roles may
            return self._role_by_name(config, role).main(ctx)  # install their own handler
        listeners = self.listeners.for_slot(slot)
        backlogs = {k: s.backlog for k, s in self.listeners.specs.items()}
        return Worker(ctx, cycle.router, listeners, backlogs,
                      lambda: self.beats.beat(beat_index)).run()

    def _role_by_name(self, config: Config, name: str) -> ProcessRole:
        return next(r for r in self._roles(config) if r.name == name)

    def _respawns(self, role: str) -> bool:
        roles = [r for r in self._roles(self.cycle.config) if r.name == role]
        return bool(roles) and roles[0].respawn

    def _close_foreign_listeners(self, slot: int) -> None:
        keep = {id(s) for _, s in self.listeners.for_slot(slot)} if slot >= 0 else set()
        for sock in self.listeners.all():
            if id(sock) not in keep:
                sock.close()

    def _retire(self, child: Child) -> None:
        if child.retiring:
            return
        child.retiring = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGQUIT)

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.upgrade_pid:
                self._upgrade_exited(status)
                continue
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)

    def _child_exited(self, child: Child, status: int) -> None:
        self.beats.release(child.beat_index)
        if child.stats is not None:
            fold_row(child.stats, child.beat_index + 1)
        expected = child.retiring or self.stopping or (
            child.role != WORKER and _clean(status) and not self._respawns(child.role))
        if not expected and child.role == WORKER and child.slot < RESTART_SLOTS:
            restarts = self.cycle.zones["restarts"]
            restarts.set(child.slot, "restarts", restarts.get(child.slot, "restarts") + 1)
        level = self.log.info if expected and _clean(status) else self.log.error
        level("%s process %d exited (%s)", child.role, child.pid, _describe(status))
        if expected or child.generation != self.cycle.generation:
            return
        if child.role == WORKER and (self.workers_stopped or child.slot >= self.worker_count):
            return
        if child.role != WORKER and not self._respawns(child.role):
            return  # a one-shot role (e.g. the cache loader), or one no longer configured
        self._schedule_respawn(child)

    def _schedule_respawn(self, child: Child) -> None:
        key = (child.role, child.slot)
        young = time.monotonic() - child.started < YOUNG
        self.failures[key] = self.failures.get(key, 0) + 1 if young else 0
        n = self.failures[key]
        delay = 0.0 if n == 0 else min(MAX_BACKOFF, 0.25 * 2 ** n)
        if delay:
            self.log.warning("%s process keeps dying; respawning slot %d in %.1fs",
                             child.role, child.slot, delay)
        cycle = self.cycle
        self.timers.append((time.monotonic() + delay,
                            lambda: self._respawn(child.role, child.slot, cycle)))

    def _respawn(self, role: str, slot: int, cycle: Cycle) -> None:
        if self.stopping or cycle is not self.cycle:
            return
        if any(c.role == role and c.slot == slot and not c.retiring
               and c.generation == cycle.generation for c in self.children.values()):
            return
        self._spawn(role, slot, cycle)

    def _run_timers(self) -> None:
        now = time.monotonic()
        due = [t for t in self.timers if t[0] <= now]
        self.timers = [t for t in self.timers if t[0] > now]
        for _, action in due:
            action()

    def _check_heartbeats(self) -> None:
        timeout = self.cycle.config["worker_timeout"]
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.role != WORKER:
                continue
            last = self.beats.last(child.beat_index) or child.started
            if now - last > timeout:
                self.log.error("worker process %d is unresponsive (no heartbeat for %.1fs); "
                               "killing it", child.pid, now - last)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                self.beats.beat(child.beat_index)  # don't kill twice before it is reaped

    # -- stopping --------------------------------------------------------------

    def _begin_stop(self, how: str, sig: int, timeout: float) -> None:
        if self.stopping == "fast" or self.stopping == how:
            return
        self.log.notice("%s shutdown (%s)", how, signal.Signals(sig).name)
        self.notify("STOPPING=1")
        self.stopping = how
        self.stop_deadline = time.monotonic() + timeout
        self.timers = []
        for child in self.children.values():
            child.retiring = True
        self._signal_children(sig)

    def _done_stopping(self) -> bool:
        if not self.children:
            return True
        if time.monotonic() > self.stop_deadline:
            for pid in list(self.children):
                self.log.warning("process %d did not stop in time; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.stop_deadline = time.monotonic() + 5.0
        return False

    def _cleanup(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._run_master_hooks("exit_master", self.cycle.config)
        self.listeners.close_all(unlink=not self.upgrade_pid and not self._has_successor())
        self.zones.unlink_all()
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_path.read_text().strip()) == os.getpid():
                self.pid_path.unlink()

    def _has_successor(self) -> bool:
        """A new master (binary upgrade) may now own our unix sockets."""
        return bool(self.upgrade_pid)

    def _run_master_hooks(self, name: str, config: Config) -> None:
        ctx = ProcessContext(config, self.log, "master")
        for module in config.modules:
            hook = getattr(module, name)
            if hook is not None:
                hook(ctx)

    def _status(self) -> str:
        workers = sum(1 for c in self.children.values() if c.role == WORKER and not c.retiring)
        return f"STATUS={workers} worker(s), generation {self.cycle.generation}"


def _clean(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"code {os.WEXITSTATUS(status)}"


def start(options: Options, log: Logger | None = None) -> int:
    """Load the config, open the log, run a master; the `bizzyd` entry point."""
    config = load_config(options.conf, options.prefix, options.overrides)
    target = options.error_log or config["error_log"]
    log = log or open_log(target, config["error_log_level"])
    try:
        return Master(options, config, log).run()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.critical("cannot listen: %s", exc)
            return 1
        raise
