"""paho-mqtt 2.x driven by an asyncio event loop, and a one-shot publisher.

`AsyncMqtt` runs paho's network I/O on the process's own event loop (no
`loop_start()` thread), through paho's socket callbacks:

    on_socket_open            loop.add_reader(sock, read)      + a 1 s loop_misc timer
    on_socket_register_write  loop.add_writer(sock, loop_write)
    on_socket_unregister_write / on_socket_close   remove them

So every paho callback (`on_message`, `on_connect`, ...) runs on the loop thread and
may touch the process's state without locks.  The one blocking call is the TCP (and
TLS) connect inside `Client.connect`, bounded by `mqtt.connect_timeout`; the ingest
process does nothing else while it has no broker anyway.

Connections are numbered (`epoch`).  A message's packet id is only meaningful on the
connection it came on: `ack(mid, qos, epoch)` drops acks for an older connection
(the broker redelivers those messages on the new one, and ingest deduplicates).

Sessions are persistent: MQTT 5 connects with clean_start=False, a
SessionExpiryInterval and a ReceiveMaximum sized for batching; 3.1.1 with
clean_session=False.  Lost connections are retried with a doubling back-off.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .settings import V5

MIN_BACKOFF = 0.25
READS_PER_WAKEUP = 64  # paho reads one packet per loop_read(); drain a few per wakeup


def make_client(mqtt: dict[str, Any], client_id: str, persistent: bool,
                manual_ack: bool) -> paho.Client:
    """A paho client with the protocol, credentials and TLS of the `mqtt` block."""
    v5 = mqtt["protocol"] == V5
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not persistent, manual_ack=manual_ack)
    client.connect_timeout = mqtt["connect_timeout"]
    password = mqtt["password"]
    if mqtt["password_file"]:
        with open(mqtt["password_file"]) as f:
            password = f.readline().rstrip("\r\n")
    if mqtt["username"] is not None:
        client.username_pw_set(mqtt["username"], password)
    tls = mqtt["tls"]
    if tls["enabled"]:
        context = ssl.create_default_context(cafile=tls["ca_file"])
        if tls["cert_file"]:
            context.load_cert_chain(tls["cert_file"], tls["key_file"])
        if tls["insecure"]:
            context.check_hostname = False
        client.tls_set_context(context)
    return client


class AsyncMqtt:
    """A persistent-session subscriber (and publisher) on an asyncio loop."""

    def __init__(self, mqtt: dict[str, Any], client_id: str, loop: asyncio.AbstractEventLoop,
                 log: Any, subscriptions: list[str],
                 on_message: Callable[[paho.MQTTMessage, int], None],
                 on_state: Callable[[bool], None] | None = None) -> None:
        self.settings, self.loop, self.log = mqtt, loop, log
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.v5 = mqtt["protocol"] == V5
        self.client = make_client(mqtt, client_id, persistent=True, manual_ack=True)
        self.client.max_inflight_messages_set(1000)  # our own publishes (occupancy)
        self.client.max_queued_messages_set(10000)
        self._on_message, self._on_state = on_message, on_state
        self.epoch = 0
        self.connected = False
        self.stopping = False
        self.backoff = 0.0
        self.connects = 0
        self.disconnects = 0
        self.last_error = ""
        self._sock: Any = None
        self._misc: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._closed: asyncio.Future[None] | None = None
        self._received = 0
        c = self.client
        c.on_connect = self._connected
        c.on_disconnect = self._disconnected
        c.on_message = self._message
        c.on_socket_open = self._socket_open
        c.on_socket_close = self._socket_close
        c.on_socket_register_write = self._register_write
        c.on_socket_unregister_write = self._unregister_write

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.call_soon(self._connect)

    def _connect(self) -> None:
        self._retry = None
        if self.stopping:
            return
        s = self.settings
        try:
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = int(s["session_expiry"])
                props.ReceiveMaximum = s["receive_maximum"]
                self.client.connect(s["host"], s["port"], int(s["keepalive"]),
                                    clean_start=False, properties=props)
            else:
                self.client.connect(s["host"], s["port"], int(s["keepalive"]))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._schedule_reconnect(f"cannot connect to {s['host']}:{s['port']}: "
                                     f"{self.last_error}")

    def _schedule_reconnect(self, why: str) -> None:
        if self.stopping or self._retry is not None:
            return
        self.backoff = min(self.settings["reconnect_max_backoff"],
                           max(MIN_BACKOFF, self.backoff * 2))
        delay = self.backoff * random.uniform(0.8, 1.2)
        self.log.error("mqtt %s: %s; retrying in %.1fs", self.client_id, why, delay)
        self._retry = self.loop.call_later(delay, self._connect)

    async def stop(self, timeout: float = 3.0) -> None:
        """Disconnect cleanly (the broker keeps the session and unacked messages)."""
        self.stopping = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._sock is None:
            return
        self._closed = self.loop.create_future()
        self.client.disconnect()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        except TimeoutError:
            self._drop_socket()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._unwatch(self._sock)
            self._sock = None
            try:
                self.client._sock_close()  # noqa: SLF001 - last resort at exit
            except Exception:
                pass

    # -- paho callbacks (all on the loop thread) -------------------------------------------

    def _connected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if reason.is_failure:
            self.last_error = f"connection refused: {reason}"
            client.disconnect()
            self._schedule_reconnect(self.last_error)
            return
        self.epoch += 1
        self.connected = True
        self.connects += 1
        self.backoff = 0.0
        self.log.info("mqtt %s: connected to %s:%d (session present: %s)", self.client_id,
                      self.settings["host"], self.settings["port"], flags.session_present)
        if self.subscriptions:
            if self.v5:
                # retained messages only on a new subscription, not on every reconnect
                options = SubscribeOptions(
                    qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
                client.subscribe([(topic, options) for topic in self.subscriptions])
            else:
                client.subscribe([(topic, 1) for topic in self.subscriptions])
        if self._on_state is not None:
            self._on_state(True)

    def _disconnected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.disconnects += 1
            if self._on_state is not None:
                self._on_state(False)
        if not self.stopping:
            self._schedule_reconnect(f"disconnected ({reason})")

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._received += 1
        try:
            self._on_message(message, self.epoch)
        except Exception:
            self.log.exception("mqtt %s: message handler failed", self.client_id)

    def _socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self.loop.add_reader(sock, self._readable)
        if self._misc is None:
            self._misc = self.loop.call_later(1.0, self._tick)

    def _socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._unwatch(sock)
        if sock is self._sock:
            self._sock = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def _unwatch(self, sock: Any) -> None:
        try:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    def _register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, self._writable)

    def _unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        try:
            self.loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    # -- I/O -------------------------------------------------------------------------------

    def _readable(self) -> None:
        client = self.client
        for _ in range(READS_PER_WAKEUP):
            before = self._received
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._received == before:
                break

    def _writable(self) -> None:
        self.client.loop_write()

    def _tick(self) -> None:
        self._misc = None
        if self._sock is None:
            return
        self.client.loop_misc()
        if self._sock is not None:
            self._misc = self.loop.call_later(1.0, self._tick)

    # -- for the owner -----------------------------------------------------------------------

    def ack(self, mid: int, qos: int, epoch: int) -> bool:
        """Acknowledge a message of connection `epoch`; False if that connection is gone."""
        if qos == 0 or not self.connected or epoch != self.epoch:
            return False
        return self.client.ack(mid, qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if self.connected:
            self.client.publish(topic, payload, qos=qos, retain=retain)


def publish_once(mqtt: dict[str, Any], client_id: str, topic: str, payload: bytes,
                 qos: int = 1, retain: bool = True, timeout: float = 5.0) -> None:
    """Connect, publish one message, wait for the broker's PUBACK, disconnect.

    Blocking, bounded by `timeout`: call it from a thread (the HTTP workers use a
    small executor of their own).  Raises OSError / TimeoutError / RuntimeError.
    """
    client = make_client(mqtt, client_id, persistent=False, manual_ack=False)
    client.connect_timeout = min(timeout, mqtt["connect_timeout"])
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: paho.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout
    client.connect(mqtt["host"], mqtt["port"], keepalive=max(5, int(timeout) + 5))
    try:
        try:
            while not connected.is_set():
                _loop_until(client, deadline, "CONNACK")
        except OSError:
            if not refused:
                raise
        if refused:
            raise RuntimeError(f"broker refused the connection: {refused[0]}")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        while not info.is_published():
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")
            _loop_until(client, deadline, "PUBACK")
    finally:
        client.disconnect()
        try:
            client.loop(0.05)
        except Exception:
            pass


def _loop_until(client: paho.Client, deadline: float, what: str) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"no {what} from the broker in time")
    rc = client.loop(min(0.1, left))
    if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
        raise OSError(f"connection lost: {paho.error_string(rc)}")
