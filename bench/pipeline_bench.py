"""``./run bench`` (``python -m bench pipeline``): the agent's door path against face_recognition's fast example.

    python -m bench pipeline [--faces DIR] [--runs 3] [--enrolled 10000] [--quick] [--json FILE]
                             [--clip videos/...] [--detection KEY=VALUE]

Both pipelines run over the same clips (every file in ``videos/`` of the
shared face data), each in its own subprocess pinned to one core with
OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1 (bench/pipeline_worker.py), against
the same gallery: the people of the Hamilton clip (every example photo of
Lin-Manuel Miranda and Alex Lacamoire) plus synthetic workers up to
``--enrolled``. The runs alternate (agent, reference, agent, ...) so that
other load on the machine hits both alike.

Figures:

- **ms per frame**: a run's pipeline time over all its frames (frames the
  reference skips count, at their near-zero cost), the median of the runs;
  **speedup** is the reference's over the agent's. The same in CPU time of
  each process (``cpu_speedup``): what each would take on a core of its
  own, steadier when other jobs share the pinned core.
- **encodings** computed per run.
- **decision time**: from a person's first frame (the first frame of the
  unbroken run of frames, up to where the agent processing every frame
  started the visit, in which a whole-frame search finds a face the policy
  would use) to the door's decision on that visit (a grant, or the denial
  or spoof of a visit never granted), with the agent running *live* on one
  core: it takes the newest frame when free, drops the rest, and the
  processing times are the measured ones. p50 and p95 over every visit of
  every clip and run. Beside it, the clips' own floor: the same visits'
  decisions with every frame processed in no time (the frames the policy
  needs, and the moment the person shows liveness), which no processing
  speed can beat, and what the processing added to it (``added_*``). The
  same again **without liveness** (``liveness.mode: off``, ``*_no_liveness``):
  no landmarks, no wait for a head movement or blink; the pipeline's and the
  policy's own time.
- **peak RSS** of each subprocess (models, gallery, one decoded frame).
- **accuracy**: who each pipeline recognised in each clip. The agent
  recognises a worker when the door grants; the example "recognises" anyone
  it names on any processed frame (it would open the door on that frame).

The last line printed is one JSON object: ``ms_per_frame``,
``reference_ms_per_frame``, ``speedup``, ``decision_p50_ms``,
``decision_p95_ms``, ``rss_mb`` (and more).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HAMILTON = "videos/face_recognition/short_hamilton_clip.mp4"
PRESENT = {HAMILTON: {"lin_manuel_miranda", "alex_lacamoire"}}
"""Enrolled people who really appear in each clip; nobody enrolled appears in the others."""


def _faces_default() -> Path:
    return Path(os.environ.get("WAYSTATION_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))


def _worker(pipeline: str, faces: Path, clips: list[Path], ns: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "bench.pipeline_worker", pipeline, "--faces", str(faces),
           "--enrolled", str(ns.enrolled), "--core", str(ns.core), "--reference-scale", str(ns.reference_scale)]
    for clip in clips:
        cmd += ["--clip", str(clip)]
    if ns.max_frames:
        cmd += ["--max-frames", str(ns.max_frames)]
    for item in ns.detection:
        cmd += ["--detection", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the {pipeline} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _visit_latencies(clip: dict[str, Any], live: str = "live") -> list[dict[str, Any]]:
    """Per visit of the ``live`` run (``live``, or ``live_no_liveness``), its last decision, timed from
    the person's first frame, beside the clip's own floor for that decision.

    The visit is matched to the one the agent found processing every frame
    (the latest that started no later); the person's first frame is that
    visit's ``first_seen`` (bench/pipeline_worker.py: the first of the
    unbroken run of frames in which a whole-frame search finds a usable
    face). ``clip_ms`` is the same visit's decision when every frame is
    processed instantly: what the clip and the policy (frames needed, and
    with liveness the moment the person shows it) allow at best, whatever
    the processing speed; without liveness that is the moment the policy
    decided (named the worker, or denied). ``added_ms`` is the rest: what the
    processing added. A visit decided that way but not live is listed as
    ``undecided``, timed to the clip's end.
    """
    with_liveness = not live.startswith("live_no_liveness")
    first_seen = {start: first for start, first in clip.get("first_seen", [])}
    named = {start: at for start, at in clip.get("named", [])}
    ends: dict[float, float] = {}
    for d in clip["decisions"]:
        ends[d["visit_started_at"]] = d["visit_started_at"] + d["t_ms"] / 1000.0  # its last decision
    if not with_liveness:  # the policy's decision: a grant when it named the worker, before liveness
        ends = {start: named.get(start, end) for start, end in ends.items()}
    starts = sorted(ends)
    last: dict[float, dict[str, Any]] = {}
    for d in clip[live]["decisions"]:
        last[d["visit_started_at"]] = d  # a grant after a denial is the visit's decision
    out = []
    matched = set()
    for live_start, d in sorted(last.items()):
        start = max([s for s in starts if s <= live_start + 1e-9], default=None)
        matched.add(start)
        first = first_seen.get(start, start) if start is not None else live_start
        early = (live_start - first) * 1000.0
        clip_ms = (ends[start] - first) * 1000.0 if start is not None else None
        latency = d["latency_ms"] + early
        out.append(d | {"latency_ms": latency, "identity_latency_ms": d["identity_latency_ms"] + early,
                        "clip_ms": clip_ms, "added_ms": None if clip_ms is None else latency - clip_ms,
                        "undecided": False})
    # A visit decided with every frame processed but not live (too slow: the clip ended first) must not
    # vanish from the figures: it counts with the time to the clip's end, a lower bound.
    end = clip["frames"] / clip["fps"] if clip.get("fps") and "frames" in clip else max(ends.values(), default=0.0)
    for start in starts:
        if start not in matched:
            first = first_seen.get(start, start)
            waited = max(0.0, end - first) * 1000.0
            clip_ms = (ends[start] - first) * 1000.0
            out.append({"decision": "none", "identity": None, "reason": "no decision live before the clip ended",
                        "visit_started_at": start, "t_ms": None, "latency_ms": waited, "identity_latency_ms": waited,
                        "clip_ms": clip_ms, "added_ms": waited - clip_ms, "undecided": True})
    return sorted(out, key=lambda v: v["visit_started_at"])


def _recognised(pipeline: str, clip: dict[str, Any]) -> set[str]:
    if pipeline == "agent":
        return {d["identity"] for d in clip["decisions"] if d["decision"] == "granted"}
    return set(clip["named"])


def summarise(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The figures of several runs, each {"agent": worker output, "reference": worker output}."""

    def per_frame(pipeline: str, key: str = "ms") -> list[float]:
        return [sum(sum(c.get(key, c["ms"])) for c in r[pipeline]["clips"].values())
                / max(1, sum(c["frames"] for c in r[pipeline]["clips"].values())) for r in runs]

    ours, ref = statistics.median(per_frame("agent")), statistics.median(per_frame("reference"))
    # CPU time of the process alone: what a core of its own would take, steadier on a shared machine.
    ours_cpu, ref_cpu = statistics.median(per_frame("agent", "cpu_ms")), statistics.median(per_frame("reference", "cpu_ms"))
    visits = [v for r in runs for c in r["agent"]["clips"].values() for v in _visit_latencies(c)]
    latencies = [v["latency_ms"] for v in visits]
    named = [v["identity_latency_ms"] for v in visits]
    floors = [v["clip_ms"] for v in visits if v["clip_ms"] is not None]
    added = [v["added_ms"] for v in visits if v["added_ms"] is not None]
    undecided = sum(v["undecided"] for v in visits)
    def live(key: str) -> list[dict[str, Any]]:
        return [v for r in runs for c in r["agent"]["clips"].values() if key in c for v in _visit_latencies(c, key)]

    bare = live("live_no_liveness")
    bare_floors = [v["clip_ms"] for v in bare if v["clip_ms"] is not None]
    bare_added = [v["added_ms"] for v in bare if v["added_ms"] is not None]
    cpu, bare_cpu = live("live_cpu"), live("live_no_liveness_cpu")
    clips: dict[str, Any] = {}
    for name in runs[0]["agent"]["clips"]:
        row: dict[str, Any] = {}
        for pipeline in ("agent", "reference"):
            results = [r[pipeline]["clips"][name] for r in runs]
            found = _recognised(pipeline, results[0])
            row[pipeline] = {
                "ms_per_frame": statistics.median(sum(c["ms"]) / max(1, c["frames"]) for c in results),
                "encodings": statistics.median(c["encodings"] for c in results),
                "frames": results[0]["frames"],
                "runs_ms_per_frame": [round(sum(c["ms"]) / max(1, c["frames"]), 1) for c in results],
                "recognised": sorted(found),
                "false": sorted(found - PRESENT.get(name, set())),
            }
        a, r = row["agent"]["ms_per_frame"], row["reference"]["ms_per_frame"]
        row["ratio"] = round(r / a, 2) if a > 0 else None
        clips[name] = row
    right = {p: sum(len(set(c[p]["recognised"]) - set(c[p]["false"])) for c in clips.values()) for p in ("agent", "reference")}
    wrong = {p: sum(len(c[p]["false"]) for c in clips.values()) for p in ("agent", "reference")}
    return {
        "ms_per_frame": round(ours, 2),
        "reference_ms_per_frame": round(ref, 2),
        "speedup": round(ref / ours, 2) if ours > 0 else None,
        "cpu_ms_per_frame": round(ours_cpu, 2),
        "reference_cpu_ms_per_frame": round(ref_cpu, 2),
        "cpu_speedup": round(ref_cpu / ours_cpu, 2) if ours_cpu > 0 else None,
        "decision_p50_ms": _round(_pct(latencies, 0.5)),
        "decision_p95_ms": _round(_pct(latencies, 0.95)),
        "identity_decision_p50_ms": _round(_pct(named, 0.5)),
        "identity_decision_p95_ms": _round(_pct(named, 0.95)),
        "undecided_live": undecided,
        "clip_decision_p50_ms": _round(_pct(floors, 0.5)),
        "clip_decision_p95_ms": _round(_pct(floors, 0.95)),
        "added_p50_ms": _round(_pct(added, 0.5)),
        "added_p95_ms": _round(_pct(added, 0.95)),
        "decision_no_liveness_p50_ms": _round(_pct([v["latency_ms"] for v in bare], 0.5)),
        "decision_no_liveness_p95_ms": _round(_pct([v["latency_ms"] for v in bare], 0.95)),
        "clip_decision_no_liveness_p50_ms": _round(_pct(bare_floors, 0.5)),
        "clip_decision_no_liveness_p95_ms": _round(_pct(bare_floors, 0.95)),
        "added_no_liveness_p50_ms": _round(_pct(bare_added, 0.5)),
        "added_no_liveness_p95_ms": _round(_pct(bare_added, 0.95)),
        "decisions_no_liveness": len(bare),
        "decision_cpu_p50_ms": _round(_pct([v["latency_ms"] for v in cpu], 0.5)),
        "decision_cpu_p95_ms": _round(_pct([v["latency_ms"] for v in cpu], 0.95)),
        "decision_no_liveness_cpu_p50_ms": _round(_pct([v["latency_ms"] for v in bare_cpu], 0.5)),
        "decision_no_liveness_cpu_p95_ms": _round(_pct([v["latency_ms"] for v in bare_cpu], 0.95)),
        "added_no_liveness_cpu_p95_ms": _round(_pct([v["added_ms"] for v in bare_cpu if v["added_ms"] is not None], 0.95)),
        "runs_speedup": [round(b / a, 2) if a > 0 else None for a, b in zip(per_frame("agent"), per_frame("reference"))],
        "rss_mb": round(max(r["agent"]["rss_mb"] for r in runs), 1),
        "reference_rss_mb": round(max(r["reference"]["rss_mb"] for r in runs), 1),
        "encodings": statistics.median(sum(c["encodings"] for c in r["agent"]["clips"].values()) for r in runs),
        "reference_encodings": statistics.median(sum(c["encodings"] for c in r["reference"]["clips"].values()) for r in runs),
        "decisions": len(latencies),
        "recognised_right": right["agent"],
        "recognised_wrong": wrong["agent"],
        "reference_recognised_right": right["reference"],
        "reference_recognised_wrong": wrong["reference"],
        "accuracy_equal_or_better": right["agent"] >= right["reference"] and wrong["agent"] <= wrong["reference"],
        "runs": len(runs),
        "enrolled": runs[0]["agent"]["enrolled"],
        "detection": runs[0]["agent"].get("detection"),
        "clips": clips,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def report(summary: dict[str, Any], runs: list[dict[str, dict[str, Any]]]) -> list[str]:
    """The human-readable table (everything but the final JSON line)."""
    lines = [f"{summary['enrolled']} enrolled (2 real people + synthetic), {summary['runs']} run(s), one core "
             f"({runs[0]['agent']['pinned']}); median of runs", ""]
    lines.append(f"{'clip':<58}{'agent ms/f':>11}{'ref ms/f':>10}{'ratio':>7}{'enc':>6}{'ref enc':>8}"
                 "  recognised: agent | reference")
    for name, row in summary["clips"].items():
        a, r = row["agent"], row["reference"]
        lines.append(f"{name:<58}{a['ms_per_frame']:>11.1f}{r['ms_per_frame']:>10.1f}{row['ratio']:>7.1f}{a['encodings']:>6.0f}"
                     f"{r['encodings']:>8.0f}  {', '.join(a['recognised']) or '-'} | {', '.join(r['recognised']) or '-'}")
    for live, title in (("live", "with liveness"), ("live_no_liveness", "without liveness (liveness.mode off)"),
                        ("live_cpu", "with liveness, timed by CPU time"),
                        ("live_no_liveness_cpu", "without liveness, timed by CPU time")):
        lines += ["", f"agent decisions, live on one core, {title} (first run):"]
        for name, clip in runs[0]["agent"]["clips"].items():
            if live not in clip:
                continue
            for v in _visit_latencies(clip, live):
                clip_ms = "-" if v["clip_ms"] is None else f"{v['clip_ms']:.0f}"
                if v["undecided"]:
                    lines.append(f"  {Path(name).name:<40} {'none':<8} {'-':<20} >={v['latency_ms']:5.0f} ms"
                                 f" (no decision live before the clip ended; every frame at once {clip_ms} ms)")
                    continue
                lines.append(f"  {Path(name).name:<40} {v['decision']:<8} {v['identity'] or '-':<20} {v['latency_ms']:6.0f} ms"
                             f" (every frame at once {clip_ms} ms; identity {v['identity_latency_ms']:.0f} ms)"
                             f"  {v['reason']}")
    s = summary
    undecided = s["undecided_live"]
    lines += [
        "",
        f"ms per frame:   agent {s['ms_per_frame']:.1f}, reference {s['reference_ms_per_frame']:.1f}; "
        f"speedup {s['speedup']}x (target >= 5; per run {s['runs_speedup']})",
        f"  in CPU time of each process alone: agent {s['cpu_ms_per_frame']:.1f}, reference "
        f"{s['reference_cpu_ms_per_frame']:.1f}; speedup {s['cpu_speedup']}x",
        f"encodings:      agent {s['encodings']:.0f}, reference {s['reference_encodings']:.0f}",
        f"decision time, first frame to the door's decision (with liveness): p50 {s['decision_p50_ms']} ms, "
        f"p95 {s['decision_p95_ms']} ms over {s['decisions']} visit(s)"
        + (f"; {undecided} of them not decided live before the clip ended (counted to its end)" if undecided else ""),
        f"  the clips' own floor (every frame processed in no time): p50 {s['clip_decision_p50_ms']} ms, "
        f"p95 {s['clip_decision_p95_ms']} ms; added by the processing: p50 {s['added_p50_ms']} ms, p95 {s['added_p95_ms']} ms",
        f"  of which the policy's (identity known, before liveness): p50 {s['identity_decision_p50_ms']} ms, "
        f"p95 {s['identity_decision_p95_ms']} ms",
        f"decision time without liveness (liveness.mode off): p50 {s['decision_no_liveness_p50_ms']} ms, "
        f"p95 {s['decision_no_liveness_p95_ms']} ms over {s['decisions_no_liveness']} visit(s) (target p95 <= 300 ms)",
        f"  the clips' own floor (the frames the policy needs): p50 {s['clip_decision_no_liveness_p50_ms']} ms, "
        f"p95 {s['clip_decision_no_liveness_p95_ms']} ms; added by the processing: p50 {s['added_no_liveness_p50_ms']} ms, "
        f"p95 {s['added_no_liveness_p95_ms']} ms",
        f"  timed by the agent's CPU time (a core of its own): with liveness p50 {s['decision_cpu_p50_ms']} ms, "
        f"p95 {s['decision_cpu_p95_ms']} ms; without p50 {s['decision_no_liveness_cpu_p50_ms']} ms, "
        f"p95 {s['decision_no_liveness_cpu_p95_ms']} ms (added by the processing: p95 {s['added_no_liveness_cpu_p95_ms']} ms)",
        f"peak RSS:       agent {s['rss_mb']:.0f} MB, reference {s['reference_rss_mb']:.0f} MB (target <= 400 MB)",
        f"accuracy:       agent {s['recognised_right']} right / {s['recognised_wrong']} wrong, reference "
        f"{s['reference_recognised_right']} right / {s['reference_recognised_wrong']} wrong: "
        f"{'equal or better' if s['accuracy_equal_or_better'] else 'WORSE'}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=Path, default=_faces_default(), help="the shared face data (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each pipeline, alternating (default 3)")
    parser.add_argument("--enrolled", type=int, default=10_000, help="gallery size, synthetic workers added (default 10000)")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many frames per clip")
    parser.add_argument("--reference-scale", type=float, default=0.5, help="the example's downscale (default 0.5)")
    parser.add_argument("--core", type=int, default=0, help="the CPU core to pin to (default 0)")
    parser.add_argument("--clip", action="append", default=None,
                        help="a clip (relative to the face data) instead of all of videos/; repeatable")
    parser.add_argument("--quick", action="store_true", help="smoke test: the Hamilton clip's first 110 frames, one run")
    parser.add_argument("--json", type=Path, default=None, help="also write the full results here")
    parser.add_argument("--detection", action="append", default=[], metavar="KEY=VALUE",
                        help="override a detection setting of the agent (e.g. target_width=0), to measure its effect; repeatable")
    ns = parser.parse_args(argv)
    if not (ns.faces / "MANIFEST.md").is_file():
        print(f"bench: the shared face data was not found at {ns.faces} (set WAYSTATION_FACES_DIR)", file=sys.stderr)
        return 2
    if ns.quick:
        clips = [ns.faces / HAMILTON]
        ns.runs, ns.max_frames = 1, ns.max_frames or 110
    elif ns.clip:
        clips = [ns.faces / c for c in ns.clip]
    else:
        clips = sorted(f for f in (ns.faces / "videos").rglob("*") if f.suffix.lower() in (".mp4", ".gif"))
    runs = []
    for i in range(ns.runs):
        print(f"run {i + 1}/{ns.runs}: agent ...", file=sys.stderr, flush=True)
        agent = _worker("agent", ns.faces, clips, ns)
        print(f"run {i + 1}/{ns.runs}: reference ...", file=sys.stderr, flush=True)
        runs.append({"agent": agent, "reference": _worker("reference", ns.faces, clips, ns)})
    summary = summarise(runs)
    for line in report(summary, runs):
        print(line)
    if ns.json is not None:
        ns.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    headline = {k: summary[k] for k in ("ms_per_frame", "reference_ms_per_frame", "speedup", "decision_p50_ms",
                                         "decision_p95_ms", "rss_mb")}
    print(json.dumps(headline | {k: summary[k] for k in (
        "decision_no_liveness_p50_ms", "decision_no_liveness_p95_ms", "added_no_liveness_p95_ms",
        "decision_cpu_p95_ms", "decision_no_liveness_cpu_p95_ms", "added_no_liveness_cpu_p95_ms",
        "identity_decision_p50_ms", "identity_decision_p95_ms", "clip_decision_p50_ms", "clip_decision_p95_ms",
        "clip_decision_no_liveness_p95_ms", "added_p95_ms", "undecided_live", "runs_speedup", "cpu_speedup",
        "encodings", "reference_encodings", "reference_rss_mb", "accuracy_equal_or_better", "runs", "enrolled")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
