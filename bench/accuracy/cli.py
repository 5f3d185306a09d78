"""Command line of the accuracy study: run every idea, print the table, write the CSVs and the DET plot."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.accuracy.gallery_size import gallery_size
from bench.accuracy.rules import count, decide
from bench.accuracy.study import Row, Study

REPO = Path(__file__).resolve().parents[2]


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


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
    _plot(det, args.out / "det_study.png", study.t)
    lines, size_rows = gallery_size(study, TR)
    write_csv(args.out / "gallery_size.csv", size_rows)
    print()
    print("\n".join(lines))
    print(f"\none photo per worker: threshold {study.t1:.2f}, margin {study.m1:.2f}; "
          f"recommended (template of photo + augmentations): threshold {study.t:.2f}, margin {study.m:.2f}")
    print(f"CSV (plot data): accuracy_table, margin_grid, det_sweep, gallery_size in {args.out}; "
          "DET plot det_study.png")
    return 0


def _plot(det: list[dict[str, object]], path: Path, t_recommended: float) -> None:
    """The DET sweep as a picture (plain photos, not the door's camera frames: see ./run evaluate)."""
    from core.plots import Curve, det_plot

    curves, thresholds = [], []
    for name, t_mark in (("library default: nearest, 1 photo", 0.6), ("recommended: template + margin", t_recommended)):
        rows = [r for r in det if r["rule"] == name]
        thresholds = [float(r["t"]) for r in rows]  # type: ignore[arg-type]
        mark = min(range(len(rows)), key=lambda i: abs(thresholds[i] - t_mark))
        far = [float(r["far_strangers"]) for r in rows]  # type: ignore[arg-type]
        frr = [float(r["frr"]) for r in rows]  # type: ignore[arg-type]
        excl = [float(r["far_exclusion"]) for r in rows]  # type: ignore[arg-type]
        curves.append(Curve(name, far, frr, mark=mark, extra=excl, extra_label="exclusion impostors"))
    det_plot(curves, thresholds, path, title="accuracy study: LFW dev protocol, plain photos (not camera frames)")
