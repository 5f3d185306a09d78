"""Statistics of the study: exact bounds, and how false accepts grow with the number enrolled."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np


def binom_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided exact (Clopper-Pearson) upper bound on a rate seen k times in n; k=0 gives ~3/n."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0

    def cdf(p: float) -> float:
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                            + (i * math.log(p) if i else 0.0) + (n - i) * math.log1p(-p)) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - conf else (lo, mid)
    return hi


def nn_false_accept(p: float, n: int) -> float:
    """Chance a stranger is within the threshold of at least one of n enrolled (independent trials)."""
    return 1.0 - (1.0 - p) ** n


def two_smallest(inv_cdf: Callable[[np.ndarray], np.ndarray], size: int, n: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and second-smallest of n i.i.d. draws, ``size`` times, through uniform order
    statistics (no need to draw all n): u1 ~ Beta(1, n), then the least of the other n-1 above it."""
    u1 = 1.0 - rng.random(size) ** (1.0 / n)
    if n == 1:
        return inv_cdf(u1), np.full(size, np.inf)
    u2 = u1 + (1.0 - u1) * (1.0 - rng.random(size) ** (1.0 / (n - 1)))
    return inv_cdf(u1), inv_cdf(u2)


class TailModel:
    """Distribution of impostor distances: the empirical CDF where the data are dense, and
    below its ``q_lo`` quantile a normal fitted to the q_lo and q_hi quantiles, because 1:N
    false accepts come from the lower tail and a normal fitted to the whole bulk
    underestimates it."""

    def __init__(self, pooled: np.ndarray, q_lo: float = 0.001, q_hi: float = 0.01) -> None:
        self.x = np.sort(np.asarray(pooled, dtype=np.float64))
        nd = NormalDist()
        a, b = np.quantile(self.x, [q_lo, q_hi])
        za, zb = nd.inv_cdf(q_lo), nd.inv_cdf(q_hi)
        sd = float((b - a) / (zb - za))
        self.tail = NormalDist(float(a - sd * za), sd)
        self.q_lo = q_lo

    def cdf(self, t: float) -> float:
        emp = float(np.searchsorted(self.x, t, side="right")) / len(self.x)
        return emp if emp >= self.q_lo else min(self.tail.cdf(t), self.q_lo)

    def inv(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        out = np.quantile(self.x, np.clip(u, self.q_lo, 1.0))
        low = u < self.q_lo
        if low.any():  # the normal's inverse CDF, interpolated in log(u) (statistics.NormalDist is scalar)
            grid = np.geomspace(1e-15, self.q_lo, 400)
            z = np.array([self.tail.inv_cdf(float(g)) for g in grid])
            out[low] = np.interp(np.log(np.maximum(u[low], 1e-15)), np.log(grid), z)
        return out


@dataclass(frozen=True)
class ImpostorModel:
    """Distances from a probe photo to other people's templates: d = mu[probe] + sd[probe] * z,
    with each photo's own mean and spread (some faces are close to everybody) and one shared
    standardised shape z whose lower tail is modelled by TailModel."""

    mu: np.ndarray
    sd: np.ndarray
    z: TailModel

    def two_nearest(self, probes: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z1, z2 = two_smallest(self.z.inv, len(probes), n, rng)
        return self.mu[probes] + self.sd[probes] * z1, self.mu[probes] + self.sd[probes] * z2


def simulate(model: ImpostorModel, strangers: np.ndarray, genuine: np.ndarray, d_genuine: np.ndarray,
             n_genuine: int, n: int, t: float, m: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """(stranger accepted, FRR, misidentified) against n enrolled. ``strangers``/``genuine`` index
    the model's photos (repeat them for more draws); a genuine probe competes with n-1 others;
    genuine probes not in ``genuine`` (no face, not enrolled) count as rejected."""
    e1, e2 = model.two_nearest(strangers, n, rng)
    fa = float(np.mean((e1 <= t) & (e2 - e1 >= m)))
    f1, f2 = model.two_nearest(genuine, max(n - 1, 1), rng)
    right = (d_genuine < f1) & (d_genuine <= t) & (f1 - d_genuine >= m)
    wrong = (f1 <= d_genuine) & (f1 <= t) & (np.minimum(f2, d_genuine) - f1 >= m)
    share = len(np.unique(genuine)) / n_genuine if n_genuine else 0.0
    return fa, 1.0 - float(right.mean()) * share, float(wrong.mean()) * share
