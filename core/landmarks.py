"""Face geometry for the liveness check: the 68 landmarks, measured so that moving a flat picture changes nothing.

:func:`face_shape` writes the landmarks in a frame of reference fixed to the
face (the two eye centres and the mouth corners' midpoint) and measures the
nose position and each eye's openness there; these are invariant under any
affine map of the image (a photo shifted, scaled, rotated or tilted).
:func:`upscaled_landmarks` measures a small face on an upscaled crop, for
sub-pixel eyelids. See edge/liveness.py for how the checker uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from core.faces import Box, FaceEngine

# face_recognition's 68-point dict: feature name and point count, in dlib's point order.
_FEATURES: tuple[tuple[str, int], ...] = (
    ("chin", 17), ("left_eyebrow", 5), ("right_eyebrow", 5), ("nose_bridge", 4), ("nose_tip", 5),
    ("left_eye", 6), ("right_eye", 6),
)
_NOSE = slice(27, 36)
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_MOUTH_CORNERS = (48, 54)


def landmark_points(landmarks: Mapping[str, Sequence[tuple[float, float]]] | np.ndarray) -> np.ndarray:
    """The 68 points in dlib's order as a (68, 2) float array, from face_recognition's dict or an array.

    face_recognition splits the mouth into ``top_lip`` and ``bottom_lip`` of 12
    points each, sharing the corners; this undoes that.
    """
    if isinstance(landmarks, np.ndarray):
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.shape != (68, 2):
            raise ValueError(f"expected 68 landmark points, got an array of shape {pts.shape}")
        return pts
    try:
        out: list[tuple[float, float]] = []
        for name, count in _FEATURES:
            part = list(landmarks[name])
            if len(part) != count:
                raise ValueError(f"landmark feature {name!r} has {len(part)} points, expected {count}")
            out += part
        top, bottom = list(landmarks["top_lip"]), list(landmarks["bottom_lip"])
    except KeyError as err:
        raise ValueError(f"landmarks lack {err}: the 68-point model (FaceEngine.landmarks_of) is needed") from err
    if len(top) != 12 or len(bottom) != 12:
        raise ValueError("top_lip and bottom_lip must have 12 points each (68-point model)")
    out += top[0:7] + bottom[1:6] + [top[11], top[10], top[9], top[8], top[7]] + [bottom[10], bottom[9], bottom[8]]
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FaceShape:
    """The affine-invariant measurements of one frame's landmarks."""

    nose: tuple[float, float]
    """Mean nose position in the eyes/mouth frame (x along the eyes, y towards the mouth)."""
    left_eye: float
    right_eye: float
    """Eye openness (aspect ratio measured in the eyes/mouth frame)."""


def face_frame(points: np.ndarray) -> np.ndarray | None:
    """The (68, 2) landmarks in the face's own frame of reference: left eye centre (-0.5, 0), right eye
    centre (0.5, 0), mouth corners' midpoint (0, 1). Unchanged by any affine map of the image (a photo
    shifted, scaled, rotated or tilted). None when the landmarks are degenerate (eyes on top of each other)."""
    left, right = points[_LEFT_EYE].mean(axis=0), points[_RIGHT_EYE].mean(axis=0)
    mid = (left + right) / 2.0
    mouth = (points[_MOUTH_CORNERS[0]] + points[_MOUTH_CORNERS[1]]) / 2.0
    basis = np.column_stack([right - left, mouth - mid])
    det = float(np.linalg.det(basis))
    scale = float(np.linalg.norm(right - left)) * float(np.linalg.norm(mouth - mid))
    if not math.isfinite(det) or scale <= 0.0 or abs(det) < 0.1 * scale:
        return None  # eyes and mouth nearly on one line: not a face seen from the front
    return np.linalg.solve(basis, (points - mid).T).T


def face_shape(points: np.ndarray) -> FaceShape | None:
    """Measure one frame; None when the landmarks are degenerate (eyes on top of each other, etc.)."""
    canon = face_frame(points)
    if canon is None:
        return None
    nose = canon[_NOSE].mean(axis=0)
    return FaceShape(
        nose=(float(nose[0]), float(nose[1])),
        left_eye=_eye_openness(canon[_LEFT_EYE]),
        right_eye=_eye_openness(canon[_RIGHT_EYE]),
    )


def _eye_openness(eye: np.ndarray) -> float:
    """Soukupova & Cech's eye aspect ratio: mean lid distance over eye width."""
    width = float(np.linalg.norm(eye[0] - eye[3]))
    if width <= 0.0:
        return 0.0
    return float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / (2.0 * width)


def upscaled_landmarks(engine: FaceEngine, rgb: np.ndarray, box: Box, target_px: int) -> np.ndarray:
    """The 68 points of the face in ``box``, measured on a crop upscaled so that the face is ``target_px``.

    Returned as a (68, 2) float array in the frame's pixels: positions finer
    than the whole pixels dlib gives on the frame itself. A face already at
    least ``target_px`` is measured on the frame.
    """
    if box.size >= target_px:
        return landmark_points(engine.landmarks_of(rgb, [box])[0])
    from core.imaging import resize  # the only cv2 user; this module stays importable without it

    h, w = rgb.shape[:2]
    m = box.size // 2 + 2
    top, left = max(0, box.top - m), max(0, box.left - m)
    bottom, right = min(h, box.bottom + m), min(w, box.right + m)
    crop = rgb[top:bottom, left:right]
    big = resize(crop, target_px / box.size)
    fy, fx = big.shape[0] / crop.shape[0], big.shape[1] / crop.shape[1]

    def up(v: int, origin: int, f: float) -> int:  # pixel centres map as (v + 0.5) * f - 0.5
        return int(round((v - origin + 0.5) * f - 0.5))

    inner = Box(up(box.top, top, fy), up(box.right, left, fx), up(box.bottom, top, fy), up(box.left, left, fx))
    pts = landmark_points(engine.landmarks_of(big, [inner])[0])
    pts[:, 0] = (pts[:, 0] + 0.5) / fx - 0.5 + left
    pts[:, 1] = (pts[:, 1] + 0.5) / fy - 0.5 + top
    return pts
