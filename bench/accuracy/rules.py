"""Decision rules and counting over a distance matrix: pure numpy, no models.

``D`` has one row per trial (a probe photo) and one column per enrolled identity;
a row of inf is a probe without a face. The door's own rule is edge/policy.py;
``decide`` is the same margin rule, vectorised so that thousands of (threshold,
margin) points can be compared on the same encodings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


def centre_face(boxes: np.ndarray, height: int, width: int) -> int | None:
    """Index of the box nearest the image centre (LFW labels the centred face), None if no box."""
    if len(boxes) == 0:
        return None
    cy = (boxes[:, 0] + boxes[:, 2]) / 2.0 - height / 2.0
    cx = (boxes[:, 1] + boxes[:, 3]) / 2.0 - width / 2.0
    return int(np.argmin(cx * cx + cy * cy))


def largest_face(boxes: np.ndarray) -> int | None:
    if len(boxes) == 0:
        return None
    return int(np.argmax(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 1] - boxes[:, 3])))


def dedupe(vecs: np.ndarray, eps: float) -> np.ndarray:
    """Drop encodings within eps of one already kept (the same photo at several sizes)."""
    kept: list[np.ndarray] = []
    for v in vecs:
        if all(float(np.linalg.norm(v - k)) >= eps for k in kept):
            kept.append(v)
    return np.asarray(kept, dtype=np.float32).reshape(-1, vecs.shape[1] if vecs.ndim == 2 else 128)


def rank(D: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: nearest column, its distance and the runner-up's margin over it.

    A row without a face (all inf) gets distance inf and margin 0; a gallery of
    one identity gives margin inf (nobody to be confused with).
    """
    best = np.argmin(D, axis=1)
    d1 = D[np.arange(len(D)), best]
    d2 = np.partition(D, 1, axis=1)[:, 1] if D.shape[1] > 1 else np.full(len(D), np.inf)
    with np.errstate(invalid="ignore"):
        margin = np.where(np.isfinite(d1), d2 - d1, 0.0)
    return best, d1, margin


def decide(D: np.ndarray, t: float, m: float = 0.0, score: np.ndarray | None = None) -> np.ndarray:
    """Nearest identity if its score <= t and the runner-up is >= m farther; else -1.

    ``score`` replaces the best distance in the threshold test (a normalised
    score); the identity and the margin always come from the raw distances,
    as the door's Match gives them.
    """
    best, d1, margin = rank(D)
    s = d1 if score is None else score
    ok = np.isfinite(d1) & (s <= t) & (margin >= m)
    return np.where(ok, best, -1)


def first_within(D: np.ndarray, t: float) -> np.ndarray:
    """face_recognition's example rule: the first enrolled face within t, in enrollment order."""
    hit = D <= t
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), -1)


GENUINE, STRANGER, EXCLUDED = 0, 1, 2


@dataclass(frozen=True)
class Trials:
    """1:N trials. D (P, I): distance to each enrolled identity (inf row: no face); truth (P,):
    column of the true identity (-1 a stranger, -2 a worker who failed to enroll); kind (P,):
    GENUINE, STRANGER or EXCLUDED; probe (P,): index of the probe photo the row came from."""

    D: np.ndarray
    truth: np.ndarray
    kind: np.ndarray
    probe: np.ndarray

    def with_exclusions(self) -> "Trials":
        """Add each enrolled genuine probe again with its own identity removed: a stranger to the rest."""
        rows = np.flatnonzero((self.kind == GENUINE) & (self.truth >= 0))
        Dx = self.D[rows].copy()
        Dx[np.arange(len(rows)), self.truth[rows]] = np.inf
        return Trials(
            np.vstack([self.D, Dx]),
            np.concatenate([self.truth, np.full(len(rows), -1)]),
            np.concatenate([self.kind, np.full(len(rows), EXCLUDED)]),
            np.concatenate([self.probe, self.probe[rows]]),
        )

    def subset(self, rows: np.ndarray) -> "Trials":
        return Trials(self.D[rows], self.truth[rows], self.kind[rows], self.probe[rows])


@dataclass(frozen=True)
class Counts:
    n_genuine: int
    fr: int  # genuine not accepted as themselves (no face, rejected, misidentified)
    misid: int  # genuine accepted as someone else
    no_face: int
    n_stranger: int
    fa: int  # strangers accepted as anyone
    n_excluded: int
    fa_excl: int

    def text(self) -> str:
        ex = f"{self.fa_excl:>3}/{self.n_excluded:<3}" if self.n_excluded else "   -   "
        return (f"{self.fa:>2}/{self.n_stranger:<3} {ex} {self.fr:>3}/{self.n_genuine:<3} "
                f"{100.0 * self.fr / max(self.n_genuine, 1):5.1f}% {self.misid:>3}")


def count(trials: Trials, decided: np.ndarray) -> Counts:
    g, s, x = (trials.kind == k for k in (GENUINE, STRANGER, EXCLUDED))
    right = decided == trials.truth
    accepted = decided >= 0
    return Counts(
        n_genuine=int(g.sum()), fr=int((g & ~(accepted & right)).sum()), misid=int((g & accepted & ~right).sum()),
        no_face=int((g & ~np.isfinite(trials.D).any(axis=1)).sum()),
        n_stranger=int(s.sum()), fa=int((s & accepted).sum()),
        n_excluded=int(x.sum()), fa_excl=int((x & accepted).sum()),
    )


def safe_region(trials: Trials, m: float, score: np.ndarray | None = None,
                kinds: Sequence[int] = (STRANGER,), allow: int = 0) -> tuple[float, float, int]:
    """The thresholds [lo, hi) that accept the most genuine probes as themselves while
    accepting at most ``allow`` impostors of the given kinds and misidentifying nobody.
    Returns (lo, hi, genuine accepted); any t in [lo, hi) gives the same counts."""
    best, d1, margin = rank(trials.D)
    s = d1 if score is None else score
    ok = np.isfinite(d1) & (margin >= m)
    genuine = trials.kind == GENUINE
    wrong = np.sort(s[ok & genuine & (best != trials.truth)])
    imp = np.sort(s[ok & np.isin(trials.kind, list(kinds))])
    hi = min(float(wrong[0]) if wrong.size else math.inf, float(imp[allow]) if imp.size > allow else math.inf)
    good = ok & genuine & (best == trials.truth) & (s < hi)
    lo = float(s[good].max()) if good.any() else -math.inf
    return lo, hi, int(good.sum())


def best_point(trials: Trials, margins: Iterable[float], score: np.ndarray | None = None,
               kinds: Sequence[int] = (STRANGER,), allow: int = 0) -> tuple[float, float, float, int]:
    """Over a margin grid: (t, hi, m, genuine accepted) of the safe region with the most
    genuine accepted; t is the region's low end (the most slack below the first impostor)."""
    found = (math.nan, math.nan, math.nan, -1)
    for m in margins:
        lo, hi, n = safe_region(trials, m, score, kinds, allow)
        if n > found[3]:
            found = (lo, hi, float(m), n)
    return found


def votes_to_grant(votes: Iterable[int], k: int) -> int:
    """Agreement over frames as the door does it: k votes for one identity, abstentions (-1)
    neither count nor break the run, a vote for someone else restarts it. -1 if no grant."""
    run_id, run = -1, 0
    for v in votes:
        if v < 0:
            continue
        run_id, run = (run_id, run + 1) if v == run_id else (v, 1)
        if run >= k:
            return run_id
    return -1
