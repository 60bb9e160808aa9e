"""bizzyd_hello: a small, complete bizzyd module (see docs/modules.md).

It uses every kind of hook the module API offers:

    modules: [bizzyd_hello]
    hello_state_dir: hello          # main: where the hooks leave their marks
    http:
      servers:
        - locations:
            - location: ~ ^/hello/(?<name>[a-z]+)$
              content: hello
              hello_greeting: Hi
              hello_shout: on

- directives: `hello_state_dir` (main), `hello_greeting` and `hello_shout` (location);
- init_master / exit_master, init_worker / exit_worker, reopen_logs: append a line to
  `<hello_state_dir>/events.log`;
- a shared-memory zone `hello.ticks` and a process role `hello ticker` that counts in it;
- an access-phase handler: a request with `X-Hello-Deny` gets 403;
- a content handler `hello`: JSON with the greeting, the captured name, the ticks;
- a header filter (adds `X-Hello: 1`) and a body filter (upper-cases when shouting);
- a command: `bizzyd hello` prints the greeting of the first hello location;
- a check: `hello_greeting` must not be empty where `content: hello` is used.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from bizzyd.config.schema import LOCATION, ConfigError, Directive
from bizzyd.config.types import Bool, Str
from bizzyd.http.phases import Request
from bizzyd.http.response import HTTPError, Response
from bizzyd.module import Filter, Module, PhaseHandler, ProcessContext, ProcessRole
from bizzyd.shm import ZoneSpec

TICKS = ZoneSpec("hello.ticks", (("ticks", "q"),), 1)


def _mark(ctx: ProcessContext, event: str) -> None:
    folder = Path(ctx.config["hello_state_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "events.log", "a") as f:
        f.write(f"{event} {ctx.role} {os.getpid()}\n")


def init_master(ctx: ProcessContext) -> None:
    _mark(ctx, "init_master")
    ctx.log.notice("hello: master ready")  # type: ignore[attr-defined]


def exit_master(ctx: ProcessContext) -> None:
    _mark(ctx, "exit_master")


def init_worker(ctx: ProcessContext) -> None:
    ctx.state["hello"] = {"served": 0}
    _mark(ctx, "init_worker")


def exit_worker(ctx: ProcessContext) -> None:
    _mark(ctx, f"exit_worker served={ctx.state['hello']['served']}")


def reopen_logs(ctx: ProcessContext) -> None:
    _mark(ctx, "reopen_logs")


def ticker(ctx: ProcessContext) -> int:
    """The `hello ticker` process: counts ticks in the shared zone until told to stop."""
    stop = []
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    zone = ctx.zones["hello.ticks"]
    while not stop:
        zone.set(0, "ticks", zone.get(0, "ticks") + 1)
        time.sleep(0.1)
    return 0


def deny_on_header(request: Request) -> None:
    if request.header("X-Hello-Deny") is not None:
        raise HTTPError(403, "hello says no")


def hello(request: Request) -> Response:
    state = request.process.state["hello"]
    state["served"] += 1
    body = {"greeting": request.location.config["hello_greeting"],
            "name": request.captures.get("name"),
            "ticks": request.process.zones["hello.ticks"].get(0, "ticks"),
            "served_by_this_worker": state["served"]}
    return Response(200, json.dumps(body), content_type="application/json")


def add_header(request: Request, response: Response) -> None:
    response.set_header("X-Hello", "1")


def shout(request: Request, response: Response, chunk: bytes, last: bool) -> bytes:
    return chunk.upper()


def hello_command(argv: list[str], config) -> int:
    for server in config.servers:
        for location in server["locations"]:
            if location.get("content") == "hello":
                print(location["hello_greeting"])
                return 0
    print("no hello location")
    return 1


def check(config) -> None:
    for i, server in enumerate(config.servers):
        for j, location in enumerate(server["locations"]):
            if location.get("content") == "hello" and not location["hello_greeting"].strip():
                key = ("http", "servers", i, "locations", j, "hello_greeting")
                raise ConfigError("must not be blank for a hello location", key,
                                  config.mark(key))


def _is_hello(config) -> bool:
    return config.get("content") == "hello"


module = Module(
    name="hello",
    directives=(
        Directive("hello_state_dir", Str(), "hello", path=True,
                  doc="Where the example's hooks record what they did."),
        Directive("hello_greeting", Str(allow_empty=True), "Hello", (LOCATION,),
                  doc="The greeting."),
        Directive("hello_shout", Bool(), False, (LOCATION,), doc="Upper-case the body."),
    ),
    init_master=init_master,
    exit_master=exit_master,
    init_worker=init_worker,
    exit_worker=exit_worker,
    reopen_logs=reopen_logs,
    roles=(ProcessRole("hello ticker", ticker),),
    zones=lambda config: [TICKS],
    phase_handlers=(PhaseHandler("access", deny_on_header, applies=_is_hello),),
    content_handlers={"hello": hello},
    header_filters=(Filter(add_header, order=600, applies=_is_hello),),
    body_filters=(Filter(shout, order=600,
                         applies=lambda config: _is_hello(config) and config["hello_shout"]),),
    commands={"hello": hello_command},
    check=check,
    doc=__doc__ or "",
)
