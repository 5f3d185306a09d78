"""One pipeline over the clips, pinned to one core: the measuring half of ``python -m bench pipeline``.

Run as a subprocess by bench/pipeline_bench.py (which sets OMP_NUM_THREADS
and OPENBLAS_NUM_THREADS before this interpreter starts); it pins itself to
one core *before* importing NumPy, runs either the agent's door path
(``agent``) or face_recognition's example (``reference``, see
bench/reference_pipeline.py) and prints one JSON line.

Both get the same decoded BGR frames and are timed from there (colour
conversion included, video decoding not: a camera hands over raw frames).
The agent runs three times per clip, with the shipped settings (``--detection
KEY=VALUE`` overrides a detection setting, to measure its effect):

- **every frame** (as ``./run edge replay`` does): ms per frame, encodings,
  who was recognised, and the clip's own floor: when each visit would be
  decided if every frame took no time (the door's decision, and the moment
  the policy named the person, before liveness);
- **live**, as on a station: a camera delivers frame *i* at ``i / fps``;
  whenever the agent is free it takes the newest frame and drops the older
  ones (edge.camera.LatestFrameReader), and the processing times are the
  measured ones. The time from a person's first frame to the door's decision
  on that visit is measured here, on this one core;
- **live without liveness** (``liveness.mode: off``, as ``./run edge replay
  --no-liveness``): the same, with no landmarks computed and no wait for a
  head movement or blink: the pipeline's and the policy's own decision time;
- both live runs again timed by the process's **CPU time** instead of the
  wall clock (``live_cpu``, ``live_no_liveness_cpu``): what a core of its
  own would give, when other processes share the pinned one.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterator

GALLERY = ("lin_manuel_miranda", "alex_lacamoire")
"""The people enrolled, as face_recognition's facerec_from_video_file.py pairs them with the Hamilton clip."""

SYNTHETIC_SEED = 20251129


def _pin(core: int) -> str:
    try:
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    except (AttributeError, OSError) as err:  # not Linux, or no such core
        return f"not pinned ({err})"


def _frames(path: Path, max_frames: int | None) -> Iterator[tuple[int, Any]]:
    from core.imaging import Capture, rgb_to_bgr

    cap = Capture(str(path))
    try:
        index = 0
        while max_frames is None or index < max_frames:
            rgb = cap.read()
            if rgb is None:
                return
            yield index, rgb_to_bgr(rgb)
            index += 1
    finally:
        cap.release()


def _gallery(engine: Any, faces: Path, enrolled: int, pipeline: str) -> tuple[list[str], Any]:
    """The real people (every example photo of them), then synthetic workers up to ``enrolled``.

    Each pipeline enrolls the photos its own way: the agent as the server
    does (core.templates: one template per photo), the example with
    ``face_encodings(photo)[0]`` (FaceEngine.encode_single). The synthetic
    encodings point in random directions: ~1.4 away from any real face, they
    never match, so they add memory and matching cost without changing who is
    recognised (how false accepts grow with real galleries is the accuracy
    study's subject, not this one's).
    """
    import numpy as np

    from core.imaging import list_images, load_image
    from core.templates import enroll_photo

    names: list[str] = []
    vectors = []
    for who in GALLERY:
        for photo in list_images(faces / "face_recognition_examples" / who):
            if pipeline == "agent":
                vector = enroll_photo(engine, photo).vector
            else:
                vector, _box = engine.encode_single(load_image(photo))
            names.append(who)
            vectors.append(vector)
    real = np.vstack(vectors)
    extra = max(0, enrolled - len(names))
    rng = np.random.default_rng(SYNTHETIC_SEED)
    synth = rng.normal(size=(extra, real.shape[1])).astype(np.float32)
    synth *= float(np.linalg.norm(real, axis=1).mean()) / np.linalg.norm(synth, axis=1, keepdims=True)
    names += [f"synthetic-{i:05d}" for i in range(extra)]
    return names, np.vstack([real, synth]).astype(np.float32)


