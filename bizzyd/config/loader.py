"""Reading config files: YAML with line numbers for every key, and `include:` globs.

`include:` at the top of a file names glob patterns (relative to that file's
directory).  Each included file has the same shape as the main file and is merged
into it: mappings merge key by key, lists are concatenated (so an included file
can add servers or locations), and a scalar set twice is an error naming both places.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import yaml

from .schema import ConfigError, KeyPath, Marks

MAX_INCLUDE_DEPTH = 8


def load_file(path: Path) -> tuple[Any, Marks]:
    """Parse one YAML file into plain Python values plus a mark (file, line) per key path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}",
                          where=(str(path), 0)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", where=(str(path), line)) from None
    marks: Marks = {}
    if node is None:
        return {}, marks
    return _construct(yaml.SafeLoader(""), node, (), str(path), marks), marks


def _construct(loader: yaml.SafeLoader, node: yaml.Node, key: KeyPath, name: str,
               marks: Marks) -> Any:
    marks[key] = (name, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            k = loader.construct_object(knode, deep=True)
            if k in out:
                raise ConfigError("duplicate key", key + (k,), (name, knode.start_mark.line + 1))
            marks[key + (k,)] = (name, knode.start_mark.line + 1)
            out[k] = _construct(loader, vnode, key + (k,), name, marks)
            marks[key + (k,)] = (name, knode.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, key + (i,), name, marks) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load(path: Path) -> tuple[dict[str, Any], Marks]:
    """Load the main file and everything it includes, merged."""
    return _load(path.resolve(), 0)


def _load(path: Path, depth: int) -> tuple[dict[str, Any], Marks]:
    data, marks = load_file(path)
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of directives", where=(str(path), 1))
    includes = data.pop("include", None)
    if includes is None:
        return data, marks
    if depth >= MAX_INCLUDE_DEPTH:
        raise ConfigError("includes nested too deeply", ("include",), marks.get(("include",)))
    for pattern in includes if isinstance(includes, list) else [includes]:
        for inc in _expand(pattern, path, marks):
            more, more_marks = _load(inc, depth + 1)
            _merge(data, more, (), marks, more_marks)
    return data, marks


def _expand(pattern: Any, path: Path, marks: Marks) -> list[Path]:
    if not isinstance(pattern, str):
        raise ConfigError("expected a glob pattern string", ("include",), marks.get(("include",)))
    full = pattern if Path(pattern).is_absolute() else str(path.parent / pattern)
    found = sorted(Path(p) for p in glob.glob(full))
    if not found and not glob.has_magic(pattern):
        raise ConfigError(f"included file {full} does not exist", ("include",),
                          marks.get(("include",)))
    return found


def _merge(dst: dict, src: dict, key: KeyPath, marks: Marks, src_marks: Marks) -> None:
    for k, v in src.items():
        here = key + (k,)
        if k not in dst:
            dst[k] = v
            _copy_marks(src_marks, here, here, marks)
        elif isinstance(dst[k], dict) and isinstance(v, dict):
            _merge(dst[k], v, here, marks, src_marks)
        elif isinstance(dst[k], list) and isinstance(v, list):
            offset = len(dst[k])
            dst[k].extend(v)
            for i in range(len(v)):
                _copy_marks(src_marks, here + (i,), here + (i + offset,), marks)
        else:
            first = marks.get(here)
            where = f" (first set at {first[0]}:{first[1]})" if first else ""
            raise ConfigError(f"set twice{where}", here, src_marks.get(here))


def _copy_marks(src: Marks, old: KeyPath, new: KeyPath, dst: Marks) -> None:
    n = len(old)
    for k, mark in src.items():
        if k[:n] == old:
            dst[new + k[n:]] = mark
