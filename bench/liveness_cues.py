"""Cues beyond the nose and the eyes: could a change of expression tell a still person from a photo? (issue 4)

    python bench/liveness_cues.py [--faces DIR] [--out bench/out] [--landmarks eyes|frame|crop]

Every landmark written in the face's own frame of reference (the eyes and the
mouth corners' midpoint, core/landmarks.py) is invariant when a flat photo is
shifted, scaled, rotated or tilted, not only the nose. So a smile, a lip or
eyebrow movement or a jaw movement is evidence of a real face too. For each
of these scalar cues this prints its range (largest minus smallest value,
after the checker's running median of ``smooth_frames``) within the time limit
from the first usable face, for every face track of the sample clips and for
every simulated photo attack of bench/liveness_study.py, with the checker's
guards (faces of at least ``min_face_px``, ``edge_margin`` face sizes inside
the frame). A cue helps only if real people reach scores no attack reaches.

Reads the landmark cache of bench/liveness_landmarks.py (computed on first
use, ~30 min; then seconds). The last line is one JSON object with, per cue,
the highest attack score and the still man's score.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.liveness_landmarks import VARIANTS, Face, landmarks, variant  # noqa: E402
from bench.liveness_study import tracks  # noqa: E402
from core.landmarks import face_frame  # noqa: E402
from edge.liveness import LivenessConfig, inside_frame  # noqa: E402

STILL_MAN = "head-pose-face-detection-male.gif"

# Each cue: a scalar of the (68, 2) landmarks in the face frame (x along the eyes, y towards the mouth).
CUES: dict[str, Callable[[np.ndarray], float]] = {
    "nose left-right": lambda c: float(c[27:36, 0].mean()),
    "nose up-down": lambda c: float(c[27:36, 1].mean()),
    "mouth width": lambda c: float(c[54, 0] - c[48, 0]),
    "mouth opening": lambda c: float((c[66, 1] - c[62, 1] + c[67, 1] - c[61, 1] + c[65, 1] - c[63, 1]) / 3),
    "lips (outer)": lambda c: float(c[57, 1] - c[51, 1]),
    "smile (corners vs lips)": lambda c: float((c[48, 1] + c[54, 1]) / 2 - (c[51, 1] + c[57, 1]) / 2),
    "eyebrows": lambda c: float(c[17:27, 1].mean()),
    "chin": lambda c: float(c[8, 1]),
    "jaw width": lambda c: float(c[16, 0] - c[0, 0]),
}


def usable(face: Face, shape: tuple[int, int], cfg: LivenessConfig) -> bool:
    """The checker's guards: big enough, and inside the frame with a margin (edge.liveness)."""
    if face is None or face[0].size < cfg.min_face_px:
        return False
    return inside_frame(face[1], face[0], shape, cfg.edge_margin)


def ranges(faces: Sequence[Face], cfg: LivenessConfig) -> dict[str, float] | None:
    """Each cue's range over the sequence after a running median of smooth_frames; None if too short."""
    canon = [c for c in (face_frame(f[1]) for f in faces if f is not None) if c is not None]
    n = cfg.smooth_frames
    if len(canon) < n:
        return None
    out = {}
    for name, cue in CUES.items():
        v = np.array([cue(c) for c in canon])
        smooth = np.array([np.median(v[i - n + 1 : i + 1]) for i in range(n - 1, len(v))])
        out[name] = float(smooth.max() - smooth.min())
    return out


def genuine(data: dict, cfg: LivenessConfig) -> list[tuple[str, int, dict[str, float]]]:
    """Each clip track of >= 1 s: the usable faces within time_limit_s of its first usable face."""
    rows = []
    for path, fps, shape, frames in data["clips"]:
        for tr in tracks(frames):
            first, last = min(tr), max(tr)
            if (last - first + 1) / fps < 1.0:
                continue
            idx = [i for i in range(first, last + 1) if usable(tr.get(i), shape, cfg)]
            if not idx:
                continue
            idx = [i for i in idx if (i - idx[0]) / fps <= cfg.time_limit_s]
            got = ranges([tr[i] for i in idx], cfg)
            if got is not None:
                rows.append((Path(path).name, first, got))
    return rows


def attacks(data: dict, cfg: LivenessConfig, fps: float) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for (path, kind, face_px), shape, seq in data["attacks"]:
        seq = seq[: int(round(cfg.time_limit_s * fps))]
        got = ranges([f for f in seq if usable(f, shape, cfg)], cfg)
        if got is not None:
            rows.append((f"{Path(path).name} {kind} {face_px or 'as is'}", got))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    default_faces = Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    ap.add_argument("--faces", type=Path, default=default_faces, help="shared face data (WAYSTATION_FACES_DIR)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="where the landmark cache is")
    ap.add_argument("--fps", type=float, default=8.0, help="frame rate of the simulated attack videos (as the study)")
    ap.add_argument("--landmarks", choices=VARIANTS, default="crop",
                    help="which landmarks (bench/liveness_landmarks.py); crop: all on upscaled crops (finest)")
    args = ap.parse_args(argv)
    if not (args.faces / "MANIFEST.md").is_file():
        print(f"FileNotFoundError: no face data in {args.faces}; pass --faces or set WAYSTATION_FACES_DIR", file=sys.stderr)
        return 1
    cfg = LivenessConfig()
    n_frames = int(np.ceil(max(5.0, cfg.time_limit_s) * args.fps))  # the study's cache key
    data = variant(landmarks(args.faces, args.out, os.cpu_count() or 1, n_frames, False), args.landmarks)
    gen, att = genuine(data, cfg), attacks(data, cfg, args.fps)
    names = list(CUES)
    print(f"landmarks: {args.landmarks}; ranges within {cfg.time_limit_s:g} s, running median of {cfg.smooth_frames}, "
          f"in eye distances; {len(att)} attack videos")
    print(f"{'cue':26} {'attacks max':>11} {'p99':>6}  {'still man':>9}  genuine tracks above every attack")
    summary = {}
    for name in names:
        top = max(a[1][name] for a in att)
        p99 = float(np.percentile([a[1][name] for a in att], 99))
        man = next((g[2][name] for g in gen if g[0] == STILL_MAN), float("nan"))
        above = sum(g[2][name] > top for g in gen)
        worst = max(att, key=lambda a: a[1][name])[0]
        print(f"{name:26} {top:>11.3f} {p99:>6.3f}  {man:>9.3f}  {above}/{len(gen)}  (highest attack: {worst})")
        summary[name] = {"attack_max": round(top, 3), "still_man": round(man, 3), "genuine_above": above}
    print("\nper track:")
    for clip, first, got in gen:
        print(f"  {clip:44} from {first:>3}: " + ", ".join(f"{k} {got[k]:.3f}" for k in names))
    print(json.dumps({"landmarks": args.landmarks, "attack_videos": len(att), "genuine_tracks": len(gen),
                      "cues": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