def settings(overrides: list[str], *, liveness: bool = True) -> Any:
    """The shipped EdgeSettings, with ``detection`` fields overridden by ``KEY=VALUE`` strings (validated)."""
    from edge.config import DetectionConfig, EdgeSettings

    base = EdgeSettings(station_id="bench")
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in DetectionConfig.model_fields:
            raise SystemExit(f"bench: --detection wants KEY=VALUE with a detection setting, got {item!r}")
        changes[key] = value
    detection = DetectionConfig.model_validate(base.detection.model_dump() | changes)
    update: dict[str, Any] = {"detection": detection}
    if not liveness:
        update["liveness"] = base.liveness.model_copy(update={"mode": "off"})
    return base.model_copy(update=update)


def _agent_every_frame(engine: Any, gallery: Any, clip: Path, fps: float, max_frames: int | None, config: Any) -> dict[str, Any]:
    from core.imaging import bgr_to_rgb
    from edge.replay import Replay

    replay = Replay(config, engine, gallery)
    ms, cpu_ms, decisions = [], [], []
    named: dict[float, float] = {}  # visit start -> clip time at which the policy granted (before liveness)
    for index, bgr in _frames(clip, max_frames):
        started, cpu = time.perf_counter(), time.process_time()
        verdict = replay.step(bgr_to_rgb(bgr), index / fps)
        ms.append((time.perf_counter() - started) * 1000.0)
        cpu_ms.append((time.process_time() - cpu) * 1000.0)
        held = replay.gate.held
        if held is not None:
            named.setdefault(held.visit_started_at, index / fps)
        if verdict is not None:
            decisions.append(_verdict(verdict, index))
            if verdict.open_door:
                named.setdefault(verdict.visit_started_at, index / fps)
    counts = replay.pipeline.counts
    return {"frames": len(ms), "ms": ms, "cpu_ms": cpu_ms, "encodings": counts["encodings"], "decisions": decisions,
            "named": sorted(named.items()), "searches": dict(counts)}


def _first_seen(engine: Any, clip: Path, fps: float, starts: list[int], max_frames: int | None, config: Any) -> dict[int, int]:
    """For each visit's first frame (the agent's, every frame processed), the person's first frame.

    The agent may find a face a few frames after it appears (with nobody in
    view it searches only when the picture changed, and at most every
    ``detection.idle_interval_s``). So that this never shortens the measured
    decision time, the clock starts at the earliest frame of the unbroken run
    of frames, ending at the visit's start, in which a whole-frame search at
    the shipped detection settings finds a face the policy would use. Not timed.
    """
    from core.imaging import bgr_to_rgb, to_gray
    from edge.pipeline import whole_frame_scale

    min_px = config.policy.min_face_px
    lookback = int(round(fps * 2.0))  # a visit is never found later than this by the agent
    wanted = {s for start in starts for s in range(max(0, start - lookback), start)}
    grays: dict[int, Any] = {}
    for index, bgr in _frames(clip, max_frames):
        if index in wanted:
            grays[index] = to_gray(bgr_to_rgb(bgr))
        if index >= max(starts, default=-1):
            break
    detection = config.detection

    def usable_face(index: int) -> bool:
        gray = grays[index]
        found = engine.detect(gray, scale=whole_frame_scale(detection, gray.shape[1]), upsample=detection.upsample)
        return any(b.size >= min_px for b in found)

    out = {}
    for start in starts:
        first = start
        while first - 1 in grays and usable_face(first - 1):
            first -= 1
        out[start] = first
    return out


def _agent_live(engine: Any, gallery: Any, clip: Path, fps: float, max_frames: int | None, config: Any,
                clock: str = "wall") -> dict[str, Any]:
    """The live simulation; each frame's processing time is the measured wall time (``clock="wall"``: what
    the pinned core gave, other processes on it included) or the process's CPU time (``"cpu"``: what a core
    of its own would take)."""
    from core.imaging import bgr_to_rgb
    from edge.replay import Replay

    timer = time.perf_counter if clock == "wall" else time.process_time

    replay = Replay(config, engine, gallery)
    now, processed, decisions = 0.0, 0, []
    named_at: dict[float, float] = {}  # visit start -> when the policy granted (the gate may hold it for liveness)
    for index, bgr in _frames(clip, max_frames):
        if index / fps > now:
            now = index / fps  # idle until this frame arrives
        elif int(now * fps + 1e-9) > index:
            continue  # a newer frame has already arrived: this one is dropped
        started = timer()
        verdict = replay.step(bgr_to_rgb(bgr), index / fps)
        now += timer() - started
        processed += 1
        held = replay.gate.held
        if held is not None:
            named_at.setdefault(held.visit_started_at, now)
        if verdict is not None:
            start = verdict.visit_started_at
            decisions.append(_verdict(verdict, index) | {
                "latency_ms": (now - start) * 1000.0,
                "identity_latency_ms": (named_at.get(start, now) - start) * 1000.0,
            })
    return {"frames_processed": processed, "decisions": decisions}


