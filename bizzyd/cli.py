"""The `bizzyd` command line (nginx-like flags, plus module commands)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError
from .config.load import Config, load_config
from .http import build as http_build
from .http.engine import build_router
from .master import Options, start

SIGNALS = {"stop": signal.SIGTERM, "quit": signal.SIGQUIT, "reload": signal.SIGHUP,
           "reopen": signal.SIGUSR1}

EPILOG = """\
signals (send with kill, or with -s):
  TERM, INT   fast shutdown                 (-s stop)
  QUIT        graceful shutdown             (-s quit)
  HUP         reload the configuration      (-s reload)
  USR1        reopen log files              (-s reopen)
  USR2        binary upgrade (new master inherits the sockets)
  WINCH       gracefully stop the workers, keep the master
  TTIN, TTOU  one worker process more / less

commands (from loaded modules) run instead of the server, e.g.:
  bizzyd migrate status       bizzyd migrate up
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bizzyd", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="bizzyd: the Bizzy application server (master, workers, modules).")
    p.add_argument("-v", "--version", action="version",
                   version=f"bizzyd/{__version__} (HTTP fast path: {http_build.describe()})")
    p.add_argument("-t", dest="test", action="store_true",
                   help="test the configuration and exit")
    p.add_argument("-T", dest="dump", action="store_true",
                   help="test the configuration, print the effective configuration, exit")
    p.add_argument("-q", dest="quiet", action="store_true",
                   help="with -t: print only errors")
    p.add_argument("-c", dest="conf", metavar="FILE",
                   help="configuration file (default: PREFIX/conf/bizzyd.yaml)")
    p.add_argument("-p", dest="prefix", metavar="PREFIX",
                   help="prefix for relative paths (default: $BIZZYD_PREFIX or the current "
                        "directory)")
    p.add_argument("-g", dest="overrides", metavar="DIRECTIVE", action="append", default=[],
                   help="set a top-level directive over the file, e.g. -g 'worker_processes: 1'")
    p.add_argument("-e", dest="error_log", metavar="FILE",
                   help="error log file, or `stderr` (overrides error_log)")
    p.add_argument("-s", dest="signal", choices=sorted(SIGNALS),
                   help="send a signal to the running master (from its pid file)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="a module command and its arguments (see below)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    prefix = Path(args.prefix or os.environ.get("BIZZYD_PREFIX") or ".").resolve()
    conf = Path(args.conf) if args.conf else prefix / "conf" / "bizzyd.yaml"
    options = Options(conf.resolve(), prefix, args.overrides, args.error_log)
    try:
        if args.test or args.dump:
            return test_config(options, args.dump, args.quiet)
        if args.signal:
            return send_signal(options, args.signal)
        if args.command:
            return run_command(options, args.command)
        return start(options)
    except ConfigError as exc:
        print(f"bizzyd: [emerg] {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _load(options: Options) -> Config:
    return load_config(options.conf, options.prefix, options.overrides)


def test_config(options: Options, dump: bool, quiet: bool) -> int:
    """`-t`/`-T`: validate everything a start would, without binding."""
    try:
        config = _load(options)
        build_router(config)
    except ConfigError as exc:
        print(f"bizzyd: [emerg] {exc}", file=sys.stderr)
        print(f"bizzyd: configuration file {options.conf} test failed", file=sys.stderr)
        return 1
    if not quiet:
        print(f"bizzyd: the configuration file {options.conf} syntax is ok", file=sys.stderr)
        print(f"bizzyd: configuration file {options.conf} test is successful", file=sys.stderr)
    if dump:
        print(f"# configuration file {options.conf} (effective, with defaults):")
        print(config.dump_yaml(), end="")
    return 0


def send_signal(options: Options, name: str) -> int:
    """`-s stop|quit|reload|reopen`: signal the master named in the pid file."""
    pid_path = Path(_load(options)["pid"])
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError) as exc:
        print(f"bizzyd: [error] invalid PID in {pid_path}: {exc}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, SIGNALS[name])
    except ProcessLookupError:
        print(f"bizzyd: [error] no process {pid} (from {pid_path})", file=sys.stderr)
        return 1
    return 0


def run_command(options: Options, argv: list[str]) -> int:
    """`bizzyd NAME ARGS...`: a command a loaded module provides."""
    config = _load(options)
    commands = {name: fn for m in config.modules for name, fn in m.commands.items()}
    name, rest = argv[0], argv[1:]
    if name not in commands:
        known = ", ".join(sorted(commands)) or "none (no loaded module provides one)"
        print(f"bizzyd: unknown command {name!r}; commands: {known}", file=sys.stderr)
        return 2
    return commands[name](rest, config)
