"""Liveness against photos: pure tests on synthetic 3D faces (real clips and spoof photos: test_liveness_real.py).

The synthetic face is a 68-point head with depth (the nose sticks out, the
jaw recedes), turned and projected like a real head; a "photo" is that
head's 2D projection frozen once and then moved, scaled, rotated and tilted
as a flat sheet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.faces import Box
from edge.liveness import (
    LivenessChecker,
    LivenessConfig,
    LivenessResult,
    LivenessState,
    face_shape,
    landmark_points,
)

# --------------------------------------------------------------------------- a synthetic head


def _head() -> np.ndarray:
    """68 points (x right, y down, z towards the camera) in eye-to-eye units, eyes at (±0.5, 0, 0)."""
    a = np.linspace(0.0, math.pi, 17)
    jaw = np.column_stack([-0.95 * np.cos(a), -0.05 + 1.25 * np.sin(a), -0.7 + 0.7 * np.sin(a)])
    bx = np.linspace(-0.85, -0.15, 5)
    brow_l = np.column_stack([bx, -0.35 - 0.08 * np.sin(np.linspace(0, math.pi, 5)), np.full(5, 0.05)])
    brow_r = brow_l[::-1] * [-1, 1, 1]
    bridge = np.array([[0, -0.1, 0.15], [0, 0.1, 0.3], [0, 0.3, 0.45], [0, 0.5, 0.6]])
    base = np.array([[-0.2, 0.6, 0.3], [-0.1, 0.63, 0.4], [0, 0.65, 0.45], [0.1, 0.63, 0.4], [0.2, 0.6, 0.3]])
    eye_l = np.array([[-0.7, 0, 0], [-0.57, -1, 0], [-0.43, -1, 0], [-0.3, 0, 0], [-0.43, 1, 0], [-0.57, 1, 0]])
    eye_r = eye_l[[3, 2, 1, 0, 5, 4]] * [-1, 1, 1]
    outer = np.array([[-0.4, 0.95], [-0.25, 0.88], [-0.1, 0.85], [0, 0.87], [0.1, 0.85], [0.25, 0.88], [0.4, 0.95],
                      [0.25, 1.03], [0.1, 1.07], [0, 1.08], [-0.1, 1.07], [-0.25, 1.03]])
    inner = np.array([[-0.3, 0.95], [-0.1, 0.93], [0, 0.93], [0.1, 0.93], [0.3, 0.95], [0.1, 0.97], [0, 0.97], [-0.1, 0.97]])
    mouth = np.column_stack([np.vstack([outer, inner]), np.full(20, 0.1)])
    return np.vstack([jaw, brow_l, brow_r, bridge, base, eye_l, eye_r, mouth]).astype(float)


HEAD = _head()
EYELIDS = [37, 38, 40, 41, 43, 44, 46, 47]  # their y is the lid height factor (±1), scaled by `open` below


@dataclass(frozen=True)
class Pose:
    yaw: float = 0.0  # degrees, head turning
    pitch: float = 0.0  # degrees, nodding
    eyes: float = 1.0  # 1 open, 0 shut
    px: float = 80.0  # pixels per eye-to-eye distance (about a 150 px face box)
    x: float = 320.0
    y: float = 220.0


def project(pose: Pose) -> np.ndarray:
    """The head in that pose, as 2D pixel points (orthographic camera)."""
    p = HEAD.copy()
    p[EYELIDS, 1] *= 0.06 * pose.eyes  # open eye: aspect ratio 0.3
    yaw, pitch = math.radians(pose.yaw), math.radians(pose.pitch)
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    q = p @ (rx @ ry).T
    return q[:, :2] * pose.px + [pose.x, pose.y]


def as_dict(pts: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    """face_recognition's layout of the 68 points (its api.face_landmarks), rounded to pixels."""
    t = [(int(round(x)), int(round(y))) for x, y in pts]
    return {
        "chin": t[0:17], "left_eyebrow": t[17:22], "right_eyebrow": t[22:27], "nose_bridge": t[27:31],
        "nose_tip": t[31:36], "left_eye": t[36:42], "right_eye": t[42:48],
        "top_lip": t[48:55] + [t[64], t[63], t[62], t[61], t[60]],
        "bottom_lip": t[54:60] + [t[48], t[60], t[67], t[66], t[65], t[64]],
    }


