"""Does the liveness check pass real people and reject photos held to the camera? (issue 4, item 2)

    python bench/liveness_study.py [--faces DIR] [--out bench/out] [--jobs N] [--fps 8] [--quick]

Genuine: every face track in the sample clips (``videos/``, read with
core.imaging.Capture, GIFs included) is fed to edge.liveness.LivenessChecker
at the clip's own frame rate and at a third of it (a slow Raspberry Pi),
one checker per person, timed by the frame timestamps.

Attacks: every photo in ``liveness/`` (print and screen spoofs, and the live
captures, which held up as a still are photos too), every one-person photo
of ``face_recognition_examples`` and every ``lfw_dev`` enroll photo, turned
into a "photo held to the camera" video of ``time_limit_s`` at ``--fps``:

- ``jitter``: every frame independently shifted (±4 %), scaled (±5 %),
  rotated (±3°), brightened/darkened (±20 %, ±15 levels) and re-compressed
  as JPEG (quality 60-90): a shaking hand, the worst case for landmark noise;
- ``sweep``: the photo moved smoothly from one random pose to another
  (±8°, ±15 % scale, ±8 % shift): a steady hand bringing a photo closer;

each at the photo's own size (fitted within 640 px), with the face scaled to
120 px and to 70 px (small faces give the noisiest landmarks). None may pass.

Landmarks are cached in ``--out/liveness_landmarks.pkl`` (keyed by the
settings), so re-running after a change of LivenessConfig takes seconds.
Prints tables and, last, one JSON line with the headline figures.

Detection here is full-resolution HOG with one upsampling step (half
resolution for the 1080p clip): the sample clips' faces are 40-90 px, smaller
than a door camera's, and the agent's default (half resolution, no upsampling)
would not find most of them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.faces import Box, FaceEngine  # noqa: E402
from core.imaging import Capture, encode_jpeg, fit_within, list_images, load_image, resize  # noqa: E402
from edge.liveness import LivenessChecker, LivenessConfig, LivenessResult, landmark_points  # noqa: E402

CACHE_VERSION = "1"
CLIPS = (
    "face_recognition/short_hamilton_clip.mp4",
    "intel_sample_videos/face-demographics-walking.gif",
    "intel_sample_videos/face-demographics-walking-and-pause.gif",
    "intel_sample_videos/head-pose-face-detection-female.gif",
    "intel_sample_videos/head-pose-face-detection-male.gif",
    "facenet_pytorch/video.mp4",
)
FACE_SIZES: tuple[int | None, ...] = (None, 120, 70)
KINDS = ("jitter", "sweep")
Face = tuple[Box, np.ndarray] | None  # one frame: the face's box and its (68, 2) landmarks, or no face


# --------------------------------------------------------------------------- simulated held photos


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
    return zlib.crc32("|".join(map(str, parts)).encode())


# --------------------------------------------------------------------------- landmarks (slow part, cached)

_engine: FaceEngine | None = None


def _eng() -> FaceEngine:
    global _engine
    if _engine is None:
        _engine = FaceEngine().load()
    return _engine


def faces_of(rgb: np.ndarray, largest_only: bool) -> list[tuple[Box, np.ndarray]]:
    scale = 0.5 if rgb.shape[1] > 1000 else 1.0
    boxes = _eng().detect(rgb, scale=scale, upsample=1)
    if largest_only and boxes:
        boxes = [max(boxes, key=lambda b: b.size)]
    return [(b, landmark_points(lm)) for b, lm in zip(boxes, _eng().landmarks_of(rgb, boxes))]


def attack_job(args: tuple[str, str, int | None, int]) -> tuple[tuple[str, str, int | None], tuple[int, int], list[Face]]:
    path, kind, face_px, n = args
    photo = load_image(path)
    found = faces_of(fit_within(photo, 640)[0], largest_only=True)
    if not found:
        return (path, kind, face_px), (0, 0), []
    box = found[0][0].scaled(1.0 / fit_within(photo, 640)[1])
    shown = present(photo, box, face_px)
    rng = np.random.default_rng(seed_of(Path(path).name, kind, face_px))
    seq: list[Face] = []
    for frame in held_photo_frames(shown, n, rng, kind):
        got = faces_of(frame, largest_only=True)
        seq.append(got[0] if got else None)
    return (path, kind, face_px), shown.shape[:2], seq


def clip_job(path: str) -> tuple[str, float, tuple[int, int], list[list[tuple[Box, np.ndarray]]]]:
    cap = Capture(path)
    fps = cap.fps or 25.0
    frames: list[list[tuple[Box, np.ndarray]]] = []
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
    photos = attack_photos(faces)
    if quick:
        photos = photos[:7] + photos[7::8]
    key = (CACHE_VERSION, n_frames, tuple(str(p.relative_to(faces)) for p in photos))
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


# --------------------------------------------------------------------------- evaluation (fast, pure)


class FrameClock:
    """The checker's clock, set to each frame's timestamp."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run(config: LivenessConfig, faces: Sequence[Face], times: Sequence[float], frame_size: tuple[int, int],
        end: float | None = None) -> LivenessResult:
    """Feed a sequence to a fresh checker; ``end`` adds a last, face-less frame at that time."""
    clock = FrameClock()
    checker = LivenessChecker(config, clock)
    result = checker.observe(None, None)
    for face, t in zip(faces, times):
        clock.t = t
        result = checker.observe(None if face is None else face[1], None if face is None else face[0],
                                 frame_size=frame_size)
        if result.state != "pending":
            return result
    if end is not None:
        clock.t = end
        result = checker.observe(None, None)
    return result


