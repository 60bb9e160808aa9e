"""The inbox endpoints and the new alert settings (margin, cooldown), signed in with a
token of the Firebase Auth emulator; the alert set through the API reaches the phone."""

from __future__ import annotations

import secrets

import httpx
import pytest

from bizzyd_proc import wait_for
from modules.auth.testing import emulator_token

pytestmark = pytest.mark.services


@pytest.fixture
def me(stack):
    token = emulator_token(stack.emulator, f"inbox{secrets.token_hex(5)}@example.com")
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.port}", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        client.user_id = client.get("/v1/me").json()["id"]  # type: ignore[attr-defined]
        yield client


def test_settings_take_margin_and_cooldown_and_default_them(stack, me) -> None:
    hive = stack.hives[9]
    old = me.post("/v1/me/notifications", json={"kind": "occupancy", "hive_id": hive,
                                                "direction": "rises_above",
                                                "threshold_percent": 40})
    assert old.status_code == 201, old.text
    assert (old.json()["margin"], old.json()["cooldown_seconds"]) == (5, 900)
    new = me.post("/v1/me/notifications", json={
        "kind": "occupancy", "hive_id": hive, "direction": "rises_above",
        "threshold_percent": 60, "margin": 0, "cooldown_seconds": 0})
    assert (new.json()["margin"], new.json()["cooldown_seconds"]) == (0, 0)
    patched = me.patch(f"/v1/me/notifications/{old.json()['id']}", json={"margin": 12})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["margin"], patched.json()["cooldown_seconds"],
            patched.json()["threshold_percent"]) == (12, 900, 40)
    bad = me.patch(f"/v1/me/notifications/{old.json()['id']}", json={"cooldown_seconds": -1})
    assert bad.status_code == 422
    assert bad.json()["invalid_params"][0]["name"] == "cooldown_seconds"
    listed = {n["id"]: n for n in me.get("/v1/me/notifications").json()["items"]}
    assert listed[old.json()["id"]]["margin"] == 12


def test_an_alert_set_through_the_api_lands_in_the_inbox(stack, me) -> None:
    hive = stack.hives[10]
    stack.baseline(hive, 10)
    assert me.put(f"/v1/me/devices/inbox-{me.user_id}", json={"platform": "ios"}) \
        .status_code == 204
    note = me.post("/v1/me/notifications", json={
        "kind": "occupancy", "hive_id": hive, "direction": "rises_above",
        "threshold_count": 30, "margin": 0, "cooldown_seconds": 0}).json()
    stack.wait_loaded(note["id"])
    stack.occupancy(hive, 31)
    stack.fcm.wait(lambda f: f.ok(f"inbox-{me.user_id}"), what="the push")
    stack.occupancy(hive, 29)                # margin 0: just below re-arms
    stack.wait_state(note["id"], armed=True)
    stack.occupancy(hive, 35)                # and crosses again
    wait_for(lambda: me.get("/v1/me/notifications/inbox").json()["unread"] == 2, 15,
             what="two unread notifications")

    page = me.get("/v1/me/notifications/inbox").json()
    assert [i["kind"] for i in page["items"]] == ["occupancy_above"] * 2
    newest, oldest = page["items"]
    assert newest["id"] > oldest["id"] and newest["hive_id"] == hive and newest["pushed"]
    assert me.get("/v1/me/notifications/inbox?limit=1").json()["next_before"] == newest["id"]
    assert [i["id"] for i in me.get(f"/v1/me/notifications/inbox?before={newest['id']}")
            .json()["items"]] == [oldest["id"]]

    read = me.patch(f"/v1/me/notifications/inbox/{oldest['id']}", json={"read": True})
    assert read.status_code == 200 and read.json()["read_at"] is not None
    unread = me.get("/v1/me/notifications/inbox?unread=true").json()
    assert [i["id"] for i in unread["items"]] == [newest["id"]] and unread["unread"] == 1
    again = me.patch(f"/v1/me/notifications/inbox/{oldest['id']}", json={"read": False})
    assert again.json()["read_at"] is None
    assert me.post("/v1/me/notifications/inbox/read").json() == {"updated": 2}
    assert me.get("/v1/me/notifications/inbox").json()["unread"] == 0


def test_the_inbox_is_private_and_validated(stack, me) -> None:
    other = stack.user()
    row = stack.sql("INSERT INTO user_inbox (user_id, idempotency_key, kind, title, body, "
                    "pushed) VALUES ($1, $2, 'new_deal', 'x', 'y', true) RETURNING id",
                    other, f"test:{secrets.token_hex(4)}")[0]["id"]
    assert me.patch(f"/v1/me/notifications/inbox/{row}", json={"read": True}) \
        .status_code == 404
    assert row not in [i["id"] for i in me.get("/v1/me/notifications/inbox").json()["items"]]
    bad = me.patch(f"/v1/me/notifications/inbox/{row}", json={"read": "yes"})
    assert bad.status_code == 422
    assert me.get("/v1/me/notifications/inbox?limit=0").status_code == 400
    anonymous = httpx.get(f"http://127.0.0.1:{stack.port}/v1/me/notifications/inbox")
    assert anonymous.status_code == 401
