"""The kpis endpoints in the OpenAPI document, and schemathesis over them with a token
of an account admin (every check but positive_data_acceptance: a schema-valid id that
names no hive or account of the caller is refused with 404/422 by design)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from kpis_support import business

pytestmark = pytest.mark.services
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
PATHS = ("/v1/hives/{id}/health", "/v1/accounts/{id}/kpis", "/v1/accounts/{id}/feedback")


def test_the_document_has_the_kpis_endpoints(biz: httpx.Client) -> None:
    doc = biz.get("/v1/openapi.json").json()
    for path in PATHS:
        op = doc["paths"][path]["get"]
        assert op["security"] == [{"bearerAuth": []}], path
        assert {"200", "401", "403", "404", "422"} <= set(op["responses"]), path
    kpis = doc["paths"]["/v1/accounts/{id}/kpis"]["get"]
    params = {p["name"]: p for p in kpis["parameters"]}
    assert params["from"]["schema"]["format"] == "date-time"
    assert params["hives"]["schema"]["type"] == "array"
    assert "Little's law" in kpis["description"]


def test_schemathesis_over_the_kpis_endpoints_finds_no_failure(biz: httpx.Client,
                                                                tmp_path) -> None:
    h, _, _ = business(biz)  # low ids mostly exist: not only 404s
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{biz.base_url}/v1/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "15",
         "--seed", "18", "--request-timeout", "10", "--report-dir", str(tmp_path),
         "-H", f"Authorization: {h['Authorization']}",
         "--include-path-regex", r"^/v1/(hives/\{id\}/health|accounts/\{id\}/(kpis|feedback))$"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert f"Selected: {len(PATHS)}/" in done.stdout, done.stdout[-3000:]