def tracks(frames: list[list[tuple[Box, np.ndarray]]], max_gap: int = 3) -> list[dict[int, tuple[Box, np.ndarray]]]:
    """Link each face to the nearest face of a recent frame (centre within half a face, size within 40 %)."""
    found: list[dict[int, tuple[Box, np.ndarray]]] = []
    for i, faces in enumerate(frames):
        taken: set[int] = set()
        for box, pts in faces:
            best: tuple[float, int] | None = None
            for k, tr in enumerate(found):
                j = max(tr)
                if k in taken or i - j > max_gap or j == i:
                    continue
                prev = tr[j][0]
                d = float(np.hypot(box.center[0] - prev.center[0], box.center[1] - prev.center[1]))
                if d < 0.5 * prev.size and 0.7 < box.size / max(prev.size, 1) < 1.4 and (best is None or d < best[0]):
                    best = (d, k)
            if best is None:
                found.append({i: (box, pts)})
                taken.add(len(found) - 1)
            else:
                found[best[1]][i] = (box, pts)
                taken.add(best[1])
    return found


@dataclass
class TrackResult:
    clip: str
    first: int
    seconds: float
    face_px: int
    stride: int
    result: LivenessResult

    @property
    def eligible(self) -> bool:
        """Passed, or in view for the whole time limit (shorter tracks cannot be judged)."""
        return self.result.passed or self.result.failed


def genuine(config: LivenessConfig, data: dict, strides: Sequence[int] = (1, 3), min_s: float = 1.0) -> list[TrackResult]:
    """One checker per face track of at least min_s; a clip without one gives a single empty row."""
    out: list[TrackResult] = []
    for path, fps, shape, frames in data["clips"]:
        before = len(out)
        for tr in tracks(frames):
            first, last = min(tr), max(tr)
            seconds = (last - first + 1) / fps
            if seconds < min_s:
                continue
            px = int(statistics.median(b.size for b, _ in tr.values()))
            for stride in strides:
                idx = range(first, last + 1, stride)
                res = run(config, [tr.get(i) for i in idx], [i / fps for i in idx], shape)
                out.append(TrackResult(Path(path).name, first, seconds, px, stride, res))
        if len(out) == before:
            out.append(TrackResult(Path(path).name, -1, 0.0, 0, 1, run(config, [], [], shape)))
    return out


@dataclass
class AttackResult:
    photo: str
    group: str
    kind: str
    face_px: int | None
    result: LivenessResult
    seen: int


def attacks(config: LivenessConfig, data: dict, fps: float) -> list[AttackResult]:
    faces_root = Path(data["faces"])
    out: list[AttackResult] = []
    for (path, kind, face_px), shape, seq in data["attacks"]:
        if not seq:
            continue  # no face in the photo at all: nothing for the door to check
        times = [i / fps for i in range(len(seq))]
        res = run(config, seq, times, shape, end=len(seq) / fps)
        rel = Path(path).relative_to(faces_root)
        group = "/".join(rel.parts[:2]) if rel.parts[0] == "liveness" else rel.parts[0]
        out.append(AttackResult(rel.as_posix(), group, kind, face_px, res, sum(f is not None for f in seq)))
    return out


def print_genuine(rows: list[TrackResult], config: LivenessConfig) -> None:
    print(f"\nGENUINE: face tracks of >= 1 s in the sample clips (time limit {config.time_limit_s:g} s, mode {config.mode})")
    print(f"{'clip':44} {'from':>4} {'in view':>7} {'face':>5} {'fps':>5}  {'result':24} {'blinks':>6} {'motion':>6}")
    for r in rows:
        res = r.result
        if r.first < 0:
            print(f"{r.clip:44}  no face found in >= 1 s of frames (HOG, one upsampling step)")
            continue
        verdict = {"passed": f"passed in {res.elapsed_s:.2f} s", "failed": "FAILED (time limit)"}.get(
            res.state, f"undecided: gone at {res.elapsed_s:.1f} s")
        print(f"{r.clip:44} {r.first:>4} {r.seconds:>6.1f}s {r.face_px:>4}px {'1/' + str(r.stride):>5}  {verdict:24} "
              f"{res.blinks:>6} {res.motion:>6.3f}")


