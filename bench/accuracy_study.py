"""Which recognition ideas help on the shared LFW dev data (issue 3, items 2 and 4).

    python bench/accuracy_study.py [--faces DIR] [--out bench/out]

Measures, on ``lfw_dev_protocol_1toN.csv`` (40 enrolled from one photo each, 134
genuine probes, 40 never-enrolled strangers) and ``lfw_dev_pairs.txt``: the
library's example rule, nearest identity, the margin rule, jittered and
several encodings per worker, cohort score normalisation, 5- vs 68-point
alignment, detection upsampling for small faces, agreement over frames, and
how false accepts grow with the number enrolled. Prints one table; writes the
table, the threshold/margin sweeps and the gallery-size figures as CSV (plot
data) under ``--out``, next to an encoding cache (``encodings.npz``) that turns
a first run of about 10 minutes into reruns of under a minute.

Besides the 40 strangers, every genuine probe is also tried with its own
identity removed from the gallery ("exclusion impostors", 134 more stranger
trials against 39 people): 40 trials alone cannot tell a 2% false-accept rule
from a 0% one. A genuine probe counts as a false reject unless it is accepted
as itself (no face, rejected and misidentified all count), as in issue 3.

The study code is deliberately standalone (numpy over core.matcher distances);
the door's decision policy lives in edge/policy.py and ``./run evaluate``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Iterable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE_VERSION = "1|dlib_resnet_v1"  # bump when the pipeline behind a cached Variant changes
ENROLL_AUGS = ("flip", "crop88_c", "crop88_tl", "crop88_br", "gain70", "gain130", "lowres50")
PROBE_FRAMES = ("orig", "crop94_tl", "gain85", "crop94_br", "lowres70")


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Protocol:
    """A 1:N protocol: (identity, file relative to the CSV folder) per role."""

    enroll: list[tuple[str, str]]
    genuine: list[tuple[str, str]]
    impostor: list[tuple[str, str]]


def read_protocol(text: str) -> Protocol:
    rows: dict[str, list[tuple[str, str]]] = {"enroll": [], "probe_genuine": [], "probe_impostor": []}
    reader = csv.reader(text.splitlines())
    if next(reader, None) != ["role", "identity", "file"]:
        raise ValueError("protocol CSV must start with the header role,identity,file")
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 3 or row[0] not in rows or not row[1] or not row[2]:
            raise ValueError(f"protocol line {line_no}: expected role,identity,file with a known role, got {row}")
        rows[row[0]].append((row[1], row[2]))
    return Protocol(rows["enroll"], rows["probe_genuine"], rows["probe_impostor"])


def read_pairs(text: str) -> tuple[list[tuple[str, int, str, int]], list[tuple[str, int, str, int]]]:
    """LFW pairs.txt: (matched, mismatched) as (name1, n1, name2, n2)."""
    matched, mismatched = [], []
    for line_no, line in enumerate(text.splitlines()[1:], start=2):
        f = line.split("\t")
        if len(f) == 3:
            matched.append((f[0], int(f[1]), f[0], int(f[2])))
        elif len(f) == 4:
            mismatched.append((f[0], int(f[1]), f[2], int(f[3])))
        elif line.strip():
            raise ValueError(f"pairs line {line_no}: expected 3 or 4 tab-separated fields")
    return matched, mismatched


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


def augment(img: np.ndarray, name: str, resize: Callable[[np.ndarray, float], np.ndarray]) -> np.ndarray:
    """Perturbed copy of an image: orig, flip, crop<pct>_<c|tl|br>, gain<pct>, lowres<pct>."""
    h, w = img.shape[:2]
    if name == "orig":
        return img
    if name == "flip":
        return np.ascontiguousarray(img[:, ::-1])
    if name.startswith("crop"):
        pct, pos = name[4:].split("_")
        ch, cw = h * int(pct) // 100, w * int(pct) // 100
        oy, ox = {"c": ((h - ch) // 2, (w - cw) // 2), "tl": (0, 0), "br": (h - ch, w - cw)}[pos]
        return resize(np.ascontiguousarray(img[oy : oy + ch, ox : ox + cw]), w / cw)
    if name.startswith("gain"):
        return np.clip(img.astype(np.float32) * (int(name[4:]) / 100.0), 0, 255).astype(np.uint8)
    if name.startswith("lowres"):
        f = int(name[6:]) / 100.0
        return resize(resize(img, f), 1.0 / f)
    raise ValueError(f"unknown augmentation {name!r}")


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


# --------------------------------------------------------------------------- encodings (cached)


@dataclass(frozen=True)
class Variant:
    """How a photo is turned into encodings. reuse_box: encode only the centred face found by
    the base detection (isolates the encoder's knobs from the detector's)."""

    up: int = 1
    lm: str = "small"
    jit: int = 1
    aug: str = "orig"
    scale: int = 100
    reuse_box: bool = False

    def key(self) -> str:
        return f"u{self.up}-{self.lm}-j{self.jit}-{self.aug}-s{self.scale}-{'rb' if self.reuse_box else 'det'}"


BASE = Variant()


def progress(label: str, i: int, n: int) -> None:
    """One line on stderr, rewritten in place about 50 times (no tqdm)."""
    if i == n or i % max(1, n // 50) == 0:
        sys.stderr.write(f"\r{label}: {i}/{n}" + ("\n" if i == n else ""))
        sys.stderr.flush()


class EncodingCache:
    """Boxes, encodings and image size per (variant, file), saved as one .npz."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
        self._dirty = 0
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                if str(z["version"]) == CACHE_VERSION:
                    off = z["offsets"]
                    for i, key in enumerate(z["keys"]):
                        a, b = off[i], off[i + 1]
                        shape = (int(z["shapes"][i, 0]), int(z["shapes"][i, 1]))
                        self.items[str(key)] = (z["boxes"][a:b], z["encs"][a:b], shape)

    def save(self) -> None:
        if not self._dirty:
            return
        keys = list(self.items)
        sizes = [len(self.items[k][0]) for k in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp, version=np.array(CACHE_VERSION), keys=np.array(keys), offsets=np.concatenate([[0], np.cumsum(sizes)]),
            boxes=np.concatenate([self.items[k][0] for k in keys] + [np.empty((0, 4), np.int32)]),
            encs=np.concatenate([self.items[k][1] for k in keys] + [np.empty((0, 128), np.float32)]),
            shapes=np.array([self.items[k][2] for k in keys], dtype=np.int32).reshape(-1, 2),
        )
        tmp.replace(self.path)
        self._dirty = 0

    def put(self, key: str, value: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> None:
        self.items[key] = value
        self._dirty += 1
        if self._dirty >= 50:
            self.save()


class Encoder:
    """Runs (or recalls) the real dlib pipeline on the shared photos."""

    def __init__(self, faces: Path, cache: EncodingCache) -> None:
        from core.faces import FaceEngine

        self.faces = faces
        self.cache = cache
        self.engines = {lm: FaceEngine(landmarks=lm) for lm in ("small", "large")}  # type: ignore[arg-type]

    def image(self, rel: str) -> np.ndarray:
        from core.imaging import load_image

        return load_image(self.faces / rel)

    def _compute(self, rel: str, v: Variant) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        from core.faces import Box
        from core.imaging import resize

        engine = self.engines[v.lm]
        img = augment(self.image(rel), v.aug, resize)
        if v.scale != 100:
            img = resize(img, v.scale / 100.0)
        if v.reuse_box:
            boxes_arr, _, (h, w) = self.get(rel, BASE)
            i = centre_face(boxes_arr, h, w)
            boxes = [] if i is None else [Box(*map(int, boxes_arr[i]))]
        else:
            boxes = engine.detect(img, upsample=v.up)
        encs = engine.encode(img, boxes, num_jitters=v.jit)
        arr = np.array([b.as_css() for b in boxes], dtype=np.int32).reshape(-1, 4)
        return arr, encs.astype(np.float32), (int(img.shape[0]), int(img.shape[1]))

    def get(self, rel: str, v: Variant = BASE) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        key = f"{v.key()}|{rel}"
        if key not in self.cache.items:
            self.cache.put(key, self._compute(rel, v))
        return self.cache.items[key]

    def face(self, rel: str, v: Variant = BASE, pick: str = "centre") -> np.ndarray | None:
        boxes, encs, (h, w) = self.get(rel, v)
        i = centre_face(boxes, h, w) if pick == "centre" else largest_face(boxes)
        return None if i is None else encs[i]

    def warm(self, label: str, jobs: Sequence[tuple[str, Variant]]) -> None:
        todo = [(r, v) for r, v in jobs if f"{v.key()}|{r}" not in self.cache.items]
        for i, (rel, v) in enumerate(todo, start=1):
            self.get(rel, v)
            progress(label, i, len(todo))
        self.cache.save()


# --------------------------------------------------------------------------- the study

MARGINS = tuple(round(0.01 * i, 2) for i in range(21))
THRESHOLDS = tuple(round(0.30 + 0.01 * i, 2) for i in range(41))
TEMPLATE = (BASE,) + tuple(Variant(aug=a) for a in ENROLL_AUGS)
"""The recommended enrollment: one template per worker, the mean of the photo and its augmentations."""
SCALES = {100: "~105", 75: "~79", 50: "~52", 35: "~37"}  # probe size -> LFW face height in pixels
Entry = tuple[str, np.ndarray]
Probe = tuple[str | None, np.ndarray | None]


@dataclass
class Row:
    """One line of the table: counts at the idea's own rule, and the best it can do when tuned."""

    idea: str
    rule: str
    counts: Counts
    tuned_strangers: str = "-"  # FRR at 0/40 strangers and 0 misidentified, (t, m) tuned on this data
    tuned_all: str = "-"  # FRR at <= 1% of all impostor trials (strangers + exclusion), 0 misidentified
    note: str = ""


def build_trials(entries: Sequence[Entry], probes: Sequence[Probe]) -> Trials:
    """Distances of every probe to every enrolled identity (core.matcher), plus exclusion trials."""
    from core.matcher import Gallery

    gallery = Gallery(entries)
    index = {name: i for i, name in enumerate(gallery.identities)}
    D = np.full((len(probes), len(index)), np.inf, dtype=np.float32)
    for r, (_, vec) in enumerate(probes):
        if vec is not None:
            D[r] = gallery.identity_distances(vec)
    truth = np.array([index.get(who, -2) if who else -1 for who, _ in probes], dtype=np.int64)
    kind = np.array([GENUINE if who else STRANGER for who, _ in probes], dtype=np.int64)
    return Trials(D, truth, kind, np.arange(len(probes))).with_exclusions()


def tuned(trials: Trials, margins: Sequence[float], score: np.ndarray | None = None) -> tuple[str, str]:
    """The two 'tuned' columns: FRR at 0 strangers, and at <= 1% of all impostor trials."""
    n_gen = int((trials.kind == GENUINE).sum())
    n_all = int((trials.kind != GENUINE).sum())
    out = []
    for kinds, allow in (((STRANGER,), 0), ((STRANGER, EXCLUDED), n_all // 100)):
        t, _hi, m, n = best_point(trials, margins, score, kinds, allow)
        out.append(f"{100.0 * (n_gen - n) / n_gen:4.1f}% t={t:.3f} m={m:.2f}" if n > 0 else "-")
    return out[0], out[1]


def choose_defaults(T: Trials, frr_target: float = 0.10) -> tuple[float, float, bool]:
    """The grid point meeting issue 3's targets on the dev protocol (0 strangers accepted,
    0 misidentified, FRR <= 10%) with the fewest exclusion false accepts, then the lowest FRR.
    Preferred: points whose grid neighbours (t and m one step either way) still accept no
    stranger and misidentify nobody, so the choice does not sit on the edge of one photo.
    Returns (t, m, whether that slack held)."""
    grid = {(t, m): count(T, decide(T.D, t, m)) for m in MARGINS for t in THRESHOLDS}
    safe = {k for k, c in grid.items() if c.fa == 0 and c.misid == 0}

    def slack(t: float, m: float) -> bool:
        near = [(round(t + dt, 2), round(m + dm, 2)) for dt in (-0.01, 0, 0.01) for dm in (-0.01, 0, 0.01)]
        return all(k in safe for k in near if k in grid)

    for need_slack in (True, False):
        ok = [k for k in safe if grid[k].fr <= frr_target * grid[k].n_genuine and (slack(*k) or not need_slack)]
        if ok:
            t, m = min(ok, key=lambda k: (grid[k].fa_excl, grid[k].fr, -k[1], k[0]))
            return t, m, need_slack
    t, _hi, m, _n = best_point(T, MARGINS)
    return round(t, 2), m, False


class Study:
    def __init__(self, faces: Path, out: Path) -> None:
        self.faces = faces
        self.out = out
        self.proto = read_protocol((faces / "lfw_dev_protocol_1toN.csv").read_text())
        self.enc = Encoder(faces, EncodingCache(out / "encodings.npz"))
        self.rows: list[Row] = []
        self.grid: list[dict[str, object]] = []
        self.t1 = self.m1 = self.t = self.m = 0.0  # defaults for one photo, and for the recommended template

    # data -----------------------------------------------------------------
    def lfw_files(self) -> list[str]:
        p = self.proto
        return [f for _, f in p.enroll + p.genuine + p.impostor]

    def cohort_files(self) -> list[str]:
        roots = [self.faces / "face_recognition_examples", self.faces / "group_photos"]
        return sorted(str(f.relative_to(self.faces)) for r in roots for f in r.rglob("*") if f.is_file())

    def probes(self, v: Variant = BASE, pick: str = "centre",
               genuine: Sequence[tuple[str, str]] | None = None) -> list[Probe]:
        gen = self.proto.genuine if genuine is None else genuine
        return [(who, self.enc.face(f, v, pick)) for who, f in gen] + [
            (None, self.enc.face(f, v, pick)) for _, f in self.proto.impostor]

    def gallery(self, variants: Sequence[Variant] = (BASE,), pick: str = "centre", mean: bool = False,
                enroll: Sequence[tuple[str, str]] | None = None) -> list[Entry]:
        """Enrollment entries: one per photo and variant, or with ``mean`` one template per
        worker (the mean of all that worker's encodings; a photo without a face adds nothing)."""
        per: dict[str, list[np.ndarray]] = {}
        for who, f in self.proto.enroll if enroll is None else enroll:
            vecs = (self.enc.face(f, var, pick) for var in variants)
            per.setdefault(who, []).extend(v for v in vecs if v is not None)
        if mean:
            return [(who, np.mean(vecs, axis=0)) for who, vecs in per.items() if vecs]
        return [(who, v) for who, vecs in per.items() for v in vecs]

    def template(self, rel: str) -> np.ndarray | None:
        vecs = [v for v in (self.enc.face(rel, var) for var in TEMPLATE) if v is not None]
        return np.mean(vecs, axis=0) if vecs else None

    def second_photos(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Each worker's lowest-numbered genuine probe becomes a second enrollment photo;
        returns (those photos, the remaining genuine probes)."""
        seen: dict[str, tuple[str, str]] = {}
        for who, f in sorted(self.proto.genuine, key=lambda r: r[1]):
            seen.setdefault(who, (who, f))
        second = list(seen.values())
        return second, [r for r in self.proto.genuine if r not in second]

    def warm(self) -> None:
        p, enc = self.proto, self.enc
        lfw, probes, enrolls = self.lfw_files(), [f for _, f in p.genuine + p.impostor], [f for _, f in p.enroll]
        enc.warm("encode LFW (upsample 1)", [(f, BASE) for f in lfw])
        enc.warm("encode cohort", [(f, BASE) for f in self.cohort_files()])
        enc.warm("augmented photos", [(f, v) for v in TEMPLATE[1:] for f in lfw])
        enc.warm("jittered enrollment", [(f, Variant(jit=j, reuse_box=True)) for j in (5, 10) for f in enrolls])
        enc.warm("68-point landmarks", [(f, Variant(lm="large", reuse_box=True)) for f in lfw])
        enc.warm("upsample 0 and 2", [(f, Variant(up=u)) for u in (0, 2) for f in lfw])
        enc.warm("perturbed probe frames", [(f, Variant(aug=a)) for a in PROBE_FRAMES[1:] for f in probes])
        small = [Variant(up=u, scale=s) for s in SCALES if s != 100 for u in (0, 1, 2)]
        enc.warm("small faces", [(f, v) for v in small for f in probes])

    # rows -----------------------------------------------------------------
    def add(self, idea: str, rule: str, trials: Trials, decided: np.ndarray, margins: Sequence[float] | None = MARGINS,
            score: np.ndarray | None = None, note: str = "") -> None:
        ts, ta = tuned(trials, margins, score) if margins is not None else ("-", "-")
        self.rows.append(Row(idea, rule, count(trials, decided), ts, ta, note))

    def tuned_row(self, idea: str, trials: Trials, score: np.ndarray | None, note: str = "") -> None:
        """Normalised scores have their own units: show the counts at the tuned 0-strangers point."""
        t, _hi, m, _n = best_point(trials, MARGINS, score)
        self.add(idea, f"tuned: score<={t:.3f} m={m:.2f}", trials, decide(trials.D, t, m, score), MARGINS, score, note)

    def at(self, idea: str, trials: Trials, note: str = "", recommended: bool = False) -> None:
        t, m = (self.t, self.m) if recommended else (self.t1, self.m1)
        self.add(idea, f"t={t:.2f} m={m:.2f}", trials, decide(trials.D, t, m), note=note)

    def sweep(self, scheme: str, T: Trials) -> tuple[float, float, bool]:
        for m in MARGINS:
            for t in THRESHOLDS:
                self.grid.append({"scheme": scheme, "t": t, "m": m, **asdict(count(T, decide(T.D, t, m)))})
        return choose_defaults(T)

    # ideas ----------------------------------------------------------------
    def baseline(self) -> Trials:
        T = build_trials(self.gallery(), self.probes())
        for t in (0.6, 0.5):
            self.add("library example, 1 photo", f"first enrolled within {t}", T, first_within(T.D, t), None)
        for t in (0.6, 0.5):
            self.add("nearest identity, 1 photo", f"nearest within {t}", T, decide(T.D, t), (0.0,))
        L = build_trials(self.gallery(pick="largest"), self.probes(pick="largest"))
        for t in (0.6, 0.5):
            self.add("nearest identity, largest face", f"nearest within {t}", L, decide(L.D, t), (0.0,),
                     note="as MANIFEST's baseline")
        self.t1, self.m1, slack = self.sweep("1 photo", T)
        self.at("margin rule, 1 photo", T, "" if slack else "targets met only on an edge (no grid slack)")
        return T

    def enrollment(self) -> None:
        P = self.probes()
        for j in (5, 10):
            self.at(f"enroll num_jitters={j}", build_trials(self.gallery((Variant(jit=j, reuse_box=True),)), P))
        sets = {"mirror": ("flip",), "mirror+3 crops": ("flip", "crop88_c", "crop88_tl", "crop88_br"),
                "all 7 augmentations": ENROLL_AUGS}
        for name, augs in sets.items():
            variants = (BASE,) + tuple(Variant(aug=a) for a in augs)
            self.at(f"samples: photo + {name}", build_trials(self.gallery(variants), P), "nearest sample counts")
            self.at(f"template: mean of photo + {name}", build_trials(self.gallery(variants, mean=True), P))
        second, rest = self.second_photos()
        P2 = self.probes(genuine=rest)
        note = "probes minus each worker's 2nd photo"
        self.at("1 real photo (fewer probes)", build_trials(self.gallery(), P2), note)
        both = list(self.proto.enroll) + second
        self.at("2 real photos as samples", build_trials(self.gallery(enroll=both), P2), note)
        self.at("2 real photos, mean template", build_trials(self.gallery(enroll=both, mean=True), P2), note)
        self.at("2 real photos + augmentations, template",
                build_trials(self.gallery(TEMPLATE, mean=True, enroll=both), P2), note)
        self.at("1 photo + augmentations, template", build_trials(self.gallery(TEMPLATE, mean=True), P2), note)

    def recommended(self) -> Trials:
        T = build_trials(self.gallery(TEMPLATE, mean=True), self.probes())
        self.t, self.m, slack = self.sweep("template", T)
        self.at("RECOMMENDED: template + margin", T, "" if slack else "no grid slack", recommended=True)
        return T

    def alignment(self) -> None:
        v = Variant(lm="large", reuse_box=True)
        self.at("68-point alignment, 1 photo", build_trials(self.gallery((v,)), self.probes(v)),
                "iBUG 300-W: no commercial use")

    def upsampling(self) -> None:
        """Probe-side: detection upsampling at the LFW size and on shrunk copies (smaller faces),
        against the recommended templates at the recommended defaults."""
        g = self.gallery(TEMPLATE, mean=True)
        sample = [f for _, f in self.proto.genuine[:20]]
        for scale, face in SCALES.items():
            for up in (0, 1, 2):
                v = Variant(up=up, scale=scale)
                ms = detect_ms(self.enc, sample, v)
                self.at(f"probe {scale}% (face {face}px), upsample {up}", build_trials(g, self.probes(v)),
                        f"template gallery; detect {ms:.0f} ms/photo", recommended=True)

    def frames(self, T: Trials) -> None:
        """Agreement over frames, with each probe's perturbed copies standing in for video frames."""
        g = self.gallery(TEMPLATE, mean=True)
        V = np.stack([decide(build_trials(g, self.probes(Variant(aug=a))).D, self.t, self.m) for a in PROBE_FRAMES], 1)
        self.add("template, 1 still frame", "k=1 of 1", T, V[:, 0], None)
        for k in (1, 2, 3, 5):
            decided = np.array([votes_to_grant(row, k) for row in V])
            self.add(f"template, {len(PROBE_FRAMES)} perturbed frames", f"k={k} agreeing", T, decided, None,
                     note="frames: shifts, gain, low-res")

    def normalisation(self, T: Trials) -> None:
        probes = self.probes()
        Q = np.stack([v if v is not None else np.full(128, np.nan, np.float32) for _, v in probes])
        ext = dedupe(np.concatenate([self.enc.get(f)[1] for f in self.cohort_files()]), 0.2)
        enrolled = np.stack([v for _, v in self.gallery()])
        for k in (1, 5):
            self.tuned_row(f"gallery as cohort, k={k}", T, gallery_cohort(T.D, k), "no extra data")
        strangers = [(i, v) for i, (who, v) in enumerate(probes) if who is None and v is not None]
        for kind in ("shift5", "z"):
            score = normalised(T, cohort_distances(Q, ext), kind, cohort_distances(enrolled, ext))
            self.tuned_row(f"cohort {kind}: {len(ext)} example faces", T, score, "face_recognition examples + group")
            folds, scores = [], []
            for half in (0, 1):  # each half of the strangers is the cohort for the other half's trials
                cohort = np.stack([v for j, (_, v) in enumerate(strangers) if j % 2 == half])
                test = [i for j, (i, _) in enumerate(strangers) if j % 2 != half]
                sub = T.subset(np.flatnonzero((T.kind != STRANGER) | np.isin(T.probe, test)))
                folds.append(sub)
                scores.append(normalised(sub, cohort_distances(Q, cohort), kind, cohort_distances(enrolled, cohort)))
            both = Trials(*(np.concatenate([getattr(f, a) for f in folds]) for a in ("D", "truth", "kind", "probe")))
            self.tuned_row(f"cohort {kind}: 2-fold strangers", both, np.concatenate(scores),
                           "20 cohort/20 tested; genuine counted twice")


def cohort_distances(Q: np.ndarray, cohort: np.ndarray) -> np.ndarray:
    """(len(Q), len(cohort)) Euclidean distances; NaN rows (no face) stay NaN."""
    return np.sqrt(np.maximum(((Q[:, None, :] - cohort[None, :, :]) ** 2).sum(-1), 0.0))


def gallery_cohort(D: np.ndarray, k: int) -> np.ndarray:
    """Best distance minus the mean of the next k identities' distances (the gallery as cohort)."""
    s = np.sort(D, axis=1)
    with np.errstate(invalid="ignore"):
        out = s[:, 0] - s[:, 1 : k + 1].mean(axis=1)
    return np.where(np.isfinite(out), out, np.inf)


def normalised(T: Trials, C: np.ndarray, kind: str, G: np.ndarray) -> np.ndarray:
    """Per trial row, the nearest identity's distance normalised against a cohort:
    shift5 = d1 minus the mean of the probe's 5 nearest cohort faces (an adaptive threshold);
    z = d1 z-scored against the probe's cohort distances and the identity's, averaged."""
    best, d1, _ = rank(T.D)
    Cp = C[T.probe]
    with np.errstate(invalid="ignore"):
        if kind == "shift5":
            s = d1 - np.sort(Cp, axis=1)[:, :5].mean(axis=1)
        else:
            s = ((d1 - Cp.mean(axis=1)) / Cp.std(axis=1) + (d1 - G[best].mean(axis=1)) / G[best].std(axis=1)) / 2.0
    return np.where(np.isfinite(s), s, np.inf)


def detect_ms(enc: Encoder, files: Sequence[str], v: Variant) -> float:
    """Median milliseconds to detect faces in one photo at this size and upsampling."""
    from core.imaging import resize

    engine = enc.engines["small"]
    times = []
    for f in files:
        img = enc.image(f)
        img = resize(img, v.scale / 100.0) if v.scale != 100 else img
        start = time.perf_counter()
        engine.detect(img, upsample=v.up)
        times.append(1000.0 * (time.perf_counter() - start))
    return float(np.median(times))


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- gallery size


def lfw_file(faces: Path, name: str, n: int) -> str:
    for folder in ("lfw_dev", "lfw_dev_strangers"):
        rel = f"{folder}/{name}/{name}_{n:04d}.jpg"
        if (faces / rel).is_file():
            return rel
    raise FileNotFoundError(f"{name} image {n} is in neither lfw_dev nor lfw_dev_strangers")


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
    for t in sorted({0.45, 0.5, study.t, 0.6}):
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


# --------------------------------------------------------------------------- command line


def default_faces() -> Path:
    env = os.environ.get("WAYSTATION_FACES_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "faces"


def print_table(rows: Sequence[Row]) -> None:
    head = (f"{'idea':<40} {'rule':<26} {'strngr':>6} {'excl.':>7} {'FRR':>14} {'misid':>5}  "
            f"{'tuned FRR @0 strangers':<27} {'tuned FRR @<=1% all':<27} note")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.idea:<40} {r.rule:<26} {r.counts.text()}  {r.tuned_strangers:<27} {r.tuned_all:<27} {r.note}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    ap.add_argument("--faces", type=Path, default=default_faces(), help="shared face data (WAYSTATION_FACES_DIR)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="CSV output and encoding cache")
    args = ap.parse_args(argv)
    if not (args.faces / "lfw_dev_protocol_1toN.csv").is_file():
        print(f"FileNotFoundError: no lfw_dev_protocol_1toN.csv in {args.faces}; "
              "pass --faces or set WAYSTATION_FACES_DIR", file=sys.stderr)
        return 1
    study = Study(args.faces, args.out)
    study.warm()
    T1 = study.baseline()
    study.enrollment()
    TR = study.recommended()
    study.frames(TR)
    study.alignment()
    study.upsampling()
    study.normalisation(T1)
    study.enc.cache.save()
    print_table(study.rows)
    write_csv(args.out / "accuracy_table.csv", [
        {"idea": r.idea, "rule": r.rule, **asdict(r.counts), "tuned_strangers": r.tuned_strangers,
         "tuned_all": r.tuned_all, "note": r.note} for r in study.rows])
    write_csv(args.out / "margin_grid.csv", study.grid)
    det = []
    for name, T, m in (("library default: nearest, 1 photo", T1, 0.0), ("recommended: template + margin", TR, study.m)):
        for t in np.round(np.arange(0.30, 0.701, 0.005), 3):
            c = count(T, decide(T.D, float(t), m))
            det.append({"rule": name, "t": float(t), "m": m, "far_strangers": c.fa / c.n_stranger,
                        "far_exclusion": c.fa_excl / c.n_excluded, "frr": c.fr / c.n_genuine,
                        "misidentified": c.misid / c.n_genuine})
    write_csv(args.out / "det_sweep.csv", det)
    lines, size_rows = gallery_size(study, TR)
    write_csv(args.out / "gallery_size.csv", size_rows)
    print()
    print("\n".join(lines))
    print(f"\none photo per worker: threshold {study.t1:.2f}, margin {study.m1:.2f}; "
          f"recommended (template of photo + augmentations): threshold {study.t:.2f}, margin {study.m:.2f}")
    print(f"CSV (plot data): accuracy_table, margin_grid, det_sweep, gallery_size in {args.out}")
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
