"""Time to the door's decision in real time, encoding in the frame loop against encoding in worker processes.

    ./run bench latency [--faces DIR] [--clip REL ...] [--processes N] [--runs 3] [--enrolled 10000] [--json FILE]

A camera is played in real time: frame *i* of a clip is there from ``i/fps``
seconds after the start, and the door path (``edge.replay.Replay``: the
pipeline and the gate with the shipped settings, liveness on and off) takes
the newest frame whenever it is free, as ``edge.camera.LatestFrameReader``
does on a station. The clips are decoded into memory first (a camera hands
over raw frames). Each visit's decision time is measured by the wall clock,
from the person's first frame (bench/pipeline_worker.py's ``_first_seen``: the
earliest frame of the unbroken run, up to the visit's start, in which a
whole-frame search finds a usable face) to the decision.

Two set-ups, alternating within one run: ``in-process`` (``detection.
encoder_processes: 0``, every encoding in the frame loop's process, one core)
and ``workers`` (N encoder processes, edge/encoders.py, on the other cores; N
defaults to the cores minus one, at most 3). The people enrolled are those of
``./run bench``: Lin-Manuel Miranda and Alex Lacamoire from every example
photo, plus synthetic workers up to ``--enrolled``. Nothing is pinned: this
measures what the other cores give. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_CLIPS = (
    "videos/face_recognition/short_hamilton_clip.mp4",
    "videos/intel_sample_videos/head-pose-face-detection-female.gif",
    "videos/intel_sample_videos/head-pose-face-detection-male.gif",
)
"""The clips in which the door decides on someone (the walking clips' faces are too small for the policy)."""


def _decode(path: Path) -> tuple[list[Any], float]:
    from core.imaging import Capture

    cap = Capture(str(path))
    fps = cap.fps or 25.0
    frames = []
    while (rgb := cap.read()) is not None:
        frames.append(rgb)
    cap.release()
    return frames, fps


def play(replay: Any, frames: list[Any], fps: float) -> list[dict[str, Any]]:
    """The clip in real time through ``replay``; each decision with the wall time since the clip started."""
    decisions = []
    done = -1
    start = time.perf_counter()
    while True:
        newest = int((time.perf_counter() - start) * fps)
        if newest >= len(frames):
            break
        if newest <= done:
            time.sleep(max(0.0, start + (done + 1) / fps - time.perf_counter()))
            continue
        verdict = replay.step(frames[newest], newest / fps)
        done = newest
        if verdict is not None:
            decisions.append({"identity": verdict.identity, "decision": verdict.decision.value,
                              "visit_start": round(verdict.visit_started_at * fps), "at_s": time.perf_counter() - start})
    return decisions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    default_faces = Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    ap.add_argument("--faces", type=Path, default=default_faces, help="shared face data (WAYSTATION_FACES_DIR)")
    ap.add_argument("--clip", action="append", default=None, help="a clip relative to --faces (repeatable)")
    ap.add_argument("--processes", type=int, default=None, help="encoder processes (default: cores - 1, at most 3)")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each set-up")
    ap.add_argument("--enrolled", type=int, default=10_000)
    ap.add_argument("--json", type=Path, default=None, help="write every decision here")
    ns = ap.parse_args(argv)
    if not (ns.faces / "MANIFEST.md").is_file():
        print(f"FileNotFoundError: no face data in {ns.faces}; pass --faces or set WAYSTATION_FACES_DIR", file=sys.stderr)
        return 1

    from bench.pipeline_worker import _first_seen, _gallery, settings
    from core.faces import FaceEngine
    from core.matcher import Gallery
    from edge.encoders import EncoderPool, auto_processes
    from edge.replay import Replay

    workers = ns.processes if ns.processes is not None else auto_processes("auto")
    if workers < 1:
        workers = 1  # a 2-core machine: one worker beside the frame loop
    engine = FaceEngine().load()
    names, vectors = _gallery(engine, ns.faces, ns.enrolled, "agent")
    gallery = Gallery.from_arrays(names, vectors, version=1)
    clips = [ns.faces / c for c in (ns.clip or DEFAULT_CLIPS)]
    decoded = {c: _decode(c) for c in clips}
    pool = EncoderPool(workers).start()
    print(f"{len(gallery)} enrolled; {workers} encoder process(es); {os.cpu_count()} cores; "
          f"clips: {', '.join(c.name for c in clips)}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    first_seen: dict[tuple[Path, int], int] = {}
    try:
        for run in range(ns.runs):
            for liveness in (True, False):
                config = settings([], liveness=liveness)
                for setup in ("in-process", "workers"):
                    for clip in clips:
                        frames, fps = decoded[clip]
                        replay = Replay(config, engine, gallery)
                        if setup == "workers":
                            replay.pipeline.encoders = pool
                        for d in play(replay, frames, fps):
                            key = (clip, d["visit_start"])
                            if key not in first_seen:
                                first_seen.update({(clip, s): f for s, f in _first_seen(
                                    engine, clip, fps, [d["visit_start"]], None, config).items()})
                            ms = (d["at_s"] - first_seen[key] / fps) * 1000.0
                            rows.append({"run": run, "setup": setup, "liveness": liveness, "clip": clip.name,
                                         "identity": d["identity"], "decision": d["decision"], "ms": round(ms, 1)})
                            print(f"run {run + 1} {setup:10} liveness {'on ' if liveness else 'off'} {clip.name:40} "
                                  f"{d['decision']:8} {d['identity'] or '-':20} {ms:7.0f} ms", file=sys.stderr)
    finally:
        pool.close()

    def pct(setup: str, liveness: bool, q: float) -> float | None:
        values = sorted(r["ms"] for r in rows if r["setup"] == setup and r["liveness"] == liveness)
        if not values:
            return None
        return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0], 1)

    out: dict[str, Any] = {"encoder_processes": workers, "cores": os.cpu_count(), "runs": ns.runs,
                           "enrolled": len(gallery)}
    print(f"\n{'':28} {'in-process p50':>14} {'p95':>8}   {'workers p50':>11} {'p95':>8}   ratio p50")
    for liveness in (True, False):
        tag = "" if liveness else "_no_liveness"
        a50, a95 = pct("in-process", liveness, 50), pct("in-process", liveness, 95)
        b50, b95 = pct("workers", liveness, 50), pct("workers", liveness, 95)
        ratio = round(a50 / b50, 2) if a50 and b50 else None
        print(f"{'liveness on' if liveness else 'liveness off':28} {a50:>12} ms {a95:>5} ms   {b50:>9} ms {b95:>5} ms   {ratio}")
        out |= {f"decision{tag}_p50_ms": a50, f"decision{tag}_p95_ms": a95,
                f"workers_decision{tag}_p50_ms": b50, f"workers_decision{tag}_p95_ms": b95, f"ratio{tag}_p50": ratio}
    same = {(r["run"], r["liveness"], r["clip"], r["identity"], r["decision"]) for r in rows if r["setup"] == "in-process"}
    other = {(r["run"], r["liveness"], r["clip"], r["identity"], r["decision"]) for r in rows if r["setup"] == "workers"}
    out["same_decisions"] = same == other
    if ns.json:
        ns.json.write_text(json.dumps({"summary": out, "decisions": rows}, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
