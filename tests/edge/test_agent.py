"""The whole agent on real photos, the real dlib models, gpiozero mock pins and a real mosquitto."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.agent import EdgeAgent
from edge.camera import IterableSource
from edge.config import EdgeSettings
from edge.policy import Verdict
from edge.store import EdgeStore
from models.messages import Decision
from tests.edge.server_side import ServerSide, upsert
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.faces, pytest.mark.models]


def scenario(photos: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Obama steps up for 5 frames, nobody for 2 s, then Biden (not enrolled) for 8 frames."""
    blank = np.full((480, 640, 3), 90, np.uint8)
    return [photos["obama2"]] * 5 + [blank] * 20 + [photos["biden"]] * 8


def settings_for(broker: Mosquitto, data_dir: Path, **over) -> EdgeSettings:  # noqa: ANN003
    # The visitors are still photos, which liveness rightly rejects as spoofs: off here (the
    # door with liveness is tests/edge/test_gate.py and test_replay.py).
    values = {"door": {"unlock_s": 1.0}, "liveness": {"mode": "off"}} | over
    return EdgeSettings.build(
        station_id="st-agent", data_dir=data_dir, mqtt={"host": broker.host, "port": broker.port}, **values
    )


class Recorder:
    def __init__(self) -> None:
        self.verdicts: list[tuple[Verdict, float | None]] = []

    def __call__(self, verdict: Verdict, latency_ms: float | None) -> None:
        self.verdicts.append((verdict, latency_ms))


@pytest.fixture
def server(mosquitto: Mosquitto) -> Iterator[ServerSide]:
    with ServerSide(mosquitto.host, mosquitto.port) as s:
        yield s


def test_enrolled_over_mqtt_then_granted_and_a_stranger_denied(
    mosquitto: Mosquitto, server: ServerSide, face_engine, photos, tmp_path: Path  # noqa: ANN001
) -> None:
    obama_vec, _ = face_engine.encode_single(photos["obama"])
    factory = MockFactory()
    record = Recorder()
    agent = EdgeAgent(
        settings_for(mosquitto, tmp_path / "edge"),
        frames=IterableSource(scenario(photos), fps=10), pin_factory=factory, engine=face_engine, on_verdict=record,
    )
    with agent:
        server.broadcast(upsert(1, "obama", obama_vec, name="Barack Obama"))
        assert agent.wait_for_gallery(1, timeout=15)
        relay = factory.pin(17)
        relay.clear_states()
        processed = agent.run()
        assert processed == 33
        ids = {v.decision: v for v, _ in record.verdicts}
        assert [v.decision for v, _ in record.verdicts] == [Decision.GRANTED, Decision.DENIED]
        granted, latency = record.verdicts[0]
        assert granted.identity == "obama" and granted.frames == 3 and granted.distance < 0.5
        assert latency is not None and 0 < latency < 10_000
        assert record.verdicts[1][1] is None and ids[Decision.DENIED].identity is None
        assert relay.states[1].state is True  # the lock released...
        assert server.wait(lambda: len(server.entries) >= 2)
        time.sleep(1.2)
    # ...and locked again, for good, once the agent stopped.
    assert relay.states[-1].state is False and relay.function == "input"
    by_decision = {e.decision: e for e in server.entries}
    assert len(server.entries) == 2
    entry = by_decision[Decision.GRANTED]
    assert entry.worker_id == "obama" and entry.station_id == "st-agent" and entry.gallery_version == 1
    assert entry.decision_ms == pytest.approx(latency)
    assert entry.scores.frames == 3 and entry.scores.distance == pytest.approx(granted.distance)
    denied = by_decision[Decision.DENIED]
    assert denied.worker_id is None and denied.reason == "unknown face" and denied.scores.distance > 0.5
    assert agent.counts["granted"] == 1 and agent.counts["denied"] == 1


def test_the_door_works_from_the_cache_while_the_broker_is_down(
    mosquitto: Mosquitto, server: ServerSide, face_engine, photos, tmp_path: Path  # noqa: ANN001
) -> None:
    data_dir = tmp_path / "edge"
    store = EdgeStore.open(data_dir)
    store.apply_changes([upsert(3, "obama", face_engine.encode_single(photos["obama"])[0])], snapshot=False, latest_version=3)
    store.close()
    mosquitto.stop()  # the server's persistent session survives in the broker's persistence file

    factory = MockFactory()
    record = Recorder()
    agent = EdgeAgent(
        settings_for(mosquitto, data_dir), frames=[photos["obama2"]] * 4, pin_factory=factory,
        engine=face_engine, on_verdict=record,
    )
    with agent:
        assert agent.holder.gallery.identities == ("obama",)
        agent.run()
        assert [v.identity for v, _ in record.verdicts] == ["obama"]
        assert factory.pin(17).states[-1].state is True  # relay on, no broker needed
        assert agent.outbox_depth == 1  # the entry waits in SQLite

        mosquitto.start()
        assert server.wait(lambda: any(e.worker_id == "obama" for e in server.entries), timeout=30)
        deadline = time.monotonic() + 10
        while agent.outbox_depth and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.outbox_depth == 0


def test_an_error_in_the_loop_locks_the_door(mosquitto: Mosquitto, face_engine, photos, tmp_path: Path) -> None:  # noqa: ANN001
    data_dir = tmp_path / "edge"
    store = EdgeStore.open(data_dir)
    store.apply_changes([upsert(1, "obama", face_engine.encode_single(photos["obama"])[0])], snapshot=False, latest_version=1)
    store.close()

    def frames() -> Iterator[np.ndarray]:
        yield from [photos["obama2"]] * 3
        raise RuntimeError("camera driver bug")

    factory = MockFactory()
    agent = EdgeAgent(settings_for(mosquitto, data_dir, door={"unlock_s": 5.0}), frames=frames(),
                      pin_factory=factory, engine=face_engine)
    agent.start()
    try:
        with pytest.raises(RuntimeError, match="camera driver bug"):
            agent.run()
        relay = factory.pin(17)
        assert [s.state for s in relay.states][-2:] == [True, False]  # unlocked by the grant, locked by the error
        assert agent.counts["granted"] == 1
    finally:
        agent.stop()
