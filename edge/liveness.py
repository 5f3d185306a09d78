"""Liveness against photos and screens held to the camera: pure code, an injected clock.

The checker watches the 68 face landmarks of the tracked face over consecutive
frames and passes once it has seen something a flat picture cannot do:

- **motion**: the head turned or nodded a little. Measured as the position of
  the nose (points 27-35) in a frame of reference built from the two eye
  centres and the mouth corners. Those three anchors lie roughly on one
  plane; the nose sticks out of it, so a real head turning moves the nose
  against them (parallax). A photo moved, shifted, scaled, rotated in the
  image, or tilted as a whole undergoes (nearly) an affine map of the image,
  and affine coordinates are invariant under affine maps: its nose stays put
  in this frame however the photo is moved. Landmark noise is damped with a
  running median over ``smooth_frames`` frames; the score is the largest
  range of that median (horizontal or vertical) over the visit, in units of
  the eye-to-eye distance.
- **blink**: both eyes close (eye aspect ratio at most ``blink_closed_ratio``
  of the person's own open-eye baseline, the median of their recent frames)
  on ``blink_closed_frames`` consecutive frames, and then open again. The
  ratio is computed in the same affine frame, so tilting a photo does not
  fake it. dlib places landmarks on whole pixels, and on a 75-px face an
  open eye is 3-4 pixels high: landmark noise alone dips as far as a blink.
  So the eyes are best measured on a crop of the face upscaled to
  ``eye_upscale_px`` (:func:`upscaled_landmarks`, passed as
  ``eye_landmarks``): then faces from ``min_face_px`` up count for blinks;
  measured on the frame itself, only faces of at least ``blink_min_face_px``.
  Head movement is always measured on the frame's own landmarks (on the
  upscaled crops one jittered photo's nose glitched like a head turning:
  docs/liveness.md).

Modes: ``off`` passes at once; ``blink`` and ``motion`` need that cue;
``either`` needs one of the two; ``both`` needs a blink *and* a movement,
in any order, within the same time limit. The time limit starts at the first
usable face; when it runs out without the needed cue, the result is
``failed`` and stays so until :meth:`LivenessChecker.reset` (a new visit).

Evidence never mixes two faces: when the tracked box jumps (its centre moves
more than ``max_jump`` face sizes between used frames, or its size changes by
more than that fraction) the evidence restarts, but the clock does not, so
swapping photos in front of the camera cannot buy time either. Faces smaller
than ``min_face_px`` or cut by the frame edge are not evidence at all.

What this cannot stop (see docs/liveness.md): a video replayed on a screen,
a mask, a photo bent around a face-shaped form, or two photos swapped in place.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.faces import Box
from core.landmarks import FaceShape, face_shape, landmark_points, upscaled_landmarks

LivenessMode = Literal["off", "blink", "motion", "both", "either"]

__all__ = [
    "FaceShape", "LivenessChecker", "LivenessConfig", "LivenessMode", "LivenessResult", "LivenessState",
    "face_shape", "landmark_points", "upscaled_landmarks",
]
"""The geometry (core/landmarks.py) is re-exported: callers import everything from here."""


class LivenessConfig(BaseModel):
    """Every knob of the liveness check, bounded and documented (defaults measured in docs/liveness.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: LivenessMode = Field(
        default="either",
        description="off: no check; blink; motion (head turn or nod); either: one of the two; both: a blink and a movement.",
    )
    time_limit_s: float = Field(
        default=4.0, gt=0.0, le=30.0,
        description="Seconds from the first usable face to show the cue; after that the visit fails the check.",
    )
    prompt_after_s: float = Field(
        default=1.2, ge=0.0, le=30.0,
        description="A worker's matched face still waiting for the cue this many seconds after the match gets the "
        "door's 'please move' signal, once per visit (green LED blinking; docs/hardware.md). Strangers never get it. "
        "0: never; at or beyond time_limit_s it never comes (the check fails first).",
    )
    min_face_px: int = Field(
        default=60, ge=20, le=2000, description="Faces smaller than this (shorter box side, pixels) are not evidence."
    )
    smooth_frames: int = Field(
        default=3, ge=1, le=15, description="Running median over this many frames before measuring movement."
    )
    motion_threshold: float = Field(
        default=0.12, ge=0.02, le=1.0,
        description="Nose movement against eyes and mouth, in eye-to-eye distances, that counts as a head movement.",
    )
    blink_closed_ratio: float = Field(
        default=0.5, ge=0.1, le=0.9,
        description="Both eyes count as closed when their openness is at most this fraction of the person's baseline.",
    )
    blink_open_ratio: float = Field(
        default=0.8, ge=0.2, le=1.0, description="Eyes count as open again at this fraction of the baseline."
    )
    blink_closed_frames: int = Field(
        default=2, ge=1, le=10,
        description="Consecutive frames both eyes must be closed for a blink: noise rarely closes them twice in a row.",
    )
    blink_baseline_frames: int = Field(
        default=4, ge=2, le=100, description="Open-eye frames needed before a closing can count as a blink."
    )
    blink_min_face_px: int = Field(
        default=90, ge=20, le=2000,
        description="With eyes measured on the frame itself, only faces at least this large count for blinks.",
    )
    eye_upscale_px: int = Field(
        default=160, ge=0, le=400,
        description="Faces smaller than this have their eyes measured on a crop upscaled to this size "
        "(upscaled_landmarks), and then count for blinks from min_face_px up; 0: never upscaled.",
    )
    edge_margin: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="With frame_size given, a face box closer than this many face sizes to the frame edge is not "
        "evidence: a face cut by the edge makes the landmark model guess, and its guesses move.",
    )
    max_jump: float = Field(
        default=0.5, gt=0.0, le=5.0,
        description="A box moving by more than this many face sizes (or resizing by this fraction) is another face.",
    )

    @model_validator(mode="after")
    def _ratios_ordered(self) -> "LivenessConfig":
        if self.blink_open_ratio <= self.blink_closed_ratio:
            raise ValueError("blink_open_ratio must be larger than blink_closed_ratio")
        return self


