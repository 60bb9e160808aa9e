"""Sign-in for the API: Firebase ID tokens checked in the access phase.

    modules: [modules.database, modules.api, modules.auth, ...]
    firebase:
      project_id: bizzy-prod
      check_revoked: off
    http:
      servers:
        - locations:
            - location: /v1/me
              auth: required            # 401 without a valid token
              write_limit: {rate: 2r/s, burst: 20}
            - location: ~ ^/v1/hives/(?<id>[0-9]+)$
              auth: optional            # a token, if sent, must be valid
            - location: /v1/history
              require_feature: occupancy_history   # implies auth: required; else 403

A request with `Authorization: Bearer <ID token>` on such a location gets
`request.ctx["user"]`, an `Identity` (uid, app_user id); the first call of a new uid
creates its `app_user` row.  A missing, malformed, expired, revoked or foreign token
is a 401 with `WWW-Authenticate: Bearer error="invalid_token"` and problem+json.
Endpoint modules read the identity with `identity(request)`.  docs/modules.md
"Signed-in endpoints" shows how.

The Firebase Auth emulator (`firebase: {emulator: HOST:PORT}`) accepts unsigned tokens:
bizzyd logs a warning when it is configured, and refuses to start when
FIREBASE_AUTH_EMULATOR_HOST is set in its environment without the config asking.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping
from typing import Any

from bizzyd.config.schema import HTTP, LOCATION, SERVER, Block, ConfigError, Directive
from bizzyd.config.types import Bool, Custom, Duration, Enum, Int, Optional, Str
from bizzyd.http.builtin.limit_req import account, parse_rate
from bizzyd.http.phases import Request
from bizzyd.http.response import HTTPError, Response
from bizzyd.module import Module, PhaseHandler, ProcessContext
from bizzyd.shm import ZoneSpec
from modules.api import Problem
from modules.api.problem import from_http_error
from modules.database import database

from .users import Features, features_of, user_id_of
from .verify import (
    EMULATOR_ENV,
    Identity,
    InvalidToken,
    Verifier,
    VerifierUnavailable,
    emulator_in_environment,
    use_emulator,
)

NAME = "firebase"
GOOGLE_CERTS = ("https://www.googleapis.com/robot/v1/metadata/x509/"
                "securetoken@system.gserviceaccount.com")
CHALLENGE = 'Bearer error="invalid_token"'
LIMIT_ZONE = "auth.write_limit"
# a change counter per user (slot user_id % capacity) shared by all workers: caches of a
# user's profile or plan compare it, so that a change made through one worker (a
# nickname, a purchase) is seen by every worker at once
VERSIONS = ZoneSpec("auth.user_versions", (("version", "Q"),), 65536)
LIMIT_FIELDS = (("key", "Q"), ("excess", "d"), ("last", "d"))
WRITES = frozenset(("POST", "PUT", "PATCH", "DELETE"))


def _rate_text(rate: float) -> str:
    return f"{rate:g}r/s"


def _clock_skew(value: Any) -> float:
    seconds = Duration().convert(value)
    if not 0 <= seconds <= 60:
        raise ValueError("between 0s and 60s (firebase-admin's bounds)")
    return seconds


DIRECTIVES = (
    Directive(NAME, Block((
        Directive("project_id", Str(), "demo-bizzy",
                  doc="Firebase project id: the audience tokens must carry."),
        Directive("emulator", Str(allow_empty=True), "",
                  doc="HOST:PORT of the Firebase Auth emulator. Its tokens are NOT "
                      "signed: for development and tests only (a warning is logged)."),
        Directive("check_revoked", Bool(), False,
                  doc="Also ask Firebase whether the token was revoked or the user "
                      "disabled (an HTTP call per new token; needs credentials)."),
        Directive("revocation_check_interval", Duration(), "5m",
                  doc="With check_revoked: a cached token is checked again after this."),
        Directive("credentials", Str(allow_empty=True), "", path=True,
                  doc="Service account JSON file (for check_revoked); empty: "
                      "application default credentials."),
        Directive("certs_url", Str(allow_empty=True), "",
                  doc="Where the token signing certificates are fetched (empty: "
                      "Google's securetoken certificates)."),
        Directive("clock_skew", Custom("duration 0s-60s", _clock_skew), "0s",
                  doc="Tolerated clock difference for exp/iat."),
        Directive("verify_timeout", Duration(), "5s",
                  doc="Bound of the HTTP calls of a verification."),
        Directive("cache_size", Int(min=0, max=1 << 20), 10000,
                  doc="Verified tokens each worker keeps (until each one's expiry)."),
        Directive("features_ttl", Duration(), "30s",
                  doc="How long a worker reuses a user's profile and plan. A change made "
                      "through this host's bizzyd is seen by every worker at once (a "
                      "shared change counter); one made elsewhere (another host, SQL, a "
                      "plan's expiry) within this."),
    )), doc="Firebase sign-in (modules.auth)."),
    Directive("auth", Enum("off", "optional", "required"), "off", (HTTP, SERVER, LOCATION),
              doc="Bearer token sign-in: required (401 without), optional (checked "
                  "when sent), off."),
    Directive("require_feature", Optional(Str()), None, (HTTP, SERVER, LOCATION),
              doc="A feature code the user's plan must grant (403 otherwise); implies "
                  "auth: required."),
    Directive("write_limit", Block((
        Directive("rate", Custom("rate", parse_rate, _rate_text), None,
                  doc="Writes (POST, PUT, PATCH, DELETE) per second per signed-in user; "
                      "empty: no limit per user."),
        Directive("burst", Int(min=0), 20, doc="Writes a user may make above the rate."),
        Directive("address_rate", Custom("rate", parse_rate, _rate_text), None,
                  doc="Writes per second per client address (users behind one NAT share "
                      "it: set it higher than rate); empty: no limit per address."),
        Directive("address_burst", Int(min=0), 100,
                  doc="Writes a client address may make above address_rate."),
        Directive("size", Int(min=16, max=1 << 22), 65536,
                  doc="Keys (users and addresses) the shared zone tracks."),
    )), None, (HTTP, SERVER, LOCATION),
        doc="Rate limit of writes (token bucket in shared memory): 429 + Retry-After."),
)


def check(config: Any) -> None:
    if config.get("database") is None or config.get("api") is None:
        raise ConfigError("modules.auth needs modules.database and modules.api (list "
                          "them in `modules:` before modules.auth)", ("modules",),
                          config.mark(("modules",)))
    env = emulator_in_environment()
    if env and not config[NAME]["emulator"]:
        raise ConfigError(
            f"{EMULATOR_ENV}={env} is set in the environment, but the config does not ask "
            "for the Firebase Auth emulator: firebase-admin would accept unsigned tokens. "
            f"Unset it, or set {NAME}.emulator", (NAME, "emulator"),
            config.mark((NAME,)))


def _warn_emulator(ctx: ProcessContext) -> None:
    address = ctx.config[NAME]["emulator"]
    if address:
        ctx.log.warning(f"!!! SIGN-IN USES THE FIREBASE AUTH EMULATOR at {address}: tokens are "
                     "NOT signature-checked; never use this config in production !!!")


def init_master(ctx: ProcessContext) -> None:
    _warn_emulator(ctx)


def init_worker(ctx: ProcessContext) -> None:
    settings = ctx.config[NAME]
    if settings["emulator"]:
        use_emulator(settings["emulator"])
    verifier = Verifier(settings, f"bizzyd-{os.getpid()}-{ctx.generation}")
    ctx.state[NAME] = AuthState(verifier, Features(settings["features_ttl"]))


def exit_worker(ctx: ProcessContext) -> None:
    state = ctx.state.pop(NAME, None)
    if state is not None:
        state.verifier.close()


class AuthState:
    """A worker's verifier and features cache (in `ctx.state["firebase"]`)."""

    def __init__(self, verifier: Verifier, features: Features) -> None:
        self.verifier, self.features = verifier, features