def _verdict(verdict: Any, index: int) -> dict[str, Any]:
    return {"frame": index, "identity": verdict.identity, "decision": verdict.decision.value, "reason": verdict.reason,
            "visit_started_at": verdict.visit_started_at, "t_ms": round(verdict.elapsed_s * 1000.0, 1)}


def _reference(engine: Any, names: list[str], vectors: Any, clip: Path, max_frames: int | None, scale: float) -> dict[str, Any]:
    from bench.reference_pipeline import UNKNOWN, ReferencePipeline

    ref = ReferencePipeline(engine, names, vectors, scale=scale)
    ms, cpu_ms, named, faces_seen = [], [], {}, 0
    for index, bgr in _frames(clip, max_frames):
        started, cpu = time.perf_counter(), time.process_time()
        result = ref.process(bgr)
        ms.append((time.perf_counter() - started) * 1000.0)
        cpu_ms.append((time.process_time() - cpu) * 1000.0)
        if result is not None:
            faces_seen += len(result.names)
            for name in result.names:
                if name != UNKNOWN:
                    named.setdefault(name, []).append(index)
    return {"frames": len(ms), "ms": ms, "cpu_ms": cpu_ms, "encodings": ref.encodings_computed, "faces": faces_seen,
            "named": {k: {"frames": len(v), "first": v[0]} for k, v in named.items()}}


def run(argv: list[str]) -> dict[str, Any]:
    import argparse

    p = argparse.ArgumentParser(prog="bench.pipeline_worker")
    p.add_argument("pipeline", choices=("agent", "reference"))
    p.add_argument("--faces", type=Path, required=True)
    p.add_argument("--clip", action="append", type=Path, required=True)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--enrolled", type=int, default=10_000)
    p.add_argument("--reference-scale", type=float, default=0.5)
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--detection", action="append", default=[], metavar="KEY=VALUE")
    ns = p.parse_args(argv)
    pinned = _pin(ns.core)  # before NumPy and dlib are imported

    from core.faces import FaceEngine
    from core.imaging import Capture
    from core.matcher import Gallery

    engine = FaceEngine().load()
    names, vectors = _gallery(engine, ns.faces, ns.enrolled, ns.pipeline)
    gallery = Gallery.from_arrays(names, vectors, version=1)
    config, no_liveness = settings(ns.detection), settings(ns.detection, liveness=False)
    out: dict[str, Any] = {"pipeline": ns.pipeline, "pinned": pinned, "enrolled": len(gallery), "clips": {},
                           "detection": config.detection.model_dump()}
    for clip in ns.clip:
        cap = Capture(str(clip))
        fps = cap.fps or 25.0
        cap.release()
        if ns.pipeline == "agent":
            result = _agent_every_frame(engine, gallery, clip, fps, ns.max_frames, config)
            result["live"] = _agent_live(engine, gallery, clip, fps, ns.max_frames, config)
            result["live_no_liveness"] = _agent_live(engine, gallery, clip, fps, ns.max_frames, no_liveness)
            result["live_cpu"] = _agent_live(engine, gallery, clip, fps, ns.max_frames, config, "cpu")
            result["live_no_liveness_cpu"] = _agent_live(engine, gallery, clip, fps, ns.max_frames, no_liveness, "cpu")
            starts = sorted({int(round(d["visit_started_at"] * fps)) for d in result["decisions"]})
            first = _first_seen(engine, clip, fps, starts, ns.max_frames, config)
            result["first_seen"] = [[start / fps, first[start] / fps] for start in starts]
        else:
            result = _reference(engine, names, vectors, clip, ns.max_frames, ns.reference_scale)
        result["fps"] = fps
        out["clips"][str(clip.relative_to(ns.faces))] = result
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return out


if __name__ == "__main__":
    REPO = Path(__file__).resolve().parents[1]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    print(json.dumps(run(sys.argv[1:])))
