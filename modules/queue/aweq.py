"""AweQ's HTTP routes (seeds/004), verbatim, on the location's `aweq_queue`:

    POST   /send-message          {"message": "..."} -> {"status":"okay","key":"<uuid>"}
    GET    /receive-message?count=N   (N defaults to 1; `wait=S` long-polls up to S s)
    DELETE /delete-message/{key}  -> {"status":"okay"}
    GET    /get-stats             -> queue_length, checkouts_count, checkout_lifetime,
                                     rescue_interval

A message's `key` is its id; `retry_count` is how many times it was received before;
`checkout_lifetime` is the queue's visibility timeout. The queue is created on first
use with `queue.aweq_checkout_lifetime`. Example locations: docs/api.md.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from bizzyd.http.phases import Request
from bizzyd.http.response import Response

from .store import MAX_WAIT, Message, QueueDoesNotExist, QueueError, QueueInfo, Queues

JSON = "application/json; charset=utf-8"
AWEQ_MAX_COUNT = 100
TEXTS = ("No messages available in queue.", "Fewer messages available than requested.",
         "Requested batch-size available.")


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")), content_type=JSON)


def _error(status: int, message: str) -> Response:
    return _json(status, {"status": "error", "message": message})


async def _queue(request: Request) -> tuple[Queues, QueueInfo]:
    """The location's queue, created on first use."""
    state = request.process.state["queue"]
    queues: Queues = state.queues
    name = request.location.config["aweq_queue"]
    try:
        return queues, await queues.get(name)
    except QueueDoesNotExist:
        lifetime = int(request.process.config["queue"]["aweq_checkout_lifetime"])
        return queues, await queues.create(name, visibility_timeout=lifetime)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _item(m: Message) -> dict[str, Any]:
    return {"key": m.id, "timestamp": int(m.sent_at * 1000),
            "retry_count": m.receive_count - 1, "message": m.body}


async def send_message(request: Request) -> Response:
    if request.method != "POST":
        return _error(405, "Use POST.")
    try:
        doc = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "The body must be JSON: {\"message\": \"...\"}.")
    message = doc.get("message") if isinstance(doc, dict) else None
    if message is None or message == "":
        return Response(400, "Message content required.",
                        content_type="text/html; charset=utf-8")
    if not isinstance(message, str):
        return _error(400, "The message must be a string.")
    queues, info = await _queue(request)
    try:
        sent = await queues.send(info.name, message)
    except QueueError as exc:
        return _error(400, exc.message)
    return _json(200, {"status": "okay", "key": sent.id})


def _int_param(query: dict[str, list[str]], name: str, default: int, high: int) -> int | None:
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    if not text.isdigit() or not 0 <= int(text) <= high:
        return None
    return int(text)


async def receive_message(request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return _error(405, "Use GET.")
    query = parse_qs(request.query)
    count = _int_param(query, "count", 1, AWEQ_MAX_COUNT)
    if not count:
        return _error(400, f"count must be an integer from 1 to {AWEQ_MAX_COUNT}.")
    wait = _int_param(query, "wait", 0, MAX_WAIT)
    if wait is None:
        return _error(400, f"wait must be an integer from 0 to {MAX_WAIT} (seconds).")
    queues, info = await _queue(request)
    got = await queues.receive(info.name, count, wait_seconds=wait, limit=AWEQ_MAX_COUNT)
    text = TEXTS[2] if len(got) == count else TEXTS[1] if got else TEXTS[0]
    return _json(200, {"status": "okay", "message": text, "messages": [_item(m) for m in got]})


async def delete_message(request: Request) -> Response:
    if request.method != "DELETE":
        return _error(405, "Use DELETE.")
    key = request.captures.get("key", "")
    queues, info = await _queue(request)
    try:
        found = await queues.delete_id(info.name, key)
    except QueueError as exc:
        return _error(400, exc.message)
    if not found:
        return _error(404, f"No message with key {key}.")
    return _json(200, {"status": "okay"})


async def get_stats(request: Request) -> Response:
    queues, info = await _queue(request)
    stats = await queues.stats(info.name)
    rescue = request.process.config["queue"]["rescue_interval"]
    return _json(200, {"status": "okay", "stats": {
        "queue_length": stats.visible + stats.delayed,
        "checkouts_count": stats.in_flight,
        "checkout_lifetime": _seconds(info.visibility_timeout),
        "rescue_interval": _seconds(rescue)}})
