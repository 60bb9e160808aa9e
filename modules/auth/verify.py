"""Firebase ID token verification with a bounded per-worker cache.

`firebase_admin.auth.verify_id_token` checks an RS256 token against Google's public
keys (fetched from `certs_url`, cached by the library per Cache-Control), its audience
(the project id), issuer, expiry and issue time, and with `check_revoked` asks Firebase
whether the user's tokens were revoked or the user disabled.  That costs a signature
check and possibly HTTP calls, so it runs in a thread and its result is cached, keyed
by a hash of the token, until the token expires (with `check_revoked`, at most
`revocation_check_interval`, so a revocation is seen within that).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import firebase_admin
from firebase_admin import auth as fb_auth

EMULATOR_ENV = "FIREBASE_AUTH_EMULATOR_HOST"


class InvalidToken(Exception):
    """The token is missing, malformed, expired, revoked or not ours (→ 401)."""


class VerifierUnavailable(Exception):
    """The keys or the revocation check could not be fetched (→ 503)."""


@dataclass(frozen=True)
class Identity:
    """A verified token: the Firebase uid, its app_user id, and until when it holds."""

    uid: str
    user_id: int
    expires: float  # wall clock (the token's exp, or the next revocation check)


class Verifier:
    """One worker's Firebase app and token cache."""

    def __init__(self, settings: Any, name: str) -> None:
        self.settings = settings
        options = {"projectId": settings["project_id"],
                   "httpTimeout": settings["verify_timeout"]}
        credential = None
        if settings["credentials"]:
            credential = firebase_admin.credentials.Certificate(settings["credentials"])
        elif settings["emulator"] or not settings["check_revoked"]:
            # token checks need no Google credentials; the emulator takes any
            from google.auth.credentials import AnonymousCredentials

            credential = _Anonymous(AnonymousCredentials())
        self.app = firebase_admin.initialize_app(credential, options, name=name)
        if settings["certs_url"]:
            # firebase-admin has no option for it (pinned in pyproject.toml): the same
            # verification code path, against other keys (tests, private mirrors)
            client = fb_auth._get_client(self.app)
            client._token_verifier.id_token_verifier.cert_url = settings["certs_url"]
        self.cache: OrderedDict[bytes, Identity] = OrderedDict()
        self.pending: dict[bytes, asyncio.Future[Identity]] = {}
        self.size = settings["cache_size"]
        self.hits = self.misses = 0

    def close(self) -> None:
        firebase_admin.delete_app(self.app)

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.blake2b(token.encode("utf-8", "surrogateescape"),
                               digest_size=16).digest()

    def cached(self, key: bytes, now: float) -> Identity | None:
        found = self.cache.get(key)
        if found is None:
            return None
        if found.expires <= now:
            del self.cache[key]
            return None
        self.hits += 1
        return found

    def remember(self, key: bytes, identity: Identity) -> None:
        if self.size <= 0:
            return
        self.cache[key] = identity
        self.cache.move_to_end(key)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)

    def forget_uid(self, uid: str) -> None:
        """Drop every cached token of `uid` (after its account was deleted)."""
        for key in [k for k, v in self.cache.items() if v.uid == uid]:
            del self.cache[key]

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of `token` (in a thread: signature checks, HTTP)."""
        self.misses += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._verify, token)

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            return fb_auth.verify_id_token(
                token, app=self.app, check_revoked=self.settings["check_revoked"],
                clock_skew_seconds=int(self.settings["clock_skew"]))
        except fb_auth.CertificateFetchError as exc:
            raise VerifierUnavailable(f"cannot fetch the token keys: {exc}") from None
        except (fb_auth.RevokedIdTokenError, fb_auth.UserDisabledError) as exc:
            raise InvalidToken(str(exc)) from None
        except fb_auth.UserNotFoundError:
            raise InvalidToken("the token's user does not exist") from None
        except (ValueError, fb_auth.InvalidIdTokenError) as exc:
            raise InvalidToken(_short(exc)) from None
        except firebase_admin.exceptions.FirebaseError as exc:
            raise VerifierUnavailable(f"the revocation check failed: {exc}") from None

    def valid_until(self, claims: dict[str, Any], now: float) -> float:
        until = float(claims.get("exp", now))
        if self.settings["check_revoked"]:
            until = min(until, now + self.settings["revocation_check_interval"])
        return until


def _short(exc: BaseException) -> str:
    """The first sentence of a firebase-admin message (the rest points to its docs)."""
    text = str(exc).split(". See ")[0].split(". Make sure")[0]
    return text[:300]


class _Anonymous(firebase_admin.credentials.Base):
    """A firebase-admin credential wrapping google-auth's anonymous one."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    def get_credential(self) -> Any:
        return self._credential


def emulator_in_environment() -> str | None:
    return os.environ.get(EMULATOR_ENV) or None


def use_emulator(address: str) -> None:
    """firebase-admin reads the emulator's address from the environment (its only
    switch); set only when the config asks for the emulator."""
    os.environ[EMULATOR_ENV] = address


def now() -> float:
    return time.time()
