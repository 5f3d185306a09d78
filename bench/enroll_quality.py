"""How often do the enrollment quality checks pass real photos, and refuse spoiled ones? (issue 6, item 8)

    python bench/enroll_quality.py [--faces DIR] [--no-template] [--json FILE]

Real photos (each must show one person): the 40 enroll photos of the LFW dev
1:N protocol, the other 174 LFW dev photos (probes and strangers), the 23
one-person photos of face_recognition's examples and the 3 live captures of
``liveness/live``. Each goes the way of an enrollment sample on the server
(server/enrolling.check_sample): decoded (core.imaging.load_image), shrunk
to core.templates.MAX_SIDE, checked (core.quality.assess) and, when it
passes, turned into its template (core.templates.photo_template). A photo
that fails either is a **failure to enroll**.

Spoiled copies of the LFW enroll photos and the examples (every one must fail):

- ``dark``: brightness x0.3 (a face in a dim room);
- ``bright``: brightness x2.5 (a lamp or the sun on the face);
- ``blurred``: Gaussian blur with sigma 3% of the face size (a moving head, a
  camera out of focus; it moves the face's encoding by 0.3-0.6);
- ``tiny``: shrunk so the face is about 45 px (too far from the camera);
- ``two_faces``: the photo beside another person's photo, scaled so both faces
  are the same size (the partner is the next photo whose face HOG finds directly,
  so this measures the check, not the detector's misses).

Then the duplicate check: with the 40 LFW enroll photos' templates enrolled,
is every other LFW photo of an enrolled person warned about (and named
right), and how many strangers' photos are wrongly warned about?

Prints one table per group, the measured ranges of each check's value on the
real photos, and last one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.faces import FaceEngine, FaceError  # noqa: E402
from core.imaging import load_image, resize, scale_brightness  # noqa: E402
from core.matcher import Gallery  # noqa: E402
from core.quality import QualityReport, QualitySettings, assess, prepare  # noqa: E402
from core.templates import photo_template  # noqa: E402
from server.enrollment_samples import DUPLICATE_THRESHOLD  # noqa: E402

DEFAULT_FACES = REPO.parent / "shared" / "data" / "faces"
EX = "face_recognition_examples"


@dataclass(frozen=True)
class Outcome:
    group: str
    file: str
    report: QualityReport
    template: bool | None  # None: not tried (quality failed, or --no-template)
    vector: np.ndarray | None = None

    @property
    def enrolled(self) -> bool:
        return self.report.ok and self.template is not False


def real_photos(faces: Path) -> dict[str, list[str]]:
    """Group name -> photo paths relative to ``faces``."""
    groups: dict[str, list[str]] = {"lfw_enroll": [], "lfw_other": []}
    with open(faces / "lfw_dev_protocol_1toN.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            groups["lfw_enroll" if row["role"] == "enroll" else "lfw_other"].append(row["file"])
    groups["examples"] = [
        str(p.relative_to(faces)) for p in sorted((faces / EX).glob("*/*")) if p.parent.name != "_multi_person"
    ]
    groups["liveness_live"] = [str(p.relative_to(faces)) for p in sorted((faces / "liveness/live").glob("*"))]
    return groups


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur in numpy (only core/imaging may import OpenCV; this is a bench stand-in)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = rgb.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photos next to each other, the lower one centred on grey."""
    h = max(left.shape[0], right.shape[0])

    def padded(im: np.ndarray) -> np.ndarray:
        out = np.full((h, im.shape[1], 3), 128, dtype=np.uint8)
        top = (h - im.shape[0]) // 2
        out[top : top + im.shape[0]] = im
        return out

    return np.ascontiguousarray(np.concatenate([padded(left), padded(right)], axis=1))


