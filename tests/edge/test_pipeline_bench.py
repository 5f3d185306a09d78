"""How `./run bench` times a decision: from the person's first frame, not from when the agent noticed them."""

from __future__ import annotations

import pytest

from bench.pipeline_bench import _visit_latencies, summarise


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
