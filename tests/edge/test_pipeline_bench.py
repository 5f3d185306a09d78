"""How `./run bench` times a decision: from the person's first frame, not from when the agent noticed them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.pipeline_bench import REPO, _visit_latencies, summarise


def decision(started: float, t_ms: float, kind: str = "denied", **more: float) -> dict[str, object]:
    return {"visit_started_at": started, "t_ms": t_ms, "decision": kind, "identity": None, "reason": "r", **more}


def clip(first_seen: list[list[float]]) -> dict[str, object]:
    return {
        # Every frame processed: the agent noticed the person at 2.0 s, denied at once, then granted 0.5 s later.
        "decisions": [decision(2.0, 160.0), decision(2.0, 500.0, "granted")],
        "first_seen": first_seen,
        "frames": 100,
        "fps": 25.0,
        # Live: frames dropped, so the visit started at 2.1 s (a later frame) and was granted 0.7 s after that.
        "live": {"decisions": [decision(2.1, 700.0, "granted", latency_ms=700.0, identity_latency_ms=650.0)]},
    }


def test_the_clock_starts_at_the_first_frame_in_which_a_search_finds_the_person() -> None:
    (visit,) = _visit_latencies(clip([[2.0, 1.9]]))  # a whole-frame search finds the face from 1.9 s on
    assert visit["decision"] == "granted"
    assert visit["latency_ms"] == pytest.approx(700.0 + 200.0)  # 0.1 s dropped live + 0.1 s before the agent looked
    assert visit["identity_latency_ms"] == pytest.approx(650.0 + 200.0)
    # With every frame processed in no time, the grant would have come 0.6 s after the person's first frame.
    assert visit["clip_ms"] == pytest.approx(600.0)


def test_without_first_seen_the_agents_own_start_is_used() -> None:
    (visit,) = _visit_latencies(clip([]))
    assert visit["latency_ms"] == pytest.approx(800.0) and visit["clip_ms"] == pytest.approx(500.0)


def test_the_summary_reports_the_clips_floor_beside_the_measured_times() -> None:
    def worker(pipeline: str) -> dict[str, object]:
        if pipeline == "agent":
            c = clip([[2.0, 1.9]]) | {"frames": 3, "ms": [10.0, 10.0, 10.0], "encodings": 1}
        else:
            c = {"frames": 3, "ms": [40.0, 0.0, 50.0], "encodings": 2, "named": {}}
        return {"clips": {"x.mp4": c}, "rss_mb": 100.0, "enrolled": 5}

    s = summarise([{"agent": worker("agent"), "reference": worker("reference")}])
    assert s["speedup"] == pytest.approx(3.0)
    assert s["decision_p95_ms"] == pytest.approx(900.0) and s["clip_decision_p95_ms"] == pytest.approx(600.0)


def test_a_visit_the_live_agent_did_not_decide_before_the_clip_ended_still_counts() -> None:
    c = clip([[2.0, 1.9]])
    c["live"] = {"decisions": []}  # too slow: the clip (100 frames at 25 fps, 4 s) ended first
    (visit,) = _visit_latencies(c)
    assert visit["undecided"] and visit["decision"] == "none"
    assert visit["latency_ms"] == pytest.approx((4.0 - 1.9) * 1000.0)  # at least this long
    assert visit["clip_ms"] == pytest.approx(600.0)


def test_without_liveness_a_grant_is_timed_to_when_the_policy_named_the_worker() -> None:
    c = clip([[2.0, 1.9]])
    c["named"] = [[2.0, 2.2]]  # every frame processed: the policy named the worker 0.2 s in; liveness came at 0.5 s
    c["live_no_liveness"] = {"decisions": [decision(2.0, 350.0, "granted", latency_ms=350.0, identity_latency_ms=350.0)]}
    (visit,) = _visit_latencies(c, "live_no_liveness")
    assert visit["latency_ms"] == pytest.approx(350.0 + 100.0)  # from the person's first frame at 1.9 s
    assert visit["clip_ms"] == pytest.approx(300.0)  # the floor without liveness: 2.2 s - 1.9 s
    assert visit["added_ms"] == pytest.approx(150.0)
    (with_liveness,) = _visit_latencies(c)
    assert with_liveness["clip_ms"] == pytest.approx(600.0) and with_liveness["added_ms"] == pytest.approx(300.0)


@pytest.mark.faces
@pytest.mark.models
def test_the_bench_runs_both_pipelines_on_a_real_clip_and_ends_with_the_issue_s_json_line(faces: Path) -> None:
    clip_name = "videos/intel_sample_videos/head-pose-face-detection-female.gif"  # 23 frames: a stranger
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "pipeline", "--faces", str(faces), "--clip", clip_name, "--runs", "1",
         "--enrolled", "200"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    headline = json.loads(lines[-1])
    for key in ("ms_per_frame", "reference_ms_per_frame", "speedup", "decision_p50_ms", "decision_p95_ms", "rss_mb",
                "decision_no_liveness_p95_ms", "clip_decision_no_liveness_p95_ms", "accuracy_equal_or_better"):
        assert key in headline, key
    assert headline["enrolled"] == 200 and headline["runs"] == 1
    assert headline["speedup"] > 1.0  # the stranger is encoded far less often than by the example
    assert headline["accuracy_equal_or_better"] is True  # nobody named, by either
    assert headline["decision_p95_ms"] >= headline["clip_decision_p95_ms"] > 0  # no processing beats the clip's floor
    table = "\n".join(lines[:-1])
    assert "head-pose-face-detection-female.gif" in table and "denied" in table
    assert "without liveness" in table and "target >= 5" in table
