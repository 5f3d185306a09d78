"""The slow half of the liveness study: faces and 68-point landmarks of every clip frame and attack frame, cached.

Detection is full-resolution HOG with one upsampling step (half resolution
for the 1080p clip): the sample clips' faces are 40-90 px, smaller than a
door camera's, and the agent's default (half resolution, no upsampling) would
not find most of them.

Each face is stored with two sets of landmarks: the 68-point model run on
the frame as it is, and run on a crop around the face upscaled so that the
face is ``FINE_PX`` pixels (edge.liveness.upscaled_landmarks; dlib returns
whole pixels, and on a 75-px face an open eye is 3-4 pixels high). The study
picks from them with :func:`variant`.

The cache (``liveness_landmarks.pkl``) is keyed by CACHE_VERSION, the number
of attack frames and the list of photos, so re-running after a change of
LivenessConfig takes seconds.
"""

from __future__ import annotations

import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.liveness_frames import KINDS, held_photo_frames, present, seed_of
from core.faces import Box, FaceEngine
from core.imaging import Capture, fit_within, list_images, load_image
from core.landmarks import landmark_points, upscaled_landmarks

CACHE_VERSION = "2"
FINE_PX = 160
"""Faces smaller than this are upscaled to it for the second set (LivenessConfig.eye_upscale_px must match)."""
CLIPS = (
    "face_recognition/short_hamilton_clip.mp4",
    "intel_sample_videos/face-demographics-walking.gif",
    "intel_sample_videos/face-demographics-walking-and-pause.gif",
    "intel_sample_videos/head-pose-face-detection-female.gif",
    "intel_sample_videos/head-pose-face-detection-male.gif",
    "facenet_pytorch/video.mp4",
)
FACE_SIZES: tuple[int | None, ...] = (None, 120, 70)
VARIANTS = ("eyes", "frame", "crop")
"""eyes: the frame's landmarks, and the crop's for the eyes of faces below FINE_PX (what the agent does);
frame: the frame's only (the agent before eye crops); crop: the crop's for everything (measured, not used)."""
CachedFace = tuple[Box, np.ndarray, np.ndarray]  # the box, its (68, 2) landmarks on the frame and on the crop
Face = tuple[Box, np.ndarray, "np.ndarray | None"] | None
"""What the checker gets for one frame: the box, the landmarks, the eye landmarks (or None); None: no face."""

_engine: FaceEngine | None = None


def _eng() -> FaceEngine:
    global _engine
    if _engine is None:
        _engine = FaceEngine().load()
    return _engine


def faces_of(rgb: np.ndarray, largest_only: bool) -> list[CachedFace]:
    scale = 0.5 if rgb.shape[1] > 1000 else 1.0
    boxes = _eng().detect(rgb, scale=scale, upsample=1)
    if largest_only and boxes:
        boxes = [max(boxes, key=lambda b: b.size)]
    raw = _eng().landmarks_of(rgb, boxes)
    return [(b, landmark_points(lm), upscaled_landmarks(_eng(), rgb, b, FINE_PX)) for b, lm in zip(boxes, raw)]


def attack_job(args: tuple[str, str, int | None, int]) -> tuple[tuple[str, str, int | None], tuple[int, int], list]:
    path, kind, face_px, n = args
    photo = load_image(path)
    found = faces_of(fit_within(photo, 640)[0], largest_only=True)
    if not found:
        return (path, kind, face_px), (0, 0), []
    box = found[0][0].scaled(1.0 / fit_within(photo, 640)[1])
    shown = present(photo, box, face_px)
    rng = np.random.default_rng(seed_of(Path(path).name, kind, face_px))
    seq: list[CachedFace | None] = []
    for frame in held_photo_frames(shown, n, rng, kind):
        got = faces_of(frame, largest_only=True)
        seq.append(got[0] if got else None)
    return (path, kind, face_px), shown.shape[:2], seq


def clip_job(path: str) -> tuple[str, float, tuple[int, int], list[list[CachedFace]]]:
    cap = Capture(path)
    fps = cap.fps or 25.0
    frames: list[list[CachedFace]] = []
    shape = (0, 0)
    while (rgb := cap.read()) is not None:
        shape = rgb.shape[:2]
        frames.append(faces_of(rgb, largest_only=False))
    cap.release()
    return path, fps, shape, frames


def attack_photos(faces: Path) -> list[Path]:
    photos = [p for sub in ("spoof_print", "spoof_screen", "live") for p in list_images(faces / "liveness" / sub)]
    ex = faces / "face_recognition_examples"
    photos += [p for d in sorted(ex.iterdir()) if d.is_dir() and not d.name.startswith("_") for p in list_images(d)]
    rows = (faces / "lfw_dev_protocol_1toN.csv").read_text().splitlines()[1:]
    photos += [faces / r.split(",")[2] for r in rows if r.startswith("enroll,")]
    return photos


def landmarks(faces: Path, out: Path, jobs: int, n_frames: int, quick: bool) -> dict:
    """Every clip's and attack's faces (computed, or read from the cache)."""
    photos = attack_photos(faces)
    if quick:
        photos = photos[:7] + photos[7::8]
    key = (CACHE_VERSION, FINE_PX, n_frames, tuple(str(p.relative_to(faces)) for p in photos))
    cache = out / "liveness_landmarks.pkl"
    if cache.is_file():
        data = pickle.loads(cache.read_bytes())
        if data.get("key") == key:
            return data
    started = time.monotonic()
    tasks = [(str(p), k, s, n_frames) for p in photos for k in KINDS for s in FACE_SIZES]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        clips = list(pool.map(clip_job, [str(faces / "videos" / c) for c in CLIPS]))
        attacks = list(pool.map(attack_job, tasks, chunksize=2))
    data = {"key": key, "clips": clips, "attacks": attacks, "faces": str(faces)}
    out.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(data))
    print(f"landmarks computed in {time.monotonic() - started:.0f} s, cached in {cache}", file=sys.stderr)
    return data


def variant(data: dict, which: str) -> dict:
    """The cached data with each face as the checker takes it (see VARIANTS): (box, landmarks, eye landmarks)."""
    if which not in VARIANTS:
        raise ValueError(f"unknown landmark variant {which!r}; one of {VARIANTS}")

    def pick(face: CachedFace | None) -> Face:
        if face is None:
            return None
        box, on_frame, on_crop = face
        if which == "frame":
            return box, on_frame, None
        if which == "crop":
            return box, on_crop, None
        return box, on_frame, on_crop if box.size < FINE_PX else None

    clips = [(path, fps, shape, [[pick(f) for f in fs] for fs in frames]) for path, fps, shape, frames in data["clips"]]
    attacks = [(key, shape, [pick(f) for f in seq]) for key, shape, seq in data["attacks"]]
    return {**data, "clips": clips, "attacks": attacks, "variant": which}
