"""The FastAPI + uvicorn peer of bench/users_bench.py: signed-in `GET /v1/me` with the
same work as bizzyd's: the same token verifier and cache (modules.auth.verify: firebase-
admin against the same certificate URL, a cache by token hash until expiry), the same
app_user enrolment, plan and profile SQL on asyncpg, cached per process for 30 s (no
shared change counter: that favours the peer), the same msgspec encoder and Struct.

    PEER_DSN=postgresql://... PEER_CERTS_URL=http://... PEER_PROJECT=bizzy-bench \\
        uvicorn --app-dir bench/peers users_fastapi:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path as FsPath

import asyncpg
import msgspec
from fastapi import FastAPI, Header, Response

sys.path.insert(0, str(FsPath(__file__).resolve().parents[2]))

from modules.auth.users import Features, UserCache, user_id_of  # noqa: E402
from modules.auth.verify import Identity, InvalidToken, Verifier  # noqa: E402
from modules.users.queries import ME  # noqa: E402
from modules.users.schemas import Me, Subscription  # noqa: E402

SETTINGS = {"project_id": os.environ["PEER_PROJECT"], "verify_timeout": 5.0,
            "credentials": "", "emulator": "", "check_revoked": False,
            "certs_url": os.environ["PEER_CERTS_URL"], "cache_size": 10000,
            "clock_skew": 0.0, "revocation_check_interval": 300.0}
TTL = 30.0

app = FastAPI()
state: dict = {}
_ENCODER = msgspec.json.Encoder()
UNAUTHORIZED = Response(b'{"status":401}', 401, media_type="application/problem+json",
                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class _Db:
    """The pool as modules.auth.users expects it (`connection()`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    def connection(self):  # noqa: ANN201
        return self.pool.acquire()


@app.on_event("startup")
async def startup() -> None:
    state["db"] = _Db(await asyncpg.create_pool(os.environ["PEER_DSN"], min_size=1,
                                                max_size=4))
    state["verifier"] = Verifier(SETTINGS, f"peer-{os.getpid()}")
    state["features"], state["profiles"] = Features(TTL), UserCache(TTL)


@app.get("/ok")
async def ok() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


async def identity(token: str) -> Identity:
    verifier: Verifier = state["verifier"]
    key, now = verifier.key(token), time.time()
    found = verifier.cached(key, now)
    if found is None:
        claims = await verifier.claims(token)
        user_id = await user_id_of(state["db"], claims["uid"])
        found = Identity(claims["uid"], user_id, verifier.valid_until(claims, now))
        verifier.remember(key, found)
    return found


@app.get("/v1/me")
async def me(authorization: str = Header("")) -> Response:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return UNAUTHORIZED
    try:
        user = await identity(token)
    except InvalidToken:
        return UNAUTHORIZED
    plan = await state["features"].get(state["db"], user.user_id, 0)
    row = state["profiles"].get(user.user_id, 0)
    if row is None:
        async with state["db"].connection() as conn:
            row = await conn.fetchrow(ME, user.user_id)
        state["profiles"].put(user.user_id, 0, row)
    body = Me(user.user_id, row["firebase_uid"], row["nickname"], row["created_at"],
              Subscription(plan.code, plan.status, plan.store, plan.started_at,
                           plan.expires_at), list(plan.features),
              str(row["store_account_token"]))
    return Response(_ENCODER.encode(body), media_type="application/json",
                    headers={"Cache-Control": "private, no-store"})