def spoilers(face_px: int, other: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The spoiled copies of a photo whose face is ``face_px``; ``other`` is another person's photo
    with a face of the same size."""
    return {
        "dark": lambda im: scale_brightness(im, 0.3),
        "bright": lambda im: scale_brightness(im, 2.5),
        "blurred": lambda im: gaussian_blur(im, 0.03 * face_px),
        "tiny": lambda im: resize(im, 45.0 / face_px),
        "two_faces": lambda im: side_by_side(im, other),
    }


def check(
    engine: FaceEngine, image: np.ndarray, settings: QualitySettings, template: bool
) -> tuple[QualityReport, bool | None, np.ndarray | None]:
    report = assess(engine, image, settings)
    if not (report.ok and template):
        return report, None, None
    try:
        return report, True, photo_template(engine, image).vector
    except FaceError:
        return report, False, None


def duplicates(real: dict[str, list[Outcome]]) -> dict[str, object]:
    """The duplicate check (server/enrollment_samples.find_duplicate) with the LFW enroll photos enrolled:
    every other LFW photo that enrolls is checked against them. A photo of an enrolled person should be
    warned about (named correctly); a stranger's should not."""
    gallery = Gallery([(Path(o.file).parent.name, o.vector) for o in real["lfw_enroll"] if o.vector is not None])
    same = other = warned_same = named_right = warned_other = 0
    for o in real["lfw_other"]:
        if o.vector is None:
            continue
        person = Path(o.file).parent.name
        match = gallery.match(o.vector)
        warned = match.identity is not None and match.distance <= DUPLICATE_THRESHOLD
        if person in gallery.identities:
            same += 1
            warned_same += warned
            named_right += warned and match.identity == person
        else:
            other += 1
            warned_other += warned
    print(f"\nduplicate check (threshold {DUPLICATE_THRESHOLD}, {len(gallery.identities)} LFW people enrolled):")
    print(f"  another photo of an enrolled person: warned {warned_same} of {same} ({named_right} named right)")
    print(f"  a stranger: warned {warned_other} of {other}")
    return {"same_person": same, "same_warned": warned_same, "same_named_right": named_right,
            "strangers": other, "strangers_warned": warned_other}


def table(title: str, outcomes: list[Outcome], *, expect_pass: bool) -> dict[str, float]:
    n = len(outcomes)
    passed = sum(o.enrolled for o in outcomes)
    codes = Counter(c for o in outcomes for c in o.report.codes)
    no_template = sum(o.template is False for o in outcomes)
    rate = passed / n if n else 0.0
    what = "passed" if expect_pass else "passed (should be 0)"
    print(f"{title:<22} {n:>4} photos  {what}: {passed:>4} ({rate:6.1%})  problems: "
          + (", ".join(f"{c} {k}" for c, k in sorted(codes.items())) or "-")
          + (f", no template {no_template}" if no_template else ""))
    for o in outcomes:
        if o.enrolled != expect_pass:
                print(f"    {'refused' if expect_pass else 'passed'}: {o.file}: {', '.join(o.report.codes) or ('no template' if expect_pass else '')}")
    return {"n": n, "passed": passed, "rate": round(rate, 4)}


def ranges(outcomes: list[Outcome]) -> None:
    ones = [o.report for o in outcomes if o.report.faces == 1]
    print(f"\nmeasured on the {len(ones)} real photos with one face (min / 1st pct / median / max):")
    for name in ("face_px", "brightness", "clipped", "sharpness", "yaw", "ear"):
        vals = np.array([getattr(r, name) for r in ones if getattr(r, name) is not None], dtype=float)
        if name == "yaw":
            vals = np.abs(vals)
            name = "|yaw|"
        if vals.size:
            p1, med = np.percentile(vals, [1, 50])
            print(f"  {name:<11} {vals.min():9.3f} {p1:9.3f} {med:9.3f} {vals.max():9.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="the shared face data folder")
    ap.add_argument("--no-template", action="store_true", help="only the quality checks (faster)")
    ap.add_argument("--json", type=Path, help="also write the headline figures to this file")
    args = ap.parse_args(argv)
    if not (args.faces / "MANIFEST.md").is_file():
        print(f"enroll_quality: no face data at {args.faces} (pass --faces)", file=sys.stderr)
        return 2
    settings = QualitySettings()
    engine = FaceEngine().load()
    started = time.perf_counter()
    real: dict[str, list[Outcome]] = {}
    originals: list[tuple[str, np.ndarray, int]] = []
    for group, files in real_photos(args.faces).items():
        real[group] = []
        for rel in files:
            image = prepare(load_image(args.faces / rel))
            report, made, vector = check(engine, image, settings, not args.no_template)
            real[group].append(Outcome(group, rel, report, made, vector))
            if group in ("lfw_enroll", "examples") and report.ok:
                originals.append((rel, image, report.face_px))
    spoiled: dict[str, list[Outcome]] = {}
    direct = [bool(engine.detect(image, upsample=1)) for _, image, _ in originals]
    for i, (rel, image, face_px) in enumerate(originals):
        j = next(k % len(originals) for k in range(i + 1, i + 1 + len(originals)) if direct[k % len(originals)])
        other = resize(originals[j][1], face_px / originals[j][2])
        for name, spoil in spoilers(face_px, other).items():
            report, made, _vector = check(engine, spoil(image), settings, False)
            spoiled.setdefault(name, []).append(Outcome(name, rel, report, made))
    elapsed = time.perf_counter() - started

    print(f"enrollment quality checks, settings: {settings.model_dump()}\n")
    print("real photos (every one should enroll):")
    figures: dict[str, object] = {}
    for group, outcomes in real.items():
        figures[group] = table(group, outcomes, expect_pass=True)
    every = [o for outcomes in real.values() for o in outcomes]
    fte = sum(not o.enrolled for o in every) / len(every)
    print(f"{'all real photos':<22} {len(every):>4} photos  failure to enroll: {fte:.1%}")
    print("\nspoiled copies of the LFW enroll photos and the examples (none should pass):")
    for name, outcomes in spoiled.items():
        figures[name] = table(name, outcomes, expect_pass=False)
    ranges(every)
    if not args.no_template:
        figures["duplicates"] = duplicates(real)
    figures.update(failure_to_enroll=round(fte, 4), photos=len(every), seconds=round(elapsed, 1))
    line = json.dumps(figures, sort_keys=True)
    if args.json:
        args.json.write_text(line + "\n", encoding="utf-8")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
