"""Where the frame pipeline searches and what it encodes, with the real dlib models on real photos.

Frames are composed from real photos pasted onto a grey 640x480 background, the
face scaled to a chosen size: a person at the door, someone stepping in front.
The engine is the real one, wrapped to record where each search looked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.faces import Box, FaceEngine
from core.imaging import load_image, resize, to_gray
from core.matcher import Gallery
from edge.config import DetectionConfig, EdgeSettings
from edge.gallery import GalleryHolder
from edge.gate import DoorGate
from edge.pipeline import FramePipeline, run_frame
from edge.tracker import SWITCH_RATIO, expand

pytestmark = [pytest.mark.faces, pytest.mark.models]

EX = "face_recognition_examples"
WIDTH, HEIGHT = 640, 480


class Recording:
    """The real engine; every detect() call is noted as (searched height, width, scale)."""

    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine
        self.searches: list[tuple[int, int, float]] = []

    def detect(self, image: np.ndarray, *, scale: float = 1.0, upsample: int | None = None) -> list[Box]:
        self.searches.append((image.shape[0], image.shape[1], scale))
        return self.engine.detect(image, scale=scale, upsample=upsample)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


@pytest.fixture(scope="module")
def people(face_engine: FaceEngine, faces: Path) -> dict[str, tuple[np.ndarray, Box]]:
    """Each photo with its face box."""
    out = {}
    for name, path in {"obama": "obama/obama.jpg", "biden": "biden/biden.jpg"}.items():
        photo = load_image(faces / EX / path)
        (found,) = face_engine.detect(photo)
        out[name] = (photo, found)
    return out


def frame(*placed: tuple[tuple[np.ndarray, Box], int, tuple[int, int]]) -> np.ndarray:
    """A grey frame with each (photo and face box, face size in px, face centre (x, y)) pasted in:
    the face and half a face size around it, so that people side by side do not cover each other."""
    canvas = np.full((HEIGHT, WIDTH, 3), 96, np.uint8)
    for (full, box), size, (cx, cy) in placed:
        crop = expand(box, 0.5, full.shape[0], full.shape[1])
        photo = full[crop.top : crop.bottom, crop.left : crop.right]
        face = Box(box.top - crop.top, box.right - crop.left, box.bottom - crop.top, box.left - crop.left)
        f = size / face.size
        img = resize(photo, f)
        fx, fy = face.center
        x0, y0 = int(round(cx - fx * f)), int(round(cy - fy * f))
        top, left = max(0, y0), max(0, x0)
        bottom, right = min(HEIGHT, y0 + img.shape[0]), min(WIDTH, x0 + img.shape[1])
        canvas[top:bottom, left:right] = img[top - y0 : bottom - y0, left - x0 : right - x0]
    return canvas


def test_a_face_too_small_for_the_policy_is_followed_but_encoded_only_once_it_is_large_enough(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    gallery = Gallery([("obama", face_engine.encode(*_single(people["obama"]))[0])], version=1)
    far = frame((people["obama"], 100, (320, 240)))
    near = frame((people["obama"], 140, (320, 240)))
    pipeline = FramePipeline(face_engine, DetectionConfig(), GalleryHolder(gallery))
    small, large = (face_engine.detect(to_gray(f))[0].size for f in (far, near))  # as the pipeline searches
    assert small < large
    min_px = (small + large) // 2

    first = pipeline.analyse(far, t=0.0, encode=True, min_encode_px=min_px)
    assert first is not None and first.new_track and first.face_px == small
    assert first.observation is None  # asked for, but the policy could not use it: not computed
    assert pipeline.encodings_computed == 0

    # The gate does not ask for an encoding on the next frame, but this face has never been encoded:
    # once it is large enough, it is, once.
    second = pipeline.analyse(near, t=0.04, encode=False, min_encode_px=min_px)
    assert second is not None and second.track_id == first.track_id and not second.new_track
    assert second.observation is not None and second.observation.match.identity == "obama"
    assert pipeline.encodings_computed == 1
    third = pipeline.analyse(near, t=0.08, encode=False, min_encode_px=min_px)
    assert third is not None and third.observation is None and pipeline.encodings_computed == 1


def _single(person: tuple[np.ndarray, Box]) -> tuple[np.ndarray, list[Box]]:
    return person[0], [person[1]]


def test_the_door_path_never_encodes_a_face_the_policy_would_ignore(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    settings = EdgeSettings(station_id="t")
    gallery = Gallery([("obama", face_engine.encode(*_single(people["obama"]))[0])], version=1)
    pipeline = FramePipeline(face_engine, settings.detection, GalleryHolder(gallery))
    clock = [0.0]
    gate = DoorGate(settings.policy, settings.liveness.model_copy(update={"mode": "off"}), clock=lambda: clock[0])
    far = frame((people["obama"], 75, (320, 240)))
    size = face_engine.detect(to_gray(far))[0].size
    assert settings.detection.min_face_px <= size < settings.policy.min_face_px  # followed, too small to count
    for i in range(10):
        clock[0] = i / 10
        assert run_frame(pipeline, gate, far, clock[0]) is None
        assert pipeline.last_box is not None
    assert pipeline.encodings_computed == 0 and pipeline.counts["too_small"] == 10
    assert not gate.policy.in_visit


def test_a_clearly_closer_face_is_found_by_the_rescan_at_a_reduced_scale(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    engine = Recording(face_engine)
    settings = DetectionConfig()
    pipeline = FramePipeline(engine, settings)  # type: ignore[arg-type]
    first = pipeline.analyse(frame((people["biden"], 120, (150, 240)), (people["obama"], 90, (480, 240))), t=0.0)
    assert first is not None and first.new_track and first.box.center[0] < 320  # the larger face is followed
    followed = first.box

    # Someone walks up beside the followed face; between rescans only the region around it is searched.
    for i, size in enumerate((100, 115, 130, 150, 170), start=1):
        engine.searches.clear()
        walking_up = frame((people["biden"], 120, (150, 240)), (people["obama"], size, (480, 240)))
        seen = pipeline.analyse(walking_up, t=i * 0.09)
        assert seen is not None and seen.track_id == first.track_id
        assert all(h * w < HEIGHT * WIDTH / 4 for h, w, _s in engine.searches)

    # At rescan_s the whole frame is looked at again, at the smallest scale that still finds a face
    # large enough to take over (SWITCH_RATIO times the followed one), and that face takes over.
    engine.searches.clear()
    switched = pipeline.analyse(walking_up, t=settings.rescan_s + 0.01)
    assert switched is not None and switched.new_track and switched.track_id != first.track_id
    assert switched.box.center[0] > 320 and switched.box.size >= SWITCH_RATIO * followed.size
    whole = [s for h, w, s in engine.searches if (h, w) == (HEIGHT, WIDTH)]
    assert whole == [pytest.approx(80 / (SWITCH_RATIO * followed.size))] and whole[0] < 0.85
    # The candidate was measured again around itself, at the followed face's region scale, before taking over.
    assert len(engine.searches) == 2 and engine.searches[1][2] == pytest.approx(min(1.0, 100 / followed.size))
    assert pipeline.counts["rescans"] == 1 and pipeline.counts["full_searches"] == 1  # only the very first frame
    assert pipeline.tracker.switches == 1


def test_a_face_of_similar_size_does_not_take_over_on_the_rescan(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    pipeline = FramePipeline(face_engine, DetectionConfig())
    side_by_side = frame((people["biden"], 130, (150, 240)), (people["obama"], 120, (480, 240)))
    assert len(face_engine.detect(side_by_side)) == 2  # a whole-frame search at full size sees both
    first = pipeline.analyse(side_by_side, t=0.0)
    assert first is not None and first.box.center[0] < 320
    closer = frame((people["biden"], 130, (150, 240)), (people["obama"], 150, (480, 240)))  # 1.15x: not clearly
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        later = pipeline.analyse(closer, t=t)
        assert later is not None and later.track_id == first.track_id and not later.new_track
    # The rescan found the other face possibly larger, measured it again at the followed face's scale: not clearly.
    assert pipeline.counts["rescans"] == 1 and pipeline.counts["rescan_checks"] == 1 and pipeline.tracker.switches == 0


def test_a_rescan_around_a_face_near_the_smallest_searches_the_whole_frame_at_full_scale(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    # Followed at ~72 px, a face that takes over may be ~90 px: a reduced scale would save little.
    engine = Recording(face_engine)
    pipeline = FramePipeline(engine, DetectionConfig())  # type: ignore[arg-type]
    scene = frame((people["biden"], 70, (160, 240)))
    first = pipeline.analyse(scene, t=0.0)
    assert first is not None and 80 / (SWITCH_RATIO * first.box.size) >= 0.85
    engine.searches.clear()
    assert pipeline.analyse(scene, t=0.6) is not None
    assert engine.searches == [(HEIGHT, WIDTH, 1.0)] and pipeline.counts["rescans"] == 0
