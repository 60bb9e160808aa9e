"""AweQ's routes on a real bizzyd: the walkthrough of seeds/004, verbatim shapes and
messages, and the access rules of the location."""

from __future__ import annotations

import json
import uuid

import pytest

from bizzyd_proc import fetch_raw

pytestmark = pytest.mark.services


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, str, bytes]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, data, headers)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    finally:
        conn.close()


def send(port: int, message: str) -> str:
    status, ctype, body = call(port, "POST", "/send-message", {"message": message})
    assert status == 200 and ctype.startswith("application/json"), body
    doc = json.loads(body)
    assert doc["status"] == "okay" and list(doc) == ["status", "key"]
    uuid.UUID(doc["key"])
    return doc["key"]


def receive(port: int, query: str = "") -> dict:
    status, _, body = call(port, "GET", "/receive-message" + query)
    assert status == 200, body
    return json.loads(body)


def stats(port: int) -> dict:
    status, _, body = call(port, "GET", "/get-stats")
    assert status == 200
    doc = json.loads(body)
    assert doc["status"] == "okay"
    return doc["stats"]


def test_seed_walkthrough(queue_server):
    port = queue_server.port
    status, ctype, body = call(port, "POST", "/send-message", {"message": ""})
    assert (status, body) == (400, b"Message content required.")
    assert ctype.startswith("text/html")
    assert call(port, "POST", "/send-message", {})[0] == 400
    assert call(port, "POST", "/send-message", {"message": 5})[0] == 400
    assert stats(port) == {"queue_length": 0, "checkouts_count": 0,
                           "checkout_lifetime": "120s", "rescue_interval": "2s"}
    keys = [send(port, f"job-details-0{i}") for i in range(1, 8)]
    assert stats(port)["queue_length"] == 7
    batches = [receive(port, "?count=3") for _ in range(3)]
    assert [b["message"] for b in batches] == [
        "Requested batch-size available.", "Requested batch-size available.",
        "Fewer messages available than requested."]
    got = [m for b in batches for m in b["messages"]]
    assert [m["message"] for m in got] == [f"job-details-0{i}" for i in range(1, 8)]
    assert [m["key"] for m in got] == keys
    assert all(m["retry_count"] == 0 and isinstance(m["timestamp"], int) for m in got)
    assert list(got[0]) == ["key", "timestamp", "retry_count", "message"]
    assert receive(port, "?count=3") == {"status": "okay",
                                         "message": "No messages available in queue.",
                                         "messages": []}
    assert stats(port)["queue_length"] == 0 and stats(port)["checkouts_count"] == 7
    status, _, body = call(port, "DELETE", f"/delete-message/{keys[3]}")
    assert (status, json.loads(body)) == (200, {"status": "okay"})
    assert stats(port)["checkouts_count"] == 6
    assert call(port, "DELETE", f"/delete-message/{keys[3]}")[0] == 404
    assert call(port, "DELETE", "/delete-message/not-a-uuid")[0] == 400
    assert call(port, "GET", "/receive-message?count=0")[0] == 400
    assert call(port, "GET", "/receive-message?count=x")[0] == 400
    for key in keys[:3] + keys[4:]:
        assert call(port, "DELETE", f"/delete-message/{key}")[0] == 200
    assert stats(port) == {"queue_length": 0, "checkouts_count": 0,
                           "checkout_lifetime": "120s", "rescue_interval": "2s"}


def test_receive_defaults_to_one_and_long_polls(queue_server):
    port = queue_server.port
    send(port, "a")
    send(port, "b")
    first = receive(port)
    assert first["message"] == "Requested batch-size available."
    assert len(first["messages"]) == 1
    rest = receive(port, "?count=5")["messages"]
    assert len(rest) == 1
    empty = receive(port, "?count=1&wait=1")
    assert empty["messages"] == []
    for m in first["messages"] + rest:
        assert call(port, "DELETE", f"/delete-message/{m['key']}")[0] == 200


def test_access_rules_protect_the_routes(queue_server):
    denied = queue_server.denied_port
    for method, path in (("POST", "/send-message"), ("GET", "/receive-message"),
                         ("DELETE", f"/delete-message/{uuid.uuid4()}"), ("GET", "/get-stats"),
                         ("GET", "/queues/")):
        status, _, _ = fetch_raw(denied, path, method=method)
        assert status == 403, (method, path)
    assert fetch_raw(queue_server.port, "/get-stats")[0] == 200
