"""`./run bench`: a smoke test of the benchmark commands (no timing assertions: CI machines vary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.faces, pytest.mark.models]

REPO = Path(__file__).resolve().parents[1]
HEADLINE = {"ms_per_frame", "reference_ms_per_frame", "speedup", "decision_p50_ms", "decision_p95_ms", "rss_mb"}


def bench(*args: str, faces: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, WAYSTATION_FACES_DIR=str(faces))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_pipeline_bench_quick_ends_with_the_headline_json(faces: Path) -> None:
    r = bench("--quick", faces=faces)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert HEADLINE <= set(last)
    assert last["ms_per_frame"] > 0 and last["reference_ms_per_frame"] > 0
    assert last["speedup"] == pytest.approx(last["reference_ms_per_frame"] / last["ms_per_frame"], rel=0.02)
    assert last["rss_mb"] > 50 and last["enrolled"] == 10_000 and last["runs"] == 1
    # Both pipelines ran over the same 110 Hamilton frames and computed encodings; who they recognised is printed.
    assert last["encodings"] > 0 and last["reference_encodings"] > 0
    assert any("short_hamilton_clip.mp4" in line and "lin_manuel_miranda" in line for line in lines)
    assert "run 1/1: reference" in r.stderr


def test_matcher_bench_ends_with_json(faces: Path) -> None:
    r = bench("matcher", "--enrolled", "20000", "--samples", "2", "--queries", "30", faces=faces)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["enrolled"] == 20_000 and last["samples"] == 2 and last["target_ms"] == 5.0
    assert 0 < last["match_p50_ms"] <= last["match_p95_ms"]


def test_latency_bench_decides_the_same_with_an_encoder_process(faces: Path) -> None:
    r = bench("latency", "--runs", "1", "--enrolled", "200", "--processes", "1",
              "--clip", "videos/intel_sample_videos/head-pose-face-detection-male.gif", faces=faces)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["encoder_processes"] == 1 and last["enrolled"] == 200 and last["same_decisions"] is True
    assert 0 < last["decision_p50_ms"] and 0 < last["workers_decision_p50_ms"]
    # The stranger in the clip was denied, once per set-up and liveness setting, and each line says so.
    assert sum("denied" in line and "head-pose-face-detection-male.gif" in line for line in r.stderr.splitlines()) == 4


def test_an_unknown_bench_command_is_refused(faces: Path) -> None:
    r = bench("nope", faces=faces)
    assert r.returncode == 2 and "unknown command 'nope'" in r.stderr and "pipeline" in r.stderr
