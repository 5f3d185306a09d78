"""MQTT connections: the only module that imports paho-mqtt.

:class:`MqttLink` wraps a paho 2.x client (callback API version 2) with what
both programs need and paho leaves to the caller:

- subscriptions are remembered and renewed on every (re)connect;
- a refused CONNACK (bad credentials, not authorised) is *not* treated as
  connected, and is reported once with the broker's reason;
- ``publish(..., on_acked=...)`` calls back when the broker has acknowledged a
  QoS 1 message (PUBACK), which is when a durable outbox may drop it;
- handlers run on paho's network thread and must only hand work off quickly;
  an exception in a handler is logged and counted, never kills the loop.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]

# An acknowledgement that arrives before publish() has registered its waiter is
# consumed within microseconds; anything older belongs to no one.
_EARLY_ACK_TTL_S = 30.0


class MqttError(RuntimeError):
    """The broker could not be reached or refused us."""


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = field(default_factory=lambda: f"waystation-{uuid.uuid4().hex[:12]}")
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = 30
    clean_start: bool = False
    protocol: str = "3.1.1"  # "5" for shared subscriptions
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        *,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        self.settings = settings
        proto = MQTTProtocolVersion.MQTTv5 if settings.protocol == "5" else MQTTProtocolVersion.MQTTv311
        kwargs: dict = {"client_id": settings.client_id, "protocol": proto}
        if proto == MQTTProtocolVersion.MQTTv311:
            kwargs["clean_session"] = settings.clean_start
        self._client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls_ca:
            self._client.tls_set(
                ca_certs=settings.tls_ca,
                certfile=settings.tls_cert,
                keyfile=settings.tls_key,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if will is not None:
            topic, payload, qos, retain = will
            self._client.will_set(topic, payload, qos=qos, retain=retain)
        self._client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._connect_callbacks: list[Callable[[], None]] = []
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self._ack_lock = threading.Lock()
        self._ack_waiters: dict[int, Callable[[], None]] = {}
        self._early_acks: dict[int, float] = {}
        self._connected = threading.Event()
        self._started = False
        self.refused_reason: str | None = None
        self.handler_errors = 0

    # -- life cycle -------------------------------------------------------------
    def on_connected(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (on the network thread) after every successful connect."""
        self._connect_callbacks.append(callback)

    def on_disconnected(self, callback: Callable[[], None]) -> None:
        self._disconnect_callbacks.append(callback)

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with back-off."""
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()
            # paho closes the socket pair of loop_start() only in __del__, which
            # a reference cycle can postpone past interpreter shutdown
            # (ResourceWarning). Close it now; private API, hence the guard.
            reset = getattr(self._client, "_reset_sockets", None)
            if callable(reset):
                reset(sockpair_only=True)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- subscribe / publish ------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        self._subs[topic_filter] = (qos, handler)
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        on_acked: Callable[[], None] | None = None,
    ) -> bool:
        """Send a message; False if it could not be handed to the connection.

        With QoS 1 and ``on_acked``, the callback runs once the broker has
        acknowledged the message, possibly after a reconnect (paho resends
        what it holds). A message that is never acknowledged never calls
        back: the caller keeps it and may resend it (receivers deduplicate).
        Returns False when the message could not be sent now.
        """
        # paho holds its own mutex while it calls on_publish, so no lock of
        # ours may be held across client.publish(). A waiter is registered for
        # every message paho keeps (sent, or queued while disconnected, which
        # paho sends after reconnecting). Waiters survive reconnects: a PUBACK
        # for a resent message does mean the broker has it. A PUBACK that wins
        # the race against its own registration below is parked briefly in
        # _early_acks; paho never reuses a mid while its message is outstanding.
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        kept = info.rc == paho.MQTT_ERR_SUCCESS or (info.rc == paho.MQTT_ERR_NO_CONN and qos > 0)
        if not kept:
            return False
        callback = on_acked or _noop
        with self._ack_lock:
            fire = self._early_acks.pop(info.mid, None) is not None
            if not fire:
                self._ack_waiters[info.mid] = callback
        if fire:
            self._safely(callback)
        return info.rc == paho.MQTT_ERR_SUCCESS

    # -- paho callbacks (network thread) ------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            self.refused_reason = str(reason_code)
            log.error("MQTT broker %s:%s refused the connection: %s", self.settings.host, self.settings.port, reason_code)
            return
        self.refused_reason = None
        log.info("MQTT connected to %s:%s as %s", self.settings.host, self.settings.port, self.settings.client_id)
        for topic_filter, (qos, _handler) in self._subs.items():
            client.subscribe(topic_filter, qos=qos)
        self._connected.set()
        for cb in list(self._connect_callbacks):
            self._safely(cb)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        was = self._connected.is_set() and self._started
        self._connected.clear()
        if was:
            log.warning("MQTT disconnected from %s:%s: %s", self.settings.host, self.settings.port, reason_code)
            for cb in list(self._disconnect_callbacks):
                self._safely(cb)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused publish %s: %s", mid, reason_code)
            return
        with self._ack_lock:
            cb = self._ack_waiters.pop(mid, None)
            if cb is None:
                now = time.monotonic()
                self._early_acks[mid] = now
                for stale in [m for m, t in self._early_acks.items() if now - t > _EARLY_ACK_TTL_S]:
                    del self._early_acks[stale]
        if cb is not None:
            self._safely(cb)

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        handler = None
        for topic_filter, (_qos, h) in self._subs.items():
            if paho.topic_matches_sub(_strip_share(topic_filter), message.topic):
                handler = h
                break
        if handler is None:
            log.debug("message on unexpected topic %s", message.topic)
            return
        self._safely(handler, message.topic, bytes(message.payload))

    def _safely(self, fn: Callable, *args) -> None:  # noqa: ANN001
        try:
            fn(*args)
        except Exception:  # a handler bug must not stop the network loop
            self.handler_errors += 1
            log.exception("MQTT handler %s failed", getattr(fn, "__qualname__", fn))


def _noop() -> None:
    pass


def _strip_share(topic_filter: str) -> str:
    """``$share/group/a/b`` -> ``a/b`` for matching incoming topics."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter
