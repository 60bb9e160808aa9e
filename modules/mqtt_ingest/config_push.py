"""`GET|PUT /v1/sensors/{id}/config`: a sensor's configuration, pending and applied.

    - location: ~ ^/v1/sensors/(?<sensor>[A-Za-z0-9_.-]{1,64})/config$
      content: sensor_config
      access: ["allow 127.0.0.1", "allow 10.0.0.0/8", "deny all"]

`{id}` is the sensor's external id (the one in its MQTT topics).  This handler is the
operators' tool: the location's `access` rules decide who may use it.  Businesses use
modules.business's `sensor_config_managed` on the same path (account membership,
audit, problem+json), which stores and publishes through `store_config` and
`publish_config` below.

PUT takes a JSON object with the four values of the configuration message
(`threshold_cm` 1..1000, `reporting_interval_min` 1..1440, `status_interval_min`
1..10080, `event_threshold` 1..1000; 400 lists every problem).  In one transaction it
supersedes the sensor's pending configuration, if any, and stores the new one as
pending; the row's id is the protocol's 32-bit configuration id.  After the commit the
12-byte message is published retained with QoS 1 on `commands/sensor/<id>`, so the
sensor gets it whenever it next connects.  201 when the broker acknowledged it; 503
(Retry-After) when the broker could not be reached in `mqtt.publish_timeout`: the
configuration stays pending (a retry supersedes it with a new id).

Publishing from a worker: a short-lived paho connection in a small thread pool of the
worker's own (2 threads), bounded by `mqtt.publish_timeout`.  Configuration changes
are rare operator actions, so a connection per change costs nothing that matters,
and it keeps workers free of a long-lived broker connection with its reconnect
logic; the thread keeps paho's blocking connect and wait-for-PUBACK off the event
loop, and the pool's size bounds what a hung broker can tie up.

The configuration becomes applied when the sensor's status message reports its id
(ingest does that in the status transaction).  GET shows both and the id the sensor
last reported.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bizzyd.http.response import HTTPError, Response
from bizzyd.module import ProcessContext

from .client import publish_once
from .codec import ConfigMessage, command_topic, encode_config

FIELDS = {  # name: (min, max), as the sensor_config CHECKs have them
    "threshold_cm": (1, 1000),
    "reporting_interval_min": (1, 1440),
    "status_interval_min": (1, 10080),
    "event_threshold": (1, 1000),
}
_PATH = re.compile(r"/sensors/([A-Za-z0-9_.-]{1,64})/config/?$")
_serial = itertools.count(1)

CONFIG_COLUMNS = ("id, threshold_cm, reporting_interval_min, status_interval_min, "
                  "event_threshold, state, created_at, applied_at")


def validate(body: bytes) -> tuple[dict[str, int], list[str]]:
    """The four values, or the reasons they are not acceptable."""
    try:
        data = json.loads(body or b"null")
    except ValueError as exc:
        return {}, [f"body is not JSON: {exc}"]
    if not isinstance(data, dict):
        return {}, ["body must be a JSON object with " + ", ".join(FIELDS)]
    reasons = [f"unknown field {k!r}" for k in data if k not in FIELDS]
    values = {}
    for name, (low, high) in FIELDS.items():
        value = data.get(name)
        if value is None:
            reasons.append(f"{name}: required")
        elif isinstance(value, bool) or not isinstance(value, int):
            reasons.append(f"{name}: must be an integer, got {value!r}")
        elif not low <= value <= high:
            reasons.append(f"{name}: must be {low}..{high}, got {value}")
        else:
            values[name] = value
    return values, reasons


def _json(status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None
          ) -> Response:
    return Response(status, json.dumps(body, default=str) + "\n", headers or [],
                    content_type="application/json")


def _config(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}


def _sensor_of(request: Any) -> str:
    sensor = request.captures.get("sensor")
    if sensor:
        return sensor
    match = _PATH.search(request.path)
    if not match:
        raise HTTPError(404, "no sensor id in the path")
    return match[1]


def _executor(ctx: ProcessContext) -> ThreadPoolExecutor:
    state = ctx.state.setdefault("mqtt_ingest", {})
    if "executor" not in state:
        state["executor"] = ThreadPoolExecutor(2, thread_name_prefix="mqtt-publish")
    return state["executor"]


def exit_worker(ctx: ProcessContext) -> None:
    state = ctx.state.get("mqtt_ingest", {})
    executor = state.pop("executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


async def sensor_config(request: Any) -> Response:
    if request.method in ("GET", "HEAD"):
        return await _get(request)
    if request.method == "PUT":
        return await _put(request)
    raise HTTPError(405, "use GET or PUT", [("Allow", "GET, HEAD, PUT")])


async def read_config(conn: Any, sensor: str) -> dict[str, Any] | None:
    """A sensor's pending and applied configuration (None: no such sensor)."""
    row = await conn.fetchrow(
        "SELECT s.id, st.configuration_id, st.received_at FROM sensor s "
        "LEFT JOIN sensor_status st ON st.sensor_id = s.id WHERE s.external_id = $1",
        sensor)
    if row is None:
        return None
    configs = await conn.fetch(
        f"SELECT {CONFIG_COLUMNS} FROM sensor_config "
        "WHERE sensor_id = $1 AND state IN ('pending', 'applied')", row["id"])
    by_state = {c["state"]: c for c in configs}
    return {
        "sensor": sensor,
        "pending": _config(by_state.get("pending")),
        "applied": _config(by_state.get("applied")),
        "reported_configuration_id": row["configuration_id"],
        "status_received_at": row["received_at"].isoformat() if row["received_at"] else None,
    }


