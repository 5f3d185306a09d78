"""Is this photo good enough to enroll a worker from? Plain measurements, one code per problem.

:func:`assess` looks at one RGB photo (or camera snapshot) and reports every
problem it finds, each as a :class:`Problem` with a stable ``code`` and the
measured values; the sentences staff read are not here but in
``enroll/messages.py`` (translated through core.i18n). The checks, in order:

``no_face`` / ``several_faces``
    The worker's face is chosen as core.templates chooses it (a detection
    inside another one, or a smaller face cut by the photo's edge, is not a
    second person), so a photo that passes here also gives a template.
``too_small``
    The face box's shorter side, in the photo as enrollment sees it (shrunk
    to ``core.templates.MAX_SIDE``), is below ``min_face_px``.
``too_dark`` / ``too_bright``
    Mean grey level of the face, and the share of its pixels clipped to
    black or white (a face half in shadow or burnt out by a lamp).
``blurred``
    Variance of the Laplacian of the face, measured on the face resized to
    ``SHARPNESS_SIDE`` pixels, so that a large face is not called blurred for
    being large. It is checked only on a well exposed face: darkness lowers
    the variance too, and staff should fix the light first.
``not_frontal``
    The nose's sideways offset from the middle of the eyes, in eye-to-eye
    distances, measured in a frame built from the eyes and the mouth corners
    (edge.liveness.face_shape; rolling the head in the picture does not move
    it). 0 is a frontal face; about 0.2 is a head turned by roughly 20-25°.
``eyes_closed``
    The mean eye openness of both eyes (eye aspect ratio in that same frame).

Landmarks come from dlib's 68-point model (``FaceEngine.landmarks_of``),
whose training data (iBUG 300-W) excludes commercial use: see
docs/enrollment.md. The thresholds' defaults were chosen by measurement on
the shared photos (``python bench/enroll_quality.py``, figures in
docs/enrollment.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.faces import Box, FaceEngine, MultipleFaces
from core.imaging import fit_within, flip_horizontal, resize, sharpness, to_gray
from core.templates import MAX_SIDE, UPSAMPLE, enrollment_face
from core.landmarks import face_shape, landmark_points

log = logging.getLogger(__name__)

CODES: tuple[str, ...] = (
    "no_face", "several_faces", "too_small", "too_dark", "too_bright", "blurred", "not_frontal", "eyes_closed",
)
"""Every problem code, in the order the checks run (enroll/messages.py has a sentence for each)."""

SHARPNESS_SIDE = 64
"""The face is resized to this many pixels before its Laplacian is measured: small enough that the
softness of a good but upscaled photo does not count, large enough that real blur does."""

DARK_LEVEL, BRIGHT_LEVEL = 8, 247
"""Grey levels counted as clipped to black / to white."""


class QualitySettings(BaseModel):
    """The thresholds of the enrollment quality checks (defaults measured: docs/enrollment.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_face_px: int = Field(
        default=60, ge=20, le=1000,
        description="Smallest face accepted: the shorter side of the face box, in pixels, in the photo shrunk to "
        "1600 px. Measured: the smallest sample face is 62 px; at about 52 px the door's own accuracy degrades.",
    )
    min_brightness: float = Field(
        default=60.0, ge=0.0, le=255.0,
        description="Smallest mean grey level (0-255) of the face accepted. Measured: the darkest sample face is 69.",
    )
    max_brightness: float = Field(
        default=190.0, ge=0.0, le=255.0,
        description="Largest mean grey level (0-255) of the face accepted. Measured: the brightest sample face is 173.",
    )
    max_clipped: float = Field(
        default=0.25, ge=0.0, le=1.0,
        description="Largest share of the face's pixels clipped to black (<= 8) or to white (>= 247) accepted.",
    )
    min_sharpness: float = Field(
        default=80.0, ge=0.0, le=10_000.0,
        description="Smallest variance of the Laplacian of the face (resized to 64 px) accepted; below it the photo "
        "is called blurred. Measured: the softest sample face scores 92; a blur of 3% of the face size, which moves "
        "its encoding by 0.3-0.6, scores at most 67.",
    )
    max_yaw: float = Field(
        default=0.35, ge=0.0, le=1.0,
        description="Largest sideways offset of the nose from the middle of the eyes, in eye-to-eye distances, "
        "accepted as facing the camera. Measured: sample photos reach 0.33; a head turned by about 45 degrees 0.41.",
    )
    min_eye_openness: float = Field(
        default=0.14, ge=0.0, le=1.0,
        description="Smallest mean eye openness (eye aspect ratio in the eyes/mouth frame) accepted as eyes open. "
        "Measured: open eyes in the samples score at least 0.144; eyes shut, downcast or squeezed by a laugh "
        "0.08-0.13.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "QualitySettings":
        if self.max_brightness <= self.min_brightness:
            raise ValueError("max_brightness must be larger than min_brightness")
        return self


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed check: a code from CODES and the values measured (for the message and the logs)."""

    code: str
    values: dict[str, float | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QualityReport:
    """What :func:`assess` found. Measurements are None when the check could not run (no single face)."""

    problems: tuple[Problem, ...]
    faces: int
    box: Box | None = None
    face_px: int = 0
    sharpness: float | None = None
    brightness: float | None = None
    clipped: float | None = None
    yaw: float | None = None
    ear: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]


def prepare(rgb: np.ndarray) -> np.ndarray:
    """The photo as enrollment uses it: shrunk to core.templates.MAX_SIDE (assess expects this)."""
    return fit_within(rgb, MAX_SIDE)[0]


def assess(engine: FaceEngine, rgb: np.ndarray, settings: QualitySettings | None = None) -> QualityReport:
    """Check one enrollment photo (RGB uint8, already shrunk with :func:`prepare`); report every problem."""
    cfg = settings or QualitySettings()
    h, w = rgb.shape[:2]
    boxes = find_faces(engine, rgb)
    if not boxes:
        return QualityReport((Problem("no_face"),), faces=0)
    try:
        box = enrollment_face(boxes, h, w)
    except MultipleFaces as err:
        return QualityReport((Problem("several_faces", {"faces": err.count}),), faces=err.count)
    box = box.clipped(h, w)
    problems: list[Problem] = []
    if box.size < cfg.min_face_px:
        problems.append(Problem("too_small", {"face_px": box.size, "min_px": cfg.min_face_px}))
    crop = to_gray(np.ascontiguousarray(rgb[box.top : box.bottom, box.left : box.right]))
    brightness = float(crop.mean())
    dark, bright = float((crop <= DARK_LEVEL).mean()), float((crop >= BRIGHT_LEVEL).mean())
    sharp = face_sharpness(crop)
    if brightness < cfg.min_brightness or dark > cfg.max_clipped:
        problems.append(Problem("too_dark", {"brightness": round(brightness, 1), "clipped": round(dark, 3)}))
    elif brightness > cfg.max_brightness or bright > cfg.max_clipped:
        problems.append(Problem("too_bright", {"brightness": round(brightness, 1), "clipped": round(bright, 3)}))
    elif sharp < cfg.min_sharpness:
        problems.append(Problem("blurred", {"sharpness": round(sharp, 1), "min": cfg.min_sharpness}))
    yaw = ear = None
    shape = face_shape(landmark_points(engine.landmarks_of(rgb, [box])[0]))
    if shape is None:
        problems.append(Problem("not_frontal", {"yaw": 1.0, "max": cfg.max_yaw}))
    else:
        yaw, ear = shape.nose[0], (shape.left_eye + shape.right_eye) / 2.0
        if abs(yaw) > cfg.max_yaw:
            problems.append(Problem("not_frontal", {"yaw": round(yaw, 3), "max": cfg.max_yaw}))
        elif ear < cfg.min_eye_openness:
            # A turned head makes the far eye look narrow: eyes are judged only on a frontal face.
            problems.append(Problem("eyes_closed", {"ear": round(ear, 3), "min": cfg.min_eye_openness}))
    report = QualityReport(
        tuple(problems), faces=1, box=box, face_px=box.size, sharpness=sharp, brightness=brightness,
        clipped=max(dark, bright), yaw=yaw, ear=ear,
    )
    log.debug("quality %s: face %d px, sharpness %.3f, brightness %.1f, yaw %s, ear %s",
              report.codes or "ok", box.size, sharp, brightness, yaw, ear)
    return report


def find_faces(engine: FaceEngine, rgb: np.ndarray) -> list[Box]:
    """The faces of a photo as enrollment detects them (HOG, one upsampling step).

    HOG's image pyramid occasionally misses a plain frontal face at one
    setting and finds it at the next (an LFW enroll photo is found without
    upsampling and in its mirror image, not with one step), so when the photo
    shows no face, those two are tried as well before saying ``no_face``;
    core.templates rescues such a photo through its mirrored copy too.
    """
    boxes = engine.detect(rgb, upsample=UPSAMPLE)
    if not boxes:
        boxes = engine.detect(rgb, upsample=0)
    if not boxes:
        w = rgb.shape[1]
        mirrored = engine.detect(flip_horizontal(rgb), upsample=UPSAMPLE)
        boxes = [Box(b.top, w - b.left, b.bottom, w - b.right) for b in mirrored]
    return boxes


def face_sharpness(gray_face: np.ndarray) -> float:
    """Variance of the Laplacian of a grey face crop shrunk (or enlarged) to SHARPNESS_SIDE pixels."""
    side = max(gray_face.shape[:2])
    if side == 0:
        return 0.0
    return sharpness(resize(gray_face, SHARPNESS_SIDE / side))
