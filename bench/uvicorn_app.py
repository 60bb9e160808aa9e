"""The raw ASGI peer of bench/http_bench.py: one fixed JSON body, no framework.

Run by the benchmark as
`uvicorn --app-dir bench uvicorn_app:app --loop uvloop --http httptools --no-access-log`.
The body comes from $BENCH_BODY (the benchmark passes the exact bytes it checks);
the headers mirror bizzyd's `return` (content-type application/json, content-length),
uvicorn adding its own `server` and `date` as bizzyd and nginx do.
"""

from __future__ import annotations

import os

BODY = os.environ.get("BENCH_BODY", '{"ok":true,"test":"27byte"}').encode()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
BODY_MESSAGE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send(START)
        await send(BODY_MESSAGE)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
