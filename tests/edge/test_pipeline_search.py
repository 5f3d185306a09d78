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
from core.imaging import Capture, load_image, resize, to_gray
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


def frame(*placed: tuple[tuple[np.ndarray, Box], int, tuple[int, int]], size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """A grey frame (``size``: width, height) with each (photo and face box, face size in px, face centre
    (x, y)) pasted in: the face and half a face size around it, so that people side by side do not cover
    each other."""
    WIDTH, HEIGHT = size  # noqa: N806
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


# --------------------------------------------------------------------------- cheaper searches (docs/performance.md)


def test_a_1080p_camera_is_searched_at_the_target_width_and_still_finds_the_person_at_the_door(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    at_door = frame((people["obama"], 300, (960, 500)), size=(1920, 1080))  # ~0.8 m from a 1080p camera
    engine = Recording(face_engine)
    pipeline = FramePipeline(engine, DetectionConfig())  # type: ignore[arg-type]
    seen = pipeline.analyse(at_door, t=0.0)
    assert seen is not None and 240 <= seen.face_px <= 360
    assert engine.searches == [(1080, 1920, pytest.approx(640 / 1920))]  # searched as a 640x360 frame: ~9x cheaper
    engine.searches.clear()
    whole = FramePipeline(engine, DetectionConfig(target_width=0)).analyse(at_door, t=0.0)  # type: ignore[arg-type]
    assert whole is not None and engine.searches == [(1080, 1920, 1.0)]


def test_the_crowd_clip_s_distant_faces_are_not_looked_for_at_1080p_unless_target_width_is_off(
    face_engine: FaceEngine, faces: Path
) -> None:
    # facenet_pytorch/video.mp4: people several metres away, faces of 72-124 px in a 1920x1080 frame.
    cap = Capture(str(faces / "videos" / "facenet_pytorch" / "video.mp4"))
    try:
        crowd = cap.read()
    finally:
        cap.release()
    assert crowd is not None and crowd.shape[:2] == (1080, 1920)
    assert FramePipeline(face_engine, DetectionConfig()).analyse(crowd, t=0.0) is None
    far_away = FramePipeline(face_engine, DetectionConfig(target_width=0)).analyse(crowd, t=0.0)
    assert far_away is not None and far_away.face_px < 240  # found only by searching the full 1080p frame


def test_after_the_followed_face_leaves_an_unchanged_empty_doorway_is_not_searched_on_every_frame(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    engine = Recording(face_engine)
    pipeline = FramePipeline(engine, DetectionConfig())  # type: ignore[arg-type]
    present, empty = frame((people["obama"], 120, (320, 240))), frame()
    for i in range(4):
        assert pipeline.analyse(present, t=i * 0.04) is not None
    engine.searches.clear()
    for i in range(4, 15):  # 0.44 s of an empty doorway: the face is still remembered (0.5 s), not found
        assert pipeline.analyse(empty, t=i * 0.04) is None
    whole = [s for s in engine.searches if s[:2] == (HEIGHT, WIDTH)]
    assert len(whole) == 1  # once when the face was missed in its region; then nothing changed: no search
    assert pipeline.counts["idle_skips"] == 10
    back = pipeline.analyse(present, t=15 * 0.04)  # the picture changed: searched at once, found at once
    assert back is not None and back.face_px > 100


def test_with_nobody_in_view_a_film_that_never_stops_changing_is_searched_on_every_other_frame(
    face_engine: FaceEngine, faces: Path
) -> None:
    # The Hamilton clip's first 40 frames (29.97 fps): a moving stage, nobody near enough.
    engine = Recording(face_engine)
    pipeline = FramePipeline(engine, DetectionConfig())  # type: ignore[arg-type]
    cap = Capture(str(faces / "videos" / "face_recognition" / "short_hamilton_clip.mp4"))
    try:
        for i in range(40):
            rgb = cap.read()
            assert rgb is not None
            assert pipeline.analyse(rgb, t=i / 29.97) is None
    finally:
        cap.release()
    alternate = len(engine.searches)
    assert alternate <= 20  # at most every other frame (idle_interval_s 0.05)
    engine.searches.clear()
    every = FramePipeline(engine, DetectionConfig(idle_interval_s=0.0))  # type: ignore[arg-type]
    cap = Capture(str(faces / "videos" / "face_recognition" / "short_hamilton_clip.mp4"))
    try:
        for i in range(40):
            every.analyse(cap.read(), t=i / 29.97)  # type: ignore[arg-type]
    finally:
        cap.release()
    assert len(engine.searches) >= 30 and alternate <= 0.65 * len(engine.searches)  # nearly every frame changed


def test_someone_appearing_after_a_still_spell_is_found_on_their_first_frame(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    pipeline = FramePipeline(face_engine, DetectionConfig())
    empty, arrives = frame(), frame((people["biden"], 140, (320, 240)))
    for i in range(15):  # half a second of an empty doorway at 30 fps: searched once
        assert pipeline.analyse(empty, t=i / 30) is None
    assert pipeline.counts["full_searches"] == 1
    seen = pipeline.analyse(arrives, t=15 / 30)
    assert seen is not None and seen.new_track


def _door(pipeline: FramePipeline, gate: DoorGate, rgb: np.ndarray, t: float, far: float | None) -> object:
    """run_frame, with the stranger shortcut switched on (far) or off (None), for comparison."""
    face = pipeline.analyse(rgb, t=t, encode=gate.wants_encoding, landmarks=gate.wants_landmarks,
                            min_encode_px=gate.policy.config.min_face_px, far=far)
    return gate.observe(face)


def _visit(face_engine: FaceEngine, gallery: Gallery, frames: list[np.ndarray], *, shortcut: bool) -> tuple[list, int]:
    """Each frame at 10 fps through the door path: (frame index, decision, identity) of each verdict, encodings."""
    settings = EdgeSettings(station_id="t")
    pipeline = FramePipeline(face_engine, settings.detection, GalleryHolder(gallery))
    clock = [0.0]
    gate = DoorGate(settings.policy, settings.liveness.model_copy(update={"mode": "off"}), clock=lambda: clock[0])
    verdicts = []
    for i, rgb in enumerate(frames):
        clock[0] = i / 10
        if shortcut:
            verdict = run_frame(pipeline, gate, rgb, clock[0])
        else:
            verdict = _door(pipeline, gate, rgb, clock[0], None)
        if verdict is not None:
            verdicts.append((i, verdict.decision.value, verdict.identity))
    return verdicts, pipeline.encodings_computed


def test_a_stranger_standing_still_is_not_encoded_again_and_the_door_decides_exactly_as_before(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    gallery = Gallery([("obama", face_engine.encode(*_single(people["obama"]))[0])], version=1)
    still = [frame((people["biden"], 130, (320, 240)))] * 25  # 2.5 s
    before, encoded_before = _visit(face_engine, gallery, still, shortcut=False)
    after, encoded_after = _visit(face_engine, gallery, still, shortcut=True)
    assert after == before and [d for _i, d, _w in after] == ["denied"]
    assert encoded_after <= 3 < encoded_before  # once, then once a second (the encoding stands for 1 s at most)

    # A stranger whose picture changes (stepping closer and back) is encoded whenever the gate asks.
    moving = [frame((people["biden"], 120 if i % 2 else 150, (320, 240))) for i in range(25)]
    assert _visit(face_engine, gallery, moving, shortcut=True) == _visit(face_engine, gallery, moving, shortcut=False)


def test_a_worker_standing_still_is_encoded_on_every_frame_until_the_grant(
    face_engine: FaceEngine, people: dict[str, tuple[np.ndarray, Box]]
) -> None:
    gallery = Gallery([("obama", face_engine.encode(*_single(people["obama"]))[0])], version=1)
    still = [frame((people["obama"], 130, (320, 240)))] * 10
    verdicts, encoded = _visit(face_engine, gallery, still, shortcut=True)
    settings = EdgeSettings(station_id="t")
    assert verdicts == [(settings.policy.frames_required - 1, "granted", "obama")]  # each vote its own frame
    assert encoded == settings.policy.frames_required
