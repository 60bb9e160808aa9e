"""The analytics operations in the OpenAPI document, and schemathesis over them with a
premium user's token from the emulator (every check but positive_data_acceptance: a
schema-valid hive id that no hive has, or of another account, is refused with 404)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import sql
from .test_analytics import premium

pytestmark = pytest.mark.services
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
OPERATIONS = {
    ("get", "/v1/hives/{id}/occupancy/history"), ("get", "/v1/hives/{id}/occupancy/at"),
    ("post", "/v1/hives/{id}/corrections"), ("get", "/v1/hives/{id}/corrections"),
    ("put", "/v1/hives/{id}/capacity-schedule"), ("get", "/v1/hives/{id}/capacity-schedule"),
}


def test_the_document_has_every_analytics_operation(api: httpx.Client) -> None:
    doc = api.get("/v1/openapi.json").json()
    ops = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert ops >= OPERATIONS
    history = doc["paths"]["/v1/hives/{id}/occupancy/history"]["get"]
    assert {"403", "422"} <= set(history["responses"])
    assert "security" not in history or history["security"] != [{"bearerAuth": []}]
    post = doc["paths"]["/v1/hives/{id}/corrections"]["post"]
    assert post["security"] == [{"bearerAuth": []}] and "201" in post["responses"]


def test_schemathesis_with_a_token_finds_no_failure(api: httpx.Client, tmp_path) -> None:
    header = premium(api)
    assert sql(api.dsn, "SELECT count(*) FROM hive")[0][0] > 0
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{api.base_url}/v1/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "15",
         "--seed", "18", "--request-timeout", "10", "--report-dir", str(tmp_path),
         "-H", f"Authorization: {header['Authorization']}",
         "--include-path-regex", "^/v1/hives/\\{id\\}/(occupancy/|corrections|capacity)"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert f"Selected: {len(OPERATIONS)}/" in done.stdout, done.stdout[-3000:]
