"""How close the attacks come to passing, and what the real people need: the margins behind the liveness defaults.

:func:`margins` sweeps each cue's threshold alone. :func:`blink_needs` finds,
for every attack video and every genuine face track, the largest
``blink_closed_ratio`` at which its eyes would *not* count a blink (by
bisection with the real checker, in ``blink`` mode): an attack passes at any
setting above its figure, a person needs one above theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.liveness_study import attacks, genuine, run, summary, tracks
from edge.liveness import LivenessConfig

MOTION_SWEEP = (0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15)
BLINK_SWEEP = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def replace_config(config: LivenessConfig, **changes: object) -> LivenessConfig:
    return LivenessConfig(**{**config.model_dump(), **changes})


def margins(config: LivenessConfig, data: dict, fps: float) -> list[str]:
    """How close the attacks come: each cue alone, over a range of its threshold."""
    lines = ["\nMARGINS: one cue alone, threshold swept (attacks passed / genuine tracks passed of judged, full fps)"]
    for t in MOTION_SWEEP:
        cfg = replace_config(config, mode="motion", motion_threshold=t)
        a = attacks(cfg, data, fps)
        g = summary(genuine(cfg, data, strides=(1,)), 1)
        lines.append(f"  motion_threshold {t:.2f}: attacks {sum(r.result.passed for r in a):>3}/{len(a)}   "
                     f"genuine {g['passed']}/{g['judged']}")
    for frames in (1, 2):
        for ratio in BLINK_SWEEP:
            cfg = replace_config(config, mode="blink", blink_closed_ratio=ratio, blink_closed_frames=frames)
            a = attacks(cfg, data, fps)
            g = summary(genuine(cfg, data, strides=(1,)), 1)
            lines.append(f"  blink_closed_ratio {ratio:.2f}, closed on {frames} frame(s): attacks "
                         f"{sum(r.result.passed for r in a):>3}/{len(a)}   genuine {g['passed']}/{g['judged']}")
    return lines


@dataclass
class BlinkNeeds:
    attacks: list[tuple[float, str]] = field(default_factory=list)  # (ratio, video) of attacks that could blink
    genuine: list[tuple[str, int, int, float | None]] = field(default_factory=list)  # clip, from, stride, ratio
    open_ratio: float = 0.8

    @property
    def attack_lowest(self) -> float | None:
        return round(min(self.attacks)[0], 3) if self.attacks else None

    def lines(self) -> list[str]:
        out = [f"\nBLINK NEEDS: the blink_closed_ratio above which eyes count a blink (blink mode, open at "
               f"{self.open_ratio:g}; none: no blink below {self.open_ratio:g})"]
        low = sorted(self.attacks)[:3]
        out.append(f"  attacks: {len(self.attacks)} could; lowest " + (", ".join(f"{r:.3f} {v}" for r, v in low) or "none"))
        for clip, first, stride, ratio in self.genuine:
            out.append(f"  {clip} from {first} at 1/{stride}: " + ("none" if ratio is None else f"{ratio:.3f}"))
        return out


def blink_needs(config: LivenessConfig, data: dict, fps: float, steps: int = 12) -> BlinkNeeds:
    base = replace_config(config, mode="blink")
    needs = BlinkNeeds(open_ratio=base.blink_open_ratio)

    def lowest(faces: list, times: list[float], shape: tuple[int, int], end: float | None) -> float | None:
        def passes(ratio: float) -> bool:
            return run(replace_config(base, blink_closed_ratio=ratio), faces, times, shape, end).passed

        lo, hi = 0.1, base.blink_open_ratio - 0.005
        if not passes(hi):
            return None
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if passes(mid) else (mid, hi)
        return hi

    for (path, kind, face_px), shape, seq in data["attacks"]:
        if seq:
            ratio = lowest(seq, [i / fps for i in range(len(seq))], shape, len(seq) / fps)
            if ratio is not None:
                needs.attacks.append((ratio, f"{Path(path).name} {kind} {face_px or 'as is'}"))
    for path, clip_fps, shape, frames in data["clips"]:
        for tr in tracks(frames):
            first, last = min(tr), max(tr)
            if (last - first + 1) / clip_fps < 1.0:
                continue
            for stride in (1, 3):
                idx = range(first, last + 1, stride)
                ratio = lowest([tr.get(i) for i in idx], [i / clip_fps for i in idx], shape, None)
                needs.genuine.append((Path(path).name, first, stride, ratio))
    return needs
