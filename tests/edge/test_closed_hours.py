"""Opening hours on the real agent: a worker refused just before opening time is recorded when let in just after.

The policy takes every grant it makes as the worker's last recorded entry, for its cooldown (30 s). A grant the
door refused because the station was closed let nobody in, so it must not hide the entry that follows: a worker
who tries at 05:59:50 and again at 06:00:05 has two records, "closed" and "matched", and the relay clicks once.
Real photos, the real dlib models, gpiozero mock pins, the station config through the agent's own applier; the
station's wall clock is the one thing set by the test (it turns 06:00 between the two visits).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.agent import EdgeAgent
from edge.camera import Frame
from models.messages import Decision, EventKind, encode
from models.station_config import StationConfig
from server.credentials import Signer
from tests.edge.test_one_entry import BUZZER, RELAY, clicks, enrolled, frames_of, portraits  # noqa: F401 (fixtures)
from tests.edge.test_qr import agent_settings, outbox

pytestmark = [pytest.mark.faces, pytest.mark.models]

BEFORE = datetime(2026, 6, 1, 21, 59, 50, tzinfo=timezone.utc)  # 05:59:50 in Asia/Shanghai
AFTER = datetime(2026, 6, 1, 22, 0, 5, tzinfo=timezone.utc)  # 06:00:05
HOURS = "06:00-22:00"


def two_visits(portrait: np.ndarray, wall: list[datetime]) -> Iterator[Frame]:
    """Four frames at t 0-0.6 s (closed), then four at t 15-15.6 s, after the wall clock turned 06:00.

    15 s apart by the frames' own clock: two visits (visit_gap_s 1.5 s), well within the 30 s cooldown.
    """
    frames = frames_of(portrait, None, 4)
    for i, rgb in enumerate(frames):
        yield Frame(i, 0.2 * i, rgb)
    wall[0] = AFTER
    for i, rgb in enumerate(frames):
        yield Frame(4 + i, 15.0 + 0.2 * i, rgb)


def test_a_worker_refused_before_opening_time_is_recorded_when_let_in_just_after(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001, F811
) -> None:
    wall = [BEFORE]
    factory = MockFactory()
    settings = agent_settings(tmp_path, signer, "face")
    with EdgeAgent(settings, frames=two_visits(portraits["obama"], wall), pin_factory=factory,
                   engine=face_engine) as agent:
        assert agent.configs is not None
        agent.configs.wall_clock = lambda: wall[0]
        config = StationConfig(station_id=settings.station_id, version=3, mode="face", opening_hours=HOURS,
                               time_zone="Asia/Shanghai")
        ack = agent.configs.offer(encode(config))
        assert ack is not None and ack.applied, ack
        factory.pin(RELAY).clear_states()
        factory.pin(BUZZER).clear_states()
        agent.run()
        events = outbox(agent)

    seen = [(e.kind, e.decision, e.worker_id) for e in events]
    assert seen == [(EventKind.FACE, Decision.DENIED, "obama"), (EventKind.FACE, Decision.GRANTED, "obama")], seen
    assert events[0].reason.startswith(f"closed: opening hours {HOURS} (now 05:59"), events[0].reason
    assert events[1].reason == "matched", events[1].reason  # a new entry, not "within cooldown"
    assert clicks(factory) == 1  # the refusal did not open the door; the grant after opening time did
    assert agent.counts["granted"] == 1 and agent.counts["recorded"] == 2
