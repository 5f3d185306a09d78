"""Encodings in worker processes (edge/encoders.py): the same numbers as in the agent's process, votes side by side,
and a door that keeps working when a worker dies.

Real dlib models in real spawned processes, real photos, gpiozero mock pins for the agent.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from core.imaging import load_image
from core.matcher import Gallery
from edge.agent import EdgeAgent
from edge.config import DetectionConfig
from edge.encoders import EncoderPool, EncoderUnavailable, auto_processes, crop_for_encoding
from edge.gallery import GalleryHolder
from edge.pipeline import FramePipeline
from models.messages import Decision, EventKind
from tests.edge.test_one_entry import BUZZER, RELAY, clicks, enrolled, frames_of, portraits  # noqa: F401 (fixtures)
from tests.edge.test_qr import agent_settings, outbox

pytestmark = [pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"
PHOTOS = ["obama/obama.jpg", "biden/biden.jpg", "_multi_person/obama_and_biden.jpg", "_multi_person/two_people.jpg"]


@pytest.fixture(autouse=True)
def _pool_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/conftest.py keeps every other test's agent in one process; these tests choose."""
    monkeypatch.delenv("WAYSTATION_EDGE_DETECTION__ENCODER_PROCESSES", raising=False)


@pytest.fixture(scope="module")
def pool():  # noqa: ANN201
    p = EncoderPool(1).start()
    yield p
    p.close()


def test_auto_uses_the_cores_beside_the_frame_loop_up_to_three() -> None:
    assert [auto_processes("auto", n) for n in (1, 2, 3, 4, 8)] == [0, 0, 2, 3, 3]
    assert auto_processes(2, 1) == 2 and auto_processes(0, 8) == 0  # a number is taken as it is


def test_a_crop_around_the_face_encodes_exactly_as_the_whole_frame(faces: Path, face_engine) -> None:  # noqa: ANN001
    n = 0
    for name in PHOTOS:
        rgb = load_image(faces / EX / name)
        for box in face_engine.detect(rgb):
            crop, inner = crop_for_encoding(rgb, box)
            assert crop.shape[0] * crop.shape[1] < rgb.shape[0] * rgb.shape[1]  # less to send to a worker
            whole = face_engine.encode(rgb, [box])[0]
            part = face_engine.encode(crop, [inner])[0]
            assert np.abs(whole - part).max() < 1e-6, name
            n += 1
    assert n >= 6  # faces near the photo's edges included (the group photos)


def test_a_worker_process_gives_the_encoding_the_agents_process_gives(faces: Path, face_engine, pool) -> None:  # noqa: ANN001
    rgb = load_image(faces / EX / "_multi_person/obama_and_biden.jpg")
    boxes = face_engine.detect(rgb)
    futures = [pool.submit(rgb, b) for b in boxes]
    got = np.stack([f.result(timeout=60) for f in futures])
    assert np.abs(got - face_engine.encode(rgb, boxes)).max() < 1e-6
    assert pool.pids and os.getpid() not in pool.pids  # really another process


def obama_pipeline(faces: Path, face_engine, pool: EncoderPool) -> tuple[FramePipeline, np.ndarray]:  # noqa: ANN001
    """A pipeline using ``pool``, obama enrolled from one photo, and another photo of him as the camera's frame."""
    holder = GalleryHolder()
    holder.swap(Gallery([("obama", face_engine.encode_single(load_image(faces / EX / "obama/obama.jpg"))[0])],
                        version=1), {})
    pipe = FramePipeline(face_engine, DetectionConfig(), holder)
    pipe.encoders = pool
    return pipe, load_image(faces / EX / "obama/obama2.jpg")


