"""schemathesis against a live bizzyd on the demo city: every operation of the served
OpenAPI document, positive and negative cases, every check but one: no 5xx, every
response (status, content type, headers, body) conforms to the document, undeclared
methods get 405, invalid input gets 4xx.

Excluded: `positive_data_acceptance`, which expects every schema-valid request to be
accepted; a pagination cursor (any base64url text by its schema) or a type slug that
no hive type has is schema-valid and still refused with 400, by design."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bizzyd_proc import free_port, running
from modules.analytics.testing import add_analytics
from modules.hives.testing import catalogue_config

from .conftest import memcached_address

pytestmark = pytest.mark.services

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_schemathesis_finds_no_failure(catalogue, tmp_path):
    url = f"{catalogue.base_url}/v1/openapi.json"
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", url, "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "25",
         "--seed", "15", "--request-timeout", "10", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Selected: 6/6" in done.stdout  # every catalogue operation was tested


@pytest.fixture(scope="module")
def analytics(tmp_path_factory: pytest.TempPathFactory, catalogue_dsn: str
              ) -> Iterator[httpx.Client]:
    """The catalogue plus the public analytics endpoints (modules.analytics, no sign-in:
    a week is free)."""
    port = free_port()
    config = add_analytics(catalogue_config(port, catalogue_dsn, memcached_address()),
                           settings={"free_history": "7d"}, signed_in=False)
    with running(tmp_path_factory.mktemp("analytics"), config, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client


def test_schemathesis_on_the_analytics_endpoints(analytics, tmp_path):
    url = f"{analytics.base_url}/v1/openapi.json"
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", url, "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "25",
         "--include-path-regex", "/occupancy/(history|at)$",
         "--seed", "18", "--request-timeout", "10", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Selected: 2/" in done.stdout
