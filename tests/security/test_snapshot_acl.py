"""The deploy/ ACL and snapshots of refused faces: a station publishes only its own snapshot topic, only the
server reads snapshots, and no station can read another's pictures (Debian's mosquitto, TLS, provisioned
stations, as in test_broker_security.py)."""

from __future__ import annotations

import time
import uuid

import pytest

from models import topics
from models.snapshot import EntrySnapshot, encode_snapshot
from tests.security.test_broker_security import SERVER_USER, Broker, Listener, _connected
from tests.security.test_broker_security import broker  # noqa: F401  (the provisioned broker, a fixture)

pytestmark = pytest.mark.broker

JPEG = b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9"


def snapshot(station: str) -> bytes:
    return encode_snapshot(EntrySnapshot.of_jpeg(JPEG, event_id=uuid.uuid4(), station_id=station))


def test_a_station_sends_only_its_own_snapshots_and_reads_none(broker: Broker) -> None:  # noqa: F811
    server = _connected(broker.link(SERVER_USER, broker.server_password))
    forger = _connected(broker.link("st-a", broker.station_password("st-a")))
    victim = _connected(broker.link("st-b", broker.station_password("st-b")))
    try:
        at_server = Listener(server, topics.ALL_SNAPSHOTS)
        snooped = Listener(forger, "#", topics.ALL_SNAPSHOTS, topics.snapshot("st-b"))
        time.sleep(0.5)
        forged = snapshot("st-b")
        forger.publish(topics.snapshot("st-b"), forged)  # as another station: the broker drops it
        forger.publish(topics.snapshot("st-a") + "/extra", forged)
        own = snapshot("st-a")
        assert forger.publish(topics.snapshot("st-a"), own)
        victims = snapshot("st-b")
        assert victim.publish(topics.snapshot("st-b"), victims)
        deadline = time.monotonic() + 10
        got: list[tuple[str, bytes]] = []
        while len(got) < 2 and time.monotonic() < deadline:
            got += at_server.drain(0.05)
        # The server reads both stations' own snapshots, and nothing else came through.
        assert sorted(got) == sorted([(topics.snapshot("st-a"), own), (topics.snapshot("st-b"), victims)])
        assert at_server.drain(0.5) == []
        # st-a saw nothing: not st-b's picture, not even its own (a station never reads snapshots).
        assert snooped.drain(0.5) == []
    finally:
        for link in (server, forger, victim):
            link.stop()