def box_of(pts: np.ndarray) -> Box:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return Box(top=int(lo[1]), right=int(hi[0]), bottom=int(hi[1]), left=int(lo[0]))


def frame(pts: np.ndarray, rng: np.random.Generator | None = None, noise: float = 0.7) -> tuple[dict, Box]:
    if rng is not None:
        pts = pts + rng.normal(0.0, noise, pts.shape)
    return as_dict(pts), box_of(pts)


class FakeClock:
    def __init__(self, t: float = 500.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**overrides: object) -> tuple[LivenessChecker, FakeClock]:
    clock = FakeClock()
    return LivenessChecker(LivenessConfig(**overrides), clock), clock  # type: ignore[arg-type]


def play(checker: LivenessChecker, clock: FakeClock, frames: list[tuple[dict, Box] | None], fps: float = 8.0,
         frame_size: tuple[int, int] | None = (480, 640)) -> list[LivenessResult]:
    out = []
    for f in frames:
        out.append(checker.observe(None if f is None else f[0], None if f is None else f[1], frame_size=frame_size))
        clock.t += 1.0 / fps
    return out


def first_passed(results: list[LivenessResult]) -> LivenessResult | None:
    return next((r for r in results if r.passed), None)


# --------------------------------------------------------------------------- landmarks in, shape out


def test_the_dict_of_face_recognition_round_trips_to_68_points() -> None:
    pts = np.round(project(Pose(yaw=10)))
    assert np.array_equal(landmark_points(as_dict(pts)), pts)
    assert np.array_equal(landmark_points(pts), pts)


def test_bad_landmarks_are_refused_with_a_reason() -> None:
    five_point = {"nose_tip": [(1, 1)], "left_eye": [(0, 0), (1, 0)], "right_eye": [(3, 0), (4, 0)]}
    with pytest.raises(ValueError, match="68-point"):
        landmark_points(five_point)
    with pytest.raises(ValueError, match="68 landmark points"):
        landmark_points(np.zeros((5, 2)))
    short = as_dict(project(Pose()))
    short["left_eye"] = short["left_eye"][:5]
    with pytest.raises(ValueError, match="left_eye"):
        landmark_points(short)


def test_the_shape_ignores_how_a_flat_picture_is_moved_but_not_a_turned_head() -> None:
    pts = project(Pose(yaw=5, pitch=-5))
    still = face_shape(pts)
    th = math.radians(25)
    skew = np.array([[1.3 * math.cos(th), -math.sin(th)], [0.2 + math.sin(th), 0.7 * math.cos(th)]])  # any affine map
    moved = face_shape(pts @ skew.T + [40, -70])
    turned = face_shape(project(Pose(yaw=25, pitch=-5)))
    assert still is not None and moved is not None and turned is not None
    assert moved.nose == pytest.approx(still.nose, abs=1e-9)
    assert (moved.left_eye, moved.right_eye) == pytest.approx((still.left_eye, still.right_eye), abs=1e-9)
    assert abs(turned.nose[0] - still.nose[0]) > 0.1


def test_degenerate_landmarks_are_skipped_not_crashed_on() -> None:
    flat = project(Pose())
    flat[:, 1] = 200.0  # every point on one line
    assert face_shape(flat) is None
    checker, clock = make()
    assert checker.observe(as_dict(flat), Box(150, 400, 250, 240)).state is LivenessState.PENDING


# --------------------------------------------------------------------------- what passes


def test_mode_off_passes_at_once_even_without_a_face() -> None:
    checker, _ = make(mode="off")
    result = checker.observe(None, None)
    assert result.passed and result.reason == "liveness check off"


def test_a_small_head_turn_passes_within_the_limit() -> None:
    rng = np.random.default_rng(1)
    checker, clock = make(mode="motion")
    turn = [frame(project(Pose(yaw=15 * math.sin(i / 4))), rng) for i in range(40)]  # ±15°, about 3 s a cycle
    passed = first_passed(play(checker, clock, turn))
    assert passed is not None and passed.elapsed_s < checker.config.time_limit_s
    assert passed.motion >= checker.config.motion_threshold and passed.reason == "head movement seen"


def test_a_small_nod_passes() -> None:
    rng = np.random.default_rng(2)
    checker, clock = make(mode="motion")
    nod = [frame(project(Pose(pitch=min(2 * i, 20))), rng) for i in range(30)]
    assert first_passed(play(checker, clock, nod)) is not None


