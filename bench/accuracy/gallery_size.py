"""How false accepts grow with the number enrolled: 1:1 FAR from the pairs, then a simulation of 1:N."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.accuracy.protocol import lfw_file, read_pairs
from bench.accuracy.rules import GENUINE, Trials, count, decide
from bench.accuracy.stats import ImpostorModel, TailModel, binom_upper, nn_false_accept, simulate
from bench.accuracy.study import Study, cohort_distances
from edge.policy import PolicyConfig


def gallery_size(study: Study, T: Trials, sizes: Sequence[int] = (39, 1000, 10000),
                 reps: int = 100) -> tuple[list[str], list[dict[str, object]]]:
    """How false accepts grow with the number enrolled, for the recommended enrollment (one
    template per worker). Returns printable lines and CSV rows."""
    files = study.lfw_files()
    names = np.array([Path(f).parent.name for f in files])
    photos = [study.enc.face(f) for f in files]
    temps = [study.template(f) for f in files]
    ip = [i for i, v in enumerate(photos) if v is not None]
    it = [i for i, v in enumerate(temps) if v is not None]
    D = cohort_distances(np.stack([photos[i] for i in ip]), np.stack([temps[i] for i in it]))  # type: ignore[misc]
    other = names[ip][:, None] != names[it][None, :]
    pooled = D[other]
    mu = np.array([D[r, other[r]].mean() for r in range(len(ip))])
    sd = np.array([D[r, other[r]].std() for r in range(len(ip))])
    model = ImpostorModel(mu, sd, TailModel(np.concatenate([(D[r, other[r]] - mu[r]) / sd[r] for r in range(len(ip))])))

    matched, mismatched = read_pairs((study.faces / "lfw_dev_pairs.txt").read_text())

    def pair_d(pairs: Sequence[tuple[str, int, str, int]]) -> np.ndarray:
        out = []
        for a, na, b, nb in pairs:  # the first photo enrolled as a template, the second shown at the door
            ta, pb = study.template(lfw_file(study.faces, a, na)), study.enc.face(lfw_file(study.faces, b, nb))
            out.append(np.inf if ta is None or pb is None else float(np.linalg.norm(ta - pb)))
        return np.array(out)

    dm, dx = pair_d(matched), pair_d(mismatched)
    n_pool = len(pooled)
    p_at: dict[float, float] = {}
    lines = [f"1:1 (a template from one photo vs another photo): {len(matched)} matched + {len(mismatched)} mismatched "
             f"pairs, and all {n_pool} photo-vs-template comparisons of different people in the LFW dev photos:"]
    for t in sorted({0.45, 0.5, study.t, PolicyConfig().threshold, 0.6}):
        kx, km, kp = int((dx <= t).sum()), int((dm > t).sum()), int((pooled <= t).sum())
        p_at[t] = kp / n_pool
        lines.append(f"  t={t:.2f}: pairs FAR {kx}/{len(dx)} (95% upper {binom_upper(kx, len(dx)):.3f}), "
                     f"pairs FRR {km}/{len(dm)}; all comparisons FAR {kp}/{n_pool} = {kp / n_pool:.1e} "
                     f"(95% upper {binom_upper(kp, n_pool):.1e}, treating them as independent)")

    g_rows = np.flatnonzero(T.kind == GENUINE)
    pos = {files[i]: r for r, i in enumerate(ip)}
    gen_files = [f for _, f in study.proto.genuine]
    usable = [r for r in g_rows if T.truth[r] >= 0 and np.isfinite(T.D[r, T.truth[r]]) and gen_files[T.probe[r]] in pos]
    genuine = np.repeat(np.array([pos[gen_files[T.probe[r]]] for r in usable]), reps)
    d_gen = np.repeat(np.array([T.D[r, T.truth[r]] for r in usable], dtype=np.float64), reps)
    strangers = np.repeat(np.arange(len(ip)), reps)
    rng = np.random.default_rng(20251129)

    def sim(n: int, t: float, m: float) -> tuple[float, float, float]:
        return simulate(model, strangers, genuine, d_gen, len(g_rows), n, t, m, rng)

    rules = [("nearest within 0.60", 0.6, 0.0), ("nearest within 0.50", 0.5, 0.0),
             (f"nearest within {study.t:.2f}", study.t, 0.0),
             (f"margin t={study.t:.2f} m={study.m:.2f}", study.t, study.m)]
    door = PolicyConfig()  # the shipped defaults, chosen with ./run evaluate on camera frames
    if (door.threshold, door.margin) != (study.t, study.m):
        rules.append((f"door t={door.threshold:g} m={door.margin:g}", door.threshold, door.margin))
    rows: list[dict[str, object]] = []
    lines.append("1:N, one template per worker; simulated with each photo's impostor distances (mean, spread) and a "
                 "shared standardised lower tail:")
    lines.append(f"  {'rule':<24} {'N':>6} {'stranger accepted':>18} {'1-(1-p)^N':>10} {'FRR':>7} {'misid':>7}")
    for name, t, m in rules:
        for n in sizes:
            fa, frr, misid = sim(n, t, m)
            closed = nn_false_accept(p_at[t], n) if m == 0 and t in p_at else math.nan
            lines.append(f"  {name:<24} {n:>6} {fa:>18.4f} {closed:>10.4f} {frr:>7.3f} {misid:>7.4f}")
            rows.append({"rule": name, "t": t, "m": m, "n_enrolled": n, "stranger_accepted": fa,
                         "nn_closed_form": closed, "frr": frr, "misidentified": misid})
        c = count(T, decide(T.D, t, m))
        n_imp = c.n_stranger + c.n_excluded
        lines.append(f"  {'':<24} {'seen':>6} {(c.fa + c.fa_excl) / n_imp:>18.4f} {'':>10} {c.fr / c.n_genuine:>7.3f} "
                     f"{c.misid / c.n_genuine:>7.4f}  (N=39-40: {c.fa + c.fa_excl}/{n_imp} impostor trials)")
    lines.append("  best the model allows (lowest FRR with at most 1% and 0.1% of strangers accepted):")
    for n in sizes[1:]:
        for cap in (0.01, 0.001):
            grid = [(float(t), float(m)) for t in np.arange(0.36, 0.561, 0.02) for m in np.arange(0.0, 0.201, 0.02)]
            best = min(((sim(n, t, m), t, m) for t, m in grid),
                       key=lambda r: (r[0][0] > cap, r[0][1]))
            (fa, frr, misid), t, m = best
            ok = "" if fa <= cap else "  (cap not reached)"
            lines.append(f"  N={n:<6} accepted <= {cap:.1%}: t={t:.2f} m={m:.2f} -> accepted {fa:.4f}, FRR {frr:.3f}, "
                         f"misidentified {misid:.4f}{ok}")
            rows.append({"rule": f"best with accepted <= {cap}", "t": round(t, 2), "m": round(m, 2), "n_enrolled": n,
                         "stranger_accepted": fa, "nn_closed_form": math.nan, "frr": frr, "misidentified": misid})
    return lines, rows
