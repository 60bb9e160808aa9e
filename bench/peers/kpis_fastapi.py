"""The FastAPI + uvicorn peer of bench/kpis_bench.py: `GET /v1/accounts/{id}/kpis` with
the same work as bizzyd's: the same token verifier and cache (modules.auth.verify), the
same membership query (modules.business.queries.ACCESS), the same parameter parsing and
defaults, and the same report function (modules.kpis.api.report: the same SQL on
asyncpg, the same arithmetic) and msgspec encoder.

    PEER_DSN=postgresql://... PEER_CERTS_URL=http://... PEER_PROJECT=bizzy-bench \\
        uvicorn --app-dir bench/peers kpis_fastapi:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
import sys
from pathlib import Path as FsPath

import msgspec
from fastapi import FastAPI, Header, Request, Response

sys.path.insert(0, str(FsPath(__file__).resolve().parent))
sys.path.insert(0, str(FsPath(__file__).resolve().parents[2]))

# the same verifier, cache and enrolment as the /v1/me peer (its module state is ours)
from users_fastapi import SETTINGS, Verifier, _Db, identity, state  # noqa: E402

from modules.auth.verify import InvalidToken  # noqa: E402
from modules.business.queries import ACCESS  # noqa: E402
from modules.kpis.api import KPIS, kpi_bounds, report  # noqa: E402

KPI_SETTINGS = {"default_window": 7 * 86400.0, "max_window": 400 * 86400.0}

app = FastAPI()
_ENCODER = msgspec.json.Encoder()


def problem(status: int) -> Response:
    return Response(b'{"status":%d}' % status, status, media_type="application/problem+json")


@app.on_event("startup")
async def startup() -> None:
    import asyncpg

    state["db"] = _Db(await asyncpg.create_pool(os.environ["PEER_DSN"], min_size=1,
                                                max_size=4))
    state["verifier"] = Verifier(SETTINGS, f"peer-{os.getpid()}")


@app.get("/ok")
async def ok() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


@app.get("/v1/accounts/{account_id}/kpis")
async def kpis(account_id: int, request: Request, authorization: str = Header("")) -> Response:
    scheme, _, token = authorization.partition(" ")
    try:
        user = await identity(token) if scheme.lower() == "bearer" else None
    except InvalidToken:
        user = None
    if user is None:
        return problem(401)
    given = dict(request.query_params)
    params = {p.name: (KPIS.by_name[p.name].parse([given[p.name]]) if p.name in given
                       else p.default) for p in KPIS.params if p.where == "query"}
    bounds = kpi_bounds(params, KPI_SETTINGS)
    async with state["db"].connection() as conn, conn.transaction(readonly=True):
        row = await conn.fetchrow(ACCESS, user.user_id, account_id)
        if row is None or (row["member_role"] is None and row["user_role"] != "operator"):
            return problem(404)
    body = await report(state["db"], account_id, params["hives"], bounds)
    return Response(_ENCODER.encode(body), media_type="application/json",
                    headers={"Cache-Control": "private, no-store"})