def summary(rows: list[TrackResult], stride: int) -> dict:
    sel = [r for r in rows if r.stride == stride and r.eligible]
    passed = [r for r in sel if r.result.passed]
    times = [r.result.elapsed_s for r in passed]
    return {"passed": len(passed), "judged": len(sel),
            "median_s": round(statistics.median(times), 2) if times else None,
            "max_s": round(max(times), 2) if times else None}


def print_attacks(rows: list[AttackResult]) -> None:
    print("\nATTACKS: photos held to the camera (must all be rejected)")
    print(f"{'photos':32} {'kind':6} {'face':>6} {'videos':>6} {'passed':>6} {'max motion':>10} {'blinks':>6}")
    groups: dict[tuple[str, str, str], list[AttackResult]] = {}
    for r in rows:
        groups.setdefault((r.group, r.kind, "as is" if r.face_px is None else f"{r.face_px}px"), []).append(r)
    for (group, kind, size), rs in groups.items():
        print(f"{group:32} {kind:6} {size:>6} {len(rs):>6} {sum(r.result.passed for r in rs):>6} "
              f"{max(r.result.motion for r in rs):>10.3f} {sum(r.result.blinks for r in rs):>6}")
    for r in rows:
        if r.result.passed:
            print(f"  PASSED: {r.photo} {r.kind} {r.face_px}: {r.result.reason}")


def margins(config: LivenessConfig, data: dict, fps: float) -> list[str]:
    """How close the attacks come: each cue alone, over a range of its threshold."""
    lines = ["\nMARGINS: one cue alone, threshold swept (attacks passed / genuine tracks passed of judged, full fps)"]
    for t in (0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15):
        cfg = replace_config(config, mode="motion", motion_threshold=t)
        a = attacks(cfg, data, fps)
        g = summary(genuine(cfg, data, strides=(1,)), 1)
        lines.append(f"  motion_threshold {t:.2f}: attacks {sum(r.result.passed for r in a):>3}/{len(a)}   "
                     f"genuine {g['passed']}/{g['judged']}")
    for px in (60, 90):
        for ratio in (0.5, 0.55, 0.6, 0.65, 0.7):
            cfg = replace_config(config, mode="blink", blink_closed_ratio=ratio, blink_min_face_px=px)
            a = attacks(cfg, data, fps)
            g = summary(genuine(cfg, data, strides=(1,)), 1)
            lines.append(f"  blink_closed_ratio {ratio:.2f}, faces >= {px} px: attacks {sum(r.result.passed for r in a):>3}/"
                         f"{len(a)}   genuine {g['passed']}/{g['judged']}")
    return lines


def replace_config(config: LivenessConfig, **changes: object) -> LivenessConfig:
    return LivenessConfig(**{**config.model_dump(), **changes})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    default_faces = Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    ap.add_argument("--faces", type=Path, default=default_faces, help="shared face data (WAYSTATION_FACES_DIR)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="where the landmark cache goes")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes running the dlib models")
    ap.add_argument("--fps", type=float, default=8.0, help="frame rate of the simulated attack videos")
    ap.add_argument("--quick", action="store_true", help="a fifth of the photos (for a first look)")
    args = ap.parse_args(argv)
    if not (args.faces / "MANIFEST.md").is_file():
        print(f"FileNotFoundError: no face data in {args.faces}; pass --faces or set WAYSTATION_FACES_DIR", file=sys.stderr)
        return 1
    config = LivenessConfig()
    # At least 5 s of video whatever the time limit, so that the cache survives a change of the limit.
    n_frames = int(np.ceil(max(5.0, config.time_limit_s) * args.fps))
    data = landmarks(args.faces, args.out, max(1, args.jobs), n_frames, args.quick)
    g_rows = genuine(config, data)
    a_rows = attacks(config, data, args.fps)
    print_genuine(g_rows, config)
    print_attacks(a_rows)
    print("\n".join(margins(config, data, args.fps)))
    full, slow = summary(g_rows, 1), summary(g_rows, 3)
    photos = {r.photo for r in a_rows}
    missing = sorted(set(data["key"][2]) - photos)
    no_face = len(missing)
    print(f"\ngenuine (clip fps): {full['passed']}/{full['judged']} judged tracks passed, median {full['median_s']} s; "
          f"at a third of the fps: {slow['passed']}/{slow['judged']}")
    print(f"attacks: {sum(r.result.passed for r in a_rows)}/{len(a_rows)} videos passed, from {len(photos)} photos "
          f"(skipped, no face found: {', '.join(missing) or 'none'})")
    print(json.dumps({
        "config": config.model_dump(),
        "genuine": full, "genuine_third_fps": slow,
        "attack_videos": len(a_rows), "attack_photos": len(photos), "attacks_passed": sum(r.result.passed for r in a_rows),
        "attack_max_motion": max((r.result.motion for r in a_rows), default=0.0),
        "attack_fps": args.fps, "photos_without_face": no_face,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
