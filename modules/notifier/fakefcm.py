"""A FAKE of the FCM HTTP v1 send endpoint, served by bizzyd itself, for the demo on a
machine without Google credentials: `POST .../messages:send` answers as FCM does and
logs the push (a token starting with `unregistered-` gets FCM's 404 UNREGISTERED, so
that the device removal can be watched). Nothing reaches a phone."""

from __future__ import annotations

import itertools
import json

from bizzyd.http.phases import Request
from bizzyd.http.response import Response

_UNREGISTERED = {"error": {
    "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
    "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                 "errorCode": "UNREGISTERED"}]}}


async def fcm_fake(request: Request) -> Response:
    """`POST /v1/projects/{project}/messages:send` of a FAKE FCM."""
    if request.method != "POST":
        return Response(405, b"", [("Allow", "POST")])
    try:
        message = json.loads(request.body)["message"]
        token = str(message["token"])
    except (ValueError, KeyError, TypeError):
        return Response(400, b'{"error":{"code":400,"status":"INVALID_ARGUMENT"}}',
                        content_type="application/json")
    log = request.process.log
    if token.startswith("unregistered-"):
        log.info("FAKE FCM: %s… unregistered", token[:16])
        return Response(404, json.dumps(_UNREGISTERED).encode(),
                        content_type="application/json")
    counter = request.process.state.setdefault("fcm_fake", itertools.count(1))
    n = next(counter)
    title = (message.get("notification") or {}).get("title", "")
    log.info("FAKE FCM: push %d to %s…: %s", n, token[:16], title[:80])
    return Response(200, json.dumps({"name": f"projects/fake/messages/{n}"}).encode(),
                    content_type="application/json")