def auth_state(ctx: ProcessContext) -> AuthState:
    return ctx.state[NAME]


def identity(request: Request) -> Identity:
    """The signed-in user of a request on an `auth: required` location."""
    found = request.ctx.get("user")
    if found is None:
        raise Problem(401, "sign-in required", headers=[("WWW-Authenticate", "Bearer")])
    return found


def unauthorized(request: Request, reason: str) -> Response:
    return Problem(401, reason, headers=[("WWW-Authenticate", CHALLENGE)]
                   ).response(request.path)


def _bearer(request: Request) -> str | None:
    header = request.header("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


async def _sign_in(request: Request, token: str) -> Identity:
    state = auth_state(request.process)
    verifier = state.verifier
    key = verifier.key(token)
    now = time.time()
    found = verifier.cached(key, now)
    if found is not None:
        return found
    # concurrent first requests with one token share one verification
    pending = verifier.pending.get(key)
    if pending is None:
        pending = verifier.pending[key] = asyncio.ensure_future(
            _verify_and_enrol(request, token, now))
        pending.add_done_callback(lambda _: verifier.pending.pop(key, None))
    found = await asyncio.shield(pending)
    verifier.remember(key, found)
    return found


async def _verify_and_enrol(request: Request, token: str, now: float) -> Identity:
    verifier = auth_state(request.process).verifier
    claims = await verifier.claims(token)
    uid = claims["uid"]
    user_id = await user_id_of(database(request.process), uid)
    return Identity(uid, user_id, verifier.valid_until(claims, now))


def _wants(config: Mapping[str, Any]) -> bool:
    return config["auth"] != "off" or config["require_feature"] is not None


async def authenticate(request: Request) -> Response | None:
    config = request.location.config
    token = _bearer(request)
    required = config["auth"] == "required" or config["require_feature"] is not None
    if token is None:
        if required:
            return Problem(401, "sign-in required: send Authorization: Bearer <Firebase "
                                "ID token>", headers=[("WWW-Authenticate", "Bearer")]
                           ).response(request.path)
        return None
    if not token:
        return unauthorized(request, "the Authorization header must be Bearer <token>")
    try:
        user = await _sign_in(request, token)
        request.ctx["user"] = user
        return await _check_feature(request, user, config["require_feature"])
    except InvalidToken as exc:
        return unauthorized(request, f"invalid token: {exc}")
    except VerifierUnavailable as exc:
        request.process.log.error(f"*{request.conn_id} sign-in: {exc}")
        return Problem(503, "sign-in is unavailable, try again shortly",
                       headers=[("Retry-After", "5")]).response(request.path)
    except HTTPError as exc:  # Postgres unavailable: its 503 + Retry-After, problem+json
        return from_http_error(exc).response(request.path)


async def _check_feature(request: Request, user: Identity, feature: str | None
                         ) -> Response | None:
    if feature is None:
        return None
    ctx = request.process
    plan = await auth_state(ctx).features.get(database(ctx), user.user_id,
                                              user_version(ctx, user.user_id))
    if feature not in plan.features:
        return Problem(403, f"your plan does not include the feature {feature!r}"
                       ).response(request.path)
    return None


def _limited(config: Mapping[str, Any]) -> bool:
    limit = config["write_limit"]
    return limit is not None and (limit["rate"] or limit["address_rate"]) is not None


def write_limit(request: Request) -> Response | None:
    """Token buckets per location and user, and per location and client address, for
    writes only (each location has its own budget, as its own settings)."""
    if request.method not in WRITES:
        return None
    settings = request.location.config["write_limit"]
    zone = request.process.zones.get(LIMIT_ZONE)
    if zone is None:
        return None
    now, where = time.monotonic(), request.location.match
    buckets = []
    if settings["address_rate"] is not None:
        buckets.append((_limit_key("a", request.client, where), settings["address_rate"],
                        settings["address_burst"]))
    user = request.ctx.get("user")
    if user is not None and settings["rate"] is not None:
        buckets.append((_limit_key("u", str(user.user_id), where), settings["rate"],
                        settings["burst"]))
    for key, rate, burst in buckets:
        if account(zone, key, rate, burst, now) is None:
            retry = max(1, round(1 / rate))
            return Problem(429, "too many writes, slow down",
                           headers=[("Retry-After", str(retry))]).response(request.path)
    return None


def _limit_key(kind: str, who: str, where: str) -> int:
    """A nonzero 63-bit key (0 marks a free slot)."""
    digest = hashlib.blake2b(f"{kind}\0{who}\0{where}".encode("utf-8", "surrogateescape"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1 | 1


def user_version(ctx: ProcessContext, user_id: int) -> int:
    """The user's change counter (0 before any change)."""
    zone = ctx.zones.get(VERSIONS.name)
    return 0 if zone is None else int(zone.get(user_id % VERSIONS.capacity, "version"))


def user_changed(ctx: ProcessContext, user_id: int) -> None:
    """Call after changing a user's profile, plan or account: every worker's cached
    copies of it are stale from now on."""
    zone = ctx.zones.get(VERSIONS.name)
    if zone is not None:
        index = user_id % VERSIONS.capacity
        with zone.locked():
            zone.set(index, "version", (int(zone.get(index, "version")) + 1) & (1 << 63) - 1)
    state = ctx.state.get(NAME)
    if state is not None:
        state.features.forget(user_id)


def _zones(config: Any) -> list[ZoneSpec]:
    sizes = [loc["write_limit"]["size"] for server in config.servers
             for loc in server["locations"] if _limited(loc)]
    limits = [ZoneSpec(LIMIT_ZONE, LIMIT_FIELDS, max(sizes))] if sizes else []
    return [VERSIONS, *limits]


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    check=check,
    init_master=init_master,
    init_worker=init_worker,
    exit_worker=exit_worker,
    zones=_zones,
    phase_handlers=(
        PhaseHandler("access", authenticate, order=200, applies=_wants),
        PhaseHandler("access", write_limit, order=210, applies=_limited),
    ),
    doc=__doc__ or "",
)

__all__ = ["CHALLENGE", "Identity", "auth_state", "features_of", "identity", "module",
           "user_changed", "user_version"]