async def store_config(conn: Any, sensor: str, values: dict[str, int]) -> Any:
    """In the caller's transaction: supersede the pending configuration and store
    `values` as the new pending one; its row (id = the protocol's configuration id), or
    None when there is no such sensor."""
    sensor_id = await conn.fetchval(
        "SELECT id FROM sensor WHERE external_id = $1 FOR UPDATE", sensor)
    if sensor_id is None:
        return None
    await conn.execute(
        "UPDATE sensor_config SET state = 'superseded', superseded_at = now() "
        "WHERE sensor_id = $1 AND state = 'pending'", sensor_id)
    return await conn.fetchrow(
        "INSERT INTO sensor_config (sensor_id, threshold_cm, reporting_interval_min, "
        "status_interval_min, event_threshold) VALUES ($1, $2, $3, $4, $5) "
        f"RETURNING {CONFIG_COLUMNS}", sensor_id, *(values[f] for f in FIELDS))


async def publish_config(ctx: ProcessContext, sensor: str, row: Any) -> tuple[str, str | None]:
    """Publish a stored configuration retained with QoS 1 on the sensor's command
    topic: (topic, None) once the broker acknowledged it, else (topic, why not)."""
    mqtt = ctx.config.get("mqtt")
    if mqtt is None:
        return "", "modules.mqtt_ingest is not loaded (no mqtt block)"
    message = encode_config(ConfigMessage(
        row["threshold_cm"], row["reporting_interval_min"], row["status_interval_min"],
        row["event_threshold"], row["id"]), mqtt["byte_order"])
    topic = command_topic(sensor, mqtt["topic_prefix"])
    client_id = f"{mqtt['client_id']}-push-{os.getpid()}-{next(_serial)}"
    timeout = mqtt["publish_timeout"]
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(
            _executor(ctx), publish_once, mqtt, client_id, topic, message, 1, True, timeout),
            timeout + 1)
    except Exception as exc:
        ctx.log.error("sensor %s: configuration %d stored but not published: %s",
                      sensor, row["id"], exc)
        return topic, f"broker: {type(exc).__name__}: {exc}"
    return topic, None


async def _get(request: Any) -> Response:
    sensor = _sensor_of(request)
    async with request.process.state["database"].connection() as conn:
        body = await read_config(conn, sensor)
    if body is None:
        raise HTTPError(404, f"no sensor {sensor!r}")
    return _json(200, body)


async def _put(request: Any) -> Response:
    sensor = _sensor_of(request)
    values, reasons = validate(request.body)
    if reasons:
        return _json(400, {"status": 400, "error": "Bad Request", "reasons": reasons})
    ctx = request.process
    async with ctx.state["database"].connection() as conn, conn.transaction():
        row = await store_config(conn, sensor, values)
    if row is None:
        raise HTTPError(404, f"no sensor {sensor!r}")
    topic, failure = await publish_config(ctx, sensor, row)
    body = {"sensor": sensor, "pending": _config(row), "topic": topic}
    if failure is not None:
        body.update(status=503, error="Service Unavailable", published=False, reason=failure)
        return _json(503, body, [("Retry-After", "5")])
    body["published"] = True
    return _json(201, body)
