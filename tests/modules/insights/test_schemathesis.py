"""schemathesis against the insights endpoints of a live bizzyd (the served OpenAPI
document, operations tagged `insights`): positive and negative cases, every check but
`positive_data_acceptance` (as tests/modules/hives/test_schemathesis.py: a schema-valid
id of a hive that does not exist is a 404 by design)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_schemathesis_finds_no_failure(api, tmp_path):
    url = f"{api.base_url}/v1/openapi.json"
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", url, "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--include-tag", "insights",
         "--max-examples", "40", "--seed", "18", "--request-timeout", "10",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Selected: 2/8" in done.stdout  # popular-times and forecast
