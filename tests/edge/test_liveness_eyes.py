"""Blinks on small faces, measured on finer eye landmarks; and the closed-on-consecutive-frames rule. Pure tests on
the synthetic head of test_liveness.py (real frames: test_liveness_real.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.liveness import LivenessConfig
from tests.edge.test_liveness import Pose, box_of, first_passed, frame, make, project


def small_face(eyes: list[float], rng: np.random.Generator, noise: float = 0.2) -> list[tuple[dict, object, np.ndarray]]:
    """A 70-px face, as the frame gives it (whole pixels, noisy) and as a finer measurement of the same face."""
    out = []
    for e in eyes:
        pts = project(Pose(px=38, eyes=e))
        landmarks, box = frame(pts, rng, noise)
        out.append((landmarks, box, pts + rng.normal(0.0, noise / 4, pts.shape)))
    return out


def observe_all(checker, clock, frames: list, fps: float = 8.0, eyes: bool = True) -> list:  # noqa: ANN001
    results = []
    for landmarks, box, fine in frames:
        results.append(checker.observe(landmarks, box, frame_size=(480, 640), eye_landmarks=fine if eyes else None))
        clock.t += 1.0 / fps
    return results


def test_a_blink_on_a_small_face_counts_when_its_eyes_are_measured_finely() -> None:
    rng = np.random.default_rng(21)
    checker, clock = make(mode="blink")
    frames = small_face([1.0] * 8 + [0.1, 0.1] + [1.0] * 10, rng)
    assert box_of(project(Pose(px=38))).size < checker.config.blink_min_face_px
    passed = first_passed(observe_all(checker, clock, frames))
    assert passed is not None and passed.blinks == 1 and passed.elapsed_s < checker.config.time_limit_s
    # The same face without the finer eyes: too small for its blinks to count.
    checker.reset()
    assert first_passed(observe_all(checker, clock, frames, eyes=False)) is None


def test_eyes_closed_on_one_frame_only_are_not_a_blink() -> None:
    rng = np.random.default_rng(22)
    frames = small_face([1.0] * 8 + [0.1] + [1.0] * 30, rng)
    checker, clock = make(mode="blink")
    assert checker.config.blink_closed_frames == 2
    results = observe_all(checker, clock, frames)
    assert first_passed(results) is None and results[-1].failed and results[-1].blinks == 0
    checker, clock = make(mode="blink", blink_closed_frames=1)  # what one noisy frame would do with a looser rule
    assert first_passed(observe_all(checker, clock, frames)) is not None


def test_head_movement_is_measured_on_the_frames_landmarks_never_on_the_eye_measurement() -> None:
    """A still face whose separate eye measurement comes from a turning head: no movement, no pass."""
    rng = np.random.default_rng(23)
    checker, clock = make(mode="motion")
    results = []
    for i in range(40):
        still, box = frame(project(Pose()), rng, 0.3)
        turning = project(Pose(yaw=min(2 * i, 25)))
        results.append(checker.observe(still, box, frame_size=(480, 640), eye_landmarks=turning))
        clock.t += 1 / 8
    assert first_passed(results) is None and results[-1].failed
    assert results[-1].motion < checker.config.motion_threshold


def test_the_new_knobs_are_bounded_and_described() -> None:
    config = LivenessConfig()
    assert config.blink_closed_frames == 2 and config.eye_upscale_px == 160 and config.blink_closed_ratio == 0.5
    for bad in ({"blink_closed_frames": 0}, {"eye_upscale_px": -1}, {"eye_upscale_px": 401}):
        with pytest.raises(ValidationError):
            LivenessConfig(**bad)  # type: ignore[arg-type]