def test_a_blink_passes_when_the_eyes_open_again() -> None:
    rng = np.random.default_rng(3)
    checker, clock = make(mode="blink")
    opening = [1.0] * 8 + [0.3, 0.1] + [1.0] * 5
    results = play(checker, clock, [frame(project(Pose(eyes=e)), rng, noise=0.3) for e in opening])
    assert [r.state for r in results[:10]] == [LivenessState.PENDING] * 10  # shut is not yet a blink
    passed = first_passed(results)
    assert passed is not None and passed.blinks == 1 and passed.reason == "blink seen"
    assert results.index(passed) == 10  # the frame the eyes opened again


def test_eyes_that_stay_shut_are_not_a_blink() -> None:
    rng = np.random.default_rng(4)
    checker, clock = make(mode="blink")
    results = play(checker, clock, [frame(project(Pose(eyes=e)), rng, noise=0.3) for e in [1.0] * 8 + [0.1] * 40])
    assert results[-1].failed and results[-1].blinks == 0


def test_both_needs_a_blink_and_a_head_movement() -> None:
    rng = np.random.default_rng(5)
    checker, clock = make(mode="both")
    turn_only = play(checker, clock, [frame(project(Pose(yaw=min(2 * i, 25))), rng, 0.3) for i in range(40)])
    assert first_passed(turn_only) is None and turn_only[-1].failed
    assert turn_only[-1].reason == "no blink and head movement within 4 s"
    checker.reset()
    eyes = [1.0] * 6 + [0.1, 0.1] + [1.0] * 20
    both = play(checker, clock, [frame(project(Pose(yaw=min(2 * i, 25), eyes=e)), rng, 0.3) for i, e in enumerate(eyes)])
    passed = first_passed(both)
    assert passed is not None and passed.reason == "blink and head movement seen"


def test_either_is_the_shipped_default_and_a_still_face_fails_it() -> None:
    assert LivenessConfig().mode == "either"
    checker, clock = make()
    results = play(checker, clock, [frame(project(Pose()), np.random.default_rng(6)) for _ in range(33)])
    assert first_passed(results) is None
    assert results[-1].failed and results[-1].reason == "no blink or head movement within 4 s"


# --------------------------------------------------------------------------- what never passes


@settings(max_examples=60, deadline=None)
@given(
    yaw=st.floats(-25, 25), pitch=st.floats(-20, 20), eyes=st.floats(0.6, 1.0),
    seed=st.integers(0, 2**32 - 1), tilt_axis=st.floats(0, math.pi), max_tilt=st.floats(0, 40),
)
def test_a_photo_moved_scaled_rotated_or_tilted_never_passes(
    yaw: float, pitch: float, eyes: float, seed: int, tilt_axis: float, max_tilt: float
) -> None:
    """A frozen projection moved as a sheet: shifts, ±5 % scale, ±3° in-plane, paper tilted up to 40°."""
    rng = np.random.default_rng(seed)
    photo = project(Pose(yaw=yaw, pitch=pitch, eyes=eyes, x=0.0, y=0.0))
    checker, clock = make()
    frames = []
    for i in range(45):
        th = math.radians(rng.uniform(-3, 3))
        scale = rng.uniform(0.95, 1.05)
        tilt = math.cos(math.radians(max_tilt * i / 44))  # the sheet turned away more and more
        axis = np.array([math.cos(tilt_axis), math.sin(tilt_axis)])
        squash = np.eye(2) - (1 - tilt) * np.outer(axis, axis)
        rot = scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        pts = photo @ (rot @ squash).T + [320 + rng.uniform(-15, 15), 220 + rng.uniform(-15, 15)]
        frames.append(frame(pts, rng))
    results = play(checker, clock, frames)
    assert first_passed(results) is None
    assert results[-1].failed and results[-1].motion < checker.config.motion_threshold