def test_votes_are_encoded_by_the_worker_while_the_pipeline_goes_on(faces: Path, face_engine, pool) -> None:  # noqa: ANN001
    pipe, frame = obama_pipeline(faces, face_engine, pool)
    first = pipe.analyse(frame, t=0.0, encode=True)
    assert first is not None and first.observation is None  # sent away: this frame is not held up
    assert pipe.counts["encodings_sent"] == 1 and pipe.counts["encodings"] == 0
    deadline, t, seen = time.monotonic() + 30, 0.0, []
    while not seen and time.monotonic() < deadline:
        t += 0.04
        face = pipe.analyse(frame, t=t, encode=False)
        if face is not None and face.observation is not None:
            seen.append(face.observation)
        time.sleep(0.01)
    assert seen and seen[0].match.identity == "obama" and seen[0].match.distance < 0.5, seen
    assert pipe.counts["encodings"] == 1


def test_a_worker_killed_mid_visit_leaves_the_door_encoding_in_its_own_process(faces: Path, face_engine) -> None:  # noqa: ANN001
    now = [0.0]
    pool = EncoderPool(1, restart_after_s=5.0, clock=lambda: now[0]).start()
    try:
        pipe, frame = obama_pipeline(faces, face_engine, pool)
        for pid in pool.pids:
            os.kill(pid, signal.SIGKILL)
        observations = []
        for i in range(40):
            face = pipe.analyse(frame, t=0.1 * i, encode=True)
            if face is not None and face.observation is not None:
                observations.append(face.observation)
            time.sleep(0.02)
        assert pipe.counts["encoder_failures"] + pipe.counts["encoder_fallbacks"] >= 1
        assert observations and all(o.match.identity == "obama" for o in observations)  # encoded here instead
        with pytest.raises(EncoderUnavailable):
            pool.submit(frame, face_engine.detect(frame)[0])  # not started again before restart_after_s
        now[0] = 6.0
        again = pool.submit(frame, face_engine.detect(frame)[0]).result(timeout=60)
        assert pool.restarts == 1 and np.abs(again - face_engine.encode(frame, face_engine.detect(frame))[0]).max() < 1e-6
    finally:
        pool.close()
    assert not pool.pids


def test_a_stopped_pool_sends_the_pipeline_back_to_its_own_process_and_one_bad_encoding_breaks_nothing(
    faces: Path, face_engine  # noqa: ANN001
) -> None:
    pool = EncoderPool(1).start()
    frame = load_image(faces / EX / "obama/obama2.jpg")
    box = face_engine.detect(frame)[0]
    pool.failed(ValueError("dlib refused one crop"))  # that encoding's own failure: the workers stay
    assert pool.restarts == 0 and pool.submit(frame, box).result(timeout=60).shape == (128,)
    pool.close()
    with pytest.raises(EncoderUnavailable):
        pool.submit(frame, box)  # the agent stopping while a last frame is analysed: encoded in-process instead


def test_the_agent_grants_with_encodings_from_worker_processes(
    tmp_path: Path, signer, face_engine, portraits, enrolled  # noqa: ANN001, F811
) -> None:
    settings = agent_settings(tmp_path, signer, "face").model_copy(deep=True)
    settings.detection.encoder_processes = 1
    factory = MockFactory()
    frames = frames_of(portraits["obama"], None, 30)

    def paced():  # noqa: ANN202 - a camera at 25 fps, so that the worker's results come back during the visit
        from edge.camera import Frame

        base = time.monotonic()
        for i, rgb in enumerate(frames):
            time.sleep(max(0.0, base + i * 0.04 - time.monotonic()))
            yield Frame(i, base + i * 0.04, rgb)

    with EdgeAgent(settings, frames=paced(), pin_factory=factory, engine=face_engine) as agent:
        assert agent.encoders is not None and agent.encoders.pids
        workers = agent.encoders.pids
        factory.pin(RELAY).clear_states()
        factory.pin(BUZZER).clear_states()
        agent.run()
        events = outbox(agent)
        assert agent.pipeline is not None
        sent, encoded = agent.pipeline.counts["encodings_sent"], agent.pipeline.counts["encodings"]
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.FACE, Decision.GRANTED, "obama")]
    assert events[0].scores.frames == 3 and clicks(factory) == 1
    assert sent >= 1 and encoded >= 3  # the worker encoded votes; the frame loop's core took the others
    assert all(not _alive(pid) for pid in workers)  # stop() ended the worker processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
