"""Figures: the only module that imports matplotlib (headless Agg backend, imported on first use).

A DET (detection error trade-off) plot shows, for each rule, the false-reject
rate against the false-accept rate as the threshold sweeps, with the rule's
operating point marked. Axes are linear: with tens of impostor trials most
FARs are 0 or a few multiples of 1/n, which a probit or log axis cannot show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Curve:
    """One rule's sweep: ``far``/``frr`` per threshold (fractions); ``mark``: index of the
    operating point; ``extra``: another FAR per threshold (e.g. a second impostor set), dashed."""

    label: str
    far: Sequence[float]
    frr: Sequence[float]
    mark: int | None = None
    extra: Sequence[float] | None = None
    extra_label: str = "impostors = genuine probes, own worker removed"


def det_plot(curves: Sequence[Curve], thresholds: Sequence[float], path: str | os.PathLike[str], *,
             title: str = "", far_max: float | None = None, frr_max: float | None = None) -> Path:
    """Write the DET plot as a PNG and return its path. The axes end at ``far_max`` and
    ``frr_max`` (default: 1.6 times the largest marked point, at least 0.25, at most 1)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    marks = [(c.far[c.mark], c.frr[c.mark]) for c in curves if c.mark is not None]
    if far_max is None:
        far_max = min(1.0, max([0.25] + [1.6 * x for x, _ in marks]))
    if frr_max is None:  # show where each rule keeps every impostor out
        at_zero = [min(y for x, y in zip(c.far, c.frr) if x == 0) for c in curves if 0 in c.far]
        frr_max = min(1.0, max([0.25] + [1.6 * y for _, y in marks] + [1.1 * y for y in at_zero]))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 6.0), dpi=110)
    try:
        for n, c in enumerate(curves):
            color = f"C{n}"
            ax.plot(c.far, c.frr, color=color, lw=2, label=c.label)
            if c.extra is not None:
                ax.plot(c.extra, c.frr, color=color, lw=1, ls="--", label=f"    dashed: {c.extra_label}")
            if c.mark is not None:
                x, y = c.far[c.mark], c.frr[c.mark]
                ax.plot([x], [y], "o", color=color, ms=8)
                ax.annotate(f"t={thresholds[c.mark]:.2f}\nFAR {x:.1%}, FRR {y:.1%}", (x, y), color=color,
                            xytext=(10, 8), textcoords="offset points", fontsize=9)
        ax.set_xlim(-0.005, far_max)
        ax.set_ylim(-0.005, frr_max)
        ax.set_xlabel("false accept rate (impostors let in as anyone)")
        ax.set_ylabel("false reject rate (workers not let in as themselves)")
        ax.set_title(title or "DET: threshold sweep", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out