@pytest.mark.parametrize("axis_deg", [0, 45, 90])
def test_a_photo_turned_close_to_a_real_camera_never_passes(axis_deg: float) -> None:
    """Perspective, not affine: a life-size print 30 cm from the lens, swung up to 60° about an axis in its plane.

    Perspective breaks the affine invariance slightly (the near half of the
    photo is magnified more); the nose still moves by only a few hundredths
    of an eye distance, far below the threshold.
    """
    rng = np.random.default_rng(axis_deg)
    photo = project(Pose(yaw=10, pitch=5, px=6.3, x=0.0, y=-3.0))  # centimetres on the paper, eyes 6.3 cm apart
    ax = np.array([math.cos(math.radians(axis_deg)), math.sin(math.radians(axis_deg)), 0.0])
    flat = np.column_stack([photo, np.zeros(len(photo))])
    checker, clock = make()
    frames = []
    for i in range(33):
        th = math.radians(60.0 * i / 32)
        k = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
        rot = np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)  # Rodrigues
        cam = flat @ rot.T + [0.0, 0.0, 30.0]
        pts = 500.0 * cam[:, :2] / cam[:, 2:3] + [320.0, 240.0]  # pinhole camera, f = 500 px
        frames.append(frame(pts, rng, noise=0.5))
    results = play(checker, clock, frames)
    assert first_passed(results) is None and results[-1].failed
    assert results[-1].motion < checker.config.motion_threshold / 2


def test_the_time_limit_fails_the_check_and_it_stays_failed_until_reset() -> None:
    rng = np.random.default_rng(7)
    checker, clock = make(time_limit_s=2.0)
    still = play(checker, clock, [frame(project(Pose()), rng) for _ in range(17)])  # 8 fps: t = 0 ... 2.0
    assert still[-2].state is LivenessState.PENDING and still[-1].failed and still[-1].elapsed_s >= 2.0
    late_turn = play(checker, clock, [frame(project(Pose(yaw=min(4 * i, 25))), rng) for i in range(20)])
    assert all(r.failed for r in late_turn)  # moving after the limit does not help
    checker.reset()
    assert first_passed(play(checker, clock, [frame(project(Pose(yaw=min(4 * i, 25))), rng) for i in range(20)]))


def test_the_clock_starts_at_the_first_usable_face() -> None:
    rng = np.random.default_rng(8)
    checker, clock = make(time_limit_s=2.0)
    tiny = Pose(px=15)  # a face of about 30 px: someone far away
    results = play(checker, clock, [None] * 50 + [frame(project(tiny), rng) for _ in range(30)])
    assert results[-1].state is LivenessState.PENDING and results[-1].frames == 0 and results[-1].elapsed_s == 0.0
    turn = play(checker, clock, [frame(project(Pose(yaw=min(3 * i, 25))), rng) for i in range(15)])
    assert first_passed(turn) is not None


def test_blinks_on_small_faces_do_not_count() -> None:
    """At 70 px an eye is a few pixels high: landmark noise alone dips as far as a blink."""
    rng = np.random.default_rng(9)
    checker, clock = make(mode="blink")
    small = [frame(project(Pose(px=38, eyes=e)), rng, 0.2) for e in [1.0] * 8 + [0.1, 0.1] + [1.0] * 40]
    assert box_of(project(Pose(px=38))).size < checker.config.blink_min_face_px
    results = play(checker, clock, small)
    assert first_passed(results) is None and results[-1].blinks == 0


def test_faces_cut_by_the_frame_edge_are_not_evidence() -> None:
    rng = np.random.default_rng(10)
    checker, clock = make(mode="motion")
    at_edge = [frame(project(Pose(yaw=min(3 * i, 25), x=70.0)), rng) for i in range(20)]
    assert at_edge[0][1].left < 0  # the jaw runs off the left edge
    results = play(checker, clock, at_edge)
    assert first_passed(results) is None and results[-1].frames == 0


def test_evidence_from_two_faces_is_never_mixed() -> None:
    """Two photos (turned left and right) shown in turn, apart: each alone is still, so nothing passes."""
    rng = np.random.default_rng(11)
    checker, clock = make()
    left = project(Pose(yaw=-20, x=180.0))
    right = project(Pose(yaw=20, x=460.0))
    results = play(checker, clock, [frame(left if (i // 3) % 2 else right, rng) for i in range(45)])
    assert first_passed(results) is None and results[-1].failed
    assert checker.face_changes >= 10


# --------------------------------------------------------------------------- configuration


def test_the_config_is_strict_and_bounded() -> None:
    with pytest.raises(ValidationError):
        LivenessConfig(mode="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LivenessConfig(time_limit_s=0)
    with pytest.raises(ValidationError):
        LivenessConfig(blink_treshold=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="blink_open_ratio"):
        LivenessConfig(blink_closed_ratio=0.6, blink_open_ratio=0.5)
    for name, field in LivenessConfig.model_fields.items():
        assert field.description, name
