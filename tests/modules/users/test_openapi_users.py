"""The signed-in endpoints in the OpenAPI document, and schemathesis over them with a
token from the emulator (every check but positive_data_acceptance, as for the
catalogue: a schema-valid hive id that no hive has is refused with 404/422 by design)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import new_token

pytestmark = pytest.mark.services
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SIGNED_IN = {
    ("get", "/v1/me"), ("patch", "/v1/me"), ("delete", "/v1/me"),
    ("get", "/v1/me/favourites"), ("put", "/v1/me/favourites/{hive_id}"),
    ("delete", "/v1/me/favourites/{hive_id}"), ("get", "/v1/me/recent"),
    ("get", "/v1/me/notifications"), ("post", "/v1/me/notifications"),
    ("patch", "/v1/me/notifications/{id}"), ("delete", "/v1/me/notifications/{id}"),
    ("put", "/v1/me/devices/{fcm_token}"), ("delete", "/v1/me/devices/{fcm_token}"),
    ("get", "/v1/me/messages"), ("post", "/v1/me/messages"), ("post", "/v1/events"),
    ("get", "/v1/me/notifications/inbox"), ("patch", "/v1/me/notifications/inbox/{id}"),
    ("post", "/v1/me/notifications/inbox/read"),
}
ANONYMOUS = {("get", "/v1/subscription-types"), ("post", "/v1/store/apple")}


def test_the_document_has_every_signed_in_operation(api: httpx.Client) -> None:
    doc = api.get("/v1/openapi.json").json()
    ops = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert ops >= SIGNED_IN
    assert ops >= ANONYMOUS
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for method, path in SIGNED_IN:
        op = doc["paths"][path][method]
        assert op["security"] == [{"bearerAuth": []}], (method, path)
        assert {"401", "429"} <= set(op["responses"]), (method, path)
    post = doc["paths"]["/v1/me/notifications"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["threshold_percent"]["anyOf"][0]["maximum"] == 100
    assert set(doc["paths"]["/v1/events"]["post"]["responses"]) >= {"202", "422", "503"}


def test_schemathesis_with_a_token_finds_no_failure(api: httpx.Client, tmp_path) -> None:
    token = new_token(api.emulator)
    url = f"{api.base_url}/v1/openapi.json"
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", url, "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "15",
         "--seed", "16", "--request-timeout", "10", "--report-dir", str(tmp_path),
         "-H", f"Authorization: Bearer {token}",
         "--include-path-regex", "^/v1/(me|events|subscription-types|store)"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert f"Selected: {len(SIGNED_IN) + len(ANONYMOUS)}/" in done.stdout, done.stdout[-3000:]
