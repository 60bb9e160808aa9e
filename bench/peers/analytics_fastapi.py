"""The FastAPI + uvicorn peer of bench/analytics_bench.py: `GET
/v1/hives/{id}/occupancy/history` with the same work as bizzyd's modules.analytics: the
same SQL (modules.analytics.queries) on asyncpg, the same bucket code
(modules.analytics.series) and the same encoder (msgspec, the same Structs).  It checks
less (no feature gate, only from/to/bucket), which favours the peer.

    PEER_DSN=postgresql://... uvicorn --app-dir bench/peers analytics_fastapi:app \\
        --loop uvloop --http httptools
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path as FsPath

import asyncpg
import msgspec
from fastapi import FastAPI, Query, Response

sys.path.insert(0, str(FsPath(__file__).resolve().parents[2]))

from modules.analytics import queries, series  # noqa: E402
from modules.analytics.schemas import History  # noqa: E402
from modules.mqtt_ingest.day import zone  # noqa: E402

LEVELS = {"5m": queries.FIVE_MINUTES, "15m": queries.FIVE_MINUTES, "1d": queries.DAILY}
app = FastAPI()
encoder = msgspec.json.Encoder()
state: dict = {}


@app.on_event("startup")
async def startup() -> None:
    state["pool"] = await asyncpg.create_pool(os.environ["PEER_DSN"], min_size=1, max_size=4)


@app.get("/ok")
async def ok() -> dict:
    return {"ok": True}


@app.get("/v1/hives/{hive_id}/occupancy/history")
async def history(hive_id: int, bucket: str = "1h",
                  start: str | None = Query(None, alias="from"),
                  to: str | None = None) -> Response:
    now = datetime.now(UTC)
    lo_at = datetime.fromisoformat(start) if start else now
    hi_at = datetime.fromisoformat(to) if to else now
    async with state["pool"].acquire() as conn:
        hive = await conn.fetchrow(queries.HIVE, hive_id)
        tz = zone(hive["timezone"])
        bounds = series.edges(lo_at, hi_at, bucket, tz)
        lo, hi = (datetime.fromtimestamp(b, UTC) for b in (bounds[0], bounds[-1]))
        if bucket == "1h":
            rows = await conn.fetch(queries.HOURS, hive_id, lo, hi, now.timestamp())
        else:
            rows = await conn.fetch(LEVELS[bucket], hive_id, lo, hi)
        capacities = await conn.fetch(queries.SCHEDULE_IN, hive_id, lo, hi)
        corrections = await conn.fetch(queries.CORRECTIONS_IN, hive_id, lo, hi)
    spans = series.correction_spans([tuple(r) for r in corrections])
    ctx = series.Context(tz, now.timestamp(), hive["capacity"],
                         [series.Span(r["s"], r["e"], r["capacity"]) for r in capacities],
                         spans)
    body = History(hive_id, hive["timezone"], bucket, series.iso(bounds[0]) + "Z",
                   series.iso(bounds[-1]) + "Z", bool(spans),
                   (series.render_hours if bucket == "1h" else series.render)(bounds, rows, ctx))
    return Response(encoder.encode(body), media_type="application/json")
