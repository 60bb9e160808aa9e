"""The `mqtt` block of the config: directives, value types and cross-directive checks."""

from __future__ import annotations

import re
import socket
from datetime import time
from typing import Any

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Auto, Bool, Custom, Duration, Enum, Int, ListOf, Optional, Str

from .codec import ByteOrder
from .counting import CountingParams

V5, V311 = "5", "3.1.1"


def _protocol(value: Any) -> str:
    text = str(value).strip().lower().removeprefix("v").removeprefix("mqtt")
    if text in ("5", "5.0"):
        return V5
    if text in ("3.1.1", "311", "4"):
        return V311
    raise ValueError(f"expected 5 or 3.1.1, got {value!r}")


_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def parse_clock(value: Any) -> time:
    """`HH:MM` (hive-local). YAML 1.1 reads an unquoted 4:00 as 240 (base 60): minutes."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    match = _CLOCK.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"expected a time of day HH:MM, got {value!r}")
    return time(int(match[1]), int(match[2]))


def _dump_clock(value: time) -> str:
    return value.strftime("%H:%M")


def default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "node"
    return f"bizzyd-{host}"


TLS = Block((
    Directive("enabled", Bool(), False, doc="Connect with TLS."),
    Directive("ca_file", Optional(Str()), None, path=True,
              doc="CA bundle to verify the broker (null: the system's)."),
    Directive("cert_file", Optional(Str()), None, path=True,
              doc="Client certificate (mutual TLS)."),
    Directive("key_file", Optional(Str()), None, path=True, doc="Key of the client certificate."),
    Directive("insecure", Bool(), False,
              doc="Do not check the broker's host name (tests only)."),
))

AMQP = Block((
    Directive("urls", ListOf(Str(pattern=r"amqps?://.+"), min_len=1),
              ["amqp://guest:guest@127.0.0.1:5672/"],
              doc="AMQP URLs of the broker cluster's nodes; a process connects to one and "
                  "moves to the next when it fails (a heartbeat of 5 s is added unless the "
                  "URL sets one)."),
    Directive("shards", Int(min=1, max=256), 8,
              doc="Quorum queues the sensors are spread over (consistent hash of the "
                  "routing key). Fixed for the life of the cluster: changing it moves "
                  "sensors between queues."),
    Directive("exchange", Str(), "bizzyd.sensors",
              doc="The x-consistent-hash exchange bound to amq.topic."),
    Directive("queue_prefix", Str(), "bizzyd.sensors.",
              doc="Queue names: <queue_prefix>0 .. <shards-1>."),
    Directive("prefetch", Int(min=1, max=65535), 1000,
              doc="Unacknowledged messages per shard consumer (acks wait for the commit: "
                  "keep it at least batch_size)."),
    Directive("node", Int(min=0, max=255), 0,
              doc="This node's number (0-based) among amqp.nodes: it subscribes first to "
                  "the shards i with i % nodes == node, and to its first URL."),
    Directive("nodes", Int(min=1, max=256), 1, doc="How many nodes share the shards."),
    Directive("takeover_delay", Duration(), "10s",
              doc="Subscribe to the other nodes' shards this long after the preferred "
                  "ones (standing by: active only when their consumer goes away). The "
                  "first consumer of a queue is its active one, so nodes started within "
                  "this delay of each other split the shards; a shard whose preferred "
                  "node is down waits this long at start."),
    Directive("occupancy_exchange", Str(), "bizzyd.occupancy",
              doc="Fanout exchange that every commit's changed hives are published to "
                  "(OCCUPANCY_UPDATE frames) for the other nodes' cache managers."),
))

DIRECTIVES = (
    Directive("mqtt", Block((
        Directive("ingest", Enum("mqtt", "amqp"), "mqtt",
                  doc="Where ingest consumes: mqtt = subscribe to the MQTT broker; amqp = "
                      "consume RabbitMQ's quorum queues (the `amqp` block; several nodes "
                      "on a RabbitMQ cluster, docs/cluster.md)."),
        Directive("host", Str(), "127.0.0.1", doc="The MQTT broker."),
        Directive("port", Int(min=1, max=65535), 1883, doc="Its port (8883 for TLS)."),
        Directive("protocol", Custom("5 or 3.1.1", _protocol), V5,
                  doc="MQTT version: 5 (shared subscriptions, receive maximum, session "
                      "expiry) or 3.1.1 (RabbitMQ 3.10 speaks only 3.1.1)."),
        Directive("client_id", Auto(Str(pattern=r"[A-Za-z0-9_.-]{1,60}"), default_client_id),
                  "auto",
                  doc="Client id prefix; each ingest process connects as "
                      "<client_id>-ingest-<slot> with a persistent session. Must be unique "
                      "per node; auto = bizzyd-<host name>."),
        Directive("username", Optional(Str()), None, doc="Broker user name."),
        Directive("password", Optional(Str(allow_empty=True)), None, doc="Broker password."),
        Directive("password_file", Optional(Str()), None, path=True,
                  doc="Read the password from this file instead (first line)."),
        Directive("tls", TLS, doc="TLS to the broker."),
        Directive("keepalive", Duration(), "30s", doc="MQTT keep-alive interval."),
        Directive("session_expiry", Duration(), "1d",
                  doc="v5 SessionExpiryInterval: how long the broker keeps the session "
                      "(subscriptions and unacknowledged messages) of a stopped process."),
        Directive("connect_timeout", Duration(), "3s",
                  doc="TCP/TLS connect timeout (the connect blocks the ingest loop this "
                      "long at most)."),
        Directive("reconnect_max_backoff", Duration(), "10s",
                  doc="Reconnect attempts back off from 0.25s, doubling up to this."),
        Directive("topic_prefix", Str(allow_empty=True), "",
                  doc="Prefix of every sensor and command topic ('site1' gives "
                      "site1/sensors/<id>/counters)."),
        Directive("processes", Int(min=0, max=64), 1,
                  doc="Ingest processes on this node; more than one needs MQTT 5 shared "
                      "subscriptions. 0: no ingest here (the HTTP config push still works)."),
        Directive("shared", Enum("auto", "on", "off"), "auto",
                  doc="Subscribe through $share/<share_group>/...: auto = when processes > 1. "
                      "Turn on when several nodes ingest from one broker (MQTT 5)."),
        Directive("share_group", Str(pattern=r"[A-Za-z0-9_.-]{1,60}"), "bizzyd",
                  doc="Shared subscription group name."),
        Directive("batch_size", Int(min=1, max=10000), 500,
                  doc="Most messages stored in one transaction."),
        Directive("batch_linger", Duration(), "0ms",
                  doc="How long a batch smaller than batch_size may wait for more messages "
                      "(0: commit at once whatever is queued; nothing waits when idle)."),
        Directive("receive_maximum", Int(min=1, max=65535), 1000,
                  doc="v5 ReceiveMaximum: unacknowledged messages the broker may send. "
                      "Acks come after the commit, so this must exceed batch_size "
                      "(mosquitto also caps it with max_inflight_messages)."),
        Directive("byte_order", Enum("big", "little"), "big",
                  doc="Byte order of the fleet's multi-byte integers."),
        Directive("counter_wrap", Int(min=2, max=65536), 65536,
                  doc="Where v1 totals wrap (some firmware wraps at 65523)."),
        Directive("max_delta", Int(min=0), 1000,
                  doc="A v1 delta above this is an anomaly, not applied."),
        Directive("reset_at", Custom("time of day HH:MM", parse_clock, _dump_clock), "04:00",
                  doc="Daily occupancy reset, hive-local time: the occupancy counts the "
                      "reports since the last such boundary (occupancy.reset_at wins if "
                      "a module declares it)."),
        Directive("default_timezone", Str(), "UTC",
                  doc="Zone for v1 sensor times of sensors not installed in a hive."),
        Directive("publish_timeout", Duration(), "5s",
                  doc="Bound of a configuration publish from an HTTP worker."),
        Directive("publish_occupancy", Bool(), False,
                  doc="After each commit also publish each changed hive's occupancy, "
                      "retained, on <prefix>occupancy/<hive_id> (for other nodes, displays)."),
        Directive("partition_upkeep", Bool(), True,
                  doc="Ingest slot 0 calls create_sensor_report_partitions(now, 3) at start "
                      "and daily."),
    )), doc="MQTT ingest of sensor reports (modules.mqtt_ingest)."),
    Directive("amqp", AMQP, doc="RabbitMQ AMQP side of ingest (mqtt.ingest: amqp)."),
)


def counting_params(mqtt: dict[str, Any]) -> CountingParams:
    return CountingParams(counter_wrap=mqtt["counter_wrap"], max_delta=mqtt["max_delta"])


def byte_order(mqtt: dict[str, Any]) -> ByteOrder:
    return ByteOrder(mqtt["byte_order"])


def reset_clock(config: Any) -> time:
    """`occupancy.reset_at` when an occupancy module declares it, else `mqtt.reset_at`."""
    occupancy = config.get("occupancy")
    if isinstance(occupancy, dict) and occupancy.get("reset_at") is not None:
        return parse_clock(occupancy["reset_at"])
    return config["mqtt"]["reset_at"]


def uses_shared(mqtt: dict[str, Any]) -> bool:
    return mqtt["shared"] == "on" or (mqtt["shared"] == "auto" and mqtt["processes"] > 1)


def check(config: Any) -> None:
    mqtt = config["mqtt"]
    if "database" not in config.tree:
        raise ConfigError("modules.mqtt_ingest needs modules.database (list it first)",
                          ("modules",), config.mark(("modules",)))
    if mqtt["protocol"] == V311 and mqtt["processes"] > 1 and mqtt["ingest"] == "mqtt":
        key = ("mqtt", "processes")
        raise ConfigError(
            f"{mqtt['processes']} ingest processes need MQTT 5 shared subscriptions, but "
            "mqtt.protocol is 3.1.1 (RabbitMQ accepts $share/... subscriptions and delivers "
            "nothing to them): use protocol 5, or processes: 1", key, config.mark(key))
    if mqtt["protocol"] == V311 and mqtt["shared"] == "on":
        key = ("mqtt", "shared")
        raise ConfigError("shared subscriptions need mqtt.protocol 5", key, config.mark(key))
    if mqtt["protocol"] == V5 and mqtt["receive_maximum"] < mqtt["batch_size"]:
        key = ("mqtt", "receive_maximum")
        raise ConfigError(
            f"receive_maximum ({mqtt['receive_maximum']}) is below batch_size "
            f"({mqtt['batch_size']}): acks wait for the commit, so a batch could never fill",
            key, config.mark(key))
    if mqtt["password"] is not None and mqtt["password_file"] is not None:
        key = ("mqtt", "password_file")
        raise ConfigError("set password or password_file, not both", key, config.mark(key))
    tls = mqtt["tls"]
    if (tls["cert_file"] is None) != (tls["key_file"] is None):
        key = ("mqtt", "tls")
        raise ConfigError("cert_file and key_file go together", key, config.mark(key))
    try:
        from zoneinfo import ZoneInfo
        ZoneInfo(mqtt["default_timezone"])
    except Exception:
        key = ("mqtt", "default_timezone")
        raise ConfigError(f"unknown time zone {mqtt['default_timezone']!r}", key,
                          config.mark(key)) from None
