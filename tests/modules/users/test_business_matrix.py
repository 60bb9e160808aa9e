"""The authorization matrix of the business endpoints, generated: every caller
{anonymous, user, viewer, manager, admin of this account, admin of another account,
operator} × every business endpoint × {a resource of this account, one of another
account} gets the status the rules give (docs/api.md "Business accounts"):

- no token: 401;
- an operator (app_user.user_role = operator): the endpoint's success status;
- not a member of the resource's account: 404, as for a missing resource (ids of other
  businesses do not reveal that they exist);
- a member whose role is below the endpoint's: 403; otherwise success.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from .business_support import DEAL, HIVE, bearer, expect, start
from .conftest import PROJECT, emulator_address, new_token, sql

pytestmark = pytest.mark.services
RANK = {"viewer": 1, "manager": 2, "admin": 3}
ACTORS = ("anonymous", "user", "viewer", "manager", "admin", "other_admin", "operator")
# the role each actor has in account "own" (A) and "other" (B)
ROLES: dict[str, dict[str, str]] = {"viewer": {"own": "viewer"},
                                    "manager": {"own": "manager"}, "admin": {"own": "admin"},
                                    "other_admin": {"other": "admin"}}


@dataclass
class World:
    client: httpx.Client
    headers: dict[str, dict[str, str]]     # actor -> Authorization header ({} anonymous)
    accounts: dict[str, int]               # "own"/"other" -> account id
    hives: dict[str, int]                  # a hive of each account
    deals: dict[str, int]                  # a deal of each account
    sensors: dict[str, str]                # a sensor in that hive (its external id)

    def as_admin(self, where: str) -> dict[str, str]:
        return self.headers["admin" if where == "own" else "other_admin"]

    def fresh_hive(self, where: str) -> int:
        r = self.client.post(f"/v1/accounts/{self.accounts[where]}/hives", json=HIVE,
                             headers=self.as_admin(where))
        return expect(r, 201)["id"]

    def fresh_deal(self, where: str) -> int:
        r = self.client.post(f"/v1/hives/{self.hives[where]}/deals", json=DEAL,
                             headers=self.as_admin(where))
        return expect(r, 201)["id"]

    def fresh_image(self, where: str) -> int:
        r = self.client.post(f"/v1/hives/{self.hives[where]}/images",
                             json={"url": "https://cdn.example.com/x.jpg"},
                             headers=self.as_admin(where))
        return expect(r, 201)["id"]

    def fresh_user(self) -> int:
        return sql(self.client.dsn, "INSERT INTO app_user (firebase_uid) VALUES ($1) "
                   "RETURNING id", f"matrix-{secrets.token_hex(8)}")[0][0]

    def fresh_member(self, where: str) -> int:
        user = self.fresh_user()
        r = self.client.put(f"/v1/accounts/{self.accounts[where]}/members/{user}",
                            json={"role": "viewer"}, headers=self.as_admin(where))
        expect(r, 200)
        return user


# endpoint: (method, path template, role needed (None: any signed-in user), success,
#            request builder: world, "own"/"other" -> (path arguments, JSON body))
Builder = Callable[[World, str], tuple[dict[str, Any], Any]]
ENDPOINTS: list[tuple[str, str, str | None, int, Builder]] = [
    ("POST", "/v1/accounts", None, 201, lambda w, a: ({}, {"name": "Matrix Ltd"})),
    ("GET", "/v1/accounts/{id}", "viewer", 200, lambda w, a: ({"id": w.accounts[a]}, None)),
    ("PATCH", "/v1/accounts/{id}", "admin", 200,
     lambda w, a: ({"id": w.accounts[a]}, {"name": f"Renamed {a}"})),
    ("GET", "/v1/accounts/{id}/members", "viewer", 200,
     lambda w, a: ({"id": w.accounts[a]}, None)),
    ("PUT", "/v1/accounts/{id}/members/{user_id}", "admin", 200,
     lambda w, a: ({"id": w.accounts[a], "user_id": w.fresh_user()}, {"role": "viewer"})),
    ("DELETE", "/v1/accounts/{id}/members/{user_id}", "admin", 204,
     lambda w, a: ({"id": w.accounts[a], "user_id": w.fresh_member(a)}, None)),
    ("GET", "/v1/accounts/{id}/audit", "admin", 200, lambda w, a: ({"id": w.accounts[a]}, None)),
    ("GET", "/v1/accounts/{id}/hives", "viewer", 200, lambda w, a: ({"id": w.accounts[a]}, None)),
    ("POST", "/v1/accounts/{id}/hives", "manager", 201,
     lambda w, a: ({"id": w.accounts[a]}, HIVE)),
    ("PATCH", "/v1/hives/{id}", "manager", 200,
     lambda w, a: ({"id": w.hives[a]}, {"description": f"changed {secrets.token_hex(3)}"})),
    ("DELETE", "/v1/hives/{id}", "manager", 204, lambda w, a: ({"id": w.fresh_hive(a)}, None)),
    ("POST", "/v1/hives/{id}/deals", "manager", 201, lambda w, a: ({"id": w.hives[a]}, DEAL)),
    ("PATCH", "/v1/deals/{id}", "manager", 200,
     lambda w, a: ({"id": w.deals[a]}, {"terms": f"t {secrets.token_hex(3)}"})),
    ("GET", "/v1/hives/{id}/sensors", "viewer", 200, lambda w, a: ({"id": w.hives[a]}, None)),
    ("POST", "/v1/hives/{id}/images", "manager", 201,
     lambda w, a: ({"id": w.hives[a]}, {"url": "https://cdn.example.com/y.jpg"})),
    ("PATCH", "/v1/images/{id}", "manager", 200,
     lambda w, a: ({"id": w.fresh_image(a)}, {"position": 3})),
    ("DELETE", "/v1/images/{id}", "manager", 204, lambda w, a: ({"id": w.fresh_image(a)}, None)),
    ("DELETE", "/v1/deals/{id}", "manager", 204, lambda w, a: ({"id": w.fresh_deal(a)}, None)),
    ("GET", "/v1/sensors/{sensor}/config", "viewer", 200,
     lambda w, a: ({"sensor": w.sensors[a]}, None)),
    ("PUT", "/v1/sensors/{sensor}/config", "manager", 201,
     lambda w, a: ({"sensor": w.sensors[a]}, SENSOR_CONFIG)),
]
SENSOR_CONFIG = {"threshold_cm": 150, "reporting_interval_min": 15, "status_interval_min": 60,
                 "event_threshold": 3}


def expected(actor: str, where: str, need: str | None, success: int) -> int:
    if actor == "anonymous":
        return 401
    if actor == "operator" or need is None:
        return success
    role = ROLES.get(actor, {}).get(where)
    if role is None:
        return 404
    return success if RANK[role] >= RANK[need] else 403


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, users_dsn: str) -> Iterator[World]:
    for client in start(tmp_path_factory, users_dsn, emulator_address(), PROJECT):
        headers = {actor: bearer(new_token(client.emulator)) for actor in ACTORS[1:]}
        headers["anonymous"] = {}
        ids = {actor: client.get("/v1/me", headers=h).json()["id"]
               for actor, h in headers.items() if h}
        sql(users_dsn, "UPDATE app_user SET user_role = 'operator' WHERE id = $1",
            ids["operator"])
        accounts = {where: expect(client.post("/v1/accounts", json={"name": where},
                                              headers=headers[admin]), 201)["id"]
                    for where, admin in (("own", "admin"), ("other", "other_admin"))}
        for actor in ("viewer", "manager"):
            r = client.put(f"/v1/accounts/{accounts['own']}/members/{ids[actor]}",
                           json={"role": actor}, headers=headers["admin"])
            expect(r, 200)
        w = World(client, headers, accounts, {}, {}, {})
        w.hives = {where: w.fresh_hive(where) for where in accounts}
        w.deals = {where: w.fresh_deal(where) for where in accounts}
        w.sensors = {where: f"matrix-{where}-{secrets.token_hex(4)}" for where in accounts}
        for where, sensor in w.sensors.items():
            sql(users_dsn, "INSERT INTO sensor (external_id, firmware, hive_id) "
                "VALUES ($1, 'v2', $2)", sensor, w.hives[where])
        yield w
        clear_pushed(client, w.sensors.values())


def clear_pushed(client: httpx.Client, sensors: Iterable[str]) -> None:
    """Remove the retained configuration messages the matrix left on the broker."""
    import paho.mqtt.publish as publish

    mqtt = yaml.safe_load(client.bizzyd.conf.read_text())["mqtt"]  # type: ignore[attr-defined]
    for sensor in sensors:
        publish.single(f"{mqtt['topic_prefix']}/commands/sensor/{sensor}", b"", qos=1,
                       retain=True, hostname="127.0.0.1", port=mqtt["port"])


CELLS = [pytest.param(e, actor, where, id=f"{e[0]} {e[1]}|{actor}|{where}")
         for e in ENDPOINTS for actor in ACTORS for where in ("own", "other")]


@pytest.mark.parametrize(("endpoint", "actor", "where"), CELLS)
def test_matrix(world: World, endpoint: tuple, actor: str, where: str) -> None:
    method, template, need, success, build = endpoint
    args, body = build(world, where)
    r = world.client.request(method, template.format(**args), json=body,
                             headers=world.headers[actor])
    want = expected(actor, where, need, success)
    expect(r, want)
    if want == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_matrix_covers_every_business_route() -> None:
    """A business route added without a row in ENDPOINTS fails here."""
    from modules.api.routes import routes_of
    from modules.business.api import HANDLERS
    from modules.hives.api import HANDLERS as PUBLIC

    public = {(r.method, r.path) for r in routes_of(list(PUBLIC.values()))}
    business = {(r.method, r.path) for r in routes_of(list(HANDLERS.values()))} - public
    assert business == {(m, p) for m, p, *_ in ENDPOINTS}


@pytest.mark.parametrize("path", ["/v1/accounts/999999999", "/v1/accounts/999999999/audit",
                                  "/v1/deals/999999999"])
def test_missing_resources_are_404_even_for_operators(world: World, path: str) -> None:
    method = "PATCH" if path.startswith("/v1/deals") else "GET"
    r = world.client.request(method, path, json={} if method == "PATCH" else None,
                             headers=world.headers["operator"])
    expect(r, 404)
