"""core.mqtt's manual acknowledgement against a real mosquitto: an unacknowledged message comes back."""

from __future__ import annotations

import queue
import time

import pytest

from core.mqtt import Delivery, MqttLink, MqttSettings
from tests.support.services import Mosquitto

from .procs import wait_until

pytestmark = pytest.mark.broker


def _receiver(port: int, inbox: "queue.Queue[Delivery]", *, protocol: str = "3.1.1") -> MqttLink:
    link = MqttLink(MqttSettings(port=port, client_id=f"manual-{protocol}", manual_ack=True, protocol=protocol,
                                 reconnect_min_s=0.1, reconnect_max_s=0.5))
    link.subscribe("m/+", inbox.put, deferred=True)
    return link


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_message_not_acknowledged_is_delivered_again(mosquitto: Mosquitto, protocol: str) -> None:
    inbox: queue.Queue[Delivery] = queue.Queue()
    pub = MqttLink(MqttSettings(port=mosquitto.port, client_id="manual-pub", clean_start=True))
    receiver = _receiver(mosquitto.port, inbox, protocol=protocol)
    try:
        receiver.start(), pub.start()
        assert receiver.wait_connected(5) and pub.wait_connected(5)
        # Probes until the subscription is live, each acknowledged.
        wait_until(lambda: pub.publish("m/0", b"probe") and not inbox.empty(), 5, "the subscription")
        time.sleep(0.3)
        while not inbox.empty():
            inbox.get().ack()
        pub.publish("m/1", b"keep")
        first = inbox.get(timeout=5)
        assert first.payload == b"keep" and not first.redelivered
        pub.publish("m/2", b"done")
        done = inbox.get(timeout=5)
        assert done.payload == b"done"
        done.ack()
        # The receiver goes away without acknowledging "keep" (a crash, or a database that failed).
        receiver.stop()
        first.ack()  # too late, and for a connection that is gone: never sent
        receiver = _receiver(mosquitto.port, inbox, protocol=protocol)
        receiver.start()
        again = inbox.get(timeout=10)
        assert again.payload == b"keep" and again.redelivered
        again.ack()
        again.ack()  # idempotent
        # Acknowledged now: a further reconnect brings nothing back.
        receiver.stop()
        receiver = _receiver(mosquitto.port, inbox, protocol=protocol)
        receiver.start()
        assert receiver.wait_connected(5)
        with pytest.raises(queue.Empty):
            inbox.get(timeout=1.0)
    finally:
        receiver.stop(), pub.stop()


def test_deferred_handlers_need_manual_ack() -> None:
    link = MqttLink(MqttSettings(client_id="no-manual"))
    with pytest.raises(ValueError, match="manual_ack"):
        link.subscribe("x/#", lambda d: None, deferred=True)
