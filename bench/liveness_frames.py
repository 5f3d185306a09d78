"""Simulated attacks for the liveness study: a photo held to the camera, as a sequence of frames.

Two ways of holding it (see bench/liveness_study.py for how they are used):

- ``jitter``: every frame independently shifted (±4 %), scaled (±5 %),
  rotated (±3°), brightened/darkened (±20 %, ±15 levels) and re-compressed
  as JPEG (quality 60-90): a shaking hand, the worst case for landmark noise;
- ``sweep``: the photo moved smoothly from one random pose to another
  (±8°, ±15 % scale, ±8 % shift): a steady hand bringing a photo closer.

Also used by tests/edge/test_liveness.py, so the tests and the study attack alike.
"""

from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np

from core.faces import Box
from core.imaging import encode_jpeg, fit_within, load_image, resize

KINDS = ("jitter", "sweep")


def affine(image: np.ndarray, angle_deg: float, scale: float, dx: float, dy: float, fill: int = 128) -> np.ndarray:
    """Rotate/scale an RGB image about its centre, then shift it (bilinear; outside filled grey).

    LOCAL STAND-IN for a proposed ``core.imaging.affine`` (cv2.warpAffine),
    written with numpy here because only core/imaging.py may import cv2/PIL.
    """
    h, w = image.shape[:2]
    cx, cy = w / 2.0, h / 2.0
    th = np.deg2rad(angle_deg)
    c, s = np.cos(th) * scale, np.sin(th) * scale
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    X, Y = xx - cx - dx, yy - cy - dy
    det = c * c + s * s
    sx, sy = (c * X + s * Y) / det + cx, (-s * X + c * Y) / det + cy  # inverse map: output pixel -> source
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    valid = (x0 >= 0) & (y0 >= 0) & (x0 < w - 1) & (y0 < h - 1)
    x0, y0 = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    im = image.astype(np.float32)
    out = (im[y0, x0] * (1 - fx) * (1 - fy) + im[y0, x0 + 1] * fx * (1 - fy)
           + im[y0 + 1, x0] * (1 - fx) * fy + im[y0 + 1, x0 + 1] * fx * fy)
    out[~valid] = fill
    return np.clip(out, 0, 255).astype(np.uint8)


def held_photo_frames(photo: np.ndarray, n: int, rng: np.random.Generator, kind: str = "jitter") -> Iterator[np.ndarray]:
    """n frames of a photo held in front of the camera (see the module docstring for the two kinds)."""
    h, w = photo.shape[:2]
    if kind == "sweep":
        a, sc = rng.uniform(-8, 8, 2), rng.uniform(0.85, 1.15, 2)
        x, y = rng.uniform(-0.08, 0.08, 2) * w, rng.uniform(-0.08, 0.08, 2) * h
        g = rng.uniform(0.85, 1.15, 2)
    for i in range(n):
        if kind == "sweep":
            f = i / max(n - 1, 1)
            lerp = lambda v: float(v[0] + (v[1] - v[0]) * f)  # noqa: E731
            frame = affine(photo, lerp(a), lerp(sc), lerp(x), lerp(y))
            frame = np.clip(frame.astype(np.float32) * lerp(g), 0, 255).astype(np.uint8)
            quality = 85
        elif kind == "jitter":
            frame = affine(photo, rng.uniform(-3, 3), rng.uniform(0.95, 1.05),
                           rng.uniform(-0.04, 0.04) * w, rng.uniform(-0.04, 0.04) * h)
            frame = np.clip(frame.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15), 0, 255)
            frame = frame.astype(np.uint8)
            quality = int(rng.integers(60, 91))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        yield load_image(encode_jpeg(frame, quality))


def present(photo: np.ndarray, face: Box, face_px: int | None) -> np.ndarray:
    """The photo as held: fitted within 640 px, or scaled so that its face is face_px."""
    if face_px is None:
        return fit_within(photo, 640)[0]
    return resize(photo, face_px / face.size)


def seed_of(*parts: object) -> int:
    """A stable seed from names (the same attack video on every run and machine)."""
    return zlib.crc32("|".join(map(str, parts)).encode())
