"""Signed-in endpoints against the Firebase Auth emulator, Postgres and memcached."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from bizzyd_proc import wait_for

from .conftest import hive_ids, new_token, sql

pytestmark = pytest.mark.services
PROBLEM = "application/problem+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user(api: httpx.Client) -> dict[str, str]:
    return bearer(new_token(api.emulator))


def problem(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    if param is not None:
        assert body["invalid_params"][0]["name"] == param, body
    return body


# ---------------------------------------------------------------- sign-in

def test_without_a_token_it_is_401(api: httpx.Client) -> None:
    r = api.get("/v1/me")
    problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Bearer a.b.c", "Basic dXNlcg==",
                                    "Bearer " + "x" * 2000])
def test_a_bad_token_is_401_invalid_token(api: httpx.Client, header: str) -> None:
    r = api.get("/v1/me", headers={"Authorization": header})
    problem(r, 401)
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_token_of_another_project_is_refused(api: httpx.Client) -> None:
    import jwt
    token = new_token(api.emulator)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["aud"] = "another-project"
    forged = jwt.encode(claims, None, algorithm="none")
    problem(api.get("/v1/me", headers=bearer(forged)), 401)


def test_first_call_creates_the_user_and_me_shows_the_free_plan(api: httpx.Client) -> None:
    token = new_token(api.emulator)
    r = api.get("/v1/me", headers=bearer(token))
    assert r.status_code == 200, r.text
    me = r.json()
    rows = sql(api.dsn, "SELECT id, nickname FROM app_user WHERE firebase_uid = $1", me["uid"])
    assert [r["id"] for r in rows] == [me["id"]]
    assert me["subscription"]["plan"] == "free" and me["subscription"]["expires_at"] is None
    assert me["features"] == ["live_occupancy"]
    assert r.headers["cache-control"] == "private, no-store"
    # again (both workers, cached tokens): still one row
    for _ in range(6):
        assert api.get("/v1/me", headers=bearer(token)).json()["id"] == me["id"]
    assert len(sql(api.dsn, "SELECT 1 FROM app_user WHERE firebase_uid = $1", me["uid"])) == 1


def test_subscription_and_features_show_in_me(api: httpx.Client) -> None:
    h = user(api)
    me = api.get("/v1/me", headers=h).json()
    problem(api.get("/v1/me/history", headers=h), 403)
    sql(api.dsn, """INSERT INTO subscription (subscription_type_id, user_id, expires_at)
                    SELECT id, $1, now() + interval '30 days' FROM subscription_type
                    WHERE code = 'premium'""", me["id"])
    me = api.get("/v1/me", headers=h).json()
    assert me["subscription"]["plan"] == "premium" and me["subscription"]["expires_at"]
    assert "occupancy_history" in me["features"]
    assert api.get("/v1/me/history", headers=h).status_code == 200
    problem(api.get("/v1/me/history"), 401)


def test_subscription_types_are_listed(api: httpx.Client) -> None:
    items = api.get("/v1/subscription-types").json()["items"]
    assert [i["code"] for i in items] == ["free", "basic", "premium"]
    assert "occupancy_alerts" in items[2]["features"]


# ---------------------------------------------------------------- profile

def test_patch_me_sets_the_nickname_and_validates_it(api: httpx.Client) -> None:
    h = user(api)
    r = api.patch("/v1/me", headers=h, json={"nickname": "Ada"})
    assert r.status_code == 200 and r.json()["nickname"] == "Ada"
    assert api.get("/v1/me", headers=h).json()["nickname"] == "Ada"
    problem(api.patch("/v1/me", headers=h, json={"nickname": "x" * 51}), 422, "nickname")
    problem(api.patch("/v1/me", headers=h, json={"nickname": 5}), 422, "nickname")
    problem(api.patch("/v1/me", headers=h, json={"nick": "a"}), 422)
    problem(api.patch("/v1/me", headers=h, content=b"{not json"), 400)
    problem(api.patch("/v1/me", headers=h), 400)
    r = api.patch("/v1/me", headers=h, json={"nickname": "a" * 5000})
    assert r.status_code == 413
    assert api.patch("/v1/me", headers=h, json={"nickname": None}).json()["nickname"] is None


# ---------------------------------------------------------------- favourites, recents

def test_favourites_are_idempotent(api: httpx.Client) -> None:
    h = user(api)
    a, b = hive_ids(api.dsn, 2)
    for _ in range(2):
        assert api.put(f"/v1/me/favourites/{a}", headers=h).status_code == 204
    assert api.put(f"/v1/me/favourites/{b}", headers=h).status_code == 204
    items = api.get("/v1/me/favourites", headers=h).json()["items"]
    assert sorted(i["hive_id"] for i in items) == [a, b]
    for _ in range(2):
        assert api.delete(f"/v1/me/favourites/{a}", headers=h).status_code == 204
    assert [i["hive_id"] for i in api.get("/v1/me/favourites", headers=h).json()["items"]] == [b]
    problem(api.put("/v1/me/favourites/999999999", headers=h), 404, "hive_id")


def test_a_signed_in_hive_read_records_a_recent(api: httpx.Client) -> None:
    h = user(api)
    a, b, c = hive_ids(api.dsn, 3)
    for hive in (a, b, a, c, a):
        assert api.get(f"/v1/hives/{hive}", headers=h).status_code == 200
    assert api.get(f"/v1/hives/{b}").status_code == 200  # anonymous: not recorded
    wait_for(lambda: len(api.get("/v1/me/recent", headers=h).json()["items"]) == 3,
             timeout=5, what="recents written")
    items = api.get("/v1/me/recent", headers=h).json()["items"]
    assert items[0]["hive_id"] == a
    assert {i["hive_id"] for i in items} == {a, b, c}
    problem(api.get(f"/v1/hives/{a}", headers=bearer("bad")), 401)


# ---------------------------------------------------------------- notifications

OCCUPANCY = {"kind": "occupancy", "direction": "rises_above", "threshold_percent": 80,
             "quiet_hours": {"start": "22:00", "end": "07:30"}, "time_zone": "Europe/Berlin"}


def test_notification_settings_round_trip(api: httpx.Client) -> None:
    h = user(api)
    hive = hive_ids(api.dsn, 1)[0]
    r = api.post("/v1/me/notifications", headers=h, json={**OCCUPANCY, "hive_id": hive})
    assert r.status_code == 201, r.text
    note = r.json()
    assert note["direction"] == "rises_above" and note["quiet_hours"]["end"] == "07:30"
    problem(api.post("/v1/me/notifications", headers=h, json={**OCCUPANCY, "hive_id": hive}),
            409)
    r = api.patch(f"/v1/me/notifications/{note['id']}", headers=h,
                  json={"direction": "falls_below"})
    assert r.status_code == 200 and r.json()["direction"] == "falls_below"
    assert r.json()["threshold_percent"] == 80 and r.json()["quiet_hours"]  # kept
    problem(api.patch(f"/v1/me/notifications/{note['id']}", headers=h,
                      json={"threshold_count": 40}), 422, "threshold_percent")  # both
    r = api.patch(f"/v1/me/notifications/{note['id']}", headers=h,
                  json={"threshold_percent": None, "threshold_count": 40,
                        "quiet_hours": None})
    assert r.status_code == 200, r.text
    assert (r.json()["threshold_percent"], r.json()["threshold_count"],
            r.json()["quiet_hours"]) == (None, 40, None)
    r = api.post("/v1/me/notifications", headers=h,
                 json={"kind": "new_deal", "deal_kinds": ["happy_hour", "event"]})
    assert r.status_code == 201 and r.json()["deal_kinds"] == ["event", "happy_hour"]
    assert len(api.get("/v1/me/notifications", headers=h).json()["items"]) == 2
    assert api.delete(f"/v1/me/notifications/{note['id']}", headers=h).status_code == 204
    problem(api.delete(f"/v1/me/notifications/{note['id']}", headers=h), 404)


@pytest.mark.parametrize("body, field", [
    ({**OCCUPANCY}, "hive_id"),
    ({**OCCUPANCY, "hive_id": 1, "direction": None}, "direction"),
    ({**OCCUPANCY, "hive_id": 1, "direction": "sideways"}, "direction"),
    ({**OCCUPANCY, "hive_id": 1, "threshold_percent": 101}, "threshold_percent"),
    ({**OCCUPANCY, "hive_id": 1, "threshold_count": 5}, "threshold_percent"),
    ({**OCCUPANCY, "hive_id": 1, "time_zone": "Mars/Olympus"}, "time_zone"),
    ({**OCCUPANCY, "hive_id": 1, "quiet_hours": {"start": "25:00", "end": "07:00"}},
     "quiet_hours.start"),
    ({**OCCUPANCY, "hive_id": 1, "quiet_hours": {"start": "07:00", "end": "07:00"}},
     "quiet_hours"),
    ({**OCCUPANCY, "hive_id": 999999999}, "hive_id"),
    ({"kind": "new_deal", "threshold_percent": 5}, "threshold_percent"),
    ({"kind": "new_deal", "deal_kinds": ["free_beer"]}, "deal_kinds[0]"),
    ({"kind": "birthday"}, "kind"),
])
def test_notification_settings_are_validated(api: httpx.Client, body: dict,
                                             field: str) -> None:
    problem(api.post("/v1/me/notifications", headers=user(api), json=body), 422, field)


# ---------------------------------------------------------------- devices, messages

def test_devices_are_registered_and_removed(api: httpx.Client) -> None:
    h = user(api)
    me = api.get("/v1/me", headers=h).json()
    token = "fcm:APA91b-" + "x" * 140
    assert api.put(f"/v1/me/devices/{token}", headers=h,
                   json={"platform": "ios"}).status_code == 204
    rows = sql(api.dsn, "SELECT user_id, platform FROM user_device WHERE fcm_token = $1", token)
    assert [(r["user_id"], r["platform"]) for r in rows] == [(me["id"], "ios")]
    problem(api.put(f"/v1/me/devices/{token}", headers=h, json={"platform": "nokia"}), 422,
            "platform")
    assert api.delete(f"/v1/me/devices/{token}", headers=h).status_code == 204
    assert not sql(api.dsn, "SELECT 1 FROM user_device WHERE fcm_token = $1", token)


def test_messages_are_sent_and_listed(api: httpx.Client) -> None:
    h = user(api)
    hive = hive_ids(api.dsn, 1)[0]
    r = api.post("/v1/me/messages", headers=h, json={"text": "Great!", "hive_id": hive,
                                                      "rating": 5})
    assert r.status_code == 201 and r.json()["kind"] == "feedback"
    assert api.post("/v1/me/messages", headers=h, json={"text": "help"}).status_code == 201
    items = api.get("/v1/me/messages", headers=h).json()["items"]
    assert [i["text"] for i in items] == ["help", "Great!"]
    problem(api.post("/v1/me/messages", headers=h, json={"text": "x", "rating": 6,
                                                         "hive_id": hive}), 422, "rating")
    problem(api.post("/v1/me/messages", headers=h, json={"text": "   "}), 422, "text")
    problem(api.post("/v1/me/messages", headers=h, json={"text": ""}), 422, "text")


# ---------------------------------------------------------------- analytics events

def test_events_are_accepted_and_written_in_batches(api: httpx.Client) -> None:
    h = user(api)
    me = api.get("/v1/me", headers=h).json()
    events = [{"type": "hive_viewed", "page": "hive/detail", "hive_id": 1, "data": {"i": i}}
              for i in range(100)]
    r = api.post("/v1/events", headers=h, json={"events": events})
    assert r.status_code == 202 and r.json() == {"accepted": 100}
    wait_for(lambda: sql(api.dsn, "SELECT count(*) AS n FROM user_analytics "
                                  "WHERE user_id = $1", me["id"])[0]["n"] == 100,
             timeout=5, what="events written")
    problem(api.post("/v1/events", headers=h, json={"events": events + events[:1]}), 422,
            "events")
    problem(api.post("/v1/events", headers=h, json={"events": []}), 422, "events")
    problem(api.post("/v1/events", headers=h,
                     json={"events": [{"type": "hacked", "page": "x"}]}), 422,
            "events[0].type")


# ---------------------------------------------------------------- abuse

def test_writes_are_rate_limited_per_user(api: httpx.Client) -> None:
    h = user(api)
    statuses = [api.patch("/v1/me", headers=h, json={"nickname": "n"}).status_code
                for _ in range(40)]
    assert 429 in statuses and statuses[0] == 200
    r = api.patch("/v1/me", headers=h, json={"nickname": "n"})
    problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    assert api.get("/v1/me", headers=h).status_code == 200  # reads are not limited


def test_writes_are_rate_limited_per_client_address(api: httpx.Client) -> None:
    users = [user(api) for _ in range(5)]  # a burst of 3 (+1) for the address, any user
    statuses = [api.patch("/v1/limited/me", headers=h, json={"nickname": "n"}).status_code
                for h in users]
    assert statuses == [200, 200, 200, 200, 429]


def test_one_user_cannot_touch_another_users_rows(api: httpx.Client) -> None:
    alice, bob = user(api), user(api)
    hive = hive_ids(api.dsn, 1)[0]
    api.put(f"/v1/me/favourites/{hive}", headers=alice)
    note = api.post("/v1/me/notifications", headers=alice,
                    json={**OCCUPANCY, "hive_id": hive}).json()
    api.post("/v1/me/messages", headers=alice, json={"text": "mine"})
    device = "alice-device-token"
    api.put(f"/v1/me/devices/{device}", headers=alice, json={"platform": "android"})
    api.get(f"/v1/hives/{hive}", headers=alice)
    alice_id = api.get("/v1/me", headers=alice).json()["id"]

    for path in ("/v1/me/favourites", "/v1/me/recent", "/v1/me/notifications",
                 "/v1/me/messages"):
        assert api.get(path, headers=bob).json()["items"] == [], path
    assert api.get("/v1/me", headers=bob).json()["id"] != alice_id
    problem(api.patch(f"/v1/me/notifications/{note['id']}", headers=bob,
                      json={"enabled": False}), 404)
    problem(api.delete(f"/v1/me/notifications/{note['id']}", headers=bob), 404)
    assert api.delete(f"/v1/me/favourites/{hive}", headers=bob).status_code == 204
    assert api.delete(f"/v1/me/devices/{device}", headers=bob).status_code == 204
    assert api.delete("/v1/me", headers=bob).status_code == 204

    assert [i["hive_id"] for i in api.get("/v1/me/favourites", headers=alice).json()["items"]] \
        == [hive]
    assert api.get("/v1/me/notifications", headers=alice).json()["items"][0]["enabled"]
    assert len(api.get("/v1/me/messages", headers=alice).json()["items"]) == 1
    assert sql(api.dsn, "SELECT user_id FROM user_device WHERE fcm_token = $1",
               device)[0]["user_id"] == alice_id


def test_delete_me_removes_the_rows_and_anonymises_events(api: httpx.Client) -> None:
    token = new_token(api.emulator)
    h = bearer(token)
    hive = hive_ids(api.dsn, 1)[0]
    me = api.get("/v1/me", headers=h).json()
    api.put(f"/v1/me/favourites/{hive}", headers=h)
    api.post("/v1/me/messages", headers=h, json={"text": "bye"})
    api.put("/v1/me/devices/dev-1", headers=h, json={"platform": "web"})
    api.post("/v1/events", headers=h, json={"events": [{"type": "screen_viewed",
                                                        "page": "home"}]})
    wait_for(lambda: sql(api.dsn, "SELECT 1 FROM user_analytics WHERE user_id = $1",
                         me["id"]), timeout=5, what="event written")
    assert api.delete("/v1/me", headers=h).status_code == 204
    for table in ("user_hive", "user_message", "user_device", "user_analytics", "app_user"):
        column = "id" if table == "app_user" else "user_id"
        assert not sql(api.dsn, f"SELECT 1 FROM {table} WHERE {column} = $1", me["id"]), table
    assert sql(api.dsn, "SELECT 1 FROM user_analytics WHERE user_id IS NULL "
                        "AND data->>'hive_id' IS NULL AND page_identifier = 'home'")


def test_events_wait_for_a_graceful_stop(tmp_path, users_dsn: str) -> None:
    """A long flush interval: the events are written by the stop, not by the timer."""
    from bizzyd_proc import free_port, running
    from modules.users.testing import users_config

    from .conftest import PROJECT, emulator_address

    emulator = emulator_address()
    port = free_port()
    config = users_config(port, users_dsn, os.environ.get("BIZZYD_MEMCACHED", ""),
                          {"project_id": PROJECT, "emulator": emulator}, workers=1)
    config["users"]["flush_interval"] = "1h"
    token = new_token(emulator)
    with running(tmp_path, config, port, stop_signal=signal.SIGQUIT), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        user_id = c.get("/v1/me", headers=bearer(token)).json()["id"]
        r = c.post("/v1/events", headers=bearer(token),
                   json={"events": [{"type": "search_made", "page": "search"}] * 7})
        assert r.status_code == 202
        time.sleep(0.3)  # nothing to await: showing that the timer did not write
        assert not sql(users_dsn, "SELECT 1 FROM user_analytics WHERE user_id = $1",
                       user_id)
    assert len(sql(users_dsn, "SELECT 1 FROM user_analytics WHERE user_id = $1",
                   user_id)) == 7
