"""What the recorded door decisions add up to: the threshold sweep (DET), a threshold x margin grid, the report.

Sweeps replay the recorded frames through ``DecisionPolicy`` with one knob
changed (trial.replay), so they run in seconds without the models. Besides the
protocol's impostors, every genuine probe is also tried against the gallery
without its own worker ("own worker removed"): a stranger of the same kind to
everyone else, which gives several times more impostor trials than a protocol
usually has (40 strangers cannot tell a 2% rule from a 0% one).

The library rule is face_recognition's examples: the nearest enrolled face
within the threshold, each frame on its own, against the photos' own encodings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from core.matcher import Gallery
from edge.evaluate.trial import Evaluation, Probe, observations, replay
from edge.policy import Observation, PolicyConfig

LIBRARY_THRESHOLD = 0.6
SWEEP = tuple(round(0.30 + 0.005 * i, 3) for i in range(81))
GRID_T = tuple(round(0.45 + 0.01 * i, 2) for i in range(21))
GRID_M = tuple(round(0.05 + 0.005 * i, 3) for i in range(21))


def binom_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided exact (Clopper-Pearson) upper bound of a rate seen k times in n (0 in n: about 3/n)."""
    if n <= 0 or k >= n:
        return 1.0

    def cdf(p: float) -> float:
        return sum(math.comb(n, i) * p**i * (1.0 - p) ** (n - i) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - conf else (lo, mid)
    return hi


def _frac(k: int, n: int) -> float:
    return k / n if n else 0.0


class _Trials:
    """Each probe's observations against the full gallery, and each genuine probe's against the
    gallery without its own worker; computed once, replayed at every threshold and margin."""

    def __init__(self, ev: Evaluation, library: bool) -> None:
        entries = ev.reference if library else ev.enrolled
        full = Gallery(entries)
        self.library = library
        self.fps = ev.settings.camera.fps
        self.gen, self.imp = ev.of("probe_genuine"), ev.of("probe_impostor")
        self.seen = {id(p): observations(p.frames, full) for p in self.gen + self.imp}
        without = {i: Gallery([(j, v) for j, v in entries if j != i]) for i in {p.identity for p in self.gen}}
        self.seen_x = {id(p): observations(p.frames, without[p.identity]) for p in self.gen}

    def granted(self, seen: Sequence[Observation | None], config: PolicyConfig, t: float) -> str | None:
        if not self.library:
            return replay(config.model_copy(update={"threshold": t}), seen, self.fps)
        first = next((o for o in seen if o is not None), None)  # one frame decides, as in the examples
        return first.match.identity if first is not None and first.match.distance <= t else None

    def counts(self, config: PolicyConfig, t: float) -> tuple[float, float, int, float]:
        """(FAR, FRR, misidentified count, FAR with own worker removed) at threshold t."""
        def who(p: Probe) -> str | None:
            return self.granted(self.seen[id(p)], config, t)

        gen = [who(p) for p in self.gen]
        far = _frac(sum(who(p) is not None for p in self.imp), len(self.imp))
        frr = _frac(sum(g != p.identity for g, p in zip(gen, self.gen)), len(self.gen))
        misid = sum(g not in (None, p.identity) for g, p in zip(gen, self.gen))
        far_x = _frac(sum(self.granted(self.seen_x[id(p)], config, t) is not None for p in self.gen), len(self.gen))
        return far, frr, misid, far_x


@dataclass(frozen=True)
class Sweep:
    """FAR and FRR of one rule over the SWEEP thresholds; ``far_excl``: with own worker removed."""

    label: str
    thresholds: tuple[float, ...]
    far: list[float]
    frr: list[float]
    far_excl: list[float]
    misidentified: list[int]

    def at(self, t: float) -> int:
        """Index of the threshold nearest t."""
        return min(range(len(self.thresholds)), key=lambda j: abs(self.thresholds[j] - t))


def sweep(ev: Evaluation, library: bool) -> Sweep:
    """The DET data: the door (templates, its margin and k frames) or the library rule."""
    trials, cfg = _Trials(ev, library), ev.settings.policy
    rows = [trials.counts(cfg, t) for t in SWEEP]
    label = ("library rule: nearest face, photo's own encoding, 1 frame" if library else
             f"Waystation: templates, margin {cfg.margin:g}, {cfg.frames_required} frames")
    return Sweep(label, SWEEP, [r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows], [r[2] for r in rows])


def grid(ev: Evaluation) -> list[dict[str, float | int]]:
    """The door's counts over GRID_T x GRID_M (the other knobs as configured): for re-tuning."""
    trials, cfg = _Trials(ev, library=False), ev.settings.policy
    out: list[dict[str, float | int]] = []
    for m in GRID_M:
        config = cfg.model_copy(update={"margin": m})
        for t in GRID_T:
            far, frr, misid, far_x = trials.counts(config, t)
            out.append({"threshold": t, "margin": m, "far": far, "frr": frr, "misidentified": misid,
                        "far_own_removed": far_x, "n_impostor": len(trials.imp), "n_genuine": len(trials.gen)})
    return out


def report_lines(ev: Evaluation, curves: Sequence[Sweep]) -> list[str]:
    """The human-readable summary printed by ``./run evaluate``."""
    s, cfg = ev.summary(), ev.settings.policy
    gen, imp = ev.of("probe_genuine"), ev.of("probe_impostor")
    accepted = sum(p.granted is not None for p in imp)
    lines = [
        f"policy: threshold {cfg.threshold:g}, margin {cfg.margin:g}, {cfg.frames_required} frames, "
        f"min face {cfg.min_face_px} px; enrollment: one template per photo; liveness off",
        f"gallery: {s['n_gallery']} workers from {ev.n_enroll_rows} enroll photos; failed to enroll: "
        f"{s['failed_to_enroll']}" + "".join(f"\n  {i}: {why}" for i, why in ev.failed.items()),
    ]
    if gen:
        lines.append(
            f"genuine probes: {len(gen)}; not accepted as themselves {sum(p.granted != p.identity for p in gen)} "
            f"(FRR {s['frr']:.1%}): rejected {sum(p.granted is None for p in gen)} "
            f"(no face {sum(p.no_face for p in gen)}), misidentified {s['misidentified']}")
    if imp:
        lines.append(f"impostor probes: {len(imp)}; accepted {accepted} (FAR {s['far']:.1%}, "
                     f"95% upper bound {binom_upper(accepted, len(imp)):.1%})")
    for c in curves:
        i = c.at(LIBRARY_THRESHOLD if c.label.startswith("library") else cfg.threshold)
        lines.append(f"{c.label} at {c.thresholds[i]:g}: FAR {c.far[i]:.1%}, FRR {c.frr[i]:.1%}, misidentified "
                     f"{c.misidentified[i]}; genuine probes let in once their own worker is removed: "
                     f"{c.far_excl[i]:.1%}")
    return lines
