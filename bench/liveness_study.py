"""Does the liveness check pass real people and reject photos held to the camera? (issue 4, item 2)

    python bench/liveness_study.py [--faces DIR] [--out bench/out] [--jobs N] [--fps 8] [--quick]
                                   [--landmarks eyes|frame|crop]

Genuine: every face track in the sample clips (``videos/``, read with
core.imaging.Capture, GIFs included) is fed to edge.liveness.LivenessChecker
at the clip's own frame rate and at a third of it (a slow Raspberry Pi),
one checker per person, timed by the frame timestamps.

Attacks: every photo in ``liveness/`` (print and screen spoofs, and the live
captures, which held up as a still are photos too), every one-person photo
of ``face_recognition_examples`` and every ``lfw_dev`` enroll photo, turned
into a "photo held to the camera" video of ``time_limit_s`` at ``--fps``, in
the two ways of bench/liveness_frames.py (``jitter``: a shaking hand,
``sweep``: a steady one), each at the photo's own size (fitted within
640 px), with the face scaled to 120 px and to 70 px (small faces give the
noisiest landmarks). None may pass.

Faces and landmarks come from bench/liveness_landmarks.py (slow, cached in
``--out/liveness_landmarks.pkl``); ``--landmarks`` picks the landmarks the
checker gets (bench.liveness_landmarks.VARIANTS): ``eyes`` (the default,
what the agent does: the eyes of faces smaller than ``eye_upscale_px``
measured on an upscaled crop), ``frame`` (every landmark on the frame as it
is: the agent before eye crops) or ``crop`` (every landmark on the crops).
Prints tables, the margins of bench/liveness_margins.py and, last, one JSON
line with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.liveness_landmarks import FINE_PX, VARIANTS, Face, landmarks, variant  # noqa: E402
from edge.liveness import LivenessChecker, LivenessConfig, LivenessResult  # noqa: E402


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
        if face is None:
            result = checker.observe(None, None, frame_size=frame_size)
        else:
            result = checker.observe(face[1], face[0], frame_size=frame_size, eye_landmarks=face[2])
        if result.state != "pending":
            return result
    if end is not None:
        clock.t = end
        result = checker.observe(None, None)
    return result


def tracks(frames: list[list[Face]], max_gap: int = 3) -> list[dict[int, Face]]:
    """Link each face to the nearest face of a recent frame (centre within half a face, size within 40 %)."""
    found: list[dict[int, Face]] = []
    for i, faces in enumerate(frames):
        taken: set[int] = set()
        for face in faces:
            assert face is not None
            box = face[0]
            best: tuple[float, int] | None = None
            for k, tr in enumerate(found):
                j = max(tr)
                if k in taken or i - j > max_gap or j == i:
                    continue
                prev = tr[j][0]  # type: ignore[index]
                d = float(np.hypot(box.center[0] - prev.center[0], box.center[1] - prev.center[1]))
                if d < 0.5 * prev.size and 0.7 < box.size / max(prev.size, 1) < 1.4 and (best is None or d < best[0]):
                    best = (d, k)
            if best is None:
                found.append({i: face})
                taken.add(len(found) - 1)
            else:
                found[best[1]][i] = face
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
            px = int(statistics.median(f[0].size for f in tr.values() if f is not None))
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    default_faces = Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    ap.add_argument("--faces", type=Path, default=default_faces, help="shared face data (WAYSTATION_FACES_DIR)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="where the landmark cache goes")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes running the dlib models")
    ap.add_argument("--fps", type=float, default=8.0, help="frame rate of the simulated attack videos")
    ap.add_argument("--quick", action="store_true", help="a fifth of the photos (for a first look)")
    ap.add_argument("--landmarks", choices=VARIANTS, default="eyes",
                    help="eyes: eyes of small faces measured on upscaled crops (the agent); frame: on the frame only; "
                    "crop: every landmark on the crops")
    args = ap.parse_args(argv)
    if not (args.faces / "MANIFEST.md").is_file():
        print(f"FileNotFoundError: no face data in {args.faces}; pass --faces or set WAYSTATION_FACES_DIR", file=sys.stderr)
        return 1
    config = LivenessConfig()
    if config.eye_upscale_px != FINE_PX:
        print(f"ValueError: eye_upscale_px is {config.eye_upscale_px}, the study's crops are {FINE_PX} px", file=sys.stderr)
        return 1
    # At least 5 s of video whatever the time limit, so that the cache survives a change of the limit.
    n_frames = int(np.ceil(max(5.0, config.time_limit_s) * args.fps))
    data = variant(landmarks(args.faces, args.out, max(1, args.jobs), n_frames, args.quick), args.landmarks)
    print(f"landmarks: {args.landmarks}")
    g_rows = genuine(config, data)
    a_rows = attacks(config, data, args.fps)
    print_genuine(g_rows, config)
    print_attacks(a_rows)
    from bench.liveness_margins import blink_needs, margins  # they use this module's evaluation

    print("\n".join(margins(config, data, args.fps)))
    needs = blink_needs(config, data, args.fps)
    print("\n".join(needs.lines()))
    full, slow = summary(g_rows, 1), summary(g_rows, 3)
    photos = {r.photo for r in a_rows}
    missing = sorted(set(data["key"][-1]) - photos)
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
        "attack_fps": args.fps, "photos_without_face": no_face, "landmarks": args.landmarks,
        "attack_lowest_blink_ratio": needs.attack_lowest,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
