"""The accuracy study's pure helpers (bench/accuracy/): protocol parsing, face picking, decision rules, counting,
bounds. The enrollment copies it measures are core.templates.augment (tests/test_templates.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.accuracy.protocol import read_pairs, read_protocol
from bench.accuracy.rules import (
    EXCLUDED,
    GENUINE,
    STRANGER,
    Trials,
    best_point,
    centre_face,
    count,
    decide,
    dedupe,
    first_within,
    largest_face,
    safe_region,
    votes_to_grant,
)
from bench.accuracy.stats import TailModel, binom_upper, nn_false_accept, two_smallest
from bench.accuracy.study import choose_defaults
from tests.support.services import REPO

INF = math.inf


def _trials(D: list[list[float]], truth: list[int]) -> Trials:
    t = np.array(truth)
    kind = np.where(t == -1, STRANGER, GENUINE)
    return Trials(np.array(D, dtype=np.float32), t, kind, np.arange(len(t)))


def test_protocol_rows_are_split_by_role_and_bad_lines_are_named() -> None:
    p = read_protocol("role,identity,file\nenroll,a,x/a1.jpg\nprobe_genuine,a,x/a2.jpg\nprobe_impostor,s,y/s1.jpg\n")
    assert p.enroll == [("a", "x/a1.jpg")] and p.genuine == [("a", "x/a2.jpg")] and p.impostor == [("s", "y/s1.jpg")]
    with pytest.raises(ValueError, match="line 3"):
        read_protocol("role,identity,file\nenroll,a,x.jpg\nprobe,a,y.jpg\n")
    with pytest.raises(ValueError, match="header"):
        read_protocol("identity,file\n")


def test_pairs_file_gives_matched_and_mismatched() -> None:
    matched, mismatched = read_pairs("1\t2\nAl\t1\t3\nBo\t2\tCy\t1\n")
    assert matched == [("Al", 1, "Al", 3)] and mismatched == [("Bo", 2, "Cy", 1)]


def test_centred_face_beats_a_larger_one_off_centre() -> None:
    # 250x250 LFW frame: a small face in the middle, a big one in the corner.
    boxes = np.array([[0, 120, 120, 0], [100, 150, 150, 100]])
    assert centre_face(boxes, 250, 250) == 1
    assert largest_face(boxes) == 0
    assert centre_face(np.empty((0, 4)), 250, 250) is None and largest_face(np.empty((0, 4))) is None


def test_margin_rule_refuses_a_near_tie_that_nearest_accepts() -> None:
    D = np.array([[0.40, 0.43, 0.9], [0.40, 0.70, 0.9], [INF, INF, INF]])
    assert decide(D, 0.5).tolist() == [0, 0, -1]
    assert decide(D, 0.5, 0.1).tolist() == [-1, 0, -1]
    assert decide(D, 0.39).tolist() == [-1, -1, -1]


def test_library_rule_takes_the_first_enrolled_within_threshold_not_the_nearest() -> None:
    D = np.array([[0.55, 0.30], [0.7, 0.8]])
    assert first_within(D, 0.6).tolist() == [0, -1]
    assert decide(D, 0.6).tolist() == [1, -1]


def test_counts_follow_the_issue_definitions() -> None:
    # genuine of id0 (right), genuine of id1 taken as id0 (misidentified), genuine without a face,
    # a stranger accepted, a stranger rejected.
    T = _trials([[0.3, 0.9], [0.35, 0.5], [INF, INF], [0.45, 0.9], [0.8, 0.9]], [0, 1, 1, -1, -1])
    c = count(T, decide(T.D, 0.5))
    assert (c.n_genuine, c.fr, c.misid, c.no_face) == (3, 2, 1, 1)
    assert (c.n_stranger, c.fa) == (2, 1)


def test_exclusion_trials_remove_the_own_identity() -> None:
    T = _trials([[0.3, 0.45], [0.9, 0.2], [0.8, 0.9]], [0, 1, -1]).with_exclusions()
    assert T.kind.tolist() == [GENUINE, GENUINE, STRANGER, EXCLUDED, EXCLUDED]
    assert T.D[3].tolist() == pytest.approx([INF, 0.45]) and T.probe[3:].tolist() == [0, 1]
    c = count(T, decide(T.D, 0.5))
    assert (c.n_excluded, c.fa_excl) == (2, 1)  # probe 0 is taken for identity 1 once its own is gone


def test_safe_region_stops_below_the_nearest_impostor_and_misidentification() -> None:
    T = _trials([[0.30, 0.9], [0.9, 0.42], [0.47, 0.9], [0.9, 0.44]], [0, 1, 0, -1])
    lo, hi, n = safe_region(T, 0.0)
    assert hi == pytest.approx(0.44) and lo == pytest.approx(0.42) and n == 2
    assert (count(T, decide(T.D, lo)).fa, count(T, decide(T.D, hi)).fa) == (0, 1)
    # Allowing one false accept opens the region up to the next bad score.
    assert safe_region(T, 0.0, allow=1)[2] == 3
    t, _hi, m, n = best_point(T, [0.0, 0.1])
    assert n == 2 and m == 0.0 and t == pytest.approx(0.42)


def test_frames_need_k_agreeing_votes_and_a_conflict_restarts_the_run() -> None:
    assert votes_to_grant([3, -1, 3], 2) == 3
    assert votes_to_grant([3, 4, 3, 4], 2) == -1
    assert votes_to_grant([-1, -1], 1) == -1
    assert votes_to_grant([5], 1) == 5


def test_rule_of_three_and_exact_upper_bounds() -> None:
    assert binom_upper(0, 120) == pytest.approx(1 - 0.05 ** (1 / 120), rel=1e-6)
    assert binom_upper(0, 120) == pytest.approx(3 / 120, rel=0.05)
    assert binom_upper(3, 40) == pytest.approx(0.1826, abs=2e-4)  # Clopper-Pearson one-sided 95%
    assert binom_upper(5, 5) == 1.0


def test_nearest_neighbour_false_accepts_grow_with_the_gallery() -> None:
    assert nn_false_accept(1e-4, 1) == pytest.approx(1e-4)
    assert nn_false_accept(1e-4, 10_000) == pytest.approx(1 - math.exp(-1), rel=1e-3)
    assert nn_false_accept(0.0, 10**6) == 0.0


def test_order_statistics_match_brute_force_minimum() -> None:
    from statistics import NormalDist

    rng = np.random.default_rng(1)
    inv = np.vectorize(NormalDist(0.8, 0.07).inv_cdf)
    e1, e2 = two_smallest(inv, 4000, 500, rng)
    brute = np.sort(rng.normal(0.8, 0.07, (4000, 500)), axis=1)
    assert np.all(e2 >= e1)
    assert np.median(e1) == pytest.approx(np.median(brute[:, 0]), abs=0.004)
    assert np.median(e2) == pytest.approx(np.median(brute[:, 1]), abs=0.004)
    one, none = two_smallest(inv, 10, 1, rng)
    assert np.all(np.isinf(none)) and np.all(np.isfinite(one))


def test_tail_model_follows_the_data_and_extends_below() -> None:
    x = np.random.default_rng(2).normal(0.85, 0.08, 200_000)
    model = TailModel(x)
    for t in (0.7, 0.85, 1.0):
        assert model.cdf(t) == pytest.approx(float(np.mean(x <= t)), abs=1e-6)
    # Below the 0.1% quantile the fitted normal takes over; for normal data it matches the truth.
    from statistics import NormalDist

    assert model.cdf(0.55) == pytest.approx(NormalDist(0.85, 0.08).cdf(0.55), rel=0.3)
    u = np.array([1e-7, 1e-4, 0.02, 0.5])
    back = [model.cdf(v) for v in model.inv(u)]
    assert back == pytest.approx(u.tolist(), rel=0.05)
    assert np.all(np.diff(model.inv(np.array([1e-9, 1e-6, 1e-3, 0.1]))) > 0)


def test_defaults_meet_the_targets_with_slack_when_possible() -> None:
    # 10 genuine probes at 0.30..0.48 with wide margins, a stranger whose best is 0.50 with a
    # clear margin: the chosen threshold must stay below it, with a grid step to spare.
    D = [[0.30 + 0.02 * i, 0.95] for i in range(10)] + [[0.50, 0.95], [0.90, 0.95]]
    T = _trials(D, [0] * 10 + [-1, -1])
    t, m, slack = choose_defaults(T)
    c = count(T, decide(T.D, t, m))
    assert slack and c.fa == 0 and c.fr <= 1 and t <= 0.49


def test_dedupe_drops_near_copies_only() -> None:
    a = np.zeros(128, np.float32)
    b = a.copy()
    b[0] = 0.05
    c = a.copy()
    c[0] = 0.6
    assert len(dedupe(np.stack([a, b, c]), 0.1)) == 2


def test_the_study_still_runs_as_a_script_and_says_what_is_missing(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(REPO / "bench" / "accuracy_study.py"), "--faces", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"FileNotFoundError: no lfw_dev_protocol_1toN.csv in {tmp_path}; "
                                "pass --faces or set WAYSTATION_FACES_DIR")
