"""core.mqtt against a real mosquitto: acknowledged publishes, reconnects, refusals."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from core.mqtt import MqttLink, MqttSettings
from tests.support.services import Mosquitto

pytestmark = pytest.mark.broker


def _wait(cond, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_every_qos1_publish_is_acknowledged_exactly_once(mosquitto: Mosquitto) -> None:
    received: list[bytes] = []
    sub = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-sub"))
    sub.subscribe("t/#", lambda _t, p: received.append(p))
    pub = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-pub"))
    acks: Counter[int] = Counter()
    lock = threading.Lock()

    def acked(i: int) -> None:
        with lock:
            acks[i] += 1

    try:
        sub.start(), pub.start()
        assert sub.wait_connected(5) and pub.wait_connected(5)
        for i in range(2000):
            assert pub.publish("t/x", b"%d" % i, on_acked=lambda i=i: acked(i))
        assert _wait(lambda: len(acks) == 2000 and len(received) == 2000)
        assert set(acks.values()) == {1}
    finally:
        pub.stop(), sub.stop()


def test_a_message_queued_while_the_broker_is_down_is_acknowledged_after_it_returns(mosquitto: Mosquitto) -> None:
    link = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-queue", reconnect_min_s=0.1, reconnect_max_s=0.5))
    acked = threading.Event()
    try:
        link.start()
        assert link.wait_connected(5)
        mosquitto.stop()
        assert _wait(lambda: not link.connected)
        # Not sent now (False), but paho keeps it and the ack still arrives later.
        assert link.publish("t/late", b"x", on_acked=acked.set) is False
        assert not acked.is_set()
        mosquitto.start()
        assert link.wait_connected(10)
        assert acked.wait(10), "the queued message was never acknowledged after the reconnect"
    finally:
        link.stop()


def test_subscriptions_are_renewed_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    got = threading.Event()
    sub = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-resub", reconnect_min_s=0.1, reconnect_max_s=0.5))
    sub.subscribe("r/+", lambda _t, _p: got.set())
    pub = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-repub", reconnect_min_s=0.1, reconnect_max_s=0.5))
    try:
        sub.start(), pub.start()
        assert sub.wait_connected(5)
        mosquitto.restart()
        assert _wait(lambda: sub.connected and pub.connected, 10)
        assert _wait(lambda: pub.publish("r/1", b"hi") and got.wait(0.5), 10)
    finally:
        sub.stop(), pub.stop()


def test_a_handler_that_raises_is_counted_and_does_not_stop_the_loop(mosquitto: Mosquitto) -> None:
    seen: list[bytes] = []

    def handler(_t: str, payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("handler bug")
        seen.append(payload)

    sub = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-bug"))
    sub.subscribe("h/#", handler)
    pub = MqttLink(MqttSettings(port=mosquitto.port, client_id="t-bugpub"))
    try:
        sub.start(), pub.start()
        assert sub.wait_connected(5) and pub.wait_connected(5)
        for p in (b"bad", b"good"):
            pub.publish("h/1", p)
        assert _wait(lambda: seen == [b"good"])
        assert sub.handler_errors == 1
    finally:
        sub.stop(), pub.stop()


def test_refused_credentials_are_not_treated_as_connected(tmp_path) -> None:  # noqa: ANN001
    broker = Mosquitto(tmp_path / "m", extra_config="").start()
    # Reconfigure: no anonymous access, no users at all.
    broker.stop()
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    link = MqttLink(MqttSettings(port=broker.port, client_id="t-refused", username="nobody", password="wrong"))
    try:
        link.start()
        assert not link.wait_connected(2)
        assert _wait(lambda: link.refused_reason is not None, 5)
        assert "authori" in link.refused_reason.lower() or "bad user" in link.refused_reason.lower()
    finally:
        link.stop()
        broker.stop()


def test_an_unreachable_broker_is_logged_so_an_installer_sees_why(caplog: pytest.LogCaptureFixture) -> None:
    from core.broker import free_port

    port = free_port()  # nothing listens here
    link = MqttLink(MqttSettings(port=port, client_id="t-nobroker", reconnect_min_s=0.1, reconnect_max_s=0.2))
    with caplog.at_level("WARNING", logger="core.mqtt"):
        link.start()
        try:
            assert _wait(lambda: link.connect_failures >= 2, timeout=15)
        finally:
            link.stop()
    lines = [r.getMessage() for r in caplog.records if "cannot reach the MQTT broker" in r.getMessage()]
    assert lines and f"127.0.0.1:{port}" in lines[0]
    assert len(lines) < link.connect_failures or link.connect_failures == 1, "every retry logged: the journal would flood"
