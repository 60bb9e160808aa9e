"""Loading and validating the configuration (see `schema` for the model)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..http.builtin import BUILTIN_MODULES
from ..module import Module, import_modules
from . import loader
from .core import CORE_DIRECTIVES
from .schema import ConfigError, Directive, Marks, Validator, dump

__all__ = ["Config", "ConfigError", "Directive", "load_config"]


@dataclass
class Config:
    """A validated configuration: the tree, the modules it loaded, where it came from."""

    path: Path
    prefix: Path
    tree: dict[str, Any]
    modules: list[Module] = field(default_factory=list)
    directives: tuple[Directive, ...] = ()
    marks: Marks = field(default_factory=dict)

    def mark(self, key: tuple) -> tuple[str, int] | None:
        """The (file, line) where a key path was written, if known."""
        return self.marks.get(key)

    def __getitem__(self, key: str) -> Any:
        return self.tree[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.tree.get(key, default)

    @property
    def servers(self) -> list[dict[str, Any]]:
        return self.tree["http"]["servers"]

    def listen_specs(self) -> list[Any]:
        """Every distinct listen address of every server, in order."""
        seen: dict[tuple, Any] = {}
        for server in self.servers:
            for spec in server["listen"]:
                seen.setdefault(spec.key, spec)
        return list(seen.values())

    def dump_yaml(self) -> str:
        return yaml.safe_dump(dump(self.directives, self.tree), sort_keys=False,
                              default_flow_style=False, allow_unicode=True)


def load_config(path: Path | str, prefix: Path | str | None = None,
                overrides: Sequence[str] = ()) -> Config:
    """Read, merge, validate.  Raises `ConfigError` naming file, line and key."""
    path = Path(path)
    prefix = Path(prefix).resolve() if prefix else path.resolve().parent.parent
    raw, marks = loader.load(path)
    for text in overrides:
        _apply_override(raw, text)
    builtin = import_modules(BUILTIN_MODULES)
    modules = builtin + import_modules(_module_names(raw, marks), marks, builtin)
    directives = CORE_DIRECTIVES + tuple(d for m in modules for d in m.directives)
    tree = Validator(directives, marks, prefix).validate(raw)
    config = Config(path.resolve(), prefix, tree, modules, directives, marks)
    _resolve_unix_paths(config)
    _check_servers(config, marks)
    for module in modules:
        if module.check is not None:
            module.check(config)
    return config


def _module_names(raw: dict[str, Any], marks: Marks) -> list[str]:
    names = raw.get("modules") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("expected a list of module import paths", ("modules",),
                          marks.get(("modules",)))
    return names


def _apply_override(raw: dict[str, Any], text: str) -> None:
    """`-g 'key: value'` sets a top-level directive over what the file says."""
    try:
        extra = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid -g directive {text!r}: {exc}") from None
    if not isinstance(extra, dict):
        raise ConfigError(f"-g expects 'directive: value', got {text!r}")
    raw.update(extra)


def _resolve_unix_paths(config: Config) -> None:
    for server in config.servers:
        server["listen"] = [
            dataclasses.replace(s, address=str(config.prefix / s.address))
            if s.family == socket.AF_UNIX and not str(s.address).startswith("/") else s
            for s in server["listen"]
        ]


def _check_servers(config: Config, marks: Marks) -> None:
    specs: dict[tuple, Any] = {}
    for i, server in enumerate(config.servers):
        for spec in server["listen"]:
            other = specs.setdefault(spec.address, spec)
            if other.backlog != spec.backlog or other.reuseport != spec.reuseport:
                key = ("http", "servers", i, "listen")
                raise ConfigError(f"{spec} is listed with different options by two servers",
                                  key, marks.get(key))
