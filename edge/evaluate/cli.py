"""``./run evaluate PROTOCOL.csv [--json FILE] [--plot FILE] [--grid FILE] [--config FILE]``.

Exit codes: 0 done; 2 a bad protocol file or station config (one line on
stderr: ``ProtocolError: ...`` / ``ConfigError: ...``). Progress goes to
stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from core.faces import FaceEngine
from edge.config import EdgeSettings
from edge.errors import ConfigError
from edge.evaluate.metrics import LIBRARY_THRESHOLD, grid, report_lines, sweep
from edge.evaluate.protocol import ProtocolError, read_protocol
from edge.evaluate.trial import evaluate

EXIT_PROTOCOL = 2


class _Counter:
    """Progress on stderr: one line rewritten in place on a terminal, a line per 10% otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, label: str, i: int, n: int) -> None:
        if self.tty:
            sys.stderr.write(f"\revaluate: {label} {i}/{n}" + ("\n" if i == n else ""))
        elif i == n or i % max(1, n // 10) == 0:
            sys.stderr.write(f"evaluate: {label} {i}/{n}\n")
        sys.stderr.flush()


def load_settings(config: Path | None) -> EdgeSettings:
    """A station's YAML file, or the shipped defaults (plus WAYSTATION_EDGE_* variables, as at the door)."""
    if config is not None:
        return EdgeSettings.load(config)
    return EdgeSettings.build(station_id="evaluate")


def main(argv: Sequence[str] | None = None, *, engine: FaceEngine | None = None) -> int:
    """The command line; ``engine``: a loaded FaceEngine to share (tests), else one is loaded."""
    ap = argparse.ArgumentParser(prog="./run evaluate", description="The door's FAR and FRR on a 1:N protocol CSV.")
    ap.add_argument("protocol", type=Path, help="CSV with columns role,identity,file (files relative to its folder)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write far, frr, misidentified, failed_to_enroll, "
                    "n_gallery, n_genuine, n_impostor as one JSON object")
    ap.add_argument("--plot", type=Path, metavar="FILE", default=Path("det.png"),
                    help="DET plot (PNG) over the threshold sweep, the library rule beside ours (default: det.png)")
    ap.add_argument("--grid", type=Path, metavar="FILE", help="also write the door's counts over a threshold x margin "
                    "grid as CSV (for tuning a station)")
    ap.add_argument("--config", type=Path, metavar="FILE", help="a station's YAML settings (default: the shipped ones)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        protocol = read_protocol(args.protocol)
    except ProtocolError as err:
        print(f"ProtocolError: {err}", file=sys.stderr)
        return EXIT_PROTOCOL
    except ConfigError as err:
        print("\n".join(err.lines()), file=sys.stderr)
        return EXIT_PROTOCOL

    from core.plots import Curve, det_plot  # matplotlib only once there is something to plot

    ev = evaluate(protocol, settings, engine or FaceEngine().load(), progress=_Counter())
    ours, library = sweep(ev, library=False), sweep(ev, library=True)
    print("\n".join(report_lines(ev, (ours, library))))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(ev.summary()) + "\n", encoding="utf-8")
        print(f"JSON: {args.json}")
    if args.grid is not None:
        rows = grid(ev)
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        with args.grid.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"grid: {args.grid}")
    curves = [Curve(c.label, c.far, c.frr, mark=c.at(t), extra=c.far_excl)
              for c, t in ((ours, settings.policy.threshold), (library, LIBRARY_THRESHOLD))]
    title = (f"{args.protocol.name}: {ev.n_gallery} enrolled, {len(ev.of('probe_genuine'))} genuine and "
             f"{len(ev.of('probe_impostor'))} impostor probes at the door")
    det_plot(curves, ours.thresholds, args.plot, title=title)
    print(f"DET plot: {args.plot}")
    return 0
