"""One visit, one entry: station mode ``face_or_qr`` on the real agent (real photos with generated QR codes pasted
in, the real dlib models, gpiozero mock pins); and the liveness evidence in the entries a station sends.

Frames carry their own timestamps, 0.2 s apart, so the policy sees one continuous visit; between the first grant
and the frames that could cause a second one the test waits until the relay has locked again, so that a second
grant would be a second click of the relay, not a silent extension of the first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from core.imaging import Capture, load_image
from core.templates import enroll_photo
from edge.agent import EdgeAgent
from edge.camera import Frame
from edge.config import EdgeSettings
from edge.store import EdgeStore
from models.messages import Decision, EventKind
from server.credentials import Signer
from tests.edge.server_side import upsert
from tests.edge.test_qr import EX, agent_settings, in_frame, outbox, real_token

pytestmark = [pytest.mark.faces, pytest.mark.models]

STEP_S = 0.2
UNLOCK_S = 1.0  # agent_settings' door; the relay is locked again this long after a grant
RELAY, BUZZER = 17, 27


@pytest.fixture(scope="module")
def portraits(faces: Path, face_engine) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Head and shoulders around each face, as a door camera sees a person up close."""
    out = {}
    for name, path in (("obama", "obama/obama2.jpg"), ("biden", "biden/biden.jpg")):
        photo = load_image(faces / EX / path)
        box = max(face_engine.detect(photo, upsample=1), key=lambda b: b.size)
        side = box.size * 3
        cx, cy = (box.left + box.right) // 2, (box.top + box.bottom) // 2
        top, left = max(0, cy - side // 2), max(0, cx - side // 2)
        out[name] = photo[top : top + side, left : left + side]
    return out


@pytest.fixture
def enrolled(tmp_path: Path, faces: Path, face_engine) -> None:  # noqa: ANN001
    """obama and biden enrolled from photos other than the probes'."""
    store = EdgeStore.open(tmp_path / "edge")
    store.apply_changes(
        [upsert(1, "obama", face_engine.encode_single(load_image(faces / EX / "obama/obama.jpg"))[0]),
         upsert(2, "biden", face_engine.encode_single(load_image(faces / EX / "biden/biden2.jpg"))[0])],
        snapshot=False, latest_version=2,
    )
    store.close()


def timeline(*parts: list[np.ndarray] | float) -> Iterator[Frame]:
    """Frames STEP_S apart by their own clock; a float in ``parts`` waits that long (real time) before going on."""
    base, i = time.monotonic(), 0
    for part in parts:
        if isinstance(part, float):
            time.sleep(part)
            continue
        for rgb in part:
            yield Frame(i, base + i * STEP_S, rgb)
            i += 1


def run(settings: EdgeSettings, frames: Iterator[Frame], face_engine) -> tuple[list, MockFactory, EdgeAgent]:  # noqa: ANN001
    factory = MockFactory()
    with EdgeAgent(settings, frames=frames, pin_factory=factory, engine=face_engine) as agent:
        factory.pin(RELAY).clear_states()
        factory.pin(BUZZER).clear_states()
        agent.run()
        events = outbox(agent)
    return events, factory, agent


def clicks(factory: MockFactory, pin: int = RELAY) -> int:
    return [s.state for s in factory.pin(pin).states].count(True)


def frames_of(portrait: np.ndarray, code: str | None, n: int) -> list[np.ndarray]:
    return [in_frame(portrait, code, size=(480, 640), qr_px=200)] * n


def test_a_code_then_the_same_workers_face_is_one_entry_and_one_click(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    code = real_token(signer, "obama", 1)
    frames = timeline(
        frames_of(portraits["obama"], code, 1),  # the code is read: the door opens
        UNLOCK_S + 0.4,
        frames_of(portraits["obama"], code, 4)  # still held up (the same presentation): the face path runs...
        + frames_of(portraits["obama"], None, 4),  # ...and goes on with the phone put away
    )
    events, factory, agent = run(agent_settings(tmp_path, signer, "face_or_qr"), frames, face_engine)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.QR, Decision.GRANTED, "obama")]
    assert clicks(factory) == 1 and clicks(factory, BUZZER) == 1  # one release, one beep
    assert agent.pipeline is not None and agent.pipeline.counts["encodings"] >= 3  # his face was seen and matched...
    assert agent.gate.merged == 1 and agent.counts["granted"] == 0  # ...and the face path's grant was not given


