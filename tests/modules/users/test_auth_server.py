"""Sign-in through a running bizzyd: the production path (RS256 tokens against a local
stand-in for Google's certificate endpoint), revocation seen through the emulator, and
the refusal to run on the emulator's unsigned tokens unless the config asks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bizzyd_proc import free_port, running
from modules.auth.testing import KeyPair, certs_server, emulator_token
from modules.users.testing import users_config

from .conftest import emulator_address

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[3]  # the checkout
PROJECT = "bizzy-offline"


def memcached() -> str:
    return os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211")


def test_production_path_through_the_server(tmp_path, users_dsn: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    good, other = KeyPair("k1"), KeyPair("k2")
    port = free_port()
    with certs_server(good) as url:
        config = users_config(port, users_dsn, memcached(),
                              {"project_id": PROJECT, "certs_url": url}, workers=1)
        with running(tmp_path, config, port) as b, \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            def me(token: str) -> httpx.Response:
                return c.get("/v1/me", headers={"Authorization": f"Bearer {token}"})

            r = me(good.token(PROJECT, "offline-user"))
            assert r.status_code == 200, r.text
            assert r.json()["uid"] == "offline-user"
            bad = {
                "audience": good.token(PROJECT, "u", aud="other"),
                "issuer": good.token(PROJECT, "u", iss="https://evil.example/" + PROJECT),
                "expired": good.token(PROJECT, "u", iat=1_600_000_000, exp=1_600_003_600),
                "not yet valid": good.token(PROJECT, "u", iat=4_000_000_000,
                                            exp=4_000_003_600),
                "signature": other.token(PROJECT, "u", kid="k1"),
                "kid": other.token(PROJECT, "u"),
            }
            for case, token in bad.items():
                r = me(token)
                assert r.status_code == 401, (case, r.text)
                assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
                assert r.headers["content-type"] == "application/problem+json"
            assert "EMULATOR" not in b.log()


def test_revocation_is_seen_with_check_revoked(tmp_path, users_dsn: str) -> None:
    import firebase_admin
    from firebase_admin import auth

    emulator = emulator_address()
    port = free_port()
    config = users_config(port, users_dsn, memcached(),
                          {"project_id": "demo-bizzy", "emulator": emulator,
                           "check_revoked": True, "revocation_check_interval": "0s"},
                          workers=1)
    token = emulator_token(emulator, f"revoked{port}@example.com")
    with running(tmp_path, config, port) as b, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        h = {"Authorization": f"Bearer {token}"}
        me = c.get("/v1/me", headers=h)
        assert me.status_code == 200, me.text
        assert "SIGN-IN USES THE FIREBASE AUTH EMULATOR" in b.log()
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = emulator
        app = firebase_admin.initialize_app(options={"projectId": "demo-bizzy"},
                                            name=f"revoker{port}")
        try:
            import time
            time.sleep(1.1)  # revocation is recorded in whole seconds after the token
            auth.revoke_refresh_tokens(me.json()["uid"], app=app)
        finally:
            firebase_admin.delete_app(app)
            del os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
        r = c.get("/v1/me", headers=h)
        assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text


def test_the_emulator_variable_without_the_config_is_refused(tmp_path) -> None:
    config = tmp_path / "bizzyd.yaml"
    config.write_text("modules: [modules.database, modules.api, modules.auth]\n"
                      "http: {servers: [{listen: ['127.0.0.1:1'], locations: []}]}\n")
    env = {**os.environ, "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bizzyd", "-p", str(tmp_path), "-c",
                           str(config), "-t"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "FIREBASE_AUTH_EMULATOR_HOST" in done.stderr and "unsigned" in done.stderr
    env.pop("FIREBASE_AUTH_EMULATOR_HOST")
    done = subprocess.run([sys.executable, "-m", "bizzyd", "-p", str(tmp_path), "-c",
                           str(config), "-t"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_record_recent_without_sign_in_is_a_config_error(tmp_path) -> None:
    config = tmp_path / "bizzyd.yaml"
    config.write_text(
        "modules: [modules.database, modules.api, modules.auth, modules.users]\n"
        "http: {servers: [{listen: ['127.0.0.1:1'], locations: [\n"
        "  {location: '/h', return: 200, record_recent: on}]}]}\n")
    env = {k: v for k, v in os.environ.items() if k != "FIREBASE_AUTH_EMULATOR_HOST"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "bizzyd", "-p", str(tmp_path), "-c",
                           str(config), "-t"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "record_recent needs auth" in done.stderr, done.stderr


def test_sign_in_with_postgres_down_is_503_not_500(tmp_path, users_dsn: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    key = KeyPair("k1")
    port = free_port()
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with certs_server(key) as url:
        config = users_config(port, closed, memcached(),
                              {"project_id": PROJECT, "certs_url": url}, workers=1)
        config["database"]["connect_timeout"] = "300ms"
        with running(tmp_path, config, port), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            r = c.get("/v1/me", headers={"Authorization":
                                         f"Bearer {key.token(PROJECT, 'no-db-user')}"})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "retry-after" in r.headers
            bad = c.get("/v1/me", headers={"Authorization": "Bearer nonsense"})
            assert bad.status_code == 401  # a bad token needs no database
