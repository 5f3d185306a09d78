"""bench/liveness_cues.py rests on one claim: in the face's own frame, no landmark moves when a flat photo moves.

Checked on the real 68 landmarks of a real photo: any affine map of the points (a photo shifted, scaled, rotated,
tilted) leaves every cue's range at zero, and a real change of expression (the lower lip dropped, the mouth
opened) shows up in the mouth cues and not in the eyebrows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.liveness_cues import CUES, ranges
from core.imaging import load_image
from core.landmarks import face_frame, landmark_points
from edge.liveness import LivenessConfig

pytestmark = [pytest.mark.faces, pytest.mark.models]


@pytest.fixture(scope="module")
def points(faces: Path, face_engine) -> np.ndarray:  # noqa: ANN001
    rgb = load_image(faces / "face_recognition_examples" / "obama" / "obama.jpg")
    box = max(face_engine.detect(rgb), key=lambda b: b.size)
    return landmark_points(face_engine.landmarks_of(rgb, [box])[0])


def as_faces(seq: list[np.ndarray]) -> list:
    return [(None, p, None) for p in seq]


def test_a_photo_moved_by_any_affine_map_scores_zero_on_every_cue(points: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    moved = []
    for _ in range(12):
        a = np.eye(2) + rng.uniform(-0.3, 0.3, (2, 2))  # rotation, scale, shear, tilt
        moved.append(points @ a.T + rng.uniform(-80, 80, 2))
    got = ranges(as_faces(moved), LivenessConfig())
    assert got is not None and set(got) == set(CUES)
    assert max(got.values()) < 1e-9, got


def test_an_opened_mouth_shows_in_the_mouth_cues_only(points: np.ndarray) -> None:
    eye_distance = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    opened = points.copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += 0.2 * eye_distance  # the lower lip drops by a fifth of an eye distance
    seq = [points] * 3 + [opened] * 3
    got = ranges(as_faces(seq), LivenessConfig(smooth_frames=3))
    assert got is not None
    assert got["mouth opening"] > 0.1 and got["lips (outer)"] > 0.1, got
    assert got["eyebrows"] < 1e-9 and got["nose left-right"] < 1e-9, got
    assert face_frame(np.zeros((68, 2))) is None  # degenerate landmarks: no frame, no score
