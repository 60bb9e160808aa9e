"""Every shipped config passes `bizzyd -t`: conf/bizzyd.yaml, conf/demo.yaml and each
conf/examples/*.yaml (which must therefore be complete configs, not snippets)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bizzyd_proc import BIZZYD, ROOT

CONFIGS = sorted((ROOT / "conf" / "examples").glob("*.yaml")) + [
    ROOT / "conf" / "bizzyd.yaml", ROOT / "conf" / "demo.yaml"]


def test_there_are_examples() -> None:
    assert {"ingest.yaml", "occupancy.yaml", "production.yaml", "queue.yaml"} <= {
        p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_check_passes(path: Path) -> None:
    done = subprocess.run([*BIZZYD, "-p", str(ROOT), "-c", str(path), "-t"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
