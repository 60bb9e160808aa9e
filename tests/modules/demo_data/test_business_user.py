"""`bizzyd demo-data --business-user`: the dashboard's demo user, in the database and in
the Firebase Auth emulator, made again (and nothing else changed) on every run."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from modules.auth.testing import emulator_address
from modules.demo_data.business_user import DEMO_EMAIL, DEMO_PASSWORD, DEMO_UID
from modules.demo_data.generate import main

from .test_demo_data import query, table_digests

pytestmark = pytest.mark.services


def sign_in(email: str, password: str) -> dict[str, Any]:
    url = (f"http://{emulator_address()}/identitytoolkit.googleapis.com/v1/"
           "accounts:signInWithPassword?key=fake-api-key")
    body = json.dumps({"email": email, "password": password, "returnSecureToken": True})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def run(dsn: str, *args: str, firebase: dict[str, Any] | None = None) -> int:
    config: dict[str, Any] = {"database": {"dsn": dsn}}
    if firebase is not None:
        config["firebase"] = firebase
    return main(list(args), config)


def test_the_business_user_signs_in_and_administers_a_small_live_account(
        databases: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = databases.new()
    firebase = {"emulator": emulator_address(), "project_id": "demo-bizzy"}
    args = ("--hives", "40", "--days", "1", "--seed", "1", "--now", "2024-05-06",
            "--business-user")
    assert run(dsn, *args, firebase=firebase) == 0
    assert DEMO_EMAIL in capsys.readouterr().err
    rows = query(dsn, "SELECT m.account_id, m.member_role, "
                 "(SELECT count(*) FROM hive h WHERE h.account_id = m.account_id) AS hives, "
                 "(SELECT count(*) FROM hive h WHERE h.account_id = m.account_id AND NOT "
                 " EXISTS (SELECT 1 FROM sensor s WHERE s.hive_id = h.id)) AS unsensed "
                 "FROM account_member m JOIN app_user u ON u.id = m.user_id "
                 "WHERE u.firebase_uid = $1", DEMO_UID)
    assert [(r["member_role"], r["unsensed"]) for r in rows] == [("admin", 0)]
    assert 2 <= rows[0]["hives"] <= 4
    # every hive of the account has recent feedback, rated and scored
    feedback = query(dsn, "SELECT hive_id, count(*) AS n, count(rating) AS rated, "
                     "count(sentiment) AS scored FROM user_message WHERE kind = 'feedback' "
                     "AND created_at > now() - interval '30 days' AND hive_id IN "
                     "(SELECT id FROM hive WHERE account_id = $1) GROUP BY hive_id",
                     rows[0]["account_id"])
    assert len(feedback) == rows[0]["hives"]
    assert all(r["n"] == r["rated"] == r["scored"] >= 3 for r in feedback)
    # the emulator has the user: signing in with the password (no sign-up) gives its uid
    assert sign_in(DEMO_EMAIL, DEMO_PASSWORD)["localId"] == DEMO_UID

    before = table_digests(dsn)
    assert run(dsn, *args, "--if-empty", firebase=firebase) == 0
    assert table_digests(dsn) == before


def test_without_the_flag_there_is_no_business_user(databases: Any) -> None:
    dsn = databases.new()
    assert run(dsn, "--hives", "3", "--days", "1", "--now", "2024-05-06") == 0
    assert query(dsn, "SELECT id FROM app_user WHERE firebase_uid = $1", DEMO_UID) == []
