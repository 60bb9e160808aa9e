"""App Store Server Notifications V2 through bizzyd, signed by a locally generated CA:
applied to subscription and payment_transaction, idempotent, forged ones refused."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import httpx
import jwt
import pytest

from bizzyd_proc import free_port, running
from modules.store.testing import Chain, notification, transaction
from modules.users.testing import users_config

from .conftest import PROJECT, emulator_address, new_token, sql

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


@pytest.fixture(scope="module")
def store(tmp_path_factory, users_dsn: str, chain: Chain) -> Iterator[httpx.Client]:
    prefix = tmp_path_factory.mktemp("store")
    root = prefix / "root.pem"
    root.write_bytes(chain.root_pem())
    port = free_port()
    emulator = emulator_address()
    config = users_config(port, users_dsn, os.environ.get("BIZZYD_MEMCACHED", ""),
                          {"project_id": PROJECT, "emulator": emulator}, workers=2)
    config["store"] = {"apple_root_certificate": str(root)}
    # the kernel spreads new connections over both workers (by their client port)
    config["http"]["servers"][0]["listen"] = [f"127.0.0.1:{port} reuseport"]
    with running(prefix, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        c.bizzyd, c.emulator = b, emulator  # type: ignore[attr-defined]
        yield c


def fresh(store: httpx.Client, path: str, h: dict[str, str], n: int = 8) -> list[dict]:
    """GET `path` on `n` new connections (so on both workers, see the fixture)."""
    out = []
    for _ in range(n):
        with httpx.Client(base_url=store.base_url, timeout=10) as c:
            out.append(c.get(path, headers=h).json())
    return out


def signed_in(store: httpx.Client) -> tuple[dict[str, str], dict]:
    h = {"Authorization": f"Bearer {new_token(store.emulator)}"}
    return h, store.get("/v1/me", headers=h).json()


def post(store: httpx.Client, body: dict) -> httpx.Response:
    return store.post("/v1/store/apple", json=body)


def rows(dsn: str, original: str) -> tuple[list, list]:
    subs = sql(dsn, "SELECT id, status, user_id, expires_at FROM subscription "
                    "WHERE store = 'apple' AND external_ref = $1", original)
    pays = sql(dsn, "SELECT p.kind, p.status, p.amount_cents, p.provider_ref "
                    "FROM payment_transaction p JOIN subscription s ON s.id = p.subscription_id "
                    "WHERE s.external_ref = $1 ORDER BY p.id", original)
    return [dict(r) for r in subs], [dict(r) for r in pays]


def test_subscribe_renew_fail_expire_refund(store: httpx.Client, chain: Chain,
                                            users_dsn: str) -> None:
    h, me = signed_in(store)
    original = "1000" + secrets.token_hex(6)
    tx = transaction(me["store_account_token"], original, original)
    note = notification(chain, "SUBSCRIBED", tx)
    r = post(store, note)
    assert r.status_code == 200 and r.json() == {"result": "applied"}, r.text
    subs, pays = rows(users_dsn, original)
    assert [(s["status"], s["user_id"]) for s in subs] == [("active", me["id"])]
    assert [(p["kind"], p["amount_cents"]) for p in pays] == [("purchase", 599)]
    # every worker sees the new plan at once (features_ttl is 30 s: the user's change
    # counter in shared memory invalidates the cached free plan)
    for me_now in fresh(store, "/v1/me", h):
        assert me_now["subscription"]["plan"] == "premium"
        assert me_now["subscription"]["store"] == "apple"
        assert "occupancy_alerts" in me_now["features"]

    # a replay changes nothing
    assert post(store, note).json() == {"result": "duplicate"}
    assert rows(users_dsn, original) == (subs, pays)

    renewal = transaction(me["store_account_token"], original, original + "-2", days=60)
    assert post(store, notification(chain, "DID_RENEW", renewal)).json()["result"] == "applied"
    subs2, pays2 = rows(users_dsn, original)
    assert subs2[0]["expires_at"] > subs[0]["expires_at"]
    assert [p["kind"] for p in pays2] == ["purchase", "renewal"]

    assert post(store, notification(chain, "DID_FAIL_TO_RENEW", renewal)).status_code == 200
    assert rows(users_dsn, original)[0][0]["status"] == "pending"
    assert {m["subscription"]["plan"] for m in fresh(store, "/v1/me", h)} == {"free"}

    assert post(store, notification(chain, "EXPIRED", renewal)).status_code == 200
    assert rows(users_dsn, original)[0][0]["status"] == "expired"

    refund = notification(chain, "REFUND", {**renewal, "revocationDate": renewal["signedDate"]})
    assert post(store, refund).json()["result"] == "applied"
    assert post(store, refund).json()["result"] == "duplicate"
    subs3, pays3 = rows(users_dsn, original)
    assert subs3[0]["status"] == "cancelled"
    assert [(p["kind"], p["status"]) for p in pays3] == [
        ("purchase", "succeeded"), ("renewal", "succeeded"), ("renewal", "failed"),
        ("refund", "succeeded")]


def test_every_worker_sees_a_profile_change_at_once(store: httpx.Client) -> None:
    """2 workers, profiles cached for features_ttl (30 s): the shared change counter."""
    h, _ = signed_in(store)
    assert {m["nickname"] for m in fresh(store, "/v1/me", h)} == {None}
    assert store.patch("/v1/me", headers=h, json={"nickname": "Bee"}).status_code == 200
    assert {m["nickname"] for m in fresh(store, "/v1/me", h)} == {"Bee"}


def test_a_replayed_transaction_with_a_new_uuid_changes_nothing(store, chain, users_dsn):
    _, me = signed_in(store)
    original = "2000" + secrets.token_hex(6)
    tx = transaction(me["store_account_token"], original, original)
    for _ in range(2):  # two notification UUIDs, same purchase
        assert post(store, notification(chain, "SUBSCRIBED", tx)).status_code == 200
    subs, pays = rows(users_dsn, original)
    assert len(subs) == 1 and len(pays) == 1


def test_forged_and_unchained_notifications_are_refused(store, chain, users_dsn) -> None:
    _, me = signed_in(store)
    original = "3000" + secrets.token_hex(6)
    tx = transaction(me["store_account_token"], original, original)
    other = Chain("Forger")
    cases = {
        "another root": notification(other, "SUBSCRIBED", tx),
        "no marker extensions": notification(Chain(markers=False), "SUBSCRIBED", tx),
        # the real chain in x5c, signed with another key
        "forged signature": {"signedPayload": chain.sign(
            {"notificationType": "SUBSCRIBED", "notificationUUID": "x",
             "data": {"bundleId": "app.bizzy", "environment": "Production",
                      "signedTransactionInfo": chain.sign(tx)}},
            key=other.leaf_key)},
        # our root at the end, but the leaf and intermediate are the forger's
        "unchained": {"signedPayload": other.sign(
            {"notificationType": "SUBSCRIBED", "notificationUUID": "y", "data": {}},
            x5c=[*other.x5c()[:2], chain.x5c()[2]])},
        "short chain": {"signedPayload": chain.sign({"notificationType": "SUBSCRIBED"},
                                                    x5c=chain.x5c()[:1])},
        "not a JWS": {"signedPayload": "hello"},
        "HS256": {"signedPayload": jwt.encode({"notificationType": "SUBSCRIBED"}, "k" * 32,
                                              algorithm="HS256")},
    }
    for case, body in cases.items():
        r = post(store, body)
        assert r.status_code == 400, (case, r.text)
        assert r.json()["invalid_params"][0]["name"] == "signedPayload", case
    assert rows(users_dsn, original) == ([], [])
    r = post(store, notification(chain, "SUBSCRIBED", tx, environment="Sandbox"))
    assert r.status_code == 422
    r = post(store, notification(chain, "SUBSCRIBED", {**tx, "productId": "nope"}))
    assert r.status_code == 422 and "productId" in r.json()["detail"]
    assert rows(users_dsn, original) == ([], [])
    assert post(store, {"nope": 1}).status_code == 422
