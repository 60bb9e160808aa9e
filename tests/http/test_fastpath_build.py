"""The two builds of the HTTP fast path (bizzyd/http/build.py): which one runs, and
that a compiled module older than its sources is never used.  The HTTP suites run on
each build (`make test` runs tests/http again with BIZZYD_PURE_PYTHON=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bizzyd.http import build

ROOT = Path(__file__).resolve().parents[2]
PURE = os.environ.get("BIZZYD_PURE_PYTHON", "") not in ("", "0")


def _version(**env: str) -> str:
    out = subprocess.run([sys.executable, "-m", "bizzyd", "-v"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, **env})
    return out.stdout.strip()


@pytest.mark.skipif(PURE, reason="this run asks for the plain-Python build")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler: nothing to compile")
def test_the_compiled_build_runs_where_it_can_be_built() -> None:
    assert build.COMPILED, build.describe()
    assert build.fastpath.__file__.endswith(".so")
    assert "compiled (Cython)" in _version(BIZZYD_PURE_PYTHON="0")


def test_the_environment_asks_for_the_plain_build() -> None:
    assert _version(BIZZYD_PURE_PYTHON="1").endswith(
        "(HTTP fast path: pure Python (BIZZYD_PURE_PYTHON is set))")
    if PURE:
        assert not build.COMPILED and build.fastpath.__file__.endswith("fastpath.py")


def test_a_compiled_module_older_than_a_source_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIZZYD_PURE_PYTHON", raising=False)
    if not build.fastpath.__file__.endswith(".so"):
        pytest.skip("no compiled module here")
    newer = tmp_path / "fastpath.pxd"
    newer.write_text("")
    built = Path(build.fastpath.__file__).stat().st_mtime
    os.utime(newer, (built + 10, built + 10))
    monkeypatch.setattr(build, "SOURCES", (*build.SOURCES[:1], newer))
    why = build._why_pure()
    assert why is not None and "older than its sources: run `make`" in why
    monkeypatch.setattr(build, "SOURCES", build.SOURCES[:1])
    assert build._why_pure() is None
