"""MQTT connections: the only module that imports paho-mqtt.

:class:`MqttLink` wraps a paho 2.x client (callback API version 2) with what
both programs need and paho leaves to the caller:

- subscriptions are remembered and renewed on every (re)connect;
- a refused CONNACK (bad credentials, not authorised) is *not* treated as
  connected, and is reported once with the broker's reason;
- ``publish(..., on_acked=...)`` calls back when the broker has acknowledged a
  QoS 1 message (PUBACK), which is when a durable outbox may drop it;
- handlers run on paho's network thread and must only hand work off quickly;
  an exception in a handler is logged and counted, never kills the loop;
- with ``MqttSettings(manual_ack=True)`` a receiver acknowledges a QoS 1
  message only when *it* says so: a handler subscribed with ``deferred=True``
  gets a :class:`Delivery` and calls ``delivery.ack()`` once its work is
  durable (a database commit), from any thread. A message never acknowledged
  stays with the broker, which delivers it again after the next reconnect
  (persistent session), so a crash or a failing database loses nothing.
  Without the option paho acknowledges when the handler returns (the default).
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Delivery:
    """A received message whose acknowledgement the receiver owns (``deferred=True`` handlers).

    ``ack()`` sends the PUBACK; call it once the message's effect is durable.
    It is idempotent and thread-safe. An ack for a message received before the
    latest reconnect is not sent: the broker is delivering that message again
    (``redelivered`` marks such copies) and the new copy gets acknowledged.
    """

    topic: str
    payload: bytes
    qos: int
    redelivered: bool
    ack: Callable[[], None]


DeferredHandler = Callable[[Delivery], None]

# An acknowledgement that arrives before publish() has registered its waiter is
# consumed within microseconds; anything older belongs to no one.
_EARLY_ACK_TTL_S = 30.0
# stop() waits this long for the DISCONNECT (and everything queued before it) to be written.
_STOP_FLUSH_S = 2.0


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
    # True: QoS 1 messages are acknowledged only by Delivery.ack() (deferred
    # handlers) or when a plain handler returns; see the module docstring.
    manual_ack: bool = False
    # MQTT 5 only: how long the broker keeps a persistent session (clean_start
    # False) after a disconnect. MQTT 3.1.1 sessions have no expiry.
    session_expiry_s: int = 7 * 24 * 3600
    # MQTT 5 only: most unacknowledged QoS 1 messages the broker may send us at once (None: broker default).
    receive_maximum: int | None = None


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        *,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        self.settings = settings
        proto = MQTTProtocolVersion.MQTTv5 if settings.protocol == "5" else MQTTProtocolVersion.MQTTv311
        kwargs: dict = {"client_id": settings.client_id, "protocol": proto, "manual_ack": settings.manual_ack}
        if proto == MQTTProtocolVersion.MQTTv311:
            kwargs["clean_session"] = settings.clean_start
        self._v5 = proto == MQTTProtocolVersion.MQTTv5
        self._client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls_ca:
            context = ssl.create_default_context(cafile=settings.tls_ca)  # verifies the chain and the host name
            if settings.tls_cert:
                context.load_cert_chain(settings.tls_cert, settings.tls_key)
            context.sslsocket_class = _ClosingSSLSocket
            self._client.tls_set_context(context)
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
        self._client.on_connect_fail = self._on_connect_fail
        self.connect_failures = 0
        self._subs: dict[str, tuple[int, Handler | DeferredHandler, bool]] = {}
        # Bumped on every connect: acks of deliveries from an earlier connection are not sent.
        self._generation = 0
        self._connect_callbacks: list[Callable[[], None]] = []
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self._ack_lock = threading.Lock()
        self._ack_waiters: dict[int, Callable[[], None]] = {}
        self._early_acks: dict[int, float] = {}
        self._connected = threading.Event()
        self._gone = threading.Event()
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
        extra: dict = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            if not self.settings.clean_start:
                props.SessionExpiryInterval = self.settings.session_expiry_s
            if self.settings.receive_maximum is not None:
                props.ReceiveMaximum = self.settings.receive_maximum
            extra = {"clean_start": self.settings.clean_start, "properties": props}
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive, **extra)
        self._client.loop_start()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        was_connected = self._connected.is_set()
        self._gone.clear()
        try:
            self._client.disconnect()
            if was_connected:
                # Let the network thread write what is queued before the DISCONNECT
                # (acknowledgements above all) instead of cutting it off.
                self._gone.wait(_STOP_FLUSH_S)
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
    def subscribe(
        self, topic_filter: str, handler: Handler | DeferredHandler, qos: int = 1, *, deferred: bool = False
    ) -> None:
        """Call ``handler(topic, payload)`` for each message matching ``topic_filter``.

        ``deferred=True`` (needs ``manual_ack``): call ``handler(delivery)``
        instead; the message is acknowledged only by ``delivery.ack()``.
        """
        if deferred and not self.settings.manual_ack:
            raise ValueError("a deferred handler needs MqttSettings(manual_ack=True)")
        self._subs[topic_filter] = (qos, handler, deferred)
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
        with self._ack_lock:
            self._generation += 1
        self.connect_failures = 0
        log.info("MQTT connected to %s:%s as %s", self.settings.host, self.settings.port, self.settings.client_id)
        for topic_filter, (qos, _handler, _deferred) in list(self._subs.items()):
            client.subscribe(topic_filter, qos=qos)
        self._connected.set()
        for cb in list(self._connect_callbacks):
            self._safely(cb)

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        # The broker was never reached (network down, DNS, refused port, TLS handshake: wrong CA or
        # host name). Logged on the first failure and then every 20th, so a station offline for a
        # day does not fill its journal, yet an installer sees at once why it stays offline.
        self.connect_failures += 1
        if self.connect_failures == 1 or self.connect_failures % 20 == 0:
            tls = " over TLS (check the CA file and that the host name matches the certificate)" if self.settings.tls_ca else ""
            log.warning(
                "cannot reach the MQTT broker at %s:%s%s; retrying (%d failed attempts)",
                self.settings.host, self.settings.port, tls, self.connect_failures,
            )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        was = self._connected.is_set() and self._started
        self._connected.clear()
        self._gone.set()
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
        handler, deferred = None, False
        for topic_filter, (_qos, h, d) in list(self._subs.items()):
            if paho.topic_matches_sub(_strip_share(topic_filter), message.topic):
                handler, deferred = h, d
                break
        ack = self._acker(message.mid, message.qos) if self.settings.manual_ack else _noop
        if handler is None:
            log.debug("message on unexpected topic %s", message.topic)
            ack()  # nobody wants it: do not leave it in flight
            return
        if deferred:
            delivery = Delivery(message.topic, bytes(message.payload), message.qos, bool(message.dup), ack)
            if not self._safely(handler, delivery):
                ack()  # the handler failed before taking the message over
            return
        self._safely(handler, message.topic, bytes(message.payload))
        ack()

    def _acker(self, mid: int, qos: int) -> Callable[[], None]:
        if qos == 0:
            return _noop
        with self._ack_lock:
            generation = self._generation
        done = threading.Event()

        def ack() -> None:
            with self._ack_lock:
                if done.is_set():
                    return
                done.set()
                current = generation == self._generation
            # paho queues the PUBACK for its network thread; safe from any thread.
            if current:
                try:
                    self._client.ack(mid, qos)
                except OSError:  # the link is stopping: an ack that is not sent means a redelivery, not a loss
                    log.debug("acknowledgement of message %d not sent: the connection is closing", mid)

        return ack

    def _safely(self, fn: Callable, *args) -> bool:  # noqa: ANN001
        try:
            fn(*args)
        except Exception:  # a handler bug must not stop the network loop
            self.handler_errors += 1
            log.exception("MQTT handler %s failed", getattr(fn, "__qualname__", fn))
            return False
        return True


def _noop() -> None:
    pass


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails.

    paho drops the socket of a failed handshake (wrong CA, wrong host name)
    without closing it, one file descriptor per reconnect attempt; over days
    of retrying that would exhaust the process's descriptors.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _strip_share(topic_filter: str) -> str:
    """``$share/group/a/b`` -> ``a/b`` for matching incoming topics."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter
