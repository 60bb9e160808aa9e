"""Which build of the fast path (fastpath.py) a process runs.

`make` compiles fastpath.py with Cython into an extension module beside it
(setup.py; `pip install .` does the same where a C compiler is found).  This module
picks it when it is there and not older than its sources, else the plain module.
BIZZYD_PURE_PYTHON=1 in the environment makes a process use the plain module even
where the compiled one is current (as zope's PURE_PYTHON does): the tests run the
HTTP suites both ways.  The master logs the choice at start (`describe()`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

NAME = "bizzyd.http.fastpath"
SOURCES = tuple(Path(__file__).with_name(f"fastpath.{ext}") for ext in ("py", "pxd"))


def _why_pure() -> str | None:
    """None when the compiled module is to be used, else why not."""
    if os.environ.get("BIZZYD_PURE_PYTHON", "") not in ("", "0"):
        return "BIZZYD_PURE_PYTHON is set"
    spec = importlib.util.find_spec(NAME)
    origin = spec.origin if spec is not None else None
    if origin is None or origin.endswith(".py"):
        return "not compiled: run `make` (needs a C compiler and the Python headers)"
    built = Path(origin).stat().st_mtime
    if any(source.stat().st_mtime > built for source in SOURCES):
        return f"{Path(origin).name} is older than its sources: run `make`"
    return None


def _load(why_pure: str | None) -> ModuleType:
    if why_pure is None or NAME in sys.modules:
        return importlib.import_module(NAME)
    spec = importlib.util.spec_from_file_location(NAME, SOURCES[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module


WHY_PURE = _why_pure()
fastpath = _load(WHY_PURE)
COMPILED = not (fastpath.__file__ or "").endswith(".py")


def describe() -> str:
    """The build in use, for the start-up log and `bizzyd -v`."""
    if COMPILED:
        return "compiled (Cython)"
    return f"pure Python ({WHY_PURE})" if WHY_PURE else "pure Python"
