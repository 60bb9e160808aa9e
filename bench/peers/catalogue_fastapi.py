"""The FastAPI + uvicorn peer of bench/catalogue_bench.py: `GET /v1/hives/{id}` with the
same data (the same SQL, modules.hives.queries.DETAIL, on asyncpg), the same JSON
encoder (msgspec, the same Structs) and the same caching: a per-process table of
`cache_ttl` in front of memcached (emcache, batching concurrent gets, as bizzyd),
filled from Postgres on a miss.

It does less than bizzyd per hit: no live occupancy overlay (the occupancy is the one
Postgres had at the fill) and no ETag, so the comparison favours the peer.

    PEER_DSN=postgresql://... PEER_MEMCACHED=127.0.0.1:21211 \\
        uvicorn --app-dir bench/peers catalogue_fastapi:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path as FsPath

import asyncpg
import emcache
from fastapi import FastAPI, Path, Response
from fastapi.responses import JSONResponse

sys.path.insert(0, str(FsPath(__file__).resolve().parents[2]))

from modules.hives.queries import DETAIL  # noqa: E402
from modules.hives.render import Overlay, freeze  # noqa: E402

DSN = os.environ["PEER_DSN"]
HOST, _, PORT = os.environ.get("PEER_MEMCACHED", "127.0.0.1:21211").rpartition(":")
TTL = 120
PREFIX = f"peer{os.getpid()}:".encode()

app = FastAPI()
state: dict = {"local": {}}
_no_zone = Overlay(lambda hive_id: None)  # occupancy as Postgres had it


@app.on_event("startup")
async def startup() -> None:
    state["pool"] = await asyncpg.create_pool(DSN, min_size=1, max_size=4)
    state["mc"] = await emcache.create_client([emcache.MemcachedHostAddress(HOST, int(PORT))],
                                              max_connections=4, autobatching=True)


async def fill(hive_id: int) -> bytes:
    from modules.hives.api import _DEALS, _IMAGES, _item
    from modules.hives.schemas import HiveDetail

    async with state["pool"].acquire() as conn:
        rows = await conn.fetch(DETAIL, hive_id)
    if not rows:
        return b""
    r = rows[0]
    return _no_zone.thaw(freeze(_item(r, False, HiveDetail, description=r["description"],
                                      timezone=r["timezone"],
                                      images=_IMAGES.decode(r["images"]),
                                      deals=_DEALS.decode(r["deals"]))))


@app.get("/v1/hives/{hive_id}")
async def hive(hive_id: int = Path(ge=1, le=(1 << 63) - 1)) -> Response:
    key = PREFIX + b"hive:%d" % hive_id
    hit = state["local"].get(key)
    if hit is not None and hit[0] > time.monotonic():
        body = hit[1]
    else:
        item = await state["mc"].get(key)
        if item is not None:
            body = item.value
        else:
            body = await fill(hive_id)
            await state["mc"].set(key, body, exptime=TTL)
        state["local"][key] = (time.monotonic() + TTL, body)
    if not body:
        return JSONResponse({"detail": "no such hive"}, status_code=404)
    return Response(body, media_type="application/json",
                    headers={"Cache-Control": "public, max-age=60"})


@app.get("/ok")
async def ok() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")