class LivenessState(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """Where the check stands, why, and the evidence measured so far."""

    state: LivenessState
    reason: str
    blinks: int
    motion: float
    """Largest head movement seen (eye-to-eye distances; passes at ``motion_threshold``)."""
    frames: int
    """Frames used as evidence since the visit (or the last face change) started."""
    elapsed_s: float
    """Seconds since the first usable face (0 before one)."""

    @property
    def passed(self) -> bool:
        return self.state is LivenessState.PASSED

    @property
    def failed(self) -> bool:
        return self.state is LivenessState.FAILED


# --------------------------------------------------------------------------- the checker

_BASELINE_WINDOW = 30
"""Open-eye frames kept for the baseline: recent enough to follow a change of expression."""


class _Evidence:
    """What has been seen of one continuous face; thrown away when the face changes."""

    def __init__(self, smooth_frames: int) -> None:
        self.frames = 0
        self.last_box: Box | None = None
        self.noses: deque[tuple[float, float]] = deque(maxlen=smooth_frames)
        self.low: list[float] | None = None
        self.high: list[float] | None = None
        self.open_eyes: deque[tuple[float, float]] = deque(maxlen=_BASELINE_WINDOW)
        self.eyes_closed = False
        self.closed_run = 0  # consecutive frames with both eyes closed
        self.blinks = 0

    @property
    def motion(self) -> float:
        if self.low is None or self.high is None:
            return 0.0
        return max(self.high[0] - self.low[0], self.high[1] - self.low[1])

    def add_nose(self, nose: tuple[float, float]) -> None:
        self.noses.append(nose)
        if len(self.noses) < (self.noses.maxlen or 1):
            return
        smoothed = np.median(np.asarray(self.noses), axis=0)
        if self.low is None or self.high is None:
            self.low, self.high = [float(v) for v in smoothed], [float(v) for v in smoothed]
            return
        for i in (0, 1):
            self.low[i] = min(self.low[i], float(smoothed[i]))
            self.high[i] = max(self.high[i], float(smoothed[i]))

    def add_eyes(self, left: float, right: float, cfg: LivenessConfig) -> None:
        if len(self.open_eyes) < cfg.blink_baseline_frames:
            self.open_eyes.append((left, right))
            return
        base = np.median(np.asarray(self.open_eyes), axis=0)
        if base[0] <= 0.0 or base[1] <= 0.0:
            self.open_eyes.append((left, right))
            return
        rl, rr = left / float(base[0]), right / float(base[1])
        if self.eyes_closed:
            if (rl + rr) / 2.0 >= cfg.blink_open_ratio:
                self.eyes_closed = False
                self.blinks += 1
                self.open_eyes.append((left, right))
        elif rl <= cfg.blink_closed_ratio and rr <= cfg.blink_closed_ratio:
            # Both eyes at once, on consecutive frames: noise rarely closes two eyes together, twice.
            self.closed_run += 1
            self.eyes_closed = self.closed_run >= cfg.blink_closed_frames
            return
        else:
            self.open_eyes.append((left, right))
        self.closed_run = 0


def inside_frame(points: np.ndarray, box: Box, frame_size: tuple[int, int], edge_margin: float) -> bool:
    """Whether a face is evidence at all: its box ``edge_margin`` face sizes (at least a pixel) inside the
    frame, and every landmark on it. A face cut by the edge makes the landmark model guess the hidden half."""
    height, width = frame_size
    m = max(1.0, edge_margin * box.size)
    if box.left < m or box.top < m or box.right > width - m or box.bottom > height - m:
        return False
    return bool((points >= 0.0).all() and (points[:, 0] < width).all() and (points[:, 1] < height).all())


class LivenessChecker:
    """Feed it the tracked face of every frame; it says pending, passed or failed.

    ``observe(landmarks, box)`` takes face_recognition's 68-point dict (from
    ``FaceEngine.landmarks_of``) or a (68, 2) array, and the face's box in the
    same pixels; pass ``None`` for both when the frame has no face. Give
    ``eye_landmarks`` (from :func:`upscaled_landmarks`) for faces smaller than
    ``eye_upscale_px`` so that their blinks count. Call
    :meth:`reset` when a visit ends (the decision policy's visit), so the next
    person starts a fresh check. The result is sticky: once passed or failed it
    stays so until reset.
    """

    def __init__(self, config: LivenessConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next usable face starts a new check and a new time limit."""
        self._started_at: float | None = None
        self._ev = _Evidence(self.config.smooth_frames)
        self._final: LivenessResult | None = None
        self._face_changes = 0

    @property
    def face_changes(self) -> int:
        """How often the evidence restarted because the tracked face jumped (two faces, swapped photos)."""
        return self._face_changes

    def observe(
        self,
        landmarks: Mapping[str, Sequence[tuple[float, float]]] | np.ndarray | None,
        box: Box | None,
        *,
        frame_size: tuple[int, int] | None = None,
        eye_landmarks: Mapping[str, Sequence[tuple[float, float]]] | np.ndarray | None = None,
    ) -> LivenessResult:
        """Take one frame's tracked face (or None, None) and return where the check stands.

        ``frame_size`` is (height, width) of the frame; give it, so that faces
        cut by the frame edge are not used (see ``edge_margin``).
        ``eye_landmarks``: the same face measured on an upscaled crop
        (:func:`upscaled_landmarks`); its eyes are used for blinks.
        """
        now = self._clock()
        cfg = self.config
        if cfg.mode == "off":
            return LivenessResult(LivenessState.PASSED, "liveness check off", 0, 0.0, 0, 0.0)
        if self._final is not None:
            return self._final
        points: np.ndarray | None = None
        if landmarks is not None and box is not None and box.size >= cfg.min_face_px:
            points = landmark_points(landmarks)
            if frame_size is not None and not self._inside(points, box, frame_size):
                points = None
        if points is not None and self._started_at is None:
            self._started_at = now
        elapsed = 0.0 if self._started_at is None else now - self._started_at
        if points is not None and box is not None and elapsed <= cfg.time_limit_s:
            self._take(points, box, None if eye_landmarks is None else landmark_points(eye_landmarks))
        if self._cue_met():
            self._final = self._result(LivenessState.PASSED, self._passed_reason(), elapsed)
            return self._final
        if self._started_at is not None and elapsed >= cfg.time_limit_s:
            self._final = self._result(LivenessState.FAILED, f"no {self._wanted()} within {cfg.time_limit_s:g} s", elapsed)
            return self._final
        return self._result(LivenessState.PENDING, f"waiting for a {self._wanted()}", elapsed)

    def _take(self, points: np.ndarray, box: Box, eye_points: np.ndarray | None) -> None:
        cfg = self.config
        last = self._ev.last_box
        if last is not None and self._jumped(last, box):
            self._face_changes += 1
            self._ev = _Evidence(cfg.smooth_frames)
        shape = face_shape(points)
        if shape is None:
            return
        ev = self._ev
        ev.last_box = box
        ev.frames += 1
        ev.add_nose(shape.nose)
        eyes = face_shape(eye_points) if eye_points is not None else None
        if eyes is not None:
            ev.add_eyes(eyes.left_eye, eyes.right_eye, cfg)  # measured finely: counts from min_face_px up
        elif eye_points is None and box.size >= cfg.blink_min_face_px:
            ev.add_eyes(shape.left_eye, shape.right_eye, cfg)

    def _inside(self, points: np.ndarray, box: Box, frame_size: tuple[int, int]) -> bool:
        return inside_frame(points, box, frame_size, self.config.edge_margin)

    def _jumped(self, last: Box, box: Box) -> bool:
        (x0, y0), (x1, y1) = last.center, box.center
        size = max(last.size, 1)
        moved = math.hypot(x1 - x0, y1 - y0) / size
        resized = abs(box.size - last.size) / size
        return moved > self.config.max_jump or resized > self.config.max_jump

    def _cue_met(self) -> bool:
        blink = self._ev.blinks > 0
        motion = self._ev.motion >= self.config.motion_threshold
        mode = self.config.mode
        if mode == "blink":
            return blink
        if mode == "motion":
            return motion
        if mode == "both":
            return blink and motion
        return blink or motion

    def _wanted(self) -> str:
        """What the mode asks for, as in "no blink or head movement within 4 s"."""
        wanted = {"blink": "blink", "motion": "head movement", "both": "blink and head movement"}
        return wanted.get(self.config.mode, "blink or head movement")

    def _passed_reason(self) -> str:
        seen = []
        if self._ev.blinks:
            seen.append("blink")
        if self._ev.motion >= self.config.motion_threshold:
            seen.append("head movement")
        return " and ".join(seen) + " seen"

    def _result(self, state: LivenessState, reason: str, elapsed: float) -> LivenessResult:
        ev = self._ev
        return LivenessResult(state, reason, ev.blinks, round(ev.motion, 4), ev.frames, elapsed)