def test_the_face_then_the_same_workers_code_is_one_entry_and_one_click(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    code = real_token(signer, "obama", 1)
    frames = timeline(
        frames_of(portraits["obama"], None, 4),  # his face opens the door
        UNLOCK_S + 0.4,
        frames_of(portraits["obama"], code, 3),  # then he holds up his code as well, still at the door
    )
    events, factory, agent = run(agent_settings(tmp_path, signer, "face_or_qr"), frames, face_engine)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.FACE, Decision.GRANTED, "obama")]
    assert clicks(factory) == 1 and clicks(factory, BUZZER) == 1
    assert agent.counts["qr_same_visit"] == 1
    assert events[0].scores.liveness == "off"  # recorded as such: this station checks no liveness


def test_one_workers_code_does_not_stop_another_workers_face(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    obamas_code = real_token(signer, "obama", 1)
    frames = timeline(
        frames_of(portraits["biden"], obamas_code, 1),  # biden holds up obama's code: obama is let in (face_or_qr)
        UNLOCK_S + 0.4,
        frames_of(portraits["biden"], obamas_code, 2) + frames_of(portraits["biden"], None, 3),  # then biden's face
    )
    events, factory, agent = run(agent_settings(tmp_path, signer, "face_or_qr"), frames, face_engine)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [
        (EventKind.QR, Decision.GRANTED, "obama"), (EventKind.FACE, Decision.GRANTED, "biden"),
    ]
    assert clicks(factory) == 2 and agent.gate.merged == 0


def test_back_within_the_cooldown_the_door_opens_again_without_a_new_entry(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    blank = [np.full((480, 640, 3), 96, np.uint8)] * 10  # 2 s without a face: the visit ends
    frames = timeline(
        frames_of(portraits["obama"], real_token(signer, "obama", 1), 1), UNLOCK_S + 0.4, blank,
        frames_of(portraits["obama"], None, 4),  # back 2 s later (cooldown 30 s): his face opens the door
    )
    events, factory, _agent = run(agent_settings(tmp_path, signer, "face_or_qr"), frames, face_engine)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.QR, Decision.GRANTED, "obama")]
    assert clicks(factory) == 2


# -- liveness evidence in the entries ---------------------------------------------------------------------------
def test_a_photo_held_to_the_door_is_recorded_with_the_failed_liveness_evidence(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    settings = agent_settings(tmp_path, signer, "face")
    settings = settings.model_copy(update={"liveness": settings.liveness.model_copy(update={"mode": "either"})})
    events, factory, agent = run(settings, timeline(frames_of(portraits["obama"], None, 25)), face_engine)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.FACE, Decision.SPOOF, "obama")]
    scores = events[0].scores
    assert scores.liveness == "failed" and scores.blinks == 0
    assert scores.head_motion is not None and scores.head_motion < settings.liveness.motion_threshold
    assert scores.liveness_ms == pytest.approx(settings.liveness.time_limit_s * 1000.0, abs=STEP_S * 1000)
    assert clicks(factory) == 0
    assert agent.store is not None
    wire = json.loads(agent.store.pending(1)[0][2])
    assert wire["schema"] == "entry/2" and wire["scores"]["liveness"] == "failed"


def test_a_live_person_is_recorded_with_the_passed_liveness_evidence(
    tmp_path: Path, signer: Signer, faces: Path, face_engine  # noqa: ANN001
) -> None:
    """Lin-Manuel Miranda on stage (face_recognition's Hamilton clip), enrolled from his photo."""
    store = EdgeStore.open(tmp_path / "edge")
    vectors = [enroll_photo(face_engine, p).vector for p in sorted((faces / EX / "lin_manuel_miranda").iterdir())]
    store.apply_changes([upsert(1, "lin", *vectors)], snapshot=False, latest_version=1)
    store.close()
    cap = Capture(faces / "videos/face_recognition/short_hamilton_clip.mp4")
    fps = cap.fps or 29.97
    clip = [rgb for i in range(200) if (rgb := cap.read()) is not None and i >= 60]  # he steps up at frame 82
    cap.release()
    base = time.monotonic()
    frames = iter([Frame(i, base + i / fps, rgb) for i, rgb in enumerate(clip)])
    settings = agent_settings(tmp_path, signer, "face")
    settings = settings.model_copy(update={"liveness": settings.liveness.model_copy(update={"mode": "either"})})
    events, factory, _agent = run(settings, frames, face_engine)
    granted = [e for e in events if e.decision == Decision.GRANTED]
    assert [(e.kind, e.worker_id) for e in granted] == [(EventKind.FACE, "lin")]
    scores = granted[0].scores
    assert scores.liveness == "passed" and scores.head_motion is not None
    assert scores.head_motion >= settings.liveness.motion_threshold or (scores.blinks or 0) > 0
    assert scores.liveness_ms is not None and 0 < scores.liveness_ms < settings.liveness.time_limit_s * 1000.0
    assert "live:" in granted[0].reason  # the summary stays in the reason text
    assert clicks(factory) == 1
