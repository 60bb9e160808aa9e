"""The production path of token verification, offline: firebase-admin's verify_id_token
against a local certificate endpoint standing in for Google's keys."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from modules.auth.testing import KeyPair, certs_server
from modules.auth.verify import EMULATOR_ENV, InvalidToken, Verifier

PROJECT = "bizzy-test"


@pytest.fixture(scope="module")
def keys() -> tuple[KeyPair, KeyPair]:
    return KeyPair("kid-good"), KeyPair("kid-other")


@pytest.fixture
def verifier(keys, monkeypatch: pytest.MonkeyPatch) -> Iterator[Verifier]:
    monkeypatch.delenv(EMULATOR_ENV, raising=False)
    with certs_server(keys[0]) as url:
        settings = {"project_id": PROJECT, "verify_timeout": 5.0, "credentials": "",
                    "emulator": "", "check_revoked": False, "certs_url": url,
                    "cache_size": 10, "clock_skew": 0.0, "revocation_check_interval": 60.0}
        v = Verifier(settings, f"offline-{time.monotonic_ns()}")
        yield v
        v.close()


def test_a_good_token_is_accepted(verifier: Verifier, keys) -> None:
    claims = verifier._verify(keys[0].token(PROJECT, "user-1"))
    assert claims["uid"] == "user-1"
    assert verifier.valid_until(claims, time.time()) == claims["exp"]


@pytest.mark.parametrize("case, overrides, match", [
    ("wrong audience", {"aud": "someone-else"}, "audience"),
    ("wrong issuer", {"iss": "https://securetoken.google.com/someone-else"}, "issuer"),
    ("expired", {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "xpired"),
    ("not yet valid", {"iat": int(time.time()) + 600}, "early|before|future|iat"),
    ("no subject", {"sub": None}, "subject"),
])
def test_bad_claims_are_rejected(verifier: Verifier, keys, case, overrides, match) -> None:
    with pytest.raises(InvalidToken, match=match):
        verifier._verify(keys[0].token(PROJECT, "user-1", **overrides))


def test_a_bad_signature_is_rejected(verifier: Verifier, keys) -> None:
    forged = keys[1].token(PROJECT, "user-1", kid="kid-good")  # other key, good kid
    with pytest.raises(InvalidToken, match="ignature|verif"):
        verifier._verify(forged)
    good = keys[0].token(PROJECT, "user-1")
    head, body, _ = good.split(".")
    tampered = keys[0].token(PROJECT, "user-2").split(".")[1]
    with pytest.raises(InvalidToken):
        verifier._verify(f"{head}.{tampered}.{good.split('.')[2]}")
    assert body != tampered


def test_an_unknown_kid_is_rejected(verifier: Verifier, keys) -> None:
    with pytest.raises(InvalidToken, match="kid|[Cc]ertificate"):
        verifier._verify(keys[1].token(PROJECT, "user-1"))


def test_unsigned_and_malformed_tokens_are_rejected(verifier: Verifier, keys) -> None:
    import jwt
    unsigned = jwt.encode({"sub": "u", "aud": PROJECT, "iss": "x"}, None, algorithm="none")
    for token in (unsigned, "not-a-jwt", "a.b.c", ""):
        with pytest.raises(InvalidToken):
            verifier._verify(token)


def test_the_cache_is_bounded_and_expires(verifier: Verifier) -> None:
    from modules.auth.verify import Identity
    now = time.time()
    for i in range(15):
        verifier.remember(verifier.key(f"t{i}"), Identity(f"u{i}", i, now + 60))
    assert len(verifier.cache) == 10
    assert verifier.cached(verifier.key("t0"), now) is None
    assert verifier.cached(verifier.key("t14"), now).user_id == 14
    assert verifier.cached(verifier.key("t14"), now + 61) is None
