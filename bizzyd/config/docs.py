"""Generate docs/config.md from the directive records (`make docs`).

The reference is derived from the same `Directive` records the validator uses, so
the docs cannot drift from the behaviour; a test checks the file is up to date.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

from ..http.builtin import BUILTIN_MODULES
from .core import CORE_DIRECTIVES
from .schema import Block, Directive
from .types import Type

HEADER = """\
# Configuration reference

Generated from the directive records by `make docs` (`python -m bizzyd.config.docs`);
do not edit by hand. Sizes take units (`512`, `64k`, `1m`, `1g`), durations too
(`10ms`, `75s`, `1m`, `1h`, `1d`). Contexts: `main` (top level), `http`, `server`
(an item of `http.servers`), `location` (an item of a server's `locations`). A
directive allowed in several of http/server/location is inherited downward.
"""


def _default(d: Directive) -> str:
    if isinstance(d.type, Block):
        return "(block)"
    value = d.default
    if isinstance(d.type, Type) and value is not None and not isinstance(value, str | list):
        value = d.type.dump(value)
    return "null" if value is None else f"`{value}`"


def _rows(directives: Iterable[Directive], prefix: str = "") -> list[str]:
    rows = []
    for d in directives:
        type_name = d.type.name if not isinstance(d.type, Block) else "block"
        doc = d.doc.replace("|", "\\|")
        rows.append(f"| `{prefix}{d.name}` | {', '.join(d.context)} | {type_name} | "
                    f"{_default(d)} | {doc} |")
        if isinstance(d.type, Block):
            rows += _rows(d.type.directives, f"{prefix}{d.name}.")
    return rows


def render(module_names: Iterable[str] = ()) -> str:
    parts = [HEADER, "\n## Core\n", *_table(CORE_DIRECTIVES)]
    for name in (*BUILTIN_MODULES, *module_names):
        module = importlib.import_module(name).module
        if module.directives:
            parts += [f"\n## Module `{module.name}` (`{name}`)\n", *_table(module.directives)]
    return "\n".join(parts) + "\n"


def _table(directives: Iterable[Directive]) -> list[str]:
    return ["| directive | contexts | type | default | meaning |",
            "|---|---|---|---|---|", *_rows(directives)]


SHIPPED_MODULES: tuple[str, ...] = ("modules.database", "modules.status", "modules.gzip",
                                     "modules.conditional", "modules.cors",
                                     "modules.occupancy", "modules.mqtt_ingest", "modules.api",
                                     "modules.hives", "modules.auth", "modules.users",
                                     "modules.store", "modules.business", "modules.queue",
                                     "modules.analytics", "modules.kpis",
                                     "modules.insights", "modules.dashboard",
                                     "modules.notifier")

if __name__ == "__main__":
    sys.stdout.write(render(SHIPPED_MODULES))
